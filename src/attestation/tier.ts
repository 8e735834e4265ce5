/**
 * Runtime-assurance tiers (SPEC §5): `none < basic < attested < verified`.
 *
 * - none: no identity was presented;
 * - basic: an identity came only from a source nobody authenticated (e.g. a header);
 * - attested: Envoy authenticated the peer (principal, structurally valid X509-SVID);
 * - verified: the evidence matched a `trusted_verifiers` entry of the policy.
 */
export const TIERS = ['none', 'basic', 'attested', 'verified'] as const;
export type Tier = (typeof TIERS)[number];

const RANK: Readonly<Record<Tier, number>> = { none: 0, basic: 1, attested: 2, verified: 3 };

export function tierRank(tier: Tier): number {
  return RANK[tier];
}

/** True when `have` is at or above `need`. */
export function tierSatisfies(have: Tier, need: Tier): boolean {
  return RANK[have] >= RANK[need];
}

export function isTier(value: unknown): value is Tier {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(RANK, value);
}
