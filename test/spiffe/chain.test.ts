/**
 * X.509-SVID chain verification (src/spiffe/chain.ts): every verdict and reason code, on
 * chains built at test time with test/helpers/test-ca.ts.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { DenyError } from '../../src/errors.js';
import { X509ChainVerifier, verifySvid, MAX_ISSUER_CHECKS, MAX_PATH_INTERMEDIATES, MAX_PRESENTED_INTERMEDIATES } from '../../src/spiffe/chain.js';
import { parseCaCertificate } from '../../src/spiffe/bundle.js';
import { svidFromEnvoyCertificate } from '../../src/spiffe/x509-svid.js';
import {
  createIntermediateCa,
  createRootCa,
  issueSvid,
  nameConstraintsExtension,
  rawExtension,
  TEST_NOW,
  type IssuedSvid,
  type TestCa,
} from '../helpers/test-ca.js';
import { bundleOf, bundleSetOf, contentOf } from './trust-helpers.js';

function denyOf(run: () => unknown): DenyError {
  try {
    run();
  } catch (err) {
    if (err instanceof DenyError) return err;
    throw err;
  }
  throw new Error('expected a DenyError');
}

function expectDeny(run: () => unknown, code: string, message: string | RegExp): void {
  const err = denyOf(run);
  expect(err.code).toBe(code);
  if (typeof message === 'string') expect(err.message).toBe(message);
  else expect(err.message).toMatch(message);
}

/** leaf first, DER */
function ders(svid: IssuedSvid): Buffer[] {
  return svid.chain.map((c) => c.raw);
}

let rootA: TestCa;
let interA: TestCa;
let rootB: TestCa;
let leafDirect: IssuedSvid;
let leafViaInter: IssuedSvid;

beforeAll(async () => {
  rootA = await createRootCa({ trustDomain: 'a.test', name: 'Root A' });
  interA = await createIntermediateCa(rootA, { name: 'Intermediate A' });
  rootB = await createRootCa({ trustDomain: 'b.test', name: 'Root B' });
  leafDirect = await issueSvid(rootA, { uris: ['spiffe://a.test/direct'] });
  leafViaInter = await issueSvid(interA, { uris: ['spiffe://a.test/via-inter'] });
});

const bundlesAB = () => {
  const { set } = bundleSetOf(contentOf('a.test', [rootA]), contentOf('b.test', [rootB]));
  return (td: string) => set.get(td);
};

describe('verifySvid: valid chains', () => {
  it('verifies root → leaf against the bundle of the leaf trust domain', () => {
    const r = verifySvid(ders(leafDirect), bundlesAB(), TEST_NOW);
    expect(r.leaf.spiffeId.uri).toBe('spiffe://a.test/direct');
    expect(r.chain?.root.sha256).toBe(parseCaCertificate(rootA.der).sha256);
    expect(r.chain?.intermediates).toEqual([]);
    expect(r.bundle?.trustDomain).toBe('a.test');
  });

  it('verifies root → intermediate → leaf with the intermediate presented', () => {
    const r = verifySvid(ders(leafViaInter), bundlesAB(), TEST_NOW);
    expect(r.chain?.intermediates.map((c) => c.sha256)).toEqual([parseCaCertificate(interA.der).sha256]);
  });

  it('verifies root → intermediate → leaf with the intermediate configured on the bundle', () => {
    const bundle = bundleOf(contentOf('a.test', [rootA], { intermediates: [interA] }));
    const r = verifySvid([leafViaInter.der], () => bundle, TEST_NOW);
    expect(r.chain?.intermediates).toHaveLength(1);
  });

  it('verifies against either root during a root rotation', async () => {
    const newRoot = await createRootCa({ trustDomain: 'a.test', name: 'Root A2' });
    const newLeaf = await issueSvid(newRoot, { uris: ['spiffe://a.test/new'] });
    const bundle = bundleOf(contentOf('a.test', [rootA, newRoot]));
    expect(verifySvid(ders(leafDirect), () => bundle, TEST_NOW).chain?.root.x509.subject).toContain('Root A');
    expect(verifySvid(ders(newLeaf), () => bundle, TEST_NOW).chain?.root.x509.subject).toContain('Root A2');
  });

  it('checks only the leaf rules and validity without bundles', () => {
    const r = verifySvid(ders(leafViaInter), null, TEST_NOW);
    expect(r.chain).toBeNull();
    expect(r.leaf.spiffeId.uri).toBe('spiffe://a.test/via-inter');
  });
});

describe('verifySvid: leaf faults', () => {
  it('expired leaf → svid_expired', async () => {
    const leaf = await issueSvid(rootA, { notAfter: new Date('2029-01-01T00:00:00Z') });
    expectDeny(
      () => verifySvid([leaf.der], bundlesAB(), TEST_NOW),
      'svid_expired',
      'certificate expired: notAfter 2029-01-01T00:00:00.000Z is before 2030-06-15T12:00:00.000Z',
    );
  });

  it('not-yet-valid leaf → svid_not_yet_valid', async () => {
    const leaf = await issueSvid(rootA, { notBefore: new Date('2031-01-01T00:00:00Z') });
    expectDeny(
      () => verifySvid([leaf.der], bundlesAB(), TEST_NOW),
      'svid_not_yet_valid',
      'certificate not yet valid: notBefore 2031-01-01T00:00:00.000Z is after 2030-06-15T12:00:00.000Z',
    );
  });

  it('leaf that is a CA → svid_is_ca', async () => {
    const leaf = await issueSvid(rootA, { ca: true });
    expectDeny(() => verifySvid([leaf.der], bundlesAB(), TEST_NOW), 'svid_is_ca', /basicConstraints cA=true/);
  });

  it('leaf with keyCertSign → svid_key_usage', async () => {
    const leaf = await issueSvid(rootA, { keyUsage: ['digitalSignature', 'keyCertSign'] });
    expectDeny(
      () => verifySvid([leaf.der], bundlesAB(), TEST_NOW),
      'svid_key_usage',
      'certificate keyUsage has keyCertSign; an X509-SVID leaf must not',
    );
  });

  it('two URI SANs → svid_multiple_uri_sans', async () => {
    const leaf = await issueSvid(rootA, { uris: ['spiffe://a.test/one', 'spiffe://a.test/two'] });
    expectDeny(
      () => verifySvid([leaf.der], bundlesAB(), TEST_NOW),
      'svid_multiple_uri_sans',
      'certificate has 2 URI SANs; an X509-SVID has exactly one',
    );
  });

  it('no bundle for the trust domain when bundles are given → unknown_trust_domain', async () => {
    const rootC = await createRootCa({ trustDomain: 'c.test' });
    const leaf = await issueSvid(rootC);
    expectDeny(() => verifySvid([leaf.der], bundlesAB(), TEST_NOW), 'unknown_trust_domain', 'no trust bundle for trust domain c.test');
  });
});

describe('verifySvid: chain faults → untrusted_svid', () => {
  it("wrong trust domain's root: the bundle of a.test never verifies an SVID of b.test, even with both loaded", async () => {
    const crossLeaf = await issueSvid(rootA, { uris: ['spiffe://b.test/impostor'] });
    expectDeny(
      () => verifySvid([crossLeaf.der], bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'unknown issuer: the SVID "spiffe://b.test/impostor" was issued by "CN=Root A, O=chio test", which is neither a root of the trust bundle of b.test nor a presented intermediate (intermediate missing?)',
    );
  });

  it('same issuer name, other key: the authority key identifier does not match', async () => {
    const impostor = await createRootCa({ trustDomain: 'a.test', name: 'Root A' });
    const leaf = await issueSvid(impostor, { uris: ['spiffe://a.test/impostor'] });
    expectDeny(
      () => verifySvid([leaf.der], bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'the SVID "spiffe://a.test/impostor" names root "CN=Root A, O=chio test" as issuer but its authority key identifier does not match',
    );
  });

  it('signature by a different key (tampered signature) → bad signature', () => {
    const der = Buffer.from(leafDirect.der);
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    expectDeny(
      () => verifySvid([der], bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'bad signature: the SVID "spiffe://a.test/direct" is not signed by the key of root "CN=Root A, O=chio test"',
    );
  });

  it('intermediate missing → unknown issuer', () => {
    expectDeny(
      () => verifySvid([leafViaInter.der], bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'unknown issuer: the SVID "spiffe://a.test/via-inter" was issued by "CN=Intermediate A, O=chio test", which is neither a root of the trust bundle of a.test nor a presented intermediate (intermediate missing?)',
    );
  });

  it('intermediate expired', async () => {
    const old = await createIntermediateCa(rootA, { name: 'Old Intermediate', notAfter: new Date('2029-01-01T00:00:00Z') });
    const leaf = await issueSvid(old, { uris: ['spiffe://a.test/old'] });
    expectDeny(
      () => verifySvid(ders(leaf), bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'intermediate "CN=Old Intermediate, O=chio test" expired (notAfter 2029-01-01T00:00:00.000Z)',
    );
  });

  it('intermediate that is not a CA', async () => {
    const fake = await issueSvid(rootA, {
      uris: ['spiffe://a.test/fake'],
      subject: 'CN=Fake CA,O=chio test',
      keyUsage: ['digitalSignature'],
    });
    const fakeCa: TestCa = {
      cert: fake.x509,
      pem: fake.pem,
      der: fake.der,
      keys: fake.keys,
      trustDomain: 'a.test',
      name: 'Fake CA',
      subject: 'CN=Fake CA,O=chio test',
      parent: rootA,
    };
    const leaf = await issueSvid(fakeCa, { uris: ['spiffe://a.test/under-fake'] });
    expectDeny(
      () => verifySvid([leaf.der, fake.der], bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'intermediate "CN=Fake CA, O=chio test" is not a CA (basicConstraints cA=false)',
    );
  });

  it('pathLenConstraint of the root is enforced', async () => {
    const strictRoot = await createRootCa({ trustDomain: 'a.test', name: 'Strict Root', pathLength: 0 });
    const inter = await createIntermediateCa(strictRoot, { name: 'Inter Under Strict' });
    const leaf = await issueSvid(inter, { uris: ['spiffe://a.test/deep'] });
    const bundle = bundleOf(contentOf('a.test', [strictRoot]));
    expectDeny(
      () => verifySvid(ders(leaf), () => bundle, TEST_NOW),
      'untrusted_svid',
      'root "CN=Strict Root, O=chio test" allows 0 intermediate(s) below it (pathLenConstraint); the path has 1',
    );
  });

  it(`a path longer than ${MAX_PATH_INTERMEDIATES} intermediates is refused`, async () => {
    let ca = rootA;
    const chain: TestCa[] = [];
    for (let i = 0; i <= MAX_PATH_INTERMEDIATES; i++) {
      ca = await createIntermediateCa(ca, { name: `Level ${i}` });
      chain.push(ca);
    }
    const leaf = await issueSvid(ca, { uris: ['spiffe://a.test/very-deep'] });
    expectDeny(
      () => verifySvid(ders(leaf), bundlesAB(), TEST_NOW),
      'untrusted_svid',
      `path from the SVID "spiffe://a.test/very-deep" is longer than ${MAX_PATH_INTERMEDIATES} intermediates`,
    );
  });

  describe('presented CAs that issue each other (a path search that would try every ordering)', () => {
    let copies: TestCa[];
    let rogueLeaf: IssuedSvid;
    beforeAll(async () => {
      // one key, one name, distinct serials: each copy verifies every other's signature
      const first = await createRootCa({ trustDomain: 'a.test', name: 'Rogue' });
      copies = [first];
      for (let i = 1; i < 8; i++) copies.push(await createRootCa({ trustDomain: 'a.test', name: 'Rogue', keys: first.keys }));
      rogueLeaf = await issueSvid(first, { uris: ['spiffe://a.test/rogue'] });
    });

    it(`gives up after ${MAX_ISSUER_CHECKS} candidate issuers (8 copies held the event loop ~11 s before)`, () => {
      expectDeny(
        () => verifySvid([rogueLeaf.der, ...copies.map((c) => c.der)], bundlesAB(), TEST_NOW),
        'untrusted_svid',
        `path search for the SVID "spiffe://a.test/rogue" gave up after ${MAX_ISSUER_CHECKS} candidate issuers (CAs that issue each other?)`,
      );
    });

    it('identical copies count once', () => {
      expectDeny(
        () => verifySvid([rogueLeaf.der, ...Array.from({ length: MAX_PRESENTED_INTERMEDIATES }, () => copies[0]!.der)], bundlesAB(), TEST_NOW),
        'untrusted_svid',
        /^unknown issuer: intermediate "CN=Rogue, O=chio test" was issued by "CN=Rogue, O=chio test", which is neither a root of the trust bundle of a\.test nor a presented intermediate$/,
      );
    });

    it(`more than ${MAX_PRESENTED_INTERMEDIATES} presented intermediates are refused before any search`, () => {
      expectDeny(
        () => verifySvid([leafViaInter.der, ...Array.from({ length: MAX_PRESENTED_INTERMEDIATES + 1 }, () => interA.der)], bundlesAB(), TEST_NOW),
        'untrusted_svid',
        `${MAX_PRESENTED_INTERMEDIATES + 1} intermediates presented with spiffe://a.test/via-inter; at most ${MAX_PRESENTED_INTERMEDIATES} are read`,
      );
      expect(verifySvid([leafViaInter.der, ...Array.from({ length: MAX_PRESENTED_INTERMEDIATES }, () => interA.der)], bundlesAB(), TEST_NOW).chain?.intermediates).toHaveLength(1);
    });
  });

  it('a bundle without X.509 authorities verifies nothing', () => {
    const bundle = bundleOf(contentOf('a.test', []));
    expectDeny(() => verifySvid([leafDirect.der], () => bundle, TEST_NOW), 'untrusted_svid', 'the trust bundle of a.test has no X.509 authorities');
  });
});

describe('verifySvid: CA name constraints and critical extensions (RFC 5280 §4.2.1.10, §6.1.4)', () => {
  const bundleWith = (root: TestCa) => {
    const bundle = bundleOf(contentOf('a.test', [root]));
    return () => bundle;
  };

  it('an intermediate permitted the trust domain verifies its SVIDs; one permitted only hosts below it does not', async () => {
    const exact = await createIntermediateCa(rootA, { name: 'Exact TD', extensions: [nameConstraintsExtension({ permitted: [{ uri: 'a.test' }] })] });
    const ok = await issueSvid(exact, { uris: ['spiffe://a.test/ok'] });
    expect(verifySvid(ders(ok), bundlesAB(), TEST_NOW).chain?.intermediates).toHaveLength(1);

    const below = await createIntermediateCa(rootA, { name: 'Below TD', extensions: [nameConstraintsExtension({ permitted: [{ uri: '.a.test' }] })] });
    const leaf = await issueSvid(below, { uris: ['spiffe://a.test/x'] });
    expectDeny(
      () => verifySvid(ders(leaf), bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'intermediate "CN=Below TD, O=chio test" does not permit the URI SAN "spiffe://a.test/x" of the SVID "spiffe://a.test/x" (permitted URI subtrees: ".a.test")',
    );
  });

  it("a root's excluded subtree bounds the leaf under its intermediates", async () => {
    const root = await createRootCa({ trustDomain: 'a.test', name: 'Excluding Root', extensions: [nameConstraintsExtension({ excluded: [{ uri: 'a.test' }] })] });
    const inter = await createIntermediateCa(root, { name: 'Under Excluding', uri: null });
    const leaf = await issueSvid(inter, { uris: ['spiffe://a.test/x'] });
    expectDeny(
      () => verifySvid(ders(leaf), bundleWith(root), TEST_NOW),
      'untrusted_svid',
      'root "CN=Excluding Root, O=chio test" excludes the URI SAN "spiffe://a.test/x" of the SVID "spiffe://a.test/x" (excluded URI subtree "a.test")',
    );
  });

  it("a root's constraints bound the names of the intermediates below it too; a self-issued one is not checked", async () => {
    const root = await createRootCa({ trustDomain: 'a.test', name: 'Permitting Root', extensions: [nameConstraintsExtension({ permitted: [{ uri: 'a.test' }] })] });
    const stray = await createIntermediateCa(root, { name: 'Stray SAN', uri: 'spiffe://b.test' });
    const leaf = await issueSvid(stray, { uris: ['spiffe://a.test/x'] });
    expectDeny(
      () => verifySvid(ders(leaf), bundleWith(root), TEST_NOW),
      'untrusted_svid',
      'root "CN=Permitting Root, O=chio test" does not permit the URI SAN "spiffe://b.test" of intermediate "CN=Stray SAN, O=chio test" (permitted URI subtrees: "a.test")',
    );
    // self-issued (subject = issuer, a new key: a rollover certificate): its own names are exempt
    const rollover = await createIntermediateCa(root, { name: 'Permitting Root', uri: 'spiffe://b.test' });
    const underRollover = await issueSvid(rollover, { uris: ['spiffe://a.test/y'] });
    expect(verifySvid(ders(underRollover), bundleWith(root), TEST_NOW).chain?.intermediates).toHaveLength(1);
  });

  it('DNS subtrees bound the DNS SANs of an SVID', async () => {
    const inter = await createIntermediateCa(rootA, {
      name: 'DNS Bound',
      extensions: [nameConstraintsExtension({ permitted: [{ uri: 'a.test' }, { dns: 'prod.svc' }] })],
    });
    const inside = await issueSvid(inter, { uris: ['spiffe://a.test/api'], dns: ['api.prod.svc'] });
    expect(verifySvid(ders(inside), bundlesAB(), TEST_NOW).leaf.dnsSans).toEqual(['api.prod.svc']);
    const outside = await issueSvid(inter, { uris: ['spiffe://a.test/api'], dns: ['api.dev.svc'] });
    expectDeny(
      () => verifySvid(ders(outside), bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'intermediate "CN=DNS Bound, O=chio test" does not permit the DNS SAN "api.dev.svc" of the SVID "spiffe://a.test/api" (permitted DNS subtrees: "prod.svc")',
    );
  });

  it('critical constraints of a kind chio does not process make the CA unusable; non-critical ones are ignored', async () => {
    const critical = await createIntermediateCa(rootA, { name: 'DN Bound', extensions: [nameConstraintsExtension({ permitted: [{ directoryName: true }] })] });
    const leaf = await issueSvid(critical, { uris: ['spiffe://a.test/x'] });
    expectDeny(
      () => verifySvid(ders(leaf), bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'intermediate "CN=DN Bound, O=chio test" has critical nameConstraints with directoryName, which chio does not process (RFC 5280 §4.2 requires rejecting it)',
    );
    const lax = await createIntermediateCa(rootA, { name: 'DN Hint', extensions: [nameConstraintsExtension({ permitted: [{ directoryName: true }] }, false)] });
    expect(verifySvid(ders(await issueSvid(lax, { uris: ['spiffe://a.test/x'] })), bundlesAB(), TEST_NOW).chain?.intermediates).toHaveLength(1);
  });

  it('an intermediate or a root with a critical extension chio does not process signs no path; non-critical, it does', async () => {
    const odd = await createIntermediateCa(rootA, { name: 'Odd Inter', extensions: [rawExtension('1.2.3.4', true, Buffer.from('0500', 'hex'))] });
    const underOdd = await issueSvid(odd, { uris: ['spiffe://a.test/x'] });
    expectDeny(
      () => verifySvid(ders(underOdd), bundlesAB(), TEST_NOW),
      'untrusted_svid',
      'intermediate "CN=Odd Inter, O=chio test" has a critical extension chio does not process (1.2.3.4); RFC 5280 §6.1.4 requires rejecting it',
    );
    // policyConstraints (requireExplicitPolicy 0): chio does no policy processing, so it cannot honour it
    const policyRoot = await createRootCa({ trustDomain: 'a.test', name: 'Policy Root', extensions: [rawExtension('2.5.29.36', true, Buffer.from('3003800100', 'hex'))] });
    const underPolicy = await issueSvid(policyRoot, { uris: ['spiffe://a.test/x'] });
    expectDeny(
      () => verifySvid([underPolicy.der], bundleWith(policyRoot), TEST_NOW),
      'untrusted_svid',
      'root "CN=Policy Root, O=chio test" has a critical extension chio does not process (2.5.29.36); RFC 5280 §6.1.4 requires rejecting it',
    );
    const mild = await createIntermediateCa(rootA, { name: 'Mild Inter', extensions: [rawExtension('1.2.3.4', false, Buffer.from('0500', 'hex'))] });
    expect(verifySvid(ders(await issueSvid(mild, { uris: ['spiffe://a.test/x'] })), bundlesAB(), TEST_NOW).chain?.intermediates).toHaveLength(1);
  });

  it('the Check path verifier denies the same way (X509ChainVerifier)', async () => {
    const below = await createIntermediateCa(rootA, { name: 'Below TD 2', extensions: [nameConstraintsExtension({ permitted: [{ uri: '.a.test' }] })] });
    const leaf = await issueSvid(below, { uris: ['spiffe://a.test/x'] });
    const { set } = bundleSetOf(contentOf('a.test', [rootA], { intermediates: [below] }));
    const verifier = new X509ChainVerifier(set);
    const svid = svidFromEnvoyCertificate(leaf.envoyEncoded);
    expectDeny(
      () => verifier.verify(svid, '', () => [], TEST_NOW),
      'untrusted_svid',
      'intermediate "CN=Below TD 2, O=chio test" does not permit the URI SAN "spiffe://a.test/x" of the SVID "spiffe://a.test/x" (permitted URI subtrees: ".a.test")',
    );
  });
});

describe('verifySvid: bundle_expired', () => {
  it('every root of the bundle expired → bundle_expired', async () => {
    const oldRoot = await createRootCa({ trustDomain: 'a.test', name: 'Old Root', notAfter: new Date('2029-06-01T00:00:00Z') });
    const leaf = await issueSvid(oldRoot);
    const bundle = bundleOf(contentOf('a.test', [oldRoot]));
    expectDeny(
      () => verifySvid([leaf.der], () => bundle, TEST_NOW),
      'bundle_expired',
      'every X.509 root in the trust bundle of a.test expired (the last at 2029-06-01T00:00:00.000Z)',
    );
  });

  it('one expired root next to a valid one is a plain root expiry for its leaves', async () => {
    const oldRoot = await createRootCa({ trustDomain: 'a.test', name: 'Old Root', notAfter: new Date('2029-06-01T00:00:00Z') });
    const leaf = await issueSvid(oldRoot, { uris: ['spiffe://a.test/old-root'] });
    const bundle = bundleOf(contentOf('a.test', [oldRoot, rootA]));
    expectDeny(
      () => verifySvid([leaf.der], () => bundle, TEST_NOW),
      'untrusted_svid',
      'root "CN=Old Root, O=chio test" expired (notAfter 2029-06-01T00:00:00.000Z)',
    );
  });
});

describe('X509ChainVerifier: cache per (leaf, chain, bundle generation)', () => {
  it('verifies once per leaf and bundle generation; a repeated SVID does not rebuild the chain', () => {
    const { set, index } = bundleSetOf(contentOf('a.test', [rootA]));
    const verifier = new X509ChainVerifier(set);
    const leaf = svidFromEnvoyCertificate(leafViaInter.envoyEncoded);
    let loads = 0;
    const presented = () => {
      loads++;
      return [parseCaCertificate(interA.der)];
    };
    const first = verifier.verify(leaf, 'chain-1', presented, TEST_NOW);
    const second = verifier.verify(leaf, 'chain-1', presented, TEST_NOW + 1000);
    expect(first.kind).toBe('verified');
    expect(second).toEqual(first);
    expect(loads).toBe(1);

    set.replace(index, [contentOf('a.test', [rootA, rootB])]); // new content → new generation
    verifier.verify(leaf, 'chain-1', presented, TEST_NOW);
    expect(loads).toBe(2);
    set.replace(index, [contentOf('a.test', [rootA, rootB])]); // identical content → same generation
    verifier.verify(leaf, 'chain-1', presented, TEST_NOW);
    expect(loads).toBe(2);
    verifier.verify(leaf, 'chain-2', presented, TEST_NOW);
    expect(loads).toBe(3);
  });

  it('caches a deny too, and re-decides when the decision time leaves the validity window', async () => {
    const shortInter = await createIntermediateCa(rootA, { name: 'Short', notAfter: new Date('2031-01-01T00:00:00Z') });
    const svid = await issueSvid(shortInter, { uris: ['spiffe://a.test/short'] });
    const { set } = bundleSetOf(contentOf('a.test', [rootA]));
    const verifier = new X509ChainVerifier(set);
    const leaf = svidFromEnvoyCertificate(svid.envoyEncoded);
    let loads = 0;
    const presented = () => {
      loads++;
      return [parseCaCertificate(shortInter.der)];
    };
    expect(verifier.verify(leaf, 'k', presented, TEST_NOW).kind).toBe('verified');
    const after = Date.parse('2031-01-01T00:00:01Z');
    expectDeny(() => verifier.verify(leaf, 'k', presented, after), 'untrusted_svid', /intermediate "CN=Short, O=chio test" expired/);
    expectDeny(() => verifier.verify(leaf, 'k', presented, after + 1), 'untrusted_svid', /expired/);
    expect(loads).toBe(2);
  });

  it('no bundle for the trust domain → no_bundle; configured but not loaded → untrusted_svid', () => {
    const { set } = bundleSetOf(contentOf('b.test', [rootB]));
    const verifier = new X509ChainVerifier(set);
    const leaf = svidFromEnvoyCertificate(leafDirect.envoyEncoded);
    expect(verifier.verify(leaf, '', () => [], TEST_NOW)).toEqual({ kind: 'no_bundle' });
    set.addSource({ source: 'late#1', verifier: 'x' }, ['a.test']);
    expectDeny(() => verifier.verify(leaf, '', () => [], TEST_NOW), 'untrusted_svid', 'the trust bundle of a.test is configured but not loaded yet');
  });
});
