/**
 * Section `saturation`: closed-loop maximum throughput of the Check path, chio-authz against the
 * null server (same protos, answers OK) as the baseline measured in the same job
 * (/work/shared/notes/performance.md §5.6: gate on a ratio, absolute numbers move ±20–30% on
 * shared hosts). h2load `-c 4 -m 16 -D <s> --warm-up-time 2`, repeated; median and min–max.
 * The servers alternate (chio, null, chio, null, …; a fresh, warmed-up process each time) so a
 * burst of foreign load on the shared machine hurts both sides alike rather than one.
 * Target: chio / null ≥ 0.50.
 */
import { noiseNotes } from './report.mjs';
import { median, medianRange } from './stats.mjs';

export const RATIO_TARGET = 0.5;

/**
 * Sanity, warm-up, then one measured h2load run.
 * @param {import('./harness.mjs').Harness} h
 * @param {import('./harness.mjs').Server} server
 * @param {number} rep
 */
async function measure(h, server, rep) {
  const s = h.settings;
  await h.sanity(server);
  h.log(`  ${server.label}: warm-up (${s.warmupRequests} requests)`);
  await h.warmUp(server);
  h.log(`  ${server.label}: h2load run ${rep}/${s.reps} (${s.durationS} s + ${s.h2loadWarmupS} s warm-up)`);
  return h.h2load(server, { clients: 4, streams: 16, durationS: s.durationS, warmupS: s.h2loadWarmupS, label: `run ${rep}` });
}

/**
 * Server CPU time per request in µs: robust to other programs taking the core (they lower req/s
 * and the server's CPU share alike).
 * @param {{serverCpuPct: number, reqPerSec: number}} r
 */
function cpuUsPerRequest(r) {
  return (r.serverCpuPct / 100) * 1e6 / r.reqPerSec;
}

/** @param {Awaited<ReturnType<typeof measure>>[]} runs */
function summary(runs) {
  return {
    reqPerSec: medianRange(runs.map((r) => r.reqPerSec)),
    p50Ms: median(runs.map((r) => r.latencyMs.p50)),
    p99Ms: median(runs.map((r) => r.latencyMs.p99)),
    serverCpuPct: median(runs.map((r) => r.serverCpuPct)),
    cpuUsPerReq: median(runs.map(cpuUsPerRequest)),
    stealPct: medianRange(runs.map((r) => r.stealPct)),
    otherBusyPct: medianRange(runs.map((r) => r.otherBusyPct)),
    failures: runs.reduce((n, r) => n + r.failures, 0),
  };
}

/**
 * Why the req/s ratio's verdict cannot be trusted, or undefined. Noise on a shared machine can
 * push the ratio either way (it takes the null server's core in one run and chio's in another).
 * The CPU-normalized ratio barely moves with such noise, so when most runs of either server were
 * NOISY, the verdict stands only if both ratios fall on the same side of the target.
 * @param {{name: string, runs: {noisy: boolean}[]}[]} servers
 * @param {number} ratio
 * @param {number} cpuRatio
 */
export function ratioNoise(servers, ratio, cpuRatio) {
  const noisy = servers.filter((s) => s.runs.filter((r) => r.noisy).length * 2 > s.runs.length).map((s) => s.name);
  if (noisy.length === 0 || (ratio >= RATIO_TARGET) === (cpuRatio >= RATIO_TARGET)) return undefined;
  return `most ${noisy.join(' and ')} runs were NOISY and the CPU-normalized ratio ${cpuRatio.toFixed(3)} says the opposite`;
}

/** the null server on chio's transport (bench/null-server.mjs --transport native) */
const NULL_NATIVE = 'null-native';

/** @type {import('./sections.mjs').Section} */
export const saturationSection = {
  name: 'saturation',
  title: 'Closed-loop saturation: h2load -c 4 -m 16, chio-authz vs the null server',
  default: true,
  async run(h) {
    /** @type {Record<'chio' | 'null' | 'nullNative', {name: string, runs: Awaited<ReturnType<typeof measure>>[], command: string}>} */
    const by = {
      chio: { name: 'chio', runs: [], command: '' },
      null: { name: 'null', runs: [], command: '' },
      nullNative: { name: NULL_NATIVE, runs: [], command: '' },
    };
    for (let rep = 1; rep <= h.settings.reps; rep++) {
      for (const kind of /** @type {const} */ (['chio', 'null', 'nullNative'])) {
        const opts = kind === 'nullNative' ? { label: NULL_NATIVE, transport: /** @type {const} */ ('native') } : {};
        const { value, report } = await h.withServer(kind === 'chio' ? 'chio' : 'null', opts, (server) => measure(h, server, rep));
        by[kind].runs.push(value);
        by[kind].command = report.command;
      }
    }
    const servers = [by.chio, by.null, by.nullNative];
    const sums = Object.fromEntries(servers.map((s) => [s.name, summary(s.runs)]));
    const ratio = sums.chio.reqPerSec.median / sums.null.reqPerSec.median;
    const cpuRatio = sums.null.cpuUsPerReq / sums.chio.cpuUsPerReq;
    const nativeRatio = sums.chio.reqPerSec.median / sums[NULL_NATIVE].reqPerSec.median;
    const productUs = sums.chio.cpuUsPerReq - sums[NULL_NATIVE].cpuUsPerReq;
    const runRows = servers.flatMap((s) =>
      s.runs.map((r) => ({
        server: s.name,
        run: r.label,
        reqPerSec: r.reqPerSec,
        p50Ms: r.latencyMs.p50,
        p90Ms: r.latencyMs.p90,
        p99Ms: r.latencyMs.p99,
        serverCpuPct: r.serverCpuPct,
        cpuUsPerReq: cpuUsPerRequest(r),
        loadCpuPct: r.loadCpuPct,
        stealPct: r.stealPct,
        otherBusyPct: r.otherBusyPct,
        failures: r.failures,
        noisy: r.noisy ? 'NOISY' : '',
      })),
    );
    const summaryRows = servers.map((s) => {
      const x = sums[s.name];
      return {
        server: s.name,
        reqPerSec: x.reqPerSec.median,
        range: [x.reqPerSec.min, x.reqPerSec.max],
        p50Ms: x.p50Ms,
        p99Ms: x.p99Ms,
        serverCpuPct: x.serverCpuPct,
        cpuUsPerReq: x.cpuUsPerReq,
        failures: x.failures,
      };
    });
    return {
      tables: [
        {
          title: 'h2load runs (latency from --log-file; CPU % of one core; steal/other % of the machine)',
          columns: [
            ['server', 'server'],
            ['run', 'run'],
            ['reqPerSec', 'req/s', 'int'],
            ['p50Ms', 'p50 ms', 'ms'],
            ['p90Ms', 'p90 ms', 'ms'],
            ['p99Ms', 'p99 ms', 'ms'],
            ['serverCpuPct', 'srv CPU%', 'pct'],
            ['cpuUsPerReq', 'srv CPU µs/req', 'ms'],
            ['loadCpuPct', 'h2load CPU%', 'pct'],
            ['stealPct', 'steal%', 'pct'],
            ['otherBusyPct', 'other%', 'pct'],
            ['failures', 'failures', 'int'],
            ['noisy', 'noise'],
          ],
          rows: runRows,
        },
        {
          title: `summary over ${h.settings.reps} run(s): median (min–max)`,
          columns: [
            ['server', 'server'],
            ['reqPerSec', 'req/s median', 'int'],
            ['range', 'min–max', 'range'],
            ['p50Ms', 'p50 ms (median)', 'ms'],
            ['p99Ms', 'p99 ms (median)', 'ms'],
            ['serverCpuPct', 'srv CPU%', 'pct'],
            ['cpuUsPerReq', 'srv CPU µs/req', 'ms'],
            ['failures', 'failures', 'int'],
          ],
          rows: summaryRows,
        },
      ],
      checks: [
        {
          name: 'throughput ratio chio/null',
          target: `≥ ${RATIO_TARGET.toFixed(2)}`,
          value: `${ratio.toFixed(3)} (CPU-normalized ${cpuRatio.toFixed(3)})`,
          pass: ratio >= RATIO_TARGET,
          inconclusive: ratioNoise([by.chio, by.null], ratio, cpuRatio),
        },
        {
          name: 'saturation runs without failures (HTTP/stream errors, server-side denies)',
          target: '0',
          value: String(sums.chio.failures + sums.null.failures),
          pass: sums.chio.failures + sums.null.failures === 0,
        },
      ],
      notes: [
        `CPU-normalized ratio (null server CPU µs per request / chio's, from the medians): ${cpuRatio.toFixed(3)}; it barely moves when other programs take the core.`,
        `${NULL_NATIVE}: the null server on chio's own transport (src/server/native-grpc.ts, same proto-loader decoding). chio / it = ${nativeRatio.toFixed(3)}: chio's work over a bare transport is ~${productUs.toFixed(0)} µs of CPU per Check. The target is stated against the grpc-js null server.`,
        ...noiseNotes(servers.flatMap((x) => x.runs)),
        `chio command: ${servers[0]?.command}`,
        `null command: ${servers[1]?.command}`,
        `${NULL_NATIVE} command: ${servers[2]?.command}`,
        `h2load command (last run): ${by.null.runs[by.null.runs.length - 1]?.command}`,
      ],
      data: { servers: servers.map((s) => ({ ...s, summary: sums[s.name] })), ratio, ratioTarget: RATIO_TARGET, cpuNormalizedRatio: cpuRatio, nativeNullRatio: nativeRatio },
    };
  },
};

