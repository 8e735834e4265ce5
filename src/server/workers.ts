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
 *   verifiable on its own: `chio receipt verify receipts-w1.jsonl receipts-w2.jsonl …` (or the
 *   folder). A restarted worker continues its own chain.
 * - **One admin listener**, in the primary: `/metrics` aggregates the workers' registries
 *   (prom-client AggregatorRegistry: counters and histograms summed), `/readyz` is ready when
 *   every worker is, `/v1/keys`, the capability routes, and the receipt query API over every
 *   worker's SQLite store (./worker-receipts.ts).
 * - Signals go to the primary: SIGHUP reloads the policy everywhere, SIGTERM/SIGINT shut every
 *   worker down gracefully (each drains and flushes its receipts), then the primary. A worker that
 *   dies is started again after a second.
 *
 * node:cluster rather than worker threads: grpc-js and its HTTP/2 sessions live on one event loop
 * per thread either way, but only processes share a listening socket without a hand-written
 * connection broker, and a crashing process takes down one worker, not the service.
 */
import cluster, { type Worker } from 'node:cluster';
import path from 'node:path';
import { AggregatorRegistry } from 'prom-client';
import type { Logger } from '../check/pipeline.js';
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
import { receiptsPool, startSharedRevocations } from '../receipt/pg/service.js';
import { PgReceiptStore } from '../receipt/pg/store.js';
import { receiptRoutes } from './routes/receipts.js';
import { WorkerReceiptStores, workerReceiptRoutes } from './worker-receipts.js';

/** Set in each worker's environment: its number, 1..N (stable across restarts: it names the worker's files). */
export const WORKER_INDEX_ENV = 'CHIO_WORKER_INDEX';

const RESTART_DELAY_MS = 1000;

/** Messages between the primary and its workers (node:cluster IPC). */
type ToWorker = { type: 'chio:shutdown' } | { type: 'chio:reload' };
type FromWorker = { type: 'chio:ready'; grpcPort: number } | { type: 'chio:failed'; message: string };

function isFromWorker(m: unknown): m is FromWorker {
  const t = (m as { type?: unknown } | null)?.type;
  return t === 'chio:ready' || t === 'chio:failed';
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
  const first = config.receipts.sinks[0];
  const checkpoints = config.receipts.checkpoints.path ?? (first ? path.join(path.dirname(first.path), 'checkpoints.jsonl') : undefined);
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
 * Runs worker `index`: the service without an admin listener, its metrics answered to the
 * primary's aggregator, ready/failed reported. Resolves with the exit code when it has shut down.
 */
export async function runWorker(config: Config, index: number, log: Logger): Promise<number> {
  const send = (m: FromWorker): void => void process.send?.(m);
  let service: RunningService;
  try {
    service = await startService(workerConfig(config, index), { log, adminListener: false });
  } catch (err) {
    send({ type: 'chio:failed', message: err instanceof ChioError ? `${err.code}: ${err.message}` : describe(err) });
    if (err instanceof ChioError) return 2;
    throw err;
  }
  new AggregatorRegistry(); // answers the primary's metric requests (prom-client cluster support)
  AggregatorRegistry.setRegistries([service.metrics.registry]);
  send({ type: 'chio:ready', grpcPort: service.grpcPort });

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ worker: index, why }, 'worker shutting down');
      const done = (code: number): void => {
        if (process.connected) process.disconnect(); // the IPC channel would keep this process alive
        resolve(code);
      };
      service.close().then(
        () => done(0),
        (err: unknown) => {
          log.error({ err: describe(err) }, 'worker shutdown failed');
          done(1);
        },
      );
    };
    process.on('message', (m: ToWorker) => {
      if (m?.type === 'chio:shutdown') stop('primary asked');
      else if (m?.type === 'chio:reload') {
        try {
          service.reloadPolicy();
        } catch {
          /* logged and counted by reloadPolicy */
        }
      }
    });
    // Ctrl-C reaches the whole process group; the primary's request comes too (close() is idempotent)
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => undefined); // the primary forwards reloads
    process.once('disconnect', () => stop('primary gone'));
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
}

/**
 * Starts N workers and the admin listener. Throws ChioError when the config, key, policy or a
 * worker's start fails (every worker started is stopped again first).
 */
export async function startPrimary(options: PrimaryOptions): Promise<RunningPrimary> {
  const { config, log, workers: n } = options;
  if (!cluster.isPrimary) throw new TypeError('startPrimary() runs in the cluster primary');
  if (!Number.isSafeInteger(n) || n < 2) throw new TypeError(`startPrimary() needs 2 or more workers, got ${n}`);

  // the key once, before the workers race to create it
  const { key, created } = loadOrCreateSeedFile(config.keys.receipt_signing_seed);
  if (created) log.info({ path: config.keys.receipt_signing_seed, kid: key.kid }, 'created a new receipt signing key');
  const policySeen = statKeyOf([config.policy]); // before the read: an edit during start-up is still noticed
  let policy = loadPolicyFile(config.policy);
  // POST /v1/revocations is answered here: with `revocations: {type: postgres}` it is recorded there,
  // and every worker (each listening on its own connection) enforces it as every replica does
  const shared = await startSharedRevocations(config.revocations, options.env ?? process.env, log);
  const capabilities: RunningCapabilities = startCapabilities({ config: config.capabilities, log, clock: Date.now, policy: () => policy, shared });
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
  const aggregator = new AggregatorRegistry();
  const slots: Slot[] = Array.from({ length: n }, () => ({ worker: null, ready: false, grpcPort: null }));
  let stopping = false;
  let startupFailure: ((why: string) => void) | null = null;

  const fork = (i: number): void => {
    const slot = slots[i] as Slot;
    const worker = cluster.fork({ ...(options.env ?? process.env), [WORKER_INDEX_ENV]: String(i + 1) });
    slot.worker = worker;
    slot.ready = false;
    worker.on('message', (m: unknown) => {
      if (!isFromWorker(m)) return;
      if (m.type === 'chio:ready') {
        slot.ready = true;
        slot.grpcPort = m.grpcPort;
        readyChanged();
      } else {
        startupFailure?.(`worker ${i + 1}: ${m.message}`);
      }
    });
    worker.on('exit', (code, signal) => {
      slot.ready = false;
      if (slot.worker === worker) slot.worker = null;
      if (stopping) return;
      log.error({ worker: i + 1, code, signal }, 'worker exited; starting it again');
      if (startupFailure) startupFailure(`worker ${i + 1} exited (code ${code}, signal ${signal}) before it was ready`);
      else setTimeout(() => !stopping && fork(i), RESTART_DELAY_MS).unref();
    });
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
      handler: async () => ({ status: 200, headers: { 'content-type': aggregator.contentType }, body: await aggregator.clusterMetrics() }),
    },
    { method: 'GET', path: '/healthz', auth: false, handler: () => json(200, { status: 'ok' }) },
    {
      method: 'GET',
      path: '/readyz',
      auth: false,
      handler: () =>
        readyCount() === n && !stopping
          ? json(200, { status: 'ready', policyHash: policy.hash, workers: n })
          : json(503, { status: 'not ready', workers: n, workersReady: readyCount() }),
    },
    { method: 'GET', path: '/v1/keys', auth: false, handler: () => json(200, { keys: [publicJwk(key)] }) },
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
