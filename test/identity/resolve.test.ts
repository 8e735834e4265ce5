/**
 * IdentityResolver (src/identity/resolve.ts) with trust bundles: chain verification of the
 * peer certificate, XFCC and JWT-SVID sources, conflicts, tiers and verifiers.
 */
import { SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import type { CheckInput } from '../../src/check/request.js';
import { IdentityResolver, type IdentityResolverOptions, type IdentityResult } from '../../src/identity/resolve.js';
import type { TrustedVerifier } from '../../src/policy/types.js';
import { BundleSet } from '../../src/spiffe/bundle.js';
import { SvidCache } from '../../src/spiffe/x509-svid.js';
import { createIntermediateCa, createRootCa, envoyUrlEncode, issueSvid, TEST_NOW, type IssuedSvid, type TestCa } from '../helpers/test-ca.js';
import { bundleSetOf, contentOf, ecKeyPair } from '../spiffe/trust-helpers.js';

const ID = 'spiffe://a.test/api';
const jwtKey = ecKeyPair('a-jwt');

let root: TestCa;
let inter: TestCa;
let leaf: IssuedSvid;
let viaInter: IssuedSvid;
let otherRoot: TestCa;
let untrusted: IssuedSvid;

beforeAll(async () => {
  root = await createRootCa({ trustDomain: 'a.test' });
  inter = await createIntermediateCa(root);
  otherRoot = await createRootCa({ trustDomain: 'a.test', name: 'Other' });
  leaf = await issueSvid(root, { uris: [ID], notBefore: new Date(TEST_NOW - 60_000) });
  viaInter = await issueSvid(inter, { uris: [ID] });
  untrusted = await issueSvid(otherRoot, { uris: [ID] });
});

function input(over: Partial<CheckInput> & { headerList?: Record<string, string> } = {}): CheckInput {
  const { headerList, ...rest } = over;
  return {
    kind: 'http',
    requestId: null,
    method: 'GET',
    host: 'api',
    hostname: 'api',
    port: null,
    path: '/',
    grpc: null,
    headers: new Map(Object.entries(headerList ?? {})),
    source: null,
    principal: null,
    certificate: null,
    contextExtensions: new Map(),
    ...rest,
  };
}

function resolver(options: Partial<IdentityResolverOptions> & { bundles?: BundleSet } = {}): IdentityResolver {
  return new IdentityResolver({
    sources: ['certificate', 'principal', 'xfcc', 'jwt_svid'],
    svidCache: new SvidCache(100),
    clock: () => TEST_NOW,
    jwtSvid: { header: 'authorization', audiences: ['chio'], leewaySeconds: 30 },
    ...options,
  });
}

function withBundle(): BundleSet {
  return bundleSetOf(contentOf('a.test', [root], { jwt: new Map([[jwtKey.kid, jwtKey.publicKey]]) })).set;
}

const verifiedEntry: TrustedVerifier = {
  name: 'spire',
  schema: 'chio.runtime-attestation.spiffe.x509-svid.v1',
  verifier: 'https://spire.test',
  verifierFamily: 'spiffe',
  effectiveTier: 'verified',
  maxEvidenceAgeSeconds: 120,
  allowedAttestationTypes: ['x509_svid'],
};

function summary(r: IdentityResult): { uri: string | null; kind: string | null; tier: string; verifier: string | null; error: string | null } {
  return {
    uri: r.identity?.uri ?? null,
    kind: r.identity?.credentialKind ?? null,
    tier: r.tier,
    verifier: r.verifier,
    error: r.error === null ? null : `${r.error.code}: ${r.error.message}`,
  };
}

async function jwtFor(sub: string): Promise<string> {
  const now = TEST_NOW / 1000;
  return new SignJWT({ sub, aud: 'chio', exp: now + 60, iat: now - 1 }).setProtectedHeader({ alg: 'ES256', kid: jwtKey.kid }).sign(jwtKey.privateKey);
}

describe('certificate source with bundles', () => {
  it('no bundle for the trust domain: attested by envoy', () => {
    expect(summary(resolver().resolve(input({ certificate: leaf.envoyEncoded })))).toEqual({ uri: ID, kind: 'x509_svid', tier: 'attested', verifier: 'envoy', error: null });
  });

  it('a chain verified against the bundle: the bundle source is the verifier; tier from trusted_verifiers', () => {
    const r = resolver({ bundles: withBundle() });
    expect(summary(r.resolve(input({ certificate: leaf.envoyEncoded })))).toEqual({ uri: ID, kind: 'x509_svid', tier: 'attested', verifier: 'https://spire.test', error: null });
    expect(summary(r.resolve(input({ certificate: leaf.envoyEncoded }), { trustedVerifiers: [verifiedEntry] })).tier).toBe('verified');
  });

  it('reads the trusted verifiers from the option when no policy is passed', () => {
    const r = resolver({ bundles: withBundle(), trustedVerifiers: () => [verifiedEntry] });
    expect(r.resolve(input({ certificate: leaf.envoyEncoded })).tier).toBe('verified');
  });

  it('evidence too old for its trusted verifier: the identity stands, attested, with the reason it was not promoted', () => {
    const r = resolver({ bundles: withBundle() });
    const old = { ...verifiedEntry, maxEvidenceAgeSeconds: 59 };
    const result = r.resolve(input({ certificate: leaf.envoyEncoded }), { trustedVerifiers: [old] });
    expect(summary(result)).toEqual({ uri: ID, kind: 'x509_svid', tier: 'attested', verifier: 'https://spire.test', error: null });
    expect(result.tierNote).toMatch(/^X\.509-SVID is 60s old \(since notBefore .*\); trusted verifier .* accepts at most 59s$/);
    expect(r.resolve(input({ certificate: leaf.envoyEncoded }), { trustedVerifiers: [verifiedEntry] }).tierNote).toBeNull();
  });

  it('a chain that does not verify → untrusted_svid; intermediates missing → untrusted_svid', () => {
    const r = resolver({ bundles: withBundle() });
    expect(r.resolve(input({ certificate: untrusted.envoyEncoded })).error?.code).toBe('untrusted_svid');
    expect(r.resolve(input({ certificate: viaInter.envoyEncoded })).error?.message).toMatch(/intermediate missing/);
  });

  it('require_known_trust_domain: unknown_trust_domain without a bundle; a pending bundle denies untrusted_svid', () => {
    expect(resolver({ requireKnownTrustDomain: true }).resolve(input({ certificate: leaf.envoyEncoded })).error?.code).toBe('unknown_trust_domain');
    const pending = new BundleSet();
    pending.addSource({ source: 'federation#0', verifier: 'v' }, ['a.test']);
    expect(summary(resolver({ bundles: pending }).resolve(input({ certificate: leaf.envoyEncoded }))).error).toBe(
      'untrusted_svid: the trust bundle of a.test is configured but not loaded yet',
    );
  });

  it('require_known_trust_domain: a trust domain pending only because a Workload API source has not delivered, or withdrawn, is not known', () => {
    const open = new BundleSet();
    open.expectAnyTrustDomain(open.addSource({ source: 'workload_api#0', verifier: 'v' }));
    const known = (set: BundleSet, principal: string): string | null => summary(resolver({ bundles: set, requireKnownTrustDomain: true }).resolve(input({ principal }))).error;
    expect(known(open, 'spiffe://rogue.example/x')).toBe('unknown_trust_domain: no trust bundle is configured for trust domain rogue.example');
    const withdrawn = new BundleSet();
    const i = withdrawn.addSource({ source: 's', verifier: 'v' });
    withdrawn.replace(i, [contentOf('b.test', [root])]);
    withdrawn.replace(i, []);
    expect(known(withdrawn, 'spiffe://b.test/x')).toBe('unknown_trust_domain: no trust bundle is configured for trust domain b.test');
    // configured for a source that has not loaded yet: known (a certificate of it is untrusted_svid above)
    const configured = new BundleSet();
    configured.addSource({ source: 'federation#0', verifier: 'v' }, ['a.test']);
    expect(known(configured, ID)).toBeNull();
  });
});

describe('XFCC source', () => {
  const xfcc = (value: string) => input({ headerList: { 'x-forwarded-client-cert': value } });

  it('a URI alone is basic with no verifier', () => {
    expect(summary(resolver().resolve(xfcc(`By=spiffe://a.test/proxy;URI=${ID}`)))).toEqual({ uri: ID, kind: 'uri', tier: 'basic', verifier: null, error: null });
  });

  it('a Cert with its Chain verified against the bundle is an x509_svid when Envoy authenticated the peer (principal) in the same request', () => {
    const chain = envoyUrlEncode(viaInter.chainPem);
    const header = `Hash=${viaInter.x509.fingerprint256.replace(/:/g, '').toLowerCase()};Cert="${viaInter.envoyEncoded}";Chain="${chain}";URI=${ID}`;
    const anchored = input({ principal: ID, headerList: { 'x-forwarded-client-cert': header } });
    expect(summary(resolver({ bundles: withBundle() }).resolve(anchored))).toEqual({ uri: ID, kind: 'x509_svid', tier: 'attested', verifier: 'https://spire.test', error: null });
  });

  it('without an authenticated peer in the request, a verified Cert in the header is only a claimed URI (basic): a certificate is public', () => {
    const chain = envoyUrlEncode(viaInter.chainPem);
    const header = `Cert="${viaInter.envoyEncoded}";Chain="${chain}";URI=${ID}`;
    const promoting = resolver({ bundles: withBundle(), trustedVerifiers: () => [verifiedEntry] });
    expect(summary(promoting.resolve(xfcc(header)))).toEqual({ uri: ID, kind: 'uri', tier: 'basic', verifier: null, error: null });
    // it is still checked: a Cert that does not verify is a deny
    expect(promoting.resolve(xfcc(`Cert="${untrusted.envoyEncoded}"`)).error?.code).toBe('untrusted_svid');
  });

  it('a Chain alone (leaf first) works too', () => {
    const header = `Chain="${envoyUrlEncode(viaInter.chainPem)}";URI=${ID}`;
    expect(summary(resolver({ bundles: withBundle() }).resolve(input({ principal: ID, headerList: { 'x-forwarded-client-cert': header } }))).kind).toBe('x509_svid');
  });

  it('a Cert without a bundle is only a claimed URI (basic)', () => {
    expect(summary(resolver().resolve(xfcc(`Cert="${leaf.envoyEncoded}";URI=${ID}`)))).toEqual({ uri: ID, kind: 'uri', tier: 'basic', verifier: null, error: null });
  });

  it('a Cert that does not verify → untrusted_svid', () => {
    expect(resolver({ bundles: withBundle() }).resolve(xfcc(`Cert="${untrusted.envoyEncoded}"`)).error?.code).toBe('untrusted_svid');
  });

  it('Hash not matching Cert → malformed_xfcc; URI not matching Cert → identity_conflict', () => {
    expect(summary(resolver().resolve(xfcc(`Hash=${'0'.repeat(64)};Cert="${leaf.envoyEncoded}"`))).error).toBe(
      'malformed_xfcc: x-forwarded-client-cert: Hash does not match the SHA-256 of Cert',
    );
    expect(summary(resolver().resolve(xfcc(`Cert="${leaf.envoyEncoded}";URI=spiffe://a.test/other`))).error).toBe(
      'identity_conflict: XFCC URI names spiffe://a.test/other but XFCC Cert names spiffe://a.test/api',
    );
  });

  it('a Chain that does not start with Cert → malformed_xfcc', () => {
    const header = `Cert="${leaf.envoyEncoded}";Chain="${envoyUrlEncode(viaInter.chainPem)}"`;
    expect(summary(resolver({ bundles: withBundle() }).resolve(xfcc(header))).error).toBe(
      'malformed_xfcc: x-forwarded-client-cert: Chain does not start with the client certificate',
    );
  });

  it('two URIs, a non-SPIFFE URI, and an empty URI', () => {
    expect(resolver().resolve(xfcc('URI=spiffe://a.test/x;URI=spiffe://a.test/y')).error?.code).toBe('svid_multiple_uri_sans');
    expect(summary(resolver().resolve(xfcc('URI=http://testclient.lyft.com'))).error).toBe(
      'malformed_spiffe_id: x-forwarded-client-cert URI "http://testclient.lyft.com" is not a SPIFFE ID',
    );
    // an empty URI=: Envoy forwards URI SANs and this certificate has none (denied as the certificate source denies it)
    expect(summary(resolver().resolve(xfcc('Subject="CN=x";URI=')))).toEqual({
      uri: null,
      kind: null,
      tier: 'none',
      verifier: null,
      error: 'svid_no_uri_san: x-forwarded-client-cert element describes a certificate with no URI SAN (URI= is empty); an X509-SVID has exactly one URI SAN',
    });
  });

  it('an element that describes a certificate without a URI SAN is denied as the other sources deny it (was: no identity)', () => {
    const sha = leaf.x509.fingerprint256.replace(/:/g, '').toLowerCase();
    expect(summary(resolver().resolve(xfcc(`By=spiffe://a.test/me;Hash=${sha};Subject="";URI=;DNS=api.a.test`))).error).toBe(
      'svid_dns_san_only: x-forwarded-client-cert element describes a certificate with 1 DNS SAN(s) but no URI SAN; an X509-SVID has exactly one URI SAN',
    );
    expect(summary(resolver().resolve(xfcc(`By=spiffe://a.test/me;Hash=${sha};Subject="CN=x";URI=`))).error).toBe(
      'svid_no_uri_san: x-forwarded-client-cert element describes a certificate with no URI SAN (URI= is empty); an X509-SVID has exactly one URI SAN',
    );
    // no URI= at all: Envoy was not asked to forward URI SANs; the element names nobody (the certificate speaks)
    expect(summary(resolver().resolve(xfcc(`By=spiffe://a.test/me;Hash=${sha};DNS=api.a.test`))).error).toBeNull();
    const both = input({ certificate: leaf.envoyEncoded, headerList: { 'x-forwarded-client-cert': `By=spiffe://a.test/me;Hash=${sha};DNS=api.a.test` } });
    expect(summary(resolver().resolve(both))).toMatchObject({ uri: ID, kind: 'x509_svid', error: null });
  });

  it('with source.certificate, the trusted element must describe that certificate (its Hash), or identity_conflict', async () => {
    const sha = leaf.x509.fingerprint256.replace(/:/g, '').toLowerCase();
    const other = await issueSvid(root, { uris: ['spiffe://a.test/admin'] });
    const otherSha = other.x509.fingerprint256.replace(/:/g, '').toLowerCase();
    const both = (header: string): CheckInput => input({ certificate: leaf.envoyEncoded, headerList: { 'x-forwarded-client-cert': header } });
    expect(summary(resolver().resolve(both(`By=spiffe://a.test/me;Hash=${sha};URI=${ID}`))).uri).toBe(ID);
    // a tail spliced in through an unescaped SAN value, naming another workload and carrying its public certificate
    const spliced = `By=spiffe://a.test/me;Hash=${sha};URI=${ID};DNS=x.a.test,By=spiffe://a.test/me;Hash=${otherSha};Cert="${other.envoyEncoded}";URI=spiffe://a.test/admin`;
    expect(summary(resolver({ sources: ['certificate', 'xfcc'] }).resolve(both(spliced))).error).toBe(
      'identity_conflict: x-forwarded-client-cert Hash is not the SHA-256 of source.certificate (the peer certificate Envoy authenticated)',
    );
  });

  it("a Cert fault names the header, not source.certificate", () => {
    expect(summary(resolver().resolve(xfcc('Cert="%E0%A4%A"'))).error).toBe('malformed_certificate: x-forwarded-client-cert Cert: the value has invalid percent-encoding');
  });

  it('is read only when enabled', () => {
    const off = resolver({ sources: ['certificate', 'principal'] });
    expect(off.resolve(xfcc(`URI=${ID}`)).identity).toBeNull();
  });
});

describe('JWT-SVID source and conflicts between sources', () => {
  const bearer = (token: string, over: Partial<CheckInput> = {}) => input({ ...over, headerList: { authorization: `Bearer ${token}` } });

  it('a verified JWT-SVID: kind jwt_svid, verifier of the bundle source', async () => {
    expect(summary(resolver({ bundles: withBundle() }).resolve(bearer(await jwtFor(ID))))).toEqual({
      uri: ID,
      kind: 'jwt_svid',
      tier: 'attested',
      verifier: 'https://spire.test',
      error: null,
    });
  });

  it('no bundle → jwt_svid_unknown_key; a non-Bearer authorization is not a JWT-SVID', async () => {
    expect(resolver().resolve(bearer(await jwtFor(ID))).error?.code).toBe('jwt_svid_unknown_key');
    expect(resolver().resolve(input({ headerList: { authorization: 'Basic dXNlcg==' } })).identity).toBeNull();
  });

  it('any two sources naming different IDs → identity_conflict', async () => {
    const r = resolver({ bundles: withBundle() });
    expect(summary(r.resolve(bearer(await jwtFor('spiffe://a.test/other'), { certificate: leaf.envoyEncoded }))).error).toBe(
      'identity_conflict: certificate names spiffe://a.test/api but JWT-SVID names spiffe://a.test/other',
    );
    expect(summary(r.resolve(input({ principal: 'spiffe://a.test/other', headerList: { 'x-forwarded-client-cert': `URI=${ID}` } }))).error).toBe(
      'identity_conflict: source.principal names spiffe://a.test/other but x-forwarded-client-cert names spiffe://a.test/api',
    );
  });

  it('agreeing sources: the strongest evidence speaks', async () => {
    const r = resolver({ bundles: withBundle() });
    const both = bearer(await jwtFor(ID), { principal: ID });
    expect(summary(r.resolve(both))).toMatchObject({ kind: 'jwt_svid', tier: 'attested' });
    const jwtVerified = { ...verifiedEntry, schema: 'chio.runtime-attestation.spiffe.jwt-svid.v1', allowedAttestationTypes: ['jwt_svid'] };
    expect(summary(r.resolve(bearer(await jwtFor(ID), { certificate: leaf.envoyEncoded, principal: ID }), { trustedVerifiers: [jwtVerified] }))).toMatchObject({
      kind: 'jwt_svid',
      tier: 'verified',
    });
    expect(summary(r.resolve(input({ principal: ID, headerList: { 'x-forwarded-client-cert': `URI=${ID}` } })))).toMatchObject({ kind: 'uri', tier: 'attested', verifier: 'envoy' });
  });

  it('the jwt_svid source needs its settings', () => {
    expect(() => new IdentityResolver({ sources: ['jwt_svid'], svidCache: new SvidCache(1), clock: () => 0 })).toThrow(TypeError);
  });
});
