/**
 * Receipt shipping to the central PostgreSQL store (SPEC §6; `receipts.sinks: [{type: postgres,
 * url_env: CHIO_PG_URL}]`; README "Several replicas, one PostgreSQL").
 *
 * NOT a sink on the durability path: the local log (JSONL or SQLite) stays the source of truth of
 * this replica's chain and decisions never wait for PostgreSQL. The shipper tails it:
 *
 * - the receipt writer hands it every committed batch (`committed`, from `onCommitted`: receipts
 *   that are never rewound); it keeps them in a bounded buffer and ships them in batches (one
 *   multi-row INSERT each, ./insert.ts), idempotent on (chain, seq), fork-checked;
 * - where it stands is read back from PostgreSQL (the chain's newest seq) at start and after every
 *   failure, so a restart, a crash mid-batch or an outage resumes exactly after the last receipt
 *   the store holds;
 * - what is not in the buffer (after a restart, or when an outage overflowed it) is read again
 *   from the local log (`iterateBySeq`) from the last shipped seq;
 * - failures are retried with exponential backoff and jitter (100 ms … 30 s); they are counted
 *   and logged (at most once a minute while they last), never thrown at the Check path;
 * - retention must not prune what is not shipped: `prunableThrough(seq)` caps pruning at the
 *   last shipped seq (it is passed to retention as one more prune target).
 *
 * Lag (`chio_receipt_shipping_lag_receipts`/`_seconds`) = committed but not yet in PostgreSQL.
 */
import type { Logger } from '../../check/pipeline.js';
import { ChioError, describe } from '../../errors.js';
import type { SealedReceipt } from '../receipt.js';
import type { ReceiptRecord } from '../store.js';
import { CommitTimes } from './commit-times.js';
import { pgError, type PgQueryable } from './connection.js';
import { centralChainHead, insertReceipts, registerChain } from './insert.js';
import { receiptRow, sealedRow, type ReceiptRow } from './receipt-row.js';

export interface ShipperSource {
  /** the local log's receipts with fromSeq <= seq <= toSeq, in seq order */
  iterateBySeq(fromSeq: number, toSeq?: number): AsyncIterable<ReceiptRecord>;
}

export interface ShipperMetrics {
  /** receipts committed locally and not yet in PostgreSQL, and the age of the oldest of them */
  lag(receipts: number, seconds: number): void;
  shipped(count: number): void;
  error(): void;
}

export interface ShipperOptions {
  /** a pool (or one client) on the central store */
  readonly db: PgQueryable;
  /** this replica's chain id */
  readonly chain: string;
  /** the local log */
  readonly source: ShipperSource;
  /** the head the local log opened on (everything up to it is committed) */
  readonly committedSeq: number;
  readonly log: Logger;
  readonly metrics?: ShipperMetrics;
  readonly clock?: () => number;
  /** receipts per INSERT (default 1000) */
  readonly batchSize?: number;
  /** receipts kept in memory for the next batches; beyond it they are read from the local log (default 20,000) */
  readonly bufferLimit?: number;
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** how often the lag gauges are refreshed while idle (default 1 s) */
  readonly lagIntervalMs?: number;
}

const DEFAULTS = { batchSize: 1000, bufferLimit: 20_000, minBackoffMs: 100, maxBackoffMs: 30_000, lagIntervalMs: 1000 } as const;
const ERROR_LOG_INTERVAL_MS = 60_000;
/** How long close() waits for a batch in flight after the drain. */
const CLOSE_WAIT_MS = 1000;

export class ReceiptShipper {
  readonly #o: ShipperOptions;
  readonly #clock: () => number;
  readonly #batchSize: number;
  readonly #bufferLimit: number;
  /** the newest seq known to be in PostgreSQL; null until first read back */
  #shipped: number | null = null;
  /** read the position back from PostgreSQL before the next batch (at start, after any failure) */
  #resumeNeeded = true;
  /** the chain hash of receipt #shipped (what the next one must name), when known */
  #shippedHash: string | null = null;
  #committed: number;
  /** committed receipts after #shipped, contiguous (seq order), at most bufferLimit */
  #buffer: SealedReceipt[] = [];
  /** when the receipts not shipped yet were committed (lag seconds: the oldest one's age) */
  readonly #commitTimes = new CommitTimes();
  #running: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  /** new receipts end the current sleep (not while backing off after a failure) */
  #wakeOnCommit = false;
  #closed = false;
  #failures = 0;
  #lastErrorLog = Number.NEGATIVE_INFINITY;
  #lagTimer: NodeJS.Timeout | null = null;
  /** a fork was found: shipping this chain stopped (needs an operator) */
  #diverged: ChioError | null = null;

  constructor(options: ShipperOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    this.#batchSize = options.batchSize ?? DEFAULTS.batchSize;
    this.#bufferLimit = options.bufferLimit ?? DEFAULTS.bufferLimit;
    this.#committed = options.committedSeq;
    // receipts committed before this process started are at least as old as its start
    if (this.#committed > 0) this.#commitTimes.committed(1, this.#clock());
  }

  get chain(): string {
    return this.#o.chain;
  }

  /** the newest seq known to be in PostgreSQL (null: not known yet) */
  get shippedSeq(): number | null {
    return this.#shipped;
  }

  get committedSeq(): number {
    return this.#committed;
  }

  /** Starts shipping in the background (never throws: an unreachable store is retried). */
  start(): void {
    if (this.#running !== null || this.#closed) return;
    this.#running = this.#loop();
    const interval = this.#o.lagIntervalMs ?? DEFAULTS.lagIntervalMs;
    this.#lagTimer = setInterval(() => this.#reportLag(), interval);
    this.#lagTimer.unref();
  }

  /** The receipt writer's onCommitted hook: these receipts are in the local log for good. */
  committed(batch: readonly SealedReceipt[]): void {
    const last = batch[batch.length - 1];
    const first = batch[0];
    if (last === undefined || first === undefined || this.#closed) return;
    // no receipt object is touched here (it is parsed lazily): this runs right after each group commit
    // The buffer stays contiguous: it takes a batch only when it continues its tail (or, empty, the
    // last shipped receipt) and fits; anything else is read back from the local log when its turn comes.
    const tail = this.#buffer[this.#buffer.length - 1];
    const expected = tail !== undefined ? tail.seq + 1 : this.#shipped === null ? null : this.#shipped + 1;
    if (first.seq === expected && this.#buffer.length + batch.length <= this.#bufferLimit) {
      for (const s of batch) this.#buffer.push(s);
    }
    this.#commitTimes.committed(first.seq, this.#clock());
    this.#committed = last.seq;
    if (this.#wakeOnCommit) this.#wakeUp();
  }

  /** Retention: the highest seq ≤ `seq` whose receipts are all in PostgreSQL (0 when not known). */
  async prunableThrough(seq: number): Promise<number> {
    return Math.min(seq, this.#shipped ?? 0);
  }

  /** Retention target protocol: the shipper deletes nothing locally. */
  async pruneThrough(): Promise<number> {
    return 0;
  }

  /** Waits until everything committed so far is shipped, or `timeoutMs` passes; returns whether it was. */
  async drain(timeoutMs: number): Promise<boolean> {
    const target = this.#committed;
    const deadline = this.#clock() + timeoutMs;
    while ((this.#shipped ?? 0) < target && !this.#closed && this.#diverged === null) {
      if (this.#clock() >= deadline) return false;
      this.#wakeUp();
      await sleep(Math.min(20, Math.max(1, deadline - this.#clock())));
    }
    return (this.#shipped ?? 0) >= target;
  }

  /** Tries to ship what is committed for up to `drainMs`, then stops. What is left ships after the next start. */
  async close(drainMs = 2000): Promise<void> {
    if (this.#closed) return;
    if (drainMs > 0 && this.#running !== null) await this.drain(drainMs);
    this.#closed = true;
    if (this.#lagTimer !== null) clearInterval(this.#lagTimer);
    this.#wakeUp();
    // a batch in flight ends with its query (bounded by the connection's timeouts); never wait longer than that here
    await Promise.race([this.#running, sleep(CLOSE_WAIT_MS)]);
  }

  // ---- the loop ----

  async #loop(): Promise<void> {
    let backoff = this.#o.minBackoffMs ?? DEFAULTS.minBackoffMs;
    while (!this.#closed) {
      try {
        if (this.#diverged !== null) {
          // needs an operator; look again now and then (the error is logged again if it persists)
          await this.#idle(ERROR_LOG_INTERVAL_MS, false);
          this.#diverged = null;
          this.#resumeNeeded = true;
        }
        if (this.#resumeNeeded) await this.#resume();
        if ((this.#shipped ?? 0) >= this.#committed) {
          this.#reportLag();
          await this.#idle(null, true);
          continue;
        }
        await this.#shipNext();
        backoff = this.#o.minBackoffMs ?? DEFAULTS.minBackoffMs;
        if (this.#failures > 0) {
          this.#o.log.info({ chain: this.#o.chain, failures: this.#failures, lag: this.#committed - (this.#shipped ?? 0) }, 'receipt shipping to PostgreSQL resumed');
          this.#failures = 0;
        }
      } catch (err) {
        if (this.#closed) break;
        const error = pgError(err, `shipping receipts of chain ${this.#o.chain} to PostgreSQL failed`);
        this.#failures++;
        this.#o.metrics?.error();
        if (error.code === 'receipt_chain_broken') this.#diverged = error;
        this.#logError(error);
        this.#resumeNeeded = true; // read the position back before the next attempt
        this.#reportLag();
        await this.#idle(backoff * (0.5 + Math.random() / 2), false);
        backoff = Math.min(backoff * 2, this.#o.maxBackoffMs ?? DEFAULTS.maxBackoffMs);
      }
    }
  }

  /** Reads back where this chain stands in PostgreSQL (registering it when new). */
  async #resume(): Promise<void> {
    const db = this.#o.db;
    let head = await centralChainHead(db, this.#o.chain);
    if (head === null) {
      const first = await this.#firstLocal();
      await registerChain(db, this.#o.chain, first?.seq ?? 1, first?.prevHash ?? null);
      if (first !== null && first.seq > 1) {
        this.#o.log.warn(
          { chain: this.#o.chain, firstSeq: first.seq },
          'the local receipt log no longer holds the start of its chain; the central store starts this chain where the log does',
        );
      }
      head = await centralChainHead(db, this.#o.chain);
      if (head === null) throw new ChioError('io_error', `chain ${this.#o.chain} could not be registered in PostgreSQL`);
    }
    const shipped = head.seq ?? head.firstSeq - 1;
    const shippedHash = head.seq === null ? head.firstPrevHash : head.hash;
    if (shipped > this.#committed) {
      throw new ChioError(
        'receipt_chain_broken',
        `chain ${this.#o.chain}: PostgreSQL holds receipts up to seq ${shipped}, but the local log ends at seq ${this.#committed} (was the local log replaced?)`,
      );
    }
    // before taking the central head as ours: a fork must not count as shipped (retention would prune it)
    if (head.seq !== null) await this.#checkSameHead(shipped, shippedHash);
    this.#shipped = shipped;
    this.#shippedHash = shippedHash;
    this.#resumeNeeded = false;
    this.#dropShipped();
  }

  /**
   * The local log must hold, at the central head, the very receipt PostgreSQL holds there: another
   * history of the same length under this chain id (a cloned or restored data volume) is a fork,
   * refused here; it surfaced only at the next commit, and retention could meanwhile delete local
   * receipts the central store never held.
   */
  async #checkSameHead(seq: number, hash: string | null): Promise<void> {
    if (seq < 1 || hash === null) return;
    for await (const r of this.#o.source.iterateBySeq(seq, seq)) {
      if (r.seq !== seq) return; // not held locally any more (pruned): nothing to compare
      const local = receiptRow(r.jcs, this.#o.chain);
      if (local.hash !== hash) {
        throw new ChioError(
          'receipt_chain_broken',
          `chain ${this.#o.chain}: PostgreSQL holds ${hash} at seq ${seq}, but the local log holds ${local.hash} there (a fork: was the data volume cloned or restored?)`,
        );
      }
      return;
    }
  }

  async #firstLocal(): Promise<ReceiptRow | null> {
    for await (const r of this.#o.source.iterateBySeq(1, this.#committed)) return receiptRow(r.jcs, this.#o.chain);
    return null;
  }

  /** Ships the next batch after #shipped: from the buffer when it continues there, else from the local log. */
  async #shipNext(): Promise<void> {
    const from = (this.#shipped ?? 0) + 1;
    const to = Math.min(this.#committed, from + this.#batchSize - 1);
    const rows =
      this.#buffer[0]?.seq === from
        ? this.#buffer.slice(0, to - from + 1).map((s) => sealedRow(s, this.#o.chain))
        : (await this.#readLocal(from, to)).map((t) => receiptRow(t, this.#o.chain));
    this.#checkContinues(rows, from);
    await insertReceipts(this.#o.db, this.#o.chain, rows);
    const last = rows[rows.length - 1] as ReceiptRow;
    this.#shipped = last.seq;
    this.#shippedHash = last.hash;
    this.#dropShipped();
    this.#o.metrics?.shipped(rows.length);
    this.#reportLag();
  }

  async #readLocal(from: number, to: number): Promise<string[]> {
    const texts: string[] = [];
    for await (const r of this.#o.source.iterateBySeq(from, to)) texts.push(r.jcs);
    return texts;
  }

  /** The batch must be seq from, from+1, … and chain from the receipt the store holds last. */
  #checkContinues(rows: readonly ReceiptRow[], from: number): void {
    const first = rows[0];
    if (first === undefined || first.seq !== from) {
      throw new ChioError(
        'receipt_chain_broken',
        `chain ${this.#o.chain}: receipt seq ${from} is not in the local log (${first === undefined ? 'it ends before it' : `it continues at seq ${first.seq}`}); it was pruned or lost before it was shipped`,
      );
    }
    if (this.#shippedHash !== null && first.prevHash !== this.#shippedHash) {
      throw new ChioError(
        'receipt_chain_broken',
        `chain ${this.#o.chain} forked: local receipt ${first.id} (seq ${first.seq}) names prevHash ${String(first.prevHash)}, the central store's seq ${from - 1} hashes to ${this.#shippedHash}`,
      );
    }
    rows.forEach((r, i) => {
      if (r.seq !== from + i) throw new ChioError('receipt_chain_broken', `chain ${this.#o.chain}: the local log skips from seq ${from + i - 1} to ${r.seq}`);
      const prev = rows[i - 1];
      if (prev !== undefined && r.prevHash !== prev.hash) {
        throw new ChioError('receipt_chain_broken', `chain ${this.#o.chain}: local receipt ${r.id} (seq ${r.seq}) does not name seq ${prev.seq} as its prevHash`);
      }
    });
  }

  #dropShipped(): void {
    const shipped = this.#shipped ?? 0;
    let drop = 0;
    while (drop < this.#buffer.length && (this.#buffer[drop] as SealedReceipt).seq <= shipped) drop++;
    if (drop > 0) this.#buffer = this.#buffer.slice(drop);
    if (shipped >= this.#committed) this.#commitTimes.clear();
    else this.#commitTimes.shippedThrough(shipped);
  }

  #reportLag(): void {
    const receipts = Math.max(0, this.#committed - (this.#shipped ?? 0));
    const oldest = this.#commitTimes.oldestAfter(this.#shipped ?? 0);
    const seconds = receipts === 0 || oldest === null ? 0 : Math.max(0, (this.#clock() - oldest) / 1000);
    this.#o.metrics?.lag(receipts, seconds);
  }

  #logError(err: ChioError): void {
    const now = this.#clock();
    if (now - this.#lastErrorLog < ERROR_LOG_INTERVAL_MS && this.#failures > 1) return;
    this.#lastErrorLog = now;
    this.#o.log.error(
      { chain: this.#o.chain, code: err.code, err: describe(err), failures: this.#failures, lag: this.#committed - (this.#shipped ?? 0) },
      err.code === 'receipt_chain_broken'
        ? 'receipt shipping to PostgreSQL stopped: the chain does not match the central store (decisions go on; the local log keeps every receipt)'
        : 'receipt shipping to PostgreSQL failed; retrying with backoff (decisions go on; the local log keeps every receipt)',
    );
  }

  /** Sleeps until `ms` passes (null: no limit), close, or — when `onCommit` — new receipts. */
  #idle(ms: number | null, onCommit: boolean): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#wakeOnCommit = onCommit;
    return new Promise((resolve) => {
      const timer = ms === null ? null : setTimeout(done, ms);
      const self = this;
      function done(): void {
        if (timer !== null) clearTimeout(timer);
        self.#wake = null;
        self.#wakeOnCommit = false;
        resolve();
      }
      this.#wake = done;
    });
  }

  #wakeUp(): void {
    this.#wake?.();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
