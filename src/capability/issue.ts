/**
 * Capability issuance (SPEC §7 "Issue"): one contract for `chio capability issue` and
 * `POST /v1/capabilities/issue`.
 *
 * Request `{subject, tools, ttlSeconds, runtimeAttestation?}` (strict). Steps, first refusal wins,
 * each `ChioError('issuance_refused', message, {field})`, nothing issued:
 * 1. the request's shape (zod; unknown keys rejected; duplicate tools collapse);
 * 2. with a policy: every tool must be one the policy defines;
 * 3. the runtime attestation (./attestation.ts): identity consistency, times, and the highest
 *    tier it satisfies (`attested`, or a trusted verifier's `effective_tier`); no attestation:
 *    tier `none` and no binding;
 * 4. the policy's `extensions.runtime_assurance.tiers` entry of that tier: the tier must reach its
 *    `minimum_attestation_tier`; `max_scope.ttl_seconds` caps the TTL; `max_scope.operations` lists
 *    the tools allowed at that tier (`invoke` = any tool). A tier without an entry is capped by the
 *    `max_scope` of the nearest tier above that has one (`ceilingFor`);
 * 5. sign: constraints carry `minimumRuntimeAssuranceTier` (the resolved tier) and
 *    `workloadIdentity` when an attestation was given, and the capability expires at now + TTL, or
 *    at the attestation's `expiresAt` when that comes first (a grant bound to evidence does not
 *    outlive it; SPIRE caps an SVID at its CA's expiry the same way).
 */
import { monotonicFactory } from 'ulid';
import { z } from 'zod';
import { TIERS, tierRank, tierSatisfies, type Tier } from '../attestation/tier.js';
import type { SigningKey } from '../keys.js';
import type { CompiledPolicy, TierCeiling } from '../policy/types.js';
import { issuanceRefused, resolveAttestation, runtimeAttestationSchema, type AttestedWorkload } from './attestation.js';
import {
  CAPABILITY_SCHEMA,
  encodeCapability,
  MAX_CAPABILITY_HEADER_LENGTH,
  MAX_CAPABILITY_TOOLS,
  signCapability,
  subjectSchema,
  toolNameSchema,
  type Capability,
  type CapabilityConstraints,
} from './token.js';

/** The longest TTL any capability may have, whatever the policy says (7 days). */
export const MAX_CAPABILITY_TTL_SECONDS = 7 * 24 * 3600;
/** `max_scope.operations` value that allows every tool. */
export const ANY_OPERATION = 'invoke';

export const issueRequestSchema = z.strictObject({
  subject: subjectSchema,
  tools: z.array(toolNameSchema).min(1, 'at least one tool').max(MAX_CAPABILITY_TOOLS, `at most ${MAX_CAPABILITY_TOOLS} tools`),
  ttlSeconds: z.int().min(1).max(MAX_CAPABILITY_TTL_SECONDS),
  runtimeAttestation: runtimeAttestationSchema.optional(),
});

export type IssueRequest = z.infer<typeof issueRequestSchema>;

/** What issuance reads from a policy (a CompiledPolicy fits). */
export type IssuancePolicy = Pick<CompiledPolicy, 'toolNames' | 'trustedVerifiers' | 'tierCeilings'>;

export interface IssuanceContext {
  readonly authority: SigningKey;
  /** null: no tool names, trusted verifiers or ceilings to apply (CLI without --policy) */
  readonly policy: IssuancePolicy | null;
  readonly now: number;
  /** injectable for tests; default `cap-` + a monotonic ULID */
  readonly newId?: (now: number) => string;
}

export interface IssuedCapability {
  /** the header value */
  readonly token: string;
  readonly capability: Capability;
  /** the resolved tier and who promoted it; null without an attestation */
  readonly attestation: Pick<AttestedWorkload, 'tier' | 'trustedVerifier' | 'note'> | null;
  /**
   * `runtimeAttestation.expiresAt` when the attestation expires before the requested TTL ends: the
   * capability then expires with it (a grant bound to evidence does not outlive the evidence); else null
   */
  readonly expiryCappedBy: 'runtimeAttestation.expiresAt' | null;
}

const ulid = monotonicFactory();
const defaultId = (now: number): string => `cap-${ulid(now)}`;

/** Validates `body` and issues a signed capability, or throws ChioError('issuance_refused') naming the field. */
export function issueCapability(body: unknown, ctx: IssuanceContext): IssuedCapability {
  const request = parseIssueRequest(body);
  const tools = [...new Set(request.tools)];
  if (ctx.policy !== null) checkToolsDefined(tools, ctx.policy.toolNames);
  const attested =
    request.runtimeAttestation === undefined ? null : resolveAttestation(request.runtimeAttestation, ctx.policy?.trustedVerifiers ?? [], ctx.now);
  const tier: Tier = attested?.tier ?? 'none';
  checkCeiling(ctx.policy, tier, tools, request.ttlSeconds);
  const constraints: CapabilityConstraints =
    attested === null ? {} : { minimumRuntimeAssuranceTier: attested.tier, workloadIdentity: attested.workloadIdentity };
  const requestedExpiry = ctx.now + request.ttlSeconds * 1000;
  const capped = attested !== null && attested.expiresAtMs < requestedExpiry;
  const expiresAtMs = capped ? attested.expiresAtMs : requestedExpiry;
  const capability = signCapability(
    {
      schema: CAPABILITY_SCHEMA,
      id: (ctx.newId ?? defaultId)(ctx.now),
      issuer: ctx.authority.kid,
      subject: request.subject,
      tools,
      issuedAt: new Date(ctx.now).toISOString(),
      expiresAt: new Date(expiresAtMs).toISOString(),
      constraints,
    },
    ctx.authority,
  );
  const token = encodeCapability(capability);
  if (token.length > MAX_CAPABILITY_HEADER_LENGTH) {
    throw issuanceRefused('tools', `the capability would be ${token.length} characters long; a header holds at most ${MAX_CAPABILITY_HEADER_LENGTH}`);
  }
  const attestation = attested === null ? null : { tier: attested.tier, trustedVerifier: attested.trustedVerifier, note: attested.note };
  return { token, capability, attestation, expiryCappedBy: capped ? 'runtimeAttestation.expiresAt' : null };
}

/** The request's shape; the first zod issue becomes the refusal, its path the field. */
export function parseIssueRequest(body: unknown): IssueRequest {
  const parsed = issueRequestSchema.safeParse(body);
  if (parsed.success) return parsed.data;
  const { field, message } = zodFault(parsed.error);
  throw issuanceRefused(field, message);
}

/** The first issue of a zod error as `{field, message}`; an unknown key is named as the field. */
export function zodFault(error: z.ZodError): { field: string; message: string } {
  const issue = error.issues[0];
  if (issue === undefined) return { field: '(request)', message: 'invalid' };
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) path.push(issue.keys[0]);
  return {
    field: path.length === 0 ? '(request)' : path.join('.'),
    message: issue.code === 'unrecognized_keys' ? 'unknown key' : issue.message,
  };
}

function checkToolsDefined(tools: readonly string[], defined: ReadonlySet<string>): void {
  const unknown = tools.find((t) => !defined.has(t));
  if (unknown !== undefined) throw issuanceRefused('tools', `tool ${JSON.stringify(unknown)} is not defined by the policy`);
}

/**
 * The ceiling that caps issuance at `tier`: its own `tiers` entry, else the entry of the nearest tier
 * above it that has one (its `max_scope` only): a tier the policy leaves out is never wider than the
 * next one up (with only `verified: {ttl_seconds: 300}` configured, an unattested, unbound capability
 * used to get any tool for up to 7 days). null: no entry at or above the tier (no cap but 7 days).
 */
export function ceilingFor(ceilings: ReadonlyMap<Tier, TierCeiling>, tier: Tier): { entry: TierCeiling; own: boolean } | null {
  const own = ceilings.get(tier);
  if (own !== undefined) return { entry: own, own: true };
  for (const above of TIERS.slice(tierRank(tier) + 1)) {
    const entry = ceilings.get(above);
    if (entry !== undefined) return { entry, own: false };
  }
  return null;
}

function checkCeiling(policy: IssuancePolicy | null, tier: Tier, tools: readonly string[], ttlSeconds: number): void {
  const found = policy === null ? null : ceilingFor(policy.tierCeilings, tier);
  if (found === null) return;
  const { entry: ceiling, own } = found;
  const where = `extensions.runtime_assurance.tiers.${ceiling.tier}`;
  const why = own ? '' : ` (tier ${tier} has no entry: the nearest tier above with one caps it)`;
  if (own && !tierSatisfies(tier, ceiling.minimumAttestationTier)) {
    throw issuanceRefused('runtimeAttestation', `the evidence reaches tier ${tier}; ${where} needs minimum_attestation_tier ${ceiling.minimumAttestationTier}`);
  }
  const maxTtl = ceiling.maxScope.ttlSeconds;
  if (maxTtl !== null && ttlSeconds > maxTtl) {
    throw issuanceRefused('ttlSeconds', `${ttlSeconds}s is longer than ${where}.max_scope.ttl_seconds ${maxTtl}s${why}`);
  }
  const operations = ceiling.maxScope.operations;
  if (operations !== null && !operations.includes(ANY_OPERATION)) {
    const outside = tools.find((t) => !operations.includes(t));
    if (outside !== undefined) {
      throw issuanceRefused('tools', `tool ${JSON.stringify(outside)} is not in ${where}.max_scope.operations [${operations.join(', ')}]${why}`);
    }
  }
}
