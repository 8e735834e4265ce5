/**
 * Tier resolution under trusted_verifiers (src/attestation/verifiers.ts).
 */
import { describe, expect, it } from 'vitest';
import {
  JWT_SVID_EVIDENCE_SCHEMA,
  X509_SVID_EVIDENCE_SCHEMA,
  jwtEvidence,
  resolveEvidenceTier,
  x509Evidence,
} from '../../src/attestation/verifiers.js';
import type { TrustedVerifier } from '../../src/policy/types.js';

const NOW = Date.parse('2030-06-15T12:00:00Z');
const SPIRE = 'https://spire.prod.internal';

function entry(over: Partial<TrustedVerifier> = {}): TrustedVerifier {
  return {
    name: 'spire_prod',
    schema: X509_SVID_EVIDENCE_SCHEMA,
    verifier: SPIRE,
    verifierFamily: 'spiffe',
    effectiveTier: 'verified',
    maxEvidenceAgeSeconds: 120,
    allowedAttestationTypes: ['x509_svid'],
    ...over,
  };
}


describe('resolveEvidenceTier', () => {
  it('promotes matching, fresh evidence to the effective tier', () => {
    expect(resolveEvidenceTier(x509Evidence(SPIRE, NOW - 120_000), [entry()], NOW)).toEqual({ tier: 'verified', trustedVerifier: 'spire_prod', note: null });
  });

  it('stays attested without a matching entry (verifier, schema or family differ)', () => {
    const ev = x509Evidence(SPIRE, NOW);
    expect(resolveEvidenceTier(ev, [], NOW)).toEqual({ tier: 'attested', trustedVerifier: null, note: null });
    expect(resolveEvidenceTier(ev, [entry({ verifier: 'https://spire.staging' })], NOW).tier).toBe('attested');
    expect(resolveEvidenceTier(ev, [entry({ schema: JWT_SVID_EVIDENCE_SCHEMA })], NOW).tier).toBe('attested');
    expect(resolveEvidenceTier(ev, [entry({ verifierFamily: 'tpm' })], NOW).tier).toBe('attested');
  });

  it('does not promote a type outside allowed_attestation_types', () => {
    const jwtEntry = entry({ schema: JWT_SVID_EVIDENCE_SCHEMA, allowedAttestationTypes: ['x509_svid'] });
    expect(resolveEvidenceTier(jwtEvidence(SPIRE, NOW), [jwtEntry], NOW)).toEqual({ tier: 'attested', trustedVerifier: null, note: null });
    const any = entry({ schema: JWT_SVID_EVIDENCE_SCHEMA, allowedAttestationTypes: null });
    expect(resolveEvidenceTier(jwtEvidence(SPIRE, NOW), [any], NOW).tier).toBe('verified');
  });

  it('the first matching entry in file order decides', () => {
    const first = entry({ name: 'first', allowedAttestationTypes: ['jwt_svid'] });
    const second = entry({ name: 'second' });
    expect(resolveEvidenceTier(x509Evidence(SPIRE, NOW), [first, second], NOW)).toEqual({ tier: 'attested', trustedVerifier: null, note: null });
    expect(resolveEvidenceTier(x509Evidence(SPIRE, NOW), [second, first], NOW).trustedVerifier).toBe('second');
  });

  it('does not promote evidence past max_evidence_age_seconds, and says why (x509: now − notBefore)', () => {
    expect(resolveEvidenceTier(x509Evidence(SPIRE, NOW - 121_000), [entry()], NOW)).toEqual({
      tier: 'attested',
      trustedVerifier: null,
      note: 'X.509-SVID is 121s old (since notBefore 2030-06-15T11:57:59.000Z); trusted verifier spire_prod accepts at most 120s',
    });
  });

  it('does not promote a JWT-SVID older than the limit by iat, or without iat', () => {
    const jwtEntry = entry({ schema: JWT_SVID_EVIDENCE_SCHEMA, allowedAttestationTypes: ['jwt_svid'], maxEvidenceAgeSeconds: 60 });
    expect(resolveEvidenceTier(jwtEvidence(SPIRE, NOW - 60_000), [jwtEntry], NOW).tier).toBe('verified');
    expect(resolveEvidenceTier(jwtEvidence(SPIRE, NOW - 61_000), [jwtEntry], NOW)).toEqual({
      tier: 'attested',
      trustedVerifier: null,
      note: 'JWT-SVID is 61s old (since iat 2030-06-15T11:58:59.000Z); trusted verifier spire_prod accepts at most 60s',
    });
    expect(resolveEvidenceTier(jwtEvidence(SPIRE, null), [jwtEntry], NOW)).toEqual({
      tier: 'attested',
      trustedVerifier: null,
      note: 'JWT-SVID has no issue time (iat), so its age cannot be held to max_evidence_age_seconds 60 of trusted verifier spire_prod',
    });
  });

  it('no age limit: any age is fine', () => {
    expect(resolveEvidenceTier(x509Evidence(SPIRE, 0), [entry({ maxEvidenceAgeSeconds: null })], NOW).tier).toBe('verified');
  });
});
