/**
 * The capability stage of the Check path (SPEC §7 "At Check", §5 `require_capability`), run
 * after the policy's decision. A capability is an ADDITIONAL gate: it never widens what the
 * policy allows.
 *
 * - decision deny: the policy's reason stands (first failure wins); a presented token is only
 *   decoded, so the receipt can carry its id;
 * - decision allow, no header: `capability_required` when the rule says `require_capability`,
 *   else nothing to check;
 * - decision allow, a header (even when the rule does not require one): authenticated and
 *   checked against the request (./verify.ts gives the order); any miss is a deny with its code.
 *
 * `capabilityId` is the token's id whenever the header decoded (allow or deny), else null.
 */
import type { IdentityResult } from '../identity/resolve.js';
import type { Decision } from '../policy/evaluate.js';
import { checkGrant, CapabilityVerifier, type CapabilityFailure } from './verify.js';

export interface CapabilityStageDeps {
  readonly verifier: CapabilityVerifier;
  readonly isRevoked: (id: string) => boolean;
}

export interface CapabilityStageResult {
  readonly capabilityId: string | null;
  /** set when the capability turns an allow into a deny */
  readonly failure: CapabilityFailure | null;
}

const NOTHING: CapabilityStageResult = { capabilityId: null, failure: null };

export function capabilityStage(
  header: string | undefined,
  decision: Decision,
  identity: IdentityResult,
  now: number,
  deps: CapabilityStageDeps,
): CapabilityStageResult {
  if (decision.verdict === 'deny') return header === undefined ? NOTHING : { capabilityId: deps.verifier.idOf(header), failure: null };
  if (header === undefined) {
    return decision.requireCapability
      ? {
          capabilityId: null,
          failure: { code: 'capability_required', message: `rule ${JSON.stringify(decision.rule)} requires a capability and none was presented` },
        }
      : NOTHING;
  }
  const auth = deps.verifier.authenticate(header);
  if (!auth.ok) return { capabilityId: auth.token?.capability.id ?? null, failure: auth.failure };
  const failure = checkGrant(auth.token, {
    now,
    tool: decision.tool,
    identity: identity.identity,
    tier: identity.tier,
    isRevoked: deps.isRevoked,
  });
  return { capabilityId: auth.token.capability.id, failure };
}

/** The decision after the capability stage: a failure denies (403), keeping rule, tool and match records. */
export function applyCapabilityStage(decision: Decision, result: CapabilityStageResult): Decision {
  if (result.failure === null) return decision;
  return { ...decision, verdict: 'deny', reason: { code: result.failure.code, message: result.failure.message }, httpStatus: 403 };
}

/** The stage without any trusted authority: a presented token is always denied, `require_capability` cannot be met. */
export const NO_CAPABILITY_AUTHORITIES: CapabilityStageDeps = {
  verifier: new CapabilityVerifier({ authorities: [], cacheSize: 1 }),
  isRevoked: () => false,
};
