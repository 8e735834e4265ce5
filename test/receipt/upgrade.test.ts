/**
 * A receipt log written before batch signing (chio.receipt.v1) continued by the service in
 * chio.receipt.v2: the sinks read the v1 head, the chain gets a chain id, the file (and the store)
 * verify as one chain, a restart keeps the chain id, and checkpoints rebuild over the mixed log.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { jcs } from '../../src/receipt/canonical.js';
import { Checkpointer } from '../../src/receipt/checkpoint.js';
import { leafHash, merkleRoot } from '../../src/receipt/merkle.js';
import { CHAIN_ID_PATTERN, ReceiptChain, receiptHash, type ChainHead } from '../../src/receipt/receipt.js';
import { JsonlSink } from '../../src/receipt/sinks/jsonl.js';
import { continuationCheck } from '../../src/receipt/sinks/reconcile.js';
import { SqliteSink } from '../../src/receipt/sinks/sqlite.js';
import { JsonlReceiptFiles } from '../../src/receipt/retention.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
import { ReceiptWriter } from '../../src/receipt/writer.js';
import { recordingLogger } from '../helpers/service.js';
import { KEY, T0, tempDir, v1Lines, variedDraft } from './helpers.js';

const KEYS = verificationKeys([KEY]);

/** Writes `count` v2 receipts through a ReceiptWriter (batches as they come) continuing the sinks' head. */
async function continueInV2(sinks: Array<JsonlSink | SqliteSink>, head: ChainHead | null, count: number): Promise<ReceiptChain> {
  const chain = new ReceiptChain({ key: KEY, clock: () => T0, head });
  const writer = new ReceiptWriter(sinks, { durability: 'strict', head, onRewind: (h) => chain.reset(h) });
  await Promise.all(Array.from({ length: count }, (_, i) => writer.submit(chain.next(variedDraft(100 + i)))));
  await writer.close();
  return chain;
}

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}

describe('upgrading a v1 receipt log to v2', () => {
  it('continues the v1 chain in v2 with a new chain id; the mixed file verifies; a restart keeps the chain id', async () => {
    const dir = tempDir('chio-upgrade-');
    const file = path.join(dir, 'receipts.jsonl');
    const old = v1Lines(6);
    writeFileSync(file, old.map((l) => `${l}\n`).join(''));

    const sink = new JsonlSink(file);
    const head = await sink.open();
    expect(head).toEqual({ seq: 6, hash: receiptHash(old[5]!) }); // a v1 head: SHA-256 of the line, no chain id
    const chain = await continueInV2([sink], head, 9);
    expect(chain.chainId).toMatch(CHAIN_ID_PATTERN);

    const all = lines(file);
    expect(all).toHaveLength(15);
    expect(all.slice(0, 6)).toEqual(old);
    const first = JSON.parse(all[6]!) as { schema: string; seq: number; prevHash: string; chain: string };
    expect(first).toMatchObject({ schema: 'chio.receipt.v2', seq: 7, prevHash: receiptHash(old[5]!), chain: chain.chainId });
    expect(await verifyReceiptFile(file, KEYS)).toEqual({ ok: true, receipts: 15, head: { seq: 15, hash: chain.head?.hash }, chain: chain.chainId, firstFailure: null });

    // restart: the head comes with the chain id, and the chain goes on under it
    const reopened = new JsonlSink(file);
    const head2 = await reopened.open();
    expect(head2).toEqual(chain.head);
    const resumed = await continueInV2([reopened], head2, 3);
    expect(resumed.chainId).toBe(chain.chainId);
    expect(await verifyReceiptFile(file, KEYS)).toMatchObject({ ok: true, receipts: 18, chain: chain.chainId });
  });

  it('a SQLite store backfilled with a mixed log holds the same chain head (v1 and v2 hashes checked by the store)', async () => {
    const dir = tempDir('chio-upgrade-');
    const jsonl = path.join(dir, 'receipts.jsonl');
    const db = path.join(dir, 'receipts.db');
    writeFileSync(jsonl, v1Lines(4).map((l) => `${l}\n`).join(''));
    const fileSink = new JsonlSink(jsonl);
    const storeSink = new SqliteSink(db);
    const fileHead = await fileSink.open();
    expect(await storeSink.open()).toBeNull();
    // the store starts empty: copy the v1 receipts, then both take the v2 ones
    const check = continuationCheck(null, KEYS);
    await storeSink.write(lines(jsonl).map((l) => check(l)), true);
    const chain = await continueInV2([fileSink, storeSink], fileHead, 5);
    const store = new SqliteSink(db);
    expect(await store.open()).toEqual(chain.head);
    await store.close();
    const texts: string[] = [];
    for await (const r of new JsonlReceiptFiles(jsonl).iterateBySeq(1)) texts.push(r.jcs);
    expect(texts).toHaveLength(9);
  });

  it('checkpoints rebuild over the mixed log: v1 leaves over the line, v2 leaves over the body', async () => {
    const dir = tempDir('chio-upgrade-');
    const file = path.join(dir, 'receipts.jsonl');
    writeFileSync(file, v1Lines(5).map((l) => `${l}\n`).join(''));
    const sink = new JsonlSink(file);
    const chain = await continueInV2([sink], await sink.open(), 6);
    const expectedRoot = merkleRoot(
      lines(file).map((l) => {
        const { batch, signature, ...body } = JSON.parse(l) as { schema: string; batch?: unknown; signature?: unknown };
        void signature;
        return body.schema === 'chio.receipt.v2' && batch !== undefined ? leafHash(jcs(body)) : leafHash(l);
      }),
    );
    const cp = await Checkpointer.open({
      path: path.join(dir, 'checkpoints.jsonl'),
      key: KEY,
      clock: () => T0,
      everyReceipts: 1000,
      everySeconds: 60,
      source: { iterateBySeq: (from, to) => new JsonlReceiptFiles(file).iterateBySeq(from, to), pruneThrough: async () => 0 },
      head: chain.head,
      makeDurable: async () => undefined,
      log: recordingLogger(),
    });
    const latest = await cp.checkpointNow();
    await cp.close();
    expect(latest?.checkpoint).toMatchObject({ treeSize: 11, rootHash: `sha256:${expectedRoot.toString('hex')}` });
  });
});
