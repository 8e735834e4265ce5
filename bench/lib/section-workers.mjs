/**
 * Section `workers` (issue "Performance at scale": both cores). Closed-loop throughput of
 * `chio serve` with 1 process and with `--workers 2` (src/server/workers.ts: node:cluster, one
 * listener, one receipt chain per worker), and of the null server (1 process) as the baseline.
 * Nothing is pinned here: the servers may use both cores, and h2load (-c 4 -m 16: 4 connections,
 * which node:cluster hands to the workers in turn) runs on the same 2 cores, as a co-located
 * load generator or Envoy would. Runs alternate (1 worker, 2 workers, null, …) so foreign load
 * hurts all alike. Every worker's chain is verified after the run (`chio receipt verify
 * receipts-w1.jsonl receipts-w2.jsonl`).
 */
import { cpuUsPerRequest, noiseCells, NOISE_COLUMNS, ready } from './scale-common.mjs';
import { median, medianRange } from './stats.mjs';

/** @type {import('./sections.mjs').Section} */
export const workersSection = {
  name: 'workers',
  title: 'Both cores: chio serve with 1 process vs --workers 2 (node:cluster), unpinned, h2load -c 4 -m 16 on the same machine',
  default: true,
  async run(h) {
    const s = h.settings;
    const kinds = [
      { name: 'chio, 1 process', kind: /** @type {const} */ ('chio'), workers: 1 },
      { name: 'chio --workers 2', kind: /** @type {const} */ ('chio'), workers: 2 },
      { name: 'null server (1 process)', kind: /** @type {const} */ ('null'), workers: 1 },
    ];
    /** @type {Map<string, any[]>} */
    const runs = new Map(kinds.map((k) => [k.name, []]));
    for (let rep = 1; rep <= s.reps; rep++) {
      for (const k of kinds) {
        h.log(`  ${k.name}: run ${rep}/${s.reps}`);
        const opts = k.kind === 'chio' ? { config: { workers: k.workers }, cpu: null, label: k.name } : { cpu: null, label: k.name };
        const { value } = await h.withServer(k.kind, opts, async (server) => {
          await ready(h, server);
          return h.h2load(server, { clients: 4, streams: 16, durationS: s.durationS, warmupS: s.h2loadWarmupS, cpu: null, label: `run ${rep}` });
        });
        runs.get(k.name)?.push(value);
      }
    }
    const sum = (name) => {
      const r = runs.get(name) ?? [];
      return {
        rps: medianRange(r.map((x) => x.reqPerSec)),
        p50: median(r.map((x) => x.latencyMs.p50)),
        p99: median(r.map((x) => x.latencyMs.p99)),
        serverCpuPct: median(r.map((x) => x.serverCpuPct)),
        h2loadCpuPct: median(r.map((x) => x.loadCpuPct)),
        cpuUs: median(r.map(cpuUsPerRequest)),
        failures: r.reduce((n, x) => n + x.failures, 0),
        noisy: r.filter((x) => x.noisy).length * 2 > r.length,
        stealPct: median(r.map((x) => x.stealPct)),
        otherBusyPct: median(r.map((x) => x.otherBusyPct)),
      };
    };
    const one = sum('chio, 1 process');
    const two = sum('chio --workers 2');
    const nul = sum('null server (1 process)');
    const scaling = two.rps.median / one.rps.median;
    const all = [...runs.values()].flat();
    return {
      tables: [
        {
          title: `h2load -c 4 -m 16, ${s.reps} run(s) each, median (min–max); CPU % of one core (server = all its processes)`,
          columns: [
            ['name', 'server'],
            ['rps', 'req/s', 'int'],
            ['range', 'range', 'range'],
            ['p50', 'p50 ms', 'ms'],
            ['p99', 'p99 ms', 'ms'],
            ['serverCpuPct', 'srv CPU%', 'pct'],
            ['h2loadCpuPct', 'h2load CPU%', 'pct'],
            ['cpuUs', 'srv CPU µs/req', 'ms'],
            ['failures', 'failures', 'int'],
            ...NOISE_COLUMNS,
          ],
          rows: [
            ['chio, 1 process', one],
            ['chio --workers 2', two],
            ['null server (1 process)', nul],
          ].map(([name, x]) => {
            const v = /** @type {ReturnType<typeof sum>} */ (x);
            return { name, rps: v.rps.median, range: [v.rps.min, v.rps.max], p50: v.p50, p99: v.p99, serverCpuPct: v.serverCpuPct, h2loadCpuPct: v.h2loadCpuPct, cpuUs: v.cpuUs, failures: v.failures, ...noiseCells(v) };
          }),
        },
      ],
      checks: [
        {
          name: 'workers runs without failures (every answer an allow)',
          target: '0',
          value: String(all.reduce((n, r) => n + r.failures, 0)),
          pass: all.every((r) => r.failures === 0),
        },
      ],
      notes: [
        `2 workers ÷ 1 process: ${scaling.toFixed(2)}× the throughput (${Math.round(two.rps.median)} vs ${Math.round(one.rps.median)} req/s). With 2 cores shared by the servers, h2load (${Math.round(two.h2loadCpuPct)} % of a core) and everything else on the machine, 2× is the ceiling, not the expectation.`,
        'each worker writes its own chain; the harness verified both files (servers table below).',
      ],
      data: { runs: Object.fromEntries(runs), summary: { one, two, null: nul, scaling } },
    };
  },
};
