/**
 * Group commit of receipts to the sinks (SPEC §2.1 `receipts.durability`, §6), with one signature
 * per batch (./batch.ts; format: README "Receipts").
 *
 * The pipeline submits pending receipts (body fixed by `ReceiptChain.next`, in decision order);
 * at batch time the writer has the chain seal the batch — leaves, Merkle root, ONE Ed25519
 * signature, each receipt's inclusion proof, the final JCS lines — then writes them to every sink.
 *
 * - strict: `submit()` resolves once the receipt's batch is written and fsynced in every sink.
 *   While one batch is in flight new receipts queue; when it completes the whole queue becomes the
 *   next batch (one signature, one write, one fdatasync per sink). Never more than one write in
 *   flight per sink. Under load batches grow by themselves, so signing and fsync cost less per receipt.
 * - relaxed: `submit()` resolves at once; the queue is written (without fsync) at the latest after
 *   `relaxedMaxDelayMs`, or as soon as it holds `relaxedMaxBatch` receipts. `flush()` fsyncs.
 *
 * Followers (`options.followers`, ./sinks/follower.ts: a SQLite store beside a JSONL file) are not on
 * the answer path: each committed batch is appended to them and they write it soon after. A batch is
 * committed only while every follower keeps up (`Follower.ready`, which retries a follower whose last
 * write failed), so a follower that cannot write fails batches like a sink does.
 *
 * When a sink fails, nothing after the last durable head counts: the failed batch and everything
 * queued behind it are rejected, the sinks that did commit it are rewound (`ReceiptSink.rewind`),
 * and `onRewind(durableHead)` is called synchronously so the chain continues from the last
 * durable receipt. (In relaxed mode those receipts were already
 * acknowledged: relaxed trades them away, and `onSinkError` is how the loss shows.)
 */
import { ChioError, describe } from '../errors.js';
import type { ChainHead, PendingReceipt, SealedReceipt } from './receipt.js';
import type { ReceiptSink } from './sinks/sink.js';

export interface ReceiptWriterOptions {
  readonly durability: 'strict' | 'relaxed';
  /** relaxed mode: the longest a sealed receipt may wait before it is written (default 50 ms) */
  readonly relaxedMaxDelayMs?: number;
  /** relaxed mode: a queue this long is written at once (default 256) */
  readonly relaxedMaxBatch?: number;
  /**
   * The head the sinks hold (what `open()` returned). When omitted, the first submitted receipt
   * defines it (`{seq: seq - 1, hash: prevHash}`).
   */
  readonly head?: ChainHead | null;
  /** called after each batch is written in every sink, with the number of receipts in it */
  readonly onWritten?: (count: number) => void;
  /**
   * Called synchronously after each batch is written in every sink, with its receipts in seq order
   * (strict: and fsynced; relaxed: `durable` false until a flush). Receipts passed here are never
   * rewound. Receipt checkpoints hang off it (./checkpoint.ts).
   */
  readonly onCommitted?: (batch: readonly SealedReceipt[], durable: boolean) => void;
  /** called once per sink whose write failed */
  readonly onSinkError?: (sink: string, err: unknown) => void;
  /**
   * Stores that follow the sinks (./sinks/follower.ts): each committed batch is appended to them,
   * and a batch is committed only while they keep up (`ready`). flush() and close() include them.
   */
  readonly followers?: readonly Follower[];
  /**
   * Called synchronously when a write fails, with the last durable head: the chain must continue
   * from there (the receipts after it were never acknowledged and are discarded).
   */
  readonly onRewind?: (head: ChainHead | null) => void;
}

/** What the writer needs of a following store (./sinks/follower.ts FollowingStore). */
export interface Follower {
  ready(): Promise<void>;
  append(receipts: readonly SealedReceipt[]): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}

interface Pending {
  readonly pending: PendingReceipt;
  /** strict mode only: settles the submit() promise */
  readonly settle: { resolve: () => void; reject: (err: unknown) => void } | null;
}

/** The outcome of one batch; `inFlight` always resolves (never rejects) to one of these. */
type BatchResult = { ok: true } | { ok: false; error: ChioError };

const DEFAULT_RELAXED_MAX_DELAY_MS = 50;
const DEFAULT_RELAXED_MAX_BATCH = 256;
/** What `submit()` returns when there is nothing to wait for (relaxed): callers may skip the await. */
export const ACCEPTED: Promise<void> = Promise.resolve();
/** `undefined`: not known until the first receipt arrives. */
type Tail = ChainHead | null | undefined;

/** A hook that throws must not wedge the writer (or a follower): its error becomes a process warning. */
export function callHook(hook: () => void, code = 'CHIO_RECEIPT_WRITER_HOOK'): void {
  try {
    hook();
  } catch (err) {
    process.emitWarning(err instanceof Error ? err : new Error(String(err)), { code });
  }
}

/** The batch signed by the chain that made it (one signature); a signing failure fails the batch like a sink failure. */
function sealPending(batch: readonly Pending[]): { ok: true; receipts: SealedReceipt[] } | { ok: false; error: ChioError } {
  const first = batch[0];
  if (first === undefined) return { ok: true, receipts: [] };
  try {
    return { ok: true, receipts: first.pending.sealer.sealBatch(batch.map((p) => p.pending)) };
  } catch (err) {
    return { ok: false, error: new ChioError('io_error', `cannot sign the receipt batch (seq ${first.pending.seq}–${first.pending.seq + batch.length - 1}): ${describe(err)}`, { cause: err }) };
  }
}

/** A sink that throws synchronously counts as a failed write, like one that rejects. */
function writeTo(sink: ReceiptSink, receipts: readonly SealedReceipt[], durable: boolean): Promise<void> {
  try {
    return sink.write(receipts, durable);
  } catch (err) {
    return Promise.reject(err);
  }
}

export class ReceiptWriter {
  readonly #sinks: readonly ReceiptSink[];
  readonly #strict: boolean;
  readonly #maxDelayMs: number;
  readonly #maxBatch: number;
  readonly #options: ReceiptWriterOptions;
  readonly #followers: readonly Follower[];

  #queue: Pending[] = [];
  #inFlight: Promise<BatchResult> | null = null;
  #scheduled = false;
  #timer: NodeJS.Timeout | null = null;
  /** relaxed: the oldest queued receipt has waited its maximum; write as soon as possible */
  #due = false;
  /** relaxed: written without fsync since the last durable write */
  #unsynced = false;
  /** flush() calls waiting: every batch started meanwhile is durable */
  #flushing = 0;
  #closed = false;

  /** the last submitted receipt: the next one must chain from it */
  #tail: Tail;
  /** the last receipt written in every sink */
  #durable: Tail;
  /** receipts submitted / settled (written or discarded), and failures, for flush() */
  #submitted = 0;
  #settled = 0;
  #failures = 0;
  /** the last batch failed and none has been committed since (relaxed answers then wait for their write) */
  #failing = false;
  #lastError: ChioError | null = null;

  constructor(sinks: readonly ReceiptSink[], options: ReceiptWriterOptions) {
    if (sinks.length === 0) throw new TypeError('ReceiptWriter needs at least one sink');
    this.#sinks = sinks;
    this.#options = options;
    this.#followers = options.followers ?? [];
    this.#strict = options.durability === 'strict';
    this.#maxDelayMs = options.relaxedMaxDelayMs ?? DEFAULT_RELAXED_MAX_DELAY_MS;
    this.#maxBatch = options.relaxedMaxBatch ?? DEFAULT_RELAXED_MAX_BATCH;
    this.#tail = options.head;
    this.#durable = options.head;
  }

  /**
   * Queues a pending receipt (`ReceiptChain.next`); its batch is signed when it is written.
   * strict: resolves once it is durable in every sink; relaxed: resolves at once (the write
   * follows within relaxedMaxDelayMs), except after a failed write until one succeeds: then it
   * resolves once written, or rejects (so `receipts.on_failure` decides the answer). Rejects if
   * signing or a sink fails; then every receipt queued after the last durable one is rejected too
   * and `durableHead` says where the chain must continue from. Throws TypeError (synchronously) for a receipt that does not chain from the
   * previous one.
   */
  submit(pending: PendingReceipt): Promise<void> {
    if (this.#closed) return Promise.reject(new ChioError('io_error', 'the receipt writer is closed'));
    this.#checkChainsFromTail(pending);
    this.#tail = { seq: pending.seq, hash: pending.hash };
    this.#submitted++;
    if (this.#strict) {
      return new Promise<void>((resolve, reject) => {
        this.#queue.push({ pending, settle: { resolve, reject } });
        this.#scheduleBatch();
      });
    }
    if (this.#failing) {
      // relaxed, but the last write failed: this answer waits for its write, so that
      // receipts.on_failure applies (deny: receipt_unavailable) instead of allows going out unrecorded
      return new Promise<void>((resolve, reject) => {
        this.#queue.push({ pending, settle: { resolve, reject } });
        this.#due = true;
        this.#scheduleBatch();
      });
    }
    this.#queue.push({ pending, settle: null });
    if (this.#queue.length >= this.#maxBatch) {
      this.#due = true;
      this.#scheduleBatch();
    } else if (this.#timer === null) {
      this.#timer = setTimeout(() => this.#onDelayElapsed(), this.#maxDelayMs);
    }
    return ACCEPTED;
  }

  /**
   * The last receipt written in every sink (strict: and fsynced; relaxed: possibly only in the page
   * cache until the next flush). After a failed write the chain continues from here.
   */
  get durableHead(): ChainHead | null {
    return this.#durable ?? null;
  }

  /**
   * Writes everything submitted so far, durably (relaxed batches written without fsync are synced
   * too), and resolves; rejects when a write failed meanwhile (the receipts it covered were discarded).
   */
  async flush(): Promise<void> {
    const target = this.#submitted;
    const failuresBefore = this.#failures;
    this.#flushing++;
    try {
      while ((this.#settled < target || this.#unsynced) && this.#failures === failuresBefore) {
        this.#startBatch();
        const inFlight = this.#inFlight;
        if (inFlight === null) throw new TypeError('ReceiptWriter.flush: nothing in flight while receipts are pending');
        await inFlight;
      }
    } finally {
      this.#flushing--;
    }
    if (this.#failures !== failuresBefore && this.#lastError !== null) throw this.#lastError;
    // the receipts are durable in the sinks; a follower that cannot write reported it (onError) and catches up later
    await Promise.all(this.#followers.map((f) => f.flush().catch(() => undefined)));
  }

  /**
   * Refuses new submissions, flushes what was submitted, then closes every sink (also when the
   * flush failed, whose error is then rethrown).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let flushError: unknown = null;
    try {
      await this.flush();
    } catch (err) {
      flushError = err;
    }
    this.#clearTimer();
    const closed = await Promise.allSettled([...this.#followers, ...this.#sinks].map((s) => s.close()));
    const failed = closed.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (flushError !== null) throw flushError;
    if (failed) throw new ChioError('io_error', `cannot close a receipt sink: ${describe(failed.reason)}`, { cause: failed.reason });
  }

  #checkChainsFromTail(pending: PendingReceipt): void {
    const { seq, prevHash } = pending;
    const tail = this.#tail;
    if (tail === undefined) {
      if (prevHash === null ? seq !== 1 : seq < 2) {
        throw new TypeError(`receipt seq ${seq} with prevHash ${String(prevHash)} does not start or continue a chain`);
      }
      this.#durable = prevHash === null ? null : { seq: seq - 1, hash: prevHash };
      return;
    }
    const expectedSeq = tail === null ? 1 : tail.seq + 1;
    const expectedPrev = tail === null ? null : tail.hash;
    if (seq !== expectedSeq || prevHash !== expectedPrev) {
      throw new TypeError(
        `receipt seq ${seq} (prevHash ${String(prevHash)}) does not follow the writer's tail: expected seq ${expectedSeq} with prevHash ${String(expectedPrev)}`,
      );
    }
  }

  /** Starts a batch after the current synchronous turn, so receipts submitted together share one write. */
  #scheduleBatch(): void {
    if (this.#scheduled || this.#inFlight !== null) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      if (this.#inFlight === null) this.#startBatch();
    });
  }

  #onDelayElapsed(): void {
    this.#timer = null;
    this.#due = true;
    if (this.#inFlight === null) this.#startBatch();
  }

  #clearTimer(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }

  /** Starts the next batch unless one is in flight: the queue, or an empty durable write when a flush must sync. */
  #startBatch(): void {
    if (this.#inFlight !== null) return;
    const flushing = this.#flushing > 0;
    if (this.#queue.length === 0 && !(flushing && this.#unsynced)) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#due = false;
    this.#clearTimer();
    this.#inFlight = this.#runBatch(batch, this.#strict || flushing);
  }

  async #runBatch(batch: Pending[], durable: boolean): Promise<BatchResult> {
    const behind = batch.length > 0 ? await this.#followersReady() : null;
    const sealed = behind ?? sealPending(batch);
    const result = sealed.ok ? await this.#writeToSinks(sealed.receipts, durable) : sealed;
    try {
      if (result.ok && sealed.ok) this.#commit(sealed.receipts, batch, durable);
      else if (!result.ok) this.#discard(batch, result.error);
    } finally {
      this.#inFlight = null;
      this.#afterBatch();
    }
    return result;
  }

  /** null when every follower keeps up; else the failure that keeps this batch from being committed */
  async #followersReady(): Promise<{ ok: false; error: ChioError } | null> {
    if (this.#followers.length === 0) return null;
    const outcomes = await Promise.allSettled(this.#followers.map((f) => f.ready()));
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed === undefined) return null;
    const reason: unknown = failed.reason;
    return { ok: false, error: reason instanceof ChioError ? reason : new ChioError('io_error', `a receipt store failed: ${describe(reason)}`, { cause: reason }) };
  }

  /**
   * Writes one batch to every sink, in parallel, and waits for all of them (one write in flight per
   * sink). When one fails, the sinks that committed the batch are rewound to the durable head, so
   * every sink keeps the same chain.
   */
  async #writeToSinks(receipts: readonly SealedReceipt[], durable: boolean): Promise<BatchResult> {
    const outcomes = await Promise.allSettled(this.#sinks.map((sink) => writeTo(sink, receipts, durable)));
    let error: ChioError | null = null;
    outcomes.forEach((outcome, i) => {
      if (outcome.status === 'fulfilled') return;
      const name = this.#sinks[i]?.name ?? String(i);
      callHook(() => this.#options.onSinkError?.(name, outcome.reason));
      error ??= new ChioError('io_error', `receipt sink ${name} failed: ${describe(outcome.reason)}`, { cause: outcome.reason });
    });
    if (error === null) return { ok: true };
    if (receipts.length > 0) await this.#rewindCommitted(outcomes);
    return { ok: false, error };
  }

  /** Rewinds the sinks whose write succeeded to the durable head; a failed rewind is a sink error too. */
  async #rewindCommitted(outcomes: ReadonlyArray<PromiseSettledResult<void>>): Promise<void> {
    const head = this.#durable ?? null;
    const committed = this.#sinks.filter((_, i) => outcomes[i]?.status === 'fulfilled');
    const rewinds = await Promise.allSettled(committed.map(async (sink) => sink.rewind(head))); // async: a sync throw rejects
    rewinds.forEach((r, i) => {
      if (r.status === 'fulfilled') return;
      const name = committed[i]?.name ?? String(i);
      callHook(() => this.#options.onSinkError?.(name, new ChioError('io_error', `cannot rewind receipt sink ${name} to seq ${head?.seq ?? 0}: ${describe(r.reason)}`, { cause: r.reason })));
    });
  }

  #commit(receipts: readonly SealedReceipt[], batch: readonly Pending[], durable: boolean): void {
    const last = receipts[receipts.length - 1];
    if (last) this.#durable = { seq: last.seq, hash: last.hash };
    this.#unsynced = !durable;
    this.#settled += batch.length;
    this.#failing = false;
    for (const f of this.#followers) callHook(() => f.append(receipts));
    if (batch.length > 0) callHook(() => this.#options.onWritten?.(batch.length));
    if (receipts.length > 0 && this.#options.onCommitted) callHook(() => this.#options.onCommitted?.(receipts, durable));
    for (const p of batch) p.settle?.resolve();
  }

  /** A failed batch: it and everything queued behind it are discarded, and the chain rewinds to the durable head. */
  #discard(batch: readonly Pending[], error: ChioError): void {
    const queued = this.#queue;
    this.#queue = [];
    this.#clearTimer();
    this.#due = false;
    this.#failures++;
    this.#failing = true;
    this.#lastError = error;
    this.#settled += batch.length + queued.length;
    const head = this.#durable ?? null;
    this.#tail = head;
    callHook(() => this.#options.onRewind?.(head));
    const rewound = new ChioError(
      'io_error',
      `receipt discarded: the chain was rewound to seq ${head?.seq ?? 0} after an earlier write failed (${error.message})`,
      { cause: error },
    );
    for (const p of batch) p.settle?.reject(error);
    for (const p of queued) p.settle?.reject(rewound);
  }

  #afterBatch(): void {
    if (this.#queue.length === 0) return;
    if (this.#strict || this.#due || this.#queue.length >= this.#maxBatch) this.#startBatch();
    else if (this.#timer === null) this.#timer = setTimeout(() => this.#onDelayElapsed(), this.#maxDelayMs);
  }
}
