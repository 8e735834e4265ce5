/**
 * Tests for src/spiffe/x509-svid.ts: Envoy certificate decoding, X509-SVID leaf rules (X509-SVID
 * §2, §3.1, §4.1, §4.3, §5.2) on the Envoy reference fixtures and on test-CA-minted certificates,
 * validity, the SvidCache, and a fast-check robustness property. @peculiar/x509 is the oracle
 * for the DER-derived SANs.
 */
import 'reflect-metadata';
import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import * as peculiar from '@peculiar/x509';
import { readFileSync } from 'node:fs';
import { createHash, X509Certificate } from 'node:crypto';
import { DenyError, type DenyCode } from '../../src/errors.js';
import {
  checkValidity,
  decodeEnvoyCertificate,
  MAX_ENVOY_CERTIFICATE_LENGTH,
  parseSvidLeaf,
  readCertificateFacts,
  SvidCache,
  svidFromEnvoyCertificate,
  type SvidLeaf,
} from '../../src/spiffe/x509-svid.js';
import {
  createIntermediateCa,
  createRootCa,
  derTlv,
  envoyUrlEncode,
  issueSvid,
  rawExtension,
  TEST_NOW,
  type SvidOptions,
  type TestCa,
} from '../helpers/test-ca.js';

interface FixtureCert {
  file: string;
  envoy_url_encoded_pem: string;
  uri_sans: string[];
  dns_sans: string[];
  sha256_der_hex: string;
  not_before: string;
  not_after: string;
}

const FIXTURES = 'test/fixtures/envoy';
const index = JSON.parse(readFileSync(`${FIXTURES}/pki/index.json`, 'utf8')) as Record<string, FixtureCert>;

function fixture(name: string): FixtureCert {
  const cert = index[name];
  if (cert === undefined) throw new Error(`no fixture ${name}`);
  return cert;
}

function fixtureDer(name: string): Buffer {
  return new X509Certificate(readFileSync(`${FIXTURES}/${fixture(name).file}`)).raw;
}

function denial(fn: () => unknown): DenyError {
  try {
    fn();
  } catch (err) {
    if (err instanceof DenyError) return err;
    throw err;
  }
  throw new Error('expected a DenyError, nothing was thrown');
}

function expectDeny(fn: () => unknown, code: DenyCode, message: string): void {
  const err = denial(fn);
  expect({ code: err.code, message: err.message }).toEqual({ code, message });
}

/** The same certificate's SANs as @peculiar/x509 reports them. */
function oracleSans(der: Uint8Array): { uris: string[]; dns: string[] } {
  const cert = new peculiar.X509Certificate(der);
  const san = cert.getExtension(peculiar.SubjectAlternativeNameExtension);
  const items = san?.names.items ?? [];
  return {
    uris: items.filter((n) => n.type === 'url').map((n) => n.value),
    dns: items.filter((n) => n.type === 'dns').map((n) => n.value),
  };
}

const FIXTURE_ERA = Date.parse('2026-11-26T00:00:00Z');

describe('Envoy reference fixtures', () => {
  it.each(Object.keys(index))('%s: decodes to the PEM file DER; SANs match index.json and @peculiar/x509', (name) => {
    const cert = fixture(name);
    const der = decodeEnvoyCertificate(cert.envoy_url_encoded_pem);
    expect(der).toEqual(fixtureDer(name));
    expect(createHash('sha256').update(der).digest('hex')).toBe(cert.sha256_der_hex);
    const facts = readCertificateFacts(der);
    expect(facts.uriSans).toEqual(cert.uri_sans);
    expect(facts.dnsSans).toEqual(cert.dns_sans);
    expect({ uris: facts.uriSans, dns: facts.dnsSans }).toEqual(oracleSans(der));
    expect(facts.notBefore).toBe(Date.parse(cert.not_before));
    expect(facts.notAfter).toBe(Date.parse(cert.not_after));
    const node = new X509Certificate(der);
    expect(facts.notBefore).toBe(Date.parse(node.validFrom));
    expect(facts.isCa).toBe(node.ca);
  });

  it('envoyUrlEncode reproduces Envoy exactly for every fixture PEM', () => {
    for (const cert of Object.values(index)) {
      expect(envoyUrlEncode(readFileSync(`${FIXTURES}/${cert.file}`, 'utf8'))).toBe(cert.envoy_url_encoded_pem);
    }
  });

  it.each([
    ['svid-frontend', 'spiffe://example.org/ns/default/sa/frontend'],
    ['svid-backend', 'spiffe://example.org/ns/default/sa/backend'],
    ['svid-foreign-td', 'spiffe://other-domain.test/ns/default/sa/frontend'],
    ['svid-untrusted', 'spiffe://example.org/ns/default/sa/frontend'],
    ['svid-istio-sleep', 'spiffe://cluster.local/ns/default/sa/sleep'],
    ['svid-istio-httpbin', 'spiffe://cluster.local/ns/default/sa/httpbin'],
  ])('%s is a structurally valid X509-SVID for %s', (name, uri) => {
    const cert = fixture(name);
    const leaf = svidFromEnvoyCertificate(cert.envoy_url_encoded_pem);
    expect(leaf.spiffeId.uri).toBe(uri);
    expect(leaf.sha256).toBe(cert.sha256_der_hex);
    expect(leaf.der).toEqual(fixtureDer(name));
    expect(leaf.x509).toBeInstanceOf(X509Certificate);
    expect(leaf.x509.raw).toEqual(leaf.der);
    expect(leaf.notBefore).toBe(Date.parse(cert.not_before));
    expect(leaf.notAfter).toBe(Date.parse(cert.not_after));
    expect(Object.isFrozen(leaf)).toBe(true);
    expect(() => checkValidity(leaf, FIXTURE_ERA)).not.toThrow();
  });

  it.each<[string, DenyCode, string]>([
    ['svid-multi-uri', 'svid_multiple_uri_sans', 'certificate has 2 URI SANs; an X509-SVID has exactly one'],
    ['dns-only', 'svid_dns_san_only', 'certificate has 2 DNS SANs but no URI SAN; an X509-SVID has exactly one URI SAN'],
    ['subject-only', 'svid_no_uri_san', 'certificate has no subjectAltName extension; an X509-SVID has exactly one URI SAN'],
    ['ca', 'svid_is_ca', 'certificate is a CA (basicConstraints cA=true); an X509-SVID leaf has cA=false'],
    ['ca-istio', 'svid_no_uri_san', 'certificate has no subjectAltName extension; an X509-SVID has exactly one URI SAN'],
    ['other-ca', 'svid_no_uri_san', 'certificate has no subjectAltName extension; an X509-SVID has exactly one URI SAN'],
  ])('%s → %s', (name, code, message) => {
    expectDeny(() => svidFromEnvoyCertificate(fixture(name).envoy_url_encoded_pem), code, message);
  });

  it('svid-expired: expired now, valid on 2024-01-01T12:00Z, not yet valid before', () => {
    const leaf = svidFromEnvoyCertificate(fixture('svid-expired').envoy_url_encoded_pem);
    expectDeny(
      () => checkValidity(leaf, FIXTURE_ERA),
      'svid_expired',
      'certificate expired: notAfter 2024-01-02T00:00:00.000Z is before 2026-11-26T00:00:00.000Z',
    );
    expect(() => checkValidity(leaf, Date.parse('2024-01-01T12:00:00Z'))).not.toThrow();
    expectDeny(
      () => checkValidity(leaf, Date.parse('2023-12-31T23:59:59Z')),
      'svid_not_yet_valid',
      'certificate not yet valid: notBefore 2024-01-01T00:00:00.000Z is after 2023-12-31T23:59:59.000Z',
    );
  });

  it('validity bounds are inclusive', () => {
    const leaf = svidFromEnvoyCertificate(fixture('svid-expired').envoy_url_encoded_pem);
    expect(() => checkValidity(leaf, leaf.notBefore)).not.toThrow();
    expect(() => checkValidity(leaf, leaf.notAfter)).not.toThrow();
    expect(denial(() => checkValidity(leaf, leaf.notAfter + 1)).code).toBe('svid_expired');
    expect(denial(() => checkValidity(leaf, leaf.notBefore - 1)).code).toBe('svid_not_yet_valid');
    expect(() => checkValidity(leaf, Number.NaN)).toThrow(TypeError);
  });
});

describe('decodeEnvoyCertificate rejects malformed input with malformed_certificate', () => {
  const frontendPem = readFileSync(`${FIXTURES}/pki/svid-frontend.pem`, 'utf8');
  const backendPem = readFileSync(`${FIXTURES}/pki/svid-backend.pem`, 'utf8');
  const body = frontendPem.replace('-----BEGIN CERTIFICATE-----\n', '').replace('-----END CERTIFICATE-----\n', '');

  it.each([
    ['garbage', 'garbage', 'certificate: not a PEM certificate: does not start with "-----BEGIN CERTIFICATE-----"'],
    ['empty', '', 'certificate: not a PEM certificate: does not start with "-----BEGIN CERTIFICATE-----"'],
    ['bad percent-encoding', '%ZZ', 'certificate: source.certificate has invalid percent-encoding'],
    ['truncated percent-encoding', envoyUrlEncode(frontendPem).slice(0, -2), 'certificate: source.certificate has invalid percent-encoding'],
    ['invalid UTF-8 escape', '%C3%28', 'certificate: source.certificate has invalid percent-encoding'],
    ['two PEM blocks', envoyUrlEncode(frontendPem + backendPem), 'certificate: PEM holds more than one block; expected exactly one certificate (the leaf)'],
    ['a private key', envoyUrlEncode('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'), 'certificate: PEM block is "PRIVATE KEY"; expected "CERTIFICATE"'],
    ['no END line', envoyUrlEncode(`-----BEGIN CERTIFICATE-----\n${body}`), 'certificate: PEM has no "-----END CERTIFICATE-----" line'],
    ['data after END', envoyUrlEncode(`${frontendPem}junk`), 'certificate: PEM has 5 characters after "-----END CERTIFICATE-----"'],
    ['leading text', envoyUrlEncode(`Certificate:\n${frontendPem}`), 'certificate: not a PEM certificate: does not start with "-----BEGIN CERTIFICATE-----"'],
    ['BEGIN not followed by a line break', envoyUrlEncode(frontendPem.replace('-----\n', '----- ')), 'certificate: PEM "-----BEGIN CERTIFICATE-----" must be followed by a line break'],
    ['invalid base64 character', envoyUrlEncode(frontendPem.replace('MIIB', 'MI*B')), 'certificate: PEM body is not valid base64'],
    ['base64 length not a multiple of 4', envoyUrlEncode(frontendPem.replace('MIIB', 'MIB')), 'certificate: PEM body is not valid base64'],
    ['empty body', envoyUrlEncode('-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n'), 'certificate: PEM body is not valid base64'],
    ['non-canonical base64', envoyUrlEncode('-----BEGIN CERTIFICATE-----\nQR==\n-----END CERTIFICATE-----\n'), 'certificate: PEM body is not canonical base64'],
    ['too long', 'A'.repeat(MAX_ENVOY_CERTIFICATE_LENGTH + 1), `certificate: source.certificate is ${MAX_ENVOY_CERTIFICATE_LENGTH + 1} characters; the maximum is ${MAX_ENVOY_CERTIFICATE_LENGTH}`],
  ])('%s', (_what, input, message) => {
    expectDeny(() => decodeEnvoyCertificate(input), 'malformed_certificate', message);
  });

  it('accepts CRLF line breaks and a PEM without its final newline', () => {
    const der = fixtureDer('svid-frontend');
    expect(decodeEnvoyCertificate(envoyUrlEncode(frontendPem.replace(/\n/g, '\r\n')))).toEqual(der);
    expect(decodeEnvoyCertificate(envoyUrlEncode(frontendPem.trimEnd()))).toEqual(der);
    expect(decodeEnvoyCertificate(encodeURIComponent(frontendPem))).toEqual(der);
  });

  it('rejects a non-string as a programmer error', () => {
    expect(() => decodeEnvoyCertificate(undefined as unknown as string)).toThrow(TypeError);
  });
});

describe('parseSvidLeaf on broken DER', () => {
  const der = (): Buffer => fixtureDer('svid-frontend');

  it('truncated DER', () => {
    const truncated = der().subarray(0, 100);
    expectDeny(
      () => parseSvidLeaf(truncated),
      'malformed_certificate',
      `certificate: invalid DER: truncated: SEQUENCE declares ${der().length - 4} content bytes, 96 remain (at byte 0)`,
    );
    expectDeny(
      () => svidFromEnvoyCertificate(envoyUrlEncode(`-----BEGIN CERTIFICATE-----\n${truncated.toString('base64')}\n-----END CERTIFICATE-----\n`)),
      'malformed_certificate',
      `certificate: invalid DER: truncated: SEQUENCE declares ${der().length - 4} content bytes, 96 remain (at byte 0)`,
    );
  });

  it('trailing garbage after the certificate', () => {
    const padded = Buffer.concat([der(), Buffer.from([0, 0, 0])]);
    expectDeny(
      () => parseSvidLeaf(padded),
      'malformed_certificate',
      `certificate: invalid DER: 3 trailing bytes after the outermost element (at byte ${der().length})`,
    );
  });

  it('bytes that are not a certificate', () => {
    expectDeny(
      () => parseSvidLeaf(Buffer.from('hello world')),
      'malformed_certificate',
      'certificate: invalid DER: truncated: tag 0x68 declares 101 content bytes, 9 remain (at byte 0)',
    );
    expectDeny(
      () => parseSvidLeaf(Buffer.from('020100', 'hex')),
      'malformed_certificate',
      'certificate: invalid DER: Certificate: expected SEQUENCE, found INTEGER (at byte 0)',
    );
    expectDeny(() => parseSvidLeaf(Buffer.alloc(0)), 'malformed_certificate', 'certificate: invalid DER: truncated element header (at byte 0)');
  });

  it('well-formed DER that is not a certificate', () => {
    expectDeny(
      () => parseSvidLeaf(Buffer.from('3003020101', 'hex')),
      'malformed_certificate',
      'certificate: invalid DER: Certificate has 1 elements; expected 3 (at byte 0)',
    );
  });

  it('indefinite length (BER)', () => {
    const ber = Buffer.from(der());
    // 30 82 LL LL → 30 80 ... 00 00: same content, BER framing
    const content = ber.subarray(4);
    const indefinite = Buffer.concat([Buffer.from([0x30, 0x80]), content, Buffer.from([0, 0])]);
    expectDeny(() => parseSvidLeaf(indefinite), 'malformed_certificate', 'certificate: invalid DER: indefinite length is not DER (at byte 1)');
  });

  it('rejects a non-Buffer as a programmer error', () => {
    expect(() => parseSvidLeaf('MIIB' as unknown as Buffer)).toThrow(TypeError);
  });

  it('copies the DER it keeps', () => {
    const input = der();
    const leaf = parseSvidLeaf(input);
    input[10] = (input[10] ?? 0) ^ 0xff;
    expect(leaf.der).toEqual(der());
  });

  it('random bytes and mutations (truncate, flip a byte) of a valid DER only ever raise DenyError, quickly', () => {
    const valid = der();
    const mutation = fc.oneof(
      fc.nat(valid.length - 1).map((cut) => valid.subarray(0, cut)),
      fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 1, max: 255 })).map(([at, x]) => {
        const copy = Buffer.from(valid);
        copy[at] = (copy[at] ?? 0) ^ x;
        return copy;
      }),
      fc.tuple(fc.nat(valid.length - 1), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, bytes]) =>
        Buffer.concat([valid.subarray(0, at), bytes, valid.subarray(at)]),
      ),
      fc.uint8Array({ maxLength: 700 }).map((bytes) => Buffer.from(bytes)),
      fc.uint8Array({ maxLength: 700 }).map((bytes) => Buffer.concat([Buffer.from([0x30, 0x82, 0x02, 0x00]), bytes])),
    );
    const started = performance.now();
    let runs = 0;
    fc.assert(
      fc.property(mutation, (bytes) => {
        runs++;
        try {
          parseSvidLeaf(bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(DenyError);
        }
        try {
          svidFromEnvoyCertificate(envoyUrlEncode(`-----BEGIN CERTIFICATE-----\n${bytes.toString('base64')}\n-----END CERTIFICATE-----\n`));
        } catch (err) {
          expect(err).toBeInstanceOf(DenyError);
        }
      }),
      { numRuns: 1500 },
    );
    expect((performance.now() - started) / runs).toBeLessThan(20); // ms per case, generous
  });

  it('random strings as source.certificate only ever raise DenyError', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 200 }),
          fc.string({ maxLength: 200 }).map((s) => `-----BEGIN%20CERTIFICATE-----%0A${s}`),
          fc.string({ unit: fc.constantFrom(...'%0AaZ-+/=\n '), maxLength: 100 }),
        ),
        (input) => {
          expect(denial(() => svidFromEnvoyCertificate(input))).toBeInstanceOf(DenyError);
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('X509-SVID rules on test-CA certificates', () => {
  let root: TestCa;
  let intermediate: TestCa;
  const issue = (opts: SvidOptions = {}) => issueSvid(intermediate, opts);
  const parse = async (opts: SvidOptions): Promise<SvidLeaf> => parseSvidLeaf((await issue(opts)).der);
  const rejects = async (opts: SvidOptions, code: DenyCode, message: string): Promise<void> => {
    const { der } = await issue(opts);
    expectDeny(() => parseSvidLeaf(der), code, message);
  };

  beforeAll(async () => {
    root = await createRootCa({ trustDomain: 'prod.chio' });
    intermediate = await createIntermediateCa(root);
  });

  it('a default leaf is valid; SANs match the oracle; dates come from the certificate', async () => {
    const svid = await issue({ uris: ['spiffe://prod.chio/payments/worker'], dns: ['worker.payments.svc'] });
    const leaf = svidFromEnvoyCertificate(svid.envoyEncoded);
    expect(leaf.spiffeId.uri).toBe('spiffe://prod.chio/payments/worker');
    expect(leaf.notBefore).toBe(Date.parse(svid.x509.validFrom));
    expect(leaf.notAfter).toBe(Date.parse(svid.x509.validTo));
    expect(() => checkValidity(leaf, TEST_NOW)).not.toThrow();
    const facts = readCertificateFacts(svid.der);
    expect({ uris: facts.uriSans, dns: facts.dnsSans }).toEqual(oracleSans(svid.der));
  });

  it('reads GeneralizedTime validity (years >= 2050)', async () => {
    const leaf = await parse({ notBefore: new Date('2049-12-31T23:59:59Z'), notAfter: new Date('2051-06-01T00:00:00Z') });
    expect(new Date(leaf.notBefore).toISOString()).toBe('2049-12-31T23:59:59.000Z');
    expect(new Date(leaf.notAfter).toISOString()).toBe('2051-06-01T00:00:00.000Z');
  });

  it('keyUsage may add keyEncipherment and keyAgreement; basicConstraints may be absent', async () => {
    expect((await parse({ keyUsage: ['digitalSignature', 'keyEncipherment', 'keyAgreement'] })).spiffeId.uri).toBe('spiffe://prod.chio/workload');
    expect((await parse({ ca: null })).spiffeId.uri).toBe('spiffe://prod.chio/workload');
  });

  it('tolerates an explicitly encoded critical=FALSE (a DEFAULT value DER would omit)', async () => {
    const { der } = await issue();
    const criticalKu = Buffer.from('0603551d0f0101ff', 'hex');
    const at = der.indexOf(criticalKu);
    expect(at).toBeGreaterThan(0);
    const explicitFalse = Buffer.from(der);
    explicitFalse[at + criticalKu.length - 1] = 0x00; // same length: 01 01 ff → 01 01 00
    expect(readCertificateFacts(explicitFalse).keyUsage).toEqual({ digitalSignature: true, keyCertSign: false, cRLSign: false });
    expect(parseSvidLeaf(explicitFalse).spiffeId.uri).toBe('spiffe://prod.chio/workload');
  });

  it('svid_multiple_uri_sans with 3 URIs', async () => {
    await rejects(
      { uris: ['spiffe://prod.chio/a', 'spiffe://prod.chio/b', 'https://example.com/'] },
      'svid_multiple_uri_sans',
      'certificate has 3 URI SANs; an X509-SVID has exactly one',
    );
  });

  it('svid_dns_san_only with one DNS name', async () => {
    await rejects({ uris: [], dns: ['a.example.org'] }, 'svid_dns_san_only', 'certificate has 1 DNS SAN but no URI SAN; an X509-SVID has exactly one URI SAN');
  });

  it('svid_no_uri_san without a SAN extension, and with a SAN of other name types only', async () => {
    await rejects({ uris: [] }, 'svid_no_uri_san', 'certificate has no subjectAltName extension; an X509-SVID has exactly one URI SAN');
    const emailOnly = rawExtension('2.5.29.17', true, derTlv(0x30, derTlv(0x81, Buffer.from('a@example.org'))));
    await rejects(
      { uris: [], extensions: [emailOnly] },
      'svid_no_uri_san',
      'certificate subjectAltName has no URI and no DNS name; an X509-SVID has exactly one URI SAN',
    );
  });

  it.each([
    ['https://prod.chio/a', 'certificate URI SAN: SPIFFE ID "https://prod.chio/a": scheme "https" is not "spiffe"'],
    ['spiffe://Prod.chio/a', 'certificate URI SAN: SPIFFE ID "spiffe://Prod.chio/a": trust domain contains an upper-case letter "P" at index 9'],
    ['spiffe://prod.chio/a/../b', 'certificate URI SAN: SPIFFE ID "spiffe://prod.chio/a/../b": path contains a ".." segment at index 21'],
    ['spiffe://prod.chio/a b', 'certificate URI SAN: SPIFFE ID "spiffe://prod.chio/a b": path contains " " (U+0020) at index 20; allowed are [a-zA-Z0-9.-_]'],
  ])('malformed_spiffe_id for URI SAN %j', async (uri, message) => {
    await rejects({ uris: [uri] }, 'malformed_spiffe_id', message);
  });

  it('malformed_spiffe_id for a non-ASCII byte in the URI SAN (raw IA5String bytes)', async () => {
    const utf8 = rawExtension('2.5.29.17', true, derTlv(0x30, derTlv(0x86, Buffer.from('spiffe://prod.chio/caf\u00e9', 'utf8'))));
    await rejects({ uris: [], extensions: [utf8] }, 'malformed_spiffe_id', 'certificate URI SAN has a non-ASCII byte 0xc3 at offset 22');
    await rejects({ uris: ['spiffe://prod.chio/\u00e9'] }, 'malformed_spiffe_id', 'certificate URI SAN has a non-ASCII byte 0xe9 at offset 19');
  });

  it('a control character in the URI SAN is escaped in the message', async () => {
    const raw = rawExtension('2.5.29.17', true, derTlv(0x30, derTlv(0x86, Buffer.from('spiffe://prod.chio/a\nb'))));
    await rejects(
      { uris: [], extensions: [raw] },
      'malformed_spiffe_id',
      'certificate URI SAN: SPIFFE ID "spiffe://prod.chio/a\\nb": path contains "\\n" (U+000A) at index 20; allowed are [a-zA-Z0-9.-_]',
    );
  });

  it('svid_is_ca for a leaf with cA=true (checked before keyUsage)', async () => {
    await rejects({ ca: true }, 'svid_is_ca', 'certificate is a CA (basicConstraints cA=true); an X509-SVID leaf has cA=false');
    await rejects({ ca: true, keyUsage: ['keyCertSign'] }, 'svid_is_ca', 'certificate is a CA (basicConstraints cA=true); an X509-SVID leaf has cA=false');
  });

  it('svid_is_ca for the test CAs themselves', () => {
    for (const ca of [root, intermediate]) {
      expectDeny(() => parseSvidLeaf(ca.der), 'svid_is_ca', 'certificate is a CA (basicConstraints cA=true); an X509-SVID leaf has cA=false');
    }
  });

  it.each<[SvidOptions['keyUsage'], string]>([
    [null, 'certificate has no keyUsage extension; an X509-SVID leaf must have one with digitalSignature'],
    [['keyEncipherment'], 'certificate keyUsage lacks digitalSignature; an X509-SVID leaf must have it'],
    [[], 'certificate keyUsage lacks digitalSignature; an X509-SVID leaf must have it'],
    [['digitalSignature', 'keyCertSign'], 'certificate keyUsage has keyCertSign; an X509-SVID leaf must not'],
    [['digitalSignature', 'cRLSign'], 'certificate keyUsage has cRLSign; an X509-SVID leaf must not'],
    [['digitalSignature', 'keyCertSign', 'cRLSign'], 'certificate keyUsage has keyCertSign and cRLSign; an X509-SVID leaf must not'],
    [['cRLSign'], 'certificate keyUsage has cRLSign; an X509-SVID leaf must not'],
  ])('svid_key_usage for keyUsage %j', async (keyUsage, message) => {
    await rejects({ keyUsage }, 'svid_key_usage', message);
  });

  it('malformed_spiffe_id for a leaf whose SPIFFE ID has no path (X509-SVID §3.1), after the CA and keyUsage checks', async () => {
    await rejects(
      { uris: ['spiffe://prod.chio'] },
      'malformed_spiffe_id',
      'certificate URI SAN "spiffe://prod.chio" has no path; an X509-SVID leaf\'s SPIFFE ID must have one',
    );
  });

  it('malformed_certificate for duplicate extensions', async () => {
    const secondKu = rawExtension('2.5.29.15', true, Buffer.from('03020780', 'hex'));
    await rejects({ extensions: [secondKu] }, 'malformed_certificate', 'certificate: extension 2.5.29.15 appears more than once');
    const secondSan = rawExtension('2.5.29.17', false, derTlv(0x30, derTlv(0x86, Buffer.from('spiffe://prod.chio/other'))));
    await rejects({ extensions: [secondSan] }, 'malformed_certificate', 'certificate: extension 2.5.29.17 appears more than once');
  });

  it('malformed_certificate for broken extension values', async () => {
    const cases: [Buffer, string, string][] = [
      [Buffer.from('03020780ff', 'hex'), '2.5.29.15', 'certificate: invalid DER: 1 trailing bytes inside OCTET STRING'],
      [Buffer.from('0302078f', 'hex'), '2.5.29.15', 'certificate: invalid DER: BIT STRING has non-zero unused bits'],
      [Buffer.from('3003010101', 'hex'), '2.5.29.19', 'certificate: invalid DER: BOOLEAN must be one octet 0x00 or 0xFF'],
      [derTlv(0x30, derTlv(0xa6, derTlv(0x16, Buffer.from('spiffe://prod.chio/x')))), '2.5.29.17', 'certificate: invalid DER: constructed string in a GeneralName is not DER'],
      [Buffer.from('04020000', 'hex'), '2.5.29.17', 'certificate: invalid DER: GeneralNames: expected SEQUENCE, found OCTET STRING'],
    ];
    for (const [value, oid, prefix] of cases) {
      const opts: SvidOptions =
        oid === '2.5.29.15' ? { keyUsage: null } : oid === '2.5.29.19' ? { ca: null } : { uris: [] };
      const { der } = await issue({ ...opts, extensions: [rawExtension(oid, true, value)] });
      const err = denial(() => parseSvidLeaf(der));
      expect(err.code).toBe('malformed_certificate');
      expect(err.message.slice(0, prefix.length)).toBe(prefix);
      expect(err.message).toMatch(/ \(at byte \d+\)$/);
    }
  });
});

describe('readCertificateFacts on hand-built structures', () => {
  const seq = (...contents: Buffer[]): Buffer => derTlv(0x30, ...contents);
  const utc = (text: string): Buffer => derTlv(0x17, Buffer.from(text));
  const oid = (hex: string): Buffer => derTlv(0x06, Buffer.from(hex, 'hex'));
  const OIDS = { san: '551d11', basicConstraints: '551d13', keyUsage: '551d0f', eku: '551d25' };
  const ext = (oidHex: string, value: Buffer, critical?: boolean): Buffer =>
    seq(oid(oidHex), ...(critical === undefined ? [] : [derTlv(0x01, Buffer.from([critical ? 0xff : 0]))]), derTlv(0x04, value));
  const fields = (): Buffer[] => [
    derTlv(0xa0, derTlv(0x02, Buffer.from([2]))), // version v3
    derTlv(0x02, Buffer.from([1])), // serialNumber
    seq(oid('2a8648ce3d040302')), // signature
    seq(), // issuer
    seq(utc('240101000000Z'), utc('250101000000Z')), // validity
    seq(), // subject
    seq(), // subjectPublicKeyInfo (its content is never read)
  ];
  const certificate = (tbsFields: Buffer[]): Buffer =>
    seq(seq(...tbsFields), seq(oid('2a8648ce3d040302')), derTlv(0x03, Buffer.from([0])));
  const withExtensions = (...extensions: Buffer[]): Buffer => certificate([...fields(), derTlv(0xa3, seq(...extensions))]);
  const malformedMessage = (der: Buffer): string => {
    const err = denial(() => readCertificateFacts(der));
    expect(err.code).toBe('malformed_certificate');
    return err.message;
  };

  it('a certificate without extensions has no facts but its validity', () => {
    expect(readCertificateFacts(certificate(fields()))).toEqual({
      hasSubjectAltName: false,
      uriSans: [],
      dnsSans: [],
      isCa: false,
      pathLen: null,
      keyUsage: null,
      criticalExtensions: [],
      nameConstraints: null,
      notBefore: Date.parse('2024-01-01T00:00:00Z'),
      notAfter: Date.parse('2025-01-01T00:00:00Z'),
    });
  });

  it('reads URI and DNS names in order and ignores other GeneralName types', () => {
    const names = seq(
      derTlv(0x81, Buffer.from('a@example.org')), // rfc822Name
      derTlv(0x86, Buffer.from('spiffe://x/a')),
      derTlv(0xa4, seq()), // directoryName
      derTlv(0x82, Buffer.from('a.example.org')),
      derTlv(0x87, Buffer.from([10, 0, 0, 1])), // iPAddress
      derTlv(0x86, Buffer.from('spiffe://x/b')),
    );
    const facts = readCertificateFacts(withExtensions(ext(OIDS.san, names, true)));
    expect(facts.uriSans).toEqual(['spiffe://x/a', 'spiffe://x/b']);
    expect(facts.dnsSans).toEqual(['a.example.org']);
  });

  it('reads basicConstraints cA and keyUsage bits across octets', () => {
    const bc = seq(derTlv(0x01, Buffer.from([0xff])), derTlv(0x02, Buffer.from([0])));
    const ku = Buffer.from('0303078680', 'hex'); // bits 0, 5, 6 and decipherOnly (bit 8)
    expect(readCertificateFacts(withExtensions(ext(OIDS.basicConstraints, bc), ext(OIDS.keyUsage, ku))))
      .toMatchObject({ isCa: true, keyUsage: { digitalSignature: true, keyCertSign: true, cRLSign: true } });
    const leafBc = seq(derTlv(0x02, Buffer.from([0]))); // pathLen only: cA defaults to false
    const ku2 = Buffer.from('03020204', 'hex'); // keyCertSign only
    expect(readCertificateFacts(withExtensions(ext(OIDS.basicConstraints, leafBc), ext(OIDS.keyUsage, ku2))))
      .toMatchObject({ isCa: false, keyUsage: { digitalSignature: false, keyCertSign: true, cRLSign: false } });
  });

  it.each<[string, () => Buffer, string]>([
    [
      'missing subjectPublicKeyInfo',
      () => certificate(fields().slice(0, 6)),
      'certificate: invalid DER: missing subjectPublicKeyInfo (SEQUENCE) (at byte 60)',
    ],
    [
      'an element after the extensions',
      () => certificate([...fields(), derTlv(0xa3, seq()), derTlv(0x02, Buffer.from([1]))]),
      'certificate: invalid DER: unexpected INTEGER in tbsCertificate (at byte 66)',
    ],
    [
      'validity with one time',
      () => certificate(fields().map((f, i) => (i === 4 ? seq(utc('240101000000Z')) : f))),
      'certificate: invalid DER: validity has 1 elements; expected 2 (at byte 26)',
    ],
    [
      'an Extension with 4 elements',
      () => withExtensions(seq(oid(OIDS.eku), derTlv(0x01, Buffer.from([0])), derTlv(0x04, seq()), derTlv(0x04, seq()))),
      'certificate: invalid DER: Extension 2.5.29.37 has 4 elements; expected 2 or 3 (at byte 66)',
    ],
    [
      'extensions [3] with two lists',
      () => certificate([...fields(), derTlv(0xa3, seq(), seq())]),
      'certificate: invalid DER: extensions [3] holds more than one element (at byte 62)',
    ],
    [
      'an extnValue that is not an OCTET STRING',
      () => withExtensions(seq(oid(OIDS.eku), seq())),
      'certificate: invalid DER: extnValue of 2.5.29.37: expected OCTET STRING, found SEQUENCE (at byte 73)',
    ],
    [
      'a v1 certificate (no version field) with extensions',
      () => certificate([...fields().slice(1), derTlv(0xa3, seq())]),
      'certificate: a v1 certificate carries extensions (only v3 may: RFC 5280 §4.1.2.9)',
    ],
    [
      'a v2 certificate with extensions',
      () => certificate([derTlv(0xa0, derTlv(0x02, Buffer.from([1]))), ...fields().slice(1), derTlv(0xa3, seq())]),
      'certificate: a v2 certificate carries extensions (only v3 may: RFC 5280 §4.1.2.9)',
    ],
    ...[0, 3, 5].map((v): [string, () => Buffer, string] => [
      `version INTEGER ${v}`,
      () => certificate([derTlv(0xa0, derTlv(0x02, Buffer.from([v]))), ...fields().slice(1)]),
      'certificate: version is not v2 or v3 (INTEGER 1 or 2; v1 is encoded by leaving it out)',
    ]),
    [
      'a version of two octets',
      () => certificate([derTlv(0xa0, derTlv(0x02, Buffer.from([0, 2]))), ...fields().slice(1)]),
      'certificate: version is not v2 or v3 (INTEGER 1 or 2; v1 is encoded by leaving it out)',
    ],
    [
      'a certificate without signature',
      () => seq(seq(...fields()), seq(oid('2a8648ce3d040302'))),
      'certificate: invalid DER: Certificate has 2 elements; expected 3 (at byte 0)',
    ],
  ])('rejects %s', (_what, build, message) => {
    expect(malformedMessage(build())).toBe(message);
  });

  it('v1 and v2 certificates without extensions are read (their facts: none)', () => {
    expect(readCertificateFacts(certificate(fields().slice(1))).uriSans).toEqual([]);
    expect(readCertificateFacts(certificate([derTlv(0xa0, derTlv(0x02, Buffer.from([1]))), ...fields().slice(1)])).isCa).toBe(false);
  });

  it('DER our walk accepts but OpenSSL rejects (an empty subjectPublicKeyInfo) is malformed_certificate', () => {
    const err = denial(() => parseSvidLeaf(certificate(fields())));
    expect(err.code).toBe('malformed_certificate');
    expect(err.message.startsWith('certificate: OpenSSL rejects it (')).toBe(true);
  });
});

describe('SvidCache', () => {
  const frontend = fixture('svid-frontend').envoy_url_encoded_pem;
  const backend = fixture('svid-backend').envoy_url_encoded_pem;
  const multi = fixture('svid-multi-uri').envoy_url_encoded_pem;

  function counting(): { load: (s: string) => SvidLeaf; calls: string[] } {
    const calls: string[] = [];
    return {
      calls,
      load: (s) => {
        calls.push(s);
        return svidFromEnvoyCertificate(s);
      },
    };
  }

  it('parses a certificate once and returns the same leaf on hits', () => {
    const { load, calls } = counting();
    const cache = new SvidCache(10, load);
    const first = cache.get(frontend);
    expect(first.spiffeId.uri).toBe('spiffe://example.org/ns/default/sa/frontend');
    expect(cache.get(frontend)).toBe(first);
    expect(cache.get(frontend)).toBe(first);
    expect(calls).toHaveLength(1);
    expect(cache.size).toBe(1);
  });

  it('caches the DenyError of a structurally invalid certificate', () => {
    const { load, calls } = counting();
    const cache = new SvidCache(10, load);
    const first = denial(() => cache.get(multi));
    expect(first.code).toBe('svid_multiple_uri_sans');
    expect(denial(() => cache.get(multi))).toBe(first);
    expectDeny(() => cache.get('%ZZ'), 'malformed_certificate', 'certificate: source.certificate has invalid percent-encoding');
    expect(denial(() => cache.get('%ZZ')).code).toBe('malformed_certificate');
    expect(calls).toEqual([multi, '%ZZ']);
    expect(cache.size).toBe(2);
  });

  it('evicts the least recently used entry; a hit refreshes it', () => {
    const { load, calls } = counting();
    const cache = new SvidCache(2, load);
    cache.get(frontend);
    cache.get(backend);
    cache.get(frontend); // frontend is now the most recent
    expect(() => cache.get(multi)).toThrow(DenyError); // evicts backend
    expect(cache.size).toBe(2);
    cache.get(frontend);
    expect(calls).toEqual([frontend, backend, multi]);
    cache.get(backend);
    expect(calls).toEqual([frontend, backend, multi, backend]);
    expect(cache.size).toBe(2);
    cache.clear();
    expect(cache.size).toBe(0);
  });

  it('keys by the exact string', () => {
    const { load, calls } = counting();
    const cache = new SvidCache(10, load);
    const a = cache.get(frontend);
    const lowerHex = frontend.replace(/%2B/g, '%2b');
    expect(lowerHex).not.toBe(frontend);
    const b = cache.get(lowerHex);
    expect(b.spiffeId.equals(a.spiffeId)).toBe(true);
    expect(calls).toHaveLength(2);
  });

  it('two certificates that end alike (the same cache slot) never share an outcome', () => {
    const { load, calls } = counting();
    const cache = new SvidCache(10, load);
    const forged = `%25${frontend.slice(3)}`; // same length and last 128 characters, another first byte
    expect(forged.slice(-128)).toBe(frontend.slice(-128));
    const leaf = cache.get(frontend);
    expect(leaf.spiffeId.uri).toBe('spiffe://example.org/ns/default/sa/frontend');
    expect(denial(() => cache.get(forged)).code).toBe('malformed_certificate');
    expect(cache.size).toBe(1); // the forged string replaced the slot
    const again = cache.get(frontend); // parsed again, not the forged outcome
    expect(again.spiffeId.uri).toBe('spiffe://example.org/ns/default/sa/frontend');
    expect(calls).toEqual([frontend, forged, frontend]);
    expect(cache.get(frontend)).toBe(again);
    expect(calls).toHaveLength(3);
    // short strings are their own key
    expect(denial(() => cache.get('%ZZ')).code).toBe('malformed_certificate');
    expect(denial(() => cache.get('%ZY')).code).toBe('malformed_certificate');
    expect(calls).toEqual([frontend, forged, frontend, '%ZZ', '%ZY']);
    expect(cache.size).toBe(3);
  });

  it('does not cache oversized strings or unexpected errors', () => {
    const huge = 'A'.repeat(MAX_ENVOY_CERTIFICATE_LENGTH + 1);
    const cache = new SvidCache(10);
    expect(denial(() => cache.get(huge)).code).toBe('malformed_certificate');
    expect(cache.size).toBe(0);
    let calls = 0;
    const buggy = new SvidCache(10, () => {
      calls++;
      throw new RangeError('bug');
    });
    expect(() => buggy.get(frontend)).toThrow(RangeError);
    expect(() => buggy.get(frontend)).toThrow(RangeError);
    expect(calls).toBe(2);
    expect(buggy.size).toBe(0);
  });

  it('rejects a bad size as a programmer error', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      expect(() => new SvidCache(bad)).toThrow(TypeError);
    }
  });

  it('a hit is cheap (no parsing)', () => {
    const cache = new SvidCache(1000);
    cache.get(frontend);
    const n = 100_000;
    const started = performance.now();
    for (let i = 0; i < n; i++) cache.get(frontend);
    const perHitUs = ((performance.now() - started) * 1000) / n;
    expect(perHitUs).toBeLessThan(20); // ~1 µs measured; a parse would be ~300 µs
  });
});
