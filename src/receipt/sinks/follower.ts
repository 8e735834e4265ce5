/**
 * A receipt store that follows the JSONL file (SPEC §2.1 `receipts.sinks`, §6; README "Receipts").
 *
 * When a JSONL sink is configured, it is where a receipt becomes durable (strict: fdatasync before
 * the answer). A SQLite store beside it is an index of that file for the query API, and is written
 * off the answer path: the receipt writer hands it each batch once the JSONL file committed it
 * (`append`), and the store commits what has queued up as one transaction, at the latest after
 * `maxDelayMs` or as soon as `maxBatch` receipts wait. One SQLite transaction per batch of the
 * group commit (~12 receipts under load) cost ~42 µs of CPU per receipt on the bench machine, one per
 * 1,024 receipts ~17 µs (bench/sqlite-batch.mjs): the indexes rewrite their hot pages once per transaction.
 *
 * What stays as it was:
 * - admission still depends on the store: while a write of it has failed, the writer retries the
 *   queue before each batch (`ready`), and while that fails the batch fails (`receipts.on_failure`);
 *   nothing more is queued meanwhile, so the queue holds at most what was committed before the
 *   failure showed, and `maxQueued` bounds it otherwise (the writer waits: back-pressure);
 * - reads (query API, checkpoints, retention, export) first write what is queued, so they see every
 *   receipt committed before the read began;
 * - a crash loses at most the queued rows of the store, never a receipt: the JSONL file holds them,
 *   and the store is backfilled from it at the next start (./reconcile.ts). So the store's commits
 *   skip the fsync (`synchronous = NORMAL`), except on `flush`.
 */
import { ChioError, describe } from '../../errors.js';
import type { ReceiptPage, ReceiptQuery } from '../query.js';
import type { ChainHead, SealedReceipt } from '../receipt.js';
import type { ReceiptRecord, ReceiptStore } from '../store.js';
import { callHook } from '../writer.js';
import { JsonlSink } from './jsonl.js';
import type { ReceiptSink } from './sink.js';
import { SqliteSink } from './sqlite.js';

/** What the follower writes to: a sink whose receipts can be read back (./sqlite.ts SqliteSink). */
export type FollowedStore = ReceiptSink & ReceiptStore & { readonly path: string };

export interface FollowingStoreOptions {
  /** a queue this long is written at once (default 1024) */
  readonly maxBatch?: number;
  /** the longest a committed receipt waits before it is written (default 50 ms) */
  readonly maxDelayMs?: number;
  /** `ready()` waits for the store while this many receipts are queued (default 8,192: ~20 MB of receipts) */
  readonly maxQueued?: number;
  /** each failed write of the store, with its error */
  readonly onError?: (err: unknown) => void;
  /** after a failed write, the queue is retried this long after (default 5 s), then twice as long each time, up to 60 s */
  readonly retryMs?: number;
}

const RETRY_MAX_MS = 60_000;

export const FOLLOWER_DEFAULTS = { maxBatch: 1024, maxDelayMs: 50, maxQueued: 8192, retryMs: 5000 } as const;

export class FollowingStore implements ReceiptStore {
  readonly name: string;
  readonly path: string;
  readonly #store: FollowedStore;
  readonly #maxBatch: number;
  readonly #maxDelayMs: number;
  readonly #maxQueued: number;
  readonly #onError: (err: unknown) => void;
  readonly #retryMs: number;
  /** the wait before the next retry of a failing store */
  #retryDelay: number;

  #queue: SealedReceipt[] = [];
  #inFlight: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** the last write failed (its receipts are queued again) */
  #failure: unknown = null;
  /** receipts appended / written so far: `drain` waits until written reaches appended */
  #appended = 0;
  #written = 0;
  /** every write so far was synced by a flush */
  #synced = true;
  #closed = false;

  constructor(store: FollowedStore, options: FollowingStoreOptions = {}) {
    this.#store = store;
    this.name = store.name;
    this.path = store.path;
    this.#maxBatch = options.maxBatch ?? FOLLOWER_DEFAULTS.maxBatch;
    this.#maxDelayMs = options.maxDelayMs ?? FOLLOWER_DEFAULTS.maxDelayMs;
    this.#maxQueued = options.maxQueued ?? FOLLOWER_DEFAULTS.maxQueued;
    this.#onError = options.onError ?? (() => undefined);
    this.#retryMs = options.retryMs ?? FOLLOWER_DEFAULTS.retryMs;
    this.#retryDelay = this.#retryMs;
  }

  /** receipts committed by the JSONL file and not yet written here */
  get lag(): number {
    return this.#appended - this.#written;
  }

  /**
   * Before the writer commits a batch: resolves at once while the store keeps up; otherwise (its
   * last write failed, or `maxQueued` receipts wait) writes the queue and resolves when that
   * worked. Rejects with ChioError io_error when it did not: the batch must not be committed.
   */
  async ready(): Promise<void> {
    if (this.#failure === null && this.#queue.length < this.#maxQueued) return;
    try {
      await this.drain();
    } catch (err) {
      throw new ChioError('io_error', `receipt sink ${this.name} failed: ${describe(err)}`, { cause: err });
    }
  }

  /** Queues receipts the durable sinks committed (seq order, continuing the previous ones). */
  append(receipts: readonly SealedReceipt[]): void {
    if (receipts.length === 0) return;
    if (this.#closed) throw new TypeError(`FollowingStore ${this.path} is closed`);
    for (const r of receipts) this.#queue.push(r);
    this.#appended += receipts.length;
    if (this.#failure !== null) return; // the writer's next ready() retries
    if (this.#queue.length >= this.#maxBatch) this.#kick();
    else this.#kickAfter(this.#maxDelayMs);
  }

  /** Writes everything appended before the call; rejects with the store's error when a write fails. */
  async drain(): Promise<void> {
    const target = this.#appended;
    while (this.#written < target && (this.#inFlight !== null || this.#queue.length > 0)) await this.#writeQueue();
  }

  /**
   * Writes what is queued and commits with fsync (shutdown, `ReceiptWriter.flush`): one durable
   * write after the others (a WAL fsync covers every earlier commit), through the same one-at-a-time
   * path, so it never runs beside another write of the store.
   */
  async flush(): Promise<void> {
    await this.drain();
    while (this.#inFlight !== null) await this.#inFlight; // a write started meanwhile (a full queue, a read)
    await this.#writeQueue(true);
  }

  /** Writes what is queued (best effort: a failure is reported and the store closed anyway), then closes the store. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearTimer();
    try {
      await this.flush();
    } catch {
      // reported through onError; the JSONL file holds the receipts and the next start backfills them
    }
    await this.#store.close();
  }

  // ---- ReceiptStore: each read first writes what is queued ----

  async head(): Promise<ChainHead | null> {
    await this.#caughtUp();
    return this.#store.head();
  }

  async firstSeq(): Promise<number | null> {
    await this.#caughtUp();
    return this.#store.firstSeq();
  }

  async query(q: ReceiptQuery): Promise<ReceiptPage> {
    await this.#caughtUp();
    return this.#store.query(q);
  }

  async get(id: string): Promise<string | null> {
    await this.#caughtUp();
    return this.#store.get(id);
  }

  async *iterateBySeq(fromSeq: number, toSeq?: number): AsyncIterable<ReceiptRecord> {
    await this.#caughtUp();
    yield* this.#store.iterateBySeq(fromSeq, toSeq);
  }

  async pruneThrough(seq: number): Promise<number> {
    await this.#caughtUp();
    return this.#store.pruneThrough(seq);
  }

  // ---- internals ----

  /** Reads see what was committed before them; a store that cannot be written is still read as it is. */
  async #caughtUp(): Promise<void> {
    await this.drain().catch(() => undefined);
  }

  /** Starts a write in the background (the timer, a full queue); its failure is reported, not thrown. */
  #kick(): void {
    this.#writeQueue().catch(() => undefined);
  }

  /**
   * The write in flight, or a new one of the whole queue; settles when it is done. `durable`: with
   * fsync (an empty write then syncs what the unsynced commits left in the WAL), skipped when
   * nothing is queued and every commit so far was synced.
   */
  #writeQueue(durable = false): Promise<void> {
    if (this.#inFlight !== null) return this.#inFlight;
    this.#clearTimer();
    const batch = this.#queue;
    if (batch.length === 0 && !(durable && !this.#synced)) return Promise.resolve();
    this.#queue = [];
    const run = (async () => {
      try {
        if (!durable) this.#synced = false;
        await this.#store.write(batch, durable);
        if (durable) this.#synced = true;
        this.#written += batch.length;
        this.#failure = null;
        this.#retryDelay = this.#retryMs;
      } catch (err) {
        this.#queue = batch.concat(this.#queue); // the store rewrites them (it deletes unconfirmed rows first)
        this.#failure = err;
        // also retried without traffic (batches and reads retry at once), so an idle store catches up once it can write
        if (!this.#closed) {
          this.#clearTimer();
          this.#kickAfter(this.#retryDelay).unref();
          this.#retryDelay = Math.min(this.#retryDelay * 2, RETRY_MAX_MS);
        }
        callHook(() => this.#onError(err), 'CHIO_RECEIPT_FOLLOWER_HOOK');
        throw err;
      } finally {
        this.#inFlight = null;
      }
      // receipts appended while this write ran: on to the next one when enough have queued
      if (this.#queue.length >= this.#maxBatch) this.#kick();
      else if (this.#queue.length > 0 && !this.#closed) this.#kickAfter(this.#maxDelayMs);
    })();
    this.#inFlight = run;
    return run;
  }

  /** A background write in `ms`, unless one is already scheduled; the timer. */
  #kickAfter(ms: number): NodeJS.Timeout {
    this.#timer ??= setTimeout(() => {
      this.#timer = null;
      this.#kick();
    }, ms);
    return this.#timer;
  }

  #clearTimer(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }
}

/**
 * The opened sinks split for the receipt writer: with a JSONL file among them, every SQLite store
 * follows (`followers`, written off the answer path) and the JSONL files are the `primaries` (a
 * receipt is durable once they hold it); without one, every sink is a primary. `stores` is what
 * reads receipts back (checkpoints, retention, shipping, the query API): the primaries first, so
 * the first readable source is never a store that may have fallen behind, then the followers.
 */
export function followTheLog(
  sinks: readonly ReceiptSink[],
  o: { readonly onError: (sink: string, err: unknown) => void; readonly options?: Omit<FollowingStoreOptions, 'onError'> },
): { primaries: ReceiptSink[]; followers: FollowingStore[]; stores: Array<ReceiptSink | FollowingStore> } {
  const hasLog = sinks.some((s) => s instanceof JsonlSink);
  const primaries = sinks.filter((s) => !(hasLog && s instanceof SqliteSink));
  const followers = sinks
    .filter((s): s is SqliteSink => hasLog && s instanceof SqliteSink)
    .map((s) => new FollowingStore(s, { ...o.options, onError: (err) => o.onError(s.name, err) }));
  return { primaries, followers, stores: [...primaries, ...followers] };
}
