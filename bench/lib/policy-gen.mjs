/**
 * Generated policies for the policy-scale bench section (section-scale.mjs) and its small-scale
 * test (test/policy/scale.test.ts): the demo policy (demo/policy.yaml, SPEC §5) with N generated
 * rules and N/5 generated tools put in FRONT of its own, so the reference request
 * (test/fixtures/envoy/check-requests/http-mtls-spiffe-full: GET backend.default.svc:8443
 * /api/v1/orders) is still allowed by the demo's `orders` rule and `list_orders` tool, which are now
 * the last of a big policy. The generated rules sit around that request without matching it:
 * deeper path prefixes under /api/v1/orders, other hosts with the same path, wildcard tenants.
 * Written in flow style with quoted strings (the subset src/yaml-fast.ts reads fast).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEMO_POLICY = path.join(REPO_ROOT, 'demo', 'policy.yaml');

/** YAML flow text of a JSON-like value, strings double-quoted (JSON escapes are YAML escapes). */
export function flowYaml(value) {
  if (Array.isArray(value)) return `[${value.map(flowYaml).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return `{ ${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${flowYaml(v)}`).join(', ')} }`;
  }
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** Generated rule i: its `match` (hosts and path prefixes) never covers the reference request. */
export function generatedRule(i, prefixesPerRule) {
  const prefixes = (base) => Array.from({ length: prefixesPerRule }, (_, j) => `${base}/r${j}`);
  switch (i % 4) {
    case 0: // no host: deeper prefixes under the reference request's path
      return { match: { path_prefixes: prefixes(`/api/v1/orders/t${i}`) } };
    case 1: // a wildcard tenant host
      return { match: { hosts: [`*.tenant-${i}.example.com`], path_prefixes: prefixes(`/api/t${i}`) } };
    case 2: // another service, the reference request's own path
      return { match: { hosts: [`svc-${i}.default.svc`], path_prefixes: ['/api/v1/orders', ...prefixes(`/api/t${i}`).slice(1)] } };
    default: // another service with a port
      return { match: { hosts: [`svc-${i}.ns-${i % 50}.svc.cluster.local:8443`], path_prefixes: prefixes(`/api/t${i}`) } };
  }
}

/**
 * The demo policy grown to `rules` generated rules (each with `prefixesPerRule` path prefixes:
 * 50,000 for 10,000 × 5) and ceil(rules / 5) generated tools (5 path-prefix entries each).
 * @param {{rules: number, prefixesPerRule?: number}} o
 * @returns {{text: string, rules: number, pathPrefixes: number, tools: number}}
 */
export function scalePolicyYaml({ rules, prefixesPerRule = 5 }) {
  const demo = parse(readFileSync(DEMO_POLICY, 'utf8'));
  const toolCount = Math.ceil(rules / 5);
  const out = [`schema: ${demo.schema}`, 'tools:'];
  for (let t = 0; t < toolCount; t++) {
    const entries = Array.from({ length: 5 }, (_, k) => ({ methods: ['GET', 'POST'], path_prefix: `/api/v1/orders/t${5 * t + k}/items` }));
    out.push(`  gen_tool_${t}: ${flowYaml(entries)}`);
  }
  for (const [name, entries] of Object.entries(demo.tools)) out.push(`  ${name}: ${flowYaml(entries)}`);
  out.push('rules:');
  for (let i = 0; i < rules; i++) {
    out.push(`  gen_rule_${i}:`);
    out.push(`    match: ${flowYaml(generatedRule(i, prefixesPerRule).match)}`);
    out.push(`    allow: [gen_tool_${Math.floor(i / 5)}]`);
    out.push('    require_runtime_assurance_tier: attested');
  }
  for (const [name, rule] of Object.entries(demo.rules)) {
    out.push(`  ${name}:`);
    for (const [key, value] of Object.entries(rule)) out.push(`    ${key}: ${flowYaml(value)}`);
  }
  out.push(`defaults: ${flowYaml(demo.defaults)}`, '');
  return { text: out.join('\n'), rules: rules + Object.keys(demo.rules).length, pathPrefixes: rules * prefixesPerRule, tools: toolCount + Object.keys(demo.tools).length };
}
