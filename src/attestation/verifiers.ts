/**
 * Runtime-assurance tier of verified SPIFFE evidence under the policy's `trusted_verifiers`
 * (SPEC §5 "Tier", `extensions.runtime_assurance.trusted_verifiers`; schemas SPEC §2).
 *
 * Evidence chio-authz verified itself against a trust bundle is described by
 * `{schema, verifier, family, attestationType, issuedAt}`: schema
 * `chio.runtime-attestation.spiffe.x509-svid.v1` or `…jwt-svid.v1`, verifier = the bundle
 * source's configured verifier name, family `spiffe`, type `x509_svid` / `jwt_svid`, issuedAt =
 * the X.509 notBefore or the JWT iat. The FIRST entry (file order) whose schema, verifier and
 * verifier_family match decides:
 * - `allowed_attestation_types` set and without the type → no promotion (stays `attested`);
 * - `max_evidence_age_seconds` set and now − issuedAt above it (or issuedAt unknown) → no
 *   promotion either (stays `attested`), with a note saying why (the deny message of a rule whose
 *   tier requirement it then misses, and the capability issuance log, show it);
 * - else the entry's `effective_tier`.
 * No matching entry: `attested`. Evidence nobody verified against a bundle never comes here.
 *
 * Stale evidence is not promoted, and is not a deny of its own: SPEC §5 gives the entry's tier to
 * evidence "within max_evidence_age_seconds", and every other Envoy-authenticated identity stays
 * `attested`. (It was a deny `evidence_too_old` on every rule, even one with no tier requirement:
 * with the spec's example of 120 s, nearly every SPIRE X509-SVID, which rotates after ~30 min, was
 * refused everywhere. Found by the spec audit.)
 */
import type { TrustedVerifier } from '../policy/types.js';
import type { Tier } from './tier.js';

export const X509_SVID_EVIDENCE_SCHEMA = 'chio.runtime-attestation.spiffe.x509-svid.v1';
export const JWT_SVID_EVIDENCE_SCHEMA = 'chio.runtime-attestation.spiffe.jwt-svid.v1';
export const SPIFFE_VERIFIER_FAMILY = 'spiffe';

export type AttestationType = 'x509_svid' | 'jwt_svid';

export interface VerifiedEvidence {
  readonly schema: typeof X509_SVID_EVIDENCE_SCHEMA | typeof JWT_SVID_EVIDENCE_SCHEMA;
  /** the verifier name of the bundle source that verified it */
  readonly verifier: string;
  readonly family: typeof SPIFFE_VERIFIER_FAMILY;
  readonly attestationType: AttestationType;
  /** ms since epoch: X.509 notBefore, JWT iat; null when unknown */
  readonly issuedAt: number | null;
}

export interface TierResolution {
  readonly tier: Tier;
  /** the name of the trusted_verifiers entry that promoted it, null when none did */
  readonly trustedVerifier: string | null;
  /** why a matching entry did not promote it (the evidence's age), null otherwise */
  readonly note: string | null;
}

/** Evidence of an X.509-SVID chain verified against a bundle of `verifier`. */
export function x509Evidence(verifier: string, notBefore: number): VerifiedEvidence {
  return { schema: X509_SVID_EVIDENCE_SCHEMA, verifier, family: SPIFFE_VERIFIER_FAMILY, attestationType: 'x509_svid', issuedAt: notBefore };
}

/** Evidence of a JWT-SVID verified with a key of a bundle of `verifier`. */
export function jwtEvidence(verifier: string, issuedAt: number | null): VerifiedEvidence {
  return { schema: JWT_SVID_EVIDENCE_SCHEMA, verifier, family: SPIFFE_VERIFIER_FAMILY, attestationType: 'jwt_svid', issuedAt };
}

const NOT_PROMOTED: TierResolution = { tier: 'attested', trustedVerifier: null, note: null };

/** The tier of `evidence` at `nowMs`. Never throws. */
export function resolveEvidenceTier(evidence: VerifiedEvidence, trusted: readonly TrustedVerifier[], nowMs: number): TierResolution {
  const entry = trusted.find(
    (t) => t.schema === evidence.schema && t.verifier === evidence.verifier && t.verifierFamily === evidence.family,
  );
  if (entry === undefined) return NOT_PROMOTED;
  if (entry.allowedAttestationTypes !== null && !entry.allowedAttestationTypes.includes(evidence.attestationType)) {
    return NOT_PROMOTED;
  }
  const stale = entry.maxEvidenceAgeSeconds === null ? null : staleness(evidence, entry, nowMs);
  if (stale !== null) return { tier: 'attested', trustedVerifier: null, note: stale };
  return { tier: entry.effectiveTier, trustedVerifier: entry.name, note: null };
}

/** Why `evidence` is too old for `entry`'s max_evidence_age_seconds, or null when it is not. */
function staleness(evidence: VerifiedEvidence, entry: TrustedVerifier, nowMs: number): string | null {
  const max = entry.maxEvidenceAgeSeconds ?? Infinity;
  const what = evidence.attestationType === 'x509_svid' ? 'X.509-SVID' : 'JWT-SVID';
  if (evidence.issuedAt === null) {
    return `${what} has no issue time (iat), so its age cannot be held to max_evidence_age_seconds ${max} of trusted verifier ${entry.name}`;
  }
  const ageSeconds = Math.floor((nowMs - evidence.issuedAt) / 1000);
  if (ageSeconds <= max) return null;
  const since = evidence.attestationType === 'x509_svid' ? 'notBefore' : 'iat';
  return `${what} is ${ageSeconds}s old (since ${since} ${new Date(evidence.issuedAt).toISOString()}); trusted verifier ${entry.name} accepts at most ${max}s`;
}
