import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { keyFromSeed } from '../../src/keys.js';
import { ReceiptChain, type ChainHead, type ReceiptDraft, type SealedReceipt } from '../../src/receipt/receipt.js';
import { verificationKeys, verifyReceiptText } from '../../src/receipt/verify.js';
import type { ReceiptSink } from '../../src/receipt/sinks/sink.js';
import { ACCEPTED, ReceiptWriter, type ReceiptWriterOptions } from '../../src/receipt/writer.js';

const KEY = keyFromSeed(Buffer.alloc(32, 3));
const DRAFT: ReceiptDraft = {
  verdict: 'deny',
  rule: null,
  tool: null,
  capabilityId: null,
  reasons: [{ code: 'no_matching_rule', message: 'no rule governs the request' }],
  request: { id: null, method: 'GET', host: 'h', path: '/', source: null },
  runtimeAttestation: { tier: 'none', verifier: null, workloadIdentity: null },
  workloadIdentityMatch: null,
  runtimeAssuranceMatch: null,
  policyHash: null,
};

interface Deferred {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A sink whose writes complete when the test says so (or at once in `auto` mode); it records every call. */
class FakeSink implements ReceiptSink {
  readonly writes: Array<{ seqs: number[]; durable: boolean }> = [];
  readonly batches: Array<readonly SealedReceipt[]> = [];
  readonly pending: Deferred[] = [];
  readonly rewinds: Array<ChainHead | null> = [];
  inFlight = 0;
  maxInFlight = 0;
  closed = false;
  constructor(
    readonly name: string,
    private readonly auto = false,
  ) {}
  async open(): Promise<ChainHead | null> {
    return null;
  }
  write(batch: readonly SealedReceipt[], durable: boolean): Promise<void> {
    this.writes.push({ seqs: batch.map((s) => s.seq), durable });
    this.batches.push(batch);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const done = new Promise<void>((resolve, reject) => {
      if (this.auto) resolve();
      else this.pending.push({ resolve, reject });
    });
    return done.finally(() => {
      this.inFlight--;
    });
  }
  async rewind(head: ChainHead | null): Promise<void> {
    this.rewinds.push(head);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  get fsyncs(): number {
    return this.writes.filter((w) => w.durable).length;
  }
  release(): void {
    this.next().resolve();
  }
  fail(err: unknown): void {
    this.next().reject(err);
  }
  private next(): Deferred {
    const d = this.pending.shift();
    if (!d) throw new Error('no write in flight');
    return d;
  }
}

/** Lets every pending promise callback run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

function track(p: Promise<void>): { state: 'pending' | 'resolved' | 'rejected'; error?: unknown } {
  const t: { state: 'pending' | 'resolved' | 'rejected'; error?: unknown } = { state: 'pending' };
  p.then(
    () => (t.state = 'resolved'),
    (err: unknown) => {
      t.state = 'rejected';
      t.error = err;
    },
  );
  return t;
}

function setup(sinks: ReceiptSink[], options: Partial<ReceiptWriterOptions> = {}, head: ChainHead | null = null) {
  const log: string[] = [];
  const chain = new ReceiptChain({ key: KEY, clock: () => 0, head });
  const writer = new ReceiptWriter(sinks, {
    durability: 'strict',
    ...options,
    onRewind: (h) => {
      log.push(`rewind ${h?.seq ?? 'null'}`);
      chain.reset(h);
    },
    onSinkError: (sink, err) => log.push(`sink-error ${sink} ${(err as Error).message}`),
    onWritten: (n) => log.push(`written ${n}`),
  });
  const submit = () => writer.submit(chain.next(DRAFT));
  return { chain, writer, log, submit };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('ReceiptWriter strict (group commit)', () => {
  it('writes receipts submitted together as one batch with one fsync, resolving only after it', async () => {
    const sink = new FakeSink('fake');
    const { submit, writer, log } = setup([sink]);
    const tracked = Array.from({ length: 64 }, () => track(submit()));
    await settle();
    expect(sink.writes).toEqual([{ seqs: Array.from({ length: 64 }, (_, i) => i + 1), durable: true }]);
    expect(tracked.every((t) => t.state === 'pending')).toBe(true);
    expect(writer.durableHead).toBeNull();
    sink.release();
    await settle();
    expect(tracked.every((t) => t.state === 'resolved')).toBe(true);
    expect(writer.durableHead?.seq).toBe(64);
    expect(log).toEqual(['written 64']);
  });

  it('queues while a batch is in flight and writes the whole queue as the next batch', async () => {
    const sink = new FakeSink('fake');
    const { submit } = setup([sink]);
    const first = track(submit());
    await settle();
    const queued = Array.from({ length: 63 }, () => track(submit()));
    await settle();
    expect(sink.writes).toHaveLength(1); // never more than one write in flight
    sink.release();
    await settle();
    expect(first.state).toBe('resolved');
    expect(queued.every((t) => t.state === 'pending')).toBe(true);
    expect(sink.writes[1]).toEqual({ seqs: Array.from({ length: 63 }, (_, i) => i + 2), durable: true });
    sink.release();
    await settle();
    expect(queued.every((t) => t.state === 'resolved')).toBe(true);
    expect(sink.fsyncs).toBe(2);
    expect(sink.maxInFlight).toBe(1);
  });

  it('with several sinks, resolves only when every sink has the batch', async () => {
    const a = new FakeSink('a');
    const b = new FakeSink('b');
    const { submit } = setup([a, b]);
    const t = track(submit());
    await settle();
    a.release();
    await settle();
    expect(t.state).toBe('pending');
    b.release();
    await settle();
    expect(t.state).toBe('resolved');
  });

  it('refuses (TypeError) a receipt that does not chain from the last submitted one', () => {
    const sink = new FakeSink('fake', true);
    const { writer, chain } = setup([sink]);
    const first = chain.next(DRAFT);
    void writer.submit(first);
    chain.next(DRAFT); // seq 2, never submitted
    const third = chain.next(DRAFT);
    expect(() => writer.submit(third)).toThrow(
      new TypeError(
        `receipt seq 3 (prevHash ${third.prevHash}) does not follow the writer's tail: expected seq 2 with prevHash ${first.hash}`,
      ),
    );
    const foreign = new ReceiptChain({ key: KEY, clock: () => 0, head: null }).next(DRAFT);
    expect(() => writer.submit(foreign)).toThrow(
      new TypeError(`receipt seq 1 (prevHash null) does not follow the writer's tail: expected seq 2 with prevHash ${first.hash}`),
    );
  });
});

describe('ReceiptWriter batch signing', () => {
  it('signs each batch once: every receipt carries the same signature and its own proof, and verifies alone', async () => {
    const sink = new FakeSink('fake', true);
    const signed: Buffer[] = [];
    const counting = { ...KEY, sign: (data: Uint8Array) => (signed.push(Buffer.from(data)), KEY.sign(data)) };
    const chain = new ReceiptChain({ key: counting, clock: () => 0, head: null });
    const writer = new ReceiptWriter([sink], { durability: 'strict' });
    await Promise.all(Array.from({ length: 5 }, () => writer.submit(chain.next(DRAFT))));
    expect(signed).toHaveLength(1); // one signature for the batch of 5
    const batch = sink.batches[0] ?? [];
    expect(batch).toHaveLength(5);
    const keys = verificationKeys([KEY]);
    expect(new Set(batch.map((s) => s.receipt.signature)).size).toBe(1);
    batch.forEach((s, i) => {
      expect(s.receipt).toMatchObject({ seq: i + 1, chain: chain.chainId, batch: { index: i, size: 5 } });
      expect(verifyReceiptText(s.jcs, keys)).toEqual({ ok: true, seq: i + 1, id: s.id, chain: chain.chainId, hash: s.hash });
    });
    expect(JSON.parse(signed[0]!.toString('utf8'))).toEqual({
      chain: chain.chainId,
      firstSeq: 1,
      kernelKey: KEY.kid,
      root: (batch[0]?.receipt as { batch: { root: string } }).batch.root,
      schema: 'chio.receipt-batch.v1',
      size: 5,
    });
  });

  it('hands the sealed batch (final lines, leaves) to onCommitted in seq order', async () => {
    const sink = new FakeSink('fake', true);
    const committed: Array<{ seqs: number[]; leaves: string[]; hashes: string[]; durable: boolean }> = [];
    const { submit, writer } = setup([sink], {
      onCommitted: (batch, durable) =>
        committed.push({ seqs: batch.map((s) => s.seq), leaves: batch.map((s) => s.leaf.toString('hex')), hashes: batch.map((s) => s.hash), durable }),
    });
    await Promise.all([submit(), submit(), submit()]);
    await writer.flush();
    expect(committed).toHaveLength(1);
    expect(committed[0]?.seqs).toEqual([1, 2, 3]);
    expect(committed[0]?.durable).toBe(true);
    // the chain hash of a v2 receipt is its leaf
    expect(committed[0]?.hashes).toEqual(committed[0]?.leaves.map((h) => `sha256:${h}`));
    expect(sink.batches[0]?.map((s) => s.jcs)).toHaveLength(3);
  });

  it('a signing failure fails the batch like a sink failure: nothing written, chain rewound, receipts rejected', async () => {
    const sink = new FakeSink('fake', true);
    const broken = { ...KEY, sign: (): Buffer => { throw new Error('HSM unavailable'); } };
    const chain = new ReceiptChain({ key: broken, clock: () => 0, head: null });
    const rewinds: Array<ChainHead | null> = [];
    const writer = new ReceiptWriter([sink], { durability: 'strict', onRewind: (h) => { rewinds.push(h); chain.reset(h); } });
    const a = track(writer.submit(chain.next(DRAFT)));
    const b = track(writer.submit(chain.next(DRAFT)));
    await settle();
    expect(sink.writes).toEqual([]);
    for (const t of [a, b]) {
      expect(t.state).toBe('rejected');
      expect(t.error).toEqual(new ChioError('io_error', 'cannot sign the receipt batch (seq 1–2): HSM unavailable'));
    }
    expect(rewinds).toEqual([null]);
    expect(chain.head).toBeNull();
    expect(writer.durableHead).toBeNull();
  });
});

describe('ReceiptWriter failure', () => {
  it('rejects the failed batch and everything queued, rewinds to the durable head synchronously, then recovers', async () => {
    const sink = new FakeSink('fake');
    const { submit, writer, log, chain } = setup([sink]);
    const ok = [track(submit()), track(submit())];
    await settle();
    sink.release(); // seq 1-2 durable
    await settle();
    expect(ok.map((t) => t.state)).toEqual(['resolved', 'resolved']);
    const durable = writer.durableHead;
    expect(durable?.seq).toBe(2);

    const failing = [track(submit()), track(submit())]; // seq 3-4: the batch that fails
    await settle();
    const queued = [track(submit()), track(submit()), track(submit())]; // seq 5-7: queued behind it
    await settle();
    sink.fail(new Error('ENOSPC: no space left on device'));
    await settle();

    expect(log).toEqual(['written 2', 'sink-error fake ENOSPC: no space left on device', 'rewind 2']);
    expect(writer.durableHead).toEqual(durable);
    expect(chain.head).toEqual({ ...durable, chain: chain.chainId });
    for (const t of failing) {
      expect(t.state).toBe('rejected');
      expect(t.error).toBeInstanceOf(ChioError);
      expect((t.error as ChioError).code).toBe('io_error');
      expect((t.error as ChioError).message).toBe('receipt sink fake failed: ENOSPC: no space left on device');
    }
    for (const t of queued) {
      expect(t.state).toBe('rejected');
      expect((t.error as ChioError).message).toBe(
        'receipt discarded: the chain was rewound to seq 2 after an earlier write failed (receipt sink fake failed: ENOSPC: no space left on device)',
      );
    }
    expect(sink.writes.map((w) => w.seqs)).toEqual([[1, 2], [3, 4]]); // the queued ones were never written

    // the sink recovers: the chain continues from seq 2
    const after = track(submit());
    await settle();
    expect(sink.writes[2]?.seqs).toEqual([3]);
    sink.release();
    await settle();
    expect(after.state).toBe('resolved');
    expect(writer.durableHead?.seq).toBe(3);
  });

  it('calls onRewind before any rejected promise runs its handlers', async () => {
    const sink = new FakeSink('fake');
    const { submit, log } = setup([sink]);
    const p = submit().catch(() => log.push('rejected'));
    await settle();
    sink.fail(new Error('EIO'));
    await p;
    expect(log).toEqual(['sink-error fake EIO', 'rewind null', 'rejected']);
  });

  it('waits for every sink before failing (one write in flight per sink) and rewinds to a head it was given', async () => {
    const a = new FakeSink('a');
    const b = new FakeSink('b');
    const head = { seq: 41, hash: `sha256:${'0'.repeat(64)}` };
    const { submit, writer, log } = setup([a, b], { head }, head);
    const t = track(submit());
    await settle();
    a.fail(new Error('EIO'));
    await settle();
    expect(t.state).toBe('pending'); // b is still writing
    const queued = track(submit());
    await settle();
    expect(a.writes).toHaveLength(1);
    b.release();
    await settle();
    expect(t.state).toBe('rejected');
    expect(queued.state).toBe('rejected');
    expect(log).toEqual(['sink-error a EIO', 'rewind 41']);
    expect(writer.durableHead).toEqual(head);
    // b committed the batch a failed: it is rewound too, so both sinks keep one chain
    expect(b.rewinds).toEqual([head]);
  });

  it('without a head option, takes the durable head from the first receipt', async () => {
    const sink = new FakeSink('fake');
    const head = { seq: 9, hash: `sha256:${'1'.repeat(64)}` };
    const chain = new ReceiptChain({ key: KEY, clock: () => 0, head });
    const rewinds: Array<ChainHead | null> = [];
    const writer = new ReceiptWriter([sink], { durability: 'strict', onRewind: (h) => rewinds.push(h) });
    const t = track(writer.submit(chain.next(DRAFT)));
    expect(writer.durableHead).toEqual(head);
    await settle();
    sink.fail(new Error('EIO'));
    await settle();
    expect(t.state).toBe('rejected');
    expect(rewinds).toEqual([head]);
  });
});

describe('ReceiptWriter relaxed', () => {
  it('resolves at once and writes the queue (without fsync) after relaxedMaxDelayMs', async () => {
    vi.useFakeTimers();
    const sink = new FakeSink('fake', true);
    const { submit } = setup([sink], { durability: 'relaxed', relaxedMaxDelayMs: 50 });
    await submit();
    await vi.advanceTimersByTimeAsync(20);
    await submit();
    await vi.advanceTimersByTimeAsync(29);
    expect(sink.writes).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sink.writes).toEqual([{ seqs: [1, 2], durable: false }]);
    await submit();
    await vi.advanceTimersByTimeAsync(49);
    expect(sink.writes).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sink.writes[1]).toEqual({ seqs: [3], durable: false });
  });

  it('writes at once when the queue grows large', async () => {
    vi.useFakeTimers();
    const sink = new FakeSink('fake', true);
    const { submit } = setup([sink], { durability: 'relaxed', relaxedMaxBatch: 4 });
    for (let i = 0; i < 4; i++) await submit();
    await vi.advanceTimersByTimeAsync(0);
    expect(sink.writes).toEqual([{ seqs: [1, 2, 3, 4], durable: false }]);
  });

  it('flush() writes the queue durably, and fsyncs earlier unsynced batches', async () => {
    vi.useFakeTimers();
    const sink = new FakeSink('fake', true);
    const { submit, writer } = setup([sink], { durability: 'relaxed' });
    await submit();
    await vi.advanceTimersByTimeAsync(50);
    expect(sink.writes).toEqual([{ seqs: [1], durable: false }]);
    await writer.flush();
    expect(sink.writes[1]).toEqual({ seqs: [], durable: true });
    await submit();
    await writer.flush();
    expect(sink.writes[2]).toEqual({ seqs: [2], durable: true });
    expect(sink.writes).toHaveLength(3);
    await writer.flush(); // nothing left to do
    expect(sink.writes).toHaveLength(3);
  });

  it('a failed relaxed write rewinds the chain and makes flush() reject', async () => {
    vi.useFakeTimers();
    const sink = new FakeSink('fake');
    const { submit, writer, log } = setup([sink], { durability: 'relaxed' });
    await submit();
    const flushed = track(writer.flush());
    await vi.advanceTimersByTimeAsync(0);
    sink.fail(new Error('EIO'));
    await vi.advanceTimersByTimeAsync(0);
    expect(flushed.state).toBe('rejected');
    expect((flushed.error as ChioError).message).toBe('receipt sink fake failed: EIO');
    expect(log).toEqual(['sink-error fake EIO', 'rewind null']);
  });
});

describe('ReceiptWriter relaxed after a failed write', () => {
  it('each answer waits for its write (rejecting while the sink fails: on_failure applies) until a write succeeds; then relaxed again', async () => {
    vi.useFakeTimers();
    const sink = new FakeSink('fake');
    const { submit, writer } = setup([sink], { durability: 'relaxed', relaxedMaxDelayMs: 50 });
    expect(submit()).toBe(ACCEPTED);
    await vi.advanceTimersByTimeAsync(50);
    sink.fail(new Error('EIO'));
    await vi.advanceTimersByTimeAsync(0);
    // failing: no longer ACCEPTED at once; written at once (no 50 ms wait) and rejected with the sink
    const waiting = track(submit());
    await vi.advanceTimersByTimeAsync(0);
    expect(sink.writes.map((w) => w.seqs)).toEqual([[1], [1]]);
    expect(waiting.state).toBe('pending');
    sink.fail(new Error('EIO again'));
    await vi.advanceTimersByTimeAsync(0);
    expect(waiting.state).toBe('rejected');
    // the sink writes again: this answer waits for its write and resolves; the next is relaxed
    const recovered = track(submit());
    await vi.advanceTimersByTimeAsync(0);
    sink.release();
    await vi.advanceTimersByTimeAsync(0);
    expect(recovered.state).toBe('resolved');
    expect(submit()).toBe(ACCEPTED);
    await vi.advanceTimersByTimeAsync(50);
    expect(sink.writes.map((w) => w.seqs)).toEqual([[1], [1], [1], [2]]);
    sink.release();
    await vi.advanceTimersByTimeAsync(0);
    expect(writer.durableHead?.seq).toBe(2);
  });
});

describe('ReceiptWriter close', () => {
  it('flushes, closes every sink, and refuses later submissions', async () => {
    const a = new FakeSink('a', true);
    const b = new FakeSink('b', true);
    const { submit, writer, log } = setup([a, b]);
    const t = track(submit());
    await writer.close();
    expect(t.state).toBe('resolved');
    expect(a.closed && b.closed).toBe(true);
    expect(log).toEqual(['written 1']);
    await expect(submit()).rejects.toThrow(new ChioError('io_error', 'the receipt writer is closed'));
  });

  it('refuses submissions from the moment close() starts, and flushes a relaxed queue durably', async () => {
    const sink = new FakeSink('fake', true);
    const { submit, writer } = setup([sink], { durability: 'relaxed', relaxedMaxDelayMs: 60_000 });
    await submit();
    const closing = writer.close();
    await expect(submit()).rejects.toThrow('the receipt writer is closed');
    await closing;
    expect(sink.writes).toEqual([{ seqs: [1], durable: true }]);
    expect(sink.closed).toBe(true);
  });
});
