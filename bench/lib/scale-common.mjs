/**
 * What the "performance at scale" sections share (section-policy-size, -svid-churn, -workers,
 * -overload, -soak, -sweep; bench/README.md): a warmed-up server, a load run with /metrics scraped
 * at the start and the end of its measured window, histogram and counter deltas over that window,
 * and the usual table columns.
 */
import { describeHistogram } from './section-openloop.mjs';
import { METRIC } from './harness.mjs';
import { counterSum, histogramDelta, histogramOf } from './prom.mjs';

export const DECISION_METRIC = 'chio_check_decision_duration_seconds';

/**
 * Sanity check and closed-loop warm-up (JIT, SVID cache, connections).
 * @param {import('./harness.mjs').Harness} h
 * @param {import('./harness.mjs').Server} server
 */
export async function ready(h, server) {
  await h.sanity(server);
  await h.warmUp(server);
}

/**
 * Runs `load(onPhase)` (h.openloop / h.closedloop / h.h2load-like) and, for chio, scrapes /metrics
 * when its measured window starts and ends: returns the run and the deltas of the Check and
 * decision histograms and of the decisions by reason.
 * @template {object} R
 * @param {import('./harness.mjs').Harness} h
 * @param {import('./harness.mjs').Server} server
 * @param {(onPhase: ((phase: string) => Promise<void>) | undefined) => Promise<R>} load
 */
export async function measured(h, server, load) {
  /** @type {Record<string, import('./prom.mjs').Sample[]>} */
  const scrapes = {};
  const run = await load(server.kind === 'chio' ? async (phase) => void (scrapes[phase] = await h.scrape(server)) : undefined);
  if (server.kind !== 'chio') return { run, window: null };
  const before = scrapes['measure'];
  const after = scrapes['drain'];
  if (!before || !after) throw new Error('the load ended without both metric scrapes');
  return { run, window: windowOf(before, after) };
}

/**
 * Deltas over a measured window between two scrapes of the same chio process.
 * @param {import('./prom.mjs').Sample[]} before
 * @param {import('./prom.mjs').Sample[]} after
 */
export function windowOf(before, after) {
  const hist = (name) => {
    const a = histogramOf(after, name);
    if (!a) throw new Error(`${name} missing from /metrics`);
    return describeHistogram(histogramDelta(histogramOf(before, name), a));
  };
  const counter = (filter) => counterSum(after, METRIC.admissions, filter) - counterSum(before, METRIC.admissions, filter);
  return {
    check: hist(METRIC.checkDuration),
    decision: hist(DECISION_METRIC),
    decisions: counter({}),
    allowed: counter({ verdict: 'allow' }),
    shed: counter({ reason: 'overloaded' }),
    otherDenies: counter({ verdict: 'deny' }) - counter({ reason: 'overloaded' }),
  };
}

/** µs text of seconds. @param {number} s */
export const us = (s) => `${(s * 1e6).toFixed(0)} µs`;

/** Server CPU µs per answered request of a run. @param {{serverCpuPct: number, rate?: number, reqPerSec?: number}} r */
export function cpuUsPerRequest(r) {
  const rate = r.reqPerSec ?? r.rate ?? NaN;
  return ((r.serverCpuPct / 100) * 1e6) / rate;
}

/** The noise columns every run table ends with. @type {import('./sections.mjs').Column[]} */
export const NOISE_COLUMNS = [
  ['stealPct', 'steal%', 'pct'],
  ['otherBusyPct', 'other%', 'pct'],
  ['noisy', 'noise'],
];

/** @param {{stealPct: number, otherBusyPct: number, noisy: boolean}} r */
export function noiseCells(r) {
  return { stealPct: r.stealPct, otherBusyPct: r.otherBusyPct, noisy: r.noisy ? 'NOISY' : '' };
}

/**
 * A verdict from runs where other programs used the machine cannot be trusted either way.
 * @param {{noisy: boolean}[]} runs
 */
export function noiseVerdict(runs) {
  const noisy = runs.filter((r) => r.noisy).length;
  return noisy === 0 ? undefined : `${noisy} of ${runs.length} run(s) were NOISY (other programs used the CPUs)`;
}
