import { createHash } from 'node:crypto';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as ed from '@noble/ed25519';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { keyFromSeed } from '../../src/keys.js';
import { jcs } from '../../src/receipt/canonical.js';
import {
  CheckpointError,
  Checkpointer,
  checkCheckpointLink,
  checkCheckpointSignature,
  checkpointResponse,
  checkpointStatePaths,
  linesBackwards,
  parseCheckpointLine,
  readCheckpointLog,
  readFrontierFile,
  signCheckpoint,
  type CheckpointerOptions,
  type SignedCheckpoint,
} from '../../src/receipt/checkpoint.js';
import { leafHash, merkleRoot } from '../../src/receipt/merkle.js';
import type { SealedReceipt } from '../../src/receipt/receipt.js';
import type { ReceiptRecord, ReceiptSource } from '../../src/receipt/store.js';
import { verificationKeys } from '../../src/receipt/verify.js';
import { recordingLogger } from '../helpers/service.js';
import { KEY, T0, sealedReceipts, tempDir } from './helpers.js';

const KEYS = verificationKeys([KEY]);
const OTHER = keyFromSeed(Buffer.alloc(32, 9));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** The checkpoint leaf of a receipt, computed here independently: v2 over the body (JCS without batch and signature), v1 over the line. */
function checkpointLeaf(line: string): Buffer {
  const { batch, signature, ...body } = JSON.parse(line) as { schema: string; batch?: unknown; signature?: unknown };
  void signature;
  return body.schema === 'chio.receipt.v2' && batch !== undefined ? leafHash(jcs(body)) : leafHash(line);
}
const rootOf = (receipts: readonly SealedReceipt[]): string => `sha256:${hex(merkleRoot(receipts.map((r) => checkpointLeaf(r.jcs))))}`;

/** A ReceiptSource over an array (what a sink holds). */
function arraySource(receipts: readonly SealedReceipt[]): ReceiptSource & { reads: number[] } {
  const reads: number[] = [];
  return {
    reads,
    async *iterateBySeq(fromSeq: number, toSeq = Number.MAX_SAFE_INTEGER): AsyncGenerator<ReceiptRecord> {
      reads.push(fromSeq);
      for (const r of receipts) if (r.receipt.seq >= fromSeq && r.receipt.seq <= toSeq) yield { seq: r.receipt.seq, jcs: r.jcs };
    },
    pruneThrough: async () => 0,
  };
}

function logLines(file: string): SignedCheckpoint[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => parseCheckpointLine(Buffer.from(l)));
}

const dirs: string[] = [];
afterEach(() => {
  vi.useRealTimers();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(receipts: readonly SealedReceipt[], extra: Partial<CheckpointerOptions> = {}) {
  const dir = tempDir('chio-checkpoint-');
  dirs.push(dir);
  const file = path.join(dir, 'checkpoints.jsonl');
  const log = recordingLogger();
  const last = receipts[receipts.length - 1];
  const options: CheckpointerOptions = {
    path: file,
    key: KEY,
    clock: () => T0 + 3_600_000,
    everyReceipts: 4,
    everySeconds: 60,
    source: arraySource(receipts),
    head: last === undefined ? null : { seq: last.receipt.seq, hash: last.hash },
    makeDurable: async () => undefined,
    log,
    ...extra,
  };
  return { dir, file, log, options };
}

describe('chio.checkpoint.v1', () => {
  const receipts = sealedReceipts(5);
  const first = signCheckpoint({ treeSize: 5, root: merkleRoot(receipts.map((r) => checkpointLeaf(r.jcs))), previous: null, timestamp: T0 }, KEY);

  it('is JCS with an Ed25519 signature over the JCS bytes without `signature` (checked with @noble/ed25519)', async () => {
    const { signature, ...unsigned } = first.checkpoint;
    expect(first.jcs).toBe(jcs(first.checkpoint));
    expect(Object.keys(JSON.parse(first.jcs) as object)).toEqual([
      'kernelKey',
      'previousCheckpointHash',
      'rootHash',
      'schema',
      'signature',
      'timestamp',
      'treeSize',
    ]);
    expect(unsigned).toEqual({
      schema: 'chio.checkpoint.v1',
      treeSize: 5,
      rootHash: rootOf(receipts),
      previousCheckpointHash: null,
      timestamp: '2026-11-24T00:00:00.000Z',
      kernelKey: KEY.kid,
    });
    const raw = Buffer.from(signature.slice('ed25519:'.length), 'base64url');
    expect(await ed.verifyAsync(raw, Buffer.from(jcs(unsigned)), KEY.publicKeyRaw)).toBe(true);
    expect(parseCheckpointLine(Buffer.from(first.jcs))).toEqual(first);
    expect(() => checkCheckpointSignature(first, KEYS)).not.toThrow();
  });

  it('names the previous checkpoint by the SHA-256 of its JCS bytes', () => {
    const second = signCheckpoint({ treeSize: 9, root: Buffer.alloc(32, 1), previous: first, timestamp: T0 + 1 }, KEY);
    expect(second.checkpoint.previousCheckpointHash).toBe(`sha256:${createHash('sha256').update(first.jcs).digest('hex')}`);
    expect(() => checkCheckpointLink(first, second)).not.toThrow();
    const forked = signCheckpoint({ treeSize: 9, root: Buffer.alloc(32, 1), previous: null, timestamp: T0 + 1 }, KEY);
    expect(() => checkCheckpointLink(first, forked)).toThrow(
      `previousCheckpointHash null does not match the previous checkpoint (treeSize 5) hash ${first.hash}`,
    );
    const shrunk = signCheckpoint({ treeSize: 5, root: Buffer.alloc(32, 1), previous: first, timestamp: T0 + 1 }, KEY);
    expect(() => checkCheckpointLink(first, shrunk)).toThrow("treeSize 5 does not grow from the previous checkpoint's 5");
  });

  it('refuses an altered, re-formatted, unknown-key or malformed checkpoint with the receipt codes', () => {
    const expectError = (fn: () => unknown, code: string, message: string): void => {
      try {
        fn();
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(CheckpointError);
        expect({ code: (err as CheckpointError).code, message: (err as Error).message }).toEqual({ code, message });
      }
    };
    const altered = Buffer.from(jcs({ ...first.checkpoint, treeSize: 6 }));
    expectError(() => checkCheckpointSignature(parseCheckpointLine(altered), KEYS), 'receipt_bad_signature', `the Ed25519 signature does not verify with key ${KEY.kid}`);
    expectError(() => checkCheckpointSignature(first, verificationKeys([OTHER])), 'receipt_bad_signature', `signed by key ${KEY.kid}, which is unknown: not among the 1 public key(s) given`);
    expectError(() => parseCheckpointLine(Buffer.from(JSON.stringify(first.checkpoint, null, 1))), 'receipt_malformed', "the line is not the checkpoint's canonical JSON (RFC 8785 JCS) text");
    expect(() => parseCheckpointLine(Buffer.from('{"schema":"chio.checkpoint.v1"'))).toThrow(/^not valid JSON: /);
    expectError(() => parseCheckpointLine(Buffer.from('[]')), 'receipt_malformed', 'not a chio.checkpoint.v1 checkpoint: checkpoint: Invalid input: expected object, received array');
    expectError(
      () => parseCheckpointLine(Buffer.from(jcs({ ...first.checkpoint, rootHash: 'sha256:xyz' }))),
      'receipt_malformed',
      'not a chio.checkpoint.v1 checkpoint: field rootHash: expected sha256:<64 hex>',
    );
  });
});

describe('Checkpointer', () => {
  it('checkpoints every N receipts at batch boundaries, chaining each to the previous, and saves the frontier', async () => {
    const receipts = sealedReceipts(11);
    const { file, options } = setup([]);
    const decided: number[] = [];
    const cp = await Checkpointer.open({ ...options, onDecided: (n) => decided.push(n) });
    cp.committed(receipts.slice(0, 3), true); // 3 < 4: nothing yet
    cp.committed(receipts.slice(3, 5), true); // 5: checkpoint
    cp.committed(receipts.slice(5, 7), true); // 7
    cp.committed(receipts.slice(7, 9), true); // 9: checkpoint
    cp.committed(receipts.slice(9, 11), true); // 11
    await cp.close(); // the rest is checkpointed at close
    expect(decided).toEqual([5, 9, 11]);
    const lines = logLines(file);
    expect(lines.map((c) => c.checkpoint.treeSize)).toEqual([5, 9, 11]);
    expect(lines.map((c) => c.checkpoint.rootHash)).toEqual([5, 9, 11].map((n) => rootOf(receipts.slice(0, n))));
    expect(lines.map((c) => c.checkpoint.previousCheckpointHash)).toEqual([null, lines[0]!.hash, lines[1]!.hash]);
    expect(await readCheckpointLog(file, KEYS, () => undefined)).toBeNull();
    const frontier = await readFrontierFile(checkpointStatePaths(file).frontier);
    expect(frontier?.size).toBe(11);
    expect(`sha256:${hex(frontier!.root())}`).toBe(rootOf(receipts));
  });

  it('checkpoints every T seconds when receipts are waiting, and not when none are', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const receipts = sealedReceipts(2);
    const { file, options } = setup([], { everyReceipts: 1000, everySeconds: 60 });
    const cp = await Checkpointer.open(options);
    vi.advanceTimersByTime(60_000);
    expect(await cp.checkpointNow()).toBeNull();
    cp.committed(receipts, true);
    vi.advanceTimersByTime(60_000);
    await vi.waitFor(() => expect(cp.latest?.checkpoint.treeSize).toBe(2));
    vi.advanceTimersByTime(120_000);
    await cp.close();
    expect(logLines(file).map((c) => c.checkpoint.treeSize)).toEqual([2]);
  });

  it('a checkpoint the timer makes due is decided at the next committed batch (where the files end), or after 50 ms without one', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'] });
    const receipts = sealedReceipts(7);
    const decided: number[] = [];
    const { file, options } = setup([], { everyReceipts: 1000, everySeconds: 60, onDecided: (n) => void decided.push(n) });
    const cp = await Checkpointer.open(options);
    cp.committed(receipts.slice(0, 3), true);
    vi.advanceTimersByTime(60_000); // due while (say) the next batch is being written: not decided at 3
    expect(decided).toEqual([]);
    cp.committed(receipts.slice(3, 5), true);
    expect(decided).toEqual([5]); // at the batch boundary, synchronously: where a segment can be cut
    cp.committed(receipts.slice(5, 7), true);
    vi.advanceTimersByTime(60_000);
    expect(decided).toEqual([5]);
    vi.advanceTimersByTime(50); // nothing committed meanwhile: idle, decided anyway
    expect(decided).toEqual([5, 7]);
    vi.useRealTimers();
    await cp.close();
    expect(logLines(file).map((c) => c.checkpoint.treeSize)).toEqual([5, 7]);
  });

  it('makes relaxed-mode receipts durable before a checkpoint covers them', async () => {
    const receipts = sealedReceipts(4);
    const events: string[] = [];
    const { options } = setup([], {
      makeDurable: async () => void events.push('flush'),
      onWritten: (c) => void events.push(`checkpoint ${c.checkpoint.treeSize}`),
    });
    const cp = await Checkpointer.open(options);
    cp.committed(receipts.slice(0, 2), false);
    cp.committed(receipts.slice(2, 4), true);
    await cp.close();
    expect(events).toEqual(['flush', 'checkpoint 4']);
  });

  it('a failed checkpoint is logged and retried on the timer or at close, not on every batch', async () => {
    const receipts = sealedReceipts(12);
    let flushes = 0;
    const { file, log, options } = setup([], {
      makeDurable: async () => {
        flushes++;
        if (flushes === 1) throw new Error('EIO: fsync failed');
      },
    });
    const cp = await Checkpointer.open(options);
    cp.committed(receipts.slice(0, 4), false); // due: the flush fails, nothing is written
    await cp.checkpointNow();
    expect(readFileSync(file, 'utf8')).toBe('');
    cp.committed(receipts.slice(4, 8), false); // no retry storm: waits for the timer or close
    cp.committed(receipts.slice(8, 12), false);
    expect(flushes).toBe(1);
    await cp.close();
    expect(flushes).toBe(2);
    expect(logLines(file).map((c) => [c.checkpoint.treeSize, c.checkpoint.rootHash])).toEqual([[12, rootOf(receipts)]]);
    expect(log.entries.map((e) => [e.level, e.msg, e.obj])).toEqual([['error', 'cannot write a receipt checkpoint', { err: 'EIO: fsync failed', treeSize: 4 }]]);
  });

  it('after a restart, continues from the saved frontier plus the receipts after it, linking to the last checkpoint', async () => {
    const receipts = sealedReceipts(10);
    const { file, options } = setup([]);
    const cp = await Checkpointer.open(options);
    cp.committed(receipts.slice(0, 4), true);
    await cp.checkpointNow();
    cp.committed(receipts.slice(4, 6), true); // 6 receipts durable, checkpointed through 4
    await cp.close(); // also checkpoints 6
    // A crash after the checkpoint at 6 but before its frontier was saved: the state says 4.
    const cp4 = logLines(file)[0]!;
    writeFileSync(file, `${cp4.jcs}\n`);
    const source = arraySource(receipts.slice(0, 8));
    const again = await Checkpointer.open({ ...options, source, head: { seq: 8, hash: receipts[7]!.hash } });
    expect(again.treeSize).toBe(8);
    expect(again.latest).toEqual(cp4);
    expect(source.reads).toEqual([1]); // the frontier file says 6 > the log's 4: not trusted, rebuilt from leaf 0
    again.committed(receipts.slice(8, 10), true);
    await again.close();
    // 8 - 4 >= everyReceipts: a checkpoint of 8 at once, then 10 at close
    const lines = logLines(file);
    expect(lines.map((c) => c.checkpoint.treeSize)).toEqual([4, 8, 10]);
    expect(lines.map((c) => c.checkpoint.previousCheckpointHash)).toEqual([null, cp4.hash, lines[1]!.hash]);
    expect(lines.map((c) => c.checkpoint.rootHash)).toEqual([4, 8, 10].map((n) => rootOf(receipts.slice(0, n))));
  });

  it('reads only the receipts after the saved frontier when it matches the latest checkpoint', async () => {
    const receipts = sealedReceipts(7);
    const { options } = setup([]);
    const cp = await Checkpointer.open(options);
    cp.committed(receipts.slice(0, 5), true);
    await cp.close();
    const source = arraySource(receipts);
    const again = await Checkpointer.open({ ...options, source, head: { seq: 7, hash: receipts[6]!.hash } });
    expect(source.reads).toEqual([6]);
    expect(again.treeSize).toBe(7);
    await again.close();
  });

  it('refuses to start when the receipts do not match a signed checkpoint, or are fewer than it covers', async () => {
    const receipts = sealedReceipts(6);
    const { file, options } = setup([]);
    const cp = await Checkpointer.open(options);
    cp.committed(receipts, true);
    await cp.close();
    rmSync(checkpointStatePaths(file).frontier);
    const altered = [...receipts];
    altered[2] = sealedReceipts(3, { seq: 2, hash: receipts[1]!.hash }, 99)[0]!;
    const head = { seq: 6, hash: receipts[5]!.hash };
    await expect(Checkpointer.open({ ...options, source: arraySource(altered), head })).rejects.toMatchObject({
      code: 'receipt_chain_broken',
      message: expect.stringContaining(`the receipts 1..6 do not match the signed checkpoint of ${file}`),
    });
    await expect(Checkpointer.open({ ...options, source: arraySource(receipts.slice(0, 4)), head: { seq: 4, hash: receipts[3]!.hash } })).rejects.toMatchObject({
      code: 'receipt_chain_broken',
      message: `${file}: the latest checkpoint covers 6 receipts but the receipt sinks hold only 4: checkpointed receipts are missing (restore them, or move ${file} and its state files away to start a new log)`,
    });
  });

  it('truncates a torn last line of the checkpoint log (a crash mid-append) and warns', async () => {
    const receipts = sealedReceipts(4);
    const { file, log, options } = setup([]);
    const cp = await Checkpointer.open(options);
    cp.committed(receipts, true);
    await cp.close();
    const good = readFileSync(file, 'utf8');
    appendFileSync(file, '{"kernelKey":"abc');
    const again = await Checkpointer.open({ ...options, source: arraySource(receipts), head: { seq: 4, hash: receipts[3]!.hash } });
    await again.close();
    expect(readFileSync(file, 'utf8')).toBe(good);
    expect(log.entries.filter((e) => e.level === 'warn').map((e) => e.msg)).toEqual([
      'checkpoint file had a torn last line (crash mid-write); truncated it',
    ]);
  });

  it('stops (and says so) when a batch does not follow the tree', async () => {
    const receipts = sealedReceipts(6);
    const { file, log, options } = setup([]);
    const cp = await Checkpointer.open(options);
    cp.committed(receipts.slice(0, 2), true);
    cp.committed(receipts.slice(3, 6), true);
    await cp.close();
    expect(readFileSync(file, 'utf8')).toBe('');
    expect(log.entries.map((e) => [e.level, e.msg, e.obj])).toEqual([
      ['error', 'checkpointing stopped: the receipt tree no longer follows the chain', { err: 'checkpointer: receipt seq 4 committed, expected 3' }],
    ]);
  });
});

describe('GET /v1/checkpoints/latest', () => {
  it('answers the latest checkpoint as its exact JCS text, or 404 before the first', () => {
    const signed = signCheckpoint({ treeSize: 1, root: Buffer.alloc(32, 3), previous: null, timestamp: T0 }, KEY);
    expect(checkpointResponse(signed)).toEqual({ status: 200, headers: { 'content-type': 'application/json' }, body: `${signed.jcs}\n` });
    expect(checkpointResponse(null)).toEqual({
      status: 404,
      headers: { 'content-type': 'application/json' },
      body: '{"error":{"code":"not_found","message":"no receipt checkpoint has been written yet"}}\n',
    });
  });
});

describe('receipts.checkpoints and receipts.retention in chio.yaml', () => {
  const base = ['schema: chio.config.v1', 'policy: ./p.yaml', 'keys: { receipt_signing_seed: ./k.seed }', 'receipts:'];
  const parse = (...lines: string[]) => parseConfig([...base, ...lines].join('\n'), '/srv/chio/chio.yaml', '/srv/chio');

  it('defaults to a checkpoint every 1000 receipts or 60 s, retention off; durations and paths are parsed', () => {
    const defaults = parse('  durability: strict').receipts;
    expect(defaults.checkpoints).toEqual({ every_receipts: 1000, every_seconds: 60, path: undefined });
    expect(defaults.retention).toBeUndefined();
    expect(parse('  retention: { max_age: 30d }', '  checkpoints: { path: ./audit/checkpoints.jsonl, every_seconds: 5 }').receipts).toMatchObject({
      checkpoints: { every_receipts: 1000, every_seconds: 5, path: '/srv/chio/audit/checkpoints.jsonl' },
      retention: { max_age: 30 * 86_400_000, segment_max_bytes: 64 * 1024 * 1024, check_every: 3_600_000 },
    });
  });

  it('refuses bad values with the YAML path and line', () => {
    const cases: Array<[string, string]> = [
      ['  retention: { max_age: 30y }', '/srv/chio/chio.yaml:5:16: receipts.retention.max_age: expected a duration like 30d, 12h, 90m or 3600s'],
      ['  checkpoints: { every_receipts: 0 }', '/srv/chio/chio.yaml:5:18: receipts.checkpoints.every_receipts: Too small: expected number to be >=1'],
      ['  checkpoints: { bogus: 1 }', '/srv/chio/chio.yaml:5:18: receipts.checkpoints.bogus: unknown key "bogus"'],
    ];
    for (const [line, message] of cases) expect(() => parse(line)).toThrow(expect.objectContaining({ code: 'config_invalid', message }));
  });
});

describe('linesBackwards', () => {
  it('yields every complete line from the last to the first with its offset, across chunk boundaries, skipping a torn tail', async () => {
    const { open } = await import('node:fs/promises');
    const dir = tempDir('chio-lines-');
    dirs.push(dir);
    const file = path.join(dir, 'lines');
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 40_000 })), { maxLength: 12 }),
        fc.integer({ min: 0, max: 300 }),
        async (lengths, torn) => {
          const content = lengths.map((n, i) => `${String.fromCharCode(97 + (i % 26)).repeat(n)}\n`).join('') + 'z'.repeat(torn);
          writeFileSync(file, content);
          const fh = await open(file, 'r');
          const got: Array<[number, string]> = [];
          try {
            for await (const l of linesBackwards(fh, Buffer.byteLength(content))) got.push([l.start, l.bytes.toString()]);
          } finally {
            await fh.close();
          }
          const want: Array<[number, string]> = [];
          let at = 0;
          for (const [i, n] of lengths.entries()) {
            want.push([at, String.fromCharCode(97 + (i % 26)).repeat(n)]);
            at += n + 1;
          }
          expect(got).toEqual(want.reverse());
        },
      ),
      { numRuns: 100 },
    );
  });
});
