#!/usr/bin/env node
/**
 * Policy scale benchmark (SPEC §5 rule selection and tool resolution; src/policy/rule-selector.ts,
 * src/policy/tool-resolver.ts). Run after `npm run build`:
 *
 *   node --expose-gc bench/policy-scale.mjs [--rules 10000] [--prefixes-per-rule 5] [--iterations 300000]
 *     [--rounds 7] [--requests 2000] [--spread N]
 *
 * Builds a policy YAML with N rules (5 path prefixes each: 50,000 for 10,000 rules) and N/5 tools
 * (5 path-prefix entries each, every third also a gRPC method),
 * reports the compile time (YAML text → CompiledPolicy) and the µs per selectRule + resolveTool,
 * against the same generator at 10 rules. Target: the large policy within 1.5× of the small one,
 * compile < 1 s.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { compilePolicy } from '../dist/policy/load.js';
import { parseYamlSource } from '../dist/yaml-source.js';

const { values } = parseArgs({
  options: {
    rules: { type: 'string', default: '10000' },
    'prefixes-per-rule': { type: 'string', default: '5' },
    iterations: { type: 'string', default: '300000' },
    rounds: { type: 'string', default: '7' },
    requests: { type: 'string', default: '2000' },
    /** requests target only this many distinct rules (default: all), to separate cache effects */
    spread: { type: 'string' },
  },
});
const RULES = Number(values.rules);
const PREFIXES = Number(values['prefixes-per-rule']);
const ITERATIONS = Number(values.iterations);
const ROUNDS = Number(values.rounds);
const REQUESTS = Number(values.requests);
const SPREAD = values.spread === undefined ? null : Number(values.spread);

/** Deterministic PRNG (mulberry32) so runs are comparable. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Rule i: a quarter host-less (path prefixes only), a quarter on a wildcard tenant host, the rest
 * on an exact service host (with a port for some); every rule has PREFIXES path prefixes.
 */
function ruleShape(i) {
  const prefixes = Array.from({ length: PREFIXES }, (_, j) => `/api/t${i}/r${j}`);
  switch (i % 4) {
    case 0:
      return { hosts: [], prefixes };
    case 1:
      return { hosts: [`*.tenant-${i}.example.com`], prefixes };
    case 2:
      return { hosts: [`svc-${i}.ns-${i % 50}.svc.cluster.local`], prefixes };
    default:
      return { hosts: [`svc-${i}.ns-${i % 50}.svc.cluster.local:8443`], prefixes };
  }
}

function hostFor(i, rand) {
  switch (i % 4) {
    case 0:
      return `anything-${Math.floor(rand() * 100)}.svc`;
    case 1:
      return `a.b.tenant-${i}.example.com`;
    case 2:
      return `svc-${i}.ns-${i % 50}.svc.cluster.local`;
    default:
      return `svc-${i}.ns-${i % 50}.svc.cluster.local:8443`;
  }
}

/** Tool t covers the paths of rules 5t..5t+4 (one entry each); every third tool is also a gRPC method. */
function policyYaml(ruleCount) {
  const toolCount = Math.max(2, Math.ceil(ruleCount / 5));
  const lines = ['schema: chio.policy.v1', 'tools:'];
  for (let t = 0; t < toolCount; t++) {
    lines.push(`  tool_${t}:`);
    if (t % 3 === 0) lines.push(`    - { grpc_service: pkg${t}.v1.Svc, grpc_method: Call }`);
    for (let k = 0; k < 5; k++) lines.push(`    - { methods: [GET, POST], path_prefix: /api/t${5 * t + k} }`);
  }
  lines.push('rules:');
  for (let i = 0; i < ruleCount; i++) {
    const { hosts, prefixes } = ruleShape(i);
    lines.push(`  rule_${i}:`);
    lines.push(`    match: { ${hosts.length ? `hosts: [${hosts.map((h) => JSON.stringify(h)).join(', ')}], ` : ''}path_prefixes: [${prefixes.join(', ')}] }`);
    lines.push(`    allow: [tool_${Math.floor(i / 5)}]`);
    lines.push('    require_runtime_assurance_tier: attested');
  }
  lines.push('defaults: { unmatched: deny }', '');
  return { text: lines.join('\n'), toolCount };
}

function checkInput(host, path, grpc, method) {
  const colon = host.lastIndexOf(':');
  const hasPort = colon !== -1 && !host.endsWith(']');
  return {
    kind: 'http',
    requestId: 'bench',
    method,
    host,
    hostname: hasPort ? host.slice(0, colon) : host,
    port: hasPort ? host.slice(colon + 1) : null,
    path,
    grpc,
    headers: new Map(),
    source: '10.0.0.7:51234',
    principal: null,
    certificate: null,
    contextExtensions: new Map(),
  };
}

/** Requests spread over all rules: most hit a rule, some hit none; a few are gRPC calls. */
function requestsFor(ruleCount, toolCount, rand) {
  const out = [];
  for (let k = 0; k < REQUESTS; k++) {
    const i = SPREAD === null ? Math.floor(rand() * ruleCount) : Math.floor(rand() * SPREAD) * Math.floor(ruleCount / SPREAD);
    const roll = rand();
    if (roll < 0.1) {
      out.push(checkInput(`miss-${k}.example.org`, `/nowhere/${k}`, null, 'GET'));
    } else if (roll < 0.2) {
      const t = 3 * Math.floor(i / 15);
      out.push(checkInput(hostFor(i, rand), `/pkg${t}.v1.Svc/Call`, { service: `pkg${t}.v1.Svc`, method: 'Call' }, 'POST'));
    } else {
      const j = Math.floor(rand() * PREFIXES);
      out.push(checkInput(hostFor(i, rand), `/api/t${i}/r${j}/items/${k}`, null, rand() < 0.5 ? 'GET' : 'POST'));
    }
  }
  return out;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Compiles the policy (median of 3) and prepares its requests. */
function prepare(ruleCount) {
  const { text, toolCount } = policyYaml(ruleCount);
  const compileMs = [];
  const parseMs = [];
  let policy;
  for (let r = 0; r < 3; r++) {
    let t0 = performance.now();
    parseYamlSource(text, `bench-${ruleCount}.yaml`, 'policy_invalid');
    parseMs.push(performance.now() - t0);
    t0 = performance.now();
    policy = compilePolicy(text, `bench-${ruleCount}.yaml`);
    compileMs.push(performance.now() - t0);
  }
  const requests = requestsFor(ruleCount, toolCount, prng(42));
  return { ruleCount, toolCount, yamlBytes: Buffer.byteLength(text), compileMs: median(compileMs), parseMs: median(parseMs), policy, requests, usPerCheck: [], matched: 0 };
}

/** One timed round of selectRule + resolveTool over the prepared requests; µs per request. */
function round(p, n) {
  const { policy, requests } = p;
  let matched = 0;
  const t0 = performance.now();
  for (let k = 0; k < n; k++) {
    const input = requests[k % requests.length];
    const selection = policy.selectRule(input);
    const tool = policy.resolveTool(input);
    if (selection.kind === 'rule' && tool !== null) matched++;
  }
  const elapsed = performance.now() - t0;
  p.matched = matched / n;
  return (elapsed * 1000) / n;
}

const small = prepare(10);
const large = prepare(RULES);
const perRound = Math.ceil(ITERATIONS / ROUNDS);
// Collect the compile garbage (YAML trees) now, not inside a timed round (run with --expose-gc).
globalThis.gc?.();
round(small, 50_000); // warm-up
round(large, 50_000);
// Interleaved rounds, so a noisy neighbour hits both policies alike.
for (let r = 0; r < ROUNDS; r++) {
  small.usPerCheck.push(round(small, perRound));
  large.usPerCheck.push(round(large, perRound));
}
for (const p of [small, large]) {
  console.log(
    `${String(p.ruleCount).padStart(6)} rules, ${String(p.ruleCount * PREFIXES).padStart(6)} path prefixes, ${String(p.toolCount).padStart(5)} tools ` +
      `(${(p.yamlBytes / 1024).toFixed(0)} KiB YAML): compile ${p.compileMs.toFixed(0)} ms ` +
      `(parseYamlSource alone ${p.parseMs.toFixed(0)} ms); ` +
      `selectRule+resolveTool ${median(p.usPerCheck).toFixed(3)} µs/request median, ${Math.min(...p.usPerCheck).toFixed(3)} best ` +
      `(rule and tool found for ${(p.matched * 100).toFixed(0)}%)`,
  );
}
const ratio = median(large.usPerCheck) / median(small.usPerCheck);
const best = Math.min(...large.usPerCheck) / Math.min(...small.usPerCheck);
console.log(
  `${RULES} rules vs 10: ${ratio.toFixed(2)}× median, ${best.toFixed(2)}× best (target ≤ 1.5×); ` +
    `compile ${large.compileMs.toFixed(0)} ms (target < 1000 ms)${SPREAD === null ? '' : `; requests spread over ${SPREAD} rules`}`,
);
