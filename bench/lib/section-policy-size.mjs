/**
 * Section `policy-size` (issue "Performance at scale": policy size). chio with a generated policy
 * of 10,000 rules, 50,000 path prefixes and 2,000 tools (bench/lib/policy-gen.mjs: the demo policy
 * with them in front, so the reference request is decided by the LAST rule) against chio with the
 * demo policy (1 rule, 4 tools), on the same pinned core:
 * - the decision time (`chio_check_decision_duration_seconds`: arrival → receipt sealed, without
 *   the fsync wait) at a fixed 1,000 Checks/s, p50 and mean; target big ≤ 1.5 × demo;
 * - closed-loop throughput (h2load -c 4 -m 16); target big ≥ demo / 1.5;
 * - the policy's compile time in a fresh process (bench/policy-compile.mjs: cold, as at start,
 *   and warm, as on a reload); target < 1 s;
 * and the null server's closed-loop throughput as the baseline of the same run.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { scalePolicyYaml } from './policy-gen.mjs';
import { cpuUsPerRequest, measured, noiseCells, noiseVerdict, NOISE_COLUMNS, ready, us } from './scale-common.mjs';
import { median } from './stats.mjs';

export const POLICY_TARGETS = { maxLatencyRatio: 1.5, maxCompileMs: 1000 };
const RULES = 10_000;

/**
 * @param {import('./harness.mjs').Harness} h
 * @param {import('./harness.mjs').Server} server
 */
async function measure(h, server) {
  const s = h.settings;
  await ready(h, server);
  const open = await measured(h, server, (onPhase) => h.openloop(server, { rate: s.openloopRate, durationS: s.openloopDurationS, warmupS: s.openloopWarmupS, onPhase }));
  const closed = [];
  for (let rep = 1; rep <= s.reps; rep++) {
    closed.push(await h.h2load(server, { clients: 4, streams: 16, durationS: s.durationS, warmupS: s.h2loadWarmupS, label: `run ${rep}` }));
  }
  return { open, closed };
}

/** @type {import('./sections.mjs').Section} */
export const policySizeSection = {
  name: 'policy-size',
  title: `Policy size: ${RULES.toLocaleString('en-US')} rules / ${(RULES * 5).toLocaleString('en-US')} path prefixes vs the demo policy (decision time, throughput, compile time)`,
  default: true,
  async run(h) {
    const big = scalePolicyYaml({ rules: RULES });
    const bigFile = path.join(h.settings.tmpRoot, `policy-${RULES}-rules.yaml`);
    writeFileSync(bigFile, big.text);
    const demoFile = path.join(h.settings.repoRoot, 'demo', 'policy.yaml');
    const compileArgs = ['-c', String(h.settings.serverCpu), process.execPath, path.join(h.settings.repoRoot, 'bench', 'policy-compile.mjs'), bigFile];
    const compile = JSON.parse(execFileSync('taskset', compileArgs, { encoding: 'utf8' }));

    h.log(`  chio, demo policy`);
    const demo = (await h.withServer('chio', { label: 'chio (demo policy)' }, (server) => measure(h, server))).value;
    h.log(`  chio, ${RULES} rules (${(big.text.length / 1e6).toFixed(1)} MB)`);
    const large = (await h.withServer('chio', { config: { policy: bigFile }, label: `chio (${RULES} rules)` }, (server) => measure(h, server))).value;
    h.log('  null server (baseline)');
    const nul = (await h.withServer('null', {}, async (server) => {
      await ready(h, server);
      return h.h2load(server, { clients: 4, streams: 16, durationS: h.settings.durationS, warmupS: h.settings.h2loadWarmupS, label: 'run 1' });
    })).value;

    const rows = [
      { name: 'chio, demo policy (1 rule, 4 tools)', x: demo },
      { name: `chio, ${big.rules.toLocaleString('en-US')} rules, ${big.pathPrefixes.toLocaleString('en-US')} prefixes, ${big.tools.toLocaleString('en-US')} tools`, x: large },
    ];
    const rps = (x) => median(x.closed.map((r) => r.reqPerSec));
    const decision = (x) => /** @type {NonNullable<typeof x.open.window>} */ (x.open.window).decision;
    const p50Ratio = decision(large).p50.value / decision(demo).p50.value;
    const meanRatio = decision(large).meanSeconds / decision(demo).meanSeconds;
    const rpsRatio = rps(large) / rps(demo);
    const allRuns = [...rows.flatMap((r) => [r.x.open.run, ...r.x.closed]), nul];
    return {
      tables: [
        {
          title: 'decision time at 1,000/s (chio_check_decision_duration_seconds over the measured window) and closed-loop throughput',
          columns: [
            ['name', 'server'],
            ['p50', 'decision p50'],
            ['mean', 'decision mean'],
            ['p99', 'decision p99'],
            ['clientP50', 'client p50 ms', 'ms'],
            ['rps', 'h2load req/s', 'int'],
            ['cpuUs', 'srv CPU µs/req', 'ms'],
            ['failures', 'failures', 'int'],
            ...NOISE_COLUMNS,
          ],
          rows: [
            ...rows.map(({ name, x }) => ({
              name,
              p50: us(decision(x).p50.value),
              mean: us(decision(x).meanSeconds),
              p99: us(decision(x).p99.value),
              clientP50: x.open.run.latencyMs.p50,
              rps: rps(x),
              cpuUs: median(x.closed.map(cpuUsPerRequest)),
              failures: x.open.run.failures + x.closed.reduce((n, r) => n + r.failures, 0),
              ...noiseCells({ stealPct: median(x.closed.map((r) => r.stealPct)), otherBusyPct: median(x.closed.map((r) => r.otherBusyPct)), noisy: [x.open.run, ...x.closed].some((r) => r.noisy) }),
            })),
            { name: 'null server (baseline)', p50: '–', mean: '–', p99: '–', clientP50: null, rps: nul.reqPerSec, cpuUs: cpuUsPerRequest(nul), failures: nul.failures, ...noiseCells(nul) },
          ],
        },
        {
          title: `compile time of the ${RULES.toLocaleString('en-US')}-rule policy (${(compile.bytes / 1e6).toFixed(1)} MB YAML) in a fresh process pinned to CPU ${h.settings.serverCpu}`,
          columns: [
            ['what', 'load'],
            ['ms', 'ms', 'ms'],
          ],
          rows: [
            { what: `cold (first load in the process, as at start)${compile.fastReader ? ', fast reader' : ', FULL PARSER'}`, ms: compile.coldMs },
            { what: 'warm (median of 5 more, as on a reload)', ms: compile.warmMs },
          ],
        },
      ],
      checks: [
        {
          name: `decision p50 with ${RULES.toLocaleString('en-US')} rules ÷ demo policy (chio_check_decision_duration_seconds at 1,000/s)`,
          target: `≤ ${POLICY_TARGETS.maxLatencyRatio}`,
          value: `${p50Ratio.toFixed(2)} (${us(decision(large).p50.value)} vs ${us(decision(demo).p50.value)}; means ${meanRatio.toFixed(2)}×)`,
          pass: p50Ratio <= POLICY_TARGETS.maxLatencyRatio,
          inconclusive: noiseVerdict([large.open.run, demo.open.run]),
        },
        {
          name: `closed-loop throughput with ${RULES.toLocaleString('en-US')} rules ÷ demo policy`,
          target: `≥ ${(1 / POLICY_TARGETS.maxLatencyRatio).toFixed(2)}`,
          value: `${rpsRatio.toFixed(2)} (${Math.round(rps(large))} vs ${Math.round(rps(demo))} req/s)`,
          pass: rpsRatio >= 1 / POLICY_TARGETS.maxLatencyRatio,
          inconclusive: noiseVerdict([...large.closed, ...demo.closed]),
        },
        {
          name: `compile time of the ${RULES.toLocaleString('en-US')}-rule policy, cold`,
          target: `< ${POLICY_TARGETS.maxCompileMs} ms`,
          value: `${compile.coldMs.toFixed(0)} ms (warm ${compile.warmMs.toFixed(0)} ms)`,
          pass: compile.coldMs < POLICY_TARGETS.maxCompileMs,
        },
        {
          name: 'policy-size requests without failures',
          target: '0',
          value: String(allRuns.reduce((n, r) => n + r.failures, 0)),
          pass: allRuns.every((r) => r.failures === 0),
        },
      ],
      notes: [
        'decision p50/p99 are histogram_quantile interpolations inside buckets of 25–50 µs; the mean (sum/count) is exact.',
        `compile: node bench/policy-compile.mjs <generated file> (taskset -c ${h.settings.serverCpu}); generator: bench/lib/policy-gen.mjs scalePolicyYaml({rules: ${RULES}}).`,
      ],
      data: { compile, demo, large, null: nul, ratios: { p50Ratio, meanRatio, rpsRatio } },
    };
  },
};
