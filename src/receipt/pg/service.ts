/**
 * The central PostgreSQL store inside a running replica (README "Several replicas, one
 * PostgreSQL"; chio.yaml `receipts.sinks: [{type: postgres}]`, `revocations: {type: postgres}`):
 * the startup schema check, the shipper of this replica's chain, the central query store the
 * admin API reads, and the retention guard that keeps unshipped receipts in the local log.
 *
 * Startup: a reachable database whose schema is older than this code stops the start
 * (config_invalid, naming `chio db migrate`); an unreachable one does not — decisions never depend
 * on PostgreSQL — it is logged and the shipper keeps trying (the local log holds everything).
 */
import type { Logger } from '../../check/pipeline.js';
import { ChioError, describe } from '../../errors.js';
import type { Metrics } from '../../metrics.js';
import { isReceiptSource } from '../checkpoint.js';
import type { ReceiptSink } from '../sinks/sink.js';
import type { ReceiptRecord, ReceiptSource } from '../store.js';
import type { PostgresSinkConfig, RevocationsConfig } from './config.js';
import { createPgPool, endWithin, pgUrlFromEnv, redactPgUrl, type PgPool } from './connection.js';
import { requireCurrentSchema, SCHEMA_VERSION } from './migrate.js';
import { PgRevocations } from './revocations.js';
import { ReceiptShipper, type ShipperMetrics, type ShipperSource } from './shipper.js';
import { PgReceiptStore } from './store.js';

/** How long startup waits for PostgreSQL to answer the schema check. */
const STARTUP_CHECK_MS = 5000;

/**
 * Checks the schema version at startup. Throws ChioError config_invalid when the database answers
 * with an older schema; returns false (logged) when it does not answer in time.
 */
export async function checkSchemaAtStartup(pool: PgPool, urlEnv: string, log: Logger, timeoutMs = STARTUP_CHECK_MS): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  try {
    const status = await Promise.race([requireCurrentSchema(pool, urlEnv), timeout]);
    if (status === 'timeout') throw new ChioError('io_error', `no answer within ${timeoutMs} ms`);
    if (status.current > status.latest) {
      log.warn({ schema: status.schema, version: status.current, needs: status.latest }, 'the PostgreSQL schema is newer than this chio (a rolling upgrade?); going on');
    }
    return true;
  } catch (err) {
    if (err instanceof ChioError && err.code === 'config_invalid') throw err;
    log.error({ err: describe(err), needsVersion: SCHEMA_VERSION }, 'PostgreSQL is not reachable at startup; starting anyway (the local log keeps every receipt, shipping retries)');
    return false;
  } finally {
    clearTimeout(timer);
  }
}

export interface CentralReceiptsOptions {
  readonly config: PostgresSinkConfig;
  readonly env: NodeJS.ProcessEnv;
  readonly log: Logger;
  readonly metrics: ShipperMetrics;
}

export interface ShippingStart {
  /** this replica's chain id */
  readonly chain: string;
  /** the local log (a sink that can be read back) */
  readonly source: ShipperSource;
  /** the head the local log opened on */
  readonly committedSeq: number;
}

/**
 * A pool on the central store of `receipts.sinks[type=postgres]` (its URL read from the variable
 * the config names). `what` names it to PostgreSQL (application_name) and in the idle-error log.
 */
export function receiptsPool(
  config: PostgresSinkConfig,
  env: NodeJS.ProcessEnv,
  log: Logger,
  max: number,
  what: string,
): { pool: PgPool; url: string } {
  const url = pgUrlFromEnv(env, config.url_env, 'receipts.sinks[type=postgres].url_env');
  const pool = createPgPool(url, {
    max,
    applicationName: `chio-authz ${what}`,
    onError: (err) => log.warn({ err: describe(err) }, `PostgreSQL ${what}: an idle connection failed`),
  });
  return { pool, url };
}

/** The central receipt store of a replica: queries, and the shipper once the chain is known. */
export class CentralReceipts {
  readonly store: PgReceiptStore;
  readonly #pool: PgPool;
  readonly #o: CentralReceiptsOptions;
  #shipper: ReceiptShipper | null = null;

  private constructor(pool: PgPool, options: CentralReceiptsOptions) {
    this.#pool = pool;
    this.#o = options;
    this.store = new PgReceiptStore(pool);
  }

  /** Reads the URL, opens a pool and checks the schema (see the header). */
  static async open(options: CentralReceiptsOptions): Promise<CentralReceipts> {
    const { config, env, log } = options;
    const { pool, url } = receiptsPool(config, env, log, 4, 'receipts');
    try {
      await checkSchemaAtStartup(pool, config.url_env, log);
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
    log.info({ url: redactPgUrl(url) }, 'receipts are shipped to PostgreSQL');
    return new CentralReceipts(pool, options);
  }

  get shipper(): ReceiptShipper | null {
    return this.#shipper;
  }

  /** Starts shipping this replica's chain (once), tailing the first local sink that can be read back. */
  startShippingFrom(sinks: readonly object[], chain: string, committedSeq: number): ReceiptShipper {
    return this.startShipping({ chain, source: requireLocalSource(sinks), committedSeq });
  }

  /** The sinks, plus the retention guard (for the audit trail's pruning; see retentionGuard). */
  guardRetention(sinks: readonly object[]): object[] {
    return [...sinks, this.retentionGuard(requireLocalSource(sinks))];
  }

  /** Starts shipping this replica's chain (once). */
  startShipping(s: ShippingStart): ReceiptShipper {
    if (this.#shipper !== null) throw new TypeError('CentralReceipts: shipping already started');
    const { config, log, metrics } = this.#o;
    this.#shipper = new ReceiptShipper({
      db: this.#pool,
      chain: s.chain,
      source: s.source,
      committedSeq: s.committedSeq,
      log,
      metrics,
      batchSize: config.batch_size,
      bufferLimit: config.buffer_receipts,
    });
    this.#shipper.start();
    return this.#shipper;
  }

  /**
   * A prune target for retention (./../retention.ts): it deletes nothing and caps pruning at the
   * last shipped seq, so receipts not in PostgreSQL yet stay in the local log. Passed to the audit
   * trail beside the sinks (it is not a sink: writing to it is a programmer error).
   */
  retentionGuard(local: Pick<ReceiptSource, 'iterateBySeq'>): ReceiptSink & ReceiptSource & { prunableThrough(seq: number): Promise<number> } {
    const notASink = (): never => {
      throw new TypeError('the PostgreSQL retention guard is not a receipt sink');
    };
    return {
      name: 'postgres-retention-guard',
      open: async () => notASink(),
      write: async () => notASink(),
      rewind: async () => notASink(),
      close: async () => undefined,
      iterateBySeq: (fromSeq: number, toSeq?: number): AsyncIterable<ReceiptRecord> => local.iterateBySeq(fromSeq, toSeq),
      pruneThrough: async () => 0,
      prunableThrough: async (seq: number) => (this.#shipper === null ? 0 : this.#shipper.prunableThrough(seq)),
    };
  }

  /** Ships what it can within `drainMs`, then closes (what is left ships after the next start). */
  async close(drainMs = 2000): Promise<void> {
    await this.#shipper?.close(drainMs);
    await endWithin(this.#pool);
  }
}

/** Shared revocations from chio.yaml `revocations` (null when not configured). */
export async function startSharedRevocations(config: RevocationsConfig | undefined, env: NodeJS.ProcessEnv, log: Logger): Promise<PgRevocations | null> {
  if (config === undefined) return null;
  const url = pgUrlFromEnv(env, config.url_env, 'revocations.url_env');
  const pool = createPgPool(url, { max: 1, applicationName: 'chio-authz schema check' });
  try {
    await checkSchemaAtStartup(pool, config.url_env, log);
  } finally {
    await pool.end().catch(() => undefined);
  }
  return PgRevocations.start({ url, log, pollMs: config.poll_seconds * 1000 });
}

/** `receipts.sinks[type=postgres]` opened (null when not configured), its metrics on `metrics` with label sink=postgres. */
export async function openCentralReceipts(
  config: PostgresSinkConfig | null,
  env: NodeJS.ProcessEnv,
  log: Logger,
  metrics: Pick<Metrics, 'receiptShippingLag' | 'receiptShippingLagSeconds' | 'receiptsShipped' | 'receiptSinkErrors'>,
): Promise<CentralReceipts | null> {
  if (config === null) return null;
  const sink = { sink: 'postgres' } as const;
  metrics.receiptSinkErrors.inc(sink, 0); // exists at 0, so the first shipping error shows in increase()
  return CentralReceipts.open({
    config,
    env,
    log,
    metrics: {
      lag: (receipts, seconds) => {
        metrics.receiptShippingLag.set(sink, receipts);
        metrics.receiptShippingLagSeconds.set(sink, seconds);
      },
      shipped: (n) => metrics.receiptsShipped.inc(sink, n),
      error: () => metrics.receiptSinkErrors.inc(sink),
    },
  });
}

/** The first local sink that can be read back (what the shipper tails); null when none can. */
export function localReceiptSource(sinks: readonly object[]): ReceiptSource | null {
  return sinks.find((s): s is ReceiptSource => isReceiptSource(s)) ?? null;
}

function requireLocalSource(sinks: readonly object[]): ReceiptSource {
  const source = localReceiptSource(sinks);
  if (source === null) throw new ChioError('config_invalid', 'a postgres sink needs a local sink that can be read back (jsonl or sqlite) in receipts.sinks');
  return source;
}
