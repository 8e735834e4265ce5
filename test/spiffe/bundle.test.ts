/**
 * Trust bundle formats and the per-trust-domain BundleSet (src/spiffe/bundle.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import {
  BundleSet,
  parseCaCertificate,
  parseDerBundle,
  parseJwks,
  parsePemBundle,
  parseSpiffeBundle,
  splitDerCertificates,
  type BundleChange,
} from '../../src/spiffe/bundle.js';
import { createIntermediateCa, createRootCa, type TestCa } from '../helpers/test-ca.js';
import { contentOf, ecKeyPair, spiffeBundleJson } from './trust-helpers.js';

const FIXTURES = path.resolve(import.meta.dirname, '..', 'fixtures');

let rootA: TestCa;
let rootA2: TestCa;
let interA: TestCa;

beforeAll(async () => {
  rootA = await createRootCa({ trustDomain: 'a.test', name: 'Root A', pathLength: 1 });
  rootA2 = await createRootCa({ trustDomain: 'a.test', name: 'Root A2' });
  interA = await createIntermediateCa(rootA);
});

function chioErrorOf(run: () => unknown): ChioError {
  try {
    run();
  } catch (err) {
    if (err instanceof ChioError) return err;
    throw err;
  }
  throw new Error('expected a ChioError');
}

function expectInvalid(run: () => unknown, message: string | RegExp): void {
  const err = chioErrorOf(run);
  expect(err.code).toBe('config_invalid');
  if (typeof message === 'string') expect(err.message).toBe(message);
  else expect(err.message).toMatch(message);
}

describe('CA certificates', () => {
  it('reads CA facts once: cA, keyCertSign, pathLen, validity', () => {
    const ca = parseCaCertificate(rootA.der);
    expect({ isCa: ca.isCa, keyCertSign: ca.keyCertSign, pathLen: ca.pathLen }).toEqual({ isCa: true, keyCertSign: true, pathLen: 1 });
    expect(ca.notBefore).toBe(Date.parse('2025-01-01T00:00:00Z'));
    expect(parseCaCertificate(interA.der).pathLen).toBeNull();
  });

  it('splits concatenated DER and rejects trailing garbage', () => {
    expect(splitDerCertificates(Buffer.concat([rootA.der, rootA2.der])).map((d) => d.equals(rootA.der) || d.equals(rootA2.der))).toEqual([true, true]);
    expect(splitDerCertificates(Buffer.alloc(0))).toEqual([]);
    expect(() => splitDerCertificates(Buffer.concat([rootA.der, Buffer.from([0x30, 0x05, 0x01])]))).toThrow(/concatenated DER certificates: truncated/);
  });
});

describe('PEM bundles', () => {
  it('parses the fixture ca.pem', () => {
    const content = parsePemBundle(readFileSync(path.join(FIXTURES, 'envoy', 'pki', 'ca.pem'), 'utf8'), 'example.org', 'ca.pem');
    expect(content.x509Authorities).toHaveLength(1);
    expect(content.x509Authorities[0]?.sha256).toBe('4dc99581a2db6a87e064e1bae17ab89a1544b8984ba74aee9ff7eb21944d6d0f');
    expect(content.jwtAuthorities.size).toBe(0);
  });

  it('parses several roots with comments around them', () => {
    const content = parsePemBundle(`# roots of a.test\n${rootA.pem}\nsecond:\n${rootA2.pem}`, 'a.test', 'f');
    expect(content.x509Authorities).toHaveLength(2);
  });

  it('rejects an empty file, a private key and a broken block', () => {
    expectInvalid(() => parsePemBundle('', 'a.test', 'f.pem'), 'f.pem: no PEM CERTIFICATE block');
    expectInvalid(
      () => parsePemBundle('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', 'a.test', 'f.pem'),
      'f.pem: PEM block "PRIVATE KEY" where a CERTIFICATE was expected',
    );
    expectInvalid(() => parsePemBundle(`${rootA.pem.slice(0, 100)}`, 'a.test', 'f.pem'), 'f.pem: PEM block without a matching END line');
    expectInvalid(
      () => parsePemBundle('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', 'a.test', 'f.pem'),
      /^f\.pem certificate 1: certificate: invalid DER/,
    );
  });
});

describe('SPIFFE bundles (JWKS)', () => {
  it('parses the fixture bundle: x5c roots, sequence and refresh hint', () => {
    const content = parseSpiffeBundle(readFileSync(path.join(FIXTURES, 'trust', 'example.org.bundle.json'), 'utf8'), 'example.org', 'b.json');
    expect(content.x509Authorities[0]?.sha256).toBe('4dc99581a2db6a87e064e1bae17ab89a1544b8984ba74aee9ff7eb21944d6d0f');
    expect(content.sequence).toBe(1);
    expect(content.refreshHintSeconds).toBe(300);
  });

  it('takes x509-svid x5c[0] and jwt-svid keys by kid; ignores unknown uses and key types', () => {
    const jwt = ecKeyPair('k1');
    const doc = JSON.parse(spiffeBundleJson([rootA], [{ kid: 'k1', key: jwt.publicKey }])) as { keys: object[] };
    doc.keys.push({ kty: 'EC', use: 'wit-svid', kid: 'w' }, { kty: 'OKP', crv: 'Ed25519', x: 'AA', use: 'jwt-svid', kid: 'ed' }, { kty: 'EC', use: 'x509-svid' });
    const content = parseSpiffeBundle(JSON.stringify(doc), 'a.test', 'b');
    expect(content.x509Authorities).toHaveLength(1);
    expect([...content.jwtAuthorities.keys()]).toEqual(['k1']);
    expect(content.jwtAuthorities.get('k1')?.export({ format: 'jwk' })).toEqual(jwt.publicKey.export({ format: 'jwk' }));
  });

  it('ignores keys without use in a SPIFFE bundle, but reads them as JWT keys in a JWKS', () => {
    const jwt = ecKeyPair('plain');
    const doc = JSON.stringify({ keys: [{ ...jwt.publicKey.export({ format: 'jwk' }), kid: 'plain' }] });
    expect(parseSpiffeBundle(doc, 'a.test', 'b').jwtAuthorities.size).toBe(0);
    expect([...parseJwks(doc, 'a.test', 'b').jwtAuthorities.keys()]).toEqual(['plain']);
  });

  it('ignores elements that are not JWKs or of a key type it does not know (Bundle §4.2.1, RFC 7517 §5), and a refresh hint that is not a count of seconds', () => {
    const doc = (keys: unknown[], extra: object = {}): string => JSON.stringify({ keys, ...extra });
    const root = { kty: 'EC', use: 'x509-svid', x5c: [rootA.der.toString('base64')] };
    const content = parseSpiffeBundle(doc([{ ...root, kty: 'FOO-UNKNOWN' }, 7, null, { use: 'x509-svid' }, root]), 'a.test', 'b.json');
    expect(content.x509Authorities.map((c) => c.sha256)).toEqual([parseCaCertificate(rootA.der).sha256]);
    for (const hint of [-1, 1e20, 300.5, '300']) {
      expect(parseSpiffeBundle(doc([root], { spiffe_refresh_hint: hint }), 'a.test', 'b.json').refreshHintSeconds).toBeNull();
    }
    expect(parseSpiffeBundle(doc([root], { spiffe_refresh_hint: 300 }), 'a.test', 'b.json').refreshHintSeconds).toBe(300);
    // spiffe_sequence is a uint64: a value above 2^53 is taken (as the nearest double), not a reason to refuse the bundle
    expect(parseSpiffeBundle('{"keys":[],"spiffe_sequence":18446744073709551615}', 'a.test', 'b.json').sequence).toBe(18446744073709551615);
    expectInvalid(() => parseSpiffeBundle('{"keys":[],"spiffe_sequence":1.5}', 'a.test', 'b.json'), 'b.json: not a SPIFFE bundle: spiffe_sequence: expected a whole number');
  });

  it('rejects malformed documents with the place at fault', () => {
    expectInvalid(() => parseSpiffeBundle('{', 'a.test', 'b.json'), /^b\.json: not valid JSON/);
    expectInvalid(() => parseSpiffeBundle('{"keys":{}}', 'a.test', 'b.json'), 'b.json: not a SPIFFE bundle: keys: Invalid input: expected array, received object');
    expectInvalid(() => parseSpiffeBundle('{"keys":[{"kty":"EC","use":"x509-svid","x5c":"AAAA"}]}', 'a.test', 'b.json'), 'b.json: keys[0]: x5c: Invalid input: expected array, received string');
    const jwt = ecKeyPair('k');
    const jwk = { ...jwt.publicKey.export({ format: 'jwk' }), use: 'jwt-svid' };
    expectInvalid(() => parseSpiffeBundle(JSON.stringify({ keys: [jwk] }), 'a.test', 'b.json'), 'b.json keys[0]: a jwt-svid key must have a "kid"');
    expectInvalid(
      () => parseSpiffeBundle(JSON.stringify({ keys: [{ ...jwk, kid: 'k' }, { ...jwk, kid: 'k' }] }), 'a.test', 'b.json'),
      'b.json keys[1]: duplicate kid "k"',
    );
    const priv = { ...jwt.privateKey.export({ format: 'jwk' }), use: 'jwt-svid', kid: 'p' };
    expectInvalid(() => parseSpiffeBundle(JSON.stringify({ keys: [priv] }), 'a.test', 'b.json'), 'b.json keys[0]: a bundle key must be public (it has "d")');
    expectInvalid(
      () => parseSpiffeBundle(JSON.stringify({ keys: [{ kty: 'EC', use: 'x509-svid', x5c: ['not base64!'] }] }), 'a.test', 'b.json'),
      'b.json keys[0].x5c[0]: x5c value is not canonical base64 DER',
    );
  });

  it('never throws anything but a ChioError on random JSON-ish input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.json(), fc.string()), (text) => {
        try {
          parseSpiffeBundle(text, 'a.test', 'b');
        } catch (err) {
          expect(err).toBeInstanceOf(ChioError);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('DER bundles', () => {
  it('parses concatenated DER roots', () => {
    expect(parseDerBundle(Buffer.concat([rootA.der, rootA2.der]), 'a.test', 'w').x509Authorities).toHaveLength(2);
    expectInvalid(() => parseDerBundle(Buffer.alloc(0), 'a.test', 'w'), 'w: empty X.509 bundle');
  });
});

describe('BundleSet', () => {
  it('keeps bundles per trust domain, the first source wins, and reports changes', () => {
    const set = new BundleSet();
    const changes: BundleChange[] = [];
    set.onChange((c) => void changes.push(c));
    const first = set.addSource({ source: 'pem#0', verifier: 'v0' }, ['a.test']);
    const second = set.addSource({ source: 'workload_api#1', verifier: 'v1' });
    expect(set.isPending('a.test')).toBe(true);
    expect(set.get('a.test')).toBeUndefined();

    set.replace(second, [contentOf('a.test', [rootA2]), contentOf('b.test', [rootA2])]);
    expect(set.get('a.test')?.verifier).toBe('v1');
    expect(set.isPending('a.test')).toBe(false);
    set.replace(first, [contentOf('a.test', [rootA])]);
    expect(set.get('a.test')?.verifier).toBe('v0');
    expect(set.get('b.test')?.verifier).toBe('v1');
    expect(set.trustDomains()).toEqual(['a.test', 'b.test']);
    expect(changes.map((c) => `${c.trustDomain}:${c.bundle?.source ?? '-'}`)).toEqual(['a.test:workload_api#1', 'b.test:workload_api#1', 'a.test:pem#0']);
  });

  it('a source that names its trust domains (Workload API) makes every trust domain pending until its first delivery', () => {
    const set = new BundleSet();
    const i = set.addSource({ source: 'workload_api#0', verifier: 'v' });
    set.expectAnyTrustDomain(i);
    expect(set.pendingReason('a.test')).toBe('no trust bundle yet: bundle source workload_api#0 has not delivered, and the bundle of a.test may come from it');
    expect(set.isPending('evil.test')).toBe(true);
    set.replace(i, [contentOf('a.test', [rootA])]);
    expect(set.pendingReason('a.test')).toBeNull();
    expect(set.isPending('evil.test')).toBe(false); // delivered: a trust domain it does not name has no bundle
    expect(() => set.expectAnyTrustDomain(7)).toThrow(new TypeError('BundleSet.expectAnyTrustDomain: no source 7'));
  });

  it('a trust domain delivered once and then held by no source is pending (withdrawn), until one delivers it again', () => {
    const set = new BundleSet();
    const i = set.addSource({ source: 's', verifier: 'v' });
    set.replace(i, [contentOf('a.test', [rootA]), contentOf('b.test', [rootA2])]);
    set.replace(i, [contentOf('a.test', [rootA])]);
    expect(set.get('b.test')).toBeUndefined();
    expect(set.pendingReason('b.test')).toBe('the trust bundle of b.test was withdrawn by its source');
    expect(set.isPending('c.test')).toBe(false);
    set.replace(i, [contentOf('a.test', [rootA]), contentOf('b.test', [rootA2])]);
    expect(set.isPending('b.test')).toBe(false);
    expect(set.get('b.test')?.x509Authorities).toHaveLength(1);
  });

  it('keeps the generation for identical content and changes it on any update; withdraws missing trust domains', () => {
    const set = new BundleSet();
    const i = set.addSource({ source: 's', verifier: 'v' });
    set.replace(i, [contentOf('a.test', [rootA]), contentOf('b.test', [rootA2])]);
    const g1 = set.get('a.test')?.generation;
    set.replace(i, [contentOf('a.test', [rootA]), contentOf('b.test', [rootA2])]);
    expect(set.get('a.test')?.generation).toBe(g1);
    set.replace(i, [contentOf('a.test', [rootA], { intermediates: [interA] })]);
    expect(set.get('a.test')?.generation).not.toBe(g1);
    expect(set.get('b.test')).toBeUndefined();
    const jwt = ecKeyPair('k');
    const g2 = set.get('a.test')?.generation;
    set.replace(i, [contentOf('a.test', [rootA], { intermediates: [interA], jwt: new Map([['k', jwt.publicKey]]) })]);
    expect(set.get('a.test')?.generation).not.toBe(g2);
  });

  it('records the first and last root expiry', async () => {
    const early = await createRootCa({ trustDomain: 'a.test', notAfter: new Date('2031-01-01T00:00:00Z') });
    const set = new BundleSet();
    const i = set.addSource({ source: 's', verifier: 'v' });
    set.replace(i, [contentOf('a.test', [rootA, early])]);
    expect(set.get('a.test')?.x509FirstExpiry).toBe(Date.parse('2031-01-01T00:00:00Z'));
    expect(set.get('a.test')?.x509ExpiresAt).toBe(Date.parse('2045-01-01T00:00:00Z'));
    set.replace(i, [contentOf('a.test', [])]);
    expect(set.get('a.test')?.x509ExpiresAt).toBeNull();
  });

  it('rejects a trust domain twice in one update and an unknown source', () => {
    const set = new BundleSet();
    const i = set.addSource({ source: 's', verifier: 'v' });
    expect(() => set.replace(i, [contentOf('a.test', [rootA]), contentOf('a.test', [rootA2])])).toThrow(TypeError);
    expect(() => set.replace(7, [])).toThrow(TypeError);
  });
});
