/**
 * Tests for the shared test PKI helper (test/helpers/test-ca.ts): what it mints is what other
 * tests rely on (chains that verify with node:crypto, X509-SVID defaults, Envoy's encoding).
 */
import 'reflect-metadata';
import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import * as peculiar from '@peculiar/x509';
import { decodeEnvoyCertificate, parseSvidLeaf } from '../../src/spiffe/x509-svid.js';
import {
  caChain,
  createIntermediateCa,
  createRootCa,
  DEFAULT_NOT_AFTER,
  DEFAULT_NOT_BEFORE,
  derTlv,
  envoyUrlEncode,
  generateKeys,
  issueSvid,
  TEST_NOW,
  type TestCa,
} from '../helpers/test-ca.js';

function extensionOids(der: Uint8Array): { oid: string; critical: boolean }[] {
  return new peculiar.X509Certificate(der).extensions.map((e) => ({ oid: e.type, critical: e.critical }));
}

describe('test CA', () => {
  let root: TestCa;
  let intermediate: TestCa;

  beforeAll(async () => {
    root = await createRootCa();
    intermediate = await createIntermediateCa(root, { name: 'Issuing CA' });
  });

  it('creates a self-signed root CA with a SPIFFE ID and fixed validity', () => {
    expect(root.trustDomain).toBe('example.org');
    expect(root.name).toBe('Test Root CA');
    expect(root.parent).toBeUndefined();
    expect(root.cert.ca).toBe(true);
    expect(root.cert.subject).toBe('CN=Test Root CA\nO=chio test');
    expect(root.cert.issuer).toBe(root.cert.subject);
    expect(root.cert.subjectAltName).toBe('URI:spiffe://example.org');
    expect(root.cert.checkIssued(root.cert)).toBe(true);
    expect(root.cert.verify(root.cert.publicKey)).toBe(true);
    expect(Date.parse(root.cert.validFrom)).toBe(DEFAULT_NOT_BEFORE.getTime());
    expect(Date.parse(root.cert.validTo)).toBe(DEFAULT_NOT_AFTER.getTime());
    expect(root.der).toEqual(root.cert.raw);
    expect(root.pem.startsWith('-----BEGIN CERTIFICATE-----\n')).toBe(true);
    expect(root.pem.endsWith('-----END CERTIFICATE-----\n')).toBe(true);
    expect(root.pem).not.toContain('\r');
  });

  it('creates an intermediate CA that chains to its root', () => {
    expect(intermediate.trustDomain).toBe('example.org');
    expect(intermediate.parent).toBe(root);
    expect(intermediate.cert.ca).toBe(true);
    expect(intermediate.cert.issuer).toBe(root.cert.subject);
    expect(intermediate.cert.subject).toBe('CN=Issuing CA\nO=chio test');
    expect(intermediate.cert.checkIssued(root.cert)).toBe(true);
    expect(intermediate.cert.verify(root.cert.publicKey)).toBe(true);
    expect(intermediate.cert.verify(intermediate.cert.publicKey)).toBe(false);
    expect(caChain(intermediate)).toEqual([intermediate, root]);
    const keyUsage = new peculiar.X509Certificate(intermediate.der).getExtension(peculiar.KeyUsagesExtension);
    expect(keyUsage?.usages).toBe(peculiar.KeyUsageFlags.keyCertSign | peculiar.KeyUsageFlags.cRLSign);
    expect(keyUsage?.critical).toBe(true);
  });

  it('CA options: trust domain, validity, no URI', async () => {
    const ca = await createRootCa({
      trustDomain: 'prod.chio',
      uri: null,
      notBefore: new Date('2030-01-01T00:00:00Z'),
      notAfter: new Date('2031-01-01T00:00:00Z'),
    });
    expect(ca.trustDomain).toBe('prod.chio');
    expect(ca.cert.subjectAltName).toBeUndefined();
    expect(ca.cert.validFrom).toBe('Jan  1 00:00:00 2030 GMT');
  });

  it('issues a default X509-SVID leaf that passes the X509-SVID rules and chains to the issuer', async () => {
    const svid = await issueSvid(intermediate);
    const leaf = parseSvidLeaf(svid.der);
    expect(leaf.spiffeId.uri).toBe('spiffe://example.org/workload');
    expect(svid.x509.subject).toBeUndefined();
    expect(svid.x509.ca).toBe(false);
    expect(svid.x509.issuer).toBe(intermediate.cert.subject);
    expect(svid.x509.checkIssued(intermediate.cert)).toBe(true);
    expect(svid.x509.verify(intermediate.cert.publicKey)).toBe(true);
    expect(svid.x509.verify(root.cert.publicKey)).toBe(false);
    expect(svid.chain).toEqual([svid.x509, intermediate.cert]);
    expect(svid.chainPem).toBe(svid.pem + intermediate.pem);
    expect(decodeEnvoyCertificate(svid.envoyEncoded)).toEqual(svid.der);
    expect(svid.envoyEncoded).toBe(envoyUrlEncode(svid.pem));
    expect(TEST_NOW).toBeGreaterThan(DEFAULT_NOT_BEFORE.getTime());
    expect(TEST_NOW).toBeLessThan(DEFAULT_NOT_AFTER.getTime());
    expect(extensionOids(svid.der)).toEqual([
      { oid: '2.5.29.19', critical: true }, // basicConstraints cA=false
      { oid: '2.5.29.15', critical: true }, // keyUsage digitalSignature
      { oid: '2.5.29.37', critical: false }, // extKeyUsage serverAuth, clientAuth
      { oid: '2.5.29.35', critical: false }, // authorityKeyIdentifier
      { oid: '2.5.29.17', critical: true }, // subjectAltName
    ]);
  });

  it('a leaf issued by a root has a chain of just itself', async () => {
    const svid = await issueSvid(root, { uris: ['spiffe://example.org/a'] });
    expect(svid.chain).toEqual([svid.x509]);
    expect(svid.chainPem).toBe(svid.pem);
  });

  it('leaf options omit or change extensions as asked', async () => {
    const keys = await generateKeys();
    const svid = await issueSvid(root, {
      uris: [],
      dns: ['a.example.org'],
      ca: null,
      keyUsage: null,
      subject: 'CN=legacy,O=Example',
      sanCritical: false,
      keys,
    });
    expect(svid.keys).toBe(keys);
    expect(svid.x509.subject).toBe('CN=legacy\nO=Example');
    expect(svid.x509.subjectAltName).toBe('DNS:a.example.org');
    expect(extensionOids(svid.der).map((e) => e.oid)).toEqual(['2.5.29.37', '2.5.29.35', '2.5.29.17']);
    expect(extensionOids(svid.der).find((e) => e.oid === '2.5.29.17')?.critical).toBe(false);
    const none = await issueSvid(root, { uris: [] });
    expect(extensionOids(none.der).map((e) => e.oid)).not.toContain('2.5.29.17');
  });

  it('keyUsage names map to RFC 5280 bits', async () => {
    const svid = await issueSvid(root, { keyUsage: ['digitalSignature', 'keyEncipherment', 'keyAgreement', 'keyCertSign', 'cRLSign'] });
    const ku = new peculiar.X509Certificate(svid.der).getExtension(peculiar.KeyUsagesExtension);
    const F = peculiar.KeyUsageFlags;
    expect(ku?.usages).toBe(F.digitalSignature | F.keyEncipherment | F.keyAgreement | F.keyCertSign | F.cRLSign);
  });
});

describe('envoyUrlEncode', () => {
  it('encodes exactly newline, space, +, / and =', () => {
    expect(envoyUrlEncode('a\nb c+d/e=f-_.~%:')).toBe('a%0Ab%20c%2Bd%2Fe%3Df-_.~%:');
  });

  it('decodeURIComponent reverses it for PEM text', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'ABCxyz019+/=\n -'), maxLength: 200 }), (pem) => {
        expect(decodeURIComponent(envoyUrlEncode(pem))).toBe(pem);
      }),
    );
  });
});

describe('derTlv', () => {
  it('encodes short and long definite lengths', () => {
    expect(derTlv(0x04, Buffer.from([1, 2]))).toEqual(Buffer.from('04020102', 'hex'));
    expect(derTlv(0x04, Buffer.alloc(0x80)).subarray(0, 3)).toEqual(Buffer.from('048180', 'hex'));
    expect(derTlv(0x04, Buffer.alloc(0x100)).subarray(0, 4)).toEqual(Buffer.from('04820100', 'hex'));
    expect(derTlv(0x30, Buffer.from([5]), Buffer.from([6]))).toEqual(Buffer.from('30020506', 'hex'));
    expect(() => derTlv(0x04, Buffer.alloc(0x10000))).toThrow(TypeError);
  });
});
