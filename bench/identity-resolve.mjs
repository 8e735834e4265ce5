// Micro-benchmark of IdentityResolver.resolve on a cache hit (SPEC §4, §5; performance.md §0):
// the identity path of a repeated SVID must be Map lookups only, with or without trust bundles.
// Uses the fixture PKI (test/fixtures/envoy/pki): svid-frontend signed by ca.pem.
//
//   npm run build && node bench/identity-resolve.mjs          (MS=1000 RUNS=7 by default)
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IdentityResolver } from '../dist/identity/resolve.js';
import { BundleSet, parsePemBundle } from '../dist/spiffe/bundle.js';
import { SvidCache } from '../dist/spiffe/x509-svid.js';
import { bench, MS, RUNS } from './lib/micro.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PKI = path.join(ROOT, 'test', 'fixtures', 'envoy', 'pki');
const index = JSON.parse(readFileSync(path.join(PKI, 'index.json'), 'utf8'));
const CERT = index['svid-frontend'].envoy_url_encoded_pem;
const ID = 'spiffe://example.org/ns/default/sa/frontend';
const NOW = Date.parse('2026-12-01T00:00:00Z');


// The decoder gives every request a new certificate string (V8 hashes a Map key of a new string
// again); `fresh` reproduces that, the plain `input()` reuses one string (its hash cached).
const CERT_BYTES = Buffer.from(CERT, 'latin1');
const freshCert = () => CERT_BYTES.latin1Slice(0, CERT_BYTES.length);

function input(headers = {}, certificate = CERT) {
  return {
    kind: 'http', requestId: 'r', method: 'GET', host: 'backend', hostname: 'backend', port: null, path: '/api/v1/orders',
    grpc: null, headers: new Map(Object.entries(headers)), source: '10.0.0.1:5000', principal: ID, certificate,
    contextExtensions: new Map(),
  };
}

function check(result) {
  if (result.error !== null || result.identity === null) throw new Error(`unexpected: ${result.error?.message}`);
  return result;
}

// A JWT-SVID signed with a key of the example.org bundle (ES256, P-1363 signature).
const jwtKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const signingInput = `${b64({ alg: 'ES256', kid: 'k1', typ: 'JWT' })}.${b64({ sub: ID, aud: 'chio', exp: NOW / 1000 + 3600, iat: NOW / 1000 - 10 })}`;
const token = `${signingInput}.${sign('sha256', Buffer.from(signingInput), { key: jwtKey.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;

const bundles = new BundleSet();
const source = bundles.addSource({ source: 'pem#0', verifier: 'https://spire.test' });
const content = parsePemBundle(readFileSync(path.join(PKI, 'ca.pem'), 'utf8'), 'example.org', 'ca.pem');
bundles.replace(source, [{ ...content, jwtAuthorities: new Map([['k1', jwtKey.publicKey]]) }]);
const policy = {
  trustedVerifiers: [
    { name: 'spire', schema: 'chio.runtime-attestation.spiffe.x509-svid.v1', verifier: 'https://spire.test', verifierFamily: 'spiffe',
      effectiveTier: 'verified', maxEvidenceAgeSeconds: null, allowedAttestationTypes: ['x509_svid'] },
  ],
};

const resolver = (sources, withBundles) =>
  new IdentityResolver({
    sources, svidCache: new SvidCache(10_000), clock: () => NOW, bundles: withBundles ? bundles : undefined,
    jwtSvid: { header: 'authorization', audiences: ['chio'], leewaySeconds: 30 },
  });

console.log(`node ${process.version}; MS=${MS} RUNS=${RUNS}; every call a cache hit`);
const plain = resolver(['certificate', 'principal'], false);
bench('certificate+principal, no bundle (attested by envoy)', () => check(plain.resolve(input(), policy)));
bench('the same, a new certificate string per call (as from the wire)', () => check(plain.resolve(input({}, freshCert()), policy)));
const verified = resolver(['certificate', 'principal'], true);
check(verified.resolve(input(), policy)).tier === 'verified' || (() => { throw new Error('not verified'); })();
bench('certificate+principal, chain verified, trusted verifier', () => check(verified.resolve(input(), policy)));
const all = resolver(['certificate', 'principal', 'xfcc', 'jwt_svid'], true);
const withJwt = input({ authorization: `Bearer ${token}`, 'x-forwarded-client-cert': `By=spiffe://example.org/ns/default/sa/backend;URI=${ID}` });
bench('+ XFCC URI + JWT-SVID (all four sources agreeing)', () => check(all.resolve(withJwt, policy)));
bench('for scale: a cache MISS (parse + chain verify), new resolver', () =>
  check(new IdentityResolver({ sources: ['certificate'], svidCache: new SvidCache(1), clock: () => NOW, bundles }).resolve({ ...input(), principal: null }, policy)));
