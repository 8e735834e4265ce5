/**
 * Trust bundles, chain verification, XFCC, JWT-SVIDs and tiers through the real service
 * (startTestService): every verdict, reason code and receipt field that matters asserted.
 */
import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import { FIXED_NOW, FIXTURES, demoPolicy, fixtureRequest, startTestService, type FixtureRequest, type TestService } from '../helpers/service.js';
import { createRootCa, issueSvid, type IssuedSvid, type TestCa } from '../helpers/test-ca.js';
import { FakeWorkloadApiAgent } from '../helpers/workload-api-server.js';
import { ecKeyPair, spiffeBundleJson } from '../spiffe/trust-helpers.js';

const PKI = path.join(FIXTURES, 'envoy', 'pki');
const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';

/** The demo policy with the rule's tier requirement and trusted_verifiers replaced. */
function policyWith(opts: { requireTier: string; verifiers?: string }): string {
  const base = demoPolicy().replace('require_runtime_assurance_tier: attested', `require_runtime_assurance_tier: ${opts.requireTier}`);
  if (opts.verifiers === undefined) return base;
  return base.replace('defaults:', `extensions:\n  runtime_assurance:\n    trusted_verifiers:\n${opts.verifiers}\ndefaults:`);
}

function x509Verifier(name: string, verifier: string, maxAge?: number): string {
  return [
    `      ${name}:`,
    '        schema: chio.runtime-attestation.spiffe.x509-svid.v1',
    `        verifier: ${verifier}`,
    '        verifier_family: spiffe',
    '        effective_tier: verified',
    ...(maxAge === undefined ? [] : [`        max_evidence_age_seconds: ${maxAge}`]),
    '        allowed_attestation_types: [x509_svid]',
  ].join('\n');
}

function jwtVerifier(name: string, verifier: string): string {
  return [
    `      ${name}:`,
    '        schema: chio.runtime-attestation.spiffe.jwt-svid.v1',
    `        verifier: ${verifier}`,
    '        effective_tier: verified',
    '        max_evidence_age_seconds: 300',
  ].join('\n');
}

function headerValue(res: CheckResponseMessage, name: string): string | undefined {
  const list = res.ok_response?.headers ?? res.denied_response?.headers ?? [];
  return list.find((h) => h.header.key === name)?.header.value;
}

function receiptOf(svc: TestService, res: CheckResponseMessage): Record<string, unknown> {
  const id = headerValue(res, 'x-chio-receipt-id');
  const receipt = svc.receipts().find((r) => r['id'] === id);
  if (!receipt) throw new Error(`receipt ${String(id)} not on disk`);
  return receipt;
}

interface Verdict {
  verdict: 'allow' | 'deny';
  reason: string | null;
  attestation: { tier: string; verifier: string | null; workloadIdentity: { uri: string; credentialKind: string } | null };
}

async function decide(svc: TestService, req: FixtureRequest): Promise<Verdict> {
  const res = await svc.client.check(req);
  const receipt = receiptOf(svc, res);
  const reasons = receipt['reasons'] as Array<{ code: string }>;
  const verdict = res.status.code === 0 ? 'allow' : 'deny';
  expect(receipt['verdict']).toBe(verdict);
  if (verdict === 'deny') expect(res.status.message).toBe(reasons[0]?.code);
  return { verdict, reason: reasons[0]?.code ?? null, attestation: receipt['runtimeAttestation'] as Verdict['attestation'] };
}

/** http-mtls-spiffe-full with another peer certificate (and its principal). */
function requestWith(svid: IssuedSvid, uri: string): FixtureRequest {
  const req = fixtureRequest('http-mtls-spiffe-full');
  if (req.attributes.source) {
    req.attributes.source.certificate = svid.envoyEncoded;
    req.attributes.source.principal = uri;
  }
  return req;
}

function setHeader(req: FixtureRequest, name: string, value: string): FixtureRequest {
  const headers = req.attributes.request?.http?.headers;
  if (!headers) throw new Error('fixture without headers');
  headers[name] = value;
  return req;
}

async function until(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function metricsText(svc: TestService): Promise<string> {
  return (await fetch(`${svc.adminUrl}/metrics`)).text();
}

function metricValue(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('chain verification against PEM bundles (fixture PKI)', () => {
  let svc: TestService;

  beforeAll(async () => {
    svc = await startTestService({
      policy: policyWith({ requireTier: 'verified', verifiers: x509Verifier('spire_test', 'https://spire.test') }),
      configExtra: [
        'identity: { sources: [certificate, principal], require_known_trust_domain: true }',
        'trust:',
        '  bundles:',
        `    - { trust_domain: example.org, pem: ${JSON.stringify(path.join(PKI, 'ca.pem'))}, verifier: https://spire.test }`,
        `    - { trust_domain: other-domain.test, pem: ${JSON.stringify(path.join(PKI, 'other-ca.pem'))}, verifier: https://other.test }`,
      ].join('\n'),
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('an SVID the bundle root did not sign → untrusted_svid (fixture http-untrusted-ca)', async () => {
    const v = await decide(svc, fixtureRequest('http-untrusted-ca'));
    expect(v).toMatchObject({ verdict: 'deny', reason: 'untrusted_svid', attestation: { tier: 'none', verifier: null, workloadIdentity: null } });
  });

  it("example.org's root never vouches for an SVID of other-domain.test, even with both bundles loaded", async () => {
    expect((await decide(svc, fixtureRequest('http-foreign-trust-domain'))).reason).toBe('untrusted_svid');
  });

  it('a verified SVID is promoted by the matching trusted verifier: tier verified, verifier = the bundle source', async () => {
    const v = await decide(svc, fixtureRequest('http-mtls-spiffe-full'));
    expect(v).toEqual({
      verdict: 'allow',
      reason: null,
      attestation: {
        tier: 'verified',
        verifier: 'https://spire.test',
        workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri: FRONTEND, trustDomain: 'example.org', path: '/ns/default/sa/frontend' },
      },
    });
  });

  it('the principal alone is Envoy-attested only: the rule requiring verified denies', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    delete req.attributes.source?.certificate;
    const v = await decide(svc, req);
    expect(v).toMatchObject({ verdict: 'deny', reason: 'runtime_assurance_insufficient', attestation: { tier: 'attested', verifier: 'envoy' } });
  });

  it('a trust domain without a bundle → unknown_trust_domain (require_known_trust_domain)', async () => {
    expect((await decide(svc, fixtureRequest('http-istio-sidecar-custom'))).reason).toBe('unknown_trust_domain');
  });

  it('exports the bundle expiry per trust domain', async () => {
    const text = await metricsText(svc);
    expect(metricValue(text, 'chio_trust_bundle_expiry_timestamp_seconds{trust_domain="example.org"}')).toBe(Date.parse('2036-11-22T21:38:00Z') / 1000);
  });

  it('evidence older than max_evidence_age_seconds is not promoted: a rule requiring verified denies and says why (after a policy reload)', async () => {
    writeFileSync(path.join(svc.dir, 'policy.yaml'), policyWith({ requireTier: 'verified', verifiers: x509Verifier('spire_test', 'https://spire.test', 60) }));
    svc.service.reloadPolicy();
    const v = await decide(svc, fixtureRequest('http-mtls-spiffe-full'));
    expect(v).toMatchObject({ verdict: 'deny', reason: 'runtime_assurance_insufficient', attestation: { tier: 'attested' } });
    // svid-frontend's notBefore is 2026-11-25T21:38:00Z, the decision time 2026-12-01T00:00:00Z
    const receipt = svc.receipts().at(-1) as { reasons: Array<{ message: string }> };
    expect(receipt.reasons[0]?.message).toBe(
      'runtime assurance tier too low: have attested, need verified (not promoted: X.509-SVID is 440520s old (since notBefore 2026-11-25T21:38:00.000Z); trusted verifier spire_test accepts at most 60s)',
    );
    expect(FIXED_NOW).toBe(Date.parse('2026-12-01T00:00:00Z'));
  });

  it('evidence older than max_evidence_age_seconds does not deny a rule that asks only attested (SPEC §5: it stays attested)', async () => {
    writeFileSync(path.join(svc.dir, 'policy.yaml'), policyWith({ requireTier: 'attested', verifiers: x509Verifier('spire_test', 'https://spire.test', 60) }));
    svc.service.reloadPolicy();
    const v = await decide(svc, fixtureRequest('http-mtls-spiffe-full'));
    expect(v).toMatchObject({ verdict: 'allow', attestation: { tier: 'attested' } });
  });
});

describe('bundle file rotation through the service', () => {
  let svc: TestService;
  let bundleFile: string;

  beforeAll(async () => {
    svc = await startTestService({
      configText: (dir) => {
        mkdirSync(path.join(dir, 'bundles'));
        bundleFile = path.join(dir, 'bundles', 'example.org.pem');
        copyFileSync(path.join(PKI, 'ca.pem'), bundleFile);
        return [
          'schema: chio.config.v1',
          'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
          'policy: ./policy.yaml',
          'keys: { receipt_signing_seed: ./data/kernel.seed }',
          'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
          'trust:',
          '  bundles: [ { trust_domain: example.org, pem: ./bundles/example.org.pem, verifier: https://spire.test } ]',
          '  file_poll_interval_seconds: 1',
        ].join('\n');
      },
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('picks up a replaced bundle file without a restart', async () => {
    expect((await decide(svc, fixtureRequest('http-mtls-spiffe-full'))).verdict).toBe('allow');
    expect((await decide(svc, fixtureRequest('http-untrusted-ca'))).reason).toBe('untrusted_svid');

    writeFileSync(`${bundleFile}.new`, readPem('other-ca.pem'));
    renameSync(`${bundleFile}.new`, bundleFile);
    await until(async () => (await decide(svc, fixtureRequest('http-untrusted-ca'))).verdict === 'allow', 'the rotated bundle');
    expect((await decide(svc, fixtureRequest('http-mtls-spiffe-full'))).reason).toBe('untrusted_svid');
    expect(metricValue(await metricsText(svc), 'chio_trust_bundle_refreshes_total{source="pem#0",result="ok"}')).toBe(1);
  });
});

function readPem(name: string): string {
  return readFileSync(path.join(PKI, name), 'utf8');
}

describe('XFCC and JWT-SVID sources', () => {
  let svc: TestService;
  const jwtKey = ecKeyPair('example-jwt-1');

  async function jwt(claims: Record<string, unknown>): Promise<string> {
    const now = FIXED_NOW / 1000;
    return new SignJWT({ sub: FRONTEND, aud: 'chio', exp: now + 300, iat: now - 5, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: jwtKey.kid, typ: 'JWT' })
      .sign(jwtKey.privateKey);
  }

  beforeAll(async () => {
    const ca = new X509Certificate(readPem('ca.pem'));
    const bundle = JSON.stringify({
      keys: [
        { ...ca.publicKey.export({ format: 'jwk' }), use: 'x509-svid', x5c: [ca.raw.toString('base64')] },
        { ...jwtKey.publicKey.export({ format: 'jwk' }), use: 'jwt-svid', kid: jwtKey.kid },
      ],
    });
    svc = await startTestService({
      policy: policyWith({ requireTier: 'attested', verifiers: jwtVerifier('spire_jwt', 'https://spire.test') }),
      configText: (dir) => {
        writeFileSync(path.join(dir, 'example.org.json'), bundle);
        return [
          'schema: chio.config.v1',
          'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
          'policy: ./policy.yaml',
          'keys: { receipt_signing_seed: ./data/kernel.seed }',
          'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
          'identity:',
          '  sources: [certificate, principal, xfcc, jwt_svid]',
          '  jwt_svid: { header: authorization, audiences: [chio], leeway_seconds: 30 }',
          'trust:',
          '  bundles: [ { trust_domain: example.org, spiffe_bundle: ./example.org.json, verifier: https://spire.test } ]',
        ].join('\n');
      },
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('a spoofed earlier XFCC element never becomes the identity (fixture http-spoofed-xfcc)', async () => {
    const v = await decide(svc, fixtureRequest('http-spoofed-xfcc'));
    expect(v).toMatchObject({ verdict: 'allow', attestation: { tier: 'attested', verifier: 'https://spire.test', workloadIdentity: { uri: FRONTEND, credentialKind: 'x509_svid' } } });
  });

  it('an XFCC URI that disagrees with the certificate → identity_conflict', async () => {
    const req = setHeader(fixtureRequest('http-mtls-spiffe-full'), 'x-forwarded-client-cert', 'By=spiffe://example.org/ns/default/sa/backend;URI=spiffe://example.org/ns/kube-system/sa/admin');
    expect((await decide(svc, req)).reason).toBe('identity_conflict');
  });

  it('a malformed XFCC header → malformed_xfcc', async () => {
    const req = setHeader(fixtureRequest('http-mtls-spiffe-full'), 'x-forwarded-client-cert', 'By=a;Subject="unterminated');
    expect((await decide(svc, req)).reason).toBe('malformed_xfcc');
  });

  it('an XFCC URI alone is basic (a header is not an authenticated source)', async () => {
    const req = setHeader(fixtureRequest('http-plaintext-no-identity'), 'x-forwarded-client-cert', `By=spiffe://example.org/ns/default/sa/backend;URI=${FRONTEND}`);
    const v = await decide(svc, req);
    expect(v).toMatchObject({ verdict: 'deny', reason: 'runtime_assurance_insufficient', attestation: { tier: 'basic', verifier: null, workloadIdentity: { credentialKind: 'uri' } } });
  });

  it('an XFCC Cert that verifies against the bundle is an x509_svid when Envoy authenticated the peer (its principal) in the request', async () => {
    const examples = JSON.parse(readFileSync(path.join(FIXTURES, 'envoy', 'xfcc', 'xfcc-examples.json'), 'utf8')) as { examples: Array<{ id: string; header: string }> };
    const header = examples.examples.find((e) => e.id === 'envoy-with-cert')?.header ?? '';
    const req = setHeader(fixtureRequest('http-plaintext-no-identity'), 'x-forwarded-client-cert', header);
    const v0 = await decide(svc, req);
    // no authenticated peer: the certificate in the header is public, so only a claimed URI (basic)
    expect(v0).toMatchObject({ verdict: 'deny', reason: 'runtime_assurance_insufficient', attestation: { tier: 'basic', verifier: null, workloadIdentity: { uri: FRONTEND, credentialKind: 'uri' } } });
    const attrs = req.attributes as { source?: { principal?: string } };
    attrs.source = { ...attrs.source, principal: FRONTEND };
    const v = await decide(svc, req);
    expect(v).toMatchObject({ verdict: 'allow', attestation: { tier: 'attested', verifier: 'https://spire.test', workloadIdentity: { uri: FRONTEND, credentialKind: 'x509_svid' } } });
  });

  it('a valid JWT-SVID: credential kind jwt_svid, promoted by the JWT trusted verifier', async () => {
    const req = setHeader(fixtureRequest('http-plaintext-no-identity'), 'authorization', `Bearer ${await jwt({})}`);
    const v = await decide(svc, req);
    expect(v).toMatchObject({ verdict: 'allow', attestation: { tier: 'verified', verifier: 'https://spire.test', workloadIdentity: { uri: FRONTEND, credentialKind: 'jwt_svid' } } });
  });

  it('a JWT-SVID for another audience → jwt_svid_audience_mismatch', async () => {
    const req = setHeader(fixtureRequest('http-mtls-spiffe-full'), 'authorization', `Bearer ${await jwt({ aud: 'chio-admin' })}`);
    expect((await decide(svc, req)).reason).toBe('jwt_svid_audience_mismatch');
  });

  it('a JWT-SVID naming another workload than the certificate → identity_conflict', async () => {
    const req = setHeader(fixtureRequest('http-mtls-spiffe-full'), 'authorization', `Bearer ${await jwt({ sub: 'spiffe://example.org/ns/default/sa/backend' })}`);
    expect((await decide(svc, req)).reason).toBe('identity_conflict');
  });

  it('a JWT-SVID agreeing with the certificate: the verified JWT evidence speaks', async () => {
    const req = setHeader(fixtureRequest('http-mtls-spiffe-full'), 'authorization', `Bearer ${await jwt({})}`);
    const v = await decide(svc, req);
    expect(v).toMatchObject({ verdict: 'allow', attestation: { tier: 'verified', workloadIdentity: { credentialKind: 'jwt_svid' } } });
  });
});

describe('SPIFFE Workload API source through the service', () => {
  let svc: TestService;
  let agent: FakeWorkloadApiAgent;
  let rootOld: TestCa;
  let rootNew: TestCa;
  let svidOld: IssuedSvid;
  let svidNew: IssuedSvid;

  beforeAll(async () => {
    rootOld = await createRootCa({ trustDomain: 'example.org', name: 'SPIRE Root 1' });
    rootNew = await createRootCa({ trustDomain: 'example.org', name: 'SPIRE Root 2' });
    const inside = { notBefore: new Date('2026-11-30T00:00:00Z'), notAfter: new Date('2026-12-31T00:00:00Z'), uris: [FRONTEND] };
    svidOld = await issueSvid(rootOld, inside);
    svidNew = await issueSvid(rootNew, inside);
    agent = new FakeWorkloadApiAgent();
    agent.setBundles({ x509: new Map([['example.org', [rootOld]]]), jwt: new Map([['example.org', spiffeBundleJson([])]]) });
    await agent.start();
    svc = await startTestService({
      configExtra: ['trust:', `  bundles: [ { workload_api: ${JSON.stringify(agent.address)}, verifier: https://spire.test } ]`].join('\n'),
    });
  });
  afterAll(async () => {
    await svc?.close();
    await agent?.close();
  });

  it('verifies against the agent’s bundle and reports the connection', async () => {
    expect((await decide(svc, requestWith(svidOld, FRONTEND))).attestation).toMatchObject({ tier: 'attested', verifier: 'https://spire.test' });
    expect((await decide(svc, requestWith(svidNew, FRONTEND))).reason).toBe('untrusted_svid');
    const text = await metricsText(svc);
    expect(metricValue(text, 'chio_workload_api_connected{source="workload_api#0"}')).toBe(1);
    expect(metricValue(text, 'chio_trust_bundle_refreshes_total{source="workload_api#0",result="ok"}')).toBeGreaterThanOrEqual(2);
  });

  it('a root rotation pushed mid-stream while requests flow: no failed or wrong decision', async () => {
    let stop = false;
    const verdicts: Array<{ svid: 'old' | 'new'; verdict: Verdict }> = [];
    const load = async (which: 'old' | 'new', svid: IssuedSvid): Promise<void> => {
      while (!stop) verdicts.push({ svid: which, verdict: await decide(svc, requestWith(svid, FRONTEND)) });
    };
    // phase 1: [old] → [old, new]; the old SVID must be allowed throughout
    const phase1 = [load('old', svidOld), load('old', svidOld)];
    await new Promise((r) => setTimeout(r, 50));
    agent.setBundles({ x509: new Map([['example.org', [rootOld, rootNew]]]), jwt: new Map([['example.org', spiffeBundleJson([])]]) });
    await until(async () => (await decide(svc, requestWith(svidNew, FRONTEND))).verdict === 'allow', 'the new root');
    await new Promise((r) => setTimeout(r, 50));
    stop = true;
    await Promise.all(phase1);
    // phase 2: [old, new] → [new]; the new SVID must be allowed throughout
    stop = false;
    const phase2 = [load('new', svidNew), load('new', svidNew)];
    await new Promise((r) => setTimeout(r, 50));
    agent.setBundles({ x509: new Map([['example.org', [rootNew]]]), jwt: new Map([['example.org', spiffeBundleJson([])]]) });
    await until(async () => (await decide(svc, requestWith(svidOld, FRONTEND))).reason === 'untrusted_svid', 'the old root withdrawn');
    await new Promise((r) => setTimeout(r, 50));
    stop = true;
    await Promise.all(phase2);

    expect(verdicts.length).toBeGreaterThan(10);
    expect(verdicts.filter((v) => v.verdict.verdict !== 'allow')).toEqual([]);
    expect(verdicts.every((v) => v.verdict.attestation.verifier === 'https://spire.test')).toBe(true);
  });

  it('keeps working while the agent is away, and reconnects when it comes back', async () => {
    const acceptedBefore = agent.accepted.x509;
    await agent.stop();
    await until(async () => metricValue(await metricsText(svc), 'chio_workload_api_connected{source="workload_api#0"}') === 0, 'gauge 0');
    expect((await decide(svc, requestWith(svidNew, FRONTEND))).verdict).toBe('allow');
    expect((await decide(svc, requestWith(svidOld, FRONTEND))).reason).toBe('untrusted_svid');

    agent.setBundles({ x509: new Map([['example.org', [rootOld]]]), jwt: new Map([['example.org', spiffeBundleJson([])]]) });
    await agent.start();
    await until(async () => metricValue(await metricsText(svc), 'chio_workload_api_connected{source="workload_api#0"}') === 1, 'gauge 1', 15_000);
    expect(agent.accepted.x509).toBeGreaterThan(acceptedBefore);
    await until(async () => (await decide(svc, requestWith(svidOld, FRONTEND))).verdict === 'allow', 'bundles after reconnect');
    expect((await decide(svc, requestWith(svidNew, FRONTEND))).reason).toBe('untrusted_svid');
    expect(svc.log.entries.map((e) => e.msg)).toContain('SPIFFE Workload API stream lost; reconnecting (bundles stay in force)');
  });
});

describe('start-up warning: xfcc without a source Envoy authenticated', () => {
  const warnings = async (sources: string): Promise<string[]> => {
    const svc = await startTestService({ configExtra: `identity: { sources: ${sources} }` });
    try {
      return svc.log.entries.filter((e) => e.level === 'warn' && e.msg.startsWith('identity.sources has xfcc')).map((e) => e.msg);
    } finally {
      await svc.close();
    }
  };

  it('warns for [xfcc] alone, not for [certificate, xfcc] or [principal, xfcc]', async () => {
    expect(await warnings('[xfcc]')).toEqual([
      'identity.sources has xfcc without certificate or principal: nothing Envoy authenticated corroborates the XFCC element, ' +
        'and Envoy does not escape the SAN values it writes there (SECURITY.md "XFCC only behind a sanitizing proxy")',
    ]);
    expect(await warnings('[certificate, xfcc]')).toEqual([]);
    expect(await warnings('[principal, xfcc]')).toEqual([]);
  });
});
