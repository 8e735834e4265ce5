import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { keyFromSeed } from '../../src/keys.js';
import { jcs } from '../../src/receipt/canonical.js';
import { ReceiptChain, receiptHash, type ReceiptDraft, type SealedReceipt } from '../../src/receipt/receipt.js';
import {
  MAX_RECEIPT_LINE_BYTES,
  formatFailure,
  verificationKeys,
  verifyReceiptFile,
  type VerifyFailure,
} from '../../src/receipt/verify.js';

const KEY = keyFromSeed(Buffer.alloc(32, 9));
const OTHER_KEY = keyFromSeed(Buffer.alloc(32, 10));
const KEYS = verificationKeys([KEY]);
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

function makeChain(n: number, key = KEY): SealedReceipt[] {
  const chain = new ReceiptChain({ key, clock: () => T0, head: null });
  return Array.from({ length: n }, () => chain.seal(DRAFT));
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

const chain20 = makeChain(20);
const lines20 = chain20.map((s) => s.jcs);
const at = (i: number): SealedReceipt => chain20[i - 1]!; // by line number

describe('verifyReceiptFile', () => {
  it('accepts a chain of N receipts', async () => {
    expect(await verifyLines(lines20)).toEqual({
      ok: true,
      receipts: 20,
      head: { seq: 20, hash: at(20).hash },
      firstFailure: null,
    });
  });

  it('accepts an empty file', async () => {
    expect(await verifyLines([])).toEqual({ ok: true, receipts: 0, head: null, firstFailure: null });
  });

  it('catches an altered field at its line (bad signature)', async () => {
    const altered = [...lines20];
    altered[6] = jcs({ ...at(7).receipt, verdict: 'deny' }); // still canonical, signature no longer matches
    expect(await firstFailure(altered)).toEqual({
      line: 7,
      id: at(7).receipt.id,
      seq: 7,
      code: 'receipt_bad_signature',
      message: `the Ed25519 signature does not verify with key ${KEY.kid}`,
    });
  });

  it('catches an altered signature at its line', async () => {
    const altered = [...lines20];
    const sig = at(12).receipt.signature;
    const flipped = `ed25519:${sig.slice(8, 20)}${sig[20] === 'A' ? 'B' : 'A'}${sig.slice(21)}`;
    altered[11] = jcs({ ...at(12).receipt, signature: flipped });
    expect(await firstFailure(altered)).toMatchObject({ line: 12, seq: 12, code: 'receipt_bad_signature' });
  });

  it('catches a deleted line where the gap starts', async () => {
    const deleted = lines20.filter((_, i) => i !== 9); // drop seq 10
    expect(await firstFailure(deleted)).toEqual({
      line: 10,
      id: at(11).receipt.id,
      seq: 11,
      code: 'receipt_chain_broken',
      message: 'seq 11 does not follow the previous receipt (seq 9): expected seq 10',
    });
  });

  it('catches a deleted first line', async () => {
    expect(await firstFailure(lines20.slice(1))).toMatchObject({
      line: 1,
      seq: 2,
      code: 'receipt_chain_broken',
      message: 'the first receipt has seq 2; a chain starts at seq 1 (the receipts before it are missing)',
    });
  });

  it('catches swapped lines at the first of them', async () => {
    const swapped = [...lines20];
    [swapped[4], swapped[5]] = [lines20[5]!, lines20[4]!];
    expect(await firstFailure(swapped)).toMatchObject({
      line: 5,
      seq: 6,
      code: 'receipt_chain_broken',
      message: 'seq 6 does not follow the previous receipt (seq 4): expected seq 5',
    });
  });

  it('catches an inserted copy of a genuine receipt', async () => {
    const inserted = [...lines20.slice(0, 15), lines20[2]!, ...lines20.slice(15)];
    expect(await firstFailure(inserted)).toMatchObject({ line: 16, seq: 3, code: 'receipt_chain_broken' });
  });

  it('catches an inserted receipt signed by an unknown key', async () => {
    const forger = new ReceiptChain({ key: OTHER_KEY, clock: () => T0, head: { seq: 8, hash: at(8).hash } });
    const forged = forger.seal({ ...DRAFT, verdict: 'deny' });
    const inserted = [...lines20.slice(0, 8), forged.jcs, ...lines20.slice(8)];
    expect(await firstFailure(inserted)).toEqual({
      line: 9,
      id: forged.receipt.id,
      seq: 9,
      code: 'receipt_bad_signature',
      message: `signed by key ${OTHER_KEY.kid}, which is unknown: not among the 1 public key(s) given (${KEY.kid})`,
    });
  });

  it('catches an inserted fork (a valid continuation of line 8) at the receipt after it, with both hashes', async () => {
    const fork = new ReceiptChain({ key: KEY, clock: () => T0, head: { seq: 8, hash: at(8).hash } }).seal(DRAFT);
    const inserted = [...lines20.slice(0, 8), fork.jcs, ...lines20.slice(8)];
    const failure = await firstFailure(inserted);
    expect(failure).toMatchObject({ line: 10, seq: 9, code: 'receipt_chain_broken' });
    expect(failure.message).toBe('seq 9 does not follow the previous receipt (seq 9): expected seq 10');
  });

  it('catches a prevHash that does not match the previous line', async () => {
    const relinked = new ReceiptChain({ key: KEY, clock: () => T0, head: { seq: 16, hash: `sha256:${'0'.repeat(64)}` } }).seal(DRAFT);
    const lines = [...lines20.slice(0, 16), relinked.jcs];
    const failure = await firstFailure(lines);
    expect(failure).toEqual({
      line: 17,
      id: relinked.receipt.id,
      seq: 17,
      code: 'receipt_chain_broken',
      message: `prevHash sha256:${'0'.repeat(64)} does not match the previous receipt (seq 16) hash ${receiptHash(at(16).jcs)}`,
    });
    expect(formatFailure(failure)).toBe(
      `line 17 (${relinked.receipt.id}, seq 17): receipt_chain_broken: prevHash sha256:${'0'.repeat(64)} does not match the previous receipt (seq 16) hash ${at(16).hash}`,
    );
  });

  it('reports a torn tail after the last complete line', async () => {
    const result = await verifyLines([...lines20.slice(0, 5), at(6).jcs.slice(0, 100)], '');
    expect(result).toEqual({
      ok: false,
      receipts: 5,
      head: { seq: 5, hash: at(5).hash },
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
    const pretty = JSON.stringify(at(3).receipt, null, 1).replace(/\n/g, '');
    const reordered = JSON.stringify(at(3).receipt);
    const extra = jcs({ ...at(3).receipt, note: 'x' });
    const badSeq = jcs({ ...at(3).receipt, seq: 0 });
    const cases: Array<[string, Partial<VerifyFailure>]> = [
      ['{"schema":', { id: null, seq: null, message: expect.stringMatching(/^not valid JSON: /) as unknown as string }],
      ['', { message: 'empty line' }],
      ['[1,2]', { message: 'not a chio.receipt.v1 receipt: receipt: Invalid input: expected object, received array' }],
      [pretty, { id: at(3).receipt.id, seq: 3, message: "the line is not the receipt's canonical JSON (RFC 8785 JCS) text" }],
      [reordered, { message: "the line is not the receipt's canonical JSON (RFC 8785 JCS) text" }],
      [extra, { message: 'not a chio.receipt.v1 receipt: receipt: Unrecognized key: "note"' }],
      [badSeq, { seq: 0, message: 'not a chio.receipt.v1 receipt: field seq: Too small: expected number to be >=1' }],
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
    const first = makeChain(2);
    const rotated = new ReceiptChain({ key: OTHER_KEY, clock: () => T0, head: { seq: 2, hash: first[1]!.hash } }).seal(DRAFT);
    const lines = [...first.map((s) => s.jcs), rotated.jcs];
    expect((await verifyLines(lines, '\n', verificationKeys([KEY, OTHER_KEY]))).ok).toBe(true);
    expect((await firstFailure(lines)).code).toBe('receipt_bad_signature');
  });

  it('throws file_not_found for a missing file', async () => {
    const file = join(tmpdir(), 'chio-no-such-dir', 'receipts.jsonl');
    await expect(verifyReceiptFile(file, KEYS)).rejects.toThrow(new ChioError('file_not_found', `receipt file ${file} does not exist`));
  });
});
