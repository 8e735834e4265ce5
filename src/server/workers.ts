/**
 * `chio serve --workers N` (issue "Performance at scale": both cores). One grpc-js process uses one
 * core (/work/shared/notes/performance.md §0, §4.3: ~110 µs of transport CPU per call on one event
 * loop), so N processes are started with node:cluster:
 *
 * - **One gRPC listener.** Every worker binds `listen.grpc`; node:cluster makes it one socket in
 *   the primary that hands each new connection to a worker in turn (round-robin). A connection
 *   stays on its worker: Envoy's connection pools (one HTTP/2 connection per Envoy worker thread
 *   per sidecar) spread over the workers.
 * - **One chain per worker.** Each worker signs with the same key but writes its own hash chain to
 *   its own files: `receipts.jsonl` becomes `receipts-w1.jsonl`, `receipts-w2.jsonl`, … (every
 *   sink, and the checkpoint log), so no two processes ever write one file and each chain stays
 *   verifiable on its own: `chio receipt verify receipts-w1.jsonl receipts-w2.jsonl …`. A restarted
 *   worker continues its own chain.
 * - **One config.** Workers run the config text the primary read at start (passed in
 *   {@link WORKER_CONFIG_ENV}), not the file as it is when they (re)start: an edited chio.yaml
 *   cannot give a restarted worker another key, port or receipt file than its siblings.
 * - **One admin listener**, in the primary: `/metrics` aggregates the registries of the workers
 *   that are ready (prom-client `AggregatorRegistry.aggregate`: counters and histograms summed; a
 *   worker that does not answer within 2 s is left out rather than failing the scrape; the counters
 *   of a worker that died stay in the sum as last scraped, so none goes backwards), `/readyz` is ready when
 *   every worker is, `/v1/keys`, the capability routes, and the receipt query API over every
 *   worker's SQLite store (./worker-receipts.ts).
 * - **One revocation list.** `POST /v1/revocations` is answered by the primary, which records it
 *   (the file, or PostgreSQL) and sends it to every worker; it answers 201 once every worker has
 *   applied it in memory, 503 when one did not confirm in time. A worker that (re)starts asks the
 *   primary for its whole list and applies it before its Check listener opens, so neither a file
 *   that does not parse nor one deleted while revocations are in force lifts a revocation in a
 *   worker (the single-process guarantees of src/capability/revocations.ts).
 * - Signals go to the primary: SIGHUP reloads the policy everywhere, SIGTERM/SIGINT shut every
 *   worker down gracefully (each drains and flushes its receipts), then the primary. A worker that
 *   dies is started again after a second; one that fails to start is logged and retried with a
 *   doubling delay (up to 30 s) until it starts. A worker asked to stop while it is still starting
 *   stops as soon as it is up; a worker whose primary is gone drains and flushes before it exits
 *   (node:cluster would otherwise exit it at once).
 *
 * node:cluster rather than worker threads: grpc-js and its HTTP/2 sessions live on one event loop
 * per thread either way, but only processes share a listening socket without a hand-written
 * connection broker, and a crashing process takes down one worker, not the service.
 */
import cluster, { type Worker } from 'node:cluster';
import path from 'node:path';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { Logger } from '../check/pipeline.js';
import { RevocationList, type Revocation } from '../capability/revocations.js';
import { startCapabilities, type RunningCapabilities } from '../capability/service.js';
import { PACKAGE_ROOT, type Config } from '../config/load.js';
import { ChioError, describe } from '../errors.js';
import { FileWatch, statKeyOf } from '../file-watch.js';
import { loadOrCreateSeedFile, publicJwk } from '../keys.js';
import { adminTokenReader, startService, type RunningService } from '../main.js';
import { loadPolicyFile } from '../policy/load.js';
import type { CompiledPolicy } from '../policy/types.js';
import { json, startAdminServer, type RunningAdminServer, type Route } from './admin.js';
import { endWithin } from '../receipt/pg/connection.js';
import { defaultCheckpointsPath } from '../receipt/retention.js';
import { receiptsPool, startSharedRevocations } from '../receipt/pg/service.js';
import { PgReceiptStore } from '../receipt/pg/store.js';
import { receiptRoutes } from './routes/receipts.js';
import { WorkerReceiptStores, workerReceiptRoutes } from './worker-receipts.js';

/** Set in each worker's environment: its number, 1..N (stable across restarts: it names the worker's files). */
export const WORKER_INDEX_ENV = 'CHIO_WORKER_INDEX';
/** Set in each worker's environment: the config text the primary read (base64), when it came from a file. */
export const WORKER_CONFIG_ENV = 'CHIO_WORKER_CONFIG';

const RESTART_DELAY_MS = 1000;
const MAX_RESTART_DELAY_MS = 30_000;
const METRICS_TIMEOUT_MS = 2000;
/** How long a revocation's answer waits for each worker to confirm it applied it. */
const REVOCATION_TIMEOUT_MS = 2000;
/** How long a starting worker waits for the primary's revocation list before its start fails (and is retried). */
const REVOCATION_SYNC_TIMEOUT_MS = 10_000;
/** How often a worker looks whether its receipts are being written (for the primary's /readyz). */
const RECEIPTS_HEALTH_MS = 500;

/** Messages between the primary and its workers (node:cluster IPC). */
type ToWorker =
  | { type: 'chio:shutdown' }
  | { type: 'chio:reload' }
  | { type: 'chio:metrics'; id: number }
  /** the primary recorded a revocation: apply it in memory, then say so (a RevocationsAnswer) */
  | { type: 'chio:revocations'; id: number; revocations: Revocation[] }
  /** the answer to a worker's chio:revocations-sync: the primary's whole revocation list */
  | { type: 'chio:revocations-sync'; revocations: Revocation[] };
/** A worker's answer to chio:revocations: applied, or why not. */
type RevocationsAnswer = { type: 'chio:revocations'; id: number; ok: true } | { type: 'chio:revocations'; id: number; ok: false; message: string };
type FromWorker =
  | { type: 'chio:ready'; grpcPort: number }
  | { type: 'chio:failed'; message: string }
  | { type: 'chio:metrics'; id: number; metrics: MetricJson[] }
  /** the worker's receipts stopped (or resumed) being written: RunningService.receiptsFailing */
  | { type: 'chio:receipts'; failing: string | null }
  | RevocationsAnswer
  /** a starting worker asks for the primary's revocation list (it serves no Check before it has it) */
  | { type: 'chio:revocations-sync' };
type MetricJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>[number];

function isFromWorker(m: unknown): m is FromWorker {
  const t = (m as { type?: unknown } | null)?.type;
  return t === 'chio:ready' || t === 'chio:failed' || t === 'chio:metrics' || t === 'chio:receipts' || t === 'chio:revocations' || t === 'chio:revocations-sync';
}

/** The config text a worker runs, from {@link WORKER_CONFIG_ENV}; null when the primary set none. */
export function workerConfigText(env: NodeJS.ProcessEnv = process.env): string | null {
  const b64 = env[WORKER_CONFIG_ENV];
  return b64 === undefined || b64 === '' ? null : Buffer.from(b64, 'base64').toString('utf8');
}

/** `receipts.jsonl` → `receipts-w2.jsonl` (worker 2's file beside the configured one). */
export function workerFile(file: string, index: number): string {
  const { dir, name, ext } = path.parse(file);
  return path.join(dir, `${name}-w${index}${ext}`);
}

/**
 * The config worker `index` runs: every receipt file of its own (its chain), the checkpoint log
 * too (by default it sits beside the first sink, where all workers would share it).
 */
export function workerConfig(config: Config, index: number): Config {
  const sinks = config.receipts.sinks.map((s) => ({ ...s, path: workerFile(s.path, index) }));
  const checkpoints = config.receipts.sinks.length === 0 ? config.receipts.checkpoints.path : defaultCheckpointsPath(config.receipts.checkpoints, config.receipts.sinks);
  return {
    ...config,
    receipts: {
      ...config.receipts,
      sinks,
      checkpoints: { ...config.receipts.checkpoints, path: checkpoints === undefined ? undefined : workerFile(checkpoints, index) },
    },
  };
}

/** The worker number this process runs as, or null in the primary (or without node:cluster). */
export function workerIndex(env: NodeJS.ProcessEnv = process.env): number | null {
  if (!cluster.isWorker) return null;
  const n = Number(env[WORKER_INDEX_ENV]);
  return Number.isSafeInteger(n) && n >= 1 ? n : null;
}

// ---------------------------------------------------------------- worker

/**
 * A worker's copy of the revocations its primary recorded (RevocationList.apply): held in memory
 * until the service has read its revocation file, then applied to that list before the Check
 * listener opens, and to it directly from then on. Not the file: the primary appended them there
 * already, and a file that does not parse, or that was deleted, must not keep them from a worker.
 */
class PrimaryRevocations {
  private into: RevocationList;

  constructor(log: Logger) {
    this.into = RevocationList.open(null, { log });
  }

  /** Throws ChioError (and applies none) when an entry is not a revocation. */
  apply(revocations: readonly Revocation[]): void {
    this.into.apply(revocations);
  }

  /** The service's list: what was held is applied to it, and what comes later goes there. */
  attach(list: RevocationList): void {
    list.apply(this.into.list());
    this.into = list;
  }
}

/**
 * Runs worker `index`: the service without an admin listener, its metrics answered to the
 * primary's aggregator, ready/failed reported. Resolves with the exit code when it has shut down.
 */
export async function runWorker(config: Config, index: number, log: Logger): Promise<number> {
  const send = (m: FromWorker): void => void process.send?.(m);
  // node:cluster exits a worker at once when the IPC channel closes unexpectedly (the primary died):
  // marking the disconnect as expected lets 'primary gone' below drain and flush the receipts first
  if (cluster.worker) cluster.worker.exitedAfterDisconnect = true;
  // every request is heard from the start: one that arrives while the service starts is acted on once it is up
  let service: RunningService | null = null;
  let pendingStop: string | null = null;
  let stop = (why: string): void => void (pendingStop ??= why);
  // the primary's revocations: its whole list before the service starts, then each one it records
  const fromPrimary = new PrimaryRevocations(log);
  let onSync: ((revocations: Revocation[]) => void) | null = null;
  const applyFromPrimary = (id: number, revocations: Revocation[]): RevocationsAnswer => {
    try {
      fromPrimary.apply(revocations);
      return { type: 'chio:revocations', id, ok: true };
    } catch (err) {
      log.error({ worker: index, err: describe(err) }, 'cannot apply the revocations the primary sent');
      return { type: 'chio:revocations', id, ok: false, message: describe(err) };
    }
  };
  process.on('message', (m: ToWorker) => {
    if (m?.type === 'chio:shutdown') stop('primary asked');
    else if (m?.type === 'chio:reload') {
      try {
        service?.reloadPolicy();
      } catch {
        /* logged and counted by reloadPolicy */
      }
    } else if (m?.type === 'chio:revocations') {
      send(applyFromPrimary(m.id, m.revocations));
    } else if (m?.type === 'chio:revocations-sync') {
      onSync?.(m.revocations);
    } else if (m?.type === 'chio:metrics' && service !== null) {
      const { id } = m;
      service.metrics.registry.getMetricsAsJSON().then(
        (metrics) => send({ type: 'chio:metrics', id, metrics }),
        () => undefined,
      );
    }
  });
  // Ctrl-C reaches the whole process group; the primary's request comes too (close() is idempotent)
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => undefined); // the primary forwards reloads
  process.once('disconnect', () => stop('primary gone'));

  /** The primary's whole revocation list; ChioError when it does not send it in time (the start fails and is retried). */
  const syncRevocations = (): Promise<Revocation[]> =>
    new Promise((resolve, reject) => {
      const why = `the primary did not send its revocation list within ${REVOCATION_SYNC_TIMEOUT_MS} ms`;
      const timer = setTimeout(() => reject(new ChioError('io_error', why)), REVOCATION_SYNC_TIMEOUT_MS);
      timer.unref();
      onSync = (revocations) => {
        clearTimeout(timer);
        onSync = null;
        resolve(revocations);
      };
      send({ type: 'chio:revocations-sync' });
    });

  let running: RunningService;
  try {
    fromPrimary.apply(await syncRevocations());
    // applied to the service's list before its Check listener opens: no Check is decided without them
    running = await startService(workerConfig(config, index), { log, adminListener: false, onRevocations: (list) => fromPrimary.attach(list) });
  } catch (err) {
    send({ type: 'chio:failed', message: err instanceof ChioError ? `${err.code}: ${err.message}` : describe(err) });
    // the IPC channel would keep this process alive, and the primary waits for it to exit
    if (process.connected) process.disconnect();
    setTimeout(() => process.exit(2), 2000).unref();
    if (err instanceof ChioError) return 2;
    throw err;
  }
  service = running;
  send({ type: 'chio:ready', grpcPort: running.grpcPort });
  // the primary's /readyz: told when this worker's receipts stop or resume being written
  let failing: string | null = null;
  const health = setInterval(() => {
    const now = running.receiptsFailing();
    if (now === failing) return;
    failing = now;
    send({ type: 'chio:receipts', failing: now });
  }, RECEIPTS_HEALTH_MS);
  health.unref();

  return new Promise<number>((resolve) => {
    let stopping = false;
    stop = (why: string): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(health);
      log.info({ worker: index, why }, 'worker shutting down');
      const done = (code: number): void => {
        if (process.connected) process.disconnect(); // the IPC channel would keep this process alive
        resolve(code);
      };
      running.close().then(
        () => done(0),
        (err: unknown) => {
          log.error({ err: describe(err) }, 'worker shutdown failed');
          done(1);
        },
      );
    };
    if (pendingStop !== null) stop(pendingStop);
  });
}

// ---------------------------------------------------------------- primary

export interface PrimaryOptions {
  readonly config: Config;
  readonly workers: number;
  readonly log: Logger;
  /** the folder workers start in (relative config paths were already resolved) */
  readonly cwd: string;
  /** node flags for the workers (default: this process's) */
  readonly execArgv?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** the text `config` was parsed from (null: the embedded default); every worker runs exactly it */
  readonly configText?: string | null;
}

export interface RunningPrimary {
  readonly grpcPort: number;
  readonly adminPort: number;
  readonly workers: number;
  readonly kernelKey: string;
  /** the worker processes now running, by worker number (1..N; null while one restarts) */
  workerPids(): Array<number | null>;
  policy(): CompiledPolicy;
  /** SIGHUP: reload the policy in the primary (capability issuance) and in every worker */
  reload(): void;
  /** resolves when every worker has exited and the admin listener is closed; true when all exited cleanly */
  close(): Promise<boolean>;
}

interface Slot {
  worker: Worker | null;
  ready: boolean;
  grpcPort: number | null;
  /** starts that failed since it was last ready (the restart delay doubles with each) */
  failures: number;
  /** the current worker has the primary's revocation list (it asked): each revocation recorded from now on is sent to it */
  synced: boolean;
  /** what the current worker process answered at the last scrape */
  lastMetrics: MetricJson[] | null;
  /** why the current worker cannot record decisions (its last chio:receipts), null when it can */
  receiptsFailing: string | null;
}

/** The counters and histograms of a registry's JSON (what keeps counting after its process is gone). */
function countersOf(metrics: readonly MetricJson[]): MetricJson[] {
  // the typings say a numeric enum; prom-client puts the type's name there ('counter', …)
  return metrics.filter((m) => ['counter', 'histogram'].includes(String(m.type)));
}

/**
 * Starts N workers and the admin listener. Throws ChioError when the config, key, policy or a
 * worker's start fails (every worker started is stopped again first).
 */
export async function startPrimary(options: PrimaryOptions): Promise<RunningPrimary> {
  const { config, log, workers: n } = options;
  if (!cluster.isPrimary) throw new TypeError('startPrimary() runs in the cluster primary');
  if (!Number.isSafeInteger(n) || n < 2) throw new TypeError(`startPrimary() needs 2 or more workers, got ${n}`);

  // the policy first (a start that fails on a bad policy leaves no new key behind, as in one process),
  // then the key once, before the workers race to create it
  const policySeen = statKeyOf([config.policy]); // before the read: an edit during start-up is still noticed
  let policy = loadPolicyFile(config.policy);
  const { key, created } = loadOrCreateSeedFile(config.keys.receipt_signing_seed);
  if (created) log.info({ path: config.keys.receipt_signing_seed, kid: key.kid }, 'created a new receipt signing key');
  // POST /v1/revocations is answered here: with `revocations: {type: postgres}` it is recorded there,
  // and every worker (each listening on its own connection) enforces it as every replica does
  const shared = await startSharedRevocations(config.revocations, options.env ?? process.env, log);
  // a revocation the primary records (POST /v1/revocations) is in force in every worker before it is
  // answered 201; a worker that does not confirm it makes the answer 503 (service.ts `afterRevoke`)
  const afterRevoke = async (revocation: Revocation): Promise<void> => {
    const answers = await Promise.all(syncedWorkers().map(({ worker, n }) => sendRevocation(worker, n, revocation)));
    const unconfirmed = answers.filter((why): why is string => why !== null);
    if (unconfirmed.length === 0) return;
    log.error({ capabilityId: revocation.id, unconfirmed }, 'not every worker confirmed a revocation');
    const [where, until] =
      shared !== null
        ? ['in PostgreSQL', 'it reads PostgreSQL (within revocations.poll_seconds)']
        : [`in ${config.capabilities.revocations_file ?? 'the revocations file'}`, 'it takes the message late, its file watch re-reads the file, or it restarts'];
    throw new ChioError(
      'io_error',
      `not every worker confirmed the revocation (${unconfirmed.join('; ')}). It is recorded ${where} and in force in the primary and ` +
        `in every worker that confirmed it; a worker that did not may still allow the capability until ${until}. POST it again to retry.`,
    );
  };
  const capabilities: RunningCapabilities = startCapabilities({ config: config.capabilities, log, clock: Date.now, policy: () => policy, shared, afterRevoke });
  const reloadOwnPolicy = (): void => {
    try {
      policy = loadPolicyFile(config.policy);
    } catch (err) {
      log.error({ err: describe(err) }, 'policy reload failed in the primary; keeping the last good policy');
    }
  };
  const policyWatch = new FileWatch([config.policy], reloadOwnPolicy, { seen: policySeen });

  cluster.setupPrimary({
    exec: path.join(PACKAGE_ROOT, 'bin', 'chio.js'),
    args: config.file === '(embedded)' ? ['serve'] : ['serve', '--config', config.file],
    execArgv: [...(options.execArgv ?? process.execArgv)],
    cwd: options.cwd,
  });
  const slots: Slot[] = Array.from({ length: n }, () => ({ worker: null, ready: false, grpcPort: null, failures: 0, synced: false, lastMetrics: null, receiptsFailing: null }));
  // the counters of workers that died, as last scraped: summed in, so a restart never makes a counter
  // go backwards (Prometheus would read a reset and a false rate spike)
  let retired: Promise<MetricJson[]> = Promise.resolve([]);
  const retire = (slot: Slot): void => {
    const last = slot.lastMetrics;
    slot.lastMetrics = null;
    if (last === null) return;
    retired = retired.then(async (before) => countersOf(await AggregatorRegistry.aggregate([before, countersOf(last)]).getMetricsAsJSON()));
  };
  let stopping = false;
  let startupFailure: ((why: string) => void) | null = null;
  // requests to workers answered by id (chio:metrics, chio:revocations)
  const replies = new Map<number, (answer: unknown) => void>();
  let requests = 0;
  /** Sends `message(id)` to `worker`: its answer to that id, or null after `timeoutMs`. */
  const ask = <T>(worker: Worker, message: (id: number) => ToWorker, timeoutMs: number): Promise<T | null> =>
    new Promise((resolve) => {
      const id = ++requests;
      const timer = setTimeout(() => {
        replies.delete(id);
        resolve(null);
      }, timeoutMs);
      timer.unref();
      replies.set(id, (answer) => {
        clearTimeout(timer);
        replies.delete(id);
        resolve(answer as T);
      });
      worker.send(message(id));
    });
  /** The slots whose worker is up and reachable. */
  const readySlots = (): Slot[] => slots.filter((s) => s.ready && s.worker?.isConnected() === true);
  /**
   * The reachable workers that have the revocation list, ready or still starting (they hold what they
   * are sent until their list is read). One that has not asked yet gets the whole list when it does:
   * the list is read and `synced` set in one turn, so no revocation falls between the two.
   */
  const syncedWorkers = (): Array<{ worker: Worker; n: number }> =>
    slots.flatMap((s, i) => (s.synced && s.worker !== null && s.worker.isConnected() ? [{ worker: s.worker, n: i + 1 }] : []));
  /** Sends `revocation` to one worker: null once it confirmed it applied it, else why not. */
  const sendRevocation = async (worker: Worker, n: number, revocation: Revocation): Promise<string | null> => {
    const answer = await ask<RevocationsAnswer>(worker, (id) => ({ type: 'chio:revocations', id, revocations: [revocation] }), REVOCATION_TIMEOUT_MS);
    if (answer === null) return `worker ${n} did not answer within ${REVOCATION_TIMEOUT_MS} ms`;
    return answer.ok ? null : `worker ${n} could not apply it: ${answer.message}`;
  };
  const workerEnv = {
    ...(options.env ?? process.env),
    ...(options.configText == null ? {} : { [WORKER_CONFIG_ENV]: Buffer.from(options.configText, 'utf8').toString('base64') }),
  };

  const fork = (i: number): void => {
    const slot = slots[i] as Slot;
    const worker = cluster.fork({ ...workerEnv, [WORKER_INDEX_ENV]: String(i + 1) });
    slot.worker = worker;
    slot.ready = false;
    slot.synced = false;
    slot.receiptsFailing = null;
    worker.on('message', (m: unknown) => {
      if (!isFromWorker(m)) return;
      if (m.type === 'chio:ready') {
        slot.ready = true;
        slot.failures = 0;
        slot.grpcPort = m.grpcPort;
        readyChanged();
      } else if (m.type === 'chio:metrics') {
        replies.get(m.id)?.(m.metrics);
      } else if (m.type === 'chio:receipts') {
        slot.receiptsFailing = m.failing;
      } else if (m.type === 'chio:revocations') {
        replies.get(m.id)?.(m);
      } else if (m.type === 'chio:revocations-sync') {
        // the list and `synced` in one turn: a revocation recorded before is in the list, one after is sent
        if (slot.worker === worker) slot.synced = true;
        // the file's list and, with `revocations: {type: postgres}`, the shared one as the primary holds it:
        // a worker restarted while PostgreSQL is unreachable must not start without them
        const revocations = [...capabilities.revocations.list(), ...(shared?.list() ?? [])];
        worker.send({ type: 'chio:revocations-sync', revocations } satisfies ToWorker);
      } else if (startupFailure !== null) {
        startupFailure(`worker ${i + 1}: ${m.message}`);
      } else {
        slot.failures++;
        log.error({ worker: i + 1, err: m.message }, 'worker failed to start; retrying');
      }
    });
    worker.on('exit', (code, signal) => {
      slot.ready = false;
      if (slot.worker === worker) {
        slot.worker = null;
        retire(slot);
      }
      if (stopping) return;
      if (startupFailure) {
        startupFailure(`worker ${i + 1} exited (code ${code}, signal ${signal}) before it was ready`);
        return;
      }
      const delay = Math.min(MAX_RESTART_DELAY_MS, RESTART_DELAY_MS * 2 ** Math.min(slot.failures, 16));
      log.error({ worker: i + 1, code, signal, restartInMs: delay }, 'worker exited; starting it again');
      setTimeout(() => !stopping && fork(i), delay).unref();
    });
  };

  /** The ready workers' metrics, summed (a worker starting or gone is left out, never a failed scrape). */
  const clusterMetrics = async (): Promise<Registry> => {
    const answers = await Promise.all(
      readySlots().map(async (slot) => {
        const worker = slot.worker as Worker;
        const answer = await ask<MetricJson[]>(worker, (id) => ({ type: 'chio:metrics', id }), METRICS_TIMEOUT_MS);
        if (answer !== null && slot.worker === worker) slot.lastMetrics = answer;
        // a worker too slow to answer counts as last scraped: left out, every counter would go
        // backwards for one scrape (Prometheus reads a reset and a false rate spike; a review)
        return answer ?? slot.lastMetrics;
      }),
    );
    return AggregatorRegistry.aggregate([...answers.filter((a): a is MetricJson[] => a !== null), await retired]);
  };
  let readyChanged = (): void => undefined;

  const stopWorkers = async (deadlineMs: number): Promise<boolean> => {
    stopping = true;
    const exits = slots.map(
      (slot) =>
        new Promise<boolean>((resolve) => {
          const w = slot.worker;
          if (w === null || w.isDead()) return resolve(true);
          const timer = setTimeout(() => w.process.kill('SIGKILL'), deadlineMs);
          w.once('exit', (code) => {
            clearTimeout(timer);
            resolve(code === 0);
          });
          if (w.isConnected()) w.send({ type: 'chio:shutdown' } satisfies ToWorker);
          else w.process.kill('SIGTERM');
        }),
    );
    return (await Promise.all(exits)).every(Boolean);
  };

  // start every worker; the first failure stops them all
  try {
    await new Promise<void>((resolve, reject) => {
      startupFailure = (why) => reject(new ChioError('config_invalid', why));
      readyChanged = () => {
        if (slots.every((s) => s.ready)) resolve();
      };
      for (let i = 0; i < n; i++) fork(i);
    });
  } catch (err) {
    startupFailure = null;
    await stopWorkers(5000);
    policyWatch.close();
    await capabilities.close();
    throw err;
  }
  startupFailure = null;
  readyChanged = () => undefined;

  const sqlite = config.receipts.sinks.find((s) => s.type === 'sqlite');
  const stores = sqlite ? new WorkerReceiptStores(slots.map((_, i) => workerFile(sqlite.path, i + 1))) : null;
  // with a postgres sink the query API reads the central store (every worker's chain, as in one
  // process); the workers check the schema and ship, the primary only reads
  const pg = config.receipts.postgres;
  const centralPool = pg ? receiptsPool(pg, options.env ?? process.env, log, 2, 'receipt queries').pool : null;
  const readyCount = (): number => slots.filter((s) => s.ready).length;
  const routes: Route[] = [
    {
      method: 'GET',
      path: '/metrics',
      auth: false,
      handler: async () => {
        const registry = await clusterMetrics();
        return { status: 200, headers: { 'content-type': registry.contentType }, body: await registry.metrics() };
      },
    },
    { method: 'GET', path: '/healthz', auth: false, handler: () => json(200, { status: 'ok' }) },
    {
      method: 'GET',
      path: '/readyz',
      auth: false,
      handler: () => {
        if (readyCount() !== n || stopping) return json(503, { status: 'not ready', workers: n, workersReady: readyCount() });
        // a worker that can only deny receipt_unavailable (on_failure deny): as one process would say it
        const failing = slots.findIndex((s) => s.ready && s.receiptsFailing !== null);
        if (failing >= 0) return json(503, { status: 'not ready', workers: n, workersReady: n, reason: `worker ${failing + 1}: ${String(slots[failing]?.receiptsFailing)}` });
        return json(200, { status: 'ready', policyHash: policy.hash, workers: n });
      },
    },
    { method: 'GET', path: '/v1/keys', auth: false, handler: () => json(200, { keys: [publicJwk(key)] }) },
    {
      // each worker signs the checkpoints of its own chain: there is no one "latest" to serve here
      method: 'GET',
      path: '/v1/checkpoints/latest',
      auth: false,
      handler: () =>
        json(404, {
          error: { code: 'not_found', message: 'not served under chio serve --workers: each worker signs its own chain\'s checkpoints, in checkpoints-wN.jsonl beside the receipts' },
        }),
    },
    ...capabilities.routes,
    ...(centralPool !== null ? receiptRoutes(null, new PgReceiptStore(centralPool)) : workerReceiptRoutes(stores)),
  ];
  let admin: RunningAdminServer;
  try {
    admin = await startAdminServer({
      address: config.listen.admin,
      routes,
      token: adminTokenReader(config.admin, options.env ?? process.env),
      onError: (err) => log.error({ err: describe(err) }, 'admin request failed'),
    });
  } catch (err) {
    await stopWorkers(5000);
    policyWatch.close();
    await capabilities.close();
    throw err;
  }

  let closing: Promise<boolean> | undefined;
  return {
    grpcPort: slots[0]?.grpcPort ?? 0,
    adminPort: admin.port,
    workers: n,
    kernelKey: key.kid,
    workerPids: () => slots.map((s) => s.worker?.process.pid ?? null),
    policy: () => policy,
    reload: () => {
      reloadOwnPolicy();
      for (const s of slots) if (s.worker?.isConnected()) s.worker.send({ type: 'chio:reload' } satisfies ToWorker);
    },
    close: () =>
      (closing ??= (async () => {
        const deadlineMs = (config.shutdown.drain_seconds + config.shutdown.deadline_seconds + 5) * 1000;
        const clean = await stopWorkers(deadlineMs);
        policyWatch.close();
        stores?.close();
        await admin.close();
        if (centralPool !== null) await endWithin(centralPool);
        await capabilities.close();
        return clean;
      })()),
  };
}
