/**
 * (compiled policy, request, identity, tier) → decision (SPEC §5). Pure; never throws on any
 * input: an unexpected exception is a deny `internal_error` (fail closed, SPEC §1).
 *
 * Order, first failure wins:
 * 1. select the rule and resolve the tool (always, so the receipt records both);
 * 2. a presented credential that failed validation → deny with its code;
 * 3. `context_extensions.chio_rule` naming an unknown or disabled rule → deny;
 * 4. no rule governs the request → `defaults.unmatched`;
 * 5. `require_workload_identity` (none presented → 401 `identity_required`), else
 *    `prefer_workload_identity` recorded only;
 * 6. `require_runtime_assurance_tier`, else `prefer_runtime_assurance_tier` recorded only;
 * 7. the tool against the rule's `block`, `allow` and `default`;
 * 8. allow (a later stage enforces `require_capability`).
 */
import { TIERS, tierSatisfies, type Tier } from '../attestation/tier.js';
import type { CheckInput } from '../check/request.js';
import { describe, type DenyCode, type DenyError } from '../errors.js';
import type { WorkloadIdentity } from '../identity/identity.js';
import { hasUpperCase, lowerOutsideEscapes } from './paths.js';
import type { CompiledPolicy, CompiledRule, RuleSelection } from './types.js';

export interface MatchRecord {
  readonly mode: 'require' | 'prefer';
  readonly matched: boolean;
}

export interface TierMatchRecord {
  readonly mode: 'require' | 'prefer';
  /** the tier the rule requires or prefers (the presented tier is on the receipt already) */
  readonly tier: Tier;
  readonly matched: boolean;
}

export interface Decision {
  readonly verdict: 'allow' | 'deny';
  readonly rule: string | null;
  readonly tool: string | null;
  /** null for an allow */
  readonly reason: { readonly code: DenyCode; readonly message: string } | null;
  /** 401 only for identity_required; 403 for every other deny; null for allow */
  readonly httpStatus: 401 | 403 | 503 | null; // 503: shed under load (src/limits.ts)
  readonly workloadIdentityMatch: MatchRecord | null;
  readonly runtimeAssuranceMatch: TierMatchRecord | null;
  /** the selected rule says require_capability: true (checked by the capability stage) */
  readonly requireCapability: boolean;
}

export interface EvaluateInput {
  readonly policy: CompiledPolicy;
  readonly input: CheckInput;
  readonly identity: WorkloadIdentity | null;
  /** a presented credential that failed validation: always a deny with its code */
  readonly identityError: DenyError | null;
  readonly tier: Tier;
  /** why the identity's evidence was not promoted (too old for its trusted verifier): told when a tier requirement is missed */
  readonly tierNote?: string | null;
}

/** What is known so far while evaluating: the base of every decision. */
interface Context {
  rule: string | null;
  tool: string | null;
  workloadIdentityMatch: MatchRecord | null;
  runtimeAssuranceMatch: TierMatchRecord | null;
  requireCapability: boolean;
}

export function evaluate(args: EvaluateInput): Decision {
  const ctx: Context = { rule: null, tool: null, workloadIdentityMatch: null, runtimeAssuranceMatch: null, requireCapability: false };
  try {
    return decide(args, ctx);
  } catch (err) {
    return denied(ctx, 'internal_error', `policy evaluation failed: ${describe(err)}`);
  }
}

function decide({ policy, input, identity, identityError, tier, tierNote }: EvaluateInput, ctx: Context): Decision {
  const selection = policy.selectRule(input);
  if (selection.kind === 'rule') {
    ctx.rule = selection.rule.name;
    ctx.requireCapability = selection.rule.requireCapability;
  } else if (selection.kind === 'error') {
    ctx.rule = selection.ruleName;
  }
  ctx.tool = policy.resolveTool(input);

  if (identityError) return denied(ctx, identityError.code, identityError.message);
  if (selection.kind === 'error') return denied(ctx, selection.code, selection.message);
  for (const reading of input.otherReadings ?? []) {
    const ambiguity = ambiguousPath(policy, input, selection, ctx.tool, reading);
    if (ambiguity !== null) return denied(ctx, 'ambiguous_path', ambiguity);
  }
  // Express routes case-insensitively by default (/ADMIN is /admin there); with a policy of
  // lower-case paths only, a lower-cased reading can differ only where such a router would differ
  if (policy.lowercasePaths === true && input.grpc === null && input.path !== null && hasUpperCase(input.path)) {
    const ambiguity = ambiguousPath(policy, input, selection, ctx.tool, { path: lowerOutsideEscapes(input.path), grpc: null });
    if (ambiguity !== null) return denied(ctx, 'ambiguous_path', ambiguity);
  }
  if (selection.kind === 'unmatched') {
    return policy.unmatched === 'deny'
      ? denied(ctx, 'no_matching_rule', 'no rule of the policy governs this request and defaults.unmatched is deny')
      : allowed(ctx);
  }
  const rule = selection.rule;
  return checkWorkloadIdentity(rule, identity, ctx) ?? checkTier(rule, tier, tierNote ?? null, ctx) ?? checkTool(rule, ctx) ?? allowed(ctx);
}

/** The rule a selection names ('' when none). */
function ruleOf(selection: RuleSelection): string {
  return selection.kind === 'rule' ? selection.rule.name : selection.kind === 'error' ? selection.ruleName : '';
}

/**
 * Why the request would fall under another rule or tool as another server reads its path
 * (src/check/envoy.ts `otherPathReadings`), or null when the readings agree. A block list must not
 * be passed by spelling a path so that chio and the upstream read different ones.
 */
function ambiguousPath(
  policy: CompiledPolicy,
  input: CheckInput,
  selection: RuleSelection,
  tool: string | null,
  alt: NonNullable<CheckInput['otherReadings']>[number],
): string | null {
  const altInput: CheckInput = { ...input, path: alt.path, grpc: alt.grpc, otherReadings: [] };
  const altRule = ruleOf(policy.selectRule(altInput));
  const altTool = policy.resolveTool(altInput);
  if (altRule === ruleOf(selection) && altTool === tool) return null;
  const reading = (rule: string, t: string | null): string => `rule ${rule === '' ? '(none)' : JSON.stringify(rule)}, tool ${t === null ? '(none)' : JSON.stringify(t)}`;
  return `read as another server may route it (${JSON.stringify(alt.path)}), the path falls under ${reading(altRule, altTool)} instead of ${reading(ruleOf(selection), tool)}`;
}

function checkWorkloadIdentity(rule: CompiledRule, identity: WorkloadIdentity | null, ctx: Context): Decision | null {
  const required = rule.requireWorkloadIdentity;
  if (required) {
    const miss =
      identity === null
        ? { code: 'identity_required' as const, message: `rule ${JSON.stringify(rule.name)} requires a workload identity and none was presented` }
        : required.check(identity);
    ctx.workloadIdentityMatch = matchRecord('require', miss === null);
    return miss === null ? null : denied(ctx, miss.code, miss.message);
  }
  const preferred = rule.preferWorkloadIdentity;
  if (preferred) {
    ctx.workloadIdentityMatch = matchRecord('prefer', identity !== null && preferred.check(identity) === null);
  }
  return null;
}

function checkTier(rule: CompiledRule, tier: Tier, note: string | null, ctx: Context): Decision | null {
  if (rule.requireTier !== null) {
    const matched = tierSatisfies(tier, rule.requireTier);
    ctx.runtimeAssuranceMatch = tierMatchRecord('require', rule.requireTier, matched);
    if (!matched) {
      const why = note === null ? '' : ` (not promoted: ${note})`;
      return denied(ctx, 'runtime_assurance_insufficient', `runtime assurance tier too low: have ${tier}, need ${rule.requireTier}${why}`);
    }
  } else if (rule.preferTier !== null) {
    ctx.runtimeAssuranceMatch = tierMatchRecord('prefer', rule.preferTier, tierSatisfies(tier, rule.preferTier));
  }
  return null;
}

function checkTool(rule: CompiledRule, ctx: Context): Decision | null {
  const tool = ctx.tool;
  if (tool !== null && rule.block.has(tool)) return denied(ctx, 'tool_blocked', `tool ${JSON.stringify(tool)} is blocked by rule ${JSON.stringify(rule.name)}`);
  if (tool !== null && rule.allow.has(tool)) return null;
  if (rule.default === 'allow') return null;
  const what = tool === null ? 'the request maps to no tool' : `tool ${JSON.stringify(tool)} is not in the allow list`;
  return denied(ctx, 'tool_not_allowed', `${what} and rule ${JSON.stringify(rule.name)} defaults to block`);
}

function denied(ctx: Context, code: DenyCode, message: string): Decision {
  return decision(ctx, 'deny', { code, message }, code === 'identity_required' ? 401 : 403);
}

function allowed(ctx: Context): Decision {
  return decision(ctx, 'allow', null, null);
}

/** One object literal of a fixed shape, no spread: a spread of a snapshot cost 2.6 µs per Check (profile). */
function decision(ctx: Context, verdict: Decision['verdict'], reason: Decision['reason'], httpStatus: Decision['httpStatus']): Decision {
  return {
    verdict,
    rule: ctx.rule,
    tool: ctx.tool,
    reason,
    httpStatus,
    workloadIdentityMatch: ctx.workloadIdentityMatch,
    runtimeAssuranceMatch: ctx.runtimeAssuranceMatch,
    requireCapability: ctx.requireCapability,
  };
}

/** Match records are constants (frozen, shared by every decision): no allocation per Check. */
const MATCH_RECORDS: { readonly [M in MatchRecord['mode']]: { readonly [K in 'true' | 'false']: MatchRecord } } = {
  require: { true: Object.freeze({ mode: 'require', matched: true }), false: Object.freeze({ mode: 'require', matched: false }) },
  prefer: { true: Object.freeze({ mode: 'prefer', matched: true }), false: Object.freeze({ mode: 'prefer', matched: false }) },
};

function matchRecord(mode: MatchRecord['mode'], matched: boolean): MatchRecord {
  return MATCH_RECORDS[mode][matched ? 'true' : 'false'];
}

function tierRecords(mode: TierMatchRecord['mode'], matched: boolean): Readonly<Record<Tier, TierMatchRecord>> {
  return Object.fromEntries(TIERS.map((tier) => [tier, Object.freeze({ mode, tier, matched })])) as Record<Tier, TierMatchRecord>;
}

/** Every tier match record, made once (2 modes × 2 outcomes × 4 tiers) and looked up without building a key. */
const TIER_MATCH_TABLE = {
  require: { true: tierRecords('require', true), false: tierRecords('require', false) },
  prefer: { true: tierRecords('prefer', true), false: tierRecords('prefer', false) },
};

function tierMatchRecord(mode: TierMatchRecord['mode'], tier: Tier, matched: boolean): TierMatchRecord {
  return TIER_MATCH_TABLE[mode][matched ? 'true' : 'false'][tier];
}
