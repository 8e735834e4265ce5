/**
 * Policy scale, small: the bench's generated policy (bench/lib/policy-gen.mjs) at 2,000 rules and
 * 10,000 path prefixes. The fast YAML reader (src/yaml-fast.ts) must compile it to exactly the
 * policy the full parser gives, faster, and errors in it must still be located exactly.
 * The 10,000-rule figures are in BENCHMARKS.md (`node bench/run.mjs --only policy-scale`).
 */
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { scalePolicyYaml } from '../../bench/lib/policy-gen.mjs';
import type { CheckInput } from '../../src/check/request.js';
import { ChioError } from '../../src/errors.js';
import { compilePolicy } from '../../src/policy/load.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { parseYamlSource } from '../../src/yaml-source.js';

const RULES = 2000;
const { text, rules, pathPrefixes } = scalePolicyYaml({ rules: RULES });
/** The same document, but a `%YAML` directive sends it to the full parser (2 more lines at the top). */
const FULL_PARSER_PREFIX = '%YAML 1.2\n---\n';

function input(host: string, path: string, method = 'GET', grpc: CheckInput['grpc'] = null): CheckInput {
  const colon = host.lastIndexOf(':');
  return {
    kind: 'http',
    requestId: 'scale',
    method,
    host,
    hostname: colon === -1 ? host : host.slice(0, colon),
    port: colon === -1 ? null : host.slice(colon + 1),
    path,
    grpc,
    headers: new Map(),
    source: null,
    principal: null,
    certificate: null,
    contextExtensions: new Map(),
  } as unknown as CheckInput;
}

/** Requests at, around and away from the generated rules. */
const REQUESTS: CheckInput[] = [
  input('backend.default.svc:8443', '/api/v1/orders'),
  input('backend', '/api/v1/orders/t4/r0/x', 'POST'),
  input('backend.default.svc', '/admin/users'),
  input('svc-2.default.svc', '/api/v1/orders'),
  input('svc-6.default.svc', '/api/v1/orders/t12/items/1'),
  input('anything', '/api/v1/orders/t0/r3'),
  input('anything', '/api/v1/orders/t0/r33'),
  input('a.b.tenant-1.example.com', '/api/t1/r2/more'),
  input('tenant-1.example.com', '/api/t1/r2'),
  input('svc-1999.ns-49.svc.cluster.local:8443', '/api/t1999/r4'),
  input('svc-1999.ns-49.svc.cluster.local', '/api/t1999/r4'),
  input('nowhere.example.org', '/nothing'),
];

function decisions(p: CompiledPolicy): unknown[] {
  return REQUESTS.map((r) => [p.selectRule(r), p.resolveTool(r)]);
}

function errorOf(f: () => unknown): ChioError {
  try {
    f();
  } catch (err) {
    if (err instanceof ChioError) return err;
    throw err;
  }
  throw new Error('expected a ChioError');
}

describe(`a generated policy of ${RULES} rules and ${RULES * 5} path prefixes`, () => {
  it('is read by the fast reader, and compiles to exactly what the full parser gives', () => {
    expect(rules).toBe(RULES + 1);
    expect(pathPrefixes).toBe(RULES * 5);
    expect(parseYamlSource(text, 'scale.yaml', 'policy_invalid').plainKeys).toBe(true);
    expect(parseYamlSource(FULL_PARSER_PREFIX + text, 'scale.yaml', 'policy_invalid').plainKeys).toBe(false);

    const fast = compilePolicy(text, 'scale.yaml');
    const full = compilePolicy(FULL_PARSER_PREFIX + text, 'scale.yaml');
    expect([...fast.rules.keys()]).toStrictEqual([...full.rules.keys()]);
    expect([...fast.rules.values()]).toStrictEqual([...full.rules.values()]);
    expect([...fast.toolNames]).toStrictEqual([...full.toolNames]);
    expect(decisions(fast)).toStrictEqual(decisions(full));
    // the reference request is decided by the LAST rule, through 2,000 others
    expect(fast.selectRule(REQUESTS[0] as CheckInput)).toMatchObject({ kind: 'rule', rule: { name: 'orders' } });
    expect(fast.resolveTool(REQUESTS[0] as CheckInput)).toBe('list_orders');
  });

  it('compiles at least twice as fast as with the full parser', () => {
    const time = (t: string): number => {
      const samples = [0, 1, 2].map(() => {
        const t0 = performance.now();
        compilePolicy(t, 'scale.yaml');
        return performance.now() - t0;
      });
      return Math.min(...samples);
    };
    const fastMs = time(text);
    const fullMs = time(FULL_PARSER_PREFIX + text);
    expect(fastMs * 2).toBeLessThan(fullMs);
  }, 60_000);

  it('still names file:line:col and the YAML path of an error deep inside it', () => {
    const lines = text.split('\n');
    const at = lines.indexOf('  gen_rule_1500:') + 4; // its require_runtime_assurance_tier line (1-based: +4)
    expect(lines[at - 1]).toBe('    require_runtime_assurance_tier: attested');
    const bad = [...lines.slice(0, at - 1), '    require_runtime_assurance_tier: platinum', ...lines.slice(at)].join('\n');
    const fast = errorOf(() => compilePolicy(bad, 'scale.yaml'));
    const full = errorOf(() => compilePolicy(FULL_PARSER_PREFIX + bad, 'scale.yaml'));
    expect(fast.code).toBe('policy_invalid');
    expect(fast.message).toMatch(new RegExp(`^scale\\.yaml:${at}:5: rules\\.gen_rule_1500\\.require_runtime_assurance_tier: `));
    expect(fast.message).toBe(full.message.replace(`scale.yaml:${at + 2}:5:`, `scale.yaml:${at}:5:`));

    const undefinedTool = text.replace('    allow: [gen_tool_399]\n', '    allow: [gen_tool_399, no_such_tool]\n');
    const line = undefinedTool.split('\n').indexOf('    allow: [gen_tool_399, no_such_tool]') + 1;
    const err = errorOf(() => compilePolicy(undefinedTool, 'scale.yaml'));
    const fullErr = errorOf(() => compilePolicy(FULL_PARSER_PREFIX + undefinedTool, 'scale.yaml'));
    expect(err.message).toMatch(new RegExp(`^scale\\.yaml:${line}:\\d+: rules\\.gen_rule_1995\\.allow\\[1\\]: `));
    expect(err.message).toBe(fullErr.message.replace(`scale.yaml:${line + 2}:`, `scale.yaml:${line}:`));
  });
});
