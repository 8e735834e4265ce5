/**
 * src/server/native-grpc.ts bounds what a request still arriving may hold: its time (grpc-timeout,
 * requestReadTimeoutMs), the bytes of all of them together (maxBufferedRequestBytes), and a peer
 * refused by admitCall before any of its request is read. Without them, streams that sent most of a
 * 4 MiB message and never ended it held ~400 MiB per connection for ever (a review's finding).
 */
import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { NativeGrpcServer, parseGrpcTimeout, type NativeGrpcServerOptions } from '../../src/server/native-grpc.js';
import { BYTES_SERVICE } from '../helpers/bytes-service.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function start(options: NativeGrpcServerOptions = {}): Promise<{ server: NativeGrpcServer; port: number; errors: string[]; handled: string[] }> {
  const errors: string[] = [];
  const handled: string[] = [];
  const server = new NativeGrpcServer({ ...options, onError: (c) => errors.push(c) });
  server.addService(BYTES_SERVICE, {
    Echo: (call: { request: Buffer }, cb: (e: null, v: Buffer) => void) => {
      handled.push(call.request.toString());
      cb(null, Buffer.from('ok'));
    },
  });
  const port = await server.listen('127.0.0.1:0');
  cleanups.push(() => server.forceShutdown());
  return { server, port, errors, handled };
}

/** The 5-byte gRPC prefix declaring `length` bytes. */
function prefix(length: number): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(length, 1);
  return head;
}

interface Answer {
  status: string | undefined;
  message: string | undefined;
  ms: number;
}

/** Opens a request, writes `body` (ending the stream only when `end`), resolves with the gRPC status once answered. */
function open(session: http2.ClientHttp2Session, body: Buffer, end: boolean, headers: http2.OutgoingHttpHeaders = {}): { answer: Promise<Answer>; req: http2.ClientHttp2Stream } {
  const t0 = Date.now();
  const req = session.request({ ':method': 'POST', ':path': '/test.Bytes/Echo', 'content-type': 'application/grpc', te: 'trailers', ...headers });
  req.on('error', () => {});
  const answer = new Promise<Answer>((resolve) => {
    let status: string | undefined;
    let message: string | undefined;
    const take = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) {
        status = String(h['grpc-status']);
        message = h['grpc-message'] === undefined ? undefined : decodeURIComponent(String(h['grpc-message']));
      }
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', () => {});
    req.on('close', () => resolve({ status, message, ms: Date.now() - t0 }));
  });
  if (end) req.end(body);
  else req.write(body);
  return { answer, req };
}

function connect(port: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  cleanups.push(() => session.destroy());
  return session;
}

async function until(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('parseGrpcTimeout (PROTOCOL-HTTP2: 1–8 digits and one of H M S m u n)', () => {
  it('reads every unit in ms', () => {
    expect(parseGrpcTimeout('2H')).toBe(7_200_000);
    expect(parseGrpcTimeout('3M')).toBe(180_000);
    expect(parseGrpcTimeout('1S')).toBe(1000);
    expect(parseGrpcTimeout('200m')).toBe(200);
    expect(parseGrpcTimeout('1500u')).toBe(1.5);
    expect(parseGrpcTimeout('99999999n')).toBeCloseTo(99.999999, 9);
    expect(parseGrpcTimeout('0S')).toBe(0);
  });

  it('refuses anything else', () => {
    for (const bad of ['', 'S', '1', '123456789S', '1s', ' 1S', '1S ', '1 S', '-1S', '1.5S', '0x10S', '1SS', '１S']) {
      expect(parseGrpcTimeout(bad), bad).toBeNull();
    }
  });
});

describe('NativeGrpcServer: a request must arrive whole in time', () => {
  it('answers DEADLINE_EXCEEDED to a stream that never ends its message, after requestReadTimeoutMs, and frees its buffer', async () => {
    const { server, port, errors, handled } = await start({ requestReadTimeoutMs: 300 });
    const { answer } = open(connect(port), Buffer.concat([prefix(100_000), Buffer.alloc(50_000, 1)]), false);
    await until('the bytes to arrive', () => server.reading.bytes === 50_005);
    expect(server.reading).toEqual({ streams: 1, bytes: 50_005 });
    const a = await answer;
    expect(a.status).toBe(String(grpcStatus.DEADLINE_EXCEEDED));
    expect(a.message).toBe('Deadline exceeded: the request did not arrive whole within 300 ms');
    expect(a.ms).toBeGreaterThanOrEqual(290);
    expect(a.ms).toBeLessThan(2000);
    expect(server.reading).toEqual({ streams: 0, bytes: 0 });
    expect(errors).toEqual(['DEADLINE_EXCEEDED']);
    expect(handled).toEqual([]);
  });

  it('a shorter grpc-timeout sets the deadline ("Deadline exceeded", as grpc-js says it)', async () => {
    const { port, errors } = await start({ requestReadTimeoutMs: 10_000 });
    const { answer } = open(connect(port), prefix(10), false, { 'grpc-timeout': '200m' });
    const a = await answer;
    expect(a).toMatchObject({ status: String(grpcStatus.DEADLINE_EXCEEDED), message: 'Deadline exceeded' });
    expect(a.ms).toBeLessThan(2000);
    expect(errors).toEqual(['DEADLINE_EXCEEDED']);
  });

  it('serves a whole request that carries a grpc-timeout', async () => {
    const { port, handled, errors } = await start();
    const a = await open(connect(port), Buffer.concat([prefix(5), Buffer.from('hello')]), true, { 'grpc-timeout': '199m' }).answer;
    expect(a.status).toBe('0');
    expect(handled).toEqual(['hello']);
    expect(errors).toEqual([]);
  });

  it('answers INTERNAL to a malformed grpc-timeout, before reading the request (as grpc-js and grpc-go)', async () => {
    const { port, handled, errors } = await start();
    const a = await open(connect(port), Buffer.concat([prefix(5), Buffer.from('hello')]), true, { 'grpc-timeout': '123456789S' }).answer;
    expect(a).toMatchObject({ status: String(grpcStatus.INTERNAL), message: 'Invalid grpc-timeout value "123456789S"' });
    expect(handled).toEqual([]);
    expect(errors).toEqual(['INTERNAL']);
  });
});

describe('NativeGrpcServer: shutdown with a request still arriving', () => {
  it('gives it a second to arrive, then answers UNAVAILABLE, so the drain is not held for the read deadline', async () => {
    const { server, port, errors } = await start({ requestReadTimeoutMs: 10_000 });
    const { answer } = open(connect(port), prefix(10), false);
    await until('the stream reading', () => server.reading.streams === 1);
    const t0 = Date.now();
    const drained = new Promise<number>((resolve) => server.tryShutdown(() => resolve(Date.now() - t0)));
    const a = await answer;
    expect(a).toMatchObject({ status: String(grpcStatus.UNAVAILABLE), message: 'server shutting down' });
    expect(a.ms).toBeLessThan(3000);
    expect(await drained).toBeLessThan(4000);
    expect(errors).toEqual(['UNAVAILABLE']);
  });
});

describe('NativeGrpcServer: the bytes of requests still arriving are bounded together', () => {
  it('refuses a stream whose buffer would pass maxBufferedRequestBytes with RESOURCE_EXHAUSTED; the others go on', async () => {
    const { server, port, errors, handled } = await start({ maxBufferedRequestBytes: 256 * 1024 });
    const session = connect(port);
    // each declares 1 MiB and sends 100 KiB (and its 5-byte prefix), on connections of their own
    const body = Buffer.concat([prefix(1024 * 1024), Buffer.alloc(100 * 1024, 7)]);
    const gone = [connect(port), connect(port)];
    const first = open(gone[0] as http2.ClientHttp2Session, body, false);
    const second = open(gone[1] as http2.ClientHttp2Session, body, false);
    const held = 2 * (100 * 1024 + 5);
    await until('two streams holding 200 KiB', () => server.reading.bytes === held);
    const third = await open(session, body, false).answer;
    expect(third).toMatchObject({
      status: String(grpcStatus.RESOURCE_EXHAUSTED),
      message: 'Server request buffers full (262144 bytes held by requests still arriving)',
    });
    expect(server.reading).toEqual({ streams: 2, bytes: held });

    // a client that goes away hands its share back (node's client would END_STREAM a cancelled stream: a cut message)
    for (const s of gone) s.destroy();
    await Promise.all([first.answer, second.answer]);
    await until('the budget back', () => server.reading.bytes === 0 && server.reading.streams === 0);
    const small = await open(session, Buffer.concat([prefix(2), Buffer.from('hi')]), true).answer;
    expect(small.status).toBe('0');
    expect(handled).toEqual(['hi']);
    expect(errors).toEqual(['RESOURCE_EXHAUSTED']);
  });

  it('streams that only declare a large message and stall hold no budget: a request that arrives is served', async () => {
    const { server, port, handled } = await start({ maxBufferedRequestBytes: 256 * 1024 });
    const stalled = connect(port);
    for (let i = 0; i < 50; i++) open(stalled, prefix(4 * 1024 * 1024), false);
    await until('50 streams reading', () => server.reading.streams === 50);
    expect(server.reading.bytes).toBe(250);
    const a = await open(connect(port), Buffer.concat([prefix(2), Buffer.from('hi')]), true).answer;
    expect(a.status).toBe('0');
    expect(handled).toEqual(['hi']);
  });

  it('a whole message held without END_STREAM counts too, and is handed back once the request ends', async () => {
    const { server, port, handled } = await start({ maxBufferedRequestBytes: 100_000 });
    const session = connect(port);
    const whole = open(session, Buffer.concat([prefix(60_000), Buffer.alloc(60_000, 1)]), false);
    await until('the message held', () => server.reading.bytes === 60_005);
    const refused = await open(session, Buffer.concat([prefix(60_000), Buffer.alloc(60_000, 2)]), false).answer;
    expect(refused.status).toBe(String(grpcStatus.RESOURCE_EXHAUSTED));
    whole.req.end();
    expect((await whole.answer).status).toBe('0');
    expect(handled).toHaveLength(1);
    expect(server.reading).toEqual({ streams: 0, bytes: 0 });
  });
});

describe('NativeGrpcServer: admitCall', () => {
  it('refuses at stream open, before any of the request arrives, with the error it gives; other paths are asked too', async () => {
    const asked: string[] = [];
    const { server, port, handled, errors } = await start({
      admitCall: (path, peer) => {
        asked.push(`${path} ${JSON.stringify(peer)}`);
        return { code: grpcStatus.PERMISSION_DENIED, details: 'not an allowed caller' };
      },
    });
    // headers only: the request never comes, the answer does
    const a = await open(connect(port), Buffer.alloc(0), false).answer;
    expect(a).toMatchObject({ status: String(grpcStatus.PERMISSION_DENIED), message: 'not an allowed caller' });
    expect(asked).toEqual(['/test.Bytes/Echo {}']);
    expect(handled).toEqual([]);
    expect(errors).toEqual(['PERMISSION_DENIED']);
    expect(server.reading).toEqual({ streams: 0, bytes: 0 });
  });

  it('an admitCall that throws refuses the call with INTERNAL', async () => {
    const { port, handled } = await start({
      admitCall: () => {
        throw new Error('boom');
      },
    });
    const a = await open(connect(port), Buffer.concat([prefix(2), Buffer.from('hi')]), true).answer;
    expect(a).toMatchObject({ status: String(grpcStatus.INTERNAL), message: 'Call admission failed: boom' });
    expect(handled).toEqual([]);
  });
});

const grpcStatus = { INTERNAL: 13, DEADLINE_EXCEEDED: 4, RESOURCE_EXHAUSTED: 8, PERMISSION_DENIED: 7, UNAVAILABLE: 14 } as const;
