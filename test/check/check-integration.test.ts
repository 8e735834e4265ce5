/**
 * The Check path end to end: the real service on loopback, a grpc-js client on Envoy's
 * official protos, the reference CheckRequests. Every verdict, reason code, HTTP status and
 * receipt is asserted exactly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import { fixturePem, fixtureRequest, startTestService, type FixtureRequest, type TestService } from '../helpers/service.js';

let svc: TestService;

beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => {
  await svc?.close();
});

function headerMap(list: Array<{ header: { key: string; value: string }; append?: { value: boolean } }> | undefined) {
  const m = new Map<string, { value: string; append: boolean | undefined }>();
  for (const h of list ?? []) m.set(h.header.key, { value: h.header.value, append: h.append?.value });
  return m;
}

function receiptIdOf(res: CheckResponseMessage): string {
  const list = res.ok_response?.headers ?? res.denied_response?.headers;
  const id = headerMap(list).get('x-chio-receipt-id')?.value;
  if (!id) throw new Error('no receipt id header');
  return id;
}

function receiptById(id: string): Record<string, unknown> {
  const r = svc.receipts().find((x) => x['id'] === id);
  if (!r) throw new Error(`receipt ${id} not on disk`);
  return r;
}

async function expectDeny(req: FixtureRequest, code: string, httpStatus = 'Forbidden'): Promise<Record<string, unknown>> {
  const res = await svc.client.check(req);
  expect(res.status.code).toBe(7);
  expect(res.status.message).toBe(code);
  expect(res.ok_response).toBeUndefined();
  expect(res.denied_response?.status.code).toBe(httpStatus);
  const id = receiptIdOf(res);
  expect(id).toMatch(/^rct-[0-9A-HJKMNP-TV-Z]{26}$/);
  expect(JSON.parse(res.denied_response?.body ?? '')).toEqual({ verdict: 'deny', reason: code, receiptId: id });
  const receipt = receiptById(id);
  expect(receipt['verdict']).toBe('deny');
  expect((receipt['reasons'] as Array<{ code: string }>)[0]?.code).toBe(code);
  return receipt;
}

describe('Check: allow', () => {
  it('allows the full mTLS SPIFFE request under the matching rule, with headers, metadata and a receipt', async () => {
    const res = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(res.status.code).toBe(0);
    expect(res.denied_response).toBeUndefined();
    const headers = headerMap(res.ok_response?.headers);
    const id = headers.get('x-chio-receipt-id');
    expect(id?.value).toMatch(/^rct-/);
    expect(id?.append).toBe(false);
    expect(headers.get('x-chio-workload-id')).toEqual({ value: 'spiffe://example.org/ns/default/sa/frontend', append: false });
    expect(res.ok_response?.headers_to_remove).toContain('x-chio-capability');

    const md = (res.dynamic_metadata as unknown as { fields: Record<string, { stringValue?: string }> }).fields;
    expect(md['verdict']?.stringValue).toBe('allow');
    expect(md['rule']?.stringValue).toBe('orders');
    expect(md['tool']?.stringValue).toBe('list_orders');
    expect(md['tier']?.stringValue).toBe('attested');
    expect(md['workloadId']?.stringValue).toBe('spiffe://example.org/ns/default/sa/frontend');
    expect(md['receiptId']?.stringValue).toBe(id?.value);

    const receipt = receiptById(id?.value ?? '');
    expect(receipt).toMatchObject({
      schema: 'chio.receipt.v2',
      chain: expect.stringMatching(/^chn-[0-7][0-9A-HJKMNP-TV-Z]{25}$/) as unknown as string,
      batch: { index: expect.any(Number) as unknown as number, size: expect.any(Number) as unknown as number },
      verdict: 'allow',
      rule: 'orders',
      tool: 'list_orders',
      capabilityId: null,
      reasons: [],
      timestamp: '2026-12-01T00:00:00.000Z',
      request: {
        id: '5e3c1a7e-2b0b-4d8f-9a7c-6f1f2f5d9a01',
        method: 'GET',
        host: 'backend.default.svc:8443',
        path: '/api/v1/orders',
        source: '10.0.0.12:53514',
      },
      runtimeAttestation: {
        tier: 'attested',
        verifier: 'envoy',
        workloadIdentity: {
          scheme: 'spiffe',
          credentialKind: 'x509_svid',
          uri: 'spiffe://example.org/ns/default/sa/frontend',
          trustDomain: 'example.org',
          path: '/ns/default/sa/frontend',
        },
      },
      workloadIdentityMatch: { mode: 'require', matched: true },
      runtimeAssuranceMatch: { mode: 'require', tier: 'attested', matched: true },
      kernelKey: svc.service.key.kid,
    });
    expect(receipt['policyHash']).toBe(svc.service.policy().hash);
    expect(String(receipt['signature'])).toMatch(/^ed25519:[A-Za-z0-9_-]{86}$/);
  });

  it('takes the principal alone as credential kind uri', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    delete req.attributes.source?.certificate;
    const res = await svc.client.check(req);
    expect(res.status.code).toBe(0);
    const receipt = receiptById(receiptIdOf(res));
    expect((receipt['runtimeAttestation'] as { workloadIdentity: { credentialKind: string } }).workloadIdentity.credentialKind).toBe('uri');
  });

  it('overwrites a client-sent x-chio-workload-id and strips every other x-chio-* header', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    const h = req.attributes.request?.http?.headers ?? {};
    h['x-chio-workload-id'] = 'spiffe://example.org/ns/default/sa/admin';
    h['x-chio-receipt-id'] = 'rct-FAKE';
    h['x-chio-tier'] = 'verified';
    const res = await svc.client.check(req);
    expect(res.status.code).toBe(0);
    const headers = headerMap(res.ok_response?.headers);
    expect(headers.get('x-chio-workload-id')).toEqual({ value: 'spiffe://example.org/ns/default/sa/frontend', append: false });
    expect(headers.get('x-chio-receipt-id')?.value).not.toBe('rct-FAKE');
    expect(headers.get('x-chio-receipt-id')?.append).toBe(false);
    expect([...(res.ok_response?.headers_to_remove ?? [])].sort()).toEqual(['x-chio-capability', 'x-chio-tier']);
  });
});

describe('Check: deny, each with its own reason code and a receipt', () => {
  it('expired SVID → svid_expired (the principal alone looks fine)', async () => {
    const r = await expectDeny(fixtureRequest('http-expired-svid'), 'svid_expired');
    expect((r['reasons'] as Array<{ message: string }>)[0]?.message).toContain('2024-01-02');
  });

  it('two URI SANs → svid_multiple_uri_sans', async () => {
    await expectDeny(fixtureRequest('http-multi-uri-san'), 'svid_multiple_uri_sans');
  });

  it('DNS-only certificate → svid_dns_san_only', async () => {
    await expectDeny(fixtureRequest('http-dns-san-principal'), 'svid_dns_san_only');
  });

  it('subject-only certificate → svid_no_uri_san', async () => {
    await expectDeny(fixtureRequest('http-subject-principal'), 'svid_no_uri_san');
  });

  it('DNS principal without a certificate → principal_not_spiffe', async () => {
    const req = fixtureRequest('http-dns-san-principal');
    delete req.attributes.source?.certificate;
    await expectDeny(req, 'principal_not_spiffe');
  });

  it('workload of a foreign trust domain → workload_trust_domain_mismatch', async () => {
    const r = await expectDeny(fixtureRequest('http-foreign-trust-domain'), 'workload_trust_domain_mismatch');
    expect(r['workloadIdentityMatch']).toEqual({ mode: 'require', matched: false });
  });

  it('plaintext, no identity → identity_required with HTTP 401', async () => {
    const r = await expectDeny(fixtureRequest('http-plaintext-no-identity'), 'identity_required', 'Unauthorized');
    expect(r['runtimeAttestation']).toEqual({ tier: 'none', verifier: null, workloadIdentity: null });
  });

  it('certificate and principal naming different IDs → identity_conflict', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    if (req.attributes.source) req.attributes.source.principal = 'spiffe://example.org/ns/default/sa/backend';
    const r = await expectDeny(req, 'identity_conflict');
    expect((r['reasons'] as Array<{ message: string }>)[0]?.message).toBe(
      'certificate names spiffe://example.org/ns/default/sa/frontend but source.principal names spiffe://example.org/ns/default/sa/backend',
    );
  });

  it('malformed PEM → malformed_certificate', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    if (req.attributes.source) req.attributes.source.certificate = '-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----%0A';
    await expectDeny(req, 'malformed_certificate');
  });

  it('bad URL-encoding of the certificate → malformed_certificate', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    if (req.attributes.source) req.attributes.source.certificate = fixturePem('svid-frontend').envoy.replace('%0A', '%ZZ');
    await expectDeny(req, 'malformed_certificate');
  });

  it.each([
    ['upper-case trust domain', 'spiffe://Example.org/ns/default/sa/frontend'],
    ['dot-dot segment', 'spiffe://example.org/ns/../sa/frontend'],
    ['trailing slash', 'spiffe://example.org/ns/default/sa/frontend/'],
    ['port', 'spiffe://example.org:443/ns/default/sa/frontend'],
    ['query', 'spiffe://example.org/ns/default/sa/frontend?x=1'],
    ['tab in path', 'spiffe://example.org/ns/default/sa/front\tend'],
    ['upper-case scheme', 'SPIFFE://example.org/ns/default/sa/frontend'],
  ])('malformed SPIFFE ID in the principal (%s) → malformed_spiffe_id', async (_name, principal) => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    delete req.attributes.source?.certificate;
    if (req.attributes.source) req.attributes.source.principal = principal;
    await expectDeny(req, 'malformed_spiffe_id');
  });

  it('blocked tool → tool_blocked', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    const http = req.attributes.request?.http;
    if (http) {
      http.method = 'POST';
      http.path = '/admin/users';
    }
    const r = await expectDeny(req, 'tool_blocked');
    expect(r['tool']).toBe('admin');
  });

  it('percent-encoded path cannot slip past the block list', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    const http = req.attributes.request?.http;
    if (http) http.path = '/%61dmin/./users';
    const r = await expectDeny(req, 'tool_blocked');
    expect(r['request']).toMatchObject({ path: '/admin/users' });
  });

  it('an encoded slash that would reach the blocked tool on a decoding upstream → ambiguous_path', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    const http = req.attributes.request?.http;
    if (http) http.path = '/api/v1/orders/..%2F..%2F..%2Fadmin';
    const r = await expectDeny(req, 'ambiguous_path');
    expect(r).toMatchObject({ rule: 'orders', tool: 'list_orders', request: { path: '/api/v1/orders/..%2F..%2F..%2Fadmin' } });
  });

  it('host no rule governs → no_matching_rule', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    const http = req.attributes.request?.http;
    if (http) http.host = 'other.example.com';
    await expectDeny(req, 'no_matching_rule');
  });

  it('L4 network filter request (no request attribute) → no_matching_rule under a host-based policy', async () => {
    await expectDeny(fixtureRequest('tcp-network-filter'), 'no_matching_rule');
  });

  it('a CheckRequest without attributes → malformed_request', async () => {
    const res = await svc.client.check({});
    expect(res.status.code).toBe(7);
    expect(res.status.message).toBe('malformed_request');
  });
});

describe('receipt chain and metrics', () => {
  it('writes one receipt per decision, chained by seq and prevHash', async () => {
    const all = svc.receipts();
    expect(all.length).toBeGreaterThan(20);
    all.forEach((r, i) => expect(r['seq']).toBe(i + 1));
    expect(all[0]?.['prevHash']).toBeNull();
    for (const r of all.slice(1)) expect(String(r['prevHash'])).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('/metrics counts admissions by verdict, rule, reason, trust domain, credential kind and tier', async () => {
    const text = await (await fetch(`${svc.adminUrl}/metrics`)).text();
    expect(text).toMatch(
      /chio_admissions_total\{verdict="allow",rule="orders",reason="",trust_domain="example.org",credential_kind="x509_svid",tier="attested"\} [1-9]/,
    );
    expect(text).toContain(
      'chio_admissions_total{verdict="deny",rule="orders",reason="identity_required",trust_domain="",credential_kind="",tier="none"} 1',
    );
    expect(text).toContain(
      'chio_admissions_total{verdict="deny",rule="orders",reason="workload_trust_domain_mismatch",trust_domain="other",credential_kind="x509_svid",tier="attested"} 1',
    );
    expect(text).toMatch(/chio_check_duration_seconds_count [1-9]/);
    expect(text).toMatch(/chio_receipts_written_total [1-9]/);
    expect(text).not.toContain('spiffe://');
  });

  it('serves the receipt key as a JWKS and health endpoints', async () => {
    const jwks = (await (await fetch(`${svc.adminUrl}/v1/keys`)).json()) as { keys: Array<Record<string, string>> };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', kid: svc.service.key.kid });
    expect((await fetch(`${svc.adminUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${svc.adminUrl}/readyz`)).status).toBe(200);
    expect((await fetch(`${svc.adminUrl}/nope`)).status).toBe(404);
  });
});
