/**
 * The zod schema of a policy file, `schema: chio.policy.v1` (SPEC §5).
 *
 * Strict everywhere: an unknown key, a bad enum value (tier, credential kind, default), a bad
 * name, host pattern, HTTP path prefix, SPIFFE trust domain or SPIFFE path prefix is a load error
 * located at the offending YAML node (see src/yaml-source.ts). Checks that need the whole document
 * (a rule naming an undefined tool, a tool both allowed and blocked) and the file order of named
 * maps are in ./compile.ts.
 */
import { z } from 'zod';
import { TIERS } from '../attestation/tier.js';
import { describe } from '../errors.js';
import { CREDENTIAL_KINDS } from '../identity/identity.js';
import { TrustDomain, validatePath } from '../spiffe/id.js';
import { hostPatternFault } from './hosts.js';
import { httpPathFault, unmatchablePathFault } from './paths.js';

export const POLICY_SCHEMA_ID = 'chio.policy.v1';

/** Names of rules, tools and trusted verifiers. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

export const ATTESTATION_SCHEMAS = [
  'chio.runtime-attestation.spiffe.x509-svid.v1',
  'chio.runtime-attestation.spiffe.jwt-svid.v1',
] as const;

export const ATTESTATION_TYPES = ['x509_svid', 'jwt_svid'] as const;

/** RFC 9110 §5.6.2 token characters. */
const HTTP_METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const GRPC_SERVICE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A string checked by `fault` (null = valid, else the message). */
function checkedString(fault: (value: string) => string | null) {
  return z.string().superRefine((value, ctx) => {
    const message = fault(value);
    if (message !== null) ctx.addIssue({ code: 'custom', message });
  });
}

/** One of `values`; the message names what was given and what is allowed. */
function oneOf<const T extends readonly [string, ...string[]]>(what: string, values: T) {
  return z.enum(values, {
    error: (issue) =>
      issue.input === undefined
        ? `missing: expected one of ${values.join(', ')}`
        : `unknown ${what} ${JSON.stringify(issue.input)}: expected one of ${values.join(', ')}`,
  });
}

/** A map keyed by rule / tool / verifier names. */
function namedMap<V extends z.ZodType>(what: string, value: V) {
  return z.record(z.string().regex(NAME_PATTERN), value, {
    error: (issue) =>
      issue.code === 'invalid_key'
        ? `invalid ${what} name ${JSON.stringify(issue.input)}: must match ${NAME_PATTERN.source}`
        : undefined,
  });
}

const tier = oneOf('tier', TIERS);

const httpPath = checkedString((value) => httpPathFault(value, 'a path') ?? unmatchablePathFault(value, 'a path'));
const httpPathPrefix = checkedString((value) => httpPathFault(value) ?? unmatchablePathFault(value));
const hostPattern = checkedString(hostPatternFault);

const trustDomain = checkedString((value) => {
  try {
    TrustDomain.parse(value);
    return null;
  } catch (err) {
    return describe(err);
  }
});

const spiffePathPrefix = checkedString((value) => {
  if (!value.startsWith('/')) return 'a SPIFFE path prefix must start with "/"';
  try {
    validatePath(value);
    return null;
  } catch (err) {
    return describe(err);
  }
});

const identityRequirement = z.strictObject({
  scheme: z.literal('spiffe', { error: (issue) => `unsupported scheme ${JSON.stringify(issue.input)}: only "spiffe"` }).optional(),
  trust_domain: trustDomain.optional(),
  // an empty list (a template that rendered none) must not read as "any workload": omit the key for that
  path_prefixes: z.array(spiffePathPrefix).min(1, 'must not be empty: omit path_prefixes to admit any path').optional(),
  credential_kinds: z.array(oneOf('credential kind', CREDENTIAL_KINDS)).min(1).optional(),
});

const TOOL_CONDITIONS = ['methods', 'path', 'path_prefix', 'hosts', 'grpc_service', 'grpc_method'] as const;

const toolEntry = z
  .strictObject({
    methods: z.array(z.string().regex(HTTP_METHOD, { error: 'not an HTTP method token' })).min(1).optional(),
    path: httpPath.optional(),
    path_prefix: httpPathPrefix.optional(),
    hosts: z.array(hostPattern).min(1).optional(),
    grpc_service: z.string().regex(GRPC_SERVICE, { error: 'not a fully-qualified gRPC service name (pkg.Service)' }).optional(),
    grpc_method: z.string().regex(GRPC_METHOD, { error: 'not a gRPC method name' }).optional(),
  })
  .refine((entry) => TOOL_CONDITIONS.some((key) => entry[key] !== undefined), {
    error: `a tool entry needs at least one condition: ${TOOL_CONDITIONS.join(', ')}`,
  });

const rule = z.strictObject({
  enabled: z.boolean().default(true),
  /** omitted lists: the rule governs every request; an empty list is refused (it would read as "every request") */
  match: z
    .strictObject({
      hosts: z.array(hostPattern).min(1, 'must not be empty: omit hosts to govern every host').optional(),
      path_prefixes: z.array(httpPathPrefix).min(1, 'must not be empty: omit path_prefixes to govern every path').optional(),
    })
    .optional(),
  default: oneOf('value', ['block', 'allow']).default('block'),
  allow: z.array(z.string()).default([]),
  block: z.array(z.string()).default([]),
  require_workload_identity: identityRequirement.optional(),
  prefer_workload_identity: identityRequirement.optional(),
  require_runtime_assurance_tier: tier.optional(),
  prefer_runtime_assurance_tier: tier.optional(),
  require_capability: z.boolean().default(false),
});

const tierCeiling = z.strictObject({
  /** defaults to the tier it is keyed by */
  minimum_attestation_tier: tier.optional(),
  max_scope: z
    .strictObject({
      operations: z.array(z.string().min(1)).optional(),
      ttl_seconds: z.int().positive().optional(),
    })
    .optional(),
});

const trustedVerifier = z.strictObject({
  schema: oneOf('attestation schema', ATTESTATION_SCHEMAS),
  verifier: z.string().min(1),
  verifier_family: z.literal('spiffe', { error: (issue) => `unsupported verifier_family ${JSON.stringify(issue.input)}: only "spiffe"` }).default('spiffe'),
  effective_tier: tier,
  max_evidence_age_seconds: z.int().positive().optional(),
  allowed_attestation_types: z.array(oneOf('attestation type', ATTESTATION_TYPES)).min(1).optional(),
});

export const policySchema = z.strictObject(
  {
    schema: z.literal(POLICY_SCHEMA_ID, {
      error: (issue) =>
        issue.input === undefined
          ? `missing: must be "${POLICY_SCHEMA_ID}"`
          : `must be "${POLICY_SCHEMA_ID}", got ${JSON.stringify(issue.input)}`,
    }),
    tools: namedMap('tool', z.array(toolEntry).min(1, { error: 'a tool needs at least one entry' })).default({}),
    rules: namedMap('rule', rule).default({}),
    extensions: z
      .strictObject({
        runtime_assurance: z
          .strictObject({
            tiers: z.partialRecord(tier, tierCeiling).default({}),
            trusted_verifiers: namedMap('trusted verifier', trustedVerifier).default({}),
          })
          .optional(),
      })
      .optional(),
    defaults: z.strictObject({ unmatched: oneOf('value', ['deny', 'allow']).default('deny') }).default({ unmatched: 'deny' }),
  },
  { error: (issue) => (issue.code === 'invalid_type' ? `a policy file must be a YAML mapping with "schema: ${POLICY_SCHEMA_ID}"` : undefined) },
);

export type PolicyDocument = z.infer<typeof policySchema>;
export type RuleDocument = PolicyDocument['rules'][string];
export type ToolEntryDocument = PolicyDocument['tools'][string][number];
export type IdentityRequirementDocument = NonNullable<RuleDocument['require_workload_identity']>;
