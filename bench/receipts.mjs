#!/usr/bin/env node
/**
 * Receipt store benchmark (SPEC §2.1 receipts, §6; the store issue's speed targets):
 *
 * 1. `receipts-throughput` — closed-loop Check throughput (h2load -c 4 -m 16, like the
 *    `saturation` section of bench/run.mjs) of chio-authz with:
 *      a. the baseline ("no sink"): durability relaxed, one jsonl sink on tmpfs (/dev/shm), so a
 *         receipt costs only its sealing and an unsynced in-memory write. chio has no `none` sink on
 *         purpose (an authz service that keeps no audit trail must not be one config line away);
 *      b. strict, jsonl only (the sink set before the SQLite store existed);
 *      c. strict, jsonl + sqlite (the embedded default now);
 *      d. relaxed, jsonl + sqlite.
 *    Target: (c) ≥ 0.85 × (a), i.e. strict durability with both sinks costs ≤ 15 %, with the whole
 *    server on one CPU (deploy/deployment.yaml gives the pod 1 CPU, so the SQLite thread's CPU counts).
 *    The same four run again with only the event loop pinned and the service's other threads (the
 *    SQLite writer, libuv's pool, V8's helpers) free to use the load generator's CPU too: what a pod
 *    with 2 CPUs would see. Information, not the target.
 * 2. `receipts-query` — query latency on a store of 1,000,000 receipts (30 days, 200 workloads):
 *    `GET /v1/receipts/query?workloadUri=…&since=…&until=…&limit=50` (one day) through the running
 *    service, p50/p99 over 300 queries; also the same SQL in-process, other query shapes for
 *    information, and Check throughput with and without a concurrent query loop (the reader thread
 *    must not stall Checks). Target: p99 ≤ 50 ms.
 *
 *   npm run build && node bench/receipts.mjs [--quick] [--only throughput|query] [--store FILE] [--keep]
 *
 * `--store FILE` reuses (or creates, then keeps) the 1M-receipt store: seeding takes about a minute.
 * Give it a folder of its own: the service keeps its checkpoint log (checkpoints.*) beside it.
 * bench/run.mjs can run both as sections: `receiptsSections` (not default; `--only receipts-throughput`).
 * Exit 0 when every check passes, 1 when one fails, 2 when the machine cannot run it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Harness } from './lib/harness.mjs';
import { formatCheck, formatTable } from './lib/report.mjs';
import { hasCommand, rssSampler, spawnPinned, stopProcess } from './lib/proc.mjs';
import { DAY_MS, QUERY_P99_TARGET_MS, seedReceiptStore, STORE_DAYS, STORE_RECEIPTS, STORE_START, STORE_WORKLOADS, workloadUris } from './lib/receipt-store-seed.mjs';
import { chioReadyLine } from './lib/servers.mjs';
import { median, medianRange, summarize } from './lib/stats.mjs';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const THROUGHPUT_TARGET = 0.85;
const TOKEN = 'bench-admin-token';
/** an auditor's query loop during the Check load: about 100 queries/s */
const QUERY_INTERVAL_MS = 10;

/**
 * The chio configs of the throughput section.
 * @type {Array<{name: string, label: string, durability: 'strict' | 'relaxed', sinks: Array<'jsonl' | 'sqlite'>, tmpfs?: boolean}>}
 */
const CONFIGS = [
  { name: 'baseline', label: 'relaxed, jsonl on tmpfs ("no sink")', durability: 'relaxed', sinks: ['jsonl'], tmpfs: true },
  { name: 'strict-jsonl', label: 'strict, jsonl', durability: 'strict', sinks: ['jsonl'] },
  { name: 'strict-both', label: 'strict, jsonl + sqlite (default)', durability: 'strict', sinks: ['jsonl', 'sqlite'] },
  { name: 'relaxed-both', label: 'relaxed, jsonl + sqlite', durability: 'relaxed', sinks: ['jsonl', 'sqlite'] },
];

/**
 * Starts chio with its own chio.yaml (the harness's config writer knows one jsonl sink only) and
 * adopts it as a harness Server (h2load, sanity, scrape, stop and its receipt check work on it).
 * @param {Harness} h
 * @param {{label: string, dir: string, durability: 'strict' | 'relaxed', sinks: Array<{type: 'jsonl' | 'sqlite', path: string}>, loopOnly?: boolean}} o
 *   loopOnly: the event loop alone on the server CPU, the other threads on it and the load generator's
 */
async function startChio(h, o) {
  mkdirSync(o.dir, { recursive: true });
  const configFile = path.join(o.dir, 'chio.yaml');
  const seedFile = path.join(o.dir, 'kernel.seed');
  const tokenFile = path.join(o.dir, 'admin.token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  writeFileSync(
    configFile,
    [
      'schema: chio.config.v1',
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      `policy: ${JSON.stringify(path.join(REPO_ROOT, 'demo', 'policy.yaml'))}`,
      `keys: { receipt_signing_seed: ${JSON.stringify(seedFile)} }`,
      `receipts: { sinks: [ ${o.sinks.map((s) => `{ type: ${s.type}, path: ${JSON.stringify(s.path)} }`).join(', ')} ], durability: ${o.durability}, on_failure: deny }`,
      `admin: { token_file: ${JSON.stringify(tokenFile)} }`,
      '',
    ].join('\n'),
  );
  const args = [...h.settings.serverNodeFlags, path.join(REPO_ROOT, 'bin', 'chio.js'), 'serve', '--config', configFile];
  const both = o.loopOnly ? `${h.settings.serverCpu},${h.settings.loadCpu}` : h.settings.serverCpu;
  const proc = spawnPinned({ cpu: both, command: process.execPath, args, cwd: o.dir });
  let ready;
  try {
    ready = await proc.waitFor(chioReadyLine, 120_000);
    // the threads started so far (all of them, by the ready line) keep both CPUs; the main thread's id is the pid
    if (o.loopOnly) execFileSync('taskset', ['-p', '-c', String(h.settings.serverCpu), String(proc.child.pid)], { stdio: 'ignore' });
  } catch (err) {
    await stopProcess(proc, 'SIGKILL', 1000);
    throw err;
  }
  const jsonl = o.sinks.find((s) => s.type === 'jsonl');
  return Object.assign(
    {
      kind: 'chio',
      label: o.label,
      cpu: h.settings.serverCpu,
      nodeFlags: h.settings.serverNodeFlags,
      command: ['node', ...args],
      proc,
      pid: /** @type {number} */ (proc.child.pid),
      workerPids: [],
      durability: o.durability,
      origin: `http://${ready.grpc}`,
      adminOrigin: `http://${ready.admin}`,
      dir: o.dir,
      configFile,
      seedFile,
      receiptsFile: jsonl?.path ?? null,
      receiptsFiles: jsonl ? [jsonl.path] : [],
      nullStats: null,
    },
    { rss: rssSampler(/** @type {number} */ (proc.child.pid)), workerRss: [], answered: 0, answeredIsLowerBound: false, section: h.section },
  );
}

/** Stops a server started by startChio: with the harness's receipt check when it has a jsonl file. */
async function stopChio(h, server) {
  if (server.receiptsFile) return h.stop(server);
  server.rss.stop();
  await stopProcess(server.proc);
  return null;
}

// ---- section 1: throughput ----

/**
 * Where the server runs: `one-cpu`, the whole process on the server CPU (the target; the pod of
 * deploy/deployment.yaml has 1 CPU); `loop-cpu`, only the event loop there, its other threads also
 * on the load generator's CPU (a pod with 2 CPUs; information).
 */
const TOPOLOGIES = [
  { name: 'one-cpu', loopOnly: false, label: 'whole server on one CPU (the target)' },
  { name: 'loop-cpu', loopOnly: true, label: "event loop on one CPU, the server's other threads (SQLite writer, libuv pool, V8 helpers) also on the load generator's" },
];

/** @param {Harness} h */
async function runThroughput(h) {
  const s = h.settings;
  const shm = existsSync('/dev/shm') ? mkdtempSync(path.join('/dev/shm', 'chio-bench-')) : null;
  /** @type {Record<string, Record<string, any[]>>} */
  const runs = Object.fromEntries(TOPOLOGIES.map((t) => [t.name, Object.fromEntries(CONFIGS.map((c) => [c.name, []]))]));
  /** @type {any[]} */
  const reports = [];
  try {
    // repetitions alternate the configs, so a burst of foreign load hurts them alike
    for (let rep = 1; rep <= s.reps; rep++) {
      for (const t of TOPOLOGIES) {
        for (const c of CONFIGS) {
          const dir = path.join(c.tmpfs && shm ? shm : s.tmpRoot, `receipts-${t.name}-${c.name}-${rep}`);
          const sinks = c.sinks.map((k) => ({ type: k, path: path.join(dir, k === 'jsonl' ? 'receipts.jsonl' : 'receipts.db') }));
          const server = await startChio(h, { label: c.name, dir, durability: c.durability, sinks, loopOnly: t.loopOnly });
          try {
            await h.sanity(server);
            await h.warmUp(server);
            h.log(`  ${t.name} ${c.name}: h2load run ${rep}/${s.reps}`);
            runs[t.name]?.[c.name]?.push(await h.h2load(server, { clients: 4, streams: 16, durationS: s.durationS, warmupS: s.h2loadWarmupS, label: `run ${rep}` }));
          } finally {
            const report = await stopChio(h, server);
            if (report) reports.push({ config: `${t.name} ${c.name}`, ok: report.receipts?.ok ?? false, lines: report.receipts?.lines });
          }
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }
  } finally {
    if (shm) rmSync(shm, { recursive: true, force: true });
  }
  /** @param {any[]} r */
  const summary = (r) => ({
    reqPerSec: medianRange(r.map((x) => x.reqPerSec)),
    p50Ms: median(r.map((x) => x.latencyMs.p50)),
    p99Ms: median(r.map((x) => x.latencyMs.p99)),
    serverCpuPct: median(r.map((x) => x.serverCpuPct)),
    otherPct: median(r.map((x) => x.otherBusyPct + x.stealPct)),
    failures: r.reduce((n, x) => n + x.failures, 0),
  });
  const byTopology = Object.fromEntries(TOPOLOGIES.map((t) => [t.name, Object.fromEntries(CONFIGS.map((c) => [c.name, summary(runs[t.name]?.[c.name] ?? [])]))]));
  const ratioOf = (/** @type {string} */ t) => byTopology[t]['strict-both'].reqPerSec.median / byTopology[t].baseline.reqPerSec.median;
  const ratio = ratioOf('one-cpu');
  const all = Object.values(byTopology).flatMap((x) => Object.values(x));
  const badReceipts = reports.filter((r) => !r.ok);
  return {
    tables: TOPOLOGIES.map((t) => {
      const sums = byTopology[t.name];
      const base = sums.baseline.reqPerSec.median;
      return {
        title: `Check throughput by receipt configuration, ${t.label}: h2load -c 4 -m 16, ${s.reps} × ${s.durationS} s, median (min–max)`,
        columns: [
          ['config', 'config'],
          ['reqPerSec', 'req/s', 'int'],
          ['range', 'min–max', 'range'],
          ['vsBaseline', 'vs baseline', 'frac'],
          ['p50Ms', 'p50 ms', 'ms'],
          ['p99Ms', 'p99 ms', 'ms'],
          ['serverCpuPct', 'srv CPU%', 'pct'],
          ['otherPct', 'other+steal%', 'pct'],
          ['failures', 'failures', 'int'],
        ],
        rows: CONFIGS.map((c) => {
          const x = sums[c.name];
          return { config: c.label, reqPerSec: x.reqPerSec.median, range: [x.reqPerSec.min, x.reqPerSec.max], vsBaseline: x.reqPerSec.median / base, p50Ms: x.p50Ms, p99Ms: x.p99Ms, serverCpuPct: x.serverCpuPct, otherPct: x.otherPct, failures: x.failures };
        }),
      };
    }),
    checks: [
      { name: 'strict durability (jsonl + sqlite) vs the no-sink baseline, whole server on one CPU', target: `≥ ${THROUGHPUT_TARGET.toFixed(2)}`, value: ratio.toFixed(3), pass: ratio >= THROUGHPUT_TARGET },
      { name: 'throughput runs without failures', target: '0', value: String(all.reduce((n, x) => n + x.failures, 0)), pass: all.every((x) => x.failures === 0) },
      { name: 'receipt files match the decisions and verify', target: 'all', value: badReceipts.length ? badReceipts.map((r) => r.config).join(', ') : 'all', pass: badReceipts.length === 0 },
    ],
    notes: [
      'baseline = durability relaxed with one jsonl sink on tmpfs: sealing + an unsynced in-memory write per receipt; chio has no receipt-less mode on purpose',
      `the same ratio with the event loop alone on one CPU (a 2-CPU pod): ${ratioOf('loop-cpu').toFixed(3)} (information)`,
      'with a jsonl sink the SQLite store follows it (written off the answer path, ~1,000 receipts per transaction: src/receipt/sinks/follower.ts)',
    ],
    data: { byTopology, ratio, loopCpuRatio: ratioOf('loop-cpu'), runs, reports },
  };
}

// ---- section 2: query latency on 1M receipts ----

/** @param {Harness} h @param {{store?: string}} o */
async function runQuery(h, o) {
  const s = h.settings;
  const store = o.store ?? path.join(s.tmpRoot, 'store-1m', 'receipts-1m.db');
  let seeded = null;
  if (!existsSync(store)) {
    // a folder of its own: the service keeps its checkpoint log beside its first sink
    mkdirSync(path.dirname(store), { recursive: true });
    for (const f of readdirSync(path.dirname(store))) if (f.startsWith('checkpoints.')) rmSync(path.join(path.dirname(store), f));
    h.log(`  seeding ${STORE_RECEIPTS.toLocaleString('en-US')} receipts into ${store} (about a minute)`);
    seeded = await seedReceiptStore({ repoRoot: REPO_ROOT, file: store, count: STORE_RECEIPTS, days: STORE_DAYS, workloads: STORE_WORKLOADS, start: STORE_START, log: h.log.bind(h) });
  }
  const uris = workloadUris(STORE_WORKLOADS);
  const queries = s.quick ? 100 : 300;
  let rnd = 7;
  const random = () => ((rnd = (rnd * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const dayQuery = () => {
    const day = Math.floor(random() * STORE_DAYS);
    return { workloadUri: uris[Math.floor(random() * uris.length)], since: iso(STORE_START + day * DAY_MS), until: iso(STORE_START + (day + 1) * DAY_MS), limit: '50' };
  };
  const shapes = [
    { name: 'workloadUri + one day, limit 50 (target)', make: dayQuery },
    { name: 'workloadUri, limit 50', make: () => ({ workloadUri: uris[Math.floor(random() * uris.length)], limit: '50' }) },
    { name: 'pathPrefix + verdict deny, limit 50', make: () => ({ pathPrefix: `/ns/team-${Math.floor(random() * 10)}`, verdict: 'deny', limit: '50' }) },
    { name: 'trustDomain + since (last 2 days), limit 500', make: () => ({ trustDomain: 'staging.chio', since: iso(STORE_START + (STORE_DAYS - 2) * DAY_MS), limit: '500' }) },
  ];

  // in-process: the SQL alone
  const dist = (p) => pathToFileURL(path.join(REPO_ROOT, 'dist', p)).href;
  const { SqliteReceiptStore } = await import(dist('receipt/store.js'));
  const { parseReceiptQuery } = await import(dist('receipt/query.js'));
  const local = SqliteReceiptStore.open(store);
  const inProcess = [];
  try {
    for (const shape of shapes) {
      const ms = [];
      for (let i = 0; i < queries; i++) {
        const q = parseReceiptQuery(Object.entries(shape.make()));
        const t = process.hrtime.bigint();
        await local.query(q);
        ms.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      inProcess.push({ shape: shape.name, ...summarize(ms) });
    }
  } finally {
    local.close();
  }

  // through the service: HTTP + the reader thread
  const dir = path.join(s.tmpRoot, 'receipts-query');
  const server = await startChio(h, { label: 'query', dir, durability: 'strict', sinks: [{ type: 'sqlite', path: store }] });
  const api = [];
  let loaded = null;
  try {
    await h.sanity(server);
    await h.warmUp(server, 2000);
    const get = async (params) => {
      const url = `${server.adminOrigin}/v1/receipts/query?${new URLSearchParams(params)}`;
      const t = process.hrtime.bigint();
      const res = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
      const body = await res.text();
      const ms = Number(process.hrtime.bigint() - t) / 1e6;
      if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status} ${body.slice(0, 300)}`);
      return { ms, count: (JSON.parse(body).receipts ?? []).length };
    };
    for (const shape of shapes) {
      const ms = [];
      let rows = 0;
      for (let i = 0; i < 20; i++) await get(shape.make()); // warm-up (the reader thread, JIT, page cache)
      for (let i = 0; i < queries; i++) {
        const r = await get(shape.make());
        ms.push(r.ms);
        rows += r.count;
      }
      api.push({ shape: shape.name, meanRows: rows / queries, ...summarize(ms) });
    }
    // Checks with and without a concurrent loop of queries
    const alone = await h.h2load(server, { clients: 4, streams: 16, durationS: Math.min(5, s.durationS), label: 'checks alone' });
    let stop = false;
    let concurrentQueries = 0;
    const loop = (async () => {
      while (!stop) {
        await get(dayQuery());
        concurrentQueries++;
        await new Promise((r) => setTimeout(r, QUERY_INTERVAL_MS));
      }
    })();
    const withQueries = await h.h2load(server, { clients: 4, streams: 16, durationS: Math.min(5, s.durationS), label: 'checks + queries' });
    stop = true;
    await loop;
    loaded = { alone, withQueries, concurrentQueries };
  } finally {
    await stopChio(h, server);
    if (!o.store) rmSync(path.dirname(store), { recursive: true, force: true });
  }
  const target = api[0];
  const ms = (x) => ({ p50Ms: x.p50, p99Ms: x.p99, maxMs: x.max });
  return {
    tables: [
      {
        title: `Query latency on ${STORE_RECEIPTS.toLocaleString('en-US')} receipts (${(statSync(store, { throwIfNoEntry: false })?.size ?? 0) > 0 ? `${((statSync(store).size) / 2 ** 30).toFixed(2)} GiB` : 'store removed'}), ${queries} queries each`,
        columns: [
          ['shape', 'query'],
          ['where', 'measured'],
          ['p50Ms', 'p50 ms', 'ms'],
          ['p99Ms', 'p99 ms', 'ms'],
          ['maxMs', 'max ms', 'ms'],
          ['meanRows', 'rows', 'int'],
        ],
        rows: [
          ...api.map((x) => ({ shape: x.shape, where: 'GET /v1/receipts/query', ...ms(x), meanRows: x.meanRows })),
          ...inProcess.map((x) => ({ shape: x.shape, where: 'SQL in-process', ...ms(x) })),
        ],
      },
      {
        title: 'Checks (h2load -c 4 -m 16) while a client runs the target query ~100 times a second (server on one CPU)',
        columns: [
          ['run', 'run'],
          ['reqPerSec', 'req/s', 'int'],
          ['p50Ms', 'p50 ms', 'ms'],
          ['p99Ms', 'p99 ms', 'ms'],
          ['queries', 'queries run', 'int'],
        ],
        rows: loaded
          ? [
              { run: 'Checks alone', reqPerSec: loaded.alone.reqPerSec, p50Ms: loaded.alone.latencyMs.p50, p99Ms: loaded.alone.latencyMs.p99, queries: 0 },
              { run: 'Checks + queries', reqPerSec: loaded.withQueries.reqPerSec, p50Ms: loaded.withQueries.latencyMs.p50, p99Ms: loaded.withQueries.latencyMs.p99, queries: loaded.concurrentQueries },
            ]
          : [],
      },
    ],
    checks: [{ name: 'query p99, workloadUri + one-day range, limit 50, through the API', target: `≤ ${QUERY_P99_TARGET_MS} ms`, value: `${target.p99.toFixed(2)} ms`, pass: target.p99 <= QUERY_P99_TARGET_MS }],
    notes: [
      `store: ${STORE_RECEIPTS.toLocaleString('en-US')} chained receipts over ${STORE_DAYS} days from ${STORE_WORKLOADS} workloads in 2 trust domains${seeded ? `, seeded in ${seeded.seconds.toFixed(0)} s` : ` (reused ${store})`}`,
      'queries run on the service\'s reader thread (a read-only WAL connection): the event loop and the writer never wait for them',
    ],
    data: { api, inProcess, loaded, seeded },
  };
}

/** @param {number} ms */
function iso(ms) {
  return new Date(ms).toISOString();
}

/**
 * The sections, for bench/run.mjs (add them to SECTIONS in bench/lib/sections.mjs).
 * @param {{store?: string}} [o]
 * @returns {import('./lib/sections.mjs').Section[]}
 */
export function receiptsSections(o = {}) {
  return [
    { name: 'receipts-throughput', title: 'Receipt durability: Check throughput, strict vs relaxed vs no sink (jsonl + sqlite)', default: false, run: (h) => runThroughput(h) },
    { name: 'receipts-query', title: 'Receipt store: query latency on 1,000,000 receipts, and Checks during queries', default: false, run: (h) => runQuery(h, o) },
  ];
}

// ---- stand-alone ----

async function main() {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean', default: false }, only: { type: 'string' }, store: { type: 'string' }, keep: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write('usage: node bench/receipts.mjs [--quick] [--only throughput|query] [--store FILE] [--keep]\n');
    return 0;
  }
  if (!hasCommand('h2load') || !hasCommand('taskset', ['-V']) || os.availableParallelism() < 2 || !existsSync(path.join(REPO_ROOT, 'dist', 'receipt', 'sinks', 'sqlite.js'))) {
    process.stderr.write('bench/receipts.mjs needs h2load, taskset, 2 CPUs and a build (npm run build)\n');
    return 2;
  }
  const tmpRoot = mkdtempSync(path.join(os.tmpdir(), 'chio-bench-receipts-'));
  const quick = values.quick;
  const h = await Harness.create({
    repoRoot: REPO_ROOT,
    tmpRoot,
    quick,
    reps: quick ? 1 : 3,
    durationS: quick ? 5 : 10,
    h2loadWarmupS: 2,
    warmupRequests: quick ? 5000 : 10000,
    openloopRate: 1000,
    openloopDurationS: 10,
    openloopWarmupS: 2,
    serverCpu: 0,
    loadCpu: 1,
    serverNodeFlags: ['--single-threaded-gc'],
    loadNodeFlags: ['--single-threaded-gc'],
    quietWaitS: quick ? 5 : 15,
    quietBudgetS: quick ? 10 : 45,
    log: (m) => process.stderr.write(`${m}\n`),
  });
  const store = values.store ? path.resolve(values.store) : undefined;
  const sections = receiptsSections({ store }).filter((x) => !values.only || x.name === `receipts-${values.only}`);
  let failed = 0;
  try {
    for (const section of sections) {
      process.stdout.write(`\n== ${section.name}: ${section.title} ==\n`);
      h.section = section.name;
      const result = await section.run(h);
      for (const t of result.tables) process.stdout.write(`${formatTable(t)}\n\n`);
      for (const n of result.notes) process.stdout.write(`  note: ${n}\n`);
      for (const c of result.checks) process.stdout.write(`${formatCheck(c)}\n`);
      failed += result.checks.filter((c) => !c.pass).length;
    }
  } finally {
    await h.stopAll();
    if (values.keep) process.stdout.write(`kept ${tmpRoot}\n`);
    else rmSync(tmpRoot, { recursive: true, force: true });
  }
  return failed === 0 ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
