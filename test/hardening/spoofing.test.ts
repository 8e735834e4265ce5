/**
 * Spoofing (SPEC §3, §4, §7): identity never comes from client-controlled data unless configured,
 * and chio's own headers never reach the upstream as the client wrote them. Through the real
 * service, asserting the CheckResponse headers, `headers_to_remove` and the receipt's identity:
 *
 * - client-sent `x-chio-*` headers (any case, repeated, in `headers` or `header_map`);
 * - `x-forwarded-client-cert` when XFCC is not a configured source, and its earlier (client-written)
 *   elements when it is;
 * - `x-chio-capability` presented by another workload than the one it is bound to, or with a
 *   weaker credential;
 * - a `source.principal` that disagrees with the certificate; a JWT-SVID header when JWT-SVIDs are
 *   not a configured source.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import { keyFromSeed } from '../../src/keys.js';
import { FIXED_NOW, fixturePem, fixtureRequest, startTestService, type FixtureRequest, type TestService } from '../helpers/service.js';
import { CAPABILITY_HEADER, readAnswer, RECEIPT_HEADER, WORKLOAD_HEADER, type Answer } from './support/answers.js';
import { capabilityTokens, HARNESS_AUTHORITY_SEED } from './support/pipeline.js';
import { DEMO_POLICY } from './support/policies.js';
import { indexReceipts, type ReceiptRecord } from './support/receipts.js';
import { receiptLines, startHostileInputService } from './support/services.js';

const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';
const BACKEND = 'spiffe://example.org/ns/default/sa/backend';
const ADMIN = 'spiffe://example.org/ns/kube-system/sa/admin';

/** Envoy-only identity sources (the default): certificate and principal. */
let plain: TestService;
/** Every source on, XFCC included, and the harness's capability authority trusted. */
let trusting: TestService;
let tokens: { unbound: string; frontend: string; backend: string };

beforeAll(async () => {
  [plain, trusting] = await Promise.all([startTestService({ policy: DEMO_POLICY }), startHostileInputService(DEMO_POLICY)]);
  const [unbound, frontend, backend] = capabilityTokens(keyFromSeed(HARNESS_AUTHORITY_SEED), FIXED_NOW) as [string, string, string];
  tokens = { unbound, frontend, backend };
});

afterAll(async () => {
  await plain?.close();
  await trusting?.close();
});

interface Decided {
  readonly answer: Answer;
  readonly receipt: ReceiptRecord;
  readonly response: CheckResponseMessage;
}

async function decide(svc: TestService, req: FixtureRequest): Promise<Decided> {
  const response = await svc.client.check(req);
  const answer = readAnswer(response);
  const receipt = indexReceipts(receiptLines(svc.receiptsFile)).get(answer.receiptId)?.record;
  if (!receipt) throw new Error(`no receipt ${String(answer.receiptId)}`);
  return { answer, receipt, response };
}

function headersOf(req: FixtureRequest): Record<string, string> {
  const http = req.attributes.request?.http;
  if (!http) throw new TypeError('fixture without http');
  http.headers ??= {};
  return http.headers;
}

function withPeer(req: FixtureRequest, peer: { certificate?: string | null; principal?: string | null }): FixtureRequest {
  const source = (req.attributes.source ??= {});
  if (peer.certificate === null) delete source.certificate;
  else if (peer.certificate !== undefined) source.certificate = peer.certificate;
  if (peer.principal === null) delete source.principal;
  else if (peer.principal !== undefined) source.principal = peer.principal;
  return req;
}

function setHeaderValues(res: CheckResponseMessage): Map<string, { value: string; append: boolean | undefined }> {
  const list = res.ok_response?.headers ?? res.denied_response?.headers ?? [];
  return new Map(list.map((h) => [h.header.key, { value: h.header.value, append: h.append?.value }]));
}

const identityOf = (r: ReceiptRecord): { uri: string; credentialKind: string } | null => r.runtimeAttestation.workloadIdentity;

describe('client-sent x-chio-* headers', () => {
  it('are overwritten (append: false) or removed; the receipt names the certificate’s workload', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    Object.assign(headersOf(req), {
      'x-chio-workload-id': ADMIN,
      'x-chio-receipt-id': 'rct-01JD0000000000000000000000',
      'x-chio-tier': 'verified',
      'x-chio-verdict': 'allow',
    });
    const { answer, receipt, response } = await decide(plain, req);
    expect(answer.verdict).toBe('allow');
    const set = setHeaderValues(response);
    expect(set.get(WORKLOAD_HEADER)).toEqual({ value: FRONTEND, append: false });
    expect(set.get(RECEIPT_HEADER)).toEqual({ value: receipt.id, append: false });
    expect([...answer.headersToRemove].sort()).toEqual([CAPABILITY_HEADER, 'x-chio-tier', 'x-chio-verdict']);
    expect(identityOf(receipt)).toMatchObject({ uri: FRONTEND, credentialKind: 'x509_svid' });
  });

  it('in header_map, mixed case and repeated: still removed, never joined into chio’s values', async () => {
    // Envoy's encode_raw_headers form: header_map with raw bytes instead of the headers map
    const req = fixtureRequest('http-mtls-spiffe-full');
    const list = Object.entries(headersOf(req)).map(([key, value]) => ({ key, raw_value: Buffer.from(value) }));
    const http = req.attributes.request?.http;
    if (!http) throw new TypeError('fixture without http');
    delete http.headers;
    http.header_map = { headers: list };
    list.push(
      { key: 'X-Chio-Workload-Id', raw_value: Buffer.from(ADMIN) },
      { key: 'x-chio-workload-id', raw_value: Buffer.from(BACKEND) },
      { key: 'X-CHIO-TIER', raw_value: Buffer.from('verified') },
      { key: 'X-Chio-Capability', raw_value: Buffer.from('garbage') },
    );
    const { answer, response, receipt } = await decide(plain, req);
    // the capability header is verified even when the rule does not require one: garbage denies
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'capability_malformed' });
    expect(receipt.capabilityId).toBeNull();
    expect(setHeaderValues(response).has(WORKLOAD_HEADER)).toBe(false);

    list.pop();
    const allowed = await decide(plain, req);
    expect(allowed.answer.verdict).toBe('allow');
    expect(setHeaderValues(allowed.response).get(WORKLOAD_HEADER)).toEqual({ value: FRONTEND, append: false });
    expect(allowed.answer.headersToRemove).toContain('x-chio-tier');
    expect(identityOf(allowed.receipt)?.uri).toBe(FRONTEND);
  });

  it('a client x-chio-workload-id is never an identity: without a certificate or principal it is identity_required', async () => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), { certificate: null, principal: null });
    headersOf(req)['x-chio-workload-id'] = FRONTEND;
    const { answer, receipt } = await decide(plain, req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'identity_required', httpStatus: 401 });
    expect(identityOf(receipt)).toBeNull();
  });
});

describe('x-forwarded-client-cert', () => {
  const xfccNaming = (uri: string): string => `By=spiffe://example.org/ns/default/sa/backend;Hash=00;Subject="";URI=${uri}`;

  it('is ignored when XFCC is not a configured source: no identity from it', async () => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), { certificate: null, principal: null });
    headersOf(req)['x-forwarded-client-cert'] = xfccNaming(FRONTEND);
    const { answer, receipt } = await decide(plain, req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'identity_required' });
    expect(identityOf(receipt)).toBeNull();
  });

  it('is ignored when not configured, even when it names another workload than the certificate', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    headersOf(req)['x-forwarded-client-cert'] = xfccNaming(ADMIN);
    const { answer, receipt } = await decide(plain, req);
    expect(answer).toMatchObject({ verdict: 'allow', workloadId: FRONTEND });
    expect(identityOf(receipt)?.uri).toBe(FRONTEND);
  });

  it('when trusted, only its last element counts: a client-written earlier element naming the allowed workload is ignored', async () => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), { certificate: null, principal: null });
    headersOf(req)['x-forwarded-client-cert'] = `${xfccNaming(FRONTEND)},${xfccNaming(BACKEND)}`;
    const { answer, receipt } = await decide(trusting, req);
    // the last element's URI alone is an unauthenticated claim: tier basic, and not the frontend
    expect(answer.verdict).toBe('deny');
    expect(identityOf(receipt)).toMatchObject({ uri: BACKEND, credentialKind: 'uri' });
    expect(receipt.runtimeAttestation.tier).toBe('basic');
  });

  it('when trusted, an XFCC URI never outranks the certificate: a disagreeing one is identity_conflict', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    headersOf(req)['x-forwarded-client-cert'] = xfccNaming(ADMIN);
    const { answer, receipt } = await decide(trusting, req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'identity_conflict' });
    expect(identityOf(receipt)).toBeNull();
  });

  it('the reference spoofed-XFCC request (fixture http-spoofed-xfcc): the certificate’s workload, never the spoofed admin', async () => {
    for (const svc of [plain, trusting]) {
      const { answer, receipt } = await decide(svc, fixtureRequest('http-spoofed-xfcc'));
      expect(answer).toMatchObject({ verdict: 'allow', workloadId: FRONTEND });
      expect(identityOf(receipt)?.uri).toBe(FRONTEND);
    }
  });
});

describe('x-chio-capability presented by the wrong workload', () => {
  const withCapability = (token: string, peer: { certificate?: string | null; principal?: string | null } = {}): FixtureRequest => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), peer);
    headersOf(req)[CAPABILITY_HEADER] = token;
    return req;
  };

  it('a capability bound to the backend, presented by the frontend → capability_workload_mismatch', async () => {
    const { answer, receipt } = await decide(trusting, withCapability(tokens.backend));
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'capability_workload_mismatch' });
    expect(receipt.capabilityId).toMatch(/^cap-/);
    expect(identityOf(receipt)?.uri).toBe(FRONTEND);
  });

  it('the frontend’s own capability with only Envoy’s principal (weaker than its X.509-SVID) → capability_credential_kind_weaker', async () => {
    const { answer } = await decide(trusting, withCapability(tokens.frontend, { certificate: null }));
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'capability_credential_kind_weaker' });
  });

  it('a capability from an authority the service does not trust → capability_unknown_issuer', async () => {
    const { answer } = await decide(plain, withCapability(tokens.frontend));
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'capability_unknown_issuer' });
  });

  it('a good capability is checked and then removed before the upstream', async () => {
    const { answer, receipt } = await decide(trusting, withCapability(tokens.frontend));
    expect(answer).toMatchObject({ verdict: 'allow', workloadId: FRONTEND });
    expect(answer.headersToRemove).toContain(CAPABILITY_HEADER);
    expect(receipt.capabilityId).toMatch(/^cap-/);
  });
});

describe('identity sources that disagree', () => {
  it('a principal naming another workload than the certificate → identity_conflict, no identity on the receipt', async () => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), { principal: ADMIN });
    const { answer, receipt } = await decide(plain, req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'identity_conflict' });
    expect(identityOf(receipt)).toBeNull();
  });

  it('the backend’s certificate with the frontend’s principal → identity_conflict (no picking the convenient one)', async () => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), { certificate: fixturePem('svid-backend').envoy, principal: FRONTEND });
    const { answer } = await decide(plain, req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'identity_conflict' });
  });

  it('a JWT-SVID header is ignored when JWT-SVIDs are not a configured source', async () => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), { certificate: null, principal: null });
    headersOf(req)['authorization'] = 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9ucy9kZWZhdWx0L3NhL2Zyb250ZW5kIn0.';
    const { answer, receipt } = await decide(plain, req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'identity_required' });
    expect(identityOf(receipt)).toBeNull();
  });

  it('when configured, an unsigned (alg none) JWT-SVID naming the frontend denies instead of identifying', async () => {
    const req = withPeer(fixtureRequest('http-mtls-spiffe-full'), { certificate: null, principal: null });
    headersOf(req)['authorization'] = 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9ucy9kZWZhdWx0L3NhL2Zyb250ZW5kIn0.';
    const { answer, receipt } = await decide(trusting, req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'jwt_svid_alg_not_allowed' });
    expect(identityOf(receipt)).toBeNull();
  });
});
