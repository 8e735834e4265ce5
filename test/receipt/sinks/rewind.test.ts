/**
 * Multi-sink consistency: JsonlSink.rewind, and the ReceiptWriter rewinding the sinks that
 * committed a batch another sink failed, so a JSONL file and a SQLite store always hold one chain.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChioError } from '../../../src/errors.js';
import type { ChainHead, SealedReceipt } from '../../../src/receipt/receipt.js';
import { JsonlSink } from '../../../src/receipt/sinks/jsonl.js';
import type { ReceiptSink } from '../../../src/receipt/sinks/sink.js';
import { SqliteSink } from '../../../src/receipt/sinks/sqlite.js';
import { SqliteReceiptStore } from '../../../src/receipt/store.js';
import { verificationKeys, verifyReceiptFile } from '../../../src/receipt/verify.js';
import { ReceiptWriter } from '../../../src/receipt/writer.js';
import { KEY, pendingReceipts, sealedReceipts, tempDir } from '../helpers.js';

const KEYS = verificationKeys([KEY]);
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}

async function storeTexts(file: string): Promise<string[]> {
  const store = SqliteReceiptStore.open(file);
  try {
    const out: string[] = [];
    for await (const r of store.iterateBySeq(0)) out.push(r.jcs);
    return out;
  } finally {
    store.close();
  }
}

/**
 * Wraps a real sink; `failNext` makes its next write fail before the inner sink sees it. (A sink
 * whose own write fails cleans up after itself: JsonlSink truncates, SqliteSink deletes the rows
 * past its confirmed head before its next write — see sqlite.test.ts.)
 */
class FlakySink implements ReceiptSink {
  failNext: 'before' | null = null;
  rewinds: Array<ChainHead | null> = [];
  constructor(readonly inner: ReceiptSink) {}
  get name(): string {
    return this.inner.name;
  }
  open(): Promise<ChainHead | null> {
    return this.inner.open();
  }
  async write(batch: readonly SealedReceipt[], durable: boolean): Promise<void> {
    const mode = this.failNext;
    this.failNext = null;
    if (mode === 'before') throw new Error('ENOSPC: no space left on device (injected)');
    await this.inner.write(batch, durable);
  }
  rewind(head: ChainHead | null): Promise<void> {
    this.rewinds.push(head);
    return this.inner.rewind(head);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('JsonlSink.rewind', () => {
  it('truncates back to a recent batch boundary, durably, and the chain continues from there', async () => {
    const file = path.join(tempDir(), 'receipts.jsonl');
    const sink = new JsonlSink(file);
    cleanup.push(() => sink.close());
    await sink.open();
    const r = sealedReceipts(8);
    await sink.write(r.slice(0, 3), true);
    await sink.write(r.slice(3, 5), true);
    await sink.write(r.slice(5, 6), false);
    const at5 = { seq: 5, hash: r[4]?.hash ?? '' };
    await sink.rewind(at5);
    expect(lines(file)).toEqual(r.slice(0, 5).map((s) => s.jcs));
    await sink.rewind(at5); // already there: nothing to do
    expect(lines(file)).toHaveLength(5);
    await sink.write(sealedReceipts(2, at5), true);
    expect((await verifyReceiptFile(file, KEYS)).receipts).toBe(7);
    await sink.rewind(null); // the boundary at open (an empty file)
    expect(readFileSync(file, 'utf8')).toBe('');
  });

  it('refuses a head that is not a batch boundary it wrote', async () => {
    const file = path.join(tempDir(), 'receipts.jsonl');
    const sink = new JsonlSink(file);
    cleanup.push(() => sink.close());
    await sink.open();
    const r = sealedReceipts(4);
    await sink.write(r, true);
    await expect(sink.rewind({ seq: 2, hash: r[1]?.hash ?? '' })).rejects.toThrow(
      new ChioError('io_error', `cannot rewind ${file} to seq 2: not one of the last 2 batch boundaries written`),
    );
    expect(lines(file)).toHaveLength(4);
  });
});

describe('ReceiptWriter with a JSONL file and a SQLite store', () => {
  async function setup() {
    const dir = tempDir();
    const jsonlFile = path.join(dir, 'receipts.jsonl');
    const dbFile = path.join(dir, 'receipts.db');
    const jsonl = new FlakySink(new JsonlSink(jsonlFile));
    const sqlite = new FlakySink(new SqliteSink(dbFile));
    await jsonl.open();
    await sqlite.open();
    const errors: string[] = [];
    const writer = new ReceiptWriter([jsonl, sqlite], { durability: 'strict', head: null, onSinkError: (name, err) => errors.push(`${name}: ${(err as Error).message}`) });
    cleanup.push(() => writer.close().catch(() => undefined));
    return { jsonl, sqlite, writer, errors, jsonlFile, dbFile };
  }

  it('when SQLite fails a batch JSONL committed, JSONL is rewound: both hold the same verified chain', async () => {
    const { jsonl, sqlite, writer, errors, jsonlFile, dbFile } = await setup();
    const r = pendingReceipts(3);
    await writer.submit(r[0]!);
    const first = lines(jsonlFile);
    expect(first).toHaveLength(1);
    sqlite.failNext = 'before';
    await expect(writer.submit(r[1]!)).rejects.toThrow('receipt sink sqlite failed: ENOSPC: no space left on device (injected)');
    expect(errors).toEqual(['sqlite: ENOSPC: no space left on device (injected)']);
    const head1 = { seq: 1, hash: r[0]?.hash ?? '' };
    expect(jsonl.rewinds).toEqual([head1]);
    expect(sqlite.rewinds).toEqual([]);
    expect(lines(jsonlFile)).toEqual(first);
    // the chain continues from seq 1 in both
    const next = pendingReceipts(2, head1);
    await Promise.all(next.map((s) => writer.submit(s)));
    const want = lines(jsonlFile);
    expect(want.map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual([1, 2, 3]);
    expect(want[0]).toBe(first[0]);
    expect(await storeTexts(dbFile)).toEqual(want);
    expect(await verifyReceiptFile(jsonlFile, KEYS)).toMatchObject({ ok: true, receipts: 3, head: { seq: 3, hash: next[1]?.hash } });
  });

  it('when JSONL fails a batch SQLite committed, SQLite is rewound', async () => {
    const { jsonl, sqlite, writer, jsonlFile, dbFile } = await setup();
    const r = pendingReceipts(2);
    await writer.submit(r[0]!);
    const first = lines(jsonlFile);
    const head1 = { seq: 1, hash: r[0]?.hash ?? '' };
    jsonl.failNext = 'before';
    await expect(writer.submit(r[1]!)).rejects.toThrow(ChioError);
    expect(sqlite.rewinds).toEqual([head1]);
    expect(await storeTexts(dbFile)).toEqual(first);

    const next = pendingReceipts(2, head1);
    await Promise.all(next.map((x) => writer.submit(x)));
    const want = lines(jsonlFile);
    expect(want).toHaveLength(3);
    expect(want[0]).toBe(first[0]);
    expect(await storeTexts(dbFile)).toEqual(want);
    expect(await verifyReceiptFile(jsonlFile, KEYS)).toMatchObject({ ok: true, receipts: 3 });
  });

  it('a rewind that fails is reported as a sink error', async () => {
    const { jsonl, sqlite, writer, errors } = await setup();
    const r = pendingReceipts(2);
    await writer.submit(r[0]!);
    jsonl.rewind = async () => {
      throw new Error('EROFS: read-only file system (injected)');
    };
    sqlite.failNext = 'before';
    await expect(writer.submit(r[1]!)).rejects.toThrow(ChioError);
    expect(errors).toEqual(['sqlite: ENOSPC: no space left on device (injected)', 'jsonl: cannot rewind receipt sink jsonl to seq 1: EROFS: read-only file system (injected)']);
  });
});
