/**
 * A runtime attestation presented for capability issuance, `chio.runtime-attestation.v1`
 * (SPEC §7 "Issue", §5 "Tier", `extensions.runtime_assurance.trusted_verifiers`):
 *
 * ```json
 * {"schema":"chio.runtime-attestation.v1","verifier":"https://spire.prod.internal","verifierFamily":"spiffe",
 *  "evidenceSchema":"chio.runtime-attestation.spiffe.x509-svid.v1","attestationType":"x509_svid",
 *  "issuedAt":"2026-12-01T00:00:00Z","expiresAt":"2026-12-01T01:00:00Z","evidenceSha256":"<64 hex>",
 *  "workloadIdentity":{"scheme":"spiffe","credentialKind":"x509_svid","uri":"spiffe://prod.chio/payments/worker",
 *                      "trustDomain":"prod.chio","path":"/payments/worker"},
 *  "runtimeIdentity":"spiffe://prod.chio/payments/worker"}
 * ```
 *
 * Fail closed; every refusal is `ChioError('issuance_refused', …, {field})` naming the field
 * (prefixed `runtimeAttestation.`):
 * - an unknown key, a missing or mistyped member;
 * - a malformed SPIFFE ID (`workloadIdentity.uri`, `runtimeIdentity`);
 * - `workloadIdentity.trustDomain` / `.path` disagreeing with its own `uri`;
 * - an explicit `workloadIdentity` disagreeing with the raw `runtimeIdentity` (scheme, trust
 *   domain or path); neither given;
 * - `workloadIdentity.credentialKind` other than the `attestationType`, an `evidenceSchema` of
 *   the other type;
 * - `issuedAt` in the future (beyond the skew), `expiresAt` not after `issuedAt`, expired evidence.
 *
 * Tier: raw evidence is `attested`. Only a `trusted_verifiers` entry matching schema + verifier +
 * family, with the attestation type allowed and within `max_evidence_age_seconds` of `issuedAt`,
 * promotes it to the entry's `effective_tier` (the same matcher the Check path uses,
 * src/attestation/verifiers.ts). Evidence too old for the entry stays `attested`: the highest
 * tier it satisfies.
 */
import { z } from 'zod';
import type { Tier } from '../attestation/tier.js';
import {
  jwtEvidence,
  JWT_SVID_EVIDENCE_SCHEMA,
  resolveEvidenceTier,
  SPIFFE_VERIFIER_FAMILY,
  x509Evidence,
  X509_SVID_EVIDENCE_SCHEMA,
  type AttestationType,
} from '../attestation/verifiers.js';
import { ChioError, DenyError } from '../errors.js';
import { CREDENTIAL_KINDS, type WorkloadIdentity } from '../identity/identity.js';
import type { TrustedVerifier } from '../policy/types.js';
import { parseRfc3339 } from '../receipt/query.js';
import { SpiffeId } from '../spiffe/id.js';
import { workloadIdentityFault } from './token.js';

export const RUNTIME_ATTESTATION_SCHEMA = 'chio.runtime-attestation.v1';
/** Skew tolerated on an attestation's `issuedAt` lying in the future. */
export const ATTESTATION_SKEW_MS = 30_000;

const FIELD = 'runtimeAttestation';

const EVIDENCE_SCHEMA_OF: Readonly<Record<AttestationType, string>> = {
  x509_svid: X509_SVID_EVIDENCE_SCHEMA,
  jwt_svid: JWT_SVID_EVIDENCE_SCHEMA,
};

/** RFC 3339 with a time zone (Z or ±hh:mm). */
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

const rfc3339 = z
  .string()
  .regex(RFC3339, 'expected an RFC 3339 time, e.g. 2026-12-01T00:00:00Z')
  // a calendar date that exists (Date.parse would read 2026-02-30 as 2 March)
  .refine((s) => parseRfc3339(s) !== null, 'not a real time');

export const runtimeAttestationSchema = z.strictObject({
  schema: z.literal(RUNTIME_ATTESTATION_SCHEMA),
  verifier: z.string().min(1).max(512),
  verifierFamily: z.string().min(1).max(64),
  evidenceSchema: z.enum([X509_SVID_EVIDENCE_SCHEMA, JWT_SVID_EVIDENCE_SCHEMA]),
  attestationType: z.enum(['x509_svid', 'jwt_svid']),
  issuedAt: rfc3339,
  expiresAt: rfc3339,
  evidenceSha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex digits'),
  workloadIdentity: z
    .strictObject({
      scheme: z.literal('spiffe', { error: (issue) => `unsupported scheme ${JSON.stringify(issue.input)}: only "spiffe"` }),
      credentialKind: z.enum(CREDENTIAL_KINDS),
      uri: z.string().max(2048),
      trustDomain: z.string().max(255),
      path: z.string().max(2048),
    })
    .optional(),
  runtimeIdentity: z.string().max(2048).optional(),
});

export type RuntimeAttestation = z.infer<typeof runtimeAttestationSchema>;

/** What issuance takes from a checked attestation. */
export interface AttestedWorkload {
  readonly workloadIdentity: WorkloadIdentity;
  readonly tier: Tier;
  /** the trusted_verifiers entry that promoted the evidence, null when none did */
  readonly trustedVerifier: string | null;
  /** why the evidence was not promoted by a matching entry (too old), else null */
  readonly note: string | null;
  /** the attestation's expiresAt (ms): a capability it binds expires no later */
  readonly expiresAtMs: number;
}

/** Checks an attestation (already shaped by {@link runtimeAttestationSchema}) and resolves its tier at `now`. */
export function resolveAttestation(att: RuntimeAttestation, trusted: readonly TrustedVerifier[], now: number): AttestedWorkload {
  const workloadIdentity = boundIdentity(att);
  if (att.evidenceSchema !== EVIDENCE_SCHEMA_OF[att.attestationType]) {
    throw refused('evidenceSchema', `${att.evidenceSchema} is not the evidence schema of attestationType ${att.attestationType}`);
  }
  const expiresAtMs = checkTimes(att, now);
  return { workloadIdentity, ...tierOf(att, trusted, now), expiresAtMs };
}

/** The attestation's expiresAt (ms), once its times are consistent and it has not expired at `now`. */
function checkTimes(att: RuntimeAttestation, now: number): number {
  const issuedAt = Date.parse(att.issuedAt.toUpperCase());
  const expiresAt = Date.parse(att.expiresAt.toUpperCase());
  if (issuedAt - ATTESTATION_SKEW_MS > now) throw refused('issuedAt', `${att.issuedAt} is in the future`);
  if (expiresAt <= issuedAt) throw refused('expiresAt', `${att.expiresAt} is not after issuedAt ${att.issuedAt}`);
  if (expiresAt <= now) throw refused('expiresAt', `the evidence expired at ${att.expiresAt}`);
  return expiresAt;
}

/** The workload the capability is bound to: the explicit workloadIdentity, else the raw runtimeIdentity. */
function boundIdentity(att: RuntimeAttestation): WorkloadIdentity {
  const raw = att.runtimeIdentity === undefined ? null : parseId(att.runtimeIdentity, 'runtimeIdentity');
  const explicit = att.workloadIdentity;
  if (explicit === undefined) {
    if (raw === null) throw refused('workloadIdentity', 'an attestation needs workloadIdentity or runtimeIdentity');
    return { scheme: 'spiffe', credentialKind: att.attestationType, uri: raw.uri, trustDomain: raw.trustDomain, path: raw.path };
  }
  const fault = workloadIdentityFault(explicit);
  if (fault !== null) throw refused(`workloadIdentity.${fault.field}`, fault.message);
  if (raw !== null) checkAgreement(explicit, raw);
  if (explicit.credentialKind !== att.attestationType) {
    throw refused(
      'workloadIdentity.credentialKind',
      `${explicit.credentialKind} disagrees with attestationType ${att.attestationType} (the credential the evidence is about)`,
    );
  }
  return { ...explicit };
}

/**
 * The explicit identity must name the raw runtimeIdentity: same trust domain and path (both
 * schemes are `spiffe` by then: the schema admits no other, a non-SPIFFE runtimeIdentity is
 * malformed).
 */
function checkAgreement(explicit: WorkloadIdentity, raw: SpiffeId): void {
  if (explicit.trustDomain !== raw.trustDomain) {
    throw refused(
      'workloadIdentity.trustDomain',
      `${JSON.stringify(explicit.trustDomain)} disagrees with the trust domain ${JSON.stringify(raw.trustDomain)} of runtimeIdentity`,
    );
  }
  if (explicit.path !== raw.path) {
    throw refused('workloadIdentity.path', `${JSON.stringify(explicit.path)} disagrees with the path ${JSON.stringify(raw.path)} of runtimeIdentity`);
  }
}

function tierOf(att: RuntimeAttestation, trusted: readonly TrustedVerifier[], now: number): Pick<AttestedWorkload, 'tier' | 'trustedVerifier' | 'note'> {
  if (att.verifierFamily !== SPIFFE_VERIFIER_FAMILY) return { tier: 'attested', trustedVerifier: null, note: null };
  const issuedAt = Date.parse(att.issuedAt.toUpperCase());
  const evidence = att.attestationType === 'x509_svid' ? x509Evidence(att.verifier, issuedAt) : jwtEvidence(att.verifier, issuedAt);
  return resolveEvidenceTier(evidence, trusted, now);
}

function parseId(text: string, field: string): SpiffeId {
  try {
    return SpiffeId.parse(text);
  } catch (err) {
    if (err instanceof DenyError) throw refused(field, err.message);
    throw err;
  }
}

function refused(field: string, message: string): ChioError {
  return issuanceRefused(`${FIELD}.${field}`, message);
}

/** The one refusal of issuance: `<field>: <message>`, with the field. */
export function issuanceRefused(field: string, message: string): ChioError {
  return new ChioError('issuance_refused', `${field}: ${message}`, { field });
}
