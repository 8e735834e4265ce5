/**
 * The native gRPC transport (src/server/native-grpc.ts) against the gRPC over HTTP/2 protocol:
 * a real grpc-js client for what clients do, a raw node:http2 client for what they should not.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { gzipSync, deflateSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { HealthImplementation, service as healthService } from 'grpc-health-check';
import { afterEach, describe, expect, it } from 'vitest';
import { isGrpcContentType, NativeGrpcServer, percentEncodeGrpcMessage, statusName, TCP_KEEPALIVE_IDLE_MS, unframeSingleMessage } from '../../src/server/native-grpc.js';
import { BYTES_SERVICE } from '../helpers/bytes-service.js';

const id = (b: Buffer): Buffer => b;

interface Started {
  server: NativeGrpcServer;
  port: number;
  client: grpc.Client;
  cancelledTicks: number;
  /** what onError reported, in order */
  errors: string[];
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function start(options: ConstructorParameters<typeof NativeGrpcServer>[0] = {}): Promise<Started> {
  const errors: string[] = [];
  const server = new NativeGrpcServer({ ...options, onError: (code) => errors.push(code) });
  const s: Started = { server, port: 0, client: undefined as unknown as grpc.Client, cancelledTicks: 0, errors };
  server.addService(BYTES_SERVICE, {
    Echo: (call: { request: Buffer }, callback: (err: { code: number; details: string } | null, value?: Buffer) => void) => {
      const text = call.request.toString();
      if (text === 'throw') throw new Error('boom');
      if (text === 'nocode') return callback({ details: 'no code given' } as unknown as { code: number; details: string });
      if (text.startsWith('fail:')) return callback({ code: grpc.status.FAILED_PRECONDITION, details: text.slice(5) });
      if (text.startsWith('wait:')) {
        setTimeout(() => callback(null, Buffer.from('late')), Number(text.slice(5)));
        return;
      }
      callback(null, Buffer.concat([Buffer.from('echo:'), call.request]));
    },
    ticks: (call: { request: Buffer; write(v: Buffer): boolean; on(e: 'cancelled', f: () => void): void }) => {
      call.on('cancelled', () => s.cancelledTicks++);
      for (let i = 0; i < call.request.length; i++) call.write(Buffer.from(`tick ${i}`));
    },
  });
  s.port = await server.listen('127.0.0.1:0');
  s.client = new grpc.Client(`127.0.0.1:${s.port}`, grpc.credentials.createInsecure());
  cleanups.push(() => {
    s.client.close();
    server.forceShutdown();
  });
  return s;
}

function unary(client: grpc.Client, path: string, body: Buffer): Promise<{ err: grpc.ServiceError | null; value?: Buffer }> {
  return new Promise((resolve) => client.makeUnaryRequest(path, id, id, body, (err, value) => resolve({ err, ...(value ? { value } : {}) })));
}

interface RawAnswer {
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  data: Buffer;
}

/** One request on a raw HTTP/2 connection: what a non-conforming client sends. */
function raw(port: number, headers: http2.OutgoingHttpHeaders, body: Buffer | Buffer[]): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request({ ':method': 'POST', ':path': '/test.Bytes/Echo', 'content-type': 'application/grpc', te: 'trailers', ...headers });
    const out: RawAnswer = { headers: {}, trailers: {}, data: Buffer.alloc(0) };
    const chunks: Buffer[] = [];
    req.on('response', (h) => (out.headers = h));
    req.on('trailers', (t) => (out.trailers = t));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('close', () => {
      out.data = Buffer.concat(chunks);
      session.close();
      resolve(out);
    });
    const parts = Array.isArray(body) ? body : [body];
    for (const p of parts) req.write(p);
    req.end();
  });
}

function framed(payload: Buffer, compressed = false): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

describe('NativeGrpcServer with a grpc-js client', () => {
  it('answers a unary call with the handler value and OK', async () => {
    const s = await start();
    const { err, value } = await unary(s.client, '/test.Bytes/Echo', Buffer.from('hi'));
    expect(err).toBeNull();
    expect(value?.toString()).toBe('echo:hi');
    expect(s.errors).toEqual([]);
  });

  it.each([
    ['carries a handler error as the status and its percent-encoded message', 'fail:über 100%\nnext', grpc.status.FAILED_PRECONDITION, 'über 100%\nnext'],
    ['answers UNKNOWN when a handler throws', 'throw', grpc.status.UNKNOWN, 'Server method handler threw error boom'],
    ['answers UNKNOWN for a handler error without a code', 'nocode', grpc.status.UNKNOWN, 'no code given'],
  ])('%s', async (_name, input, code, details) => {
    const s = await start();
    const { err } = await unary(s.client, '/test.Bytes/Echo', Buffer.from(input));
    expect(err?.code).toBe(code);
    expect(err?.details).toBe(details);
    expect(s.errors).toEqual([grpc.status[code]]);
  });

  it('turns TCP keepalive on for every accepted connection', async () => {
    const calls: Array<{ localPort: number | undefined; args: unknown[] }> = [];
    const original = net.Socket.prototype.setKeepAlive;
    net.Socket.prototype.setKeepAlive = function (this: net.Socket, ...args: unknown[]) {
      calls.push({ localPort: this.localPort, args });
      return original.apply(this, args as Parameters<typeof original>);
    };
    try {
      const s = await start();
      await unary(s.client, '/test.Bytes/Echo', Buffer.from('k'));
      // the server's end of the connection (its local port is the listener's)
      expect(calls.filter((c) => c.localPort === s.port).map((c) => c.args)).toEqual([[true, TCP_KEEPALIVE_IDLE_MS]]);
    } finally {
      net.Socket.prototype.setKeepAlive = original;
    }
  });

  it('answers UNIMPLEMENTED for a method it does not serve', async () => {
    const s = await start();
    const { err } = await unary(s.client, '/test.Bytes/Nope', Buffer.from('x'));
    expect(err?.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(err?.details).toBe('The server does not implement the method /test.Bytes/Nope');
    expect(s.errors).toEqual(['UNIMPLEMENTED']);
  });

  it('refuses a message over maxReceiveMessageLength with RESOURCE_EXHAUSTED', async () => {
    const s = await start({ maxReceiveMessageLength: 64 });
    const ok = await unary(s.client, '/test.Bytes/Echo', Buffer.alloc(64, 0x61));
    expect(ok.err).toBeNull();
    const { err } = await unary(s.client, '/test.Bytes/Echo', Buffer.alloc(65, 0x61));
    expect(err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(err?.details).toBe('Received message larger than max (65 vs. 64)');
  });

  it('streams server messages, then reports a cancelled call to the handler', async () => {
    const s = await start();
    const call = s.client.makeServerStreamRequest('/test.Bytes/Ticks', id, id, Buffer.from('xyz'));
    const got: string[] = [];
    await new Promise<void>((resolve) => {
      call.on('data', (m: Buffer) => {
        got.push(m.toString());
        if (got.length === 3) resolve();
      });
    });
    call.on('error', () => {});
    expect(got).toEqual(['tick 0', 'tick 1', 'tick 2']);
    call.cancel();
    for (let i = 0; i < 100 && s.cancelledTicks === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(s.cancelledTicks).toBe(1);
  });

  it('drops the answer of a call the client cancelled, and keeps serving', async () => {
    const s = await start();
    const call = s.client.makeUnaryRequest('/test.Bytes/Echo', id, id, Buffer.from('wait:50'), () => {});
    await new Promise((r) => setTimeout(r, 10));
    call.cancel();
    await new Promise((r) => setTimeout(r, 80));
    const { err, value } = await unary(s.client, '/test.Bytes/Echo', Buffer.from('again'));
    expect(err).toBeNull();
    expect(value?.toString()).toBe('echo:again');
  });

  it('serves grpc-health-check: Check, NOT_FOUND for an unknown service, Watch updates', async () => {
    const server = new NativeGrpcServer();
    const health = new HealthImplementation({ '': 'NOT_SERVING' });
    health.addToServer(server as unknown as grpc.Server);
    const port = await server.listen('127.0.0.1:0');
    const Client = grpc.makeClientConstructor(healthService, 'Health');
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      check(req: object, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
      watch(req: object): grpc.ClientReadableStream<{ status: string }>;
    };
    cleanups.push(() => {
      client.close();
      server.forceShutdown();
    });
    const check = (service: string): Promise<{ err: grpc.ServiceError | null; status?: string }> =>
      new Promise((resolve) => client.check({ service }, (err, res) => resolve({ err, ...(res ? { status: res.status } : {}) })));
    expect(await check('')).toEqual({ err: null, status: 'NOT_SERVING' });
    const unknown = await check('x.Y');
    expect(unknown.err?.code).toBe(grpc.status.NOT_FOUND);
    expect(unknown.err?.details).toBe('Health status unknown for service x.Y');

    const watch = client.watch({ service: '' });
    watch.on('error', () => {});
    const seen: string[] = [];
    await new Promise<void>((resolve) => {
      watch.on('data', (m: { status: string }) => {
        seen.push(m.status);
        if (seen.length === 1) health.setStatus('', 'SERVING');
        if (seen.length === 2) resolve();
      });
    });
    expect(seen).toEqual(['NOT_SERVING', 'SERVING']);
    expect(await check('')).toEqual({ err: null, status: 'SERVING' });

    // shutdown ends the watch with UNAVAILABLE and closes the connection
    const ended = new Promise<grpc.StatusObject>((resolve) => watch.on('status', resolve));
    await new Promise<void>((resolve) => server.tryShutdown(resolve));
    const status = await ended;
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toBe('server shutting down');
  });

  it('tryShutdown lets an admitted call finish, then refuses new connections', async () => {
    const s = await start();
    await unary(s.client, '/test.Bytes/Echo', Buffer.from('warm')); // the connection is up
    const slow = unary(s.client, '/test.Bytes/Echo', Buffer.from('wait:100'));
    await new Promise((r) => setTimeout(r, 20));
    let done = false;
    const shut = new Promise<void>((resolve) => s.server.tryShutdown(() => ((done = true), resolve())));
    const answer = await slow;
    expect(answer.err).toBeNull();
    expect(answer.value?.toString()).toBe('late');
    await shut;
    expect(done).toBe(true);
    const fresh = new grpc.Client(`127.0.0.1:${s.port}`, grpc.credentials.createInsecure());
    const after = await new Promise<grpc.ServiceError | null>((resolve) =>
      fresh.makeUnaryRequest('/test.Bytes/Echo', id, id, Buffer.from('x'), { deadline: Date.now() + 500 }, (err) => resolve(err)),
    );
    fresh.close();
    expect(after?.code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('NativeGrpcServer with a raw HTTP/2 client', () => {
  it('answers HTTP 405 to a method other than POST and 415 to a non-gRPC content-type', async () => {
    const s = await start();
    expect((await raw(s.port, { ':method': 'GET' }, Buffer.alloc(0))).headers[':status']).toBe(405);
    const json = await raw(s.port, { 'content-type': 'application/json' }, framed(Buffer.from('x')));
    expect(json.headers[':status']).toBe(415);
    expect(json.headers['grpc-status']).toBeUndefined();
    expect((await raw(s.port, { 'content-type': 'application/grpc-web+proto' }, framed(Buffer.from('x')))).headers[':status']).toBe(415);
    expect(s.errors).toEqual(['HTTP_405', 'HTTP_415', 'HTTP_415']);
  });

  it('accepts content-type application/grpc+proto and a message split over DATA frames', async () => {
    const s = await start();
    const body = framed(Buffer.from('split'));
    const ans = await raw(s.port, { 'content-type': 'application/grpc+proto' }, [body.subarray(0, 3), body.subarray(3, 7), body.subarray(7)]);
    expect(ans.headers[':status']).toBe(200);
    expect(ans.headers['content-type']).toBe('application/grpc');
    expect(ans.trailers['grpc-status']).toBe('0');
    expect(ans.data.equals(framed(Buffer.from('echo:split')))).toBe(true);
  });

  it('answers Trailers-Only INTERNAL to no message, two messages and a cut message', async () => {
    const s = await start();
    const cases: Array<[Buffer, string]> = [
      [Buffer.alloc(0), 'expected one request message, got none'],
      [Buffer.concat([framed(Buffer.from('a')), framed(Buffer.from('b'))]), 'expected one request message, got more'],
      [framed(Buffer.from('abcdef')).subarray(0, 8), 'request message cut short'],
      [Buffer.from([0, 0]), 'request message cut short'],
    ];
    for (const [body, message] of cases) {
      const ans = await raw(s.port, {}, body);
      expect(ans.headers[':status']).toBe(200);
      expect(ans.headers['grpc-status']).toBe(String(grpc.status.INTERNAL));
      expect(ans.headers['grpc-message']).toBe(message);
      expect(ans.data.length).toBe(0);
    }
  });

  it('inflates gzip and deflate messages, refuses an unknown encoding with grpc-accept-encoding', async () => {
    const s = await start();
    for (const [encoding, zip] of [
      ['gzip', gzipSync],
      ['deflate', deflateSync],
    ] as const) {
      const ans = await raw(s.port, { 'grpc-encoding': encoding }, framed(zip(Buffer.from(encoding)), true));
      expect(ans.trailers['grpc-status']).toBe('0');
      expect(ans.data.subarray(5).toString()).toBe(`echo:${encoding}`);
    }
    const snappy = await raw(s.port, { 'grpc-encoding': 'snappy' }, framed(Buffer.from('zz'), true));
    expect(snappy.headers['grpc-status']).toBe(String(grpc.status.UNIMPLEMENTED));
    expect(snappy.headers['grpc-accept-encoding']).toBe('identity,gzip,deflate');
    const flagOnly = await raw(s.port, {}, framed(Buffer.from('zz'), true));
    expect(flagOnly.headers['grpc-status']).toBe(String(grpc.status.INTERNAL));
    expect(flagOnly.headers['grpc-message']).toBe('compressed flag set without grpc-encoding');
    // an uncompressed message under grpc-encoding: gzip is read as it is (the flag says so)
    const plain = await raw(s.port, { 'grpc-encoding': 'gzip' }, framed(Buffer.from('plain')));
    expect(plain.data.subarray(5).toString()).toBe('echo:plain');
  });

  it('bounds what a compressed message may inflate to', async () => {
    const s = await start({ maxReceiveMessageLength: 1000 });
    const ans = await raw(s.port, { 'grpc-encoding': 'gzip' }, framed(gzipSync(Buffer.alloc(100_000)), true));
    expect(ans.headers['grpc-status']).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
  });

  it('refuses a length prefix over the limit before the message arrives', async () => {
    const s = await start({ maxReceiveMessageLength: 1000 });
    const ans = await raw(s.port, {}, framed(Buffer.alloc(1200)).subarray(0, 100));
    expect(ans.headers['grpc-status']).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(ans.headers['grpc-message']).toBe('Received message larger than max (1200 vs. 1000)');
    expect(s.errors).toEqual(['RESOURCE_EXHAUSTED']);
  });

  it('reassembles a message sent in many small DATA frames', async () => {
    const s = await start();
    const body = framed(Buffer.from('x'.repeat(3000)));
    const pieces = Array.from({ length: Math.ceil(body.length / 7) }, (_, i) => body.subarray(i * 7, i * 7 + 7));
    const ans = await raw(s.port, {}, pieces);
    expect(ans.trailers['grpc-status']).toBe('0');
    expect(ans.data.subarray(5).toString()).toBe(`echo:${'x'.repeat(3000)}`);
  });

  it('drains a connection with GOAWAY for stream 2^31-1 first, then closes it', async () => {
    const s = await start();
    const session = http2.connect(`http://127.0.0.1:${s.port}`);
    const goaways: number[] = [];
    session.on('goaway', (_code: number, lastStreamID: number) => goaways.push(lastStreamID));
    session.on('error', () => {});
    const req = session.request({ ':method': 'POST', ':path': '/test.Bytes/Echo', 'content-type': 'application/grpc', te: 'trailers' });
    req.on('error', () => {});
    req.resume();
    await new Promise<void>((resolve) => {
      req.on('response', () => resolve());
      req.end(framed(Buffer.from('one')));
    });
    const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    await new Promise<void>((resolve) => s.server.tryShutdown(resolve));
    await closed;
    expect(goaways[0]).toBe(2 ** 31 - 1);
  });

  it('refuses a server-streaming call whose request completes after shutdown began', async () => {
    const s = await start();
    const session = http2.connect(`http://127.0.0.1:${s.port}`);
    const req = session.request({ ':method': 'POST', ':path': '/test.Bytes/Ticks', 'content-type': 'application/grpc', te: 'trailers' });
    const headers = new Promise<http2.IncomingHttpHeaders>((resolve) => req.on('response', resolve));
    req.on('error', () => {});
    const body = framed(Buffer.from('abc'));
    req.write(body.subarray(0, 4));
    await new Promise((r) => setTimeout(r, 50)); // the stream is open on the server
    const shut = new Promise<void>((resolve) => s.server.tryShutdown(resolve));
    req.end(body.subarray(4));
    const h = await headers;
    expect(h['grpc-status']).toBe(String(grpc.status.UNAVAILABLE));
    expect(h['grpc-message']).toBe('server shutting down');
    await shut; // not held open by a Watch that started too late
    session.destroy();
  });
});

describe('statusName', () => {
  it('names gRPC status codes for metric labels', () => {
    expect(statusName(0)).toBe('OK');
    expect(statusName(8)).toBe('RESOURCE_EXHAUSTED');
    expect(statusName(16)).toBe('UNAUTHENTICATED');
    expect(statusName(99)).toBe('CODE_99');
  });
});

describe('isGrpcContentType', () => {
  it('takes application/grpc alone, with +proto or with parameters, and nothing else', () => {
    for (const ok of ['application/grpc', 'application/grpc+proto', 'application/grpc; charset=utf-8', 'application/grpc+proto;x=1']) expect(isGrpcContentType(ok)).toBe(true);
    for (const no of [undefined, '', 'application/json', 'application/grpc-web', 'application/grpc-web+proto', 'application/grpc+json', 'application/grpcx', 'text/application/grpc']) {
      expect(isGrpcContentType(no)).toBe(false);
    }
  });
});

describe('unframeSingleMessage', () => {
  it('reads a flag, a length and exactly that many bytes', () => {
    expect(unframeSingleMessage(framed(Buffer.from('abc')), undefined, 10)).toEqual({ message: Buffer.from('abc') });
    expect(unframeSingleMessage(framed(Buffer.alloc(0)), undefined, 10)).toEqual({ message: Buffer.alloc(0) });
    expect(unframeSingleMessage(Buffer.from([2, 0, 0, 0, 0]), undefined, 10)).toEqual({ code: grpc.status.INTERNAL, details: 'request message has compressed flag 2' });
    expect(unframeSingleMessage(framed(Buffer.alloc(11)), undefined, 10)).toEqual({
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: 'Received message larger than max (11 vs. 10)',
    });
  });

  it('never throws, and accepts only a body of exactly one frame (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.constantFrom(undefined, 'identity', 'gzip', 'deflate', 'br'), (bytes, enc) => {
        const body = Buffer.from(bytes);
        const r = unframeSingleMessage(body, enc, 32);
        if ('message' in r) {
          expect(body.length).toBeGreaterThanOrEqual(5);
          if (body[0] === 0) expect(body.readUInt32BE(1)).toBe(body.length - 5);
        } else {
          expect(r.code).toBeGreaterThan(0);
        }
      }),
    );
  });
});

describe('percentEncodeGrpcMessage', () => {
  it('leaves printable ASCII except % alone and encodes the rest as UTF-8 %XX', () => {
    expect(percentEncodeGrpcMessage('plain text: ok')).toBe('plain text: ok');
    expect(percentEncodeGrpcMessage('50% über\n')).toBe('50%25 %C3%BCber%0A');
  });

  it('decodes back to the message (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        const enc = percentEncodeGrpcMessage(s);
        expect(/^[\x20-\x7e]*$/.test(enc)).toBe(true);
        expect(decodeURIComponent(enc)).toBe(s);
      }),
    );
  });
});
