/**
 * CheckInput → the presented workload identity and its runtime-assurance tier (SPEC §4, §5).
 *
 * Sources (enabled in chio.yaml `identity.sources`):
 * - `certificate`: Envoy's `source.certificate` (URL-encoded PEM leaf) checked against the
 *   X509-SVID rules at the decision time → credential kind `x509_svid`;
 * - `principal`: Envoy's `source.principal` (first URI SAN, else DNS SAN, else subject) → `uri`.
 * Both present and naming different IDs → `identity_conflict` (we never pick one).
 * A presented credential that fails validation is an error (a deny), never "no identity".
 */
import type { Tier } from '../attestation/tier.js';
import type { CheckInput } from '../check/request.js';
import { deny, DenyError } from '../errors.js';
import { SpiffeId } from '../spiffe/id.js';
import { checkValidity, type SvidCache, type SvidLeaf } from '../spiffe/x509-svid.js';
import type { CredentialKind, WorkloadIdentity } from './identity.js';

export type IdentitySource = 'certificate' | 'principal';

export interface IdentityResult {
  readonly identity: WorkloadIdentity | null;
  readonly tier: Tier;
  /** who vouches for the identity: `envoy` (it authenticated the TLS peer), null for none */
  readonly verifier: string | null;
  /** a presented credential that failed validation; identity is then null */
  readonly error: DenyError | null;
  readonly svid: SvidLeaf | null;
}

export interface IdentityResolverOptions {
  readonly sources: readonly IdentitySource[];
  readonly svidCache: SvidCache;
  readonly clock: () => number;
  /** trust domains we hold a bundle for; with `requireKnownTrustDomain` every other one is denied */
  readonly knownTrustDomains?: ReadonlySet<string>;
  readonly requireKnownTrustDomain?: boolean;
}

const NO_IDENTITY: IdentityResult = { identity: null, tier: 'none', verifier: null, error: null, svid: null };

const URI_SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*:/;

export class IdentityResolver {
  private readonly useCertificate: boolean;
  private readonly usePrincipal: boolean;

  constructor(private readonly options: IdentityResolverOptions) {
    this.useCertificate = options.sources.includes('certificate');
    this.usePrincipal = options.sources.includes('principal');
  }

  resolve(input: CheckInput): IdentityResult {
    try {
      return this.resolveOrThrow(input);
    } catch (err) {
      if (err instanceof DenyError) return { ...NO_IDENTITY, error: err };
      throw err;
    }
  }

  private resolveOrThrow(input: CheckInput): IdentityResult {
    let svid: SvidLeaf | null = null;
    let fromCert: SpiffeId | null = null;
    if (this.useCertificate && input.certificate !== null) {
      svid = this.options.svidCache.get(input.certificate);
      checkValidity(svid, this.options.clock());
      fromCert = svid.spiffeId;
    }
    const fromPrincipal = this.usePrincipal && input.principal !== null ? parsePrincipal(input.principal) : null;

    if (fromCert && fromPrincipal && !fromCert.equals(fromPrincipal)) {
      throw deny(
        'identity_conflict',
        `certificate names ${fromCert.uri} but source.principal names ${fromPrincipal.uri}`.slice(0, 600),
      );
    }
    const id = fromCert ?? fromPrincipal;
    if (!id) return NO_IDENTITY;
    const kind: CredentialKind = fromCert ? 'x509_svid' : 'uri';
    if (this.options.requireKnownTrustDomain && !this.options.knownTrustDomains?.has(id.trustDomain)) {
      throw deny('unknown_trust_domain', `no trust bundle is configured for trust domain ${id.trustDomain}`);
    }
    return {
      identity: toWorkloadIdentity(id, kind),
      tier: 'attested',
      verifier: 'envoy',
      error: null,
      svid,
    };
  }
}

/** Envoy's principal: a SPIFFE ID, or a DNS name / RFC 2253 subject (not a SPIFFE identity). */
export function parsePrincipal(principal: string): SpiffeId {
  const scheme = URI_SCHEME_RE.exec(principal);
  if (scheme && scheme[0].toLowerCase() === 'spiffe:') return SpiffeId.parse(principal);
  const shown = JSON.stringify(principal.length > 100 ? principal.slice(0, 100) + '…' : principal);
  throw deny(
    'principal_not_spiffe',
    `source.principal ${shown} is not a SPIFFE ID (Envoy reports a DNS SAN or subject when the peer certificate has no URI SAN)`,
  );
}

export function toWorkloadIdentity(id: SpiffeId, credentialKind: CredentialKind): WorkloadIdentity {
  return { scheme: 'spiffe', credentialKind, uri: id.uri, trustDomain: id.trustDomain, path: id.path };
}
