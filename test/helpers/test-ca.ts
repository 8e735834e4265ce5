/**
 * A throw-away SPIFFE test PKI for chio-authz tests: root and intermediate CAs and X509-SVID
 * leaves (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md), built with
 * @peculiar/x509's `X509CertificateGenerator` and WebCrypto ECDSA P-256 (node's `crypto.webcrypto`).
 * Test-only: never import this from src/.
 *
 * Defaults make a standards-conforming PKI; every default can be overridden to mint a broken
 * certificate on purpose:
 * - a CA has subject `CN=<name>,O=chio test`, URI SAN `spiffe://<trustDomain>` (X509-SVID §3.2),
 *   critical basicConstraints cA=true, critical keyUsage keyCertSign+cRLSign, SKI and AKI;
 * - a leaf has an empty subject, a critical SAN with one URI `spiffe://<trustDomain>/workload`,
 *   critical basicConstraints cA=false, critical keyUsage digitalSignature, EKU serverAuth+clientAuth;
 * - validity is fixed ({@link DEFAULT_NOT_BEFORE}..{@link DEFAULT_NOT_AFTER}) so tests are
 *   deterministic: decide at {@link TEST_NOW} (inside it), not at `Date.now()`.
 *
 * Example:
 * ```ts
 * const root = await createRootCa({ trustDomain: 'prod.chio' });
 * const inter = await createIntermediateCa(root);
 * const svid = await issueSvid(inter, { uris: ['spiffe://prod.chio/payments/worker'] });
 * svid.envoyEncoded  // what Envoy puts in attributes.source.certificate
 * svid.chainPem      // leaf + intermediate, as a workload presents it; root.pem is the bundle
 * ```
 * Costs a few ms per certificate (key generation + signing); create CAs once per test file.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto, X509Certificate } from 'node:crypto';

x509.cryptoProvider.set(webcrypto);

export type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** The key and signature algorithm of every test certificate. */
export const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** Default validity of every test certificate (fixed, so results do not depend on the clock). */
export const DEFAULT_NOT_BEFORE = new Date('2025-01-01T00:00:00Z');
export const DEFAULT_NOT_AFTER = new Date('2045-01-01T00:00:00Z');
/** A decision time (ms) inside the default validity. */
export const TEST_NOW = Date.parse('2030-06-15T12:00:00Z');

export interface TestCa {
  /** node:crypto view, e.g. for `leaf.checkIssued(ca.cert)` / `leaf.verify(ca.cert.publicKey)`. */
  readonly cert: X509Certificate;
  /** PEM with `\n` line breaks and a final `\n`. */
  readonly pem: string;
  readonly der: Buffer;
  readonly keys: CryptoKeyPair;
  readonly trustDomain: string;
  /** The CN of the subject. */
  readonly name: string;
  /** The subject as given to the generator (`CN=<name>,O=chio test`); issued certificates use it as issuer. */
  readonly subject: string;
  /** The issuing CA; undefined for a root. */
  readonly parent: TestCa | undefined;
}

export interface CaOptions {
  /** Default: `example.org` for a root, the parent's for an intermediate. */
  trustDomain?: string;
  /** Default: `Test Root CA` / `Test Intermediate CA`. */
  name?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** URI SAN of the CA; default `spiffe://<trustDomain>`; null omits the SAN extension. */
  uri?: string | null;
  /** basicConstraints pathLenConstraint; default none. */
  pathLength?: number;
  /** Reuse a key pair instead of generating one. */
  keys?: CryptoKeyPair;
  /** Extra extensions appended as-is (nameConstraints, unknown critical ones: see `rawExtension`). */
  extensions?: x509.Extension[];
}

export type KeyUsageName = 'digitalSignature' | 'keyCertSign' | 'cRLSign' | 'keyEncipherment' | 'keyAgreement';

export interface SvidOptions {
  /** URI SANs; default `[spiffe://<issuer trust domain>/workload]`. `[]` for none. */
  uris?: string[];
  /** DNS SANs; default none. With no URI and no DNS name the SAN extension is omitted. */
  dns?: string[];
  /** Whether the SAN extension is critical; default true (X509-SVID §3.1 with an empty subject). */
  sanCritical?: boolean;
  notBefore?: Date;
  notAfter?: Date;
  /** basicConstraints cA; default false; null omits the extension. */
  ca?: boolean | null;
  /** keyUsage bits; default `['digitalSignature']`; null omits the extension. */
  keyUsage?: KeyUsageName[] | null;
  /** RFC 4514 subject, e.g. `CN=legacy,O=Example`; default empty. */
  subject?: string;
  /** Reuse a key pair instead of generating one. */
  keys?: CryptoKeyPair;
  /** Extra extensions appended as-is (raw or duplicate extensions, see `rawExtension`). */
  extensions?: x509.Extension[];
}

export interface IssuedSvid {
  /** PEM with `\n` line breaks and a final `\n` (exactly what Envoy URL-encodes). */
  readonly pem: string;
  readonly der: Buffer;
  /** The leaf PEM as Envoy sends it in `attributes.source.certificate`. */
  readonly envoyEncoded: string;
  readonly keys: CryptoKeyPair;
  readonly x509: X509Certificate;
  /** Leaf then the issuer's intermediates (root excluded), leaf first. */
  readonly chain: readonly X509Certificate[];
  /** `chain` as concatenated PEM. */
  readonly chainPem: string;
}

const KEY_USAGE_FLAGS: Readonly<Record<KeyUsageName, x509.KeyUsageFlags>> = {
  digitalSignature: x509.KeyUsageFlags.digitalSignature,
  keyCertSign: x509.KeyUsageFlags.keyCertSign,
  cRLSign: x509.KeyUsageFlags.cRLSign,
  keyEncipherment: x509.KeyUsageFlags.keyEncipherment,
  keyAgreement: x509.KeyUsageFlags.keyAgreement,
};

/** Envoy's exact encoding of `source.certificate`: `\n`→%0A, ` `→%20, `+`→%2B, `/`→%2F, `=`→%3D. */
export function envoyUrlEncode(pem: string): string {
  return pem.replace(/[\n +/=]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** A fresh ECDSA P-256 key pair. */
export async function generateKeys(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(ECDSA_P256, true, ['sign', 'verify']);
}

/** An extension with a hand-made DER value (see `derTlv`). */
export function rawExtension(oid: string, critical: boolean, value: Uint8Array): x509.Extension {
  return new x509.Extension(oid, critical, value);
}

/** One DER element: identifier octet `tag`, definite length, the concatenated `contents`. */
export function derTlv(tag: number, ...contents: Uint8Array[]): Buffer {
  const body = Buffer.concat(contents);
  const n = body.length;
  let header: number[];
  if (n < 0x80) header = [tag, n];
  else if (n < 0x100) header = [tag, 0x81, n];
  else if (n < 0x10000) header = [tag, 0x82, n >> 8, n & 0xff];
  else throw new TypeError(`derTlv: ${n} bytes is more than this helper encodes`);
  return Buffer.concat([Buffer.from(header), body]);
}

/** The CA itself, then its ancestors; the root is last. */
export function caChain(ca: TestCa): TestCa[] {
  const out: TestCa[] = [];
  for (let at: TestCa | undefined = ca; at !== undefined; at = at.parent) out.push(at);
  return out;
}

function pemOf(cert: x509.X509Certificate): string {
  return `${cert.toString('pem').replace(/\r\n/g, '\n').trimEnd()}\n`;
}

async function caExtensions(
  keys: CryptoKeyPair,
  issuerKeys: CryptoKeyPair,
  trustDomain: string,
  opts: CaOptions,
): Promise<x509.Extension[]> {
  const uri = opts.uri === undefined ? `spiffe://${trustDomain}` : opts.uri;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, opts.pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuerKeys.publicKey),
  ];
  if (uri !== null) extensions.push(new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }], false));
  return [...extensions, ...(opts.extensions ?? [])];
}

async function createCa(parent: TestCa | undefined, opts: CaOptions, defaultName: string): Promise<TestCa> {
  const trustDomain = opts.trustDomain ?? parent?.trustDomain ?? 'example.org';
  const name = opts.name ?? defaultName;
  const keys = opts.keys ?? (await generateKeys());
  const issuerKeys = parent?.keys ?? keys;
  const subject = `CN=${name},O=chio test`;
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer: parent?.subject ?? subject,
    notBefore: opts.notBefore ?? DEFAULT_NOT_BEFORE,
    notAfter: opts.notAfter ?? DEFAULT_NOT_AFTER,
    publicKey: keys.publicKey,
    signingKey: issuerKeys.privateKey,
    signingAlgorithm: ECDSA_P256,
    extensions: await caExtensions(keys, issuerKeys, trustDomain, opts),
  });
  const der = Buffer.from(cert.rawData);
  return { cert: new X509Certificate(der), pem: pemOf(cert), der, keys, trustDomain, name, subject, parent };
}

/** A self-signed root CA of a trust domain (default `example.org`). */
export async function createRootCa(opts: CaOptions = {}): Promise<TestCa> {
  return createCa(undefined, opts, 'Test Root CA');
}

/** An intermediate CA signed by `parent`, in the parent's trust domain unless told otherwise. */
export async function createIntermediateCa(parent: TestCa, opts: CaOptions = {}): Promise<TestCa> {
  return createCa(parent, opts, 'Test Intermediate CA');
}

function keyUsageFlags(names: readonly KeyUsageName[]): x509.KeyUsageFlags {
  return names.reduce<number>((flags, name) => flags | KEY_USAGE_FLAGS[name], 0);
}

async function leafExtensions(issuer: TestCa, opts: SvidOptions): Promise<x509.Extension[]> {
  const uris = opts.uris ?? [`spiffe://${issuer.trustDomain}/workload`];
  const dns = opts.dns ?? [];
  const extensions: x509.Extension[] = [];
  if (opts.ca !== null) extensions.push(new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true));
  if (opts.keyUsage !== null) {
    extensions.push(new x509.KeyUsagesExtension(keyUsageFlags(opts.keyUsage ?? ['digitalSignature']), true));
  }
  const { serverAuth, clientAuth } = x509.ExtendedKeyUsage;
  extensions.push(new x509.ExtendedKeyUsageExtension([serverAuth, clientAuth]));
  extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey));
  const names = [
    ...uris.map((value) => ({ type: 'url' as const, value })),
    ...dns.map((value) => ({ type: 'dns' as const, value })),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, opts.sanCritical ?? true));
  return [...extensions, ...(opts.extensions ?? [])];
}

/** An X509-SVID leaf signed by `issuer`; see {@link SvidOptions} for how to break it on purpose. */
export async function issueSvid(issuer: TestCa, opts: SvidOptions = {}): Promise<IssuedSvid> {
  const keys = opts.keys ?? (await generateKeys());
  const cert = await x509.X509CertificateGenerator.create({
    subject: opts.subject ?? '',
    issuer: issuer.subject,
    notBefore: opts.notBefore ?? DEFAULT_NOT_BEFORE,
    notAfter: opts.notAfter ?? DEFAULT_NOT_AFTER,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: ECDSA_P256,
    extensions: await leafExtensions(issuer, opts),
  });
  const der = Buffer.from(cert.rawData);
  const pem = pemOf(cert);
  const leaf = new X509Certificate(der);
  const intermediates = caChain(issuer).filter((ca) => ca.parent !== undefined);
  return {
    pem,
    der,
    envoyEncoded: envoyUrlEncode(pem),
    keys,
    x509: leaf,
    chain: [leaf, ...intermediates.map((ca) => ca.cert)],
    chainPem: [pem, ...intermediates.map((ca) => ca.pem)].join(''),
  };
}

/** One base name of a name-constraint subtree (RFC 5280 §4.2.1.10). */
export type ConstraintName =
  | { readonly uri: string }
  | { readonly dns: string }
  /** an empty directoryName (a kind chio does not process) */
  | { readonly directoryName: true }
  /** an iPAddress range: 4-byte address + 4-byte mask */
  | { readonly ip: string };

function constraintBase(name: ConstraintName): Buffer {
  if ('uri' in name) return derTlv(0x86, Buffer.from(name.uri, 'latin1'));
  if ('dns' in name) return derTlv(0x82, Buffer.from(name.dns, 'latin1'));
  if ('ip' in name) return derTlv(0x87, Buffer.from(name.ip, 'hex'));
  return derTlv(0xa4, derTlv(0x30));
}

/**
 * A nameConstraints extension (OID 2.5.29.30) with DER built by hand: `permitted` / `excluded`
 * subtrees (omitted when empty); `withMinimum` adds `minimum [0] 1` to every subtree.
 */
export function nameConstraintsExtension(
  subtrees: { permitted?: readonly ConstraintName[]; excluded?: readonly ConstraintName[]; withMinimum?: boolean },
  critical = true,
): x509.Extension {
  const subtree = (n: ConstraintName): Buffer =>
    derTlv(0x30, constraintBase(n), ...(subtrees.withMinimum === true ? [derTlv(0x80, Buffer.from([1]))] : []));
  const parts: Buffer[] = [];
  if ((subtrees.permitted ?? []).length > 0) parts.push(derTlv(0xa0, ...(subtrees.permitted ?? []).map(subtree)));
  if ((subtrees.excluded ?? []).length > 0) parts.push(derTlv(0xa1, ...(subtrees.excluded ?? []).map(subtree)));
  return rawExtension('2.5.29.30', critical, derTlv(0x30, ...parts));
}
