/**
 * Review of the admin HTTP listener (src/server/admin.ts) over real HTTP on loopback, raw bytes
 * on a socket so that every request is exactly what a client could send: the request target
 * (malformed, `//` paths), the Authorization header (scheme case, repeated), methods (HEAD,
 * OPTIONS: `Allow` on a 405), and the errors node's HTTP parser answers itself (JSON bodies too).
 */
import * as crypto from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAdminApiService } from '../helpers/admin-service.js';
import type { TestService } from '../helpers/service.js';

const TOKEN = `chio-admin-${crypto.randomBytes(24).toString('hex')}`;
const UNAUTHORIZED = { error: { code: 'unauthorized', message: 'a valid Bearer token is required' } };

let svc: TestService;
let port: number;

beforeAll(async () => {
  svc = await startAdminApiService(TOKEN);
  port = svc.service.adminPort;
});
afterAll(async () => {
  await svc?.close();
});

interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly closed: boolean;
}

/** Sends raw bytes, reads until the server closes (or `ms` pass), parses the one response. */
function raw(bytes: string, ms = 3000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const done = (): void => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no response: ${JSON.stringify(text)}`));
      const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      let body = text.slice(end + 4);
      if (headers['transfer-encoding'] === 'chunked') {
        let out = '';
        for (;;) {
          const nl = body.indexOf('\r\n');
          const size = parseInt(body.slice(0, nl), 16);
          if (!(size > 0)) break;
          out += body.slice(nl + 2, nl + 2 + size);
          body = body.slice(nl + 2 + size + 2);
        }
        body = out;
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body, closed });
    };
    const timer = setTimeout(() => {
      socket.destroy();
      done();
    }, ms);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => {
      closed = true;
      done();
    });
    socket.on('error', () => undefined);
    socket.write(bytes);
  });
}

const request = (method: string, target: string, headers = ''): Promise<RawResponse> =>
  raw(`${method} ${target} HTTP/1.1\r\nHost: admin\r\n${headers}Connection: close\r\n\r\n`);
const bearer = `Authorization: Bearer ${TOKEN}\r\n`;
const internalErrorsLogged = (): number => svc.log.entries.filter((e) => JSON.stringify(e).includes('admin request failed')).length;

describe('the request target', () => {
  it('a malformed request target is 400 bad_request, not a 500 internal_error', async () => {
    const before = internalErrorsLogged();
    // absolute-form targets that are no URL (before: `new URL` threw inside the handler → 500 internal_error, logged)
    for (const target of ['http://[', 'http://a:99999/v1/keys', 'http://a%/v1/keys']) {
      const res = await request('GET', target, bearer);
      expect(res.status, target).toBe(400);
      expect(JSON.parse(res.body), target).toEqual({ error: { code: 'bad_request', message: 'malformed request target' } });
    }
    // the same bytes after `//` are a path (before: a host, the same 500): no such endpoint
    for (const target of ['//[', '//a:99999/v1/keys']) {
      const res = await request('GET', target, bearer);
      expect(res.status, target).toBe(404);
      expect(JSON.parse(res.body), target).toEqual({ error: { code: 'not_found', message: 'no such endpoint' } });
    }
    // a space in the target is refused by node's parser: a JSON error too
    const spaced = await raw('GET http://a b HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(spaced.status).toBe(400);
    expect(JSON.parse(spaced.body)).toEqual({ error: { code: 'bad_request', message: 'malformed HTTP request' } });
    expect(internalErrorsLogged()).toBe(before);
  });

  it('a path starting with // is a path (origin-form), never a host to skip', async () => {
    // before: `//healthz` was parsed as host "healthz" and path "/" (404), and `//anything/v1/keys` as /v1/keys
    const health = await request('GET', '//healthz');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toEqual({ status: 'ok' });
    const skipped = await request('GET', '//anything/v1/revocations', bearer);
    expect(skipped.status).toBe(404);
    expect(JSON.parse(skipped.body)).toEqual({ error: { code: 'not_found', message: 'no such endpoint' } });
    // the absolute form still works (RFC 9112 §3.2.2: a server must accept it)
    expect((await request('GET', 'http://admin/v1/revocations', bearer)).status).toBe(200);
  });
});

describe('the Authorization header', () => {
  it('the auth-scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are accepted', async () => {
    for (const scheme of ['bearer', 'BEARER', 'bEaReR']) {
      const res = await request('GET', '/v1/revocations', `Authorization: ${scheme} ${TOKEN}\r\n`);
      expect(res.status, scheme).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ revocations: [] });
    }
    // the token itself stays case-sensitive
    const upper = await request('GET', '/v1/revocations', `Authorization: bearer ${TOKEN.toUpperCase()}\r\n`);
    expect(upper.status).toBe(401);
    expect(JSON.parse(upper.body)).toEqual(UNAUTHORIZED);
  });

  it('two Authorization headers are refused (401), whichever comes first', async () => {
    // node keeps only the first of repeated Authorization headers: before, a valid first one was accepted
    for (const headers of [`${bearer}Authorization: Bearer wrong\r\n`, `Authorization: Bearer wrong\r\n${bearer}`, `${bearer}${bearer}`]) {
      const res = await request('GET', '/v1/revocations', headers);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer');
      expect(JSON.parse(res.body)).toEqual(UNAUTHORIZED);
    }
  });

  it('a token in the query string is not a credential', async () => {
    const res = await request('GET', `/v1/revocations?access_token=${TOKEN}`);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body)).toEqual(UNAUTHORIZED);
    expect(res.body).not.toContain(TOKEN);
  });
});

describe('methods', () => {
  it('HEAD is GET without a body (RFC 9110 §9.3.2), the token still required where GET needs it', async () => {
    const head = await request('HEAD', '/healthz');
    expect(head.status).toBe(200);
    expect(head.headers['content-type']).toBe('application/json');
    expect(head.body).toBe('');
    expect((await request('HEAD', '/v1/keys')).status).toBe(200);
    const locked = await request('HEAD', '/v1/revocations');
    expect(locked.status).toBe(401);
    expect(locked.body).toBe('');
    expect((await request('HEAD', '/v1/revocations', bearer)).status).toBe(200);
  });

  it('a 405 names the allowed methods in Allow (RFC 9110 §15.5.6)', async () => {
    const options = await request('OPTIONS', '/healthz');
    expect(options.status).toBe(405);
    expect(options.headers['allow']).toBe('GET, HEAD');
    expect(JSON.parse(options.body)).toEqual({ error: { code: 'bad_request', message: 'method OPTIONS not allowed' } });
    const trace = await request('TRACE', '/v1/revocations', bearer);
    expect(trace.status).toBe(405);
    expect(trace.headers['allow']).toBe('POST, GET, HEAD');
    expect(JSON.parse(trace.body)).toEqual({ error: { code: 'bad_request', message: 'method TRACE not allowed' } });
    const get = await request('GET', '/v1/capabilities/issue', bearer);
    expect(get.status).toBe(405);
    expect(get.headers['allow']).toBe('POST');
    expect(JSON.parse(get.body)).toEqual({ error: { code: 'bad_request', message: 'method GET not allowed' } });
  });
});

describe('Expect: 100-continue', () => {
  const expecting = (headers: string, length: number): Promise<RawResponse> =>
    raw(`POST /v1/revocations HTTP/1.1\r\nHost: admin\r\n${headers}Content-Type: application/json\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\n\r\n`, 600);

  it('without the token: the final 401 at once, the body never invited', async () => {
    const r = await expecting('', 20);
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toEqual(UNAUTHORIZED);
  });

  it('with the token but a body over the limit: the final 413 at once', async () => {
    const r = await expecting(bearer, 65 * 1024);
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'body_too_large' } });
  });

  it('a body over the limit, sent without waiting: 413 and the connection closed, the rest never read', async () => {
    const head = `POST /v1/revocations HTTP/1.1\r\nHost: admin\r\n${bearer}Content-Type: application/json\r\n`;
    const declared = await raw(`${head}Content-Length: ${10 * 1024 * 1024}\r\n\r\n${'x'.repeat(1024)}`, 2000);
    expect([declared.status, declared.headers['connection'], declared.closed]).toEqual([413, 'close', true]);
    expect(JSON.parse(declared.body)).toEqual({ error: { code: 'body_too_large', message: 'request body is larger than 65536 bytes' } });
    const chunk = 'y'.repeat(70 * 1024);
    const chunked = await raw(`${head}Transfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n`, 2000);
    expect([chunked.status, chunked.headers['connection'], chunked.closed]).toEqual([413, 'close', true]);
  });

  it('with the token and a body within the limit: 100 Continue', async () => {
    expect((await expecting(bearer, 20)).status).toBe(100);
  });
});

describe("what node's HTTP parser refuses", () => {
  it('is answered with a JSON error and the connection closed', async () => {
    const badHeader = await raw(`GET /healthz HTTP/1.1\r\nHost: a\r\nX-Bad: \x01\r\n\r\n`);
    expect(badHeader.status).toBe(400);
    expect(badHeader.closed).toBe(true);
    expect(JSON.parse(badHeader.body)).toEqual({ error: { code: 'bad_request', message: 'malformed HTTP request' } });
    const lie = await raw(`POST /v1/revocations HTTP/1.1\r\nHost: a\r\n${bearer}Content-Length: 1e5\r\n\r\n{}`);
    expect(lie.status).toBe(400);
    expect(JSON.parse(lie.body)).toEqual({ error: { code: 'bad_request', message: 'malformed HTTP request' } });
    const longUrl = await request('GET', `/v1/receipts/query?rule=${'a'.repeat(17 * 1024)}`, bearer);
    expect(longUrl.status).toBe(431);
    expect(longUrl.closed).toBe(true);
    expect(JSON.parse(longUrl.body)).toEqual({ error: { code: 'bad_request', message: 'request headers are too large' } });
    // the listener is unharmed
    expect((await request('GET', '/healthz')).status).toBe(200);
  });
});

describe('handled correctly (regression guards)', () => {
  it('query parameters: repeated, unknown, empty, odd limits → 400 naming the parameter', async () => {
    const cases: Array<[string, string, string]> = [
      ['limit=0', 'limit', 'query parameter limit: expected an integer from 1 to 500'],
      ['limit=-1', 'limit', 'query parameter limit: expected an integer from 1 to 500'],
      ['limit=501', 'limit', 'query parameter limit: at most 500'],
      ['limit=1e3', 'limit', 'query parameter limit: expected an integer from 1 to 500'],
      ['limit=%205', 'limit', 'query parameter limit: expected an integer from 1 to 500'],
      ['limit=', 'limit', 'query parameter limit: expected an integer from 1 to 500'],
      ['tool=a&tool=a', 'tool', 'query parameter "tool" is given more than once'],
      ['cursor=Y2hpby5jdXJzb3IudjE6M', 'cursor', 'query parameter cursor: cursor is not a cursor returned by this API (nextCursor)'],
    ];
    for (const [q, field, message] of cases) {
      const res = await request('GET', `/v1/receipts/query?${q}`, bearer);
      expect(res.status, q).toBe(400);
      expect(JSON.parse(res.body), q).toEqual({ error: { code: 'bad_request', message, field } });
    }
  });

  it('a query value that is not percent-encoded UTF-8 is 400 naming its parameter (it was read as U+FFFD and matched nothing)', async () => {
    for (const [q, field] of [
      ['rule=%ff', 'rule'],
      ['workloadUri=spiffe%3A%2F%2Fexample.org%2F%C3', 'workloadUri'],
      ['limit=5&tool=%E2%82', 'tool'],
      ['%ff=1', '%ff'],
    ] as const) {
      const res = await request('GET', `/v1/receipts/query?${q}`, bearer);
      expect(res.status, q).toBe(400);
      expect(JSON.parse(res.body), q).toEqual({ error: { code: 'bad_request', message: `query parameter ${JSON.stringify(field)} is not percent-encoded UTF-8`, field } });
    }
    // well-formed multi-byte UTF-8 and '+' for a space are fine
    expect((await request('GET', '/v1/receipts/query?rule=%C3%A9t%C3%A9+x', bearer)).status).toBe(200);
  });

  it('bodies: duplicate keys, __proto__, deep nesting, huge numbers → 400 JSON, never a 500', async () => {
    const before = internalErrorsLogged();
    const post = (route: string, body: string): Promise<RawResponse> =>
      raw(`POST ${route} HTTP/1.1\r\nHost: a\r\n${bearer}Content-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    const proto = await post('/v1/revocations', '{"__proto__":{"x":1},"id":"cap-01JD0000000000000000000000"}');
    expect(proto.status).toBe(400);
    expect(JSON.parse(proto.body)).toEqual({ error: { code: 'bad_request', message: '__proto__: unknown key', field: '__proto__' } });
    const deep = await post('/v1/revocations', `${'['.repeat(30_000)}${']'.repeat(30_000)}`);
    expect(deep.status).toBe(400);
    expect(JSON.parse(deep.body)).toMatchObject({ error: { code: 'bad_request' } });
    const huge = await post('/v1/capabilities/issue', '{"subject":"s","tools":["list_orders"],"ttlSeconds":1e400}');
    expect(huge.status).toBe(400);
    expect(JSON.parse(huge.body)).toMatchObject({ error: { code: 'issuance_refused', field: 'ttlSeconds' } });
    expect(internalErrorsLogged()).toBe(before);
  });
});
