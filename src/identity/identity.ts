/**
 * A presented workload identity (SPEC §4): `{scheme, credentialKind, uri, trustDomain, path}`.
 *
 * `credentialKind` says how the identity reached us:
 * - `uri`: a bare SPIFFE ID (Envoy's `source.principal`, an XFCC `URI=`);
 * - `x509_svid`: a certificate we checked against the X509-SVID rules;
 * - `jwt_svid`: a JWT-SVID whose signature we verified.
 */
export const CREDENTIAL_KINDS = ['uri', 'x509_svid', 'jwt_svid'] as const;
export type CredentialKind = (typeof CREDENTIAL_KINDS)[number];

/**
 * Strength order used when a capability is bound to a credential kind: uri < jwt_svid < x509_svid.
 * A JWT-SVID is a bearer token, usable by whoever holds it until it expires (JWT-SVID §7); an
 * X509-SVID presented over mTLS proves its key. So a capability bound from X.509 evidence needs an
 * X.509 presentation, and one bound to a JWT-SVID accepts either.
 */
const KIND_STRENGTH: Readonly<Record<CredentialKind, number>> = { uri: 0, jwt_svid: 1, x509_svid: 2 };

export function credentialKindStrength(kind: CredentialKind): number {
  return KIND_STRENGTH[kind];
}

export interface WorkloadIdentity {
  readonly scheme: 'spiffe';
  readonly credentialKind: CredentialKind;
  /** The SPIFFE ID, e.g. `spiffe://prod.chio/payments/worker`. */
  readonly uri: string;
  readonly trustDomain: string;
  /** The path part of the ID, `''` for a trust-domain-only ID. */
  readonly path: string;
}
