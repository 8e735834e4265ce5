/**
 * Trust bundles, one per trust domain, never pooled (SPEC §4; SPIFFE Trust Domain and Bundle
 * https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Trust_Domain_and_Bundle.md §3, §4;
 * X509-SVID §6 and JWT-SVID bundle representation).
 *
 * - {@link parsePemBundle}, {@link parseSpiffeBundle}, {@link parseDerBundle}, {@link parseJwks}
 *   turn the formats bundle sources deliver into {@link BundleContent}: X.509 authorities
 *   (node:crypto `X509Certificate`, facts read once) and JWT authorities (`kid` → `KeyObject`).
 *   Unknown `use` values and unknown key types are ignored (Bundle §4.1.3, §4.2.1, §4.2.2).
 * - {@link BundleSet} holds, per trust domain, the bundle of the FIRST configured source that
 *   delivers that trust domain. A lookup is one Map get. Every content change gets a new
 *   `generation`, which is what verification caches key on; re-delivering identical content
 *   keeps the bundle (and its generation).
 *
 * Parsing happens off the hot path (startup, file change, stream message), so it may use
 * node:crypto freely; nothing here runs per request except `BundleSet.get`.
 */
import { createHash, createPublicKey, X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { ChioError, describe, DenyError, deny } from '../errors.js';
import { DerError, DerReader, DerTag, type Tlv } from './der.js';
import { TrustDomain } from './id.js';
import type { ConstrainedNames, NameConstraints } from './name-constraints.js';
import { readCertificateFacts, unprocessedCriticalExtension } from './x509-svid.js';

/** A CA certificate (bundle root or intermediate) with the facts chain verification needs. */
export interface CaCertificate {
  readonly x509: X509Certificate;
  readonly der: Buffer;
  /** lower-case hex SHA-256 of the DER */
  readonly sha256: string;
  /** ms since epoch */
  readonly notBefore: number;
  /** ms since epoch */
  readonly notAfter: number;
  /** basicConstraints cA */
  readonly isCa: boolean;
  /** keyUsage keyCertSign; true when the keyUsage extension is absent (RFC 5280 §4.2.1.3) */
  readonly keyCertSign: boolean;
  /** basicConstraints pathLenConstraint, null when absent */
  readonly pathLen: number | null;
  /** nameConstraints (RFC 5280 §4.2.1.10), null when absent: bound the names of every certificate below it */
  readonly nameConstraints: NameConstraints | null;
  /** the first critical extension chio does not process (dotted OID), null when none: such a CA never signs a path */
  readonly unprocessedCritical: string | null;
  /** its own names, which the constraints of CAs above it bound */
  readonly names: ConstrainedNames;
  /** subject = issuer (RFC 5280 §6.1: a self-issued intermediate's names are not checked) */
  readonly selfIssued: boolean;
}

/** What one source delivers for one trust domain. */
export interface BundleContent {
  readonly trustDomain: string;
  /** X.509 roots (`use: x509-svid`, or PEM/DER roots) */
  readonly x509Authorities: readonly CaCertificate[];
  /** JWT-SVID keys by `kid` (`use: jwt-svid`) */
  readonly jwtAuthorities: ReadonlyMap<string, KeyObject>;
  /** configured intermediates offered to chain building (never anchors) */
  readonly intermediates: readonly CaCertificate[];
  /** `spiffe_sequence`, null when absent */
  readonly sequence: number | null;
  /** `spiffe_refresh_hint` in seconds, null when absent */
  readonly refreshHintSeconds: number | null;
}

/** A bundle as the verifiers see it: content plus who delivered it. */
export interface TrustBundle extends BundleContent {
  /** the source's configured verifier name (trusted_verifiers match on it) */
  readonly verifier: string;
  /** bounded source label, e.g. `pem#0` */
  readonly source: string;
  /** changes on every content update; caches key on it */
  readonly generation: number;
  /** latest notAfter of the X.509 roots (ms), null without roots: all expired after it */
  readonly x509ExpiresAt: number | null;
  /** earliest notAfter of the X.509 roots (ms), null without roots (the expiry metric) */
  readonly x509FirstExpiry: number | null;
}

/** Longest bundle document accepted from a file or an endpoint. */
export const MAX_BUNDLE_BYTES = 4 * 1024 * 1024;
/** More authorities than this in one bundle is refused. */
export const MAX_BUNDLE_KEYS = 1024;


// ---------------------------------------------------------------------------------------------
// CA certificates

/**
 * DER → CA certificate facts. Throws DenyError('malformed_certificate') for a certificate that
 * is not well-formed DER or that OpenSSL rejects. Does not judge whether it may sign: that is
 * chain verification's job (so bundle loading and the chain use the same rules).
 */
export function parseCaCertificate(der: Uint8Array): CaCertificate {
  const copy = Buffer.from(der);
  const facts = readCertificateFacts(copy);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(copy);
  } catch (err) {
    throw deny('malformed_certificate', `certificate: OpenSSL rejects it (${describe(err)})`, { cause: err });
  }
  return Object.freeze({
    x509,
    der: copy,
    sha256: createHash('sha256').update(copy).digest('hex'),
    notBefore: facts.notBefore,
    notAfter: facts.notAfter,
    isCa: facts.isCa,
    keyCertSign: facts.keyUsage === null ? true : facts.keyUsage.keyCertSign,
    pathLen: facts.pathLen,
    nameConstraints: facts.nameConstraints,
    unprocessedCritical: unprocessedCriticalExtension(facts, 'ca'),
    names: Object.freeze({ uris: Object.freeze([...facts.uriSans]), dns: Object.freeze([...facts.dnsSans]) }),
    selfIssued: x509.subject === x509.issuer,
  });
}

/** Splits concatenated DER certificates (Workload API bundles, DER chain files). */
export function splitDerCertificates(bytes: Uint8Array): Buffer[] {
  if (bytes.length === 0) return [];
  const r = new DerReader(bytes);
  try {
    const whole: Tlv = { tag: DerTag.SEQUENCE, offset: 0, start: 0, end: bytes.length, depth: 0 };
    return r.children(whole).map((t) => {
      if (t.tag !== DerTag.SEQUENCE) throw new DerError('expected a certificate SEQUENCE', t.offset);
      return Buffer.from(bytes.subarray(t.offset, t.end));
    });
  } catch (err) {
    if (err instanceof DerError) throw deny('malformed_certificate', `concatenated DER certificates: ${err.message}`);
    throw err;
  }
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----/g;

/**
 * Every CERTIFICATE block of a PEM text, as DER. Text outside blocks (comments) is allowed;
 * blocks of another type are an error (a private key in a bundle file is a mistake worth
 * stopping for). Throws DenyError('malformed_certificate').
 */
export function pemCertificates(text: string): Buffer[] {
  const out: Buffer[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    const [, label, body] = match;
    if (label !== 'CERTIFICATE') throw deny('malformed_certificate', `PEM block "${label}" where a CERTIFICATE was expected`);
    const base64 = (body ?? '').replace(/\r?\n/g, '');
    const der = Buffer.from(base64, 'base64');
    if (der.length === 0 || der.toString('base64') !== base64) {
      throw deny('malformed_certificate', `PEM CERTIFICATE block ${out.length + 1} is not valid base64`);
    }
    out.push(der);
  }
  const unmatched = text.replace(PEM_BLOCK, '');
  if (unmatched.includes('-----BEGIN')) throw deny('malformed_certificate', 'PEM block without a matching END line');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Bundle formats

function invalid(what: string, message: string, cause?: unknown): ChioError {
  return new ChioError('config_invalid', `${what}: ${message}`, cause === undefined ? {} : { cause });
}

function withCertificateErrors<T>(what: string, run: () => T): T {
  try {
    return run();
  } catch (err) {
    if (err instanceof DenyError) throw invalid(what, err.message, err);
    throw err;
  }
}

function emptyContent(trustDomain: string): BundleContent {
  return { trustDomain, x509Authorities: [], jwtAuthorities: new Map(), intermediates: [], sequence: null, refreshHintSeconds: null };
}

/** Validates a trust domain name; `spiffe://td` is accepted too (Workload API map keys). */
export function trustDomainName(input: string, what: string): string {
  try {
    return TrustDomain.parse(input).name;
  } catch (err) {
    if (err instanceof DenyError) throw invalid(what, err.message, err);
    throw err;
  }
}

function caList(ders: readonly Buffer[], what: string): CaCertificate[] {
  if (ders.length > MAX_BUNDLE_KEYS) throw invalid(what, `${ders.length} certificates; the maximum is ${MAX_BUNDLE_KEYS}`);
  return ders.map((der, i) => withCertificateErrors(`${what} certificate ${i + 1}`, () => parseCaCertificate(der)));
}

/**
 * PEM roots of one trust domain. Throws ChioError('config_invalid') when the text holds no
 * certificate or a malformed one; `what` names the source in the message.
 */
export function parsePemBundle(text: string, trustDomain: string, what: string): BundleContent {
  const ders = withCertificateErrors(what, () => pemCertificates(text));
  if (ders.length === 0) throw invalid(what, 'no PEM CERTIFICATE block');
  return { ...emptyContent(trustDomain), x509Authorities: caList(ders, what) };
}

/** Concatenated DER roots (Workload API `X509BundlesResponse.bundles`). */
export function parseDerBundle(bytes: Uint8Array, trustDomain: string, what: string): BundleContent {
  const ders = withCertificateErrors(what, () => splitDerCertificates(bytes));
  if (ders.length === 0) throw invalid(what, 'empty X.509 bundle');
  return { ...emptyContent(trustDomain), x509Authorities: caList(ders, what) };
}

const jwkSchema = z.looseObject({
  kty: z.string(),
  use: z.string().optional(),
  kid: z.string().optional(),
  x5c: z.array(z.string()).optional(),
});

const bundleDocumentSchema = z.looseObject({
  keys: z.array(z.unknown()).max(MAX_BUNDLE_KEYS),
  // a uint64 (Bundle §4.1.1): beyond 2^53 JSON numbers lose precision, so any non-negative whole number is taken
  // (a rollback check on such values may miss a step back; it never refuses a genuine update)
  spiffe_sequence: z
    .number()
    .min(0)
    .refine((v) => Number.isInteger(v), 'expected a whole number')
    .optional(),
  // a hint that is not a non-negative integer is ignored (the default interval applies), not a reason to refuse the bundle
  spiffe_refresh_hint: z.unknown().optional(),
});

/** Key types a JWT-SVID `alg` can use (JWT-SVID §2.1: RS*, ES*, PS*). */
const JWT_KEY_TYPES: ReadonlySet<string> = new Set(['RSA', 'EC']);
/** The key types of RFC 7518 §6.1 and RFC 8037; an element of another type is ignored whole (Bundle §4.2.1). */
const KNOWN_KEY_TYPES: ReadonlySet<string> = new Set(['RSA', 'EC', 'OKP', 'oct']);

function refreshHint(value: unknown): number | null {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

function parseJson(text: string, what: string): unknown {
  if (text.length > MAX_BUNDLE_BYTES) throw invalid(what, `larger than ${MAX_BUNDLE_BYTES} bytes`);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw invalid(what, `not valid JSON (${describe(err)})`, err);
  }
}

function zodMessage(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return 'invalid';
  const at = issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : '';
  return `${at}${issue.message}`;
}

/**
 * A SPIFFE bundle (JWK Set, Bundle §4): `use: x509-svid` entries contribute the first `x5c`
 * certificate (X509-SVID §6.2), `use: jwt-svid` entries a public key under their `kid`
 * (required, unique). Other uses and key types are ignored. Throws ChioError('config_invalid').
 */
export function parseSpiffeBundle(text: string, trustDomain: string, what: string): BundleContent {
  return parseJwkSet(text, trustDomain, what, undefined);
}

/**
 * A JWKS of JWT authorities (Workload API `JWTBundlesResponse.bundles`, `chio svid verify-jwt
 * --bundle`): like a SPIFFE bundle, but a key without `use` counts as a JWT-SVID key.
 */
export function parseJwks(text: string, trustDomain: string, what: string): BundleContent {
  return parseJwkSet(text, trustDomain, what, 'jwt-svid');
}

function parseJwkSet(text: string, trustDomain: string, what: string, defaultUse: 'jwt-svid' | undefined): BundleContent {
  const parsed = bundleDocumentSchema.safeParse(parseJson(text, what));
  if (!parsed.success) throw invalid(what, `not a SPIFFE bundle: ${zodMessage(parsed.error)}`);
  const doc = parsed.data;
  const roots: Buffer[] = [];
  const jwt = new Map<string, KeyObject>();
  doc.keys.forEach((raw, i) => {
    // RFC 7517 §5 / Bundle §4.2.1: an element that is not a JWK, or of a key type not understood, is ignored
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return;
    const kty = (raw as { kty?: unknown }).kty;
    if (typeof kty !== 'string' || !KNOWN_KEY_TYPES.has(kty)) return;
    const entry = jwkSchema.safeParse(raw);
    if (!entry.success) throw invalid(what, `keys[${i}]: ${zodMessage(entry.error)}`);
    const key = entry.data;
    const use = key.use ?? defaultUse;
    if (use === 'x509-svid') {
      const first = key.x5c?.[0];
      if (first !== undefined) roots.push(base64Der(first, `${what} keys[${i}].x5c[0]`));
    } else if (use === 'jwt-svid' && JWT_KEY_TYPES.has(key.kty)) {
      addJwtKey(jwt, raw as Record<string, unknown>, key.kid, `${what} keys[${i}]`);
    }
  });
  return {
    trustDomain,
    x509Authorities: caList(roots, what),
    jwtAuthorities: jwt,
    intermediates: [],
    sequence: doc.spiffe_sequence ?? null,
    refreshHintSeconds: refreshHint(doc.spiffe_refresh_hint),
  };
}

function base64Der(value: string, what: string): Buffer {
  const der = Buffer.from(value, 'base64');
  if (der.length === 0 || der.toString('base64') !== value) throw invalid(what, 'x5c value is not canonical base64 DER');
  return der;
}

const PUBLIC_JWK_MEMBERS = ['kty', 'crv', 'x', 'y', 'n', 'e'] as const;

function addJwtKey(into: Map<string, KeyObject>, raw: Record<string, unknown>, kid: string | undefined, what: string): void {
  if (kid === undefined || kid === '') throw invalid(what, 'a jwt-svid key must have a "kid"');
  if (into.has(kid)) throw invalid(what, `duplicate kid ${JSON.stringify(kid)}`);
  if ('d' in raw) throw invalid(what, 'a bundle key must be public (it has "d")');
  const jwk: Record<string, unknown> = {};
  for (const member of PUBLIC_JWK_MEMBERS) if (raw[member] !== undefined) jwk[member] = raw[member];
  try {
    into.set(kid, createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }));
  } catch (err) {
    throw invalid(what, `kid ${JSON.stringify(kid)} is not a usable public key (${describe(err)})`, err);
  }
}

/** Whether a text looks like a SPIFFE bundle / JWKS (JSON) rather than PEM. */
export function looksLikeJson(text: string): boolean {
  return text.trimStart().startsWith('{');
}

// ---------------------------------------------------------------------------------------------
// Sources (implementations: ./bundle-sources.ts, ./workload-api.ts)

export interface SourceLogger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface SourceHooks {
  readonly log: SourceLogger;
  /** one refresh attempt of source `source` ended with `result` */
  readonly refreshed: (source: string, result: 'ok' | 'error') => void;
}

export interface BundleSource {
  /** bounded label (`pem#0`, `workload_api#2`): metric label and log field */
  readonly label: string;
  /** First load. File sources throw ChioError on a bad file (startup must fail); remote sources resolve after their first attempt. */
  start(): Promise<void>;
  close(): Promise<void>;
}

export const NO_HOOKS: SourceHooks = {
  log: { error: () => undefined, warn: () => undefined, info: () => undefined },
  refreshed: () => undefined,
};

// ---------------------------------------------------------------------------------------------
// The set

/** Stable identity of a content: changes iff an authority, an intermediate or a key changes. */
function fingerprint(c: BundleContent): string {
  const h = createHash('sha256');
  for (const a of c.x509Authorities) h.update(`r${a.sha256}`);
  for (const a of c.intermediates) h.update(`i${a.sha256}`);
  for (const [kid, key] of [...c.jwtAuthorities].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    h.update(`k${kid.length}:${kid}`);
    h.update(key.export({ format: 'der', type: 'spki' }));
  }
  return h.digest('hex');
}

export interface BundleSourceInfo {
  /** bounded label, e.g. `pem#0` */
  readonly source: string;
  readonly verifier: string;
  /** the verifier name of one trust domain's bundle when it is not `verifier` for all (a Workload API source's federated ones) */
  readonly verifierFor?: (trustDomain: string) => string;
}

/** A content as the verifiers see it (a BundleSet seals what it publishes; a source may seal one for its own use). */
export function sealBundle(content: BundleContent, info: BundleSourceInfo, generation: number): TrustBundle {
  const notAfters = content.x509Authorities.map((a) => a.notAfter);
  return Object.freeze({
    ...content,
    verifier: info.verifierFor?.(content.trustDomain) ?? info.verifier,
    source: info.source,
    generation,
    x509ExpiresAt: notAfters.length === 0 ? null : Math.max(...notAfters),
    x509FirstExpiry: notAfters.length === 0 ? null : Math.min(...notAfters),
  });
}

export interface BundleChange {
  readonly trustDomain: string;
  /** the bundle now in force, undefined when the trust domain lost its bundle */
  readonly bundle: TrustBundle | undefined;
}

interface Held {
  readonly bundle: TrustBundle;
  readonly fingerprint: string;
}

/**
 * Per-trust-domain bundles from several sources. Sources are registered in config order;
 * for a trust domain delivered by more than one source, the first registered source wins.
 * A trust domain with no bundle now is *pending* (verifiers deny `untrusted_svid` rather than fall
 * back to "no bundle", where Envoy's word alone would stand) when:
 * - a source configured for it has not delivered yet (`addSource(info, expected)`);
 * - a source that may deliver any trust domain (the Workload API: the agent names them) has not
 *   delivered its first set yet (`expectAnyTrustDomain`): until then any trust domain may be one of its;
 * - a source delivered it once and no source holds it now (withdrawn: a federation relationship
 *   the agent dropped, Workload API §4.4): its SVIDs are no longer trusted, not "unknown".
 */
export class BundleSet {
  private readonly sources: Array<{ info: BundleSourceInfo; held: Map<string, Held> }> = [];
  private readonly current = new Map<string, TrustBundle>();
  private readonly pending = new Map<string, number>();
  /** sources that may deliver any trust domain and have not delivered yet */
  private readonly openEnded = new Set<number>();
  /** trust domains delivered once and held by no source now */
  private readonly withdrawn = new Set<string>();
  private readonly listeners: Array<(change: BundleChange) => void> = [];
  private generation = 0;

  /** Registers a source; returns its index for `replace`. */
  addSource(info: BundleSourceInfo, expectedTrustDomains: readonly string[] = []): number {
    this.sources.push({ info, held: new Map() });
    for (const td of expectedTrustDomains) this.pending.set(td, (this.pending.get(td) ?? 0) + 1);
    return this.sources.length - 1;
  }

  /** The bundle in force for a trust domain (hot path: one Map get). */
  get(trustDomain: string): TrustBundle | undefined {
    return this.current.get(trustDomain);
  }

  /**
   * Source `index` may deliver any trust domain (it names them itself): until its first delivery,
   * every trust domain without a bundle is pending.
   */
  expectAnyTrustDomain(index: number): void {
    if (this.sources[index] === undefined) throw new TypeError(`BundleSet.expectAnyTrustDomain: no source ${index}`);
    this.openEnded.add(index);
  }

  /**
   * A trust domain a source is configured for (`addSource(info, expected)`), delivered yet or not:
   * what `require_known_trust_domain` calls known besides a trust domain with a bundle. Not the
   * open-ended or withdrawn ones: nobody configured those.
   */
  isConfigured(trustDomain: string): boolean {
    return this.pending.has(trustDomain);
  }

  /** A trust domain with no bundle now that must not be taken as "no bundle configured" (see the class comment). */
  isPending(trustDomain: string): boolean {
    return this.pendingReason(trustDomain) !== null;
  }

  /** Why `trustDomain` is pending (a sentence for a deny message), or null when it is not. */
  pendingReason(trustDomain: string): string | null {
    if (this.current.has(trustDomain)) return null;
    if (this.pending.has(trustDomain)) return `the trust bundle of ${trustDomain} is configured but not loaded yet`;
    if (this.withdrawn.has(trustDomain)) return `the trust bundle of ${trustDomain} was withdrawn by its source`;
    const [waiting] = this.openEnded;
    if (waiting === undefined) return null;
    const source = (this.sources[waiting] as { info: BundleSourceInfo }).info.source;
    return `no trust bundle yet: bundle source ${source} has not delivered, and the bundle of ${trustDomain} may come from it`;
  }

  /** Trust domains with a bundle or one expected. */
  trustDomains(): string[] {
    return [...new Set([...this.current.keys(), ...this.pending.keys()])].sort();
  }

  onChange(listener: (change: BundleChange) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Replaces everything source `index` delivers: trust domains missing from `contents` are
   * withdrawn from that source (Workload API §4.4 redaction). Unchanged content keeps its
   * bundle and generation.
   */
  replace(index: number, contents: readonly BundleContent[]): void {
    const source = this.sources[index];
    if (source === undefined) throw new TypeError(`BundleSet.replace: no source ${index}`);
    const next = new Map<string, Held>();
    for (const content of contents) {
      if (next.has(content.trustDomain)) throw new TypeError(`BundleSet.replace: trust domain ${content.trustDomain} twice`);
      const print = fingerprint(content);
      const old = source.held.get(content.trustDomain);
      next.set(content.trustDomain, old !== undefined && old.fingerprint === print ? old : { bundle: this.seal(content, source.info), fingerprint: print });
    }
    const touched = new Set([...source.held.keys(), ...next.keys()]);
    source.held = next;
    this.openEnded.delete(index);
    for (const td of touched) this.recompute(td);
  }

  private seal(content: BundleContent, info: BundleSourceInfo): TrustBundle {
    return sealBundle(content, info, ++this.generation);
  }

  private recompute(td: string): void {
    let winner: TrustBundle | undefined;
    for (const s of this.sources) {
      winner = s.held.get(td)?.bundle;
      if (winner !== undefined) break;
    }
    if (this.current.get(td) === winner) return;
    if (winner === undefined) {
      this.current.delete(td);
      this.withdrawn.add(td);
    } else {
      this.current.set(td, winner);
      this.withdrawn.delete(td);
    }
    for (const listener of this.listeners) listener({ trustDomain: td, bundle: winner });
  }
}
