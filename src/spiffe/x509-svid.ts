/**
 * X.509-SVID leaf validation (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md
 * §2, §3.1, §4.1, §4.3, §5.2; RFC 5280 §4.1, §4.2.1.3, §4.2.1.6, §4.2.1.9) and the certificate
 * cache of the Check path (SPEC §3, §4).
 *
 * Envoy sends the peer leaf as `attributes.source.certificate`: a PEM URL-encoded with exactly
 * `\n`→%0A, ` `→%20, `+`→%2B, `/`→%2F, `=`→%3D. We decode it, require exactly one CERTIFICATE
 * block with canonical base64, then:
 * - walk the DER ourselves (der.ts) for the subjectAltName, basicConstraints and keyUsage
 *   extensions, because node's `subjectAltName` string is ambiguous for attacker-chosen values
 *   and node does not expose keyUsage bits;
 * - parse with node:crypto `X509Certificate` too, so the certificate is one OpenSSL accepts and
 *   chain verification has it ready.
 * Parsing costs ~0.3 ms, so `SvidCache` does it once per distinct certificate string.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { deny, DenyError } from '../errors.js';
import { contextTag, DerError, DerReader, DerTag, tagName, type Tlv } from './der.js';
import { quoteUntrusted, SpiffeId } from './id.js';
import { OID_NAME_CONSTRAINTS, readNameConstraints, type NameConstraints } from './name-constraints.js';

/** What the Check path needs from a peer certificate, computed once per distinct certificate. */
export interface SvidLeaf {
  readonly spiffeId: SpiffeId;
  /** ms since epoch */
  readonly notBefore: number;
  /** ms since epoch */
  readonly notAfter: number;
  /** lower-case hex SHA-256 of the DER (the XFCC `Hash=`) */
  readonly sha256: string;
  /** DNS SANs (latin1), which a CA's nameConstraints also bound */
  readonly dnsSans: readonly string[];
  readonly der: Buffer;
  /**
   * node:crypto view, for chain verification: parsed again at each access, not kept. An
   * X509Certificate holds OpenSSL memory that V8 does not see; 10,000 of them retained by the SVID
   * cache (and evicted under churn) let RSS reach ~460 MiB before V8 collected them. Chain results
   * are cached per leaf, so this runs once per distinct SVID and bundle generation.
   */
  readonly x509: X509Certificate;
}

/** keyUsage bits X509-SVID §4.3 cares about (RFC 5280 §4.2.1.3 bit numbers). */
export interface KeyUsageBits {
  /** bit 0 */
  readonly digitalSignature: boolean;
  /** bit 5 */
  readonly keyCertSign: boolean;
  /** bit 6 */
  readonly cRLSign: boolean;
}

/** The facts of a certificate read from its DER, before any X509-SVID rule is applied. */
export interface CertificateFacts {
  /** Whether a subjectAltName extension is present. */
  readonly hasSubjectAltName: boolean;
  /** URI SANs, one character per byte (latin1) so that non-ASCII bytes stay visible. */
  readonly uriSans: readonly string[];
  /** DNS SANs, one character per byte (latin1). */
  readonly dnsSans: readonly string[];
  /** basicConstraints cA (false when the extension is absent). */
  readonly isCa: boolean;
  /** basicConstraints pathLenConstraint (RFC 5280 §4.2.1.9), null when absent. */
  readonly pathLen: number | null;
  /** null when the keyUsage extension is absent. */
  readonly keyUsage: KeyUsageBits | null;
  /** OIDs of the extensions marked critical, in certificate order */
  readonly criticalExtensions: readonly string[];
  /** the nameConstraints extension (RFC 5280 §4.2.1.10), null when absent */
  readonly nameConstraints: NameConstraints | null;
  /** ms since epoch */
  readonly notBefore: number;
  /** ms since epoch */
  readonly notAfter: number;
}

/** Longest `source.certificate` accepted (a leaf PEM is ~1–3 KB; this also bounds cache keys). */
export const MAX_ENVOY_CERTIFICATE_LENGTH = 32 * 1024;

const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';

const TAG_VERSION = contextTag(0, true);
const TAG_ISSUER_UID = contextTag(1, false);
const TAG_SUBJECT_UID = contextTag(2, false);
const TAG_EXTENSIONS = contextTag(3, true);
const TAG_SAN_DNS = contextTag(2, false);
const TAG_SAN_URI = contextTag(6, false);
/** BER constructed forms of the two string names: never valid DER. */
const TAG_SAN_DNS_CONSTRUCTED = contextTag(2, true);
const TAG_SAN_URI_CONSTRUCTED = contextTag(6, true);

const PEM_BEGIN = '-----BEGIN CERTIFICATE-----';
const PEM_END = '-----END CERTIFICATE-----';
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function malformed(message: string, cause?: unknown): DenyError {
  return deny('malformed_certificate', `certificate: ${message}`, cause === undefined ? undefined : { cause });
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/**
 * Envoy's `source.certificate` (URL-encoded PEM, leaf only) → the leaf's DER.
 * Throws DenyError('malformed_certificate').
 */
export function decodeEnvoyCertificate(urlEncodedPem: string): Buffer {
  if (typeof urlEncodedPem !== 'string') throw new TypeError('source.certificate must be a string');
  if (urlEncodedPem.length > MAX_ENVOY_CERTIFICATE_LENGTH) {
    throw malformed(
      `source.certificate is ${urlEncodedPem.length} characters; the maximum is ${MAX_ENVOY_CERTIFICATE_LENGTH}`,
    );
  }
  let pem: string;
  try {
    pem = decodeURIComponent(urlEncodedPem);
  } catch (err) {
    throw malformed('source.certificate has invalid percent-encoding', err);
  }
  return Buffer.from(singleCertificateBase64(pem), 'base64');
}

/** The base64 body of the one CERTIFICATE block that must make up all of `pem`. */
function singleCertificateBase64(pem: string): string {
  if (!pem.startsWith(PEM_BEGIN)) {
    return notPem(pem);
  }
  const endAt = pem.indexOf(PEM_END, PEM_BEGIN.length);
  if (endAt === -1) throw malformed(`PEM has no "${PEM_END}" line`);
  if (pem.indexOf('-----BEGIN', PEM_BEGIN.length) !== -1) {
    throw malformed('PEM holds more than one block; expected exactly one certificate (the leaf)');
  }
  const tail = pem.slice(endAt + PEM_END.length);
  if (tail !== '' && tail !== '\n' && tail !== '\r\n') {
    throw malformed(`PEM has ${tail.length} characters after "${PEM_END}"`);
  }
  const body = pem.slice(PEM_BEGIN.length, endAt);
  if (!body.startsWith('\n') && !body.startsWith('\r\n')) {
    throw malformed(`PEM "${PEM_BEGIN}" must be followed by a line break`);
  }
  const base64 = body.replace(/\r?\n/g, '');
  if (base64.length % 4 !== 0 || !BASE64.test(base64)) {
    throw malformed('PEM body is not valid base64');
  }
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.toString('base64') !== base64) throw malformed('PEM body is not canonical base64');
  return base64;
}

function notPem(pem: string): never {
  const label = /^-----BEGIN ([A-Z0-9 ]{1,40})-----/.exec(pem)?.[1];
  if (label !== undefined) throw malformed(`PEM block is "${label}"; expected "CERTIFICATE"`);
  throw malformed(`not a PEM certificate: does not start with "${PEM_BEGIN}"`);
}

/**
 * Reads the certificate facts X509-SVID validation needs from the DER, strictly.
 * Throws DenyError('malformed_certificate') for anything that is not a well-formed certificate,
 * including duplicate extensions (RFC 5280 §4.2).
 */
export function readCertificateFacts(der: Uint8Array): CertificateFacts {
  try {
    return walkCertificate(new DerReader(der));
  } catch (err) {
    if (err instanceof DerError) throw malformed(`invalid DER: ${err.message}`, err);
    throw err;
  }
}

interface ExtensionFacts {
  hasSubjectAltName: boolean;
  uriSans: string[];
  dnsSans: string[];
  isCa: boolean;
  pathLen: number | null;
  keyUsage: KeyUsageBits | null;
  criticalExtensions: string[];
  nameConstraints: NameConstraints | null;
}

function walkCertificate(r: DerReader): CertificateFacts {
  const certificate = r.expect(r.root(), DerTag.SEQUENCE, 'Certificate');
  const parts = r.children(certificate);
  if (parts.length !== 3) {
    throw new DerError(`Certificate has ${parts.length} elements; expected 3`, certificate.offset);
  }
  const tbs = r.expect(parts[0], DerTag.SEQUENCE, 'tbsCertificate');
  r.expect(parts[1], DerTag.SEQUENCE, 'signatureAlgorithm');
  r.expect(parts[2], DerTag.BIT_STRING, 'signatureValue');

  const fields = r.children(tbs);
  let at = 0;
  const next = (tag: number, what: string): Tlv => r.expect(fields[at++], tag, what, tbs.end);
  const optional = (tag: number): Tlv | undefined => (fields[at]?.tag === tag ? fields[at++] : undefined);
  const versionField = optional(TAG_VERSION);
  const version = versionField === undefined ? 1 : certificateVersion(r, versionField);
  next(DerTag.INTEGER, 'serialNumber');
  next(DerTag.SEQUENCE, 'signature');
  next(DerTag.SEQUENCE, 'issuer');
  const validity = next(DerTag.SEQUENCE, 'validity');
  next(DerTag.SEQUENCE, 'subject');
  next(DerTag.SEQUENCE, 'subjectPublicKeyInfo');
  optional(TAG_ISSUER_UID);
  optional(TAG_SUBJECT_UID);
  const extensions = optional(TAG_EXTENSIONS);
  const extra = fields[at];
  if (extra !== undefined) throw new DerError(`unexpected ${tagName(extra.tag)} in tbsCertificate`, extra.offset);
  // RFC 5280 §4.1.2.9: extensions only in v3; a v1 or v2 certificate's are not read (Go's crypto/x509 ignores them)
  if (extensions !== undefined && version !== 3) throw malformed(`a v${version} certificate carries extensions (only v3 may: RFC 5280 §4.1.2.9)`);

  const times = r.children(validity);
  if (times.length !== 2) throw new DerError(`validity has ${times.length} elements; expected 2`, validity.offset);
  const notBefore = r.time(times[0] as Tlv);
  const notAfter = r.time(times[1] as Tlv);
  return { ...readExtensions(r, extensions), notBefore, notAfter };
}

/**
 * `[0] EXPLICIT Version DEFAULT v1` (RFC 5280 §4.1.2.1) as 2 or 3: DER omits the default, so an
 * encoded v1, or any value above v3, is malformed.
 */
function certificateVersion(r: DerReader, field: Tlv): number {
  const bytes = r.contents(r.expect(r.wrapped(field), DerTag.INTEGER, 'version'));
  const value = bytes.length === 1 ? (bytes[0] as number) : -1;
  if (value !== 1 && value !== 2) throw malformed(`version is not v2 or v3 (INTEGER 1 or 2; v1 is encoded by leaving it out)`);
  return value + 1;
}

function readExtensions(r: DerReader, wrapper: Tlv | undefined): ExtensionFacts {
  const facts: ExtensionFacts = { hasSubjectAltName: false, uriSans: [], dnsSans: [], isCa: false, pathLen: null, keyUsage: null, criticalExtensions: [], nameConstraints: null };
  if (wrapper === undefined) return facts;
  const [list, ...rest] = r.children(wrapper);
  if (rest.length > 0) throw new DerError('extensions [3] holds more than one element', wrapper.offset);
  const seen = new Set<string>();
  for (const extension of r.children(r.expect(list, DerTag.SEQUENCE, 'Extensions', wrapper.end))) {
    const { oid, critical, value } = readExtension(r, extension);
    if (seen.has(oid)) throw malformed(`extension ${oid} appears more than once`);
    seen.add(oid);
    if (critical) facts.criticalExtensions.push(oid);
    if (oid === OID_SUBJECT_ALT_NAME) {
      facts.hasSubjectAltName = true;
      readSubjectAltNames(r, r.wrapped(value), facts);
    } else if (oid === OID_BASIC_CONSTRAINTS) {
      ({ isCa: facts.isCa, pathLen: facts.pathLen } = readBasicConstraints(r, r.wrapped(value)));
    } else if (oid === OID_KEY_USAGE) {
      facts.keyUsage = readKeyUsage(r, r.wrapped(value));
    } else if (oid === OID_NAME_CONSTRAINTS) {
      facts.nameConstraints = readNameConstraints(r, r.wrapped(value), critical);
    }
  }
  return facts;
}

/** Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
function readExtension(r: DerReader, extension: Tlv): { oid: string; critical: boolean; value: Tlv } {
  const parts = r.children(r.expect(extension, DerTag.SEQUENCE, 'Extension'));
  const oid = r.oid(r.expect(parts[0], DerTag.OBJECT_IDENTIFIER, 'extnID', extension.end));
  let critical = false;
  if (parts.length === 3) {
    critical = r.boolean(parts[1] as Tlv);
  } else if (parts.length !== 2) {
    throw new DerError(`Extension ${oid} has ${parts.length} elements; expected 2 or 3`, extension.offset);
  }
  return { oid, critical, value: r.expect(parts[parts.length - 1], DerTag.OCTET_STRING, `extnValue of ${oid}`) };
}

/** GeneralNames (RFC 5280 §4.2.1.6): collects [6] uniformResourceIdentifier and [2] dNSName. */
function readSubjectAltNames(r: DerReader, names: Tlv, facts: ExtensionFacts): void {
  for (const name of r.children(r.expect(names, DerTag.SEQUENCE, 'GeneralNames'))) {
    if (name.tag === TAG_SAN_URI) facts.uriSans.push(Buffer.from(r.contents(name)).toString('latin1'));
    else if (name.tag === TAG_SAN_DNS) facts.dnsSans.push(Buffer.from(r.contents(name)).toString('latin1'));
    else if (name.tag === TAG_SAN_URI_CONSTRUCTED || name.tag === TAG_SAN_DNS_CONSTRUCTED) {
      throw new DerError('constructed string in a GeneralName is not DER', name.offset);
    }
  }
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL } */
function readBasicConstraints(r: DerReader, value: Tlv): { isCa: boolean; pathLen: number | null } {
  const parts = r.children(r.expect(value, DerTag.SEQUENCE, 'BasicConstraints'));
  let at = 0;
  const first = parts[0];
  const isCa = first?.tag === DerTag.BOOLEAN ? r.boolean(parts[at++] as Tlv) : false;
  const integer = parts[at]?.tag === DerTag.INTEGER ? parts[at++] : undefined;
  // anything else (a cA after pathLenConstraint, a third element) is not a BasicConstraints: never read as cA=false
  const extra = parts[at];
  if (extra !== undefined) throw new DerError(`unexpected ${tagName(extra.tag)} in BasicConstraints`, extra.offset);
  return { isCa, pathLen: integer === undefined ? null : smallInteger(r.contents(integer)) };
}

function smallInteger(bytes: Uint8Array): number {
  if (bytes.length === 0 || bytes.length > 4 || ((bytes[0] ?? 0) & 0x80) !== 0) {
    throw malformed('pathLenConstraint is not a small non-negative INTEGER');
  }
  return bytes.reduce((n, b) => n * 256 + b, 0);
}

/** KeyUsage ::= BIT STRING; bit n is the (n mod 8)-th most significant bit of octet n/8. */
function readKeyUsage(r: DerReader, value: Tlv): KeyUsageBits {
  const { bytes } = r.bitString(value);
  const bit = (n: number): boolean => (((bytes[n >> 3] ?? 0) << (n & 7)) & 0x80) !== 0;
  return { digitalSignature: bit(0), keyCertSign: bit(5), cRLSign: bit(6) };
}

function parseWithNode(der: Buffer): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch (err) {
    throw malformed(`OpenSSL rejects it (${err instanceof Error ? err.message : String(err)})`, err);
  }
}

const EXACTLY_ONE_URI_SAN = 'an X509-SVID has exactly one URI SAN';

/** X509-SVID §2: the one URI SAN; DNS SANs alone do not make an SVID. */
function theUriSan(facts: CertificateFacts): string {
  const { uriSans, dnsSans } = facts;
  if (!facts.hasSubjectAltName) {
    throw deny('svid_no_uri_san', `certificate has no subjectAltName extension; ${EXACTLY_ONE_URI_SAN}`);
  }
  if (uriSans.length === 0 && dnsSans.length === 0) {
    throw deny('svid_no_uri_san', `certificate subjectAltName has no URI and no DNS name; ${EXACTLY_ONE_URI_SAN}`);
  }
  if (uriSans.length === 0) {
    const dns = plural(dnsSans.length, 'DNS SAN');
    throw deny('svid_dns_san_only', `certificate has ${dns} but no URI SAN; ${EXACTLY_ONE_URI_SAN}`);
  }
  if (uriSans.length > 1) {
    throw deny('svid_multiple_uri_sans', `certificate has ${uriSans.length} URI SANs; an X509-SVID has exactly one`);
  }
  return uriSans[0] as string;
}

/** The URI SAN as a SPIFFE ID: ASCII only (IA5String), then the SPIFFE-ID rules. */
function uriSanSpiffeId(uri: string): SpiffeId {
  for (let i = 0; i < uri.length; i++) {
    const code = uri.charCodeAt(i);
    if (code > 0x7f) {
      const byte = `0x${code.toString(16)}`;
      throw deny('malformed_spiffe_id', `certificate URI SAN has a non-ASCII byte ${byte} at offset ${i}`);
    }
  }
  try {
    return SpiffeId.parse(uri);
  } catch (err) {
    if (err instanceof DenyError) {
      throw deny('malformed_spiffe_id', `certificate URI SAN: ${err.message}`, { cause: err });
    }
    throw err;
  }
}

/**
 * The extensions a leaf may mark critical: the ones this module reads (SAN, basicConstraints,
 * keyUsage) and the ones that cannot narrow what a workload certificate proves here: extKeyUsage
 * (any purpose is accepted, as go-spiffe verifies with ExtKeyUsageAny), key identifiers, CRL
 * distribution points and certificate policies (no revocation or policy checking is promised).
 */
const LEAF_CRITICAL_ALLOWED: ReadonlySet<string> = new Set([
  OID_SUBJECT_ALT_NAME,
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  '2.5.29.37', // extKeyUsage
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.31', // cRLDistributionPoints
  '2.5.29.32', // certificatePolicies
]);

/** A CA may also mark nameConstraints critical: chain verification processes them (./name-constraints.ts). */
const CA_CRITICAL_ALLOWED: ReadonlySet<string> = new Set([...LEAF_CRITICAL_ALLOWED, OID_NAME_CONSTRAINTS]);

/**
 * The first critical extension a leaf (or a CA) carries that chio does not process, or null.
 * RFC 5280 §4.2 / §6.1.4 (o): a certificate with one must be rejected (go-spiffe does, through
 * Go's x509 `UnhandledCriticalExtension`). Policy constraints, policy mappings and inhibitAnyPolicy
 * are among them: chio does no certificate policy processing.
 */
export function unprocessedCriticalExtension(facts: CertificateFacts, role: 'leaf' | 'ca'): string | null {
  const allowed = role === 'leaf' ? LEAF_CRITICAL_ALLOWED : CA_CRITICAL_ALLOWED;
  return facts.criticalExtensions.find((oid) => !allowed.has(oid)) ?? null;
}

function checkCriticalExtensions(facts: CertificateFacts): void {
  const unknown = unprocessedCriticalExtension(facts, 'leaf');
  if (unknown !== null) {
    throw deny('malformed_certificate', `certificate has a critical extension chio does not process (${unknown}); RFC 5280 §4.2 requires rejecting it`);
  }
}

/** X509-SVID §4.1, §4.3, §5.2: a leaf is not a CA, signs, and does not sign certificates or CRLs. */
function checkLeafConstraints(facts: CertificateFacts): void {
  if (facts.isCa) {
    throw deny('svid_is_ca', 'certificate is a CA (basicConstraints cA=true); an X509-SVID leaf has cA=false');
  }
  const usage = facts.keyUsage;
  if (usage === null) {
    throw deny(
      'svid_key_usage',
      'certificate has no keyUsage extension; an X509-SVID leaf must have one with digitalSignature',
    );
  }
  const forbidden: string[] = [];
  if (usage.keyCertSign) forbidden.push('keyCertSign');
  if (usage.cRLSign) forbidden.push('cRLSign');
  if (forbidden.length > 0) {
    throw deny('svid_key_usage', `certificate keyUsage has ${forbidden.join(' and ')}; an X509-SVID leaf must not`);
  }
  if (!usage.digitalSignature) {
    throw deny('svid_key_usage', 'certificate keyUsage lacks digitalSignature; an X509-SVID leaf must have it');
  }
}

/**
 * DER → validated SVID leaf: exactly one URI SAN that is a valid SPIFFE ID, CA=false, no
 * keyCertSign/cRLSign, digitalSignature present. Does NOT check validity dates (see
 * `checkValidity`). Throws DenyError with malformed_certificate | svid_no_uri_san |
 * svid_dns_san_only | svid_multiple_uri_sans | malformed_spiffe_id | svid_is_ca | svid_key_usage.
 *
 * Order: certificate structure (critical extensions included), SANs, SPIFFE ID syntax, cA, keyUsage, then the leaf's ID must
 * have a path (X509-SVID §3.1, §5.2; `malformed_spiffe_id`), so a CA certificate reports
 * `svid_is_ca` rather than its path-less ID.
 */
export function parseSvidLeaf(der: Buffer): SvidLeaf {
  if (!(der instanceof Uint8Array)) throw new TypeError('certificate DER must be a Buffer');
  const copy = Buffer.from(der);
  const facts = readCertificateFacts(copy);
  parseWithNode(copy); // OpenSSL must accept it too; the object is not kept (see SvidLeaf.x509)
  checkCriticalExtensions(facts);
  const spiffeId = uriSanSpiffeId(theUriSan(facts));
  checkLeafConstraints(facts);
  if (spiffeId.path === '') {
    throw deny(
      'malformed_spiffe_id',
      `certificate URI SAN ${quoteUntrusted(spiffeId.uri)} has no path; an X509-SVID leaf's SPIFFE ID must have one`,
    );
  }
  return Object.freeze({
    spiffeId,
    notBefore: facts.notBefore,
    notAfter: facts.notAfter,
    sha256: createHash('sha256').update(copy).digest('hex'),
    dnsSans: Object.freeze([...facts.dnsSans]),
    der: copy,
    get x509(): X509Certificate {
      return parseWithNode(copy);
    },
  });
}

/**
 * Throws DenyError('svid_expired' | 'svid_not_yet_valid') unless notBefore <= nowMs <= notAfter
 * (RFC 5280 §4.1.2.5: both bounds inclusive).
 */
export function checkValidity(leaf: SvidLeaf, nowMs: number): void {
  if (!Number.isFinite(nowMs)) throw new TypeError(`checkValidity: nowMs must be a finite number, got ${nowMs}`);
  const iso = (ms: number): string => new Date(ms).toISOString();
  if (nowMs > leaf.notAfter) {
    throw deny('svid_expired', `certificate expired: notAfter ${iso(leaf.notAfter)} is before ${iso(nowMs)}`);
  }
  if (nowMs < leaf.notBefore) {
    throw deny(
      'svid_not_yet_valid',
      `certificate not yet valid: notBefore ${iso(leaf.notBefore)} is after ${iso(nowMs)}`,
    );
  }
}

/** Envoy's `source.certificate` → validated leaf (decode + `parseSvidLeaf`); what a cache miss runs. */
export function svidFromEnvoyCertificate(urlEncodedPem: string): SvidLeaf {
  return parseSvidLeaf(decodeEnvoyCertificate(urlEncodedPem));
}

/**
 * The characters of a `source.certificate` string its cache slot is filed under: its end, where a
 * PEM certificate carries its signature (random-looking bytes, different for every certificate).
 */
const SLOT_KEY_CHARS = 128;

interface Slot {
  /** the exact `source.certificate` string this slot was made for */
  readonly pem: string;
  readonly entry: SvidLeaf | DenyError;
}

/**
 * Bounded LRU of `source.certificate` strings: a hit needs the exact string (filed under its last
 * SLOT_KEY_CHARS characters, see below). Caches both outcomes: a parsed
 * leaf, or the DenyError it produced (structural faults are deterministic). Validity dates are
 * NOT cached as a verdict: callers run `checkValidity` on every request.
 *
 * A hit is O(1): one Map lookup plus delete/re-insert to mark it most recently used. The Map is
 * keyed by the string's last SLOT_KEY_CHARS characters, not the whole ~1 KB string: every request
 * brings a new string, and V8 hashes a Map key character by character (~2.3 µs for a 1.1 KB
 * certificate, ~0.4 µs for the tail; bench/identity-resolve.mjs). The slot keeps the whole string
 * and a hit needs it to be equal, so two certificates that end alike never share an outcome: the
 * later one replaces the slot. Strings longer than MAX_ENVOY_CERTIFICATE_LENGTH are rejected
 * without being cached.
 */
export class SvidCache {
  private readonly slots = new Map<string, Slot>();

  constructor(
    readonly maxEntries: number,
    private readonly load: (urlEncodedPem: string) => SvidLeaf = svidFromEnvoyCertificate,
  ) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new TypeError(`SvidCache maxEntries must be a positive integer, got ${maxEntries}`);
    }
  }

  /** Returns the leaf or throws the (cached) DenyError. */
  get(urlEncodedPem: string): SvidLeaf {
    const key = urlEncodedPem.length > SLOT_KEY_CHARS ? urlEncodedPem.slice(-SLOT_KEY_CHARS) : urlEncodedPem;
    const slot = this.slots.get(key);
    let entry: SvidLeaf | DenyError;
    if (slot !== undefined && slot.pem === urlEncodedPem) {
      entry = slot.entry;
      this.slots.delete(key);
      this.slots.set(key, slot);
    } else {
      entry = this.evaluate(urlEncodedPem);
      if (urlEncodedPem.length <= MAX_ENVOY_CERTIFICATE_LENGTH) this.remember(key, { pem: urlEncodedPem, entry });
    }
    if (entry instanceof DenyError) throw entry;
    return entry;
  }

  get size(): number {
    return this.slots.size;
  }

  clear(): void {
    this.slots.clear();
  }

  private evaluate(urlEncodedPem: string): SvidLeaf | DenyError {
    try {
      return this.load(urlEncodedPem);
    } catch (err) {
      if (err instanceof DenyError) return err;
      throw err;
    }
  }

  private remember(key: string, slot: Slot): void {
    this.slots.delete(key); // a slot of another certificate that ends alike: replaced, and now the most recent
    this.slots.set(key, slot);
    if (this.slots.size > this.maxEntries) {
      const oldest = this.slots.keys().next();
      if (oldest.done !== true) this.slots.delete(oldest.value);
    }
  }
}
