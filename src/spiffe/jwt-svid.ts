/**
 * JWT-SVID validation (SPEC §4; JWT-SVID https://github.com/spiffe/spiffe/blob/main/standards/JWT-SVID.md
 * §2.1 alg, §2.2 kid, §2.3 typ, §3 claims, §4 validation, §5.2 HTTP transmission, Appendix A;
 * RFC 7515 §7 compact serialization, RFC 7519 §4.1.3 aud, §4.1.4 exp, §4.1.5 nbf).
 *
 * Order (the first failure wins; every one is a DenyError):
 * 1. compact JWS shape and a JSON header (`jwt_svid_invalid`);
 * 2. `alg` on the allow-list RS/ES/PS 256/384/512: never `none`, never HS*
 *    (`jwt_svid_alg_not_allowed`), checked before any key is touched; `typ` JWT or JOSE; no `crit`
 *    and no header parameter but alg, kid and typ (JWT-SVID §2: `jku`, `jwk`, `x5c`, `cty`, … refused);
 * 3. `sub` a valid SPIFFE ID with a path (`malformed_spiffe_id`); it selects the trust domain;
 * 4. `kid` looked up in the JWT authorities of THAT trust domain's bundle only
 *    (`jwt_svid_unknown_key`; a key of another trust domain never verifies);
 * 5. the key fits `alg` (RSA ≥ 2048 bits for RS/PS, the curve of ES*), and the signature
 *    verifies (`jwt_svid_invalid`);
 * 6. claims: `exp` required (`jwt_svid_invalid`) and not past beyond the leeway
 *    (`jwt_svid_expired`); `nbf` and `iat`, if any, not in the future beyond the leeway; every
 *    NumericDate within what a Date can hold; `aud` required and
 *    containing a configured audience exactly, string or array, never a substring
 *    (`jwt_svid_audience_mismatch`).
 *
 * jose is used to decode the header and the payload; the signature is checked with node:crypto
 * because jose's verify functions are asynchronous and the Check path is synchronous. The
 * {@link JwtSvidVerifier} caches steps 1–5 and the audience per (token's SHA-256, bundle
 * generation); the time checks run on every use.
 */
import { constants, hash as oneShotHash, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { base64url, decodeJwt, decodeProtectedHeader } from 'jose';
import { z } from 'zod';
import { deny, describe, DenyError } from '../errors.js';
import type { TrustBundle } from './bundle.js';
import { quoteUntrusted, SpiffeId } from './id.js';

/** JWT-SVID §2.1. */
export const JWT_SVID_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'] as const;
export type JwtSvidAlgorithm = (typeof JWT_SVID_ALGORITHMS)[number];

/** Longest token accepted (a JWT-SVID is well under 2 KB). */
export const MAX_JWT_SVID_LENGTH = 16 * 1024;
/** Upper bound of the configurable clock leeway. */
export const MAX_LEEWAY_SECONDS = 300;
export const MIN_RSA_BITS = 2048;

export interface JwtSvidOptions {
  /** a token must name at least one of these in `aud`, exactly */
  readonly audiences: readonly string[];
  /** clock skew tolerated on exp/nbf, 0..300 */
  readonly leewaySeconds: number;
}

/** A JWT-SVID whose signature and audience verified (time checks are separate). */
export interface JwtSvid {
  readonly spiffeId: SpiffeId;
  readonly kid: string;
  readonly alg: JwtSvidAlgorithm;
  readonly audience: readonly string[];
  /** ms since epoch */
  readonly expiresAt: number;
  /** ms since epoch, null without `iat` */
  readonly issuedAt: number | null;
  /** ms since epoch, null without `nbf` */
  readonly notBefore: number | null;
  /** the bundle whose key verified it */
  readonly bundle: TrustBundle;
}

interface AlgorithmProfile {
  readonly hash: 'sha256' | 'sha384' | 'sha512';
  readonly family: 'RS' | 'PS' | 'ES';
  /** ES only: the node curve name and the P1363 signature length */
  readonly curve?: string;
  readonly signatureLength?: number;
}

const PROFILES: Readonly<Record<JwtSvidAlgorithm, AlgorithmProfile>> = {
  RS256: { hash: 'sha256', family: 'RS' },
  RS384: { hash: 'sha384', family: 'RS' },
  RS512: { hash: 'sha512', family: 'RS' },
  PS256: { hash: 'sha256', family: 'PS' },
  PS384: { hash: 'sha384', family: 'PS' },
  PS512: { hash: 'sha512', family: 'PS' },
  ES256: { hash: 'sha256', family: 'ES', curve: 'prime256v1', signatureLength: 64 },
  ES384: { hash: 'sha384', family: 'ES', curve: 'secp384r1', signatureLength: 96 },
  ES512: { hash: 'sha512', family: 'ES', curve: 'secp521r1', signatureLength: 132 },
};

function isAllowedAlgorithm(alg: unknown): alg is JwtSvidAlgorithm {
  return typeof alg === 'string' && Object.prototype.hasOwnProperty.call(PROFILES, alg);
}

const invalid = (message: string): DenyError => deny('jwt_svid_invalid', `JWT-SVID ${message}`);

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** ±8.64e12 s: the NumericDates a JavaScript Date can hold (ECMA-262 §21.4.1.1), so every one can be shown as a time. */
export const MAX_NUMERIC_DATE_SECONDS = 8.64e12;
const numericDate = z
  .number()
  .finite()
  .refine((v) => Math.abs(v) <= MAX_NUMERIC_DATE_SECONDS, { message: 'out of range' });
const claimsSchema = z.looseObject({
  sub: z.string().optional(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  exp: numericDate.optional(),
  iat: numericDate.optional(),
  nbf: numericDate.optional(),
});

/** The header parameters a JWT-SVID may carry (JWT-SVID §2: "Any header not described here … MUST NOT be included"). */
const HEADER_PARAMETERS: ReadonlySet<string> = new Set(['alg', 'kid', 'typ']);

const headerSchema = z.looseObject({
  alg: z.unknown(),
  kid: z.string().optional(),
  typ: z.string().optional(),
});

type Claims = z.infer<typeof claimsSchema>;

/** The token of an `authorization: Bearer <token>` value (RFC 6750 §2.1), or null. */
export function bearerToken(value: string): string | null {
  const match = /^Bearer +([^\s]+) *$/i.exec(value);
  return match?.[1] ?? null;
}

function decodeHeader(token: string): z.infer<typeof headerSchema> {
  let header: unknown;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw invalid(`header is not valid base64url JSON (${describe(err)})`);
  }
  const parsed = headerSchema.safeParse(header);
  if (!parsed.success) throw invalid('header is not a JSON object with string kid and typ');
  if (Object.hasOwn(parsed.data, 'crit')) throw invalid('header has "crit"; no JWS extension is understood');
  const extra = Object.keys(parsed.data).find((name) => !HEADER_PARAMETERS.has(name));
  if (extra !== undefined) {
    throw invalid(`header has ${quoteUntrusted(extra, 32)}; a JWT-SVID header holds only alg, kid and typ (JWT-SVID §2)`);
  }
  return parsed.data;
}

function decodeClaims(token: string): Claims {
  let payload: unknown;
  try {
    payload = decodeJwt(token);
  } catch (err) {
    throw invalid(`payload is not a JWT claims set (${describe(err)})`);
  }
  const parsed = claimsSchema.safeParse(payload);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const at = issue?.path.join('.') ?? '';
    if (issue?.code === 'custom') throw invalid(`claim ${JSON.stringify(at)} is out of range (a NumericDate within ±${MAX_NUMERIC_DATE_SECONDS} seconds)`);
    throw invalid(`claim ${JSON.stringify(at)} has the wrong type`);
  }
  return parsed.data;
}

function checkAlgorithm(header: z.infer<typeof headerSchema>): JwtSvidAlgorithm {
  const { alg } = header;
  if (!isAllowedAlgorithm(alg)) {
    const shown = typeof alg === 'string' ? quoteUntrusted(alg, 32) : alg === undefined ? 'missing' : 'not a string';
    throw deny('jwt_svid_alg_not_allowed', `JWT-SVID alg ${shown} is not allowed; allowed are ${JWT_SVID_ALGORITHMS.join(', ')}`);
  }
  if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE') {
    throw invalid(`typ ${quoteUntrusted(header.typ, 32)} must be "JWT" or "JOSE"`);
  }
  return alg;
}

function subjectOf(claims: Claims): SpiffeId {
  if (claims.sub === undefined) throw invalid('has no "sub" claim');
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(claims.sub);
  } catch (err) {
    if (err instanceof DenyError) throw deny('malformed_spiffe_id', `JWT-SVID sub: ${err.message}`, { cause: err });
    throw err;
  }
  // JWT-SVID §3.1: sub is the SPIFFE ID of the workload; a bare trust domain names none (as for X509-SVIDs)
  if (id.path === '') throw deny('malformed_spiffe_id', `JWT-SVID sub ${quoteUntrusted(id.uri, 300)} has no path; a workload's SPIFFE ID must have one`);
  return id;
}

function keyFor(bundle: TrustBundle | undefined, td: string, kid: string | undefined): KeyObject {
  if (bundle === undefined || bundle.jwtAuthorities.size === 0) {
    throw deny('jwt_svid_unknown_key', `no JWT-SVID keys for trust domain ${td}`);
  }
  if (kid === undefined || kid === '') throw invalid('header has no "kid"; keys are looked up by kid');
  const key = bundle.jwtAuthorities.get(kid);
  if (key === undefined) {
    throw deny('jwt_svid_unknown_key', `JWT-SVID kid ${quoteUntrusted(kid, 64)} is not in the JWT bundle of ${td}`);
  }
  return key;
}

/** Why `key` cannot verify `alg`, or null. */
function keyMismatch(alg: JwtSvidAlgorithm, key: KeyObject): string | null {
  const profile = PROFILES[alg];
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails;
  if (profile.family === 'ES') {
    if (type !== 'ec' || details?.namedCurve !== profile.curve) return `${alg} needs an EC ${profile.curve} key`;
    return null;
  }
  if (type !== 'rsa' && !(profile.family === 'PS' && type === 'rsa-pss')) return `${alg} needs an RSA key`;
  const bits = details?.modulusLength ?? 0;
  return bits < MIN_RSA_BITS ? `RSA key of ${bits} bits; at least ${MIN_RSA_BITS} are required` : null;
}

function signatureVerifies(alg: JwtSvidAlgorithm, key: KeyObject, token: string): boolean {
  const profile = PROFILES[alg];
  const dot = token.lastIndexOf('.');
  const signingInput = Buffer.from(token.slice(0, dot), 'ascii');
  let signature: Buffer;
  try {
    signature = Buffer.from(base64url.decode(token.slice(dot + 1)));
  } catch {
    throw invalid('signature is not valid base64url (RFC 7515 §5.2)');
  }
  switch (profile.family) {
    case 'RS':
      return cryptoVerify(profile.hash, signingInput, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
    case 'PS':
      return cryptoVerify(
        profile.hash,
        signingInput,
        { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST },
        signature,
      );
    case 'ES':
      if (signature.length !== profile.signatureLength) return false;
      return cryptoVerify(profile.hash, signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
  }
}

function audienceOf(claims: Claims, audiences: readonly string[]): readonly string[] {
  const aud = claims.aud;
  const list = aud === undefined ? [] : typeof aud === 'string' ? [aud] : aud;
  if (list.length === 0) throw invalid('has no "aud" claim');
  if (!list.some((a) => audiences.includes(a))) {
    const shown = quoteUntrusted(list.slice(0, 5).join(', '), 120);
    throw deny('jwt_svid_audience_mismatch', `JWT-SVID aud ${shown} does not contain ${audiences.map((a) => JSON.stringify(a)).join(' or ')}`);
  }
  return list;
}

/**
 * Steps 1–5 and the audience: everything that does not depend on the time. Throws DenyError.
 * `bundleFor` returns the bundle of a trust domain (undefined when there is none).
 */
export function verifyJwtSvidSignature(
  token: string,
  bundleFor: (trustDomain: string) => TrustBundle | undefined,
  audiences: readonly string[],
): JwtSvid {
  if (token.length > MAX_JWT_SVID_LENGTH) throw invalid(`is ${token.length} characters; the maximum is ${MAX_JWT_SVID_LENGTH}`);
  if (token.split('.').length !== 3) throw invalid('is not a JWS compact serialization (header.payload.signature)');
  const header = decodeHeader(token);
  const alg = checkAlgorithm(header);
  if (!COMPACT_JWS.test(token)) throw invalid('is not a JWS compact serialization (header.payload.signature)');
  const claims = decodeClaims(token);
  const spiffeId = subjectOf(claims);
  const bundle = bundleFor(spiffeId.trustDomain);
  const key = keyFor(bundle, spiffeId.trustDomain, header.kid);
  const mismatch = keyMismatch(alg, key);
  if (mismatch !== null) throw invalid(`kid ${quoteUntrusted(header.kid ?? '', 64)} cannot verify it: ${mismatch}`);
  if (!signatureVerifies(alg, key, token)) throw invalid('signature does not verify');
  if (claims.exp === undefined) throw invalid('has no "exp" claim');
  return {
    spiffeId,
    kid: header.kid ?? '',
    alg,
    audience: audienceOf(claims, audiences),
    expiresAt: claims.exp * 1000,
    issuedAt: claims.iat === undefined ? null : claims.iat * 1000,
    notBefore: claims.nbf === undefined ? null : claims.nbf * 1000,
    bundle: bundle as TrustBundle,
  };
}

/** Step 6's time checks at `nowMs`. Throws DenyError('jwt_svid_expired' | 'jwt_svid_invalid'). */
export function checkJwtSvidTimes(svid: JwtSvid, nowMs: number, leewaySeconds: number): void {
  const leeway = leewaySeconds * 1000;
  if (nowMs > svid.expiresAt + leeway) {
    throw deny('jwt_svid_expired', `JWT-SVID expired at ${new Date(svid.expiresAt).toISOString()} (leeway ${leewaySeconds}s)`);
  }
  if (svid.notBefore !== null && nowMs + leeway < svid.notBefore) {
    throw invalid(`is not valid before ${new Date(svid.notBefore).toISOString()} (nbf, leeway ${leewaySeconds}s)`);
  }
  // an issue time ahead of the clock would make the evidence look younger than it is (max_evidence_age_seconds)
  if (svid.issuedAt !== null && nowMs + leeway < svid.issuedAt) {
    throw invalid(`was issued in the future: iat ${new Date(svid.issuedAt).toISOString()} (leeway ${leewaySeconds}s)`);
  }
}

/** The whole validation at `nowMs`, uncached (the CLI's). */
export function verifyJwtSvid(
  token: string,
  bundleFor: (trustDomain: string) => TrustBundle | undefined,
  options: JwtSvidOptions,
  nowMs: number,
): JwtSvid {
  const svid = verifyJwtSvidSignature(token, bundleFor, options.audiences);
  checkJwtSvidTimes(svid, nowMs, options.leewaySeconds);
  return svid;
}

interface CacheEntry {
  /** trust domain of `sub`, null when the token failed before `sub` was known */
  readonly trustDomain: string | null;
  /** the bundle the outcome was computed with (undefined: there was none) */
  readonly bundle: TrustBundle | undefined;
  readonly outcome: JwtSvid | DenyError;
}

/**
 * JWT-SVID validation for the Check path with a bounded LRU per (token's SHA-256, bundle generation):
 * a repeated token costs two Map lookups and the time checks. Entries of expired tokens are
 * dropped when next seen.
 */
export class JwtSvidVerifier {
  private readonly entries = new Map<string, CacheEntry>();

  constructor(
    private readonly bundleFor: (trustDomain: string) => TrustBundle | undefined,
    private readonly options: JwtSvidOptions,
    readonly maxEntries = 10_000,
  ) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new TypeError(`JwtSvidVerifier maxEntries must be a positive integer, got ${maxEntries}`);
    if (options.audiences.length === 0) throw new TypeError('JwtSvidVerifier needs at least one audience');
    if (!(options.leewaySeconds >= 0 && options.leewaySeconds <= MAX_LEEWAY_SECONDS)) {
      throw new TypeError(`leewaySeconds must be within 0..${MAX_LEEWAY_SECONDS}, got ${options.leewaySeconds}`);
    }
  }

  /** Throws DenyError. */
  verify(token: string, nowMs: number): JwtSvid {
    // keyed by the token's SHA-256, not the token: 10,000 entries of 16 KiB garbage would pin ~160 MiB
    const key = oneShotHash('sha256', token, 'base64');
    let entry = this.entries.get(key);
    if (entry !== undefined && !this.fresh(entry, nowMs)) {
      this.entries.delete(key);
      entry = undefined;
    }
    if (entry === undefined) {
      entry = this.evaluate(token);
      if (token.length <= MAX_JWT_SVID_LENGTH) this.remember(key, entry);
    } else {
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    if (entry.outcome instanceof DenyError) throw entry.outcome;
    checkJwtSvidTimes(entry.outcome, nowMs, this.options.leewaySeconds);
    return entry.outcome;
  }

  get size(): number {
    return this.entries.size;
  }

  private fresh(entry: CacheEntry, nowMs: number): boolean {
    if (entry.trustDomain !== null && this.bundleFor(entry.trustDomain) !== entry.bundle) return false;
    const outcome = entry.outcome;
    return outcome instanceof DenyError || nowMs <= outcome.expiresAt + this.options.leewaySeconds * 1000;
  }

  private evaluate(token: string): CacheEntry {
    let trustDomain: string | null = null;
    let bundle: TrustBundle | undefined;
    const lookup = (td: string): TrustBundle | undefined => {
      trustDomain = td;
      bundle = this.bundleFor(td);
      return bundle;
    };
    let outcome: JwtSvid | DenyError;
    try {
      outcome = verifyJwtSvidSignature(token, lookup, this.options.audiences);
    } catch (err) {
      if (!(err instanceof DenyError)) throw err;
      outcome = err;
    }
    return { trustDomain, bundle, outcome };
  }

  private remember(key: string, entry: CacheEntry): void {
    this.entries.set(key, entry);
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }
}
