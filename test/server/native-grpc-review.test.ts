/**
 * Review of src/server/native-grpc.ts against the gRPC over HTTP/2 protocol: cases the main suite
 * (native-grpc.test.ts) does not reach, some of them only with HTTP/2 frames written by hand.
 */
import http2 from 'node:http2';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { MessageBody, NativeGrpcServer } from '../../src/server/native-grpc.js';
import { BYTES_SERVICE } from '../helpers/bytes-service.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

interface Started {
  server: NativeGrpcServer;
  port: number;
  errors: string[];
  handled: string[];
  /** every stream the server saw */
  streams: http2.ServerHttp2Stream[];
}

async function start(options: { maxReceiveMessageLength?: number } = {}): Promise<Started> {
  const errors: string[] = [];
  const handled: string[] = [];
  const streams: http2.ServerHttp2Stream[] = [];
  // the server's own http2.Server, to watch its streams from the outside
  const create = vi.spyOn(http2, 'createServer');
  const server = new NativeGrpcServer({ ...options, onError: (c) => errors.push(c) });
  const h2 = create.mock.results[0]?.value as http2.Http2Server;
  create.mockRestore();
  h2.on('stream', (st) => streams.push(st));
  server.addService(BYTES_SERVICE, {
    Echo: (call: { request: Buffer }, cb: (e: null, v: Buffer) => void) => {
      const text = call.request.toString();
      handled.push(text);
      cb(null, Buffer.concat([Buffer.from('echo:'), call.request]));
      if (text === 'answer-then-throw') throw new Error('after the answer');
    },
    ticks: (call: { request: Buffer; write(v: Buffer): boolean }) => {
      const text = call.request.toString();
      handled.push(text);
      if (text === 'write-then-throw') call.write(Buffer.from('one'));
      if (text.endsWith('throw')) throw new Error('streaming boom');
    },
  });
  const port = await server.listen('127.0.0.1:0');
  cleanups.push(() => server.forceShutdown());
  return { server, port, errors, handled, streams };
}

function framed(payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** HTTP/2 frames written by hand, for sequences node's client never sends (RST_STREAM before END_STREAM). */
class FrameClient {
  readonly socket: net.Socket;
  /** frames from the server: type, flags, stream id */
  readonly frames: Array<{ type: number; flags: number; stream: number; payload: Buffer; at: number }> = [];
  #buf = Buffer.alloc(0);
  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => {});
    this.socket.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    this.send(4, 0, 0, Buffer.alloc(0));
    this.socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      while (this.#buf.length >= 9) {
        const len = this.#buf.readUIntBE(0, 3);
        if (this.#buf.length < 9 + len) break;
        const f = { type: this.#buf[3] as number, flags: this.#buf[4] as number, stream: this.#buf.readUInt32BE(5) & 0x7fffffff, payload: this.#buf.subarray(9, 9 + len), at: Date.now() };
        this.#buf = this.#buf.subarray(9 + len);
        this.frames.push(f);
        if (f.type === 4 && (f.flags & 1) === 0) this.send(4, 1, 0, Buffer.alloc(0)); // SETTINGS ack
      }
    });
  }
  send(type: number, flags: number, stream: number, payload: Buffer): void {
    const h = Buffer.alloc(9);
    h.writeUIntBE(payload.length, 0, 3);
    h[3] = type;
    h[4] = flags;
    h.writeUInt32BE(stream, 5);
    this.socket.write(Buffer.concat([h, payload]));
  }
  headers(stream: number, headers: Record<string, string>, endStream = false): void {
    const parts: Buffer[] = [];
    const str = (v: string): Buffer => {
      const b = Buffer.from(v);
      if (b.length >= 127) throw new Error('long header');
      return Buffer.concat([Buffer.from([b.length]), b]);
    };
    for (const [k, v] of Object.entries(headers)) parts.push(Buffer.from([0]), str(k), str(v)); // literal, not indexed
    this.send(1, 4 | (endStream ? 1 : 0), stream, Buffer.concat(parts));
  }
  data(stream: number, payload: Buffer, endStream = false): void {
    this.send(0, endStream ? 1 : 0, stream, payload);
  }
  reset(stream: number, code = http2.constants.NGHTTP2_CANCEL): void {
    const p = Buffer.alloc(4);
    p.writeUInt32BE(code, 0);
    this.send(3, 0, stream, p);
  }
  close(): void {
    this.socket.destroy();
  }
}

const GRPC_HEADERS = { ':method': 'POST', ':scheme': 'http', ':path': '/test.Bytes/Echo', ':authority': 'x', 'content-type': 'application/grpc', te: 'trailers' };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One request on a raw node:http2 client; resolves with what came back. */
function raw(port: number, headers: http2.OutgoingHttpHeaders, body: Buffer | null, opts: { trailers?: http2.OutgoingHttpHeaders } = {}): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; data: Buffer; rstCode: number | undefined }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request(
      { ':method': 'POST', ':path': '/test.Bytes/Echo', 'content-type': 'application/grpc', te: 'trailers', ...headers },
      body === null ? { endStream: true } : opts.trailers ? { waitForTrailers: true } : {},
    );
    let h: http2.IncomingHttpHeaders = {};
    let t: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (x) => (h = x));
    req.on('trailers', (x) => (t = x));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    if (opts.trailers) req.on('wantTrailers', () => req.sendTrailers(opts.trailers as http2.OutgoingHttpHeaders));
    req.on('close', () => {
      session.close();
      resolve({ headers: h, trailers: t, data: Buffer.concat(chunks), rstCode: req.rstCode });
    });
    if (body !== null) req.end(body);
  });
}

describe('NativeGrpcServer: a request the client abandoned', () => {
  it('does not serve a whole message whose stream the client reset with NO_ERROR before END_STREAM', async () => {
    const s = await start();
    const c = new FrameClient(s.port);
    cleanups.push(() => c.close());
    c.headers(1, GRPC_HEADERS);
    c.data(1, framed(Buffer.from('abandoned')));
    await sleep(30); // the message is on the server, the request not ended
    c.reset(1, http2.constants.NGHTTP2_NO_ERROR);
    // a request that did end, on the same connection, to know the reset was read
    c.headers(3, GRPC_HEADERS);
    c.data(3, framed(Buffer.from('sent')), true);
    // stream 3's answer, HEADERS and trailers, is back: stream 1's reset was read before it
    await vi.waitFor(() => expect(c.frames.filter((f) => f.type === 1 && f.stream === 3)).toHaveLength(2));
    expect(s.handled).toEqual(['sent']);
    expect(s.errors).toEqual([]);
    expect(s.streams.map((st) => st.destroyed)).toEqual([true, true]);
    // no HEADERS went out on the reset stream
    expect(c.frames.filter((f) => f.type === 1).map((f) => f.stream)).toEqual([3, 3]);
  });

  it('does not count an RPC error for a cut message whose stream the client reset with NO_ERROR', async () => {
    const s = await start();
    const c = new FrameClient(s.port);
    cleanups.push(() => c.close());
    c.headers(1, GRPC_HEADERS);
    c.data(1, framed(Buffer.from('abandoned')).subarray(0, 7));
    await sleep(30);
    c.reset(1, http2.constants.NGHTTP2_NO_ERROR);
    c.headers(3, GRPC_HEADERS);
    c.data(3, framed(Buffer.from('sent')), true);
    // stream 3's answer, HEADERS and trailers, is back: stream 1's reset was read before it
    await vi.waitFor(() => expect(c.frames.filter((f) => f.type === 1 && f.stream === 3)).toHaveLength(2));
    expect(s.errors).toEqual([]);
    expect(s.streams.map((st) => st.destroyed)).toEqual([true, true]);
    expect(c.frames.filter((f) => f.type === 1).map((f) => f.stream)).toEqual([3, 3]);
  });
});

describe('NativeGrpcServer: maxReceiveMessageLength beyond what a Buffer can hold', () => {
  it('refuses a 4 GiB length prefix with RESOURCE_EXHAUSTED instead of throwing from the data listener', async () => {
    const s = await start({ maxReceiveMessageLength: 2 ** 32 });
    const prefix = Buffer.alloc(6);
    prefix.writeUInt32BE(0xffffffff, 1);
    const ans = await raw(s.port, {}, prefix);
    expect(ans.headers[':status']).toBe(200);
    expect(ans.headers['grpc-status']).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(ans.headers['grpc-message']).toBe('Received message larger than max (4294967295 vs. 4294967291)');
    expect(s.errors).toEqual(['RESOURCE_EXHAUSTED']);
  });
});

describe('NativeGrpcServer: protocol edges the main suite does not cover', () => {
  it('answers INTERNAL "got none" to a request that is HEADERS with END_STREAM', async () => {
    const s = await start();
    const ans = await raw(s.port, {}, null);
    expect(ans.headers['grpc-status']).toBe(String(grpc.status.INTERNAL));
    expect(ans.headers['grpc-message']).toBe('expected one request message, got none');
    expect(s.handled).toEqual([]);
  });

  it('serves a request that ends with trailers, and one without te: trailers', async () => {
    const s = await start();
    const withTrailers = await raw(s.port, {}, framed(Buffer.from('tr')), { trailers: { 'x-end': '1' } });
    expect(withTrailers.trailers['grpc-status']).toBe('0');
    expect(withTrailers.data.equals(framed(Buffer.from('echo:tr')))).toBe(true);
    const noTe = await raw(s.port, { te: undefined as unknown as string }, framed(Buffer.from('note')));
    expect(noTe.trailers['grpc-status']).toBe('0');
    expect(noTe.data.equals(framed(Buffer.from('echo:note')))).toBe(true);
  });

  it('keeps the answer of a unary handler that throws after answering', async () => {
    const s = await start();
    const ans = await raw(s.port, {}, framed(Buffer.from('answer-then-throw')));
    expect(ans.trailers['grpc-status']).toBe('0');
    expect(ans.data.equals(framed(Buffer.from('echo:answer-then-throw')))).toBe(true);
    expect(s.errors).toEqual([]);
  });

  it('turns a server-streaming handler that throws into UNKNOWN: Trailers-Only before a message, trailers after', async () => {
    const s = await start();
    const before = await raw(s.port, { ':path': '/test.Bytes/Ticks' }, framed(Buffer.from('throw')));
    expect(before.headers['grpc-status']).toBe(String(grpc.status.UNKNOWN));
    expect(before.headers['grpc-message']).toBe('Server method handler threw error streaming boom');
    const after = await raw(s.port, { ':path': '/test.Bytes/Ticks' }, framed(Buffer.from('write-then-throw')));
    expect(after.headers['grpc-status']).toBeUndefined();
    expect(after.data.equals(framed(Buffer.from('one')))).toBe(true);
    expect(after.trailers['grpc-status']).toBe(String(grpc.status.UNKNOWN));
    expect(after.trailers['grpc-message']).toBe('Server method handler threw error streaming boom');
    expect(s.errors).toEqual(['UNKNOWN', 'UNKNOWN']);
  });
});

describe('MessageBody: a request message as its DATA frames arrive', () => {
  const prefix = (declared: number): Buffer => {
    const head = Buffer.alloc(5);
    head.writeUInt32BE(declared, 1);
    return head;
  };

  it('a prefix declaring 4 MiB reserves 64 KiB, not 4 MiB, before the bytes arrive', () => {
    const body = new MessageBody(4 * 1024 * 1024);
    expect(body.add(Buffer.concat([prefix(4 * 1024 * 1024), Buffer.alloc(10)]))).toBeNull();
    expect(body.reserved).toBe(64 * 1024);
    expect(body.bytes().length).toBe(15);
  });

  it('grows as bytes arrive and holds exactly the message at the end', () => {
    const message = Buffer.alloc(300_000, 7);
    const body = new MessageBody(4 * 1024 * 1024);
    const framed = Buffer.concat([prefix(message.length), message]);
    for (let at = 0; at < framed.length; at += 1000) expect(body.add(framed.subarray(at, at + 1000))).toBeNull();
    expect(body.reserved).toBe(framed.length);
    expect(body.bytes().equals(framed)).toBe(true);
  });

  it('a byte past the declared message is refused as a second message', () => {
    const body = new MessageBody(1024);
    expect(body.add(Buffer.concat([prefix(3), Buffer.from('abc')]))).toBeNull();
    expect(body.add(Buffer.from('d'))).toEqual({ code: 13, details: 'expected one request message, got more' });
    expect(body.refused).toBe(true);
  });

  it('the whole message in one chunk is kept as it is (no copy)', () => {
    const framed = Buffer.concat([prefix(3), Buffer.from('abc')]);
    const body = new MessageBody(1024);
    body.add(framed);
    expect(body.bytes()).toBe(framed);
  });

  it('property: any split of a framed message gives back its exact bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200_000 }), fc.array(fc.nat({ max: 70_000 }), { maxLength: 12 }), (payload, cuts) => {
        const framed = Buffer.concat([prefix(payload.length), Buffer.from(payload)]);
        const points = [...new Set(cuts.map((c) => c % (framed.length + 1)))].sort((a, b) => a - b);
        const body = new MessageBody(4 * 1024 * 1024);
        let from = 0;
        for (const to of [...points, framed.length]) {
          if (to > from) expect(body.add(framed.subarray(from, to))).toBeNull();
          from = Math.max(from, to);
        }
        expect(body.bytes().equals(framed)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
