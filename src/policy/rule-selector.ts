/**
 * Rule selection (SPEC §5): Envoy's per-route `context_extensions.chio_rule` names the rule;
 * otherwise the first enabled rule, in file order, whose `match` fits (`hosts` any of, AND
 * `path_prefixes` any of, segment-aware; an omitted or empty list fits every request).
 *
 * Compiled, not scanned: the enabled rules are filed into buckets by host pattern (plus one bucket
 * for the rules without hosts), and inside a bucket into a segment trie by path prefix. Every
 * bucket and trie node keeps only the lowest rule index filed there, because only the first match
 * can win. A Check gathers the buckets of its host (one map lookup per label) and walks their tries
 * along its path (one lookup per segment); the lowest index seen is the selected rule. The cost
 * does not grow with the number of rules or prefixes.
 */
import type { CheckInput } from '../check/request.js';
import { HostIndex, type HostPattern } from './hosts.js';
import { SegmentTrie } from './paths.js';
import type { CompiledRule, RuleSelection } from './types.js';

export const RULE_CONTEXT_EXTENSION = 'chio_rule';

/** Longest rule name quoted from a context extension in a message. */
const QUOTED_NAME_LIMIT = 128;

export interface RuleMatch {
  /** empty = any host */
  readonly hosts: readonly HostPattern[];
  /** empty = any path */
  readonly pathPrefixes: readonly string[];
}

export interface SelectableRule {
  readonly rule: CompiledRule;
  readonly match: RuleMatch;
}

/** The rules filed under one host pattern (or under "any host"). */
interface Bucket {
  /** lowest index of the rules here without a path condition */
  anyPath: number;
  /** path prefix → lowest index of the rules here with that prefix */
  paths: SegmentTrie<number> | null;
}

export class RuleSelector {
  private readonly ordered: readonly CompiledRule[];
  private readonly byName: ReadonlyMap<string, CompiledRule>;
  private readonly anyHost: Bucket = newBucket();
  private readonly byHost = new HostIndex<Bucket>();

  /** `rules` in file order. */
  constructor(rules: readonly SelectableRule[]) {
    this.ordered = rules.map((r) => r.rule);
    this.byName = new Map(rules.map((r) => [r.rule.name, r.rule]));
    rules.forEach(({ rule, match }, index) => {
      if (rule.enabled) this.file(index, match);
    });
  }

  select(input: CheckInput): RuleSelection {
    const named = input.contextExtensions.get(RULE_CONTEXT_EXTENSION);
    if (named !== undefined) return this.selectNamed(named);
    const rule = this.ordered[this.firstMatchIndex(input)];
    return rule ? { kind: 'rule', rule, via: 'match' } : { kind: 'unmatched' };
  }

  /** The index (file order) of the first enabled rule whose `match` fits, or -1. */
  firstMatchIndex(input: CheckInput): number {
    const path = input.path;
    let best = Number.POSITIVE_INFINITY;
    const lower = (value: number): void => {
      if (value < best) best = value;
    };
    const visit = (bucket: Bucket): void => {
      lower(bucket.anyPath);
      if (bucket.paths !== null && path !== null) bucket.paths.visitPrefixesOf(path, lower);
    };
    visit(this.anyHost);
    this.byHost.visitMatches(lowerCase(input.host), lowerCase(input.hostname), visit);
    return best === Number.POSITIVE_INFINITY ? -1 : best;
  }

  private selectNamed(name: string): RuleSelection {
    const rule = this.byName.get(name);
    if (!rule) {
      return { kind: 'error', code: 'unknown_rule', ruleName: name, message: `context_extensions.${RULE_CONTEXT_EXTENSION} names no rule of the policy: ${quoteName(name)}` };
    }
    if (!rule.enabled) {
      return { kind: 'error', code: 'rule_disabled', ruleName: name, message: `context_extensions.${RULE_CONTEXT_EXTENSION} names rule ${quoteName(name)}, which is disabled` };
    }
    return { kind: 'rule', rule, via: 'context_extension' };
  }

  private file(index: number, match: RuleMatch): void {
    const buckets = match.hosts.length === 0 ? [this.anyHost] : match.hosts.map((h) => this.byHost.upsert(h, newBucket));
    for (const bucket of buckets) {
      if (match.pathPrefixes.length === 0) {
        bucket.anyPath = Math.min(bucket.anyPath, index);
        continue;
      }
      bucket.paths ??= new SegmentTrie<number>();
      // Rules are filed in ascending order, so the first value stored for a prefix is its lowest.
      for (const prefix of match.pathPrefixes) bucket.paths.upsert(prefix, () => index);
    }
  }
}

function newBucket(): Bucket {
  return { anyPath: Number.POSITIVE_INFINITY, paths: null };
}

function lowerCase(value: string | null): string | null {
  return value === null ? null : value.toLowerCase();
}

function quoteName(name: string): string {
  return JSON.stringify(name.length > QUOTED_NAME_LIMIT ? `${name.slice(0, QUOTED_NAME_LIMIT)}…` : name);
}
