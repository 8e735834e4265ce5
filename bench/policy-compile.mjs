#!/usr/bin/env node
/**
 * Policy compile time (SPEC §5; src/policy/load.ts): YAML file → CompiledPolicy, the way the
 * service loads it at start (cold: the first load in a fresh process, JIT not warmed) and on a
 * reload (warm: the median of the next `--warm` loads). Needs `npm run build`.
 *
 *   node bench/policy-compile.mjs FILE [--warm 5]
 *
 * Prints one JSON line: {"file", "bytes", "rules", "coldMs", "warmMs", "fastReader"}; `fastReader`
 * says whether src/yaml-fast.ts read it (else the full `yaml` parser did).
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadPolicyFile } from '../dist/policy/load.js';
import { parseYamlSource } from '../dist/yaml-source.js';

const { values, positionals } = parseArgs({ options: { warm: { type: 'string', default: '5' } }, allowPositionals: true });
const file = positionals[0];
if (file === undefined) {
  process.stderr.write('usage: node bench/policy-compile.mjs FILE [--warm N]\n');
  process.exit(2);
}
const timed = () => {
  const t0 = performance.now();
  const policy = loadPolicyFile(file);
  return { ms: performance.now() - t0, policy };
};
const cold = timed();
const warm = Array.from({ length: Number(values.warm) }, () => timed().ms).sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({
    file,
    bytes: readFileSync(file).length,
    rules: cold.policy.rules.size,
    coldMs: cold.ms,
    warmMs: warm[Math.floor(warm.length / 2)] ?? NaN,
    fastReader: parseYamlSource(readFileSync(file, 'utf8'), file, 'policy_invalid').plainKeys === true,
  })}\n`,
);
