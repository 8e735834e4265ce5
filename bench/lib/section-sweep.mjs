/**
 * Section `sweep` (issue "Performance at scale": latency against offered load). bench/openloop.mjs
 * at fixed rates from 500 to 8,000 Checks/s (latency from the scheduled send time, so queueing
 * anywhere counts) against chio (pinned, strict durability) and the null server, each process
 * warmed up once and then swept upwards. Renders p50/p99 against the rate for both as a chart:
 * docs/bench/latency-vs-load.png (and .svg) on a full run, .bench/ on a --quick one.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chartSvg, svgToPng } from './plot.mjs';
import { ready } from './scale-common.mjs';

export const SWEEP_RATES = [500, 1000, 2000, 3000, 4000, 5000, 6000, 8000];
const QUICK_RATES = [1000, 4000, 8000];
/**
 * Rates at or below this must be served without a failure: the rate of the Check-path latency
 * target. Above it the outcome depends on this machine's capacity (the saturation section; ~3,000
 * to ~12,000/s on the same VM on different days) and its disk's fdatasync time: beyond capacity
 * chio sheds with deny `overloaded` (receipted) by design, which the overload section checks.
 */
const MUST_SERVE = 1000;

/**
 * @param {import('./harness.mjs').Harness} h
 * @param {'chio' | 'null'} kind
 * @param {number[]} rates
 */
async function sweep(h, kind, rates) {
  const s = h.settings;
  const durationS = s.quick ? 3 : 5;
  return (
    await h.withServer(kind, { label: `${kind} (sweep)` }, async (server) => {
      await ready(h, server);
      // swept past capacity on purpose: overloaded denies are expected there, and the clients count
      // as sent what was refused or unanswered (the receipt check then holds lines ≥ nothing)
      server.denyExpected = true;
      server.answeredIsLowerBound = true;
      const runs = [];
      for (const rate of rates) {
        h.log(`  ${kind}: ${rate}/s for ${durationS} s`);
        runs.push(await h.openloop(server, { rate, durationS, warmupS: 1, connections: 4 }));
      }
      return runs;
    })
  ).value;
}

/** @type {import('./sections.mjs').Section} */
export const sweepSection = {
  name: 'sweep',
  title: 'Latency against offered load: open loop 500…8,000 Checks/s, chio vs the null server (chart: docs/bench/latency-vs-load.png)',
  default: true,
  async run(h) {
    const s = h.settings;
    const rates = s.quick ? QUICK_RATES : SWEEP_RATES;
    const chio = await sweep(h, 'chio', rates);
    const nul = await sweep(h, 'null', rates);
    const at = (runs, i) => /** @type {any} */ (runs[i]);
    const rows = rates.map((rate, i) => {
      const c = at(chio, i);
      const n = at(nul, i);
      return {
        rate,
        chioAnswered: c.answered / c.durationS,
        chioP50: c.latencyMs.p50,
        chioP99: c.latencyMs.p99,
        nullP50: n.latencyMs.p50,
        nullP99: n.latencyMs.p99,
        chioCpu: c.serverCpuPct,
        chioFailures: c.failures,
        nullFailures: n.failures,
        lag: Math.max(c.maxSendLagMs, n.maxSendLagMs),
        noisy: c.noisy || n.noisy ? 'NOISY' : '',
      };
    });
    const series = (runs, q) => runs.map((r, i) => ({ x: /** @type {number} */ (rates[i]), y: r.latencyMs[q] }));
    const svg = chartSvg({
      title: 'chio-authz: Check latency against offered load',
      subtitle: `${new Date().toISOString().slice(0, 10)}, ${s.quick ? 'QUICK, ' : ''}2-vCPU VM, server pinned to 1 core, strict durability, open loop (latency from the scheduled send)`,
      xLabel: 'offered load (Checks/s)',
      yLabel: 'client latency (ms, log scale)',
      series: [
        { name: 'chio p50', color: '#1f77b4', points: series(chio, 'p50') },
        { name: 'chio p99', color: '#1f77b4', dash: '7 4', points: series(chio, 'p99') },
        { name: 'null server p50', color: '#ff7f0e', points: series(nul, 'p50') },
        { name: 'null server p99', color: '#ff7f0e', dash: '7 4', points: series(nul, 'p99') },
      ],
    });
    const dir = s.quick ? path.join(s.repoRoot, '.bench') : path.join(s.repoRoot, 'docs', 'bench');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'latency-vs-load.svg'), `${svg}\n`);
    const { png, error } = await svgToPng(svg);
    const pngFile = path.join(dir, 'latency-vs-load.png');
    if (png) writeFileSync(pngFile, png);
    const served = rows.filter((r) => r.rate <= MUST_SERVE);
    return {
      tables: [
        {
          title: 'open loop on 4 connections, 1 s warm-up per rate; latency ms from the scheduled send time',
          columns: [
            ['rate', 'offered/s', 'int'],
            ['chioAnswered', 'chio answered/s', 'int'],
            ['chioP50', 'chio p50', 'ms'],
            ['chioP99', 'chio p99', 'ms'],
            ['nullP50', 'null p50', 'ms'],
            ['nullP99', 'null p99', 'ms'],
            ['chioCpu', 'chio CPU%', 'pct'],
            ['chioFailures', 'chio failures', 'int'],
            ['nullFailures', 'null failures', 'int'],
            ['lag', 'send lag ms', 'ms'],
            ['noisy', 'noise'],
          ],
          rows,
        },
      ],
      checks: [
        {
          name: `sweep: every Check up to ${MUST_SERVE.toLocaleString('en-US')}/s answered and allowed`,
          target: '0 failures',
          value: served.map((r) => `${r.rate}/s: ${r.chioFailures}`).join(', '),
          pass: served.every((r) => r.chioFailures === 0),
        },
        {
          name: 'latency chart rendered (@resvg/resvg-js)',
          target: 'PNG written',
          value: png ? path.relative(s.repoRoot, pngFile) : String(error),
          pass: png !== null,
        },
      ],
      notes: ['above capacity the open loop keeps sending on schedule: latency then measures the queue (and failures count what was refused or not answered within the drain timeout).'],
      data: { rates, chio, null: nul },
    };
  },
};
