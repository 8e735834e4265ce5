/**
 * The admin HTTP API under attack (SPEC §2 `/v1/...`, §7, §9; src/server/admin.ts), through the
 * real service with every `/v1` feature on (capability issuance and revocation, the SQLite receipt
 * store and its query API, checkpoints):
 *
 * - every Bearer-protected endpoint without a token, with a wrong one (prefix, suffix, case, other
 *   scheme) → 401 `unauthorized`, before the body is read; the comparison is constant-time: one
 *   `timingSafeEqual` over two SHA-256 digests, whatever the presented token's length or prefix;
 * - request-smuggling shapes sent as raw bytes over net.Socket (Content-Length with
 *   Transfer-Encoding, duplicate Content-Lengths, absurd chunk sizes, whitespace before the colon,
 *   oversized headers): refused with a 4xx and the connection closed, no smuggled request served;
 * - oversized bodies → 413 `body_too_large` (declared or chunked); malformed JSON and random bodies
 *   → 400 with a JSON error, never a 500;
 * - the admin token and the seeds (receipt signing, capability authority) never appear in any log
 *   entry, HTTP response body, receipt or metric this file saw.
 */
import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { tokenMatches } from '../../src/server/admin.js';
import { startAdminApiService } from '../helpers/admin-service.js';
import { fixtureRequest, type TestService } from '../helpers/service.js';
import { fuzzParameters } from './support/fuzz.js';
import { DEMO_POLICY } from './support/policies.js';
import { receiptLines } from './support/services.js';

// Count the constant-time comparisons the admin server makes (everything else passes through).
const comparisons = vi.hoisted(() => ({ calls: [] as Array<[number, number]> }));
vi.mock('node:crypto', async (importOriginal) => {
  const original = await importOriginal<typeof import('node:crypto')>();
  return {
    ...original,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      comparisons.calls.push([a.byteLength, b.byteLength]);
      return original.timingSafeEqual(a, b);
    },
  };
});

const TOKEN = `chio-admin-${crypto.randomBytes(24).toString('hex')}`;

/** Routes that need the Bearer token, each with a request that is otherwise acceptable. */
const PROTECTED: ReadonlyArray<{ method: 'GET' | 'POST'; path: string; body?: string }> = [
  { method: 'POST', path: '/v1/capabilities/issue', body: JSON.stringify({ subject: 's', tools: ['list_orders'], ttlSeconds: 60 }) },
  { method: 'POST', path: '/v1/revocations', body: JSON.stringify({ id: 'cap-01JD0000000000000000000000', reason: 'test' }) },
  { method: 'GET', path: '/v1/revocations' },
  { method: 'GET', path: '/v1/receipts/query?limit=5' },
  { method: 'GET', path: '/v1/receipts/rct-01JD0000000000000000000000' },
];
const PUBLIC = ['/metrics', '/healthz', '/readyz', '/v1/keys', '/v1/checkpoints/latest'];

let svc: TestService;
let port: number;
const seen: string[] = [];

beforeAll(async () => {
  svc = await startAdminApiService(TOKEN, DEMO_POLICY);
  port = svc.service.adminPort;
});

afterAll(async () => {
  await svc?.close();
});

/** fetch on the admin listener, keeping every response body for the secrets check. */
async function call(method: string, pathAndQuery: string, init: { token?: string | null; authorization?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string; headers: Headers }> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.authorization !== undefined) headers['authorization'] = init.authorization;
  else if (init.token !== null) headers['authorization'] = `Bearer ${init.token ?? TOKEN}`;
  if (init.body !== undefined) headers['content-type'] ??= 'application/json';
  const res = await fetch(`${svc.adminUrl}${pathAndQuery}`, { method, headers, body: init.body });
  const body = await res.text();
  seen.push(body);
  return { status: res.status, body, headers: res.headers };
}

/** Sends raw bytes and collects everything the server writes until it closes (or `ms` pass). */
function raw(bytes: string | Buffer, ms = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`${Buffer.concat(chunks).toString('latin1')}<<still open>>`);
    }, ms);
    socket.on('data', (c) => chunks.push(c));
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      seen.push(text);
      resolve(text);
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      if ((err as NodeJS.ErrnoException).code === 'ECONNRESET') resolve(Buffer.concat(chunks).toString('latin1'));
      else reject(err);
    });
    socket.write(bytes);
  });
}

const statusLines = (text: string): string[] => text.split('\r\n').filter((l) => /^HTTP\/1\.[01] \d{3}/.test(l));

describe('authentication', () => {
  it('every protected endpoint: 401 without a token, with a wrong one, or another scheme; the body is not read first', async () => {
    const wrong = [TOKEN.slice(0, -1), `${TOKEN}x`, TOKEN.toUpperCase(), `x${TOKEN.slice(1)}`, '', ' '];
    for (const route of PROTECTED) {
      const attempts = [
        await call(route.method, route.path, { token: null, body: route.body }),
        ...(await Promise.all(wrong.map((t) => call(route.method, route.path, { authorization: `Bearer ${t}`, body: route.body })))),
        await call(route.method, route.path, { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`, body: route.body }),
        await call(route.method, route.path, { authorization: `Bearer  ${TOKEN}`, body: route.body }),
        // an oversized body does not get a 413 before the 401: nothing is read for a stranger
        await call(route.method, route.path, { token: null, body: route.method === 'POST' ? 'x'.repeat(1024 * 1024) : undefined }),
      ];
      for (const a of attempts) {
        expect(a.status, `${route.method} ${route.path}`).toBe(401);
        expect(JSON.parse(a.body)).toEqual({ error: { code: 'unauthorized', message: 'a valid Bearer token is required' } });
        expect(a.headers.get('www-authenticate')).toBe('Bearer');
      }
    }
  });

  it('the right token opens every protected endpoint (not 401)', async () => {
    for (const route of PROTECTED) {
      const res = await call(route.method, route.path, { body: route.body });
      expect(res.status, `${route.method} ${route.path}: ${res.body}`).not.toBe(401);
      expect(res.status).toBeLessThan(500);
    }
  });

  it('public endpoints answer without a token, and ignore a wrong one', async () => {
    for (const p of PUBLIC) {
      for (const token of [null, 'wrong']) {
        const res = await call('GET', p, { token });
        // /v1/checkpoints/latest is 404 until the first checkpoint is signed
        expect(res.status === 200 || (p === '/v1/checkpoints/latest' && res.status === 404), `${p}: ${res.status}`).toBe(true);
      }
    }
  });

  it('constant time: every presented token, whatever its length or shared prefix, costs one timingSafeEqual of two SHA-256 digests', async () => {
    const candidates = ['', 'a', TOKEN.slice(0, 10), TOKEN.slice(0, -1), `${TOKEN}${'x'.repeat(500)}`, TOKEN];
    for (const candidate of candidates) {
      comparisons.calls.length = 0;
      await call('GET', '/v1/revocations', { authorization: `Bearer ${candidate}` });
      // an empty or malformed Bearer value is refused by the header's syntax before any comparison
      expect(comparisons.calls).toEqual(candidate === '' ? [] : [[32, 32]]);
    }
  });

  it('tokenMatches is equality, nothing looser', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), fc.string({ maxLength: 80 }), (a, b) => {
        expect(tokenMatches(a, b)).toBe(a === b && b.length > 0);
        expect(tokenMatches(b, b)).toBe(b.length > 0);
      }),
      fuzzParameters('tokenMatches', 500),
    );
  });
});

describe('request smuggling shapes (raw bytes): refused, connection closed, nothing smuggled', () => {
  const smuggled = `GET /v1/revocations HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`;
  const post = (headers: string, body: string): string => `POST /v1/revocations HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\n${headers}\r\n${body}`;

  it.each([
    ['Content-Length and Transfer-Encoding together', post('Content-Length: 4\r\nTransfer-Encoding: chunked\r\n', `0\r\n\r\n${smuggled}`)],
    ['two different Content-Lengths', post('Content-Length: 2\r\nContent-Length: 40\r\n', `{}${smuggled}`)],
    ['Transfer-Encoding: chunked, chunked', post('Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n', `0\r\n\r\n${smuggled}`)],
    ['an absurd chunk size', post('Transfer-Encoding: chunked\r\n', `ffffffffffffffffffffffff\r\n{}\r\n0\r\n\r\n${smuggled}`)],
    ['a negative Content-Length', post('Content-Length: -1\r\n', `{}${smuggled}`)],
    ['whitespace before the colon', post('Content-Length : 2\r\n', `{}${smuggled}`)],
    ['a bare LF line ending', `POST /v1/revocations HTTP/1.1\nHost: a\nContent-Length: 2\n\n{}${smuggled}`],
    ['a header over 16 KiB', `GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n${smuggled}`],
  ])('%s', async (_name, bytes) => {
    const text = await raw(bytes);
    const lines = statusLines(text);
    expect(lines.length, text.slice(0, 300)).toBe(1);
    expect(lines[0]).toMatch(/^HTTP\/1\.1 4\d\d /);
    expect(text).not.toContain('<<still open>>');
    expect(text).not.toContain('"revocations"');
  });

  it('the server is unharmed: a well-formed request on a new connection is served', async () => {
    expect((await call('GET', '/healthz', { token: null })).status).toBe(200);
    const text = await raw(`GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
    expect(statusLines(text)).toEqual(['HTTP/1.1 200 OK']);
  });
});

describe('bodies', () => {
  it('over 64 KiB → 413 body_too_large, declared or chunked', async () => {
    const big = JSON.stringify({ subject: 'x'.repeat(70 * 1024), tools: ['list_orders'], ttlSeconds: 60 });
    const declared = await call('POST', '/v1/capabilities/issue', { body: big });
    expect(declared.status).toBe(413);
    expect(JSON.parse(declared.body)).toMatchObject({ error: { code: 'body_too_large' } });
    const chunk = 'a'.repeat(8 * 1024);
    const chunked = await raw(
      `POST /v1/capabilities/issue HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
        `${`${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(10)}0\r\n\r\n`,
    );
    expect(statusLines(chunked)).toEqual(['HTTP/1.1 413 Payload Too Large']);
  });

  it('malformed JSON → 400 bad_request; a random JSON body → 400 with a JSON error, never a 500', async () => {
    const broken = await call('POST', '/v1/revocations', { body: '{"id": ' });
    expect(broken.status).toBe(400);
    expect(JSON.parse(broken.body)).toMatchObject({ error: { code: 'bad_request' } });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/v1/capabilities/issue', '/v1/revocations'), fc.oneof(fc.json({ maxDepth: 4 }), fc.string({ maxLength: 60 })), async (route, body) => {
        const res = await call('POST', route, { body });
        if (res.status === 201 || res.status === 200) return; // a body that happens to be a valid request
        expect(res.status).toBe(400);
        const error = (JSON.parse(res.body) as { error: { code: string; message: string } }).error;
        expect(['bad_request', 'issuance_refused']).toContain(error.code);
        expect(error.message.length).toBeLessThan(1000);
      }),
      fuzzParameters('admin API bodies', 150),
    );
  });

  it('query parameters: garbage → 400 naming the parameter, never a 500', async () => {
    for (const q of ['limit=-1', 'limit=99999999', 'since=yesterday', 'cursor=%ff%fe', 'verdict=maybe', 'bogus=1', `pathPrefix=${'a'.repeat(5000)}`]) {
      const res = await call('GET', `/v1/receipts/query?${q}`);
      expect(res.status, q).toBe(400);
      expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'bad_request' } });
    }
    expect((await call('GET', '/v1/receipts/%E0%A4%A')).status).toBe(404);
    expect((await call('GET', `/v1/receipts/${'r'.repeat(4000)}`)).status).toBe(400);
  });
});

describe('secrets never leak', () => {
  it('a capability presented at Check is recorded by id only', async () => {
    const issued = await call('POST', '/v1/capabilities/issue', { body: JSON.stringify({ subject: 'leak-check', tools: ['list_orders'], ttlSeconds: 300 }) });
    expect(issued.status).toBe(201);
    const token = (JSON.parse(issued.body) as { token: string }).token;
    const req = fixtureRequest('http-mtls-spiffe-full');
    const headers = req.attributes.request?.http?.headers;
    if (headers) headers['x-chio-capability'] = token;
    await svc.client.check(req);
    const receipts = receiptLines(svc.receiptsFile).join('\n');
    expect(receipts).not.toContain(token);
    expect(receipts).toContain((JSON.parse(issued.body) as { capability: { id: string } }).capability.id);
  });

  it('the admin token and the seeds appear in no log entry, response body, receipt or metric', async () => {
    seen.push(await (await fetch(`${svc.adminUrl}/metrics`)).text());
    const seedHex = (file: string): string => readFileSync(path.join(svc.dir, file), 'utf8').trim();
    const secrets = [TOKEN, seedHex('data/kernel.seed'), seedHex('secrets/authority.seed')];
    const forms = secrets.flatMap((s) => [s, Buffer.from(s, /^[0-9a-f]{64}$/.test(s) ? 'hex' : 'utf8').toString('base64url'), Buffer.from(s, /^[0-9a-f]{64}$/.test(s) ? 'hex' : 'utf8').toString('base64')]);
    const haystacks = {
      logs: svc.log.entries.map((e) => JSON.stringify(e)).join('\n'),
      responses: seen.join('\n'),
      receipts: receiptLines(svc.receiptsFile).join('\n'),
    };
    expect(svc.log.entries.length).toBeGreaterThan(0);
    expect(seen.length).toBeGreaterThan(50);
    for (const [where, text] of Object.entries(haystacks)) {
      for (const secret of forms) expect(text.includes(secret), `${where} contains a secret`).toBe(false);
    }
  });
});
