import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AUTHORIZATION_SERVICE,
  loadAuthProtos,
  normalizePath,
  otherPathReadings,
  splitHost,
  toCheckInput,
  type RawCheckRequest,
} from '../../src/check/envoy.js';
import { DenyError } from '../../src/errors.js';
import { FIXTURES, fixtureRequest } from '../helpers/service.js';

const REQ_DIR = path.join(FIXTURES, 'envoy', 'check-requests');
const RES_DIR = path.join(FIXTURES, 'envoy', 'check-responses');

type Method = { requestDeserialize(b: Buffer): unknown; responseSerialize(v: unknown): Buffer; responseDeserialize(b: Buffer): unknown };

function checkMethod(): Method {
  const svc = loadAuthProtos()[AUTHORIZATION_SERVICE] as unknown as { Check: Method };
  return svc.Check;
}

describe('official Envoy protos', () => {
  const names = readdirSync(REQ_DIR).filter((f) => f.endsWith('.pb')).map((f) => f.slice(0, -3));

  it.each(names)('decodes the wire form of %s exactly as the loader view says', (name) => {
    const decoded = checkMethod().requestDeserialize(readFileSync(path.join(REQ_DIR, `${name}.pb`)));
    const expected = JSON.parse(readFileSync(path.join(REQ_DIR, `${name}.loader-view.json`), 'utf8')) as unknown;
    // the loader view shows bytes (header_map raw_value) as base64
    const asJson = JSON.stringify(decoded, (_k, v: unknown) =>
      v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer'
        ? Buffer.from((v as { data: number[] }).data).toString('base64')
        : v,
    );
    expect(JSON.parse(asJson)).toEqual(expected);
  });

  it('encodes our deny response in the same wire form Envoy reads', () => {
    const m = checkMethod();
    const bytes = m.responseSerialize({
      status: { code: 7, message: 'identity_required' },
      denied_response: { status: { code: 401 }, headers: [], body: 'x' },
    });
    expect(m.responseDeserialize(bytes)).toMatchObject({
      status: { code: 7, message: 'identity_required' },
      denied_response: { status: { code: 'Unauthorized' }, body: 'x' },
    });
  });

  it('round-trips every reference CheckResponse', () => {
    const m = checkMethod();
    for (const f of readdirSync(RES_DIR).filter((x) => x.endsWith('.pb'))) {
      const wire = readFileSync(path.join(RES_DIR, f));
      const decoded = m.responseDeserialize(wire);
      expect(m.responseDeserialize(m.responseSerialize(decoded)), f).toEqual(decoded);
    }
  });
});

describe('toCheckInput', () => {
  it('normalizes the full mTLS request', () => {
    const input = toCheckInput(fixtureRequest('http-mtls-spiffe-full') as RawCheckRequest);
    expect(input).toMatchObject({
      kind: 'http',
      requestId: '5e3c1a7e-2b0b-4d8f-9a7c-6f1f2f5d9a01',
      method: 'GET',
      host: 'backend.default.svc:8443',
      hostname: 'backend.default.svc',
      port: '8443',
      path: '/api/v1/orders',
      grpc: null,
      source: '10.0.0.12:53514',
      principal: 'spiffe://example.org/ns/default/sa/frontend',
    });
    expect(input.certificate).toMatch(/^-----BEGIN%20CERTIFICATE-----%0A/);
    expect(input.contextExtensions.get('route')).toBe('orders');
    expect(input.headers.get('user-agent')).toBe('curl/8.5.0');
  });

  it('reads header_map (encode_raw_headers) and joins repeated headers', () => {
    const input = toCheckInput({
      attributes: {
        request: {
          http: {
            method: 'GET',
            path: '/',
            host: 'h',
            header_map: {
              headers: [
                { key: 'X-A', raw_value: Buffer.from('1') },
                { key: 'x-a', raw_value: Buffer.from('2') },
                { key: ':authority', raw_value: Buffer.from('h') },
              ],
            },
          },
        },
      },
    });
    expect(input.headers.get('x-a')).toBe('1,2');
  });

  it('reads the raw-headers fixture', () => {
    const input = toCheckInput(fixtureRequest('http-raw-headers') as RawCheckRequest);
    expect(input.kind).toBe('http');
    expect(input.headers.size).toBeGreaterThan(0);
    expect(input.hostname).toBe('backend');
  });

  it('maps the L4 network filter request (no request) to kind tcp', () => {
    const input = toCheckInput(fixtureRequest('tcp-network-filter') as RawCheckRequest);
    expect(input).toMatchObject({ kind: 'tcp', method: null, host: null, path: null });
    expect(input.principal).toBe('spiffe://example.org/ns/default/sa/frontend');
  });

  it('recognizes a gRPC call', () => {
    const input = toCheckInput({
      attributes: {
        request: { http: { method: 'POST', path: '/payments.v1.Ledger/Reconcile', host: 'ledger', headers: { 'content-type': 'application/grpc+proto' } } },
      },
    });
    expect(input.grpc).toEqual({ service: 'payments.v1.Ledger', method: 'Reconcile' });
  });

  it('reads the pipe address of a UDS peer', () => {
    const input = toCheckInput(fixtureRequest('http-uds-peer') as RawCheckRequest);
    expect(input.source).toBe('@envoy-admin');
  });

  it('rejects a request without attributes', () => {
    expect(() => toCheckInput({})).toThrowError(new DenyError('malformed_request', 'CheckRequest has no attributes'));
  });
});

describe('normalizePath', () => {
  it.each([
    ['/api/v1/orders?limit=10', '/api/v1/orders'],
    ['/a#frag', '/a'],
    ['/%61dmin', '/admin'],
    ['/a/./b', '/a/b'],
    ['/a/../admin', '/admin'],
    ['/../../admin', '/admin'],
    ['//admin//x', '/admin/x'],
    ['/a/%2e%2e/admin', '/admin'],
    ['/a%2Fb', '/a%2Fb'],
    ['/a/b/', '/a/b/'],
    ['/a/..', '/'],
    ['relative', '/relative'],
    ['public/../admin', '/admin'],
    ['./a/./b', '/a/b'],
    ['*', '*'],
    // percent-encoding normalized (RFC 3986 §6.2.2.1–2): upper-case hex, characters a path does not carry raw encoded
    ['/v2/items%3apurge', '/v2/items%3Apurge'],
    ['/a%2fb', '/a%2Fb'],
    ['/caf\u00e9', '/caf%C3%A9'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/a b\\c"d', '/a%20b%5Cc%22d'],
    ['/x/\u{1F600}', '/x/%F0%9F%98%80'],
    ["/v1/items:delete@!$&'()*+,;=", "/v1/items:delete@!$&'()*+,;="],
    // "//" merged before dot-segments are removed (Go's path.Clean, nginx); RFC 3986 order is another reading
    ['/admin//../users', '/users'],
  ])('%s → %s', (raw, want) => {
    expect(normalizePath(raw)).toBe(want);
  });

  it.each([
    ['/admin//../users', '/admin/users'],
    ['/a//b/../../c', '/a/c'],
    ['//../x', '/x'],
    ['/a/b//', '/a/b/'],
    ['/a/./b', '/a/b'],
  ])('in RFC 3986 order (dot-segments first, then "//" merged): %s → %s', (raw, want) => {
    expect(normalizePath(raw, 'rfc')).toBe(want);
  });

  it('rejects a bad percent-escape', () => {
    expect(() => normalizePath('/a%zz')).toThrowError(new DenyError('malformed_request', 'request path has an invalid percent-encoding'));
  });

  it('is idempotent and never leaves dot-segments or empty segments', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', 'b', '.', '..', '', '%2e', '%61', 'x%2Fy'), { maxLength: 8 }), (segs) => {
        const once = normalizePath('/' + segs.join('/'));
        expect(normalizePath(once)).toBe(once);
        const inner = once.split('/').slice(1, -1);
        expect(inner).not.toContain('.');
        expect(inner).not.toContain('..');
        expect(inner).not.toContain('');
      }),
    );
  });
});

describe('otherPathReadings: the path as other servers read it', () => {
  it.each([
    // with dot-segments kept (Express, Werkzeug route by prefix on the path as sent) as one more reading
    ['/api/v1/orders/..%2F..%2F..%2Fadmin', ['/admin', '/api/v1/orders/../../../admin']],
    ['/api/v1/orders/..%2f..%2f..%2fadmin', ['/admin', '/api/v1/orders/../../../admin']],
    ['/api/v1/orders/..%5C..%5Cadmin', ['/api/admin', '/api/v1/orders/../../admin']],
    ['/api/v1/orders\\..\\..\\admin', ['/api/admin', '/api/v1/orders/../../admin']],
    ['/repos/group%2Fproject/issues', ['/repos/group/project/issues']],
    // mixed separators: %2F alone and %5C alone give other paths than all three together
    ['/public/a%5Cb%2F..%2F..%2Fadmin', ['/admin', '/public/a%5Cb/../../admin', '/public/a/b%2F..%2F..%2Fadmin', '/public/a/b/../../admin', '/public/admin']],
    ['/public/..;/admin', ['/admin', '/public/../admin']],
    ['/public/%2e%2e;x/admin', ['/admin', '/public/../admin']],
    ['/api/v1/orders;jsessionid=1', ['/api/v1/orders']],
    // the marker's segment removed by a later ".." in the normalized path: read from the path as sent
    ['/public/x/..;/../admin', ['/admin', '/public/x/../../admin', '/public/x/..;/../admin']],
    ['/public/.;/../admin', ['/admin', '/public/./../admin', '/public/.;/../admin']],
    ['/public/x/..%2F..%2Fadmin%2Fy/..', ['/admin/', '/public/x/..%2F..%2Fadmin%2Fy/..', '/public/x/../../admin/y/..']],
    ['/public/x/..%5C..%5Cadmin%5Cy/..', ['/admin/', '/public/x/..%5C..%5Cadmin%5Cy/..', '/public/x/../../admin/y/..']],
    ['/api/v1/orders;x=1?q=a;b', ['/api/v1/orders']],
    // escaped sub-delims, ":" and "@" decoded (WSGI PATH_INFO, Go, Spring), in any hex case
    ['/v1/items%3Adelete', ['/v1/items:delete']],
    ['/v2/items%3apurge', ['/v2/items:purge']],
    ['/users/%40me', ['/users/@me']],
    ['/a%3Bjsessionid=1', ['/a;jsessionid=1', '/a']],
    ['/a%2Fb%3Ac', ['/a/b%3Ac', '/a%2Fb:c', '/a/b:c']],
    // ".." applied before "//" is merged (RFC 3986 §5.2.4, WHATWG URL), and kept
    ['/admin//../users', ['/admin/../users', '/admin/users']],
    ['/ops//%2e%2e/run', ['/ops/../run', '/ops/run']],
    ['/a%2F/../b', ['/a%2F/../b', '/a/../b', '/a/b']], // a %2F read as "/" makes the empty segment
    // dot-segments kept: Express's app.use('/admin') and Flask's /admin/<path:p> take these
    ['/admin/../public', ['/admin/../public']],
    ['/admin/%2e%2e/public', ['/admin/../public']],
    ['/%2e%2e', ['/..']],
    // two leading slashes: WHATWG URL (Node's new URL(req.url, base)) reads an authority
    ['//admin/x', ['/x']],
    ['/\\admin/x', ['/admin/x', '/x']],
  ])('%s → %j', (sent, want) => {
    expect(otherPathReadings(sent, normalizePath(sent)).sort()).toEqual([...want].sort());
  });

  it('refuses a path over 4 KiB that holds a marker (each reading is a whole normalization); a long plain path is read once; none over 64 KiB is read', () => {
    const plain = `/a/${'x'.repeat(60 * 1024)}`;
    expect(otherPathReadings(plain, normalizePath(plain))).toEqual([]);
    const long = `/a/${'x'.repeat(4 * 1024)}%2F`;
    expect(() => otherPathReadings(long, normalizePath(long))).toThrow(
      expect.objectContaining({ code: 'ambiguous_path', message: 'the path is longer than 4096 bytes and holds %2F, %5C, "\\", ";", ".", escaped reserved characters or a leading "//": it is not read as other servers would, and is refused' }),
    );
    const marked = `/a/${'x'.repeat(4 * 1024 - 6)}%2F`;
    expect(otherPathReadings(marked, normalizePath(marked))).toHaveLength(1);
    // Envoy's default header limit is 60 KiB
    expect(() => normalizePath(`/${'y'.repeat(64 * 1024)}`)).toThrow(expect.objectContaining({ code: 'malformed_request', message: 'request path is longer than 65536 characters' }));
  });

  it('is empty when there is nothing to read otherwise', () => {
    for (const p of ['/api/v1/orders', '/a%20b', '/a%252Fb', '/a/b/', '/a?x=1;y=%2F', '/caf%C3%A9', '/a//b', '/a%3F/b', '/a%23b', '/static/app.js', '/.well-known/x', '/a/b.c/d']) {
      expect(otherPathReadings(p, normalizePath(p)), p).toEqual([]);
    }
  });

  it('toCheckInput carries them, each with the gRPC target it would give', () => {
    const raw = (p: string): RawCheckRequest => ({ attributes: { request: { http: { method: 'GET', path: p, host: 'h' } } } }) as RawCheckRequest;
    expect(toCheckInput(raw('/api/v1/orders/..%2F..%2F..%2Fadmin?x=1')).otherReadings).toEqual([
      { path: '/admin', grpc: null },
      { path: '/api/v1/orders/../../../admin', grpc: null },
    ]);
    expect(toCheckInput(raw('/api/v1/orders')).otherReadings).toEqual([]);
  });
});

describe('splitHost', () => {
  it.each([
    ['Backend.Default.svc:8443', 'backend.default.svc:8443', 'backend.default.svc', '8443'],
    ['backend', 'backend', 'backend', null],
    ['[::1]:8080', '[::1]:8080', '[::1]', '8080'],
    // an empty port is no port, and a port's leading zeros are dropped (host rules must still match)
    ['Admin.svc:', 'admin.svc', 'admin.svc', null],
    ['admin.svc:0443', 'admin.svc:443', 'admin.svc', '443'],
    ['[::1]:', '[::1]', '[::1]', null],
    // IPv6 literals in their RFC 5952 spelling
    ['[0:0::1]', '[::1]', '[::1]', null],
    ['[2001:DB8:0:0:0:0:0:1]:8443', '[2001:db8::1]:8443', '[2001:db8::1]', '8443'],
    ['10.0.0.1:80', '10.0.0.1:80', '10.0.0.1', '80'],
    ['admin.svc.', 'admin.svc.', 'admin.svc.', null],
  ])('%s', (raw, host, hostname, port) => {
    expect(splitHost(raw)).toEqual({ host, hostname, port });
  });

  it.each(['a:b:c', 'x@admin.svc', 'user:pw@admin.svc', 'admin.svc:99999x', 'admin%2esvc', 'caf\u00e9.svc', 'a b.svc', '[fe80::1%25eth0]', '[1::2::3]', '[::1'])(
    'a host that is neither a DNS name nor an IP literal is malformed_request: %s',
    (raw) => {
      expect(() => splitHost(raw)).toThrow(
        expect.objectContaining({ code: 'malformed_request', message: `request host ${JSON.stringify(raw)} is not a DNS name or an IP literal` }),
      );
    },
  );
});
