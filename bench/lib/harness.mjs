/**
 * The benchmark harness (bench/README.md): what every section gets. It starts ONE server at a time
 * pinned to the server CPU, drives it with h2load (closed loop) or bench/openloop.mjs (open loop)
 * pinned to the load CPU, scrapes its /metrics, samples its RSS, and on stop checks the receipts
 * it wrote (count = decisions answered, `chio receipt verify` passes). Method and pitfalls:
 * /work/shared/notes/performance.md §1.9, §2, §5.6.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, createReadStream } from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { CHECK_PATH, checkResponseStatusCode, frameMessage, loadCheckCodec, unframeMessage } from './grpc-wire.mjs';
import { closeSession, connect, unaryCall } from './h2-unary.mjs';
import { h2loadArgs, parseH2loadSummary, readH2loadLog } from './h2load.mjs';
import { counterSum, parsePrometheusText } from './prom.mjs';
import { cpuWindow, rssSampler, spawnPinned, stopProcess } from './proc.mjs';
import { startChioProcess, startNullProcess } from './servers.mjs';
import { summarize } from './stats.mjs';

export const METRIC = {
  checkDuration: 'chio_check_duration_seconds',
  receiptCommit: 'chio_receipt_commit_duration_seconds',
  admissions: 'chio_admissions_total',
  receiptsWritten: 'chio_receipts_written_total',
};

/** The reference request: Envoy's binary CheckRequest for an mTLS SPIFFE workload (1.3 KB). */
export const REFERENCE_REQUEST = 'test/fixtures/envoy/check-requests/http-mtls-spiffe-full.pb';

/**
 * @typedef {import('./servers.mjs').ServerProcess & {
 *   rss: ReturnType<typeof rssSampler>, workerRss: ReturnType<typeof rssSampler>[],
 *   answered: number,
 *   answeredIsLowerBound: boolean,
 *   section: string,
 * }} Server
 * `answered`: answers the clients saw (sanity + warm-ups + measured runs). h2load does not count
 * what completes during `--warm-up-time` or after `-D` ends, so after such a run it is a lower bound.
 */

/**
 * @typedef {{
 *   repoRoot: string, tmpRoot: string, quick: boolean, reps: number, durationS: number,
 *   h2loadWarmupS: number, warmupRequests: number, openloopRate: number, openloopDurationS: number,
 *   openloopWarmupS: number, serverCpu: number, loadCpu: number, serverNodeFlags: string[],
 *   loadNodeFlags: string[], quietWaitS: number, quietBudgetS: number, log: (msg: string) => void,
 * }} HarnessSettings
 * `quietWaitS`: before each measured run, wait up to this long for other programs to stop using
 * the CPUs (on a shared machine other people's builds and tests skew every number);
 * `quietBudgetS`: at most this much waiting in the whole bench (keeps the runtime bounded).
 */

/** A measured run is noisy when other programs plus steal took more than this % of the machine. */
export const NOISY_PCT = 10;

export class Harness {
  /** @type {Server | null} */
  #current = null;
  #seq = 0;
  /** seconds spent waiting for a quiet machine so far (bounded by settings.quietBudgetS) */
  #quietSpentS = 0;
  /** @type {any[]} what stop() reported for every server, in order */
  serverReports = [];
  /** the section now running (reports are tagged with it) */
  section = '';

  /**
   * @param {HarnessSettings} settings
   * @param {{bodyFile: string, message: Buffer, codec: Awaited<ReturnType<typeof loadCheckCodec>>}} request
   */
  constructor(settings, request) {
    this.settings = settings;
    this.request = request;
  }

  /** @param {HarnessSettings} settings */
  static async create(settings) {
    mkdirSync(settings.tmpRoot, { recursive: true });
    const message = readFileSync(path.join(settings.repoRoot, REFERENCE_REQUEST));
    const codec = await loadCheckCodec();
    const decoded = codec.decodeRequest(message);
    if (!decoded?.attributes?.source?.certificate) throw new TypeError(`${REFERENCE_REQUEST} does not decode to a CheckRequest with a peer certificate`);
    const bodyFile = path.join(settings.tmpRoot, 'check-request.grpc');
    writeFileSync(bodyFile, frameMessage(message));
    return new Harness(settings, { bodyFile, message, codec });
  }

  log(msg) {
    this.settings.log(msg);
  }

  // ---- servers (one at a time) ----

  /**
   * chio-authz with a temp config: policy demo/policy.yaml, fresh seed, jsonl sink, durability
   * strict (the production default) unless overridden.
   * `cpu`: null = not pinned (e.g. `config.workers` > 1); `denyExpected`: denies are part of the
   * section (overload), not failures.
   * @param {{config?: Partial<import('./servers.mjs').ChioConfigSpec>, nodeFlags?: string[], label?: string, cpu?: number | null, denyExpected?: boolean}} [o]
   * @returns {Promise<Server>}
   */
  async startChio(o = {}) {
    this.#assertNoServer();
    const proc = await startChioProcess({
      repoRoot: this.settings.repoRoot,
      dir: this.#serverDir('chio'),
      cpu: o.cpu === undefined ? this.settings.serverCpu : o.cpu,
      nodeFlags: o.nodeFlags ?? this.settings.serverNodeFlags,
      label: o.label,
      config: { policy: path.join(this.settings.repoRoot, 'demo', 'policy.yaml'), durability: 'strict', onFailure: 'deny', ...o.config },
    });
    return Object.assign(this.#adopt(proc), { denyExpected: o.denyExpected ?? false });
  }

  /**
   * @param {{nodeFlags?: string[], label?: string, cpu?: number | null, transport?: 'grpc-js' | 'native'}} [o]
   * @returns {Promise<Server>}
   */
  async startNull(o = {}) {
    this.#assertNoServer();
    const proc = await startNullProcess({
      repoRoot: this.settings.repoRoot,
      dir: this.#serverDir('null'),
      cpu: o.cpu === undefined ? this.settings.serverCpu : o.cpu,
      nodeFlags: o.nodeFlags ?? this.settings.serverNodeFlags,
      label: o.label,
      transport: o.transport,
    });
    return this.#adopt(proc);
  }

  /**
   * Stops the server (SIGTERM: chio flushes its receipts), then for chio checks its receipts.
   * The report goes to `serverReports` and is returned.
   * @param {Server} server
   */
  async stop(server) {
    /** @type {{total: number, allow: number, deny: number, receiptsWritten: number} | null} */
    let decisions = null;
    let scrapeError = null;
    if (server.kind === 'chio') {
      try {
        const m = await this.scrape(server);
        decisions = {
          total: counterSum(m, METRIC.admissions),
          allow: counterSum(m, METRIC.admissions, { verdict: 'allow' }),
          deny: counterSum(m, METRIC.admissions, { verdict: 'deny' }),
          receiptsWritten: counterSum(m, METRIC.receiptsWritten),
        };
      } catch (err) {
        scrapeError = err instanceof Error ? err.message : String(err);
      }
    }
    const mem = server.rss.stop();
    // `chio serve --workers N`: the primary plus the sum of its workers' peaks
    const workersKb = server.workerRss.reduce((kb, r) => {
      const m = r.stop();
      return kb + Math.max(m.peakRssKb, m.hwmKb);
    }, 0);
    const exit = await stopProcess(server.proc);
    this.#current = null;
    const report = {
      section: server.section,
      label: server.label,
      kind: server.kind,
      command: server.command.map((a) => this.displayPath(a)).join(' '),
      cpu: server.cpu,
      peakRssMiB: (Math.max(mem.peakRssKb, mem.hwmKb) + workersKb) / 1024,
      exit: exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`,
      cleanExit: exit.code === 0,
      answered: server.answered,
      answeredIsLowerBound: server.answeredIsLowerBound,
      nullStats: server.nullStats,
      durability: server.durability,
      scrapeError,
      receipts: server.kind === 'chio' ? await this.#checkReceipts(server, decisions ?? { total: NaN, allow: NaN, deny: NaN, receiptsWritten: NaN }) : null,
    };
    this.serverReports.push(report);
    return report;
  }

  /**
   * Starts a server, runs `fn` with it, always stops it. Returns fn's value and the stop report.
   * @template T
   * @param {'chio' | 'null'} kind
   * @param {Parameters<Harness['startChio']>[0]} opts
   * @param {(server: Server) => Promise<T>} fn
   */
  async withServer(kind, opts, fn) {
    const server = kind === 'chio' ? await this.startChio(opts) : await this.startNull(opts);
    let value;
    try {
      value = await fn(server);
    } catch (err) {
      await this.stop(server).catch(() => undefined);
      throw err;
    }
    return { value, report: await this.stop(server) };
  }

  /** Stops whatever server is running (after a failure). */
  async stopAll() {
    if (this.#current) await this.stop(this.#current).catch(() => undefined);
  }

  // ---- load ----

  /**
   * One Check with the reference request; throws unless it is grpc-status 0 and (for chio) an
   * ALLOW with a receipt id. Returns what was seen.
   * @param {Server} server
   */
  async sanity(server) {
    const session = await connect(server.origin);
    let ans;
    try {
      ans = await unaryCall(session, CHECK_PATH, frameMessage(this.request.message));
    } finally {
      await closeSession(session);
    }
    const fail = (why) => new Error(`sanity check of ${server.label} failed: ${why}`);
    if (ans.httpStatus !== 200) throw fail(`HTTP ${ans.httpStatus}`);
    if (ans.grpcStatus !== 0) throw fail(`grpc-status ${ans.grpcStatus} ${ans.grpcMessage ?? ''}`);
    const message = unframeMessage(ans.body);
    const response = this.request.codec.decodeResponse(message);
    const code = response?.status?.code ?? 0;
    if (checkResponseStatusCode(message) !== code) throw fail('the fast status.code reader disagrees with the Envoy protos');
    if (code !== 0) throw fail(`CheckResponse status.code ${code} (${response?.status?.message ?? ''}): a deny, expected an allow`);
    /** @type {string | null} */
    let receiptId = null;
    if (server.kind === 'chio') {
      const headers = response?.ok_response?.headers ?? [];
      receiptId = headers.find((h) => h?.header?.key === 'x-chio-receipt-id')?.header?.value ?? null;
      if (!response?.ok_response || !receiptId) throw fail('an allow without ok_response / x-chio-receipt-id');
    }
    server.answered++;
    return { grpcStatus: ans.grpcStatus, checkStatus: code, verdict: 'allow', receiptId, responseBytes: message.length };
  }

  /**
   * Closed-loop warm-up (JIT, caches): a fixed number of requests, not measured.
   * @param {Server} server
   * @param {number} [requests]
   */
  async warmUp(server, requests = this.settings.warmupRequests) {
    const run = await this.h2load(server, { clients: 4, streams: 16, requests, label: 'warm-up' });
    if (run.failures > 0) throw new Error(`warm-up of ${server.label} had ${run.failures} failures`);
    return run;
  }

  /**
   * Waits (1 s samples) until other programs and steal use at most NOISY_PCT of the machine, for
   * at most `quietWaitS`. The idle server's own CPU does not count.
   * @param {Server} server
   */
  async awaitQuiet(server) {
    const started = Date.now();
    const perRunS = this.settings.quietWaitS ?? 0;
    const budgetS = this.settings.quietBudgetS ?? perRunS;
    const maxWaitS = Math.max(0, Math.min(perRunS, budgetS - this.#quietSpentS)) || 0;
    let busyPct = NaN;
    for (;;) {
      const w = cpuWindow([server.pid, ...server.workerPids]);
      await new Promise((r) => setTimeout(r, 1000));
      const c = w.end();
      busyPct = c.otherBusyPct + c.stealPct;
      const waitedS = (Date.now() - started) / 1000 - 1;
      if (!(busyPct > NOISY_PCT) || waitedS >= maxWaitS) {
        this.#quietSpentS += Math.max(0, waitedS);
        return { waitedS: Math.max(0, waitedS), busyPct };
      }
      if (waitedS < 0.5) this.log(`  the machine is busy (${busyPct.toFixed(0)}% used by other programs or stolen); waiting up to ${maxWaitS.toFixed(0)} s for it to calm down`);
    }
  }

  /**
   * h2load pinned to the load CPU against `server`'s Check. Latency percentiles come from its
   * --log-file. For chio, the server's own decision counters are scraped around the run: a deny
   * is a failure (h2load cannot see grpc-status or the verdict; the open loop can).
   * @param {Server} server
   * `bodyFile` (a framed gRPC request) defaults to the reference request.
   * `cpu`: where h2load runs (default the load CPU; null = not pinned).
   * `rps`: h2load --rps per client (an aggregate offered load; it bursts every 10 ms).
   * `skipQuietWait`: a phase that must follow the previous one at once.
   * @param {{clients: number, streams: number, durationS?: number, warmupS?: number, requests?: number, label?: string, bodyFile?: string, cpu?: number | null, rps?: number, skipQuietWait?: boolean}} o
   */
  async h2load(server, o) {
    const loadCpu = o.cpu === undefined ? this.settings.loadCpu : o.cpu;
    const logFile = path.join(server.dir, `h2load-${++this.#seq}.log`);
    const spec = { url: server.origin + CHECK_PATH, bodyFile: o.bodyFile ?? this.request.bodyFile, clients: o.clients, streams: o.streams, durationS: o.durationS, warmupS: o.warmupS, requests: o.requests, logFile, rps: o.rps };
    const args = h2loadArgs(spec);
    const quiet = o.durationS !== undefined && !o.skipQuietWait ? await this.awaitQuiet(server) : null;
    const before = server.kind === 'chio' ? await this.scrape(server) : null;
    let out = '';
    const p = spawnPinned({ cpu: loadCpu, command: 'h2load', args, onLine: (l) => (out += l + '\n') });
    const window = cpuWindow([server.pid, /** @type {number} */ (p.child.pid), ...server.workerPids]);
    const exit = await p.exited;
    const cpu = window.end();
    if (exit.code !== 0) throw new Error(`h2load exited with ${exit.code ?? exit.signal}: ${p.stderr().slice(-1500)}\n${out.slice(-1500)}`);
    const sum = parseH2loadSummary(out);
    const log = readH2loadLog(logFile);
    rmSync(logFile, { force: true });
    let serverDecisions = null;
    if (before) {
      const after = await this.scrape(server);
      serverDecisions = {
        allow: counterSum(after, METRIC.admissions, { verdict: 'allow' }) - counterSum(before, METRIC.admissions, { verdict: 'allow' }),
        deny: counterSum(after, METRIC.admissions, { verdict: 'deny' }) - counterSum(before, METRIC.admissions, { verdict: 'deny' }),
      };
    }
    server.answered += sum.succeeded;
    if (o.durationS !== undefined) server.answeredIsLowerBound = true;
    const lat = summarize(log.durationsUs);
    return {
      label: o.label ?? 'h2load',
      command: `${loadCpu === null ? '' : `taskset -c ${loadCpu} `}h2load ${args.map(shellQuote).join(' ')}`,
      reqPerSec: sum.reqPerSec,
      succeeded: sum.succeeded,
      failures: sum.failed + sum.errored + sum.timeout + sum.statusOther + log.non2xx + (serverDecisions?.deny ?? 0),
      h2load: sum,
      serverDecisions,
      latencyMs: { p50: lat.p50 / 1000, p90: lat.p90 / 1000, p99: lat.p99 / 1000, max: lat.max / 1000, n: lat.n },
      serverCpuPct: serverCpuPct(cpu.pidCpuPct),
      loadCpuPct: cpu.pidCpuPct[1],
      stealPct: cpu.stealPct,
      otherBusyPct: cpu.otherBusyPct,
      noisy: cpu.stealPct + cpu.otherBusyPct > NOISY_PCT,
      quiet,
    };
  }

  /**
   * bench/openloop.mjs pinned to the load CPU at a fixed rate. `onPhase('measure' | 'drain')` is
   * awaited when the measured window starts and when its last request is sent (scrape there).
   * @param {Server} server
   * `bodyFile` (a framed gRPC request) defaults to the reference request.
   * `connections` (default 1), `cpu` (default the load CPU; null = not pinned), `drainTimeoutS`,
   * `skipQuietWait` (a phase that must follow the previous one at once).
   * @param {{rate: number, durationS: number, warmupS: number, onPhase?: (phase: string) => Promise<void>, bodyFile?: string,
   *          connections?: number, cpu?: number | null, drainTimeoutS?: number, skipQuietWait?: boolean}} o
   */
  async openloop(server, o) {
    const args = ['--url', server.origin, '--body', o.bodyFile ?? this.request.bodyFile, '--rate', String(o.rate), '--duration', String(o.durationS), '--warmup', String(o.warmupS)];
    if (o.connections !== undefined) args.push('--connections', String(o.connections));
    if (o.drainTimeoutS !== undefined) args.push('--drain-timeout', String(o.drainTimeoutS));
    return this.#nodeLoad(server, 'openloop.mjs', args, o);
  }

  /**
   * bench/closedloop.mjs pinned to the load CPU: `connections` × `streams` requests always in
   * flight, cycling through the framed requests of `bodiesFile` (e.g. 100,000 distinct SVIDs).
   * Same phases and result shape as `openloop` (its `rate` is the achieved rate).
   * @param {Server} server
   * @param {{bodiesFile: string, connections: number, streams: number, durationS: number, warmupS: number,
   *          onPhase?: (phase: string) => Promise<void>, cpu?: number | null, skipQuietWait?: boolean}} o
   */
  async closedloop(server, o) {
    const args = ['--url', server.origin, '--bodies', o.bodiesFile, '--connections', String(o.connections), '--streams', String(o.streams), '--duration', String(o.durationS), '--warmup', String(o.warmupS)];
    return this.#nodeLoad(server, 'closedloop.mjs', args, o);
  }

  /**
   * A Node load generator of bench/ (JSON lines: `{phase}` markers, then `{result}`), pinned, with
   * the CPU used by the server and the generator over its run.
   * @param {Server} server
   * @param {string} scriptName
   * @param {string[]} scriptArgs
   * @param {{onPhase?: (phase: string) => Promise<void>, cpu?: number | null, skipQuietWait?: boolean}} o
   */
  async #nodeLoad(server, scriptName, scriptArgs, o) {
    const args = [...this.settings.loadNodeFlags, path.join(this.settings.repoRoot, 'bench', scriptName), ...scriptArgs];
    const loadCpu = o.cpu === undefined ? this.settings.loadCpu : o.cpu;
    const quiet = o.skipQuietWait ? null : await this.awaitQuiet(server);
    /** @type {Promise<void>[]} */
    const phaseWork = [];
    let result = null;
    const p = spawnPinned({
      cpu: loadCpu,
      command: process.execPath,
      args,
      onLine: (line) => {
        let obj;
        try {
          obj = JSON.parse(line);
        } catch {
          return;
        }
        if (obj?.phase && o.onPhase) phaseWork.push(o.onPhase(obj.phase));
        if (obj?.result) result = obj.result;
      },
    });
    const window = cpuWindow([server.pid, /** @type {number} */ (p.child.pid), ...server.workerPids]);
    const exit = await p.exited;
    const cpu = window.end();
    await Promise.all(phaseWork);
    if (exit.code !== 0 || !result) throw new Error(`${scriptName} exited with ${exit.code ?? exit.signal}: ${p.stderr().slice(-1500)}`);
    const r = /** @type {any} */ (result);
    server.answered += r.answered + r.warmupAnswered;
    return {
      command: `${loadCpu === null ? '' : `taskset -c ${loadCpu} `}node ${args.map((a) => shellQuote(this.displayPath(a))).join(' ')}`,
      ...r,
      serverCpuPct: serverCpuPct(cpu.pidCpuPct),
      loadCpuPct: cpu.pidCpuPct[1],
      stealPct: cpu.stealPct,
      otherBusyPct: cpu.otherBusyPct,
      noisy: cpu.stealPct + cpu.otherBusyPct > NOISY_PCT,
      quiet,
    };
  }

  /**
   * The server's /metrics, parsed.
   * @param {Server} server
   */
  async scrape(server) {
    if (!server.adminOrigin) throw new TypeError(`${server.label} has no metrics endpoint`);
    const res = await fetch(`${server.adminOrigin}/metrics`);
    if (!res.ok) throw new Error(`GET /metrics of ${server.label}: HTTP ${res.status}`);
    return parsePrometheusText(await res.text());
  }

  /** A path inside the repository as a relative path (for printed commands). @param {string} p */
  displayPath(p) {
    const root = this.settings.repoRoot + path.sep;
    return p.startsWith(root) ? p.slice(root.length) : p;
  }

  // ---- internals ----

  #assertNoServer() {
    if (this.#current) throw new TypeError(`${this.#current.label} is still running: the harness runs one server at a time`);
  }

  /** @param {string} kind */
  #serverDir(kind) {
    return path.join(this.settings.tmpRoot, `${String(++this.#seq).padStart(2, '0')}-${this.section || 'bench'}-${kind}`);
  }

  /** @param {import('./servers.mjs').ServerProcess} proc */
  #adopt(proc) {
    /** @type {Server} */
    const server = Object.assign(proc, { rss: rssSampler(proc.pid), workerRss: proc.workerPids.map((pid) => rssSampler(pid)), answered: 0, answeredIsLowerBound: false, section: this.section });
    this.#current = server;
    return server;
  }

  /**
   * Receipts written = decisions answered, and the file verifies offline.
   * @param {Server} server
   * @param {{total: number, allow: number, deny: number, receiptsWritten: number}} decisions
   */
  async #checkReceipts(server, decisions) {
    // one file per chain: `chio serve --workers N` writes receipts-w1.jsonl … receipts-wN.jsonl
    const files = server.receiptsFiles;
    const file = files.join(' ');
    let lines = 0;
    for (const f of files) lines += existsSync(f) ? await countLines(f) : 0;
    const verify = await runVerify(this.settings.repoRoot, files, /** @type {string} */ (server.seedFile));
    // chio_receipts_written_total is scraped before SIGTERM: with relaxed durability the last
    // batch is written after it (on close), so there it may only lag the file.
    const writtenOk = server.durability === 'strict' ? decisions.receiptsWritten === lines : decisions.receiptsWritten <= lines;
    const countOk = lines === decisions.total && writtenOk && (server.answeredIsLowerBound ? lines >= server.answered : lines === server.answered);
    return {
      file,
      lines,
      decisions,
      answeredByClients: server.answered,
      answeredIsLowerBound: server.answeredIsLowerBound,
      countOk,
      verify,
      denyExpected: server.denyExpected === true,
      ok: countOk && verify.ok && (decisions.deny === 0 || server.denyExpected === true),
    };
  }
}

/**
 * The server's CPU % of one core: the process itself (pids[0]) plus its workers (pids[2…]; pids[1]
 * is the load generator).
 * @param {number[]} pidCpuPct
 */
function serverCpuPct(pidCpuPct) {
  return pidCpuPct.reduce((sum, v, i) => (i === 1 || !Number.isFinite(v) ? sum : sum + v), 0);
}

/** @param {string} file */
function countLines(file) {
  return new Promise((resolve, reject) => {
    let n = 0;
    createReadStream(file)
      .on('data', (chunk) => {
        const buf = /** @type {Buffer} */ (chunk);
        for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) n++;
      })
      .on('end', () => resolve(n))
      .on('error', reject);
  });
}

/**
 * `node bin/chio.js receipt verify FILE… --seed SEED` (SPEC §10; several files: one chain each).
 * @param {string} repoRoot
 * @param {string[]} files
 * @param {string} seed
 */
function runVerify(repoRoot, files, seed) {
  const file = files.join(' ');
  const args = [path.join(repoRoot, 'bin', 'chio.js'), 'receipt', 'verify', ...files, '--seed', seed];
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    execFile(process.execPath, args, { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({
        command: `node bin/chio.js receipt verify ${file} --seed ${seed}`,
        exitCode: code,
        ok: code === 0,
        output: (stdout + stderr).trim().slice(0, 2000),
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
      });
    });
  });
}

/** @param {string} s */
function shellQuote(s) {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
