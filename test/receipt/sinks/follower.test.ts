/**
 * A SQLite store that follows the JSONL file (src/receipt/sinks/follower.ts): batched off the
 * answer path, read-your-writes, failures that hold admission until the store catches up, and the
 * split of the configured sinks.
 */
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChioError } from '../../../src/errors.js';
import type { ChainHead, SealedReceipt } from '../../../src/receipt/receipt.js';
import { FollowingStore, followTheLog, type FollowedStore } from '../../../src/receipt/sinks/follower.js';
import { JsonlSink } from '../../../src/receipt/sinks/jsonl.js';
import { SqliteSink } from '../../../src/receipt/sinks/sqlite.js';
import { ReceiptWriter } from '../../../src/receipt/writer.js';
import { pendingReceipts, sealedReceipts, tempDir } from '../helpers.js';

const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

async function sqliteStore(): Promise<{ sink: SqliteSink; file: string }> {
  const file = path.join(tempDir(), 'receipts.db');
  const sink = new SqliteSink(file);
  await sink.open();
  return { sink, file };
}

function storedSeqs(file: string): number[] {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return (db.prepare('SELECT seq FROM receipts ORDER BY seq').all() as Array<{ seq: number }>).map((r) => r.seq);
  } finally {
    db.close();
  }
}

/** A store whose writes are recorded and can be made to fail. */
class RecordingStore implements Pick<FollowedStore, 'write' | 'close'> {
  /** each write's seqs; [-1] for an empty durable one (an fsync); durable writes of receipts end with -1 */
  readonly writes: number[][] = [];
  fail: Error | null = null;
  inFlight = 0;
  maxInFlight = 0;
  async write(batch: readonly SealedReceipt[], durable: boolean): Promise<void> {
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      await new Promise((r) => setImmediate(r));
      if (this.fail) throw this.fail;
      this.writes.push(durable ? [...batch.map((s) => s.seq), -1] : batch.map((s) => s.seq));
    } finally {
      this.inFlight--;
    }
  }
  async close(): Promise<void> {}
}

function follow(store: RecordingStore, o: { maxBatch?: number; maxDelayMs?: number; maxQueued?: number; retryMs?: number; errors?: unknown[] } = {}): FollowingStore {
  const f = new FollowingStore(Object.assign(store, { name: 'sqlite', path: 'mem' }) as unknown as FollowedStore, {
    maxBatch: o.maxBatch,
    maxDelayMs: o.maxDelayMs,
    maxQueued: o.maxQueued,
    retryMs: o.retryMs,
    onError: (err) => o.errors?.push(err),
  });
  open.push(f);
  return f;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('FollowingStore', () => {
  it('writes what queued as one batch after maxDelayMs, or at once when maxBatch receipts wait', async () => {
    const store = new RecordingStore();
    const f = follow(store, { maxBatch: 4, maxDelayMs: 30 });
    const r = sealedReceipts(7);
    f.append(r.slice(0, 1));
    f.append(r.slice(1, 3));
    expect(f.lag).toBe(3);
    await sleep(5);
    expect(store.writes).toEqual([]);
    await vi.waitFor(() => expect(store.writes).toEqual([[1, 2, 3]]));
    expect(f.lag).toBe(0);
    f.append(r.slice(3, 7)); // 4 = maxBatch: written without the timer
    await vi.waitFor(() =>
      expect(store.writes).toEqual([
        [1, 2, 3],
        [4, 5, 6, 7],
      ]),
    );
  });

  it('reads first write what is queued (read-your-writes); flush() also commits with fsync', async () => {
    const { sink, file } = await sqliteStore();
    const f = new FollowingStore(sink, { maxDelayMs: 60_000 });
    open.push(f);
    const r = sealedReceipts(3);
    f.append(r);
    expect(storedSeqs(file)).toEqual([]);
    expect(await f.get(r[1]?.receipt.id ?? '')).toBe(r[1]?.jcs);
    expect(storedSeqs(file)).toEqual([1, 2, 3]);
    const more = sealedReceipts(2, { seq: 3, hash: r[2]?.hash ?? '' });
    f.append(more);
    const seen: number[] = [];
    for await (const rec of f.iterateBySeq(1)) seen.push(rec.seq);
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    expect((await f.head())?.seq).toBe(5);
  });

  it('a failed write is reported, keeps its receipts queued, and ready() retries them: rejecting while the store fails', async () => {
    const store = new RecordingStore();
    const errors: unknown[] = [];
    const f = follow(store, { maxDelayMs: 1, errors });
    const r = sealedReceipts(4);
    store.fail = new Error('SQLITE_FULL: database or disk is full');
    f.append(r.slice(0, 2));
    await vi.waitFor(() => expect(errors).toEqual([store.fail]));
    f.append(r.slice(2, 3)); // queued; no new attempt until the writer asks
    await sleep(30);
    expect(errors).toHaveLength(1);
    const refused = await f.ready().then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(ChioError);
    expect(refused).toMatchObject({ code: 'io_error', message: 'receipt sink sqlite failed: SQLITE_FULL: database or disk is full' });
    expect(errors).toHaveLength(2);
    expect(f.lag).toBe(3);

    store.fail = null;
    await f.ready();
    expect(store.writes).toEqual([[1, 2, 3]]);
    expect(f.lag).toBe(0);
    f.append(r.slice(3));
    await f.ready(); // keeping up: resolves without writing
    expect(store.writes).toEqual([[1, 2, 3]]);
  });

  it('a failing store is retried without traffic, backing off, until it writes again', async () => {
    const store = new RecordingStore();
    const errors: unknown[] = [];
    const f = follow(store, { maxDelayMs: 1, retryMs: 20, errors });
    store.fail = new Error('disk I/O error');
    f.append(sealedReceipts(2));
    await vi.waitFor(() => expect(errors).toHaveLength(3)); // the write, then retries after 20 and 40 ms
    store.fail = null;
    await vi.waitFor(() => expect(store.writes).toEqual([[1, 2]]), { timeout: 2000 }); // the next retry, 80 ms on
    expect(f.lag).toBe(0);
    expect(errors).toHaveLength(3);
  });

  it('ready() waits for the store while maxQueued receipts wait (back-pressure)', async () => {
    const store = new RecordingStore();
    const f = follow(store, { maxBatch: 100, maxDelayMs: 60_000, maxQueued: 3 });
    const r = sealedReceipts(3);
    f.append(r.slice(0, 2));
    await f.ready();
    expect(store.writes).toEqual([]);
    f.append(r.slice(2));
    await f.ready();
    expect(store.writes).toEqual([[1, 2, 3]]);
  });

  it('flush() syncs after a write in flight, never beside it, and only when something is unsynced', async () => {
    const store = new RecordingStore();
    const f = follow(store, { maxBatch: 2, maxDelayMs: 60_000 });
    const r = sealedReceipts(3);
    f.append(r.slice(0, 2)); // maxBatch: a write starts at once
    const flushed = f.flush();
    f.append(r.slice(2)); // queued while the first write runs: the sync writes it too
    await flushed;
    expect(store.writes).toEqual([[1, 2], [3, -1]]);
    expect(store.maxInFlight).toBe(1);
    await f.flush(); // nothing unsynced: no write
    expect(store.writes).toHaveLength(2);
  });

  it('close() writes what is queued, syncs, and closes the store', async () => {
    const store = new RecordingStore();
    const f = follow(store, { maxDelayMs: 60_000 });
    f.append(sealedReceipts(2));
    await f.close();
    expect(store.writes).toEqual([[1, 2], [-1]]);
    expect(() => f.append(sealedReceipts(1))).toThrow(TypeError);
  });
});

describe('ReceiptWriter with a following store', () => {
  it('answers once the JSONL file holds a batch; the store gets the committed batches, and a failing store fails the next batch', async () => {
    const dir = tempDir();
    const jsonl = new JsonlSink(path.join(dir, 'receipts.jsonl'));
    await jsonl.open();
    const store = new RecordingStore();
    const errors: unknown[] = [];
    const f = follow(store, { maxDelayMs: 60_000, errors });
    let rewoundTo: ChainHead | null | undefined;
    const writer = new ReceiptWriter([jsonl], { durability: 'strict', head: null, followers: [f], onRewind: (h) => (rewoundTo = h) });
    const p = pendingReceipts(4);
    await Promise.all(p.slice(0, 2).map((x) => writer.submit(x)));
    expect(store.writes).toEqual([]); // answered before the store wrote anything
    expect(f.lag).toBe(2);

    store.fail = new Error('disk I/O error');
    await expect(f.drain()).rejects.toThrow('disk I/O error'); // its write of them fails (here: a read made it write)
    await expect(writer.submit(p[2]!)).rejects.toThrow('receipt sink sqlite failed: disk I/O error');
    expect(errors).toHaveLength(2);
    expect(rewoundTo).toEqual({ seq: 2, hash: p[1]?.hash });

    store.fail = null;
    const again = pendingReceipts(1, { seq: 2, hash: p[1]?.hash ?? '' })[0]!;
    await writer.submit(again); // the batch first had the store write its queue
    expect(store.writes).toEqual([[1, 2]]);
    await writer.close();
    expect(store.writes).toEqual([[1, 2], [3], [-1]]);
  });
});

describe('followTheLog', () => {
  it('with a JSONL file, SQLite stores follow it; without one, they are primaries', () => {
    const dir = tempDir();
    const j = new JsonlSink(path.join(dir, 'r.jsonl'));
    const s = new SqliteSink(path.join(dir, 'r.db'));
    const both = followTheLog([s, j], { onError: () => undefined });
    expect(both.primaries).toEqual([j]);
    expect(both.followers).toHaveLength(1);
    expect(both.stores).toEqual([j, both.followers[0]]); // readers take the first source: the JSONL file
    const alone = followTheLog([s], { onError: () => undefined });
    expect(alone).toEqual({ primaries: [s], followers: [], stores: [s] });
  });
});
