/**
 * Startup reconciliation of the receipt sinks (src/receipt/sinks/reconcile.ts): a sink that is
 * behind is backfilled from the longest one, checking every receipt; anything else fails clearly.
 */
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { keyFromSeed } from '../../../src/keys.js';
import { ReceiptChain, type ChainHead, type SealedReceipt } from '../../../src/receipt/receipt.js';
import { JsonlSink } from '../../../src/receipt/sinks/jsonl.js';
import { continuationCheck, createReceiptSinks, openSinksOnOneChain } from '../../../src/receipt/sinks/reconcile.js';
import type { ReceiptSink } from '../../../src/receipt/sinks/sink.js';
import { SqliteSink } from '../../../src/receipt/sinks/sqlite.js';
import { SqliteReceiptStore } from '../../../src/receipt/store.js';
import { verificationKeys, verifyReceiptFile } from '../../../src/receipt/verify.js';
import { recordingLogger } from '../../helpers/service.js';
import { CHAIN, KEY, sealedReceipts, tempDir, variedDraft } from '../helpers.js';

const KEYS = verificationKeys([KEY]);
const opened: ReceiptSink[] = [];
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close().catch(() => undefined);
});

function files() {
  const dir = tempDir('chio-reconcile-');
  return { jsonl: path.join(dir, 'receipts.jsonl'), db: path.join(dir, 'receipts.db') };
}

function writeJsonl(file: string, receipts: readonly SealedReceipt[]): void {
  appendFileSync(file, receipts.map((r) => `${r.jcs}\n`).join(''));
}

async function writeDb(file: string, receipts: readonly SealedReceipt[]): Promise<void> {
  const store = SqliteReceiptStore.open(file, { writable: true });
  await store.append(receipts);
  store.close();
}

async function dbTexts(file: string): Promise<string[]> {
  const store = SqliteReceiptStore.open(file);
  const out: string[] = [];
  for await (const r of store.iterateBySeq(0)) out.push(r.jcs);
  store.close();
  return out;
}

function jsonlTexts(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}

async function openBoth(f: { jsonl: string; db: string }) {
  const log = recordingLogger();
  const sinks = createReceiptSinks(
    [
      { type: 'jsonl', path: f.jsonl },
      { type: 'sqlite', path: f.db },
    ],
    log,
  );
  opened.push(...sinks);
  const head = await openSinksOnOneChain(sinks, { keys: KEYS, log });
  return { head, log, sinks };
}

/** The head a sink reports for its last receipt (with the chain id of the v2 receipts). */
const headOf = (r: SealedReceipt): ChainHead => ({ seq: r.seq, hash: r.hash, chain: CHAIN });

describe('openSinksOnOneChain', () => {
  it('opens sinks that agree without touching them', async () => {
    const f = files();
    const r = sealedReceipts(5);
    writeJsonl(f.jsonl, r);
    await writeDb(f.db, r);
    const { head, log, sinks } = await openBoth(f);
    expect(head).toEqual(headOf(r[4] as SealedReceipt));
    expect(log.entries).toEqual([]);
    expect(sinks.map((s) => s.constructor)).toEqual([JsonlSink, SqliteSink]);
  });

  it('rebuilds a deleted SQLite store from the JSONL file (700 receipts, several batches), checking each', async () => {
    const f = files();
    const r = sealedReceipts(700);
    writeJsonl(f.jsonl, r);
    const { head, log } = await openBoth(f);
    expect(head).toEqual(headOf(r[699] as SealedReceipt));
    expect(await dbTexts(f.db)).toEqual(r.map((x) => x.jcs));
    expect(log.entries).toEqual([
      {
        level: 'warn',
        msg: 'receipt sink was behind the others; backfilled it from the longest one',
        obj: { sink: `sqlite ${f.db}`, from: 0, to: 700, receipts: 700, source: `jsonl ${f.jsonl}` },
      },
    ]);
  });

  it('catches a SQLite store up on the batch a crash left only in the JSONL file (found from the end of the file)', async () => {
    const f = files();
    const r = sealedReceipts(300);
    writeJsonl(f.jsonl, r);
    await writeDb(f.db, r.slice(0, 290));
    const { head, log } = await openBoth(f);
    expect(head).toEqual(headOf(r[299] as SealedReceipt));
    expect(await dbTexts(f.db)).toEqual(r.map((x) => x.jcs));
    expect(log.entries[0]?.obj).toMatchObject({ from: 290, to: 300, receipts: 10 });
  });

  it('catches a JSONL file up from the SQLite store; the file then verifies', async () => {
    const f = files();
    const r = sealedReceipts(40);
    writeJsonl(f.jsonl, r.slice(0, 25));
    await writeDb(f.db, r);
    const { head } = await openBoth(f);
    expect(head).toEqual(headOf(r[39] as SealedReceipt));
    expect(jsonlTexts(f.jsonl)).toEqual(r.map((x) => x.jcs));
    expect(await verifyReceiptFile(f.jsonl, KEYS)).toMatchObject({ ok: true, receipts: 40 });
  });

  it('refuses two different chains of the same length', async () => {
    const f = files();
    const r = sealedReceipts(3);
    const other = new ReceiptChain({ key: KEY, clock: () => 0, head: null });
    writeJsonl(f.jsonl, r);
    await writeDb(f.db, [0, 1, 2].map((i) => other.seal(variedDraft(i))));
    await expect(openBoth(f)).rejects.toMatchObject({
      code: 'receipt_chain_broken',
      message: expect.stringContaining(`receipt sinks hold different chains: sqlite ${f.db} is at seq 3`),
    });
  });

  it('refuses to extend a shorter chain that is not a prefix of the longer one, naming the receipt', async () => {
    const f = files();
    const r = sealedReceipts(6);
    const other = new ReceiptChain({ key: KEY, clock: () => 0, head: null });
    writeJsonl(f.jsonl, r);
    await writeDb(f.db, [0, 1].map((i) => other.seal(variedDraft(i))));
    await expect(openBoth(f)).rejects.toThrow(
      new RegExp(
        `receipt ${r[2]?.id} \\(seq 3\\) cannot continue the chain at seq 2: receipt_chain_broken: prevHash sha256:[0-9a-f]{64} does not match receipt seq 2's hash sha256:[0-9a-f]{64}\\. Move the sink that is wrong aside`,
      ),
    );
  });

  it('refuses a tampered receipt, or one signed by another key, in the part to copy', async () => {
    const f = files();
    const r = sealedReceipts(4);
    const tampered = r.map((x) => x.jcs);
    tampered[3] = (tampered[3] ?? '').replace('"verdict":"deny"', '"verdict":"allow"'); // receipt 4 is a deny
    writeFileSync(f.jsonl, tampered.map((t) => `${t}\n`).join(''));
    await writeDb(f.db, r.slice(0, 3));
    await expect(openBoth(f)).rejects.toThrow(
      new RegExp(
        `receipt ${r[3]?.id} \\(seq 4\\) cannot continue the chain at seq 3: receipt_bad_signature: the receipt is not in its signed batch: its body's audit path leads to sha256:[0-9a-f]{64}, not to batch.root sha256:[0-9a-f]{64} \\(the receipt was altered\\)`,
      ),
    );

    const g = files();
    const foreignKey = keyFromSeed(Buffer.alloc(32, 99));
    const foreign = new ReceiptChain({ key: foreignKey, clock: () => 0, head: null });
    const forged = foreign.seal(variedDraft(0));
    writeJsonl(g.jsonl, [forged]);
    await expect(openBoth(g)).rejects.toThrow(
      `receipt ${forged.id} (seq 1) cannot continue the chain at seq 0: receipt_bad_signature: signed by key ${foreignKey.kid}, which is unknown: not among the 1 public key(s) given (${KEY.kid})`,
    );
  });

  it('rebuilds a deleted SQLite store from a log that retention pruned: from the first receipt the log still holds', async () => {
    const f = files();
    const r = sealedReceipts(20);
    writeJsonl(f.jsonl, r.slice(10)); // seq 11..20: the segments before were pruned
    const { head, log } = await openBoth(f);
    expect(head).toEqual(headOf(r[19] as SealedReceipt));
    expect(await dbTexts(f.db)).toEqual(r.slice(10).map((x) => x.jcs));
    expect(log.entries[0]?.obj).toEqual({ sink: `sqlite ${f.db}`, from: 0, to: 20, receipts: 10, source: `jsonl ${f.jsonl}` });
  });

  it('refuses to rebuild a JSONL file from a pruned store (the start of the chain is gone)', async () => {
    const f = files();
    const r = sealedReceipts(20);
    await writeDb(f.db, r);
    const store = SqliteReceiptStore.open(f.db, { writable: true });
    await store.pruneThrough(10);
    store.close();
    await expect(openBoth(f)).rejects.toThrow(
      `receipt ${r[10]?.id} (seq 11) cannot continue the chain at seq 0: receipt_chain_broken: the first receipt has seq 11; a chain starts at seq 1 (the receipts before it are missing)`,
    );
  });
});

describe('continuationCheck', () => {
  it('accepts the receipts that continue a head and rejects a non-canonical text', () => {
    const r = sealedReceipts(3);
    const check = continuationCheck(headOf(r[0] as SealedReceipt), KEYS);
    expect(check(r[1]?.jcs ?? '').hash).toBe(r[1]?.hash);
    const name = `receipt ${r[2]?.id} (seq 3) cannot continue the chain at seq 2`;
    expect(() => check(` ${r[2]?.jcs}`)).toThrow(`${name}: receipt_malformed: the line is not the receipt's canonical JSON (RFC 8785 JCS) text`);
    expect(() => check(JSON.stringify({ ...JSON.parse(r[2]?.jcs ?? ''), extra: 1 }))).toThrow(
      `${name}: receipt_malformed: not a chio.receipt.v2 receipt: receipt: Unrecognized key: "extra"`,
    );
    const { policyHash: _dropped, ...missing } = JSON.parse(r[2]?.jcs ?? '') as Record<string, unknown>;
    expect(() => check(JSON.stringify(missing))).toThrow(
      `${name}: receipt_malformed: not a chio.receipt.v2 receipt: field policyHash: Invalid input: expected string, received undefined`,
    );
    expect(check(r[2]?.jcs ?? '').hash).toBe(r[2]?.hash); // the checker stays at seq 2 after a refused text
  });
});
