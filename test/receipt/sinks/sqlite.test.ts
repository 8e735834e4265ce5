import { statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { embeddedConfig, parseConfig } from '../../../src/config/load.js';
import { ChioError } from '../../../src/errors.js';
import { SqliteSink } from '../../../src/receipt/sinks/sqlite.js';
import { SqliteReceiptStore } from '../../../src/receipt/store.js';
import { ReceiptWriter } from '../../../src/receipt/writer.js';
import { CHAIN, pendingReceipts, sealedReceipts, tempDir } from '../helpers.js';

const open: Array<{ close(): Promise<void> | void }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

async function openSink(file = path.join(tempDir(), 'data', 'receipts.db')): Promise<SqliteSink> {
  const sink = new SqliteSink(file);
  open.push(sink);
  await sink.open();
  return sink;
}

function rows(file: string): Array<{ seq: number; id: string; jcs: string; hash: string }> {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return db.prepare('SELECT seq, id, jcs, hash FROM receipts ORDER BY seq').all() as Array<{ seq: number; id: string; jcs: string; hash: string }>;
  } finally {
    db.close();
  }
}

describe('SqliteSink', () => {
  it('creates the store (folder 0700, file 0600, WAL), stores the exact JCS text and hash, and reports the head on reopen', async () => {
    const file = path.join(tempDir(), 'data', 'receipts.db');
    const sink = await openSink(file);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const batch = sealedReceipts(5);
    await sink.write(batch.slice(0, 2), true);
    await sink.write(batch.slice(2), false);
    await sink.close();
    expect(rows(file)).toEqual(batch.map((s) => ({ seq: s.receipt.seq, id: s.receipt.id, jcs: s.jcs, hash: s.hash })));
    const db = new BetterSqlite3(file, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();

    const again = await openSink(file);
    expect(await again.head()).toEqual({ seq: 5, hash: batch[4]?.hash, chain: CHAIN });
    expect(await again.get(batch[3]?.receipt.id ?? '')).toBe(batch[3]?.jcs);
    expect(await again.get('rct-01JD0000000000000000000000')).toBeNull();
  });

  it('open() returns the head it holds, recomputed from the stored text', async () => {
    const file = path.join(tempDir(), 'receipts.db');
    const sink = await openSink(file);
    const batch = sealedReceipts(3);
    await sink.write(batch, true);
    await sink.close();
    const reopened = new SqliteSink(file);
    open.push(reopened);
    expect(await reopened.open()).toEqual({ seq: 3, hash: batch[2]?.hash, chain: CHAIN });
  });

  it('refuses a batch that does not continue the chain it holds (no fork), and a file that is not a receipt store', async () => {
    const sink = await openSink();
    const first = sealedReceipts(3);
    await sink.write(first, true);
    const foreign = sealedReceipts(2); // seq 1-2 again
    await expect(sink.write(foreign, true)).rejects.toThrow(ChioError);
    await expect(sink.write(foreign, true)).rejects.toMatchObject({ code: 'receipt_chain_broken' });
    // the failed writes left nothing behind; the chain continues
    const next = sealedReceipts(2, { seq: 3, hash: first[2]?.hash ?? '' });
    await sink.write(next, true);
    expect(await sink.head()).toEqual({ seq: 5, hash: next[1]?.hash, chain: CHAIN });

    const dir = tempDir();
    const other = path.join(dir, 'other.db');
    const db = new BetterSqlite3(other);
    db.exec('CREATE TABLE t (x)');
    db.close();
    await expect(new SqliteSink(other).open()).rejects.toThrow(`receipt store ${other}: ${other} is not a chio receipt store (expected chio.receipt-store.v1 in its store_meta table)`);
    const text = path.join(dir, 'text.db');
    writeFileSync(text, 'not a database at all, just some text that is long enough to have a header'.repeat(10));
    await expect(new SqliteSink(text).open()).rejects.toThrow(/SQLITE_NOTADB/);
  });

  it('refuses a receipt whose indexed columns (seq, id, prevHash) do not describe its text', async () => {
    const sink = await openSink();
    const [a, b] = sealedReceipts(2);
    if (!a || !b) throw new TypeError('two receipts expected');
    // b's text under a's seq/id/prevHash, chained as the columns say
    const lying = { ...a, jcs: b.jcs, hash: a.hash, leaf: a.leaf, columns: a.columns };
    await expect(sink.write([lying], true)).rejects.toMatchObject({ code: 'receipt_chain_broken' });
    await expect(sink.write([lying], true)).rejects.toThrow('its indexed columns do not describe its text');
    await sink.write([a, b], true);
    expect(await sink.head()).toEqual({ seq: 2, hash: b.hash, chain: CHAIN });
  });

  it('rewind() deletes the receipts after a head, durably, and refuses a head it does not hold', async () => {
    const file = path.join(tempDir(), 'receipts.db');
    const sink = await openSink(file);
    const batch = sealedReceipts(6);
    await sink.write(batch.slice(0, 4), true);
    await sink.write(batch.slice(4), true);
    const at4 = { seq: 4, hash: batch[3]?.hash ?? '' };
    await sink.rewind(at4);
    expect(rows(file).map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    await expect(sink.rewind({ seq: 2, hash: batch[3]?.hash ?? '' })).rejects.toThrow(
      `cannot rewind ${file} to seq 2: the store holds a different receipt there (${batch[1]?.hash})`,
    );
    expect(rows(file).map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    await sink.rewind(null);
    expect(rows(file)).toEqual([]);
  });

  it('after a failed write, deletes unconfirmed rows before the next one (a commit whose answer was lost)', async () => {
    const file = path.join(tempDir(), 'receipts.db');
    const sink = await openSink(file);
    const batch = sealedReceipts(4);
    await sink.write(batch.slice(0, 2), true);
    // another connection commits seq 3 behind the sink's back (what a lost answer looks like), and a bad batch fails
    const store = SqliteReceiptStore.open(file, { writable: true });
    await store.append(batch.slice(2, 3));
    store.close();
    await expect(sink.write(batch.slice(2), true)).rejects.toMatchObject({ code: 'receipt_chain_broken' });
    // the sink no longer trusts rows past its confirmed head (seq 2): the retry succeeds
    await sink.write(batch.slice(2), true);
    expect(rows(file).map((r) => r.seq)).toEqual([1, 2, 3, 4]);
  });

  it('a durable empty batch after relaxed ones commits a synced marker (flush of relaxed mode)', async () => {
    const file = path.join(tempDir(), 'receipts.db');
    const sink = await openSink(file);
    await sink.write(sealedReceipts(2), false);
    await sink.write([], true);
    const db = new BetterSqlite3(file, { readonly: true });
    const marker = db.prepare("SELECT value FROM store_meta WHERE key = 'synced_at'").get() as { value: string } | undefined;
    db.close();
    expect(marker?.value).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(rows(file).map((r) => r.seq)).toEqual([1, 2]);
  });

  it('serves writes from a ReceiptWriter (group commit) and reads while writing', async () => {
    const file = path.join(tempDir(), 'receipts.db');
    const sink = await openSink(file);
    const committed: string[] = [];
    const writer = new ReceiptWriter([sink], { durability: 'strict', head: null, onCommitted: (b) => committed.push(...b.map((s) => s.jcs)) });
    const batch = pendingReceipts(200);
    const done = batch.map((s) => writer.submit(s));
    const page = await sink.query({ limit: 10 });
    expect(page.receipts.length).toBeLessThanOrEqual(10);
    await Promise.all(done);
    expect(committed).toHaveLength(200);
    expect((await sink.query({ limit: 500 })).receipts).toEqual(committed);
    await writer.close();
  });
});

describe('sqlite sink configuration', () => {
  it('the embedded default config writes a JSONL file and a SQLite store in ./chio-data', () => {
    const cwd = tempDir();
    expect(embeddedConfig(cwd).receipts.sinks).toEqual([
      { type: 'jsonl', path: path.join(cwd, 'chio-data', 'receipts.jsonl') },
      { type: 'sqlite', path: path.join(cwd, 'chio-data', 'receipts.db') },
    ]);
  });

  it('chio.yaml accepts sqlite sinks (paths resolved against its folder) and refuses two sinks on one path', () => {
    const dir = tempDir();
    const base = ['schema: chio.config.v1', 'policy: ./policy.yaml', 'keys: { receipt_signing_seed: ./k.seed }'];
    const config = parseConfig([...base, 'receipts: { sinks: [ { type: sqlite, path: ./data/r.db } ] }', ''].join('\n'), path.join(dir, 'chio.yaml'), dir);
    expect(config.receipts.sinks).toEqual([{ type: 'sqlite', path: path.join(dir, 'data', 'r.db') }]);
    expect(() =>
      parseConfig([...base, 'receipts: { sinks: [ { type: jsonl, path: ./r }, { type: sqlite, path: ./r } ] }', ''].join('\n'), path.join(dir, 'chio.yaml'), dir),
    ).toThrow(/two sinks must not share a path/);
    expect(() => parseConfig([...base, 'receipts: { sinks: [ { type: sqlite } ] }', ''].join('\n'), path.join(dir, 'chio.yaml'), dir)).toThrow(ChioError);
  });
});
