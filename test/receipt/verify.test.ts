import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { keyFromSeed, type SigningKey } from '../../src/keys.js';
import { jcs } from '../../src/receipt/canonical.js';
import { MerkleTree } from '../../src/receipt/merkle.js';
import { ReceiptChain, receiptHash, type ChainHead, type Receipt, type ReceiptDraft, type SealedReceipt } from '../../src/receipt/receipt.js';
import {
  MAX_RECEIPT_LINE_BYTES,
  ReceiptChainVerifier,
  formatFailure,
  verificationKeys,
  verifyReceiptFile,
  verifyReceiptText,
  type VerifyFailure,
} from '../../src/receipt/verify.js';
import { KEY as V1_KEY, v1Lines } from './helpers.js';

const KEY = keyFromSeed(Buffer.alloc(32, 9));
const OTHER_KEY = keyFromSeed(Buffer.alloc(32, 10));
const KEYS = verificationKeys([KEY]);
const CHAIN = 'chn-01JD0000000000000000000009';
const T0 = Date.UTC(2026, 10, 25, 21, 30, 0, 123);
const DRAFT: ReceiptDraft = {
  verdict: 'allow',
  rule: 'payments_write',
  tool: 'transfer_funds',
  capabilityId: null,
  reasons: [],
  request: { id: 'req', method: 'POST', host: 'payments', path: '/v1/transfers', source: '10.0.0.7:51234' },
  runtimeAttestation: {
    tier: 'attested',
    verifier: 'envoy',
    workloadIdentity: {
      scheme: 'spiffe',
      credentialKind: 'uri',
      uri: 'spiffe://prod.chio/payments/worker',
      trustDomain: 'prod.chio',
      path: '/payments/worker',
    },
  },
  workloadIdentityMatch: { mode: 'require', matched: true },
  runtimeAssuranceMatch: null,
  policyHash: `sha256:${'ef'.repeat(32)}`,
};

/** A v2 chain sealed in batches of the given sizes (as the writer does at group commit). */
function makeChain(sizes: readonly number[], options: { key?: SigningKey; head?: ChainHead | null; chainId?: string; newId?: () => string } = {}): SealedReceipt[] {
  const chain = new ReceiptChain({
    key: options.key ?? KEY,
    clock: () => T0,
    head: options.head ?? null,
    chainId: options.chainId ?? options.head?.chain ?? CHAIN,
    ...(options.newId ? { newId: options.newId } : {}),
  });
  const out: SealedReceipt[] = [];
  for (const size of sizes) out.push(...chain.sealBatch(Array.from({ length: size }, (_, i) => chain.next({ ...DRAFT, request: { ...DRAFT.request, id: `req-${out.length + i + 1}` } }))));
  return out;
}

async function verifyLines(lines: string[], trailer = '\n', keys = KEYS) {
  const file = join(mkdtempSync(join(tmpdir(), 'chio-verify-')), 'receipts.jsonl');
  writeFileSync(file, lines.length === 0 ? '' : lines.join('\n') + trailer);
  return verifyReceiptFile(file, keys);
}

async function firstFailure(lines: string[], trailer = '\n', keys = KEYS): Promise<VerifyFailure> {
  const result = await verifyLines(lines, trailer, keys);
  expect(result.ok).toBe(false);
  if (result.firstFailure === null) throw new Error('expected a failure');
  return result.firstFailure;
}

/** Batches: seq 1 | 2–5 | 6–12 | 13–15 | 16–20 (edges at lines 1, 5, 12, 15, 20). */
const SIZES = [1, 4, 7, 3, 5];
const chain20 = makeChain(SIZES);
const lines20 = chain20.map((s) => s.jcs);
const at = (i: number): SealedReceipt => chain20[i - 1]!; // by line number
const receiptAt = (i: number): Receipt => at(i).receipt as Receipt;

describe('verifyReceiptFile (chio.receipt.v2)', () => {
  it('accepts a chain of N receipts in batches', async () => {
    expect(await verifyLines(lines20)).toEqual({
      ok: true,
      receipts: 20,
      head: { seq: 20, hash: at(20).hash },
      chain: CHAIN,
      firstFailure: null,
    });
  });

  it('accepts an empty file', async () => {
    expect(await verifyLines([])).toEqual({ ok: true, receipts: 0, head: null, chain: null, firstFailure: null });
  });

  it('every receipt of a batch verifies alone: body → leaf → proof → root → signature', () => {
    for (const s of chain20) expect(verifyReceiptText(s.jcs, KEYS)).toEqual({ ok: true, seq: s.seq, id: s.id, chain: CHAIN, hash: s.hash });
  });

  it('catches an altered field at its line (the body no longer leads to the signed root)', async () => {
    const altered = [...lines20];
    altered[6] = jcs({ ...receiptAt(7), verdict: 'deny' }); // still canonical; its leaf changed
    const failure = await firstFailure(altered);
    expect(failure).toMatchObject({ line: 7, id: at(7).id, seq: 7, code: 'receipt_bad_signature' });
    expect(failure.message).toMatch(
      new RegExp(`^the receipt is not in its signed batch: its body's audit path leads to sha256:[0-9a-f]{64}, not to batch.root ${receiptAt(7).batch.root} \\(the receipt was altered\\)$`),
    );
  });

  it('catches an altered signature at its line', async () => {
    const altered = [...lines20];
    const sig = receiptAt(12).signature;
    const flipped = `ed25519:${sig.slice(8, 20)}${sig[20] === 'A' ? 'B' : 'A'}${sig.slice(21)}`;
    altered[11] = jcs({ ...receiptAt(12), signature: flipped });
    expect(await firstFailure(altered)).toEqual({
      line: 12,
      id: at(12).id,
      seq: 12,
      code: 'receipt_bad_signature',
      message: `the Ed25519 signature over batch seq 6–12 does not verify with key ${KEY.kid}`,
    });
  });

  it('catches any single byte change in any receipt at exactly that line (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 19 }), fc.nat(), fc.integer({ min: 0, max: 255 }), async (index, position, byte) => {
        const bytes = Buffer.from(lines20[index]!, 'utf8');
        const p = position % bytes.length;
        fc.pre(bytes[p] !== byte);
        bytes[p] = byte;
        const file = join(mkdtempSync(join(tmpdir(), 'chio-verify-')), 'receipts.jsonl');
        writeFileSync(file, Buffer.concat([...lines20.map((l, i) => (i === index ? bytes : Buffer.from(l, 'utf8'))).flatMap((b) => [b, Buffer.from('\n')])]));
        const result = await verifyReceiptFile(file, KEYS);
        expect(result.ok).toBe(false);
        expect(result.firstFailure?.line).toBe(index + 1);
        expect(result.receipts).toBe(index);
      }),
      { numRuns: 150 },
    );
  });

  it('catches a pair swapped inside a batch at the first of them', async () => {
    const swapped = [...lines20];
    [swapped[7], swapped[8]] = [lines20[8]!, lines20[7]!]; // seq 8 and 9, both in the batch 6–12
    expect(await firstFailure(swapped)).toEqual({
      line: 8,
      id: at(9).id,
      seq: 9,
      code: 'receipt_chain_broken',
      message: 'seq 9 does not follow the previous receipt (seq 7): expected seq 8',
    });
  });

  it('catches a receipt deleted in the middle of a batch, naming the receipt after the gap', async () => {
    const deleted = lines20.filter((_, i) => i !== 9); // drop seq 10 (batch 6–12)
    expect(await firstFailure(deleted)).toEqual({
      line: 10,
      id: at(11).id,
      seq: 11,
      code: 'receipt_chain_broken',
      message: 'seq 11 does not follow the previous receipt (seq 9): expected seq 10',
    });
  });

  it('catches a receipt deleted at a batch edge (the last of one batch, the first of the next)', async () => {
    expect(await firstFailure(lines20.filter((_, i) => i !== 11))).toEqual({
      line: 12,
      id: at(13).id,
      seq: 13,
      code: 'receipt_chain_broken',
      message: 'seq 13 does not follow the previous receipt (seq 11): expected seq 12',
    });
    expect(await firstFailure(lines20.filter((_, i) => i !== 12))).toMatchObject({
      line: 13,
      id: at(14).id,
      seq: 14,
      message: 'seq 14 does not follow the previous receipt (seq 12): expected seq 13',
    });
  });

  it('catches the last receipt deleted: the file ends inside its batch, named at the new last line', async () => {
    const result = await verifyLines(lines20.slice(0, 19));
    expect(result).toEqual({
      ok: false,
      receipts: 19,
      head: { seq: 19, hash: at(19).hash },
      chain: CHAIN,
      firstFailure: {
        line: 19,
        id: at(19).id,
        seq: 19,
        code: 'receipt_chain_broken',
        message: "the file ends inside a batch: this receipt is leaf 3 of a batch of 5, so receipt seq 20 is missing after it (deleted, or a crash cut the batch's write short)",
      },
    });
    expect((await firstFailure(lines20.slice(0, 17))).message).toBe(
      "the file ends inside a batch: this receipt is leaf 1 of a batch of 5, so receipts seq 18–20 are missing after it (deleted, or a crash cut the batch's write short)",
    );
  });

  it('catches a deleted first line', async () => {
    expect(await firstFailure(lines20.slice(1))).toMatchObject({
      line: 1,
      seq: 2,
      code: 'receipt_chain_broken',
      message: 'the first receipt has seq 2; a chain starts at seq 1 (the receipts before it are missing)',
    });
  });

  it('catches a batch signature moved to a receipt of another batch', async () => {
    const moved = [...lines20];
    moved[13] = jcs({ ...receiptAt(14), signature: receiptAt(8).signature }); // batch 6–12's signature on seq 14
    expect(await firstFailure(moved)).toEqual({
      line: 14,
      id: at(14).id,
      seq: 14,
      code: 'receipt_bad_signature',
      message: `the Ed25519 signature over batch seq 13–15 does not verify with key ${KEY.kid}`,
    });
    const movedBatch = [...lines20];
    movedBatch[13] = jcs({ ...receiptAt(14), batch: receiptAt(7).batch, signature: receiptAt(7).signature }); // batch member and signature of seq 7
    const failure = await firstFailure(movedBatch);
    expect(failure).toMatchObject({ line: 14, id: at(14).id, seq: 14, code: 'receipt_bad_signature' });
    expect(failure.message).toMatch(/^the receipt is not in its signed batch: /);
  });

  it('catches leaves of two batches of the same receipts mixed (each verifies alone, the chain links, the batches differ)', async () => {
    const fixedIds = (): (() => string) => {
      let n = 0;
      return () => `rct-01JD${String(++n).padStart(22, '0')}`;
    };
    const a = makeChain([4], { newId: fixedIds() }); // seq 1–4 as one batch
    const b = makeChain([2, 2], { newId: fixedIds() }); // the same bodies as two batches
    expect(b[1]!.hash).toBe(a[1]!.hash);
    const failure = await firstFailure([a[0]!.jcs, b[1]!.jcs, a[2]!.jcs, a[3]!.jcs]);
    expect(failure).toEqual({
      line: 2,
      id: b[1]!.id,
      seq: 2,
      code: 'receipt_chain_broken',
      message: `leaf 1 of a batch follows leaf 0 of another batch (root ${(a[0]!.receipt as Receipt).batch.root}): receipts of different batches are mixed`,
    });
    // leaf 0 of a new batch after an incomplete one is what a crash leaves (the chain links, nothing is missing): accepted
    expect((await verifyLines([a[0]!.jcs, a[1]!.jcs, b[2]!.jcs, b[3]!.jcs])).ok).toBe(true);
  });

  it('catches an inserted copy of a genuine receipt', async () => {
    const inserted = [...lines20.slice(0, 15), lines20[2]!, ...lines20.slice(15)];
    expect(await firstFailure(inserted)).toMatchObject({ line: 16, seq: 3, code: 'receipt_chain_broken' });
  });

  it('catches an inserted receipt signed by an unknown key', async () => {
    const forged = makeChain([1], { key: OTHER_KEY, head: { seq: 8, hash: at(8).hash, chain: CHAIN } })[0]!;
    const inserted = [...lines20.slice(0, 8), forged.jcs, ...lines20.slice(8)];
    expect(await firstFailure(inserted)).toEqual({
      line: 9,
      id: forged.id,
      seq: 9,
      code: 'receipt_bad_signature',
      message: `signed by key ${OTHER_KEY.kid}, which is unknown: not among the 1 public key(s) given (${KEY.kid})`,
    });
  });

  it('catches an inserted fork (a valid continuation of line 8) at the receipt after it', async () => {
    const fork = makeChain([1], { head: { seq: 8, hash: at(8).hash, chain: CHAIN } })[0]!;
    const inserted = [...lines20.slice(0, 8), fork.jcs, ...lines20.slice(8)];
    // a fork at leaf 0 after an incomplete batch looks like a crash's cut; the genuine receipt after it cannot follow it
    expect(await firstFailure(inserted)).toEqual({
      line: 10,
      id: at(9).id,
      seq: 9,
      code: 'receipt_chain_broken',
      message: 'seq 9 does not follow the previous receipt (seq 9): expected seq 10',
    });
    // after a whole batch, the fork itself fits; the genuine receipt after it does not
    const fork13 = makeChain([1], { head: { seq: 12, hash: at(12).hash, chain: CHAIN } })[0]!;
    const failure = await firstFailure([...lines20.slice(0, 12), fork13.jcs, ...lines20.slice(12)]);
    expect(failure).toMatchObject({ line: 14, seq: 13, code: 'receipt_chain_broken' });
    expect(failure.message).toBe('seq 13 does not follow the previous receipt (seq 13): expected seq 14');
  });

  it('catches a prevHash that does not match the previous line', async () => {
    const relinked = makeChain([1], { head: { seq: 15, hash: `sha256:${'0'.repeat(64)}`, chain: CHAIN } })[0]!;
    const lines = [...lines20.slice(0, 15), relinked.jcs];
    const failure = await firstFailure(lines);
    expect(failure).toEqual({
      line: 16,
      id: relinked.id,
      seq: 16,
      code: 'receipt_chain_broken',
      message: `prevHash sha256:${'0'.repeat(64)} does not match the previous receipt (seq 15) hash ${at(15).hash}`,
    });
    expect(formatFailure(failure)).toBe(
      `line 16 (${relinked.id}, seq 16): receipt_chain_broken: prevHash sha256:${'0'.repeat(64)} does not match the previous receipt (seq 15) hash ${at(15).hash}`,
    );
  });

  it('catches a second chain id in one file', async () => {
    const other = makeChain([1], { head: { seq: 20, hash: at(20).hash }, chainId: 'chn-01JD0000000000000000000010' })[0]!;
    expect(await firstFailure([...lines20, other.jcs])).toMatchObject({
      line: 21,
      seq: 21,
      code: 'receipt_chain_broken',
      message: `chain chn-01JD0000000000000000000010 is not the chain of the receipts before it (${CHAIN}): two chains are mixed in one file`,
    });
  });

  it('accepts a batch a crash cut short when the chain continues from its last written receipt (a new batch at leaf 0)', async () => {
    const first = makeChain([3, 4]); // seq 1–3 | 4–7
    const cut = first.slice(0, 5); // seq 4, 5 of the second batch written, 6–7 lost in the crash
    const resumed = makeChain([2], { head: { seq: 5, hash: cut[4]!.hash, chain: CHAIN } });
    const result = await verifyLines([...cut, ...resumed].map((s) => s.jcs));
    expect(result).toMatchObject({ ok: true, receipts: 7, head: { seq: 7, hash: resumed[1]!.hash } });
  });

  it('reports a torn tail after the last complete line', async () => {
    const result = await verifyLines([...lines20.slice(0, 5), at(6).jcs.slice(0, 100)], '');
    expect(result).toEqual({
      ok: false,
      receipts: 5,
      head: { seq: 5, hash: at(5).hash },
      chain: CHAIN,
      firstFailure: {
        line: 6,
        id: null,
        seq: null,
        code: 'receipt_torn_tail',
        message:
          'the file ends with 100 bytes and no newline (a write cut short, expected receipt seq 6); `chio serve` moves such a tail to <file>.torn-<timestamp> when it opens the file',
      },
    });
    expect(formatFailure(result.firstFailure!)).toMatch(/^line 6: receipt_torn_tail: the file ends with 100 bytes/);
  });

  it('reports malformed lines precisely', async () => {
    const r3 = receiptAt(3);
    const pretty = JSON.stringify(r3, null, 1).replace(/\n/g, '');
    const reordered = JSON.stringify(Object.fromEntries(Object.entries(r3).reverse())); // valid JSON, members out of JCS order
    const extra = jcs({ ...r3, note: 'x' });
    const badSeq = jcs({ ...r3, seq: 0 });
    const badIndex = jcs({ ...r3, batch: { ...r3.batch, index: 4 } });
    const badChain = jcs({ ...r3, chain: 'chain-1' });
    const cases: Array<[string, Partial<VerifyFailure>]> = [
      ['{"schema":', { id: null, seq: null, message: expect.stringMatching(/^not valid JSON: /) as unknown as string }],
      ['', { message: 'empty line' }],
      ['[1,2]', { message: 'not a chio.receipt.v2 receipt: receipt: Invalid input: expected object, received array' }],
      [pretty, { id: at(3).id, seq: 3, message: "the line is not the receipt's canonical JSON (RFC 8785 JCS) text" }],
      [reordered, { message: "the line is not the receipt's canonical JSON (RFC 8785 JCS) text" }],
      [extra, { message: 'not a chio.receipt.v2 receipt: receipt: Unrecognized key: "note"' }],
      [badSeq, { seq: 0, message: 'not a chio.receipt.v2 receipt: field seq: Too small: expected number to be >=1' }],
      [badIndex, { message: 'not a chio.receipt.v2 receipt: field batch: batch.index must be below batch.size' }],
      [badChain, { message: 'not a chio.receipt.v2 receipt: field chain: expected chn-<ULID>' }],
    ];
    for (const [line, expected] of cases) {
      const failure = await firstFailure([lines20[0]!, lines20[1]!, line, ...lines20.slice(3)]);
      expect(failure).toMatchObject({ line: 3, code: 'receipt_malformed', ...expected });
    }
  });

  it('reports invalid UTF-8 and an overlong line as malformed', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'chio-verify-')), 'receipts.jsonl');
    writeFileSync(file, Buffer.concat([Buffer.from(`${lines20[0]}\n`), Buffer.from([0xff, 0xfe, 0x0a])]));
    expect((await verifyReceiptFile(file, KEYS)).firstFailure).toMatchObject({ line: 2, message: 'the line is not valid UTF-8' });
    writeFileSync(file, Buffer.concat([Buffer.from(`${lines20[0]}\n`), Buffer.alloc(MAX_RECEIPT_LINE_BYTES + 10, 0x20)]));
    expect((await verifyReceiptFile(file, KEYS)).firstFailure).toEqual({
      line: 2,
      id: null,
      seq: null,
      code: 'receipt_malformed',
      message: `the line is longer than ${MAX_RECEIPT_LINE_BYTES} bytes: not a receipt`,
    });
  });

  it('verifies receipts signed by several known keys (key rotation)', async () => {
    const first = makeChain([2]);
    const rotated = makeChain([1], { key: OTHER_KEY, head: { seq: 2, hash: first[1]!.hash, chain: CHAIN } });
    const lines = [...first, ...rotated].map((s) => s.jcs);
    expect((await verifyLines(lines, '\n', verificationKeys([KEY, OTHER_KEY]))).ok).toBe(true);
    expect((await firstFailure(lines)).code).toBe('receipt_bad_signature');
  });

  it('a file that starts after pruning may start mid-batch', async () => {
    const verifier = new ReceiptChainVerifier(KEYS, { after: { seq: 7, hash: at(7).hash } });
    for (const line of lines20.slice(7)) expect(verifier.line(Buffer.from(line))).toBeNull();
    expect(verifier.finish()).toBeNull();
    expect(verifier.head).toEqual({ seq: 20, hash: at(20).hash });
  });

  it('throws file_not_found for a missing file', async () => {
    const file = join(tmpdir(), 'chio-no-such-dir', 'receipts.jsonl');
    await expect(verifyReceiptFile(file, KEYS)).rejects.toThrow(new ChioError('file_not_found', `receipt file ${file} does not exist`));
  });
});

describe('batches of every size (property)', () => {
  it('random batch sizes 1..300: each receipt verifies alone, proofs and roots are RFC 6962, and the file verifies', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 3 }), async (sizes) => {
        const receipts = makeChain(sizes);
        let start = 0;
        for (const size of sizes) {
          const batch = receipts.slice(start, start + size);
          const tree = MerkleTree.fromLeafHashes(batch.map((s) => s.leaf));
          batch.forEach((s, i) => {
            const r = s.receipt as Receipt;
            expect(r.batch).toEqual({
              index: i,
              size,
              root: `sha256:${tree.root().toString('hex')}`,
              proof: tree.inclusionProof(i).map((h) => h.toString('hex')),
            });
            expect(verifyReceiptText(s.jcs, KEYS).ok).toBe(true);
          });
          start += size;
        }
        const result = await verifyLines(receipts.map((s) => s.jcs));
        expect(result).toMatchObject({ ok: true, receipts: receipts.length });
      }),
      { numRuns: 12 },
    );
  });
});

describe('verifyReceiptText', () => {
  it('names what is wrong with one receipt', () => {
    expect(verifyReceiptText(jcs({ ...receiptAt(4), tool: 'other' }), KEYS)).toMatchObject({ ok: false, id: at(4).id, seq: 4, code: 'receipt_bad_signature' });
    expect(verifyReceiptText('{"id":"x"', KEYS)).toMatchObject({ ok: false, id: null, seq: null, code: 'receipt_malformed' });
    expect(verifyReceiptText(at(4).jcs, verificationKeys([OTHER_KEY]))).toMatchObject({ ok: false, code: 'receipt_bad_signature' });
  });
});

describe('chio.receipt.v1 and mixed files', () => {
  const V1_KEYS = verificationKeys([V1_KEY]);

  it('verifies a v1 file as before (signature per receipt, prevHash = SHA-256 of the previous line)', async () => {
    const lines = v1Lines(5);
    expect(await verifyLines(lines, '\n', V1_KEYS)).toEqual({
      ok: true,
      receipts: 5,
      head: { seq: 5, hash: receiptHash(lines[4]!) },
      chain: null,
      firstFailure: null,
    });
    const altered = [...lines];
    altered[2] = jcs({ ...JSON.parse(lines[2]!), verdict: 'deny' });
    expect(await firstFailure(altered, '\n', V1_KEYS)).toMatchObject({ line: 3, code: 'receipt_bad_signature', message: `the Ed25519 signature does not verify with key ${V1_KEY.kid}` });
  });

  it('verifies a file upgraded mid-way: v1 receipts, then v2 ones whose first names the last v1 line', async () => {
    const old = v1Lines(4);
    const v2 = makeChain([3, 2], { key: V1_KEY, head: { seq: 4, hash: receiptHash(old[3]!) } });
    const result = await verifyLines([...old, ...v2.map((s) => s.jcs)], '\n', V1_KEYS);
    expect(result).toEqual({ ok: true, receipts: 9, head: { seq: 9, hash: v2[4]!.hash }, chain: CHAIN, firstFailure: null });
  });

  it('refuses a v1 receipt after v2 ones, and a v2 receipt that does not name the last v1 line', async () => {
    const old = v1Lines(2);
    const v2 = makeChain([1], { key: V1_KEY, head: { seq: 2, hash: receiptHash(old[1]!) } });
    const after = v1Lines(1, v2[0]!.hash, 4);
    expect(await firstFailure([...old, v2[0]!.jcs, ...after], '\n', V1_KEYS)).toEqual({
      line: 4,
      id: JSON.parse(after[0]!).id,
      seq: 4,
      code: 'receipt_chain_broken',
      message: `a chio.receipt.v1 receipt after chio.receipt.v2 receipts (chain ${CHAIN}): receipts are never written in the old format after the new one`,
    });
    const unlinked = makeChain([1], { key: V1_KEY, head: { seq: 2, hash: `sha256:${'1'.repeat(64)}` } });
    expect(await firstFailure([...old, unlinked[0]!.jcs], '\n', V1_KEYS)).toMatchObject({ line: 3, code: 'receipt_chain_broken' });
  });
});
