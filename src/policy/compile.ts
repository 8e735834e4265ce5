/**
 * A schema-valid policy document (./schema.ts, SPEC §5) → CompiledPolicy (./types.ts).
 *
 * Adds the checks that need the whole document, each located at its YAML node:
 * - `allow` / `block` items must name a tool defined under `tools`;
 * - a tool must not be in both `allow` and `block` of a rule;
 * - names of rules, tools and verifiers must be read as written (an unquoted `0x10` or `1e3`
 *   is a YAML number whose string form differs).
 * Keeps file order for `tools`, `rules` and `trusted_verifiers`, read from the YAML nodes (a JS
 * object would move integer-like keys such as `10` first).
 */
import { isMap, isScalar } from 'yaml';
import type { Tier } from '../attestation/tier.js';
import type { CheckInput } from '../check/request.js';
import { TrustDomain } from '../spiffe/id.js';
import { plainKeysInFileOrder, yamlError, type YamlSource } from '../yaml-source.js';
import { parseHostPattern } from './hosts.js';
import { compileIdentityRequirement } from './identity-requirement.js';
import { hasUpperCase } from './paths.js';
import { RuleSelector, type SelectableRule } from './rule-selector.js';
import { NAME_PATTERN, type IdentityRequirementDocument, type PolicyDocument, type RuleDocument, type ToolEntryDocument } from './schema.js';
import { ToolResolver, type ToolEntrySpec, type ToolSpec } from './tool-resolver.js';
import type {
  CompiledPolicy,
  CompiledRule,
  IdentityRequirement,
  RuleSelection,
  TierCeiling,
  TrustedVerifier,
} from './types.js';

export interface PolicyMeta {
  /** `sha256:<hex>` of the file bytes */
  readonly hash: string;
  /** where it was loaded from */
  readonly source: string;
}

type Path = ReadonlyArray<string | number>;

export function compileDocument(src: YamlSource, doc: PolicyDocument, meta: PolicyMeta): CompiledPolicy {
  const toolNames = orderedNames(src, ['tools'], 'tool');
  const tools: ToolSpec[] = toolNames.map((name) => ({ name, entries: own(doc.tools, name).map(toolEntrySpec) }));
  const defined = new Set(toolNames);
  const rules: SelectableRule[] = orderedNames(src, ['rules'], 'rule').map((name) =>
    compileRule(src, name, own(doc.rules, name), defined),
  );
  const assurance = doc.extensions?.runtime_assurance;
  const verifierPath = ['extensions', 'runtime_assurance', 'trusted_verifiers'];
  const trustedVerifiers = orderedNames(src, verifierPath, 'trusted verifier').map((name) =>
    trustedVerifier(name, own(assurance?.trusted_verifiers ?? {}, name)),
  );
  return new Policy(
    meta,
    rules,
    tools,
    doc.defaults.unmatched,
    trustedVerifiers,
    tierCeilings(assurance?.tiers ?? {}),
    policyPaths(doc).every((p) => !hasUpperCase(p)),
  );
}

/** Every HTTP path the policy names: tools' `path` and `path_prefix`, rules' `match.path_prefixes`. */
function policyPaths(doc: PolicyDocument): string[] {
  const out: string[] = [];
  for (const entries of Object.values(doc.tools ?? {})) {
    for (const e of entries) {
      if (e.path !== undefined) out.push(e.path);
      if (e.path_prefix !== undefined) out.push(e.path_prefix);
    }
  }
  for (const rule of Object.values(doc.rules ?? {})) out.push(...(rule.match?.path_prefixes ?? []));
  return out;
}

class Policy implements CompiledPolicy {
  readonly hash: string;
  readonly source: string;
  readonly rules: ReadonlyMap<string, CompiledRule>;
  readonly toolNames: ReadonlySet<string>;
  private readonly selector: RuleSelector;
  private readonly resolver: ToolResolver;

  constructor(
    meta: PolicyMeta,
    rules: readonly SelectableRule[],
    tools: readonly ToolSpec[],
    readonly unmatched: 'allow' | 'deny',
    readonly trustedVerifiers: readonly TrustedVerifier[],
    readonly tierCeilings: ReadonlyMap<Tier, TierCeiling>,
    readonly lowercasePaths: boolean,
  ) {
    this.hash = meta.hash;
    this.source = meta.source;
    this.rules = new Map(rules.map((r) => [r.rule.name, r.rule]));
    this.toolNames = new Set(tools.map((t) => t.name));
    this.selector = new RuleSelector(rules);
    this.resolver = new ToolResolver(tools);
  }

  selectRule(input: CheckInput): RuleSelection {
    return this.selector.select(input);
  }

  resolveTool(input: CheckInput): string | null {
    return this.resolver.resolve(input);
  }
}

function compileRule(src: YamlSource, name: string, doc: RuleDocument, tools: ReadonlySet<string>): SelectableRule {
  const at: Path = ['rules', name];
  const allow = toolList(src, [...at, 'allow'], doc.allow, tools);
  const block = toolList(src, [...at, 'block'], doc.block, tools);
  doc.block.forEach((tool, i) => {
    if (allow.has(tool)) throw policyError(src, [...at, 'block', i], `tool ${JSON.stringify(tool)} is in both allow and block`);
  });
  const rule: CompiledRule = {
    name,
    enabled: doc.enabled,
    default: doc.default,
    allow,
    block,
    requireWorkloadIdentity: identityRequirement(doc.require_workload_identity),
    preferWorkloadIdentity: identityRequirement(doc.prefer_workload_identity),
    requireTier: doc.require_runtime_assurance_tier ?? null,
    preferTier: doc.prefer_runtime_assurance_tier ?? null,
    requireCapability: doc.require_capability,
  };
  const match = {
    hosts: (doc.match?.hosts ?? []).map(parseHostPattern),
    pathPrefixes: doc.match?.path_prefixes ?? [],
  };
  return { rule, match };
}

function toolList(src: YamlSource, at: Path, names: readonly string[], tools: ReadonlySet<string>): ReadonlySet<string> {
  names.forEach((tool, i) => {
    if (!tools.has(tool)) throw policyError(src, [...at, i], `tool ${JSON.stringify(tool)} is not defined under tools`);
  });
  return new Set(names);
}

function identityRequirement(doc: IdentityRequirementDocument | undefined): IdentityRequirement | null {
  if (doc === undefined) return null;
  return compileIdentityRequirement({
    trustDomain: doc.trust_domain === undefined ? null : TrustDomain.parse(doc.trust_domain).name,
    pathPrefixes: doc.path_prefixes ?? [],
    credentialKinds: doc.credential_kinds ?? null,
  });
}

function toolEntrySpec(doc: ToolEntryDocument): ToolEntrySpec {
  return {
    methods: doc.methods ?? null,
    path: doc.path ?? null,
    pathPrefix: doc.path_prefix ?? null,
    hosts: doc.hosts?.map(parseHostPattern) ?? null,
    grpcService: doc.grpc_service ?? null,
    grpcMethod: doc.grpc_method ?? null,
  };
}

type VerifierDocument = NonNullable<NonNullable<PolicyDocument['extensions']>['runtime_assurance']>['trusted_verifiers'][string];
type TiersDocument = NonNullable<NonNullable<PolicyDocument['extensions']>['runtime_assurance']>['tiers'];

function trustedVerifier(name: string, doc: VerifierDocument): TrustedVerifier {
  return {
    name,
    schema: doc.schema,
    verifier: doc.verifier,
    verifierFamily: doc.verifier_family,
    effectiveTier: doc.effective_tier,
    maxEvidenceAgeSeconds: doc.max_evidence_age_seconds ?? null,
    allowedAttestationTypes: doc.allowed_attestation_types ?? null,
  };
}

function tierCeilings(doc: TiersDocument): ReadonlyMap<Tier, TierCeiling> {
  const ceilings = new Map<Tier, TierCeiling>();
  for (const [tier, entry] of Object.entries(doc) as [Tier, TiersDocument[Tier]][]) {
    if (entry === undefined) continue;
    ceilings.set(tier, {
      tier,
      minimumAttestationTier: entry.minimum_attestation_tier ?? tier,
      maxScope: { operations: entry.max_scope?.operations ?? null, ttlSeconds: entry.max_scope?.ttl_seconds ?? null },
    });
  }
  return ceilings;
}

/**
 * The keys of the YAML map at `path`, in file order ([] when the map is absent). A key the schema
 * could not see (`__proto__`: zod's record drops it) is a located policy_invalid, not a TypeError.
 */
function orderedNames(src: YamlSource, path: Path, what: string): string[] {
  const plain = plainKeysInFileOrder(src, path); // read fast: keys are strings as written, no tree needed
  if (plain !== undefined) return plain.map((name) => checkedName(src, path, what, name));
  const node = src.doc.getIn(path, true);
  if (!isMap(node)) return [];
  return node.items.map((pair) => {
    const key = pair.key;
    const value: unknown = isScalar(key) ? key.value : key;
    const name = String(value);
    if (typeof value !== 'string' && (!isScalar(key) || key.source !== name)) {
      const written = isScalar(key) && typeof key.source === 'string' ? key.source : name;
      throw policyError(src, path, `name ${JSON.stringify(written)} is read by YAML as ${JSON.stringify(name)}; quote it`);
    }
    return checkedName(src, path, what, name);
  });
}

function checkedName(src: YamlSource, path: Path, what: string, name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw policyError(src, [...path, name], `invalid ${what} name ${JSON.stringify(name)}: must match ${NAME_PATTERN.source}`);
  }
  return name;
}

/** `record[name]`, which the schema guarantees for every name found in the YAML map. */
function own<V>(record: Readonly<Record<string, V>>, name: string): V {
  const value = Object.prototype.hasOwnProperty.call(record, name) ? record[name] : undefined;
  if (value === undefined) throw new TypeError(`policy document has no entry ${JSON.stringify(name)}`);
  return value;
}

function policyError(src: YamlSource, path: Path, message: string) {
  return yamlError(src, path, message, 'policy_invalid');
}
