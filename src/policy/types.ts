/**
 * The compiled form of a policy file (SPEC §5). A policy is compiled once per load into
 * indexed matchers; the Check path only calls these methods.
 */
import type { CheckInput } from '../check/request.js';
import type { DenyCode } from '../errors.js';
import type { CredentialKind, WorkloadIdentity } from '../identity/identity.js';
import type { Tier } from '../attestation/tier.js';

export interface IdentityRequirement {
  readonly scheme: 'spiffe';
  /** null = any trust domain */
  readonly trustDomain: string | null;
  /** empty = any path */
  readonly pathPrefixes: readonly string[];
  /** the allowed kinds; all three when the policy omits the field */
  readonly credentialKinds: readonly CredentialKind[];
  /** null when the identity satisfies every field; else the first failing one. */
  check(identity: WorkloadIdentity): { code: DenyCode; message: string } | null;
}

export interface CompiledRule {
  readonly name: string;
  readonly enabled: boolean;
  readonly default: 'allow' | 'block';
  readonly allow: ReadonlySet<string>;
  readonly block: ReadonlySet<string>;
  readonly requireWorkloadIdentity: IdentityRequirement | null;
  readonly preferWorkloadIdentity: IdentityRequirement | null;
  readonly requireTier: Tier | null;
  readonly preferTier: Tier | null;
  readonly requireCapability: boolean;
}

export type RuleSelection =
  | { readonly kind: 'rule'; readonly rule: CompiledRule; readonly via: 'context_extension' | 'match' }
  | { readonly kind: 'unmatched' }
  | { readonly kind: 'error'; readonly code: 'unknown_rule' | 'rule_disabled'; readonly message: string; readonly ruleName: string };

export interface TrustedVerifier {
  readonly name: string;
  readonly schema: string;
  readonly verifier: string;
  readonly verifierFamily: string;
  readonly effectiveTier: Tier;
  readonly maxEvidenceAgeSeconds: number | null;
  readonly allowedAttestationTypes: readonly string[] | null;
}

export interface TierCeiling {
  readonly tier: Tier;
  readonly minimumAttestationTier: Tier;
  readonly maxScope: { readonly operations: readonly string[] | null; readonly ttlSeconds: number | null };
}

export interface CompiledPolicy {
  /** `sha256:<hex>` of the policy file's bytes. */
  readonly hash: string;
  /** Where it was loaded from (for messages). */
  readonly source: string;
  readonly rules: ReadonlyMap<string, CompiledRule>;
  readonly toolNames: ReadonlySet<string>;
  readonly unmatched: 'allow' | 'deny';
  readonly trustedVerifiers: readonly TrustedVerifier[];
  readonly tierCeilings: ReadonlyMap<Tier, TierCeiling>;
  /**
   * Every path the policy names is lower case (escapes aside): a request path with upper-case
   * letters is then also read lower-cased, as Express routes by default (src/policy/evaluate.ts).
   * Optional: a policy without it is never read so.
   */
  readonly lowercasePaths?: boolean;
  /** `context_extensions.chio_rule` first, then the first enabled rule whose `match` fits. */
  selectRule(input: CheckInput): RuleSelection;
  /** The first tool whose entry matches the request, else null. */
  resolveTool(input: CheckInput): string | null;
}
