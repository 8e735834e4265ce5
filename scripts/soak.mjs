#!/usr/bin/env node
/**
 * `npm run soak [-- --minutes N]`: a bounded loopback soak of the real service (SPEC §1 "fails
 * closed", §6 "every decision receipted", §9 "nothing crashes, no receipt is lost").
 *
 * Starts `chio serve` (the built bin/chio.js) on the demo policy in a temp folder, sends a mixed
 * allow/deny load of reference CheckRequests from test/fixtures at a steady rate over gRPC for N
 * minutes (default 1, at most 10), stops the service gracefully and checks:
 * - every call answered with the verdict and reason its request must get (errors: RPC failures,
 *   wrong verdicts, answers without a receipt id);
 * - the receipt file verifies offline (signatures, chain) and holds exactly one receipt per answered
 *   call, by x-chio-receipt-id, and nothing else (mismatches);
 * - the service's own counters agree (chio_receipts_written_total, chio_admissions_total);
 * and reports decisions, errors, p50/p99/max latency, the server's RSS (start, peak, end) and
 * receipts written vs decisions answered. Exit 0 when there are zero errors and zero mismatches.
 *
 *   node scripts/soak.mjs [--minutes N] [--rate R] [--concurrency C] [--json] [--keep]
 *
 * The load loop itself (`runSoak`) takes its client and verifier as arguments, so the test suite
 * runs a 15-second version against the TypeScript sources (test/hardening/soak.test.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHECK_REQUESTS = path.join(REPO_ROOT, 'test', 'fixtures', 'envoy', 'check-requests');
const MAX_MINUTES = 10;

/**
 * @typedef {Record<string, unknown>} CheckRequest
 * @typedef {{ status: { code: number, message?: string }, ok_response?: { headers?: Array<{ header: { key: string, value: string } }> }, denied_response?: { headers?: Array<{ header: { key: string, value: string } }> } }} CheckResponse
 * @typedef {{ check(request: CheckRequest, deadlineMs?: number): Promise<CheckResponse>, close(): void }} CheckClient
 * @typedef {{ ok: boolean, receipts: number, firstFailure: unknown }} VerifyResult
 * @typedef {{ name: string, weight: number, verdict: 'allow' | 'deny', reason: string | null, build: (n: number) => CheckRequest }} Scenario
 */

/** @param {string} name @returns {CheckRequest} */
function fixture(name) {
  return JSON.parse(readFileSync(path.join(CHECK_REQUESTS, `${name}.loader-view.json`), 'utf8'));
}

/**
 * A fixture with a unique x-request-id (so every receipt is a different decision) and an edit.
 * @param {string} name @param {(req: any) => void} [edit] @returns {(n: number) => CheckRequest}
 */
function variant(name, edit = () => {}) {
  const base = fixture(name);
  return (n) => {
    const req = structuredClone(base);
    const http = req.attributes?.request?.http;
    if (http?.headers) http.headers['x-request-id'] = `soak-${n}`;
    edit(req);
    return req;
  };
}

/** The mixed load under the demo policy: half allowed, half denied for six different reasons. @type {Scenario[]} */
export const SCENARIOS = [
  { name: 'mTLS frontend lists orders', weight: 10, verdict: 'allow', reason: null, build: variant('http-mtls-spiffe-full') },
  { name: 'principal only', weight: 2, verdict: 'allow', reason: null, build: variant('http-mtls-spiffe-full', (r) => delete r.attributes.source.certificate) },
  { name: 'expired SVID', weight: 2, verdict: 'deny', reason: 'svid_expired', build: variant('http-expired-svid') },
  { name: 'no identity', weight: 2, verdict: 'deny', reason: 'identity_required', build: variant('http-plaintext-no-identity') },
  { name: 'foreign trust domain', weight: 2, verdict: 'deny', reason: 'workload_trust_domain_mismatch', build: variant('http-foreign-trust-domain') },
  { name: 'two URI SANs', weight: 1, verdict: 'deny', reason: 'svid_multiple_uri_sans', build: variant('http-multi-uri-san') },
  {
    name: 'blocked tool',
    weight: 2,
    verdict: 'deny',
    reason: 'tool_blocked',
    build: variant('http-mtls-spiffe-full', (r) => {
      r.attributes.request.http.method = 'POST';
      r.attributes.request.http.path = '/%61dmin/users';
    }),
  },
  {
    name: 'conflicting principal',
    weight: 1,
    verdict: 'deny',
    reason: 'identity_conflict',
    build: variant('http-mtls-spiffe-full', (r) => {
      r.attributes.source.principal = 'spiffe://example.org/ns/default/sa/backend';
    }),
  },
];

/** @param {number[]} sorted @param {number} q */
function quantile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

/** @param {CheckResponse} res @returns {string | null} */
function receiptIdOf(res) {
  const list = res.ok_response?.headers ?? res.denied_response?.headers ?? [];
  return list.find((h) => h.header.key === 'x-chio-receipt-id')?.header.value ?? null;
}

/** @param {string} text @param {string} name @returns {number} the sum of the series of `name` */
export function metricSum(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) sum += Number(m[2]);
  }
  return sum;
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs the load for `durationMs` at `rate` calls/s with `concurrency` calls at most in flight,
 * sampling `rss()` every second. Returns what was answered; `checkReceipts` does the accounting.
 *
 * @param {{ client: CheckClient, durationMs: number, rate: number, concurrency: number, rss: () => Promise<number>, scenarios?: Scenario[], log?: (line: string) => void }} o
 */
export async function runLoad(o) {
  const scenarios = o.scenarios ?? SCENARIOS;
  const wheel = scenarios.flatMap((s) => Array(s.weight).fill(s));
  const latencies = [];
  /** @type {string[]} */
  const answeredIds = [];
  /** @type {Map<string, number>} */
  const errors = new Map();
  const error = (/** @type {string} */ kind) => errors.set(kind, (errors.get(kind) ?? 0) + 1);
  let decisions = 0;
  let allows = 0;
  const interval = 1000 / o.rate;
  const started = performance.now();
  const deadline = started + o.durationMs;
  let next = started;
  let n = 0;

  const rss = { start: await o.rss(), peak: 0, end: 0 };
  rss.peak = rss.start;
  let sampling = true;
  const sampler = (async () => {
    let lastLog = performance.now();
    while (sampling) {
      await sleep(1000);
      if (!sampling) break;
      const value = await o.rss().catch(() => 0);
      rss.peak = Math.max(rss.peak, value);
      if (o.log && performance.now() - lastLog >= 10_000) {
        lastLog = performance.now();
        o.log(`  ${Math.round((performance.now() - started) / 1000)} s: ${decisions} decisions, ${[...errors.values()].reduce((a, b) => a + b, 0)} errors, RSS ${(value / 2 ** 20).toFixed(0)} MiB`);
      }
    }
  })();

  const worker = async () => {
    for (;;) {
      const slot = next;
      next += interval;
      if (slot >= deadline) return;
      const wait = slot - performance.now();
      if (wait > 0) await sleep(wait);
      const i = n++;
      const scenario = wheel[i % wheel.length];
      const t0 = performance.now();
      let res;
      try {
        res = await o.client.check(scenario.build(i), 10_000);
      } catch (err) {
        error(`rpc error: ${(/** @type {{ code?: number }} */ (err)).code ?? String(err)}`);
        continue;
      }
      latencies.push(performance.now() - t0);
      decisions++;
      const verdict = res.status.code === 0 ? 'allow' : res.status.code === 7 ? 'deny' : `status ${res.status.code}`;
      if (verdict === 'allow') allows++;
      const reason = verdict === 'deny' ? (res.status.message ?? null) : null;
      if (verdict !== scenario.verdict || reason !== scenario.reason) error(`${scenario.name}: ${verdict} ${reason ?? ''} (expected ${scenario.verdict} ${scenario.reason ?? ''})`);
      const id = receiptIdOf(res);
      if (id === null) error('answer without a receipt id');
      else answeredIds.push(id);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  sampling = false;
  await sampler;
  rss.end = await o.rss().catch(() => 0);
  rss.peak = Math.max(rss.peak, rss.end);
  const elapsedMs = performance.now() - started;
  latencies.sort((a, b) => a - b);
  return {
    seconds: Math.round(elapsedMs / 100) / 10,
    decisions,
    allows,
    denies: decisions - allows,
    errors: Object.fromEntries(errors),
    errorCount: [...errors.values()].reduce((a, b) => a + b, 0),
    latencyMs: { p50: round(quantile(latencies, 0.5)), p99: round(quantile(latencies, 0.99)), max: round(latencies[latencies.length - 1] ?? 0) },
    rssMiB: { start: mib(rss.start), peak: mib(rss.peak), end: mib(rss.end) },
    answeredIds,
  };
}

/** @param {number} x */
const round = (x) => Math.round(x * 100) / 100;
/** @param {number} bytes */
const mib = (bytes) => Math.round((bytes / 2 ** 20) * 10) / 10;

/**
 * Receipts written vs decisions answered: each answered id exactly once in the file, nothing else,
 * and the file verifies.
 *
 * @param {{ answeredIds: string[], receiptsFile: string, verify: (file: string) => Promise<VerifyResult> }} o
 */
export async function checkReceipts(o) {
  const lines = existsSync(o.receiptsFile) ? readFileSync(o.receiptsFile, 'utf8').split('\n').filter((l) => l !== '') : [];
  /** @type {Map<string, number>} */
  const inFile = new Map();
  for (const line of lines) {
    const id = JSON.parse(line).id;
    inFile.set(id, (inFile.get(id) ?? 0) + 1);
  }
  const answered = new Set(o.answeredIds);
  const missing = o.answeredIds.filter((id) => !inFile.has(id)).length;
  const duplicated = [...inFile.values()].filter((c) => c > 1).length;
  const unanswered = [...inFile.keys()].filter((id) => !answered.has(id)).length;
  const verified = await o.verify(o.receiptsFile);
  return {
    receiptsWritten: lines.length,
    decisionsAnswered: o.answeredIds.length,
    mismatches: missing + duplicated + unanswered + (o.answeredIds.length - answered.size) + (verified.ok ? 0 : 1),
    missing,
    duplicated,
    unanswered,
    verified: verified.ok,
    verifyFailure: verified.firstFailure ?? null,
  };
}

// ---- the command ----

const USAGE = `usage: node scripts/soak.mjs [--minutes N (at most ${MAX_MINUTES}, default 1)] [--rate R (default 800/s)] [--concurrency C (default 16)] [--json] [--keep]\n`;

/** @param {string} msg @returns {never} */
function usage(msg) {
  process.stderr.write(`soak: ${msg}\n${USAGE}`);
  process.exit(2);
}

/** Starts `chio serve` in `dir`; resolves with its ports once it says it is ready. */
function startServer(/** @type {string} */ dir) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'chio.js'), 'serve', '--config', path.join(dir, 'chio.yaml')], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pipe(createWriteStream(path.join(dir, 'server.log')));
    let stderr = '';
    child.stderr.on('data', (c) => {
      stderr += c;
      const grpc = /Check \(gRPC[^)]*\): ([\d.]+:\d+)/.exec(stderr)?.[1];
      const admin = /admin \(HTTP\): (http:\/\/[\d.]+:\d+)/.exec(stderr)?.[1];
      if (grpc && admin) resolve({ child, grpc, admin });
    });
    child.on('exit', (code) => reject(new Error(`chio serve exited with ${code} before it was ready:\n${stderr}`)));
  });
}

async function main() {
  /** @type {{ minutes: string, rate: string, concurrency: string, json: boolean, keep: boolean, help: boolean }} */
  let values;
  try {
    ({ values } = /** @type {any} */ (
      parseArgs({
        options: {
          minutes: { type: 'string', default: '1' },
          rate: { type: 'string', default: '800' },
          concurrency: { type: 'string', default: '16' },
          json: { type: 'boolean', default: false },
          keep: { type: 'boolean', default: false },
          help: { type: 'boolean', short: 'h', default: false },
        },
        strict: true,
      })
    ));
  } catch (err) {
    usage(err instanceof Error ? err.message : String(err));
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const minutes = Number(values.minutes);
  const rate = Number(values.rate);
  const concurrency = Number(values.concurrency);
  if (!(minutes > 0 && minutes <= MAX_MINUTES)) usage(`--minutes must be within (0, ${MAX_MINUTES}]`);
  if (!(rate > 0 && rate <= 100_000)) usage('--rate must be a positive number of calls per second');
  if (!(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 1024)) usage('--concurrency must be an integer within 1..1024');
  const dist = path.join(REPO_ROOT, 'dist');
  if (!existsSync(path.join(dist, 'cli', 'index.js'))) usage('dist/ is missing: run `npm run build` (or `npm run soak`, which builds first)');
  const load = async (/** @type {string} */ rel) => import(pathToFileURL(path.join(dist, rel)).href);
  const [{ createCheckClient }, { verifyReceiptFile, verificationKeys }, { loadSeedFile }] = await Promise.all([
    load('check/client.js'),
    load('receipt/verify.js'),
    load('keys.js'),
  ]);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'chio-soak-'));
  writeFileSync(path.join(dir, 'policy.yaml'), readFileSync(path.join(REPO_ROOT, 'demo', 'policy.yaml')));
  writeFileSync(
    path.join(dir, 'chio.yaml'),
    [
      'schema: chio.config.v1',
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ], durability: strict, on_failure: deny }',
      '',
    ].join('\n'),
  );
  const say = (/** @type {string} */ line) => {
    if (!values.json) process.stderr.write(`${line}\n`);
  };
  say(`soak: ${minutes} min at ${rate} calls/s (${concurrency} in flight) against chio serve in ${dir}`);
  /** @type {any} */
  const server = await startServer(dir);
  const client = createCheckClient(server.grpc);
  const scrape = async () => (await fetch(`${server.admin}/metrics`)).text();
  const rss = async () => metricSum(await scrape(), 'process_resident_memory_bytes');
  let result;
  try {
    const loadResult = await runLoad({ client, durationMs: minutes * 60_000, rate, concurrency, rss, log: say });
    const text = await scrape();
    const counters = { receiptsWritten: metricSum(text, 'chio_receipts_written_total'), admissions: metricSum(text, 'chio_admissions_total') };
    client.close();
    server.child.kill('SIGTERM');
    const code = await new Promise((resolve) => server.child.on('exit', resolve));
    const key = loadSeedFile(path.join(dir, 'data', 'kernel.seed'));
    const receipts = await checkReceipts({
      answeredIds: loadResult.answeredIds,
      receiptsFile: path.join(dir, 'data', 'receipts.jsonl'),
      verify: (file) => verifyReceiptFile(file, verificationKeys([key])),
    });
    const { answeredIds: _ids, ...report } = loadResult;
    const counterMismatch = counters.receiptsWritten !== receipts.receiptsWritten || counters.admissions !== loadResult.decisions ? 1 : 0;
    result = { ...report, receipts, counters, serverExit: code, mismatches: receipts.mismatches + counterMismatch };
  } finally {
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
  const torn = readdirSync(path.join(dir, 'data')).filter((f) => f.includes('.torn-'));
  const ok = result.errorCount === 0 && result.mismatches === 0 && result.serverExit === 0 && torn.length === 0;
  if (values.json) process.stdout.write(`${JSON.stringify({ ok, ...result }, null, 2)}\n`);
  else {
    say(
      [
        `decisions ${result.decisions} (${result.allows} allowed, ${result.denies} denied) in ${result.seconds} s; errors ${result.errorCount}${result.errorCount ? ` ${JSON.stringify(result.errors)}` : ''}`,
        `latency p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, max ${result.latencyMs.max} ms`,
        `server RSS start ${result.rssMiB.start} MiB, peak ${result.rssMiB.peak} MiB, end ${result.rssMiB.end} MiB`,
        `receipts written ${result.receipts.receiptsWritten} vs decisions answered ${result.receipts.decisionsAnswered}; verified ${result.receipts.verified}; mismatches ${result.mismatches}`,
        `counters: chio_receipts_written_total ${result.counters.receiptsWritten}, chio_admissions_total ${result.counters.admissions}; server exit ${result.serverExit}`,
        ok ? 'soak: OK' : 'soak: FAILED',
      ].join('\n'),
    );
  }
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
  else say(`kept ${dir}`);
  process.exitCode = ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
