/**
 * Section `svid-churn` (issue "Performance at scale": workload churn). 100,000 distinct X509-SVIDs
 * (bench/lib/svid-gen.mjs, cached in .bench/) go through chio's SVID cache (src/spiffe/x509-svid.ts
 * SvidCache: an LRU of `identity.svid_cache_size` entries, 10,000 here) in a closed loop
 * (bench/closedloop.mjs -c 4 -m 16, cycling the requests), in three cases, each in a fresh process:
 * - 0 % misses: one SVID (the reference request);
 * - 10 % misses: 9 of 10 requests from 1,000 hot workloads (always cached), 1 of 10 from the other
 *   99,000 in turn (never cached: each comes back only after 99,000 others);
 * - 100 % misses: all 100,000 in turn, at least once each (every one parsed: node:crypto X509Certificate).
 * Reported: throughput, latency, the cache's size (`chio_svid_cache_entries`) and peak RSS; the null
 * server with the 100 % requests is the baseline (decode cost of the same bytes, no parsing).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cpuUsPerRequest, measured, noiseCells, noiseVerdict, NOISE_COLUMNS, ready } from './scale-common.mjs';
import { counterSum } from './prom.mjs';
import { svidRequests } from './svid-gen.mjs';

const DISTINCT = 100_000;
const HOT = 1_000;
const CACHE_SIZE = 10_000;

/**
 * @param {Buffer[]} frames
 * @param {number} missEvery  one request in this many comes from the cold set
 */
function pattern(frames, missEvery) {
  const cold = frames.length - HOT;
  return Array.from({ length: frames.length }, (_, k) =>
    k % missEvery === 0 ? /** @type {Buffer} */ (frames[HOT + (Math.floor(k / missEvery) % cold)]) : /** @type {Buffer} */ (frames[k % HOT]),
  );
}

/** @type {import('./sections.mjs').Section} */
export const svidChurnSection = {
  name: 'svid-churn',
  title: `SVID churn: ${DISTINCT.toLocaleString('en-US')} distinct SVIDs through a ${CACHE_SIZE.toLocaleString('en-US')}-entry LRU, 0 / 10 / 100 % cache misses`,
  default: true,
  async run(h) {
    const s = h.settings;
    const frames = await svidRequests({
      repoRoot: s.repoRoot,
      cacheDir: path.join(s.repoRoot, '.bench'),
      referenceRequest: h.request.message,
      count: DISTINCT,
      log: (m) => h.log(m),
    });
    const file = (name, list) => {
      const f = path.join(s.tmpRoot, name);
      writeFileSync(f, Buffer.concat(list));
      return f;
    };
    // at ~2–3k/s a 100 % miss run needs ~40 s to send every SVID once
    const fullPassS = s.quick ? s.durationS : 45;
    const cases = [
      { name: '0 % misses (1 SVID)', missPct: 0, bodiesFile: h.request.bodyFile, durationS: s.durationS },
      { name: '10 % misses', missPct: 10, bodiesFile: file('svid-miss-10.grpc', pattern(frames, 10)), durationS: s.durationS },
      { name: `100 % misses (${DISTINCT.toLocaleString('en-US')} in turn)`, missPct: 100, bodiesFile: file('svid-miss-100.grpc', frames), durationS: fullPassS },
    ];
    const extraYaml = `identity: { svid_cache_size: ${CACHE_SIZE} }`;
    const rows = [];
    for (const c of cases) {
      h.log(`  chio, ${c.name}`);
      const { value, report } = await h.withServer('chio', { config: { extraYaml }, label: `chio (${c.missPct} % miss)` }, async (server) => {
        await ready(h, server);
        const m = await measured(h, server, (onPhase) =>
          h.closedloop(server, { bodiesFile: c.bodiesFile, connections: 4, streams: 16, durationS: c.durationS, warmupS: s.h2loadWarmupS, onPhase }),
        );
        const entries = counterSum(await h.scrape(server), 'chio_svid_cache_entries');
        return { ...m, entries };
      });
      rows.push({ c, ...value, peakRssMiB: report.peakRssMiB });
    }
    h.log('  null server, the 100 % miss requests (baseline)');
    const nul = (await h.withServer('null', {}, async (server) => {
      await ready(h, server);
      return h.closedloop(server, { bodiesFile: /** @type {string} */ (cases[2]?.bodiesFile), connections: 4, streams: 16, durationS: s.durationS, warmupS: s.h2loadWarmupS });
    }));
    const runs = [...rows.map((r) => r.run), nul.value];
    const byMiss = (pct) => rows.find((r) => r.c.missPct === pct);
    const hit = byMiss(0);
    return {
      tables: [
        {
          title: `closed loop (bench/closedloop.mjs -c 4 -m 16, latency send → answer); chio identity.svid_cache_size ${CACHE_SIZE}`,
          columns: [
            ['name', 'case'],
            ['rps', 'req/s', 'int'],
            ['vsHit', 'vs 0 %', 'frac'],
            ['sent', 'requests', 'int'],
            ['p50', 'p50 ms', 'ms'],
            ['p99', 'p99 ms', 'ms'],
            ['cpuUs', 'srv CPU µs/req', 'ms'],
            ['entries', 'cache entries', 'int'],
            ['rss', 'peak RSS MiB', 'ms'],
            ['failures', 'failures', 'int'],
            ...NOISE_COLUMNS,
          ],
          rows: [
            ...rows.map((r) => ({
              name: `chio, ${r.c.name}`,
              rps: r.run.rate,
              vsHit: hit ? r.run.rate / hit.run.rate : null,
              sent: r.run.sent,
              p50: r.run.latencyMs.p50,
              p99: r.run.latencyMs.p99,
              cpuUs: cpuUsPerRequest(r.run),
              entries: r.entries,
              rss: r.peakRssMiB,
              failures: r.run.failures,
              ...noiseCells(r.run),
            })),
            {
              name: 'null server, 100 % miss requests',
              rps: nul.value.rate,
              vsHit: null,
              sent: nul.value.sent,
              p50: nul.value.latencyMs.p50,
              p99: nul.value.latencyMs.p99,
              cpuUs: cpuUsPerRequest(nul.value),
              entries: null,
              rss: nul.report.peakRssMiB,
              failures: nul.value.failures,
              ...noiseCells(nul.value),
            },
          ],
        },
      ],
      checks: [
        {
          name: `SVID cache stays bounded (chio_svid_cache_entries after ${DISTINCT.toLocaleString('en-US')} distinct SVIDs)`,
          target: `≤ identity.svid_cache_size (${CACHE_SIZE})`,
          value: rows.map((r) => `${r.c.missPct} %: ${r.entries}`).join(', '),
          pass: rows.every((r) => r.entries <= CACHE_SIZE) && (byMiss(100)?.entries ?? 0) === CACHE_SIZE,
        },
        {
          name: 'svid-churn requests without failures (every answer an allow)',
          target: '0',
          value: String(runs.reduce((n, r) => n + r.failures, 0)),
          pass: runs.every((r) => r.failures === 0),
        },
      ],
      notes: [
        `100 % misses ran ${fullPassS} s so that every one of the ${DISTINCT.toLocaleString('en-US')} SVIDs was sent (requests column); a miss parses the certificate with node:crypto (~250 µs, /work/shared/notes/performance.md §3.2).`,
        ...(noiseVerdict(runs) ? [`${noiseVerdict(runs)}: throughput is pessimistic.`] : []),
        `requests: bench/lib/svid-gen.mjs (EC P-256 leaves, spiffe://example.org/ns/default/sa/frontend/w<N>), cached in .bench/.`,
      ],
      data: { cases: rows.map((r) => ({ case: r.c, run: r.run, window: r.window, entries: r.entries, peakRssMiB: r.peakRssMiB })), null: nul.value },
    };
  },
};
