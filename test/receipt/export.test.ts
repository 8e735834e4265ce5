/**
 * Export bundles, their offline verification and retention, on logs written by the real service
 * (gRPC Checks → receipts → checkpoints), plus the JSONL segment machinery underneath.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { anchorForFile } from '../../src/cli/receipt-export.js';
import { keyFromSeed, type SigningKey } from '../../src/keys.js';
import { verifyBundle, type BundleVerifyResult } from '../../src/receipt/bundle-verify.js';
import { jcs } from '../../src/receipt/canonical.js';
import { checkpointStatePaths, parseCheckpointLine, readFrontierFile, signCheckpoint } from '../../src/receipt/checkpoint.js';
import { exportBundle, type BundleManifest } from '../../src/receipt/export.js';
import {
  JsonlReceiptFiles,
  SegmentedJsonlSink,
  listSegments,
  newestCheckpointAtOrBefore,
  pruneReceipts,
  receiptSeqOf,
} from '../../src/receipt/retention.js';
import { JsonlSink } from '../../src/receipt/sinks/jsonl.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
import { fixtureRequest, startTestService, type TestService } from '../helpers/service.js';
import { CHAIN, KEY, T0, sealedReceipts } from './helpers.js';

const MINUTE = 60_000;
const DAY = 86_400_000;
const START = Date.parse('2026-12-01T00:00:00Z');

function serviceConfig(receiptsExtra: string[]): () => string {
  return () =>
    [
      'schema: chio.config.v1',
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts:',
      '  sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ]',
      ...receiptsExtra.map((l) => `  ${l}`),
      '',
    ].join('\n');
}

/** `n` Checks, each one minute after the previous (receipt k is stamped START + k minutes on a fresh service). */
async function sendChecks(svc: TestService, clock: { now: number }, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    clock.now += MINUTE;
    await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
  }
}

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}

function writeLines(file: string, content: readonly string[]): void {
  writeFileSync(file, content.map((l) => `${l}\n`).join(''));
}

const TOOL = { name: 'chio-authz', version: 'test' };
const work = mkdtempSync(path.join(tmpdir(), 'chio-export-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('a bundle exported from a real service run', () => {
  const clock = { now: START };
  let svc: TestService;
  let data: string;
  let key: SigningKey;
  let bundle: string;
  let manifest: BundleManifest;
  let latestServed: { status: number; text: string };
  let receipts: string[];

  beforeAll(async () => {
    svc = await startTestService({ clock: () => clock.now, configText: serviceConfig(['checkpoints: { every_receipts: 3, every_seconds: 3600 }']) });
    key = svc.service.key;
    data = path.dirname(svc.receiptsFile);
    await sendChecks(svc, clock, 10);
    const res = await fetch(`${svc.adminUrl}/v1/checkpoints/latest`);
    latestServed = { status: res.status, text: await res.text() };
    await svc.service.close(); // checkpoints the 10th receipt; keeps the files
    receipts = lines(svc.receiptsFile);
    bundle = path.join(work, 'bundle');
    manifest = await exportBundle({
      source: new JsonlReceiptFiles(svc.receiptsFile),
      checkpointsPath: path.join(data, 'checkpoints.jsonl'),
      outDir: bundle,
      since: START + 3 * MINUTE,
      until: START + 9 * MINUTE,
      keys: [key],
      now: clock.now,
      tool: TOOL,
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  const idOf = (seq: number): string => (JSON.parse(receipts[seq - 1]!) as { id: string }).id;

  /** A copy of the bundle, edited, verified with the service's key pinned. */
  async function tampered(name: string, edit: (dir: string) => void): Promise<BundleVerifyResult> {
    const dir = path.join(work, name);
    cpSync(bundle, dir, { recursive: true });
    edit(dir);
    return verifyBundle(dir, verificationKeys([key]));
  }
  const receiptsOf = (dir: string): string => path.join(dir, 'receipts.jsonl');

  it('serves the latest checkpoint publicly and writes one every 3 receipts (and at shutdown)', () => {
    expect(latestServed.status).toBe(200);
    const served = parseCheckpointLine(Buffer.from(latestServed.text.trimEnd()));
    expect(served.checkpoint.treeSize).toBe(9);
    const log = lines(path.join(data, 'checkpoints.jsonl')).map((l) => parseCheckpointLine(Buffer.from(l)).checkpoint);
    expect(log.map((c) => c.treeSize)).toEqual([3, 6, 9, 10]);
    expect(log[2]).toEqual(served.checkpoint);
    expect(log.map((c) => c.timestamp)).toEqual([3, 6, 9, 10].map((k) => new Date(START + k * MINUTE).toISOString()));
  });

  it('holds the range, exact lines, proofs against the covering checkpoints and the chain to the latest', () => {
    expect(manifest).toEqual({
      schema: 'chio.receipt-bundle.v1',
      tool: TOOL,
      createdAt: new Date(START + 10 * MINUTE).toISOString(),
      range: { since: new Date(START + 3 * MINUTE).toISOString(), until: new Date(START + 9 * MINUTE).toISOString() },
      receipts: { count: 6, firstSeq: 3, lastSeq: 8, firstId: idOf(3), lastId: idOf(8) },
      checkpoints: { count: 4, firstTreeSize: 3, latestTreeSize: 10 },
      notYetCheckpointed: { count: 0, firstSeq: null, lastSeq: null },
    });
    expect(readdirSync(bundle).sort()).toEqual([
      'bounds-proofs.jsonl',
      'bounds.jsonl',
      'checkpoints.jsonl',
      'consistency.jsonl',
      'keys.json',
      'manifest.json',
      'proofs.jsonl',
      'receipts.jsonl',
      'retention-checkpoint.jsonl',
    ]);
    expect(readFileSync(path.join(bundle, 'retention-checkpoint.jsonl'), 'utf8')).toBe(''); // nothing was pruned
    expect(lines(receiptsOf(bundle))).toEqual(receipts.slice(2, 8));
    // the receipts just outside the range, seq 2 (stamped before since) and seq 9 (at until), with their proofs
    expect(lines(path.join(bundle, 'bounds.jsonl'))).toEqual([receipts[1], receipts[8]]);
    const boundProofs = lines(path.join(bundle, 'bounds-proofs.jsonl')).map((l) => JSON.parse(l) as { seq: number; id: string; leafIndex: number; treeSize: number });
    expect(boundProofs.map((p) => [p.seq, p.id, p.leafIndex, p.treeSize])).toEqual([[2, idOf(2), 1, 3], [9, idOf(9), 8, 9]]);
    const proofs = lines(path.join(bundle, 'proofs.jsonl')).map((l) => JSON.parse(l) as { seq: number; id: string; leafIndex: number; treeSize: number });
    expect(proofs.map((p) => [p.seq, p.id, p.leafIndex, p.treeSize])).toEqual([3, 4, 5, 6, 7, 8].map((s) => [s, idOf(s), s - 1, s <= 3 ? 3 : s <= 6 ? 6 : 9]));
    expect(lines(path.join(bundle, 'checkpoints.jsonl'))).toEqual(lines(path.join(data, 'checkpoints.jsonl')));
    const consistency = lines(path.join(bundle, 'consistency.jsonl')).map((l) => JSON.parse(l) as { fromTreeSize: number; toTreeSize: number });
    expect(consistency.map((c) => [c.fromTreeSize, c.toTreeSize])).toEqual([[3, 6], [6, 9], [9, 10]]);
    expect(JSON.parse(readFileSync(path.join(bundle, 'keys.json'), 'utf8'))).toEqual({
      keys: [{ kty: 'OKP', crv: 'Ed25519', x: key.publicKeyRaw.toString('base64url'), kid: key.kid }],
    });
  });

  it('verifies offline, with the bundle keys or pinned ones', async () => {
    const complete = { start: 'bound', end: 'bound' };
    const chain = (JSON.parse(receipts[0]!) as { chain: string }).chain;
    const expected = { ok: true, receipts: 6, firstSeq: 3, lastSeq: 8, checkpoints: 4, latestTreeSize: 10, consistencyProofs: 3, chain, complete, kids: [key.kid], firstFailure: null };
    expect(await verifyBundle(bundle, null)).toEqual({ ...expected, keys: 'bundle' });
    expect(await verifyBundle(bundle, verificationKeys([key]))).toEqual({ ...expected, keys: 'given' });
  });

  it('an empty range is proven empty by the two receipts around it; an emptied bundle is caught', async () => {
    const empty = path.join(work, 'empty-range');
    const m = await exportBundle({
      source: new JsonlReceiptFiles(svc.receiptsFile),
      checkpointsPath: path.join(data, 'checkpoints.jsonl'),
      outDir: empty,
      since: START + 4 * MINUTE + 30_000,
      until: START + 4 * MINUTE + 50_000,
      keys: [key],
      now: clock.now,
      tool: TOOL,
    });
    expect(m.receipts).toEqual({ count: 0, firstSeq: null, lastSeq: null, firstId: null, lastId: null });
    expect(lines(path.join(empty, 'bounds.jsonl'))).toEqual([receipts[3], receipts[4]]);
    expect(await verifyBundle(empty, verificationKeys([key]))).toMatchObject({ ok: true, receipts: 0, complete: { start: 'bound', end: 'bound' } });

    const stripped = path.join(work, 'empty-stripped');
    cpSync(empty, stripped, { recursive: true });
    for (const f of ['bounds.jsonl', 'bounds-proofs.jsonl']) writeFileSync(path.join(stripped, f), '');
    expect((await verifyBundle(stripped, verificationKeys([key]))).firstFailure?.message).toBe(
      'the bundle holds no receipts and does not prove its range empty: bounds.jsonl needs the receipts just before and after it (receipts may have been removed; --open-ends accepts this)',
    );
    expect(await verifyBundle(stripped, verificationKeys([key]), { openEnds: true })).toMatchObject({ ok: true, complete: { start: 'open', end: 'open' } });

    const emptied = await tampered('emptied', (dir) => {
      for (const f of ['receipts.jsonl', 'proofs.jsonl']) writeFileSync(path.join(dir, f), '');
      const file = path.join(dir, 'manifest.json');
      const manifestText = JSON.parse(readFileSync(file, 'utf8')) as BundleManifest;
      writeFileSync(file, JSON.stringify({ ...manifestText, receipts: { count: 0, firstSeq: null, lastSeq: null, firstId: null, lastId: null } }));
    });
    expect(emptied.firstFailure).toMatchObject({ file: 'bounds.jsonl', line: 2, seq: 9, code: 'receipt_chain_broken', message: 'the receipts around an empty range must be adjacent: seq 2 and 9 are not' });
  });

  it('names an altered receipt exactly', async () => {
    const r = await tampered('altered', (dir) => {
      const l = lines(receiptsOf(dir));
      l[1] = jcs({ ...(JSON.parse(l[1]!) as object), verdict: 'deny' });
      writeLines(receiptsOf(dir), l);
    });
    expect(r.firstFailure).toMatchObject({ file: 'receipts.jsonl', line: 2, id: idOf(4), seq: 4, code: 'receipt_bad_signature' });
    expect(r.firstFailure?.message).toMatch(/^the receipt is not in its signed batch: its body's audit path leads to sha256:[0-9a-f]{64}, not to batch\.root sha256:[0-9a-f]{64} \(the receipt was altered\)$/);
    expect(r.receipts).toBe(1);
  });

  it('names a deleted receipt exactly: in the middle, the first, the last, and with its proof line gone too', async () => {
    const drop = (name: string, files: string[], index: number) =>
      tampered(name, (dir) => {
        for (const f of files) {
          const l = lines(path.join(dir, f));
          l.splice(index, 1);
          writeLines(path.join(dir, f), l);
        }
      });
    expect((await drop('deleted-middle', ['receipts.jsonl'], 2)).firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 3,
      id: idOf(5),
      seq: 5,
      code: 'receipt_chain_broken',
      message: `receipt seq 5 (${idOf(5)}) is missing (deleted from the bundle): line 3 holds seq 6 (${idOf(6)}) where it belongs`,
    });
    expect((await drop('deleted-first', ['receipts.jsonl'], 0)).firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 1,
      id: idOf(3),
      seq: 3,
      code: 'receipt_chain_broken',
      message: `receipt seq 3 (${idOf(3)}) is missing (deleted from the bundle): line 1 holds seq 4 (${idOf(4)}) where it belongs`,
    });
    expect((await drop('deleted-last', ['receipts.jsonl'], 5)).firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 6,
      id: idOf(8),
      seq: 8,
      code: 'receipt_chain_broken',
      message: `receipt seq 8 (${idOf(8)}) is missing: receipts.jsonl ends after line 5, but proofs.jsonl line 6 proves it (deleted from the bundle)`,
    });
    expect((await drop('deleted-with-proof', ['receipts.jsonl', 'proofs.jsonl'], 2)).firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 3,
      id: null,
      seq: 5,
      code: 'receipt_chain_broken',
      message: `receipt seq 5 is missing (deleted from the bundle): line 3 holds seq 6 (${idOf(6)}) where it belongs`,
    });
  });

  it('catches the last receipt deleted with its proof line through the manifest', async () => {
    const r = await tampered('deleted-last-with-proof', (dir) => {
      for (const f of ['receipts.jsonl', 'proofs.jsonl']) writeLines(path.join(dir, f), lines(path.join(dir, f)).slice(0, -1));
    });
    expect(r.firstFailure).toEqual({
      file: 'manifest.json',
      line: null,
      id: idOf(8),
      seq: 8,
      code: 'receipt_chain_broken',
      message: `the manifest lists 6 receipt(s) through seq 8 (${idOf(8)}), but receipts.jsonl holds 5 through seq 7: receipts were removed from the bundle`,
    });
  });

  it('names reordered receipts exactly', async () => {
    const r = await tampered('reordered', (dir) => {
      const l = lines(receiptsOf(dir));
      [l[1], l[2]] = [l[2]!, l[1]!];
      writeLines(receiptsOf(dir), l);
    });
    expect(r.firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 2,
      id: idOf(5),
      seq: 5,
      code: 'receipt_chain_broken',
      message: `receipts out of order: line 2 holds seq 5 (${idOf(5)}) where receipt seq 4 (${idOf(4)}) belongs; receipt seq 4 (${idOf(4)}) is at line 3`,
    });
  });

  it('catches a tampered checkpoint, a removed one and a forged consistency proof', async () => {
    const cpFile = (dir: string): string => path.join(dir, 'checkpoints.jsonl');
    const edited = await tampered('checkpoint-altered', (dir) => {
      const l = lines(cpFile(dir));
      l[1] = jcs({ ...(JSON.parse(l[1]!) as object), rootHash: `sha256:${'0'.repeat(64)}` });
      writeLines(cpFile(dir), l);
    });
    expect(edited.firstFailure).toEqual({
      file: 'checkpoints.jsonl',
      line: 2,
      id: null,
      seq: null,
      code: 'receipt_bad_signature',
      message: `checkpoint of treeSize 6: the Ed25519 signature does not verify with key ${key.kid}`,
    });
    const log = lines(path.join(data, 'checkpoints.jsonl')).map((l) => parseCheckpointLine(Buffer.from(l)));
    const removed = await tampered('checkpoint-removed', (dir) => writeLines(cpFile(dir), lines(cpFile(dir)).filter((_, i) => i !== 1)));
    expect(removed.firstFailure).toEqual({
      file: 'checkpoints.jsonl',
      line: 2,
      id: null,
      seq: null,
      code: 'receipt_chain_broken',
      message: `checkpoint of treeSize 9: previousCheckpointHash ${log[1]!.hash} does not match the previous checkpoint (treeSize 3) hash ${log[0]!.hash}`,
    });
    const forged = await tampered('consistency-forged', (dir) => {
      const file = path.join(dir, 'consistency.jsonl');
      const l = lines(file);
      const proof = JSON.parse(l[0]!) as { fromTreeSize: number; toTreeSize: number; proof: string[] };
      proof.proof[0] = `${proof.proof[0]!.slice(0, 63)}${proof.proof[0]!.endsWith('0') ? '1' : '0'}`;
      l[0] = jcs(proof);
      writeLines(file, l);
    });
    expect(forged.firstFailure).toEqual({
      file: 'consistency.jsonl',
      line: 1,
      id: null,
      seq: null,
      code: 'receipt_chain_broken',
      message: 'the consistency proof from treeSize 3 to 6 does not verify: the checkpoint of treeSize 6 does not extend the one of treeSize 3',
    });
  });

  it('catches a forged audit path and a checkpoint signed by another key', async () => {
    const r = await tampered('proof-forged', (dir) => {
      const file = path.join(dir, 'proofs.jsonl');
      const l = lines(file);
      const proof = JSON.parse(l[3]!) as { auditPath: string[] };
      proof.auditPath[1] = 'ab'.repeat(32);
      l[3] = jcs(proof);
      writeLines(file, l);
    });
    expect(r.firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 4,
      id: idOf(6),
      seq: 6,
      code: 'receipt_chain_broken',
      message: 'the receipt is not included in the signed checkpoint of treeSize 6: its audit path (proofs.jsonl line 4) does not lead to the signed root',
    });
    const other = keyFromSeed(Buffer.alloc(32, 5));
    const resigned = await tampered('checkpoint-resigned', (dir) => {
      const file = path.join(dir, 'checkpoints.jsonl');
      const l = lines(file);
      const first = parseCheckpointLine(Buffer.from(l[0]!)).checkpoint;
      l[0] = signCheckpoint({ treeSize: first.treeSize, root: Buffer.from(first.rootHash.slice(7), 'hex'), previous: null, timestamp: Date.parse(first.timestamp) }, other).jcs;
      writeLines(file, l);
    });
    expect(resigned.firstFailure).toEqual({
      file: 'checkpoints.jsonl',
      line: 1,
      id: null,
      seq: null,
      code: 'receipt_bad_signature',
      message: `checkpoint of treeSize 3: signed by key ${other.kid}, which is unknown: not among the 1 public key(s) given`,
    });
  });

  it('leaves out (and counts) receipts that no checkpoint covers yet', async () => {
    const raw = path.join(work, 'uncheckpointed');
    cpSync(data, raw, { recursive: true });
    const cps = lines(path.join(raw, 'checkpoints.jsonl'));
    writeLines(path.join(raw, 'checkpoints.jsonl'), cps.slice(0, 2)); // the log as it was at treeSize 6
    const m = await exportBundle({
      source: new JsonlReceiptFiles(path.join(raw, 'receipts.jsonl')),
      checkpointsPath: path.join(raw, 'checkpoints.jsonl'),
      outDir: path.join(raw, 'bundle'),
      since: START,
      until: START + DAY,
      keys: [key],
      now: clock.now,
      tool: TOOL,
    });
    // the range it names ends at the stamp of the last checkpointed receipt (seq 6), which is its bound:
    // every receipt stamped before it is in the bundle, the ones after are counted as not checkpointed
    expect(m.receipts).toEqual({ count: 5, firstSeq: 1, lastSeq: 5, firstId: idOf(1), lastId: idOf(5) });
    expect(m.notYetCheckpointed).toEqual({ count: 4, firstSeq: 7, lastSeq: 10 });
    const r6 = JSON.parse(lines(path.join(raw, 'receipts.jsonl'))[5]!) as { timestamp: string };
    expect(m.range).toEqual({ since: new Date(START).toISOString(), until: r6.timestamp });
    expect(await verifyBundle(path.join(raw, 'bundle'), null)).toMatchObject({ ok: true, complete: { start: 'chain', end: 'bound' } });
    // without its bound, a bundle that ends at the latest checkpoint proves nothing of the receipts after
    // it: receipts cut from the end with the checkpoints after them verified as whole (CLI review, twice)
    writeFileSync(path.join(raw, 'bundle', 'bounds.jsonl'), '');
    writeFileSync(path.join(raw, 'bundle', 'bounds-proofs.jsonl'), '');
    expect((await verifyBundle(path.join(raw, 'bundle'), null)).firstFailure).toMatchObject({
      file: 'bounds.jsonl',
      code: 'receipt_chain_broken',
      message: `the bundle does not prove where its range ends: receipt seq 6, the one after its last, is not in bounds.jsonl and its last is not the latest checkpoint's (receipts may have been cut from the end; --open-ends accepts this)`,
    });
  });

  it('refuses to export a log whose receipts do not match its signed checkpoints', async () => {
    const raw = path.join(work, 'rewritten');
    cpSync(data, raw, { recursive: true });
    const l = lines(path.join(raw, 'receipts.jsonl'));
    l[4] = jcs({ ...(JSON.parse(l[4]!) as object), verdict: 'deny' });
    writeLines(path.join(raw, 'receipts.jsonl'), l);
    await expect(
      exportBundle({
        source: new JsonlReceiptFiles(path.join(raw, 'receipts.jsonl')),
        checkpointsPath: path.join(raw, 'checkpoints.jsonl'),
        outDir: path.join(raw, 'bundle'),
        since: START,
        until: START + DAY,
        keys: [key],
        now: clock.now,
        tool: TOOL,
      }),
    ).rejects.toMatchObject({ code: 'receipt_chain_broken', message: expect.stringMatching(/checkpoints\.jsonl line 2: the receipts 1\.\.6 have root sha256:[0-9a-f]{64}, not the signed sha256:[0-9a-f]{64}: the receipt files were altered$/) });
  });
});

describe('retention', () => {
  it('rotates at checkpoints, prunes only whole checkpointed segments older than max_age, and what remains verifies', async () => {
    const clock = { now: START };
    // ~1 KB receipts: 3 stay under 4000 bytes, 6 go over it
    const svc = await startTestService({
      clock: () => clock.now,
      configText: serviceConfig([
        'checkpoints: { every_receipts: 3, every_seconds: 3600 }',
        'retention: { max_age: 1d, segment_max_bytes: 4000, check_every: 1s }',
      ]),
    });
    const data = path.dirname(svc.receiptsFile);
    const checkpointsPath = path.join(data, 'checkpoints.jsonl');
    const keys = verificationKeys([svc.service.key]);
    try {
      await sendChecks(svc, clock, 3); // checkpoint 3 at START+3m: live file under 4000 bytes, no rotation
      clock.now += 2 * DAY;
      await sendChecks(svc, clock, 3); // checkpoint 6 (young): live file over 4000 bytes, rotate at the next write
      await sendChecks(svc, clock, 3); // receipt 7 starts a new segment; checkpoint 9; pruning: checkpoint 3 is old
      await svc.service.close();
      expect((await listSegments(svc.receiptsFile)).map((s) => [path.basename(s.path), s.first, s.last])).toEqual([['receipts-1-6.jsonl', 1, 6]]);
      // checkpoint 3 is the newest one older than a day, but segment 1-6 also holds young receipts: kept whole
      expect(existsSync(checkpointStatePaths(checkpointsPath).anchor)).toBe(false);
      expect(lines(svc.receiptsFile).map((l) => receiptSeqOf(Buffer.from(l)))).toEqual([7, 8, 9]);

      // two days later, everything up to checkpoint 9 is old: segment 1-6 goes, the live file stays
      const later = await pruneReceipts({
        checkpointsPath,
        maxAgeMs: DAY,
        now: clock.now + 2 * DAY,
        source: new JsonlReceiptFiles(svc.receiptsFile),
        targets: [new SegmentedJsonlSink(svc.receiptsFile)],
      });
      expect(later).toEqual({ through: 6, deleted: 6 }); // checkpoint 9 is old, but only whole segments go
      expect((await readFrontierFile(checkpointStatePaths(checkpointsPath).anchor))?.size).toBe(6);
      expect(readdirSync(data).sort()).toEqual(['checkpoints.anchor.json', 'checkpoints.frontier.json', 'checkpoints.jsonl', 'kernel.seed', 'receipts.jsonl', 'receipts.jsonl.lock']);
      expect(lines(checkpointsPath).map((l) => parseCheckpointLine(Buffer.from(l)).checkpoint.treeSize)).toEqual([3, 6, 9]);

      // what remains verifies: the file anchored after seq 6, a bundle with proofs from the anchor
      expect(await verifyReceiptFile(svc.receiptsFile, keys, { after: { seq: 6, hash: null } })).toMatchObject({ ok: true, receipts: 3 });
      // `chio receipt verify FILE` finds the receipts before it accounted for: pruned through the anchor's seq 6
      expect(await anchorForFile(svc.receiptsFile, { checkpoints: undefined, fromCheckpoint: false }, keys)).toMatchObject({ after: { seq: 6 }, failure: null });
      const out = path.join(work, 'after-retention');
      const m = await exportBundle({ source: new JsonlReceiptFiles(svc.receiptsFile), checkpointsPath, outDir: out, since: START, until: clock.now + DAY, keys: [svc.service.key], now: clock.now, tool: TOOL });
      expect(m.receipts).toMatchObject({ count: 2, firstSeq: 7, lastSeq: 8 }); // seq 9, the last checkpointed, is its bound
      // its start: receipts 1..6 were pruned at the signed checkpoint of treeSize 6, which the bundle carries
      expect(readFileSync(path.join(out, 'retention-checkpoint.jsonl'), 'utf8')).toBe(`${lines(checkpointsPath)[1]}\n`);
      expect(await verifyBundle(out, keys)).toMatchObject({ ok: true, receipts: 2, firstSeq: 7, lastSeq: 8, checkpoints: 1, complete: { start: 'pruned', end: 'bound' } });
      // the range starts after the checkpoint retention pruned at (every pruned receipt is stamped before it)
      const cp6Time = (JSON.parse(lines(checkpointsPath)[1]!) as { timestamp: string }).timestamp;
      expect(m.range.since).toBe(new Date(Date.parse(cp6Time) + 1).toISOString());
      // a since before that checkpoint: pruned receipts may be of the range (receipts cut from the start looked pruned: CLI review)
      const earlier = path.join(work, 'after-retention-since-edited');
      cpSync(out, earlier, { recursive: true });
      writeFileSync(path.join(earlier, 'manifest.json'), JSON.stringify({ ...m, range: { ...m.range, since: new Date(START).toISOString() } }));
      expect((await verifyBundle(earlier, keys)).firstFailure).toMatchObject({
        file: 'bounds.jsonl',
        message: `the bundle does not prove where its range starts: retention pruned at the checkpoint of treeSize 6, signed ${cp6Time}, not before since ${new Date(START).toISOString()}: receipts of the range may be among those gone (--open-ends accepts this)`,
      });
      const without = path.join(work, 'after-retention-stripped');
      cpSync(out, without, { recursive: true });
      writeFileSync(path.join(without, 'retention-checkpoint.jsonl'), '');
      expect((await verifyBundle(without, keys)).firstFailure).toEqual({
        file: 'bounds.jsonl',
        line: null,
        id: null,
        seq: 6,
        code: 'receipt_chain_broken',
        message:
          'the bundle does not prove where its range starts: receipt seq 6, the one before its first, is not in bounds.jsonl (receipts may have been cut from the start, or it was pruned by retention; --open-ends accepts this)',
      });
      expect(await verifyBundle(without, keys, { openEnds: true })).toMatchObject({ ok: true, complete: { start: 'open', end: 'bound' } });
      writeFileSync(path.join(without, 'retention-checkpoint.jsonl'), `${lines(checkpointsPath)[0]}\n`); // the checkpoint of treeSize 3
      expect((await verifyBundle(without, keys)).firstFailure).toMatchObject({ file: 'retention-checkpoint.jsonl', line: 1, code: 'receipt_chain_broken' });

      // and the service starts again on what remains, continuing the tree from its saved state
      const again = await startTestService({ clock: () => clock.now, configText: () => readFileSync(path.join(svc.dir, 'chio.yaml'), 'utf8') });
      await again.close();
    } finally {
      await svc.close();
    }
  });

  it('refuses to prune when the receipts under the checkpoint were altered, and deletes nothing', async () => {
    const dir = mkdtempSync(path.join(work, 'prune-'));
    const live = path.join(dir, 'receipts.jsonl');
    const sealed = sealedReceipts(6);
    writeLines(path.join(dir, 'receipts-1-3.jsonl'), sealed.slice(0, 3).map((s) => s.jcs));
    writeLines(live, sealed.slice(3).map((s) => s.jcs));
    const checkpointsPath = path.join(dir, 'checkpoints.jsonl');
    const other = sealedReceipts(3, null, 50);
    const { merkleRoot, leafHash } = await import('../../src/receipt/merkle.js');
    const cp = signCheckpoint({ treeSize: 3, root: merkleRoot(other.map((s) => leafHash(s.jcs))), previous: null, timestamp: T0 }, KEY);
    writeLines(checkpointsPath, [cp.jcs]);
    const files = new JsonlReceiptFiles(live);
    await expect(
      pruneReceipts({ checkpointsPath, maxAgeMs: DAY, now: T0 + 2 * DAY, source: files, targets: [new SegmentedJsonlSink(live)] }),
    ).rejects.toMatchObject({ code: 'receipt_chain_broken', message: `refusing to prune: the receipts 1..3 do not match the signed checkpoint of treeSize 3 in ${checkpointsPath}` });
    expect(existsSync(path.join(dir, 'receipts-1-3.jsonl'))).toBe(true);
    expect(existsSync(checkpointStatePaths(checkpointsPath).anchor)).toBe(false);
  });
});

describe('pruning through a segment whose checkpoint was never written', () => {
  it('prunes only through a segment end that is a signed checkpoint: the anchor stays one receipt verify accepts', async () => {
    const dir = mkdtempSync(path.join(work, 'prune-unsigned-'));
    const live = path.join(dir, 'receipts.jsonl');
    const sealed = sealedReceipts(10);
    // segments cut at 3 and at 6, but the checkpoint of 6 failed to be written (ENOSPC): checkpoints 3, 7, 10
    writeLines(path.join(dir, 'receipts-1-3.jsonl'), sealed.slice(0, 3).map((s) => s.jcs));
    writeLines(path.join(dir, 'receipts-4-6.jsonl'), sealed.slice(3, 6).map((s) => s.jcs));
    writeLines(live, sealed.slice(6).map((s) => s.jcs));
    const checkpointsPath = path.join(dir, 'checkpoints.jsonl');
    const { merkleRoot } = await import('../../src/receipt/merkle.js');
    let previous: ReturnType<typeof signCheckpoint> | null = null;
    const cps: string[] = [];
    for (const size of [3, 7, 10]) {
      const cp: ReturnType<typeof signCheckpoint> = signCheckpoint({ treeSize: size, root: merkleRoot(sealed.slice(0, size).map((s) => s.leaf)), previous, timestamp: T0 }, KEY);
      cps.push(cp.jcs);
      previous = cp;
    }
    writeLines(checkpointsPath, cps);
    const result = await pruneReceipts({ checkpointsPath, maxAgeMs: DAY, now: T0 + 2 * DAY, source: new JsonlReceiptFiles(live), targets: [new SegmentedJsonlSink(live)] });
    expect(result).toEqual({ through: 3, deleted: 3 });
    expect((await readFrontierFile(checkpointStatePaths(checkpointsPath).anchor))?.size).toBe(3);
    expect(existsSync(path.join(dir, 'receipts-4-6.jsonl'))).toBe(true);
    const anchor = await anchorForFile(path.join(dir, 'receipts-4-6.jsonl'), { checkpoints: undefined, fromCheckpoint: false }, verificationKeys([KEY]));
    expect(anchor.failure).toBeNull();
  });
});

describe('JSONL segments', () => {
  it('reads the receipts across segments and the live file from any seq (seeking from the end when nearer)', async () => {
    const dir = mkdtempSync(path.join(work, 'segments-'));
    const live = path.join(dir, 'receipts.jsonl');
    const sealed = sealedReceipts(40);
    writeLines(path.join(dir, 'receipts-1-15.jsonl'), sealed.slice(0, 15).map((s) => s.jcs));
    writeLines(path.join(dir, 'receipts-16-30.jsonl'), sealed.slice(15, 30).map((s) => s.jcs));
    writeLines(live, sealed.slice(30).map((s) => s.jcs));
    const files = new JsonlReceiptFiles(live);
    expect((await files.files()).map((f) => [path.basename(f.path), f.first, f.last])).toEqual([
      ['receipts-1-15.jsonl', 1, 15],
      ['receipts-16-30.jsonl', 16, 30],
      ['receipts.jsonl', 31, 40],
    ]);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 42 }), fc.integer({ min: 0, max: 42 }), async (from, span) => {
        const got: number[] = [];
        for await (const r of files.iterateBySeq(from, from + span)) {
          expect(r.jcs).toBe(sealed[r.seq - 1]!.jcs);
          got.push(r.seq);
        }
        const want = sealed.map((s) => s.receipt.seq).filter((s) => s >= from && s <= from + span);
        expect(got).toEqual(want);
      }),
      { numRuns: 40 },
    );
  });

  it('takes the chain head from the newest segment when the live file is empty or missing (a crash right after a rotation)', async () => {
    const dir = mkdtempSync(path.join(work, 'rotated-'));
    const live = path.join(dir, 'receipts.jsonl');
    const sealed = sealedReceipts(5);
    writeLines(path.join(dir, 'receipts-1-5.jsonl'), sealed.map((s) => s.jcs));
    const sink = new SegmentedJsonlSink(live);
    expect(await sink.open()).toEqual({ seq: 5, hash: sealed[4]!.hash, chain: CHAIN });
    const next = sealedReceipts(2, { seq: 5, hash: sealed[4]!.hash });
    await sink.write(next, true);
    await sink.rewind({ seq: 5, hash: sealed[4]!.hash }); // a batch another sink failed: back to the segment's end
    expect(readFileSync(live, 'utf8')).toBe('');
    await sink.write(next, true);
    await sink.close();
    expect(lines(live)).toEqual(next.map((s) => s.jcs));
  });

  it('rotates the live file only at a checkpoint boundary and only once it is big enough', async () => {
    const dir = mkdtempSync(path.join(work, 'rotate-'));
    const live = path.join(dir, 'receipts.jsonl');
    const sealed = sealedReceipts(9);
    const sink = new SegmentedJsonlSink(live, { segmentMaxBytes: sealed[0]!.jcs.length * 3 });
    await sink.open();
    await sink.write(sealed.slice(0, 2), true);
    sink.rotateAt(2); // under the size: no rotation
    await sink.write(sealed.slice(2, 4), true);
    sink.rotateAt(4); // big enough: the next write starts a new segment
    await sink.write(sealed.slice(4, 6), true);
    sink.rotateAt(5); // not where the file ends (a write went in between): no rotation
    await sink.write(sealed.slice(6, 9), true);
    await sink.close();
    expect((await listSegments(live)).map((s) => path.basename(s.path))).toEqual(['receipts-1-4.jsonl']);
    expect(lines(live)).toEqual(sealed.slice(4).map((s) => s.jcs));
    expect(await new SegmentedJsonlSink(live).pruneThrough(3)).toBe(0);
    expect(await new SegmentedJsonlSink(live).pruneThrough(4)).toBe(4);
  });

  it('a rotation whose new live file cannot be created fails that write only: the next write opens it and goes on (was: the sink stayed closed)', async () => {
    const dir = mkdtempSync(path.join(work, 'rotate-reopen-'));
    const live = path.join(dir, 'receipts.jsonl');
    const sealed = sealedReceipts(6);
    const errors: string[] = [];
    const sink = new SegmentedJsonlSink(live, { segmentMaxBytes: 1, onRotationError: (err) => void errors.push(String((err as Error).message)) });
    await sink.open();
    await sink.write(sealed.slice(0, 2), true);
    sink.rotateAt(2);
    const open = vi.spyOn(JsonlSink.prototype, 'open').mockRejectedValueOnce(new Error('ENOSPC: no space left on device'));
    try {
      await expect(sink.write(sealed.slice(2, 4), true)).rejects.toThrow('ENOSPC: no space left on device');
      expect(errors).toEqual(['ENOSPC: no space left on device']);
      await sink.write(sealed.slice(2, 4), true); // space again: the retry opens the live file first
      await sink.write(sealed.slice(4, 6), true);
    } finally {
      open.mockRestore();
      await sink.close();
    }
    expect((await listSegments(live)).map((s) => path.basename(s.path))).toEqual(['receipts-1-2.jsonl']);
    expect(lines(live)).toEqual(sealed.slice(2).map((s) => s.jcs));
  });

  it('finds the newest checkpoint at or before a time by binary search, as a linear scan would', async () => {
    const dir = mkdtempSync(path.join(work, 'search-'));
    const file = path.join(dir, 'checkpoints.jsonl');
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 0, maxLength: 25 }), fc.integer({ min: -1, max: 130 }), async (gaps, probe) => {
        let t = 0;
        let previous = null;
        const written: Array<{ at: number; treeSize: number }> = [];
        const out: string[] = [];
        for (const [i, gap] of gaps.entries()) {
          t += gap;
          const cp = signCheckpoint({ treeSize: i + 1, root: Buffer.alloc(32, i), previous, timestamp: T0 + t * MINUTE }, KEY);
          previous = cp;
          out.push(cp.jcs);
          written.push({ at: T0 + t * MINUTE, treeSize: i + 1 });
        }
        writeLines(file, out);
        const cutoff = T0 + probe * MINUTE;
        const want = [...written].reverse().find((w) => w.at <= cutoff)?.treeSize ?? null;
        expect((await newestCheckpointAtOrBefore(file, cutoff))?.checkpoint.treeSize ?? null).toBe(want);
      }),
      { numRuns: 60 },
    );
    expect(await newestCheckpointAtOrBefore(path.join(dir, 'missing.jsonl'), T0)).toBeNull();
  });
});
