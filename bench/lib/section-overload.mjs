/**
 * Section `overload` (issue "Performance at scale": overload; src/limits.ts). chio pinned to one
 * core with its default limits (`max_in_flight` 1024, `max_concurrent_streams` 100); its capacity C
 * is measured first (h2load -c 4 -m 16), then h2load offers 2·C over 16 connections for the measured
 * window ("overload") and, right after, C/2 ("recovery"). The offered load uses h2load --rps
 * (bursts every 10 ms; an aggregate load is what matters here); h2load may open 256 streams per
 * connection, chio allows 100. Reported per phase: answered rate, how many Checks were admitted and how many shed
 * (deny `overloaded`, HTTP 503, with a receipt: from the server's counters), the latency of the
 * answers (h2load: send → answer), the server's decision time, and its RSS. The null server under
 * the same 2·C is the baseline (the transport alone).
 */
import { readMemory } from './proc.mjs';
import { noiseCells, NOISE_COLUMNS, ready, us, windowOf } from './scale-common.mjs';

/** enough connections that their streams (100 each by default: 1,600) exceed max_in_flight (1024) */
const CONNECTIONS = 16;

/**
 * RSS of `pid` every `everyMs` while `fn` runs: peak and last, MiB.
 * @template T
 * @param {number} pid
 * @param {() => Promise<T>} fn
 */
async function withRss(pid, fn, everyMs = 250) {
  let peakKb = 0;
  let lastKb = 0;
  const timer = setInterval(() => {
    const m = readMemory(pid);
    if (m) {
      lastKb = m.rssKb;
      peakKb = Math.max(peakKb, m.rssKb);
    }
  }, everyMs);
  try {
    const value = await fn();
    return { value, peakRssMiB: peakKb / 1024, lastRssMiB: lastKb / 1024 };
  } finally {
    clearInterval(timer);
  }
}

/**
 * One phase: h2load offering `rate`/s for `durationS`, the server's counters scraped around it.
 * @param {import('./harness.mjs').Harness} h
 * @param {import('./harness.mjs').Server} server
 * @param {{rate: number, durationS: number, label: string, skipQuietWait?: boolean}} o
 */
async function phase(h, server, o) {
  const before = server.kind === 'chio' ? await h.scrape(server) : null;
  const r = await withRss(server.pid, () =>
    h.h2load(server, { clients: CONNECTIONS, streams: 256, durationS: o.durationS, rps: Math.max(1, Math.round(o.rate / CONNECTIONS)), label: o.label, skipQuietWait: o.skipQuietWait }),
  );
  const window = before ? windowOf(before, await h.scrape(server)) : null;
  const run = r.value;
  // h2load cannot see a deny (gRPC answers are HTTP 200): its own failures are transport errors
  const errors = run.h2load.failed + run.h2load.errored + run.h2load.timeout + run.h2load.statusOther;
  return { rate: o.rate, run, window, errors, peakRssMiB: r.peakRssMiB, lastRssMiB: r.lastRssMiB };
}

/** @type {import('./sections.mjs').Section} */
export const overloadSection = {
  name: 'overload',
  title: 'Overload: 2× capacity for the measured window, then half capacity (limits.max_in_flight: deny overloaded + receipt; limits.max_concurrent_streams)',
  default: true,
  async run(h) {
    const s = h.settings;
    const phaseS = s.durationS;
    let capacity = NaN;
    /** @type {any[]} */
    const phases = [];
    await h.withServer('chio', { label: 'chio (overload)', denyExpected: true }, async (server) => {
      await ready(h, server);
      const sat = await h.h2load(server, { clients: 4, streams: 16, durationS: Math.max(3, phaseS / 2), warmupS: 1, label: 'capacity' });
      capacity = sat.reqPerSec;
      h.log(`  chio: capacity ${Math.round(capacity)}/s; overload ${Math.round(2 * capacity)}/s for ${phaseS} s, then ${Math.round(capacity / 2)}/s`);
      phases.push({ name: 'overload (2 × C)', ...(await phase(h, server, { rate: 2 * capacity, durationS: phaseS, label: 'overload' })) });
      // recovery in two halves: the first may still drain what the overload left in flight
      phases.push({ name: 'recovery (C / 2), 1st half', ...(await phase(h, server, { rate: capacity / 2, durationS: phaseS / 2, label: 'recovery 1', skipQuietWait: true })) });
      phases.push({ name: 'recovery (C / 2), 2nd half', ...(await phase(h, server, { rate: capacity / 2, durationS: phaseS / 2, label: 'recovery 2', skipQuietWait: true })) });
    });
    h.log(`  null server: ${Math.round(2 * capacity)}/s`);
    const nul = (await h.withServer('null', {}, async (server) => {
      await ready(h, server);
      return phase(h, server, { rate: 2 * capacity, durationS: phaseS, label: 'null 2 × C' });
    })).value;
    const [over, recovery1, recovery] = phases;
    const row = (name, p) => {
      const w = p.window;
      return {
        name,
        offered: p.rate,
        answeredRate: p.run.reqPerSec,
        admitted: w ? w.allowed : null,
        shed: w ? w.shed : null,
        shedPct: w && w.decisions > 0 ? w.shed / w.decisions : null,
        p50: p.run.latencyMs.p50,
        p99: p.run.latencyMs.p99,
        decisionP99: w ? us(w.decision.p99.value) : '–',
        rss: p.peakRssMiB,
        errors: p.errors,
        ...noiseCells(p.run),
      };
    };
    const rows = [row(`chio, ${over.name}`, over), row(`chio, ${recovery1.name}`, recovery1), row(`chio, ${recovery.name}`, recovery), row('null server, 2 × C', nul)];
    const errors = rows.reduce((n, r) => n + r.errors, 0);
    return {
      tables: [
        {
          title: `capacity C = ${Math.round(capacity)} Checks/s (h2load -c 4 -m 16, pinned); h2load -c ${CONNECTIONS} -m 256 --rps (chio allows 100 streams per connection); latency send → answer; admitted/shed from chio's counters`,
          columns: [
            ['name', 'phase'],
            ['offered', 'offered/s', 'int'],
            ['answeredRate', 'answered/s', 'int'],
            ['admitted', 'admitted', 'int'],
            ['shed', 'shed', 'int'],
            ['shedPct', 'shed %', 'frac'],
            ['p50', 'p50 ms', 'ms'],
            ['p99', 'p99 ms', 'ms'],
            ['decisionP99', 'decision p99'],
            ['rss', 'peak RSS MiB', 'ms'],
            ['errors', 'errors', 'int'],
            ...NOISE_COLUMNS,
          ],
          rows,
        },
      ],
      checks: [
        {
          name: 'every Check answered under overload: no transport error (a shed Check is a deny, never an RPC error)',
          target: '0',
          value: String(errors),
          pass: errors === 0,
        },
        {
          name: 'recovery: nothing shed at half capacity once the overload has drained (2nd half of the recovery)',
          target: '0 shed',
          value: `${recovery.window?.shed ?? 'n/a'} shed of ${recovery.window?.decisions ?? 'n/a'} (1st half: ${recovery1.window?.shed ?? 'n/a'} of ${recovery1.window?.decisions ?? 'n/a'})`,
          pass: recovery.window?.shed === 0,
          inconclusive: recovery.run.noisy && recovery.window?.shed !== 0 ? 'the recovery run was NOISY (other programs used the CPUs)' : undefined,
        },
        {
          name: 'memory bounded under overload (peak RSS during 2 × C)',
          target: '< 400 MiB',
          value: `${over.peakRssMiB.toFixed(0)} MiB (recovery ${Math.max(recovery1.peakRssMiB, recovery.peakRssMiB).toFixed(0)} MiB, null server ${nul.peakRssMiB.toFixed(0)} MiB)`,
          pass: over.peakRssMiB < 400,
        },
      ],
      notes: [
        'a shed Check costs the transport, a decode and its receipt, but no identity, policy or capability work; it is answered without waiting for a slot.',
        'h2load --rps sends in bursts every 10 ms; latency is measured from the actual send, so a request h2load could not send yet (all streams of its connection busy) waits uncounted: the queue outside the server, where Envoy would hold it until its ext_authz timeout.',
      ],
      data: { capacity, phases, null: nul },
    };
  },
};
