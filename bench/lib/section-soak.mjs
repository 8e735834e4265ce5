/**
 * Section `soak` (issue "Performance at scale": memory; not in the default run: it takes 5
 * minutes). chio pinned to one core, bench/openloop.mjs at 1,000 Checks/s for 300 s (30 s with
 * --quick), RSS (VmRSS) sampled every 5 s. Targets: RSS under 200 MiB throughout, and no growth:
 * the least-squares slope of RSS over the run after its first minute (heap warm-up) ≤ 1 MiB/min.
 */
import { readMemory } from './proc.mjs';
import { ready } from './scale-common.mjs';

export const SOAK_TARGETS = { maxRssMiB: 200, maxSlopeMiBPerMin: 1 };
const RATE = 1000;
const SAMPLE_S = 5;

/**
 * Least-squares slope of y over x.
 * @param {{x: number, y: number}[]} pts
 */
export function slope(pts) {
  const n = pts.length;
  if (n < 2) return NaN;
  const mx = pts.reduce((s, p) => s + p.x, 0) / n;
  const my = pts.reduce((s, p) => s + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of pts) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

/** @type {import('./sections.mjs').Section} */
export const soakSection = {
  name: 'soak',
  title: `Memory soak: ${RATE.toLocaleString('en-US')} Checks/s for 5 minutes, RSS every ${SAMPLE_S} s (not in the default run)`,
  default: false,
  async run(h) {
    const durationS = h.settings.quick ? 30 : 300;
    /** @type {{t: number, rssMiB: number}[]} */
    const samples = [];
    const run = (
      await h.withServer('chio', { label: 'chio (soak)' }, async (server) => {
        await ready(h, server);
        h.log(`  chio: ${RATE}/s for ${durationS} s, RSS every ${SAMPLE_S} s`);
        let t0 = 0;
        let timer;
        const sample = () => {
          const m = readMemory(server.pid);
          if (m) samples.push({ t: (Date.now() - t0) / 1000, rssMiB: m.rssKb / 1024 });
        };
        try {
          return await h.openloop(server, {
            rate: RATE,
            durationS,
            warmupS: 0,
            onPhase: async (phase) => {
              if (phase !== 'measure') return;
              t0 = Date.now();
              sample();
              timer = setInterval(sample, SAMPLE_S * 1000);
            },
          });
        } finally {
          clearInterval(timer);
          sample();
        }
      })
    ).value;
    const peak = Math.max(...samples.map((p) => p.rssMiB));
    const settled = samples.filter((p) => p.t >= Math.min(60, durationS / 3));
    const perMin = slope(settled.map((p) => ({ x: p.t / 60, y: p.rssMiB })));
    const every = Math.max(1, Math.round(30 / SAMPLE_S));
    return {
      tables: [
        {
          title: `RSS while serving ${RATE}/s (every ${every * SAMPLE_S} s shown; all ${samples.length} samples in the JSON)`,
          columns: [
            ['t', 's', 'int'],
            ['rssMiB', 'RSS MiB', 'ms'],
          ],
          rows: samples.filter((_, i) => i % every === 0 || i === samples.length - 1),
        },
      ],
      checks: [
        { name: `soak: peak RSS at ${RATE}/s`, target: `< ${SOAK_TARGETS.maxRssMiB} MiB`, value: `${peak.toFixed(1)} MiB`, pass: peak < SOAK_TARGETS.maxRssMiB },
        {
          name: 'soak: RSS does not grow (least-squares slope after the first minute)',
          target: `≤ ${SOAK_TARGETS.maxSlopeMiBPerMin} MiB/min`,
          value: `${perMin.toFixed(2)} MiB/min over ${settled.length} samples`,
          pass: perMin <= SOAK_TARGETS.maxSlopeMiBPerMin,
        },
        { name: 'soak: requests without failures', target: '0', value: String(run.failures), pass: run.failures === 0 },
      ],
      notes: [`client latency over the soak: p50 ${run.latencyMs.p50.toFixed(2)} ms, p99 ${run.latencyMs.p99.toFixed(2)} ms, max ${run.latencyMs.max.toFixed(1)} ms.`],
      data: { samples, peakRssMiB: peak, slopeMiBPerMin: perMin, run },
    };
  },
};
