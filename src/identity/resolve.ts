/**
 * CheckInput → the presented workload identity and its runtime-assurance tier (SPEC §4, §5).
 *
 * Sources (enabled in chio.yaml `identity.sources`), each yielding at most one claim:
 * - `certificate`: Envoy's `source.certificate` (URL-encoded PEM leaf) checked against the
 *   X509-SVID rules at the decision time → `x509_svid`; when a bundle of its trust domain is
 *   configured, the chain must verify against it (src/spiffe/chain.ts);
 * - `principal`: Envoy's `source.principal` (first URI SAN, else DNS SAN, else subject) → `uri`;
 * - `xfcc` (opt-in): the LAST element of `x-forwarded-client-cert` (src/identity/xfcc.ts): its
 *   `Cert=` → `x509_svid` when it verifies against the bundle (with `Chain=` intermediates),
 *   else its `URI=` → `uri`, tier `basic` (a header is not an authenticated source);
 * - `jwt_svid` (opt-in): `<header>: Bearer <JWT-SVID>` verified against the JWT bundle of its
 *   `sub`'s trust domain (src/spiffe/jwt-svid.ts) → `jwt_svid`.
 * Any two claims naming different IDs → `identity_conflict` (we never pick one). Agreeing claims:
 * the one with the highest tier speaks (ties: x509_svid/jwt_svid before uri, then source order).
 *
 * Tier and verifier of a claim: Envoy-authenticated but unverified evidence is `attested` by
 * `envoy`; evidence verified against a bundle carries the bundle source's verifier name and the
 * tier src/attestation/verifiers.ts resolves under the policy's `trusted_verifiers`; an XFCC URI
 * alone is `basic` with no verifier. A presented credential that fails validation is an error
 * (a deny), never "no identity".
 *
 * Hot path: a repeated SVID costs the SvidCache lookup, the chain-verification WeakMap lookup,
 * one bundle Map get and a scan of the (few) trusted verifiers.
 */
import type { Tier } from '../attestation/tier.js';
import { tierRank } from '../attestation/tier.js';
import { jwtEvidence, resolveEvidenceTier, x509Evidence, type VerifiedEvidence } from '../attestation/verifiers.js';
import type { CheckInput } from '../check/request.js';
import { deny, describe, DenyError } from '../errors.js';
import type { TrustedVerifier } from '../policy/types.js';
import { BundleSet, parseCaCertificate, pemCertificates, type CaCertificate } from '../spiffe/bundle.js';
import { X509ChainVerifier } from '../spiffe/chain.js';
import { quoteUntrusted, SpiffeId } from '../spiffe/id.js';
import { bearerToken, JwtSvidVerifier } from '../spiffe/jwt-svid.js';
import { checkValidity, type SvidCache, type SvidLeaf } from '../spiffe/x509-svid.js';
import { credentialKindStrength, type CredentialKind, type WorkloadIdentity } from './identity.js';
import { trustedXfccElement, type XfccElement } from './xfcc.js';

export type IdentitySource = 'certificate' | 'principal' | 'xfcc' | 'jwt_svid';

export interface IdentityResult {
  readonly identity: WorkloadIdentity | null;
  readonly tier: Tier;
  /**
   * who vouches for the identity: a bundle source's verifier name (we verified the evidence
   * against its bundle), `envoy` (it authenticated the TLS peer), null for none
   */
  readonly verifier: string | null;
  /** a presented credential that failed validation; identity is then null */
  readonly error: DenyError | null;
  /** the X.509-SVID leaf the identity came from, if any */
  readonly svid: SvidLeaf | null;
  /** why verified evidence was not promoted by the trusted verifier it matched (too old), else null */
  readonly tierNote: string | null;
}

export interface JwtSvidSettings {
  /** lower-case header name carrying `Bearer <token>` */
  readonly header: string;
  readonly audiences: readonly string[];
  readonly leewaySeconds: number;
}

export interface IdentityResolverOptions {
  readonly sources: readonly IdentitySource[];
  readonly svidCache: SvidCache;
  readonly clock: () => number;
  /** trust bundles per trust domain (default: none) */
  readonly bundles?: BundleSet;
  /** deny `unknown_trust_domain` for an identity whose trust domain has no bundle */
  readonly requireKnownTrustDomain?: boolean;
  /** required when `sources` has `jwt_svid` */
  readonly jwtSvid?: JwtSvidSettings;
  /** the current policy's trusted verifiers, when `resolve` is called without a policy */
  readonly trustedVerifiers?: () => readonly TrustedVerifier[];
  /** bound of the JWT-SVID cache (default 10 000) */
  readonly jwtCacheSize?: number;
}

/** What the policy contributes to identity resolution. */
export interface IdentityPolicy {
  readonly trustedVerifiers: readonly TrustedVerifier[];
}

const NO_IDENTITY: IdentityResult = { identity: null, tier: 'none', verifier: null, error: null, svid: null, tierNote: null };

const URI_SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*:/;

const XFCC_HEADER = 'x-forwarded-client-cert';

const ENVOY = 'envoy';

/** One source's view of the caller. */
interface Claim {
  readonly source: IdentitySource;
  readonly id: SpiffeId;
  readonly kind: CredentialKind;
  readonly tier: Tier;
  readonly verifier: string | null;
  readonly svid: SvidLeaf | null;
  readonly tierNote?: string | null;
}

/** The moment and policy one resolution runs under. */
interface Context {
  readonly now: number;
  readonly trusted: readonly TrustedVerifier[];
}

export class IdentityResolver {
  private readonly use: ReadonlySet<IdentitySource>;
  private readonly bundles: BundleSet;
  private readonly chains: X509ChainVerifier;
  private readonly jwt: JwtSvidVerifier | null;

  constructor(private readonly options: IdentityResolverOptions) {
    this.use = new Set(options.sources);
    this.bundles = options.bundles ?? new BundleSet();
    this.chains = new X509ChainVerifier(this.bundles);
    if (this.use.has('jwt_svid') && options.jwtSvid === undefined) {
      throw new TypeError('IdentityResolver: the jwt_svid source needs jwtSvid settings');
    }
    this.jwt =
      this.use.has('jwt_svid') && options.jwtSvid !== undefined
        ? new JwtSvidVerifier((td) => this.bundles.get(td), options.jwtSvid, options.jwtCacheSize)
        : null;
  }

  /**
   * The identity and tier of one request. Pass the policy the request is decided under (its
   * trusted_verifiers promote verified evidence); without it the `trustedVerifiers` option is
   * read. Never throws a DenyError: it is returned as `error`.
   */
  resolve(input: CheckInput, policy?: IdentityPolicy): IdentityResult {
    try {
      const trusted = policy?.trustedVerifiers ?? this.options.trustedVerifiers?.() ?? [];
      return this.resolveOrThrow(input, { now: this.options.clock(), trusted });
    } catch (err) {
      if (err instanceof DenyError) return { ...NO_IDENTITY, error: err };
      throw err;
    }
  }

  private resolveOrThrow(input: CheckInput, ctx: Context): IdentityResult {
    const claims: Claim[] = [];
    const fromCertificate = this.use.has('certificate') && input.certificate !== null ? this.certificateClaim(input.certificate, ctx) : null;
    if (fromCertificate) claims.push(fromCertificate);
    if (this.use.has('principal') && input.principal !== null) claims.push(this.principalClaim(input.principal, fromCertificate));
    const xfcc = this.use.has('xfcc') ? input.headers.get(XFCC_HEADER) : undefined;
    if (xfcc !== undefined) {
      // Envoy authenticated a peer in this request (its certificate or principal): the element it set
      // describes that peer; without one, a certificate in the header proves nobody holds its key
      const anchored = claims.length > 0;
      const claim = this.xfccClaim(xfcc, fromCertificate, ctx, anchored);
      if (claim) claims.push(claim);
    }
    const authorization = this.jwt !== null && this.options.jwtSvid ? input.headers.get(this.options.jwtSvid.header) : undefined;
    if (authorization !== undefined) {
      const claim = this.jwtClaim(authorization, ctx);
      if (claim) claims.push(claim);
    }
    if (claims.length === 0) return NO_IDENTITY;
    const chosen = agreeingClaim(claims);
    this.checkKnownTrustDomain(chosen.id);
    return {
      identity: toWorkloadIdentity(chosen.id, chosen.kind),
      tier: chosen.tier,
      verifier: chosen.verifier,
      error: null,
      svid: chosen.svid,
      tierNote: chosen.tierNote ?? null,
    };
  }

  private checkKnownTrustDomain(id: SpiffeId): void {
    if (!this.options.requireKnownTrustDomain) return;
    const td = id.trustDomain;
    // a trust domain pending only because a Workload API source has not delivered yet, or because it
    // was withdrawn, is not known: a principal or XFCC URI of it, which no chain check reaches, is refused
    if (this.bundles.get(td) === undefined && !this.bundles.isConfigured(td)) {
      throw deny('unknown_trust_domain', `no trust bundle is configured for trust domain ${td}`);
    }
  }

  private certificateClaim(certificate: string, ctx: Context): Claim {
    const svid = this.options.svidCache.get(certificate);
    checkValidity(svid, ctx.now);
    return this.x509Claim('certificate', svid, '', () => [], ctx, { tier: 'attested', verifier: ENVOY, kind: 'x509_svid' });
  }

  /**
   * A leaf's claim: verified against its trust domain's bundle when there is one (tier from
   * the trusted verifiers), else `unverified`.
   */
  private x509Claim(
    source: IdentitySource,
    svid: SvidLeaf,
    chainKey: string,
    presented: () => readonly CaCertificate[],
    ctx: Context,
    unverified: { tier: Tier; verifier: string | null; kind: CredentialKind },
  ): Claim {
    const outcome = this.chains.verify(svid, chainKey, presented, ctx.now);
    if (outcome.kind === 'no_bundle') return { source, id: svid.spiffeId, ...unverified, svid };
    const verifier = outcome.bundle.verifier;
    const { tier, note } = resolveEvidenceTier(x509Evidence(verifier, svid.notBefore), ctx.trusted, ctx.now);
    return { source, id: svid.spiffeId, kind: 'x509_svid', tier, verifier, svid, tierNote: note };
  }

  private principalClaim(principal: string, fromCertificate: Claim | null): Claim {
    // Envoy's principal is the certificate's URI SAN: equal strings need no second parse.
    const id = fromCertificate !== null && principal === fromCertificate.id.uri ? fromCertificate.id : parsePrincipal(principal);
    return { source: 'principal', id, kind: 'uri', tier: 'attested', verifier: ENVOY, svid: null };
  }

  private xfccClaim(header: string, fromCertificate: Claim | null, ctx: Context, anchored: boolean): Claim | null {
    const element = trustedXfccElement(header);
    // the certificate Envoy authenticated (source.certificate) is the one the trusted element must describe
    const authenticated = fromCertificate?.svid ?? null;
    if (element.hash !== null && authenticated !== null && element.hash.toLowerCase() !== authenticated.sha256) {
      throw deny('identity_conflict', 'x-forwarded-client-cert Hash is not the SHA-256 of source.certificate (the peer certificate Envoy authenticated)');
    }
    const uri = xfccUri(element);
    const leafText = element.cert ?? firstChainCertificate(element.chain);
    if (leafText === null) {
      if (uri === null) {
        noXfccUri(element);
        return null;
      }
      return { source: 'xfcc', id: uri, kind: 'uri', tier: 'basic', verifier: null, svid: null };
    }
    const svid = xfccLeaf(() => this.options.svidCache.get(leafText));
    if (element.hash !== null && element.hash.toLowerCase() !== svid.sha256) {
      throw deny('malformed_xfcc', 'x-forwarded-client-cert: Hash does not match the SHA-256 of Cert');
    }
    if (uri !== null && !uri.equals(svid.spiffeId)) {
      throw deny('identity_conflict', conflictMessage('XFCC URI', uri, 'XFCC Cert', svid.spiffeId));
    }
    checkValidity(svid, ctx.now);
    const chain = element.chain;
    const claim = this.x509Claim('xfcc', svid, chain ?? '', () => (chain === null ? [] : xfccIntermediates(chain, svid)), ctx, {
      tier: 'basic',
      verifier: null,
      kind: 'uri',
    });
    // a certificate is public: verified and valid, it still says nothing of who sent it unless Envoy
    // authenticated that peer (source.certificate or source.principal in the same request)
    return anchored ? claim : { ...claim, kind: 'uri', tier: 'basic', verifier: null, tierNote: null };
  }

  private jwtClaim(headerValue: string, ctx: Context): Claim | null {
    if (this.jwt === null) return null;
    const token = bearerToken(headerValue);
    if (token === null) {
      // a Bearer credential is presented but is not one token (two headers joined, two tokens, none):
      // a presented credential that cannot be validated is a deny, never "no JWT-SVID" (SPEC §4)
      if (BEARER_ELEMENT.test(headerValue)) throw deny('jwt_svid_invalid', 'JWT-SVID header is not one Bearer token (RFC 6750 §2.1)');
      return null;
    }
    const svid = this.jwt.verify(token, ctx.now);
    const verifier = svid.bundle.verifier;
    const evidence: VerifiedEvidence = jwtEvidence(verifier, svid.issuedAt);
    const { tier, note } = resolveEvidenceTier(evidence, ctx.trusted, ctx.now);
    return { source: 'jwt_svid', id: svid.spiffeId, kind: 'jwt_svid', tier, verifier, svid: null, tierNote: note };
  }
}

/** A header value (or one of the comma-joined values of repeated headers) that uses the Bearer scheme. */
const BEARER_ELEMENT = /(?:^|,)\s*bearer\b/i;

const SOURCE_NAMES: Readonly<Record<IdentitySource, string>> = {
  certificate: 'certificate',
  principal: 'source.principal',
  xfcc: 'x-forwarded-client-cert',
  jwt_svid: 'JWT-SVID',
};

function conflictMessage(aName: string, a: SpiffeId, bName: string, b: SpiffeId): string {
  return `${aName} names ${a.uri} but ${bName} names ${b.uri}`.slice(0, 600);
}

/** All claims must name the same ID; the strongest speaks. */
function agreeingClaim(claims: readonly Claim[]): Claim {
  const [first, ...rest] = claims as [Claim, ...Claim[]];
  let best = first;
  for (const claim of rest) {
    if (!claim.id.equals(first.id)) {
      throw deny('identity_conflict', conflictMessage(SOURCE_NAMES[first.source], first.id, SOURCE_NAMES[claim.source], claim.id));
    }
    if (stronger(claim, best)) best = claim;
  }
  return best;
}

function stronger(a: Claim, b: Claim): boolean {
  const byTier = tierRank(a.tier) - tierRank(b.tier);
  if (byTier !== 0) return byTier > 0;
  return credentialKindStrength(a.kind) > credentialKindStrength(b.kind);
}

/** The SPIFFE ID of an XFCC element's URI (empty values ignored), or null. */
/**
 * An element whose `URI=` is present but empty: Envoy forwards the URI SANs
 * (`set_current_client_cert_details.uri`) and the peer's certificate has none, which every other
 * source denies. A presented credential that fails validation is a deny, never "no identity". An
 * element without any `URI=` only says Envoy was not asked to forward it: no claim.
 */
function noXfccUri(element: XfccElement): void {
  if (element.uri.length === 0) return;
  const dns = element.dns.filter((d) => d !== '');
  if (dns.length > 0) {
    throw deny('svid_dns_san_only', `x-forwarded-client-cert element describes a certificate with ${dns.length} DNS SAN(s) but no URI SAN; an X509-SVID has exactly one URI SAN`);
  }
  throw deny('svid_no_uri_san', 'x-forwarded-client-cert element describes a certificate with no URI SAN (URI= is empty); an X509-SVID has exactly one URI SAN');
}

/** The XFCC Cert's leaf; a fault names the header, not source.certificate (the SvidCache's wording). */
function xfccLeaf(parse: () => SvidLeaf): SvidLeaf {
  try {
    return parse();
  } catch (err) {
    if (!(err instanceof DenyError)) throw err;
    const message = err.message.replace(/^certificate: /, '').replace('source.certificate', 'the value');
    throw deny(err.code, `x-forwarded-client-cert Cert: ${message}`, { cause: err });
  }
}

function xfccUri(element: XfccElement): SpiffeId | null {
  const uris = element.uri.filter((u) => u !== '');
  if (uris.length > 1) {
    throw deny('svid_multiple_uri_sans', `x-forwarded-client-cert element has ${uris.length} URI values; an X509-SVID has exactly one`);
  }
  const uri = uris[0];
  if (uri === undefined) return null;
  const scheme = URI_SCHEME_RE.exec(uri);
  if (!scheme || scheme[0].toLowerCase() !== 'spiffe:') {
    throw deny('malformed_spiffe_id', `x-forwarded-client-cert URI ${quoteUntrusted(uri, 100)} is not a SPIFFE ID`);
  }
  return leafId(SpiffeId.parse(uri), 'x-forwarded-client-cert URI');
}

function decodeXfccPem(urlEncoded: string): Buffer[] {
  try {
    return pemCertificates(decodeURIComponent(urlEncoded));
  } catch (err) {
    throw deny('malformed_xfcc', `x-forwarded-client-cert: Chain is not URL-encoded PEM certificates (${describe(err)})`);
  }
}

/** The leaf of a `Chain=` value, re-encoded as Envoy encodes `Cert=` (the SvidCache key form). */
function firstChainCertificate(chain: string | null): string | null {
  if (chain === null) return null;
  const first = decodeXfccPem(chain)[0];
  if (first === undefined) throw deny('malformed_xfcc', 'x-forwarded-client-cert: Chain holds no certificate');
  const body = first.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n');
  return encodeURIComponent(`-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`);
}

/** The intermediates of a `Chain=` value (the whole chain, leaf first). */
function xfccIntermediates(chain: string, leaf: SvidLeaf): CaCertificate[] {
  const [first, ...rest] = decodeXfccPem(chain);
  if (first === undefined || !first.equals(leaf.der)) {
    throw deny('malformed_xfcc', 'x-forwarded-client-cert: Chain does not start with the client certificate');
  }
  return rest.map((der) => {
    try {
      return parseCaCertificate(der);
    } catch (err) {
      throw deny('malformed_xfcc', `x-forwarded-client-cert: Chain: ${describe(err)}`);
    }
  });
}

/** Envoy's principal: a SPIFFE ID, or a DNS name / RFC 2253 subject (not a SPIFFE identity). */
/**
 * The principal and the XFCC URI stand for an X509-SVID's URI SAN, whose SPIFFE ID must have a path
 * (X509-SVID §2; the certificate path checks the same in x509-svid.ts): a bare trust domain names no
 * workload, and a rule that matches a trust domain alone must not admit it.
 */
function leafId(id: SpiffeId, what: string): SpiffeId {
  if (id.path === '') throw deny('malformed_spiffe_id', `${what} ${quoteUntrusted(id.uri, 100)} names a trust domain, not a workload (an X509-SVID's SPIFFE ID has a path)`);
  return id;
}

export function parsePrincipal(principal: string): SpiffeId {
  const scheme = URI_SCHEME_RE.exec(principal);
  if (scheme && scheme[0].toLowerCase() === 'spiffe:') return leafId(SpiffeId.parse(principal), 'source.principal');
  const shown = JSON.stringify(principal.length > 100 ? principal.slice(0, 100) + '…' : principal);
  throw deny(
    'principal_not_spiffe',
    `source.principal ${shown} is not a SPIFFE ID (Envoy reports a DNS SAN or subject when the peer certificate has no URI SAN)`,
  );
}

export function toWorkloadIdentity(id: SpiffeId, credentialKind: CredentialKind): WorkloadIdentity {
  return { scheme: 'spiffe', credentialKind, uri: id.uri, trustDomain: id.trustDomain, path: id.path };
}
