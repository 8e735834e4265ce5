/**
 * Tamper review: an attacker who can edit receipt files and bundle folders (but holds no signing
 * key) must not get `chio receipt verify FILE|DIR` to report OK for content an auditor cares about.
 */
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/receipt.js';
import { keyFromSeed, publicJwk } from '../../src/keys.js';
import { verifyBundle, type BundleVerifyResult } from '../../src/receipt/bundle-verify.js';
import { jcs } from '../../src/receipt/canonical.js';
import { signCheckpoint, type SignedCheckpoint } from '../../src/receipt/checkpoint.js';
import { exportBundle } from '../../src/receipt/export.js';
import { merkleRoot } from '../../src/receipt/merkle.js';
import { receiptLeafOf } from '../../src/receipt/receipt.js';
import { JsonlReceiptFiles } from '../../src/receipt/retention.js';
import { verificationKeys } from '../../src/receipt/verify.js';
import { capture, type CliRun, fakeIO } from '../helpers/cli-io.js';
import { CHAIN as CHAIN_ID, KEY, T0, sealedReceipts, tempDir } from './helpers.js';

const MINUTE = 60_000;
const KEYS = verificationKeys([KEY]);
const at = (minutes: number): string => new Date(T0 + minutes * MINUTE).toISOString();

const work = tempDir('chio-tamper-');
afterAll(() => rmSync(work, { recursive: true, force: true }));

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
}
function writeLines(file: string, content: readonly string[]): void {
  writeFileSync(file, content.map((l) => `${l}\n`).join(''));
}

/** A checkpoint log over `receiptLines` at the given tree sizes. */
function checkpointLog(receiptLines: readonly string[], sizes: readonly number[], key = KEY): SignedCheckpoint[] {
  const out: SignedCheckpoint[] = [];
  for (const size of sizes) {
    const root = merkleRoot(receiptLines.slice(0, size).map((l) => receiptLeafOf(l)));
    out.push(signCheckpoint({ treeSize: size, root, previous: out[out.length - 1] ?? null, timestamp: T0 + size * MINUTE }, key));
  }
  return out;
}

/** 12 receipts in batches of 2 (receipt seq s stamped T0 + (s − 1) minutes), checkpoints at 3, 6, 9, 12. */
const data = path.join(work, 'data');
const receiptsFile = path.join(data, 'receipts.jsonl');
const checkpointsFile = path.join(data, 'checkpoints.jsonl');
let receipts: string[];
let bundle: string;
const idOf = (seq: number): string => (JSON.parse(receipts[seq - 1]!) as { id: string }).id;

beforeAll(async () => {
  mkdirSync(data);
  receipts = sealedReceipts(12, null, 0, 2).map((r) => r.jcs);
  writeLines(receiptsFile, receipts);
  writeLines(checkpointsFile, checkpointLog(receipts, [3, 6, 9, 12]).map((c) => c.jcs));
  writeFileSync(path.join(data, 'kernel.seed'), Buffer.alloc(32, 7).toString('hex'), { mode: 0o600 });
  bundle = path.join(work, 'bundle');
  // seq 4..9 (stamped minutes 3..8)
  await exportBundle({
    source: new JsonlReceiptFiles(receiptsFile),
    checkpointsPath: checkpointsFile,
    outDir: bundle,
    since: T0 + 3 * MINUTE,
    until: T0 + 9 * MINUTE,
    keys: [KEY],
    now: T0 + 20 * MINUTE,
    tool: { name: 'chio-authz', version: 'test' },
  });
});

let copies = 0;
/** A copy of the bundle, edited, verified with KEY pinned. */
async function tampered(edit: (dir: string) => void, keys: ReturnType<typeof verificationKeys> | null = KEYS): Promise<BundleVerifyResult> {
  const dir = path.join(work, `copy-${++copies}`);
  cpSync(bundle, dir, { recursive: true });
  edit(dir);
  return verifyBundle(dir, keys);
}
const file = (dir: string, name: string): string => path.join(dir, name);
function editManifest(dir: string, change: (m: Record<string, any>) => void): void {
  const m = JSON.parse(readFileSync(file(dir, 'manifest.json'), 'utf8')) as Record<string, any>;
  change(m);
  writeFileSync(file(dir, 'manifest.json'), `${JSON.stringify(m, null, 2)}\n`);
}

function verifyCli(args: string[]): Promise<CliRun> {
  return capture(run, ['verify', ...args], fakeIO(work));
}

describe('bundle: what the manifest claims must be what the bundle holds', () => {
  it('the untouched bundle verifies (seq 4 to 9)', async () => {
    const r = await tampered(() => {});
    expect(r).toMatchObject({ ok: true, receipts: 6, firstSeq: 4, lastSeq: 9, firstFailure: null });
  });

  it('a manifest range the receipts are not stamped in fails, naming the receipt outside it', async () => {
    // an auditor asking for another period is handed this bundle with its manifest edited
    const moved = await tampered((d) => editManifest(d, (m) => void (m.range = { since: at(100), until: at(200) })));
    expect(moved.ok).toBe(false);
    expect(moved.firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 1,
      id: idOf(4),
      seq: 4,
      code: 'receipt_chain_broken',
      message: `the receipt is stamped ${at(3)}, outside the manifest's range [${at(100)}, ${at(200)}): the bundle does not hold the range its manifest claims`,
    });
    // a range that ends before the bundle's last receipt
    const shorter = await tampered((d) => editManifest(d, (m) => void (m.range.until = at(8))));
    expect(shorter.firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 6,
      id: idOf(9),
      seq: 9,
      code: 'receipt_chain_broken',
      message: `the receipt is stamped ${at(8)}, outside the manifest's range [${at(3)}, ${at(8)}): the bundle does not hold the range its manifest claims`,
    });
    expect(shorter.receipts).toBe(5);
  });

  it("manifest receipt ids that are not the bundle's first and last fail", async () => {
    const r = await tampered((d) => editManifest(d, (m) => void (m.receipts.firstId = idOf(1))));
    expect(r.firstFailure).toEqual({
      file: 'manifest.json',
      line: null,
      id: idOf(1),
      seq: 4,
      code: 'receipt_chain_broken',
      message: `the manifest lists the receipts ${idOf(1)} to ${idOf(9)}, but receipts.jsonl holds ${idOf(4)} to ${idOf(9)}`,
    });
    const last = await tampered((d) => editManifest(d, (m) => void (m.receipts.lastId = idOf(12))));
    expect(last.ok).toBe(false);
    expect(last.firstFailure?.message).toBe(`the manifest lists the receipts ${idOf(4)} to ${idOf(12)}, but receipts.jsonl holds ${idOf(4)} to ${idOf(9)}`);
  });

  it('a checkpoint line with a byte order mark is not its canonical JCS text', async () => {
    const r = await tampered((d) => {
      const l = lines(file(d, 'checkpoints.jsonl'));
      l[1] = `\uFEFF${l[1]}`;
      writeLines(file(d, 'checkpoints.jsonl'), l);
    });
    expect(r.ok).toBe(false);
    expect(r.firstFailure).toMatchObject({ file: 'checkpoints.jsonl', line: 2, id: null, seq: null, code: 'receipt_malformed' });
    expect(r.firstFailure?.message.startsWith('checkpoint: not valid JSON: ')).toBe(true);
  });

  it('caught as before: CRLF, BOM and blank lines, a duplicate JSON key, keys.json swapped (pinned or not)', async () => {
    const crlf = await tampered((d) => writeFileSync(file(d, 'receipts.jsonl'), lines(file(d, 'receipts.jsonl')).map((l) => `${l}\r\n`).join('')));
    expect(crlf.firstFailure).toMatchObject({ line: 1, seq: 4, code: 'receipt_malformed', message: "the line is not the receipt's canonical JSON (RFC 8785 JCS) text" });
    const bom = await tampered((d) => writeFileSync(file(d, 'receipts.jsonl'), `\uFEFF${readFileSync(file(d, 'receipts.jsonl'), 'utf8')}`));
    expect(bom.firstFailure).toMatchObject({ line: 1, code: 'receipt_malformed' });
    const blank = await tampered((d) => writeFileSync(file(d, 'receipts.jsonl'), `${readFileSync(file(d, 'receipts.jsonl'), 'utf8')}\n`));
    expect(blank.firstFailure).toMatchObject({ line: 7, code: 'receipt_malformed', message: 'empty line' });
    const dup = await tampered((d) => {
      const l = lines(file(d, 'receipts.jsonl'));
      l[2] = l[2]!.replace('"verdict":', '"verdict":"allow","verdict":');
      writeLines(file(d, 'receipts.jsonl'), l);
    });
    expect(dup.firstFailure).toMatchObject({ line: 3, seq: 6, code: 'receipt_malformed' });
    const other = keyFromSeed(Buffer.alloc(32, 9));
    const swapped = (d: string): void => writeFileSync(file(d, 'keys.json'), JSON.stringify({ keys: [publicJwk(other)] }));
    const unpinned = await tampered(swapped, null);
    expect(unpinned).toMatchObject({ ok: false, keys: 'bundle', kids: [other.kid], firstFailure: { file: 'checkpoints.jsonl', line: 1, code: 'receipt_bad_signature' } });
    expect((await tampered(swapped)).ok).toBe(true); // pinned: keys.json is not used
    const cli = await verifyCli(['bundle']);
    expect(cli.code).toBe(0);
    expect(cli.out).toContain(`keys: the bundle's own keys.json (${KEY.kid}), not pinned: compare with your trusted key or pass --public-key\n`);
  });

  // The manifest is not signed: receipts dropped at either end of the range, with their proof lines
  // and the manifest edited to match, looked like a shorter range. The receipts just outside the
  // range (bounds.jsonl, signed and chained to its ends) now show it, whatever the attacker does with them.
  it('receipts dropped at the start or the end of the range, manifest edited to match', async () => {
    const dropFirst = (d: string): void => {
      for (const f of ['receipts.jsonl', 'proofs.jsonl']) writeLines(file(d, f), lines(file(d, f)).slice(1));
      editManifest(d, (m) => Object.assign(m.receipts, { count: m.receipts.count - 1, firstSeq: (m.receipts.firstSeq as number) + 1, firstId: idOf((m.receipts.firstSeq as number) + 1) }));
    };
    const dropLast = (d: string): void => {
      for (const f of ['receipts.jsonl', 'proofs.jsonl']) writeLines(file(d, f), lines(file(d, f)).slice(0, -1));
      editManifest(d, (m) => Object.assign(m.receipts, { count: m.receipts.count - 1, lastSeq: (m.receipts.lastSeq as number) - 1, lastId: idOf((m.receipts.lastSeq as number) - 1) }));
    };
    const moveIntoBounds = (d: string, from: 'first' | 'last'): void => {
      // the dropped receipt (and its proof) offered as the bound instead of the real one
      const pick = (f: string): string => (from === 'first' ? lines(file(d, f))[0] : lines(file(d, f)).at(-1)) as string;
      const [r, p] = [pick('receipts.jsonl'), pick('proofs.jsonl')];
      const keep = from === 'first' ? 1 : 0;
      writeLines(file(d, 'bounds.jsonl'), from === 'first' ? [r, lines(file(d, 'bounds.jsonl'))[keep] as string] : [lines(file(d, 'bounds.jsonl'))[keep] as string, r]);
      writeLines(file(d, 'bounds-proofs.jsonl'), from === 'first' ? [p, lines(file(d, 'bounds-proofs.jsonl'))[keep] as string] : [lines(file(d, 'bounds-proofs.jsonl'))[keep] as string, p]);
    };
    const cases = {
      'first dropped': await tampered(dropFirst),
      'first dropped, its bound removed': await tampered((d) => {
        dropFirst(d);
        for (const f of ['bounds.jsonl', 'bounds-proofs.jsonl']) writeLines(file(d, f), lines(file(d, f)).slice(1));
      }),
      'first moved into bounds': await tampered((d) => {
        moveIntoBounds(d, 'first');
        dropFirst(d);
      }),
      'last dropped': await tampered(dropLast),
      'last dropped, its bound removed': await tampered((d) => {
        dropLast(d);
        for (const f of ['bounds.jsonl', 'bounds-proofs.jsonl']) writeLines(file(d, f), lines(file(d, f)).slice(0, 1));
      }),
      'last moved into bounds': await tampered((d) => {
        moveIntoBounds(d, 'last');
        dropLast(d);
      }),
    };
    const seen = Object.fromEntries(Object.entries(cases).map(([k, r]) => [k, r.ok ? 'OK' : `${r.firstFailure?.file}: ${r.firstFailure?.message.replace(/ \(.*$|: it belongs.*$|, outside.*$/, '')}`]));
    expect(seen).toEqual({
      'first dropped': "bounds.jsonl: receipt seq 3 is not next to the bundle's receipts",
      'first dropped, its bound removed': expect.stringMatching(/^bounds\.jsonl: the bundle does not prove where its range starts: receipt seq \d+, the one before its first, is not in bounds\.jsonl$/),
      'first moved into bounds': expect.stringMatching(/^bounds\.jsonl: the receipt before the range is stamped .+, inside the manifest's range \[.+\)$/),
      'last dropped': "bounds.jsonl: receipt seq 10 is not next to the bundle's receipts",
      'last dropped, its bound removed': expect.stringMatching(/^bounds\.jsonl: the bundle does not prove where its range ends: receipt seq \d+, the one after its last, is not in bounds\.jsonl and its last is not the latest checkpoint's$/),
      'last moved into bounds': expect.stringMatching(/^bounds\.jsonl: the receipt after the range is stamped .+, inside the manifest's range \[.+\)$/),
    });
    // the dropped receipt is named exactly
    expect(cases['first dropped'].firstFailure).toMatchObject({
      seq: 4,
      message: "receipt seq 3 is not next to the bundle's receipts (seq 5 to 9): receipt seq 4 is missing from the start of the range",
    });
    expect(cases['last dropped'].firstFailure).toMatchObject({
      seq: 9,
      message: "receipt seq 10 is not next to the bundle's receipts (seq 4 to 8): receipt seq 9 is missing from the end of the range",
    });
  });
});

describe('FILE: the receipts before a file that does not start at seq 1', () => {
  /** receipts seq 5..12 in `folder` with the checkpoint log beside them, and `segment` lines as receipts-1-4.jsonl */
  function pruned(folder: string, segment: string[] | null): string {
    const dir = path.join(work, folder);
    mkdirSync(dir);
    writeLines(path.join(dir, 'receipts.jsonl'), receipts.slice(4));
    cpSync(checkpointsFile, path.join(dir, 'checkpoints.jsonl'));
    if (segment !== null) writeLines(path.join(dir, 'receipts-1-4.jsonl'), segment);
    return `${folder}/receipts.jsonl`;
  }
  const missing = (folder: string, why: string): string =>
    `${folder}/receipts.jsonl: FAILED\nreceipt_chain_broken: the receipts seq 1 to 4 are missing: the file starts at seq 5, no retention anchor (${path.join(work, folder, 'checkpoints.anchor.json')}) says they were pruned, and no segment beside it holds them; ${path.join(work, folder, 'receipts-1-4.jsonl')} is named for seq 1 to 4 but holds ${why} (--from-checkpoint accepts such a file)\n`;

  it('an empty file named like a segment does not account for the deleted receipts', async () => {
    const file = pruned('fake-segment', []);
    expect(await verifyCli([file, '--seed', 'data/kernel.seed'])).toEqual({ code: 1, out: missing('fake-segment', 'no receipt'), err: '' });
  });

  it('a segment cut short (its last receipts deleted) does not account for them', async () => {
    const file = pruned('cut-segment', receipts.slice(0, 2));
    expect(await verifyCli([file, '--seed', 'data/kernel.seed'])).toEqual({ code: 1, out: missing('cut-segment', 'seq 1 to 2'), err: '' });
  });

  it('a segment verified alone does not account for itself', async () => {
    const dir = path.join(work, 'self-segment');
    mkdirSync(dir);
    writeLines(path.join(dir, 'receipts-1-4.jsonl'), receipts.slice(2, 4)); // seq 1 and 2 deleted
    cpSync(checkpointsFile, path.join(dir, 'checkpoints.jsonl'));
    const r = await verifyCli(['self-segment/receipts-1-4.jsonl', '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(1);
    expect(r.out).toBe(
      `self-segment/receipts-1-4.jsonl: FAILED\nreceipt_chain_broken: the receipts seq 1 to 2 are missing: the file starts at seq 3, no retention anchor (${path.join(dir, 'checkpoints.anchor.json')}) says they were pruned, and no segment beside it holds them (--from-checkpoint accepts such a file)\n`,
    );
  });

  it('a real segment accounts for them, and the file is chained to its last receipt', async () => {
    const file = pruned('real-segment', receipts.slice(0, 4));
    const r = await verifyCli([file, '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`OK: 8 receipt(s) verified, seq 5 to 12`);
    expect(r.out).toContain(`the first receipt's prevHash is checked against the last receipt of ${path.join(work, 'real-segment', 'receipts-1-4.jsonl')})\n`);
  });

  // `chio receipt verify FILE` of a file that starts at seq 1 did not read the checkpoint log beside
  // it, so whole batches deleted from its end verified as a shorter chain although signed checkpoints cover them.
  it('the last batches of the live file deleted while checkpoints.jsonl beside it covers them', async () => {
    const dir = path.join(work, 'tail-cut');
    mkdirSync(dir);
    writeLines(path.join(dir, 'receipts.jsonl'), receipts.slice(0, 8));
    cpSync(checkpointsFile, path.join(dir, 'checkpoints.jsonl'));
    const r = await verifyCli(['tail-cut/receipts.jsonl', '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(
      new RegExp(`^tail-cut/receipts\\.jsonl: FAILED\\nreceipt_chain_broken: the receipts seq 9 to (\\d+) are missing: the signed checkpoint of treeSize \\1 \\(${path.join(dir, 'checkpoints.jsonl').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line \\d+\\) covers them, but the log ends at seq 8\\n$`),
    );
    // the whole file still verifies
    writeLines(path.join(dir, 'receipts.jsonl'), receipts);
    expect((await verifyCli(['tail-cut/receipts.jsonl', '--seed', 'data/kernel.seed'])).code).toBe(0);
  });
});

describe('FILE: a live file replaced by another log signed with the same key', () => {
  // the checkpoints were held to the file by size only: another chain's file (another worker's, which
  // signs with the same key) of the same length verified against them (CLI review)
  it('does not hash to the latest checkpoint\'s root', async () => {
    const dir = path.join(work, 'replaced');
    mkdirSync(dir);
    writeLines(path.join(dir, 'receipts.jsonl'), sealedReceipts(12, null, 100, 2).map((r) => r.jcs));
    cpSync(checkpointsFile, path.join(dir, 'checkpoints.jsonl'));
    const r = await verifyCli(['replaced/receipts.jsonl', '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(
      /^replaced\/receipts\.jsonl: FAILED\nreceipt_chain_broken: the receipts through seq 12 hash to the Merkle root sha256:[0-9a-f]{64}, not to sha256:[0-9a-f]{64} of the signed checkpoint of treeSize 12 \(.*checkpoints\.jsonl line 4\): the checkpoints beside the file are not of its log \(receipts replaced, or another chain's file\)\n$/,
    );
    // its own log verifies
    writeLines(path.join(dir, 'receipts.jsonl'), receipts);
    expect((await verifyCli(['replaced/receipts.jsonl', '--seed', 'data/kernel.seed'])).code).toBe(0);
  });

  it('cut into a segment and a live file, it still does not hash to the root (the segments are read too)', async () => {
    const dir = path.join(work, 'replaced-split');
    mkdirSync(dir);
    const other = sealedReceipts(12, null, 100, 2).map((r) => r.jcs);
    writeLines(path.join(dir, 'receipts-1-4.jsonl'), other.slice(0, 4));
    writeLines(path.join(dir, 'receipts.jsonl'), other.slice(4));
    cpSync(checkpointsFile, path.join(dir, 'checkpoints.jsonl'));
    const r = await verifyCli(['replaced-split/receipts.jsonl', '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/: FAILED\nreceipt_chain_broken: the receipts through seq 12 hash to the Merkle root sha256:[0-9a-f]{64}, not to sha256:[0-9a-f]{64} of the signed checkpoint of treeSize 12 /);
    // the log's own receipts cut the same way verify
    writeLines(path.join(dir, 'receipts-1-4.jsonl'), receipts.slice(0, 4));
    writeLines(path.join(dir, 'receipts.jsonl'), receipts.slice(4));
    expect((await verifyCli(['replaced-split/receipts.jsonl', '--seed', 'data/kernel.seed'])).code).toBe(0);
  });
});

describe('FILE: a symlink to a live file', () => {
  it('is held to the checkpoints beside the file it points to, not beside the link', async () => {
    const dir = path.join(work, 'linked');
    mkdirSync(path.join(dir, 'real'), { recursive: true });
    mkdirSync(path.join(dir, 'elsewhere'));
    writeLines(path.join(dir, 'real', 'receipts.jsonl'), receipts.slice(0, 8)); // its last batches cut
    cpSync(checkpointsFile, path.join(dir, 'real', 'checkpoints.jsonl'));
    symlinkSync(path.join(dir, 'real', 'receipts.jsonl'), path.join(dir, 'elsewhere', 'link.jsonl'));
    const r = await verifyCli(['linked/elsewhere/link.jsonl', '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^linked\/elsewhere\/link\.jsonl: FAILED\nreceipt_chain_broken: the receipts seq 9 to 12 are missing: the signed checkpoint of treeSize 12 .* covers them, but the log ends at seq 8\n$/);
  });
});

describe('FILE: a live file whose name looks like a segment', () => {
  // `receipts-2026-11.jsonl` was taken for a rotated segment of `receipts.jsonl` (name-seq-seq), so its
  // end was not held to the latest checkpoint: receipts cut from its end verified (metrics/retention review)
  it('is held to the latest checkpoint like any live file; a real segment range in the name is not enough without its content', async () => {
    const dir = path.join(work, 'dated');
    mkdirSync(dir);
    writeLines(path.join(dir, 'receipts-2026-11.jsonl'), receipts.slice(0, 8));
    cpSync(checkpointsFile, path.join(dir, 'checkpoints.jsonl'));
    const r = await verifyCli(['dated/receipts-2026-11.jsonl', '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^dated\/receipts-2026-11\.jsonl: FAILED\nreceipt_chain_broken: the receipts seq 9 to (\d+) are missing: the signed checkpoint of treeSize \1 .* covers them, but the log ends at seq 8\n$/);
    // the live file renamed as the segment it is not (seq 1 to 8 named 1-12): still held to the checkpoint
    writeLines(path.join(dir, 'receipts-1-12.jsonl'), receipts.slice(0, 8));
    expect((await verifyCli(['dated/receipts-1-12.jsonl', '--seed', 'data/kernel.seed'])).code).toBe(1);
    // cut and renamed after what it holds (1-8), with no live file beside it: it is where the log ends, so still held to it
    writeLines(path.join(dir, 'receipts-1-8.jsonl'), receipts.slice(0, 8));
    expect((await verifyCli(['dated/receipts-1-8.jsonl', '--seed', 'data/kernel.seed'])).code).toBe(1);
    // whole, it verifies
    writeLines(path.join(dir, 'receipts-2026-11.jsonl'), receipts);
    expect((await verifyCli(['dated/receipts-2026-11.jsonl', '--seed', 'data/kernel.seed'])).code).toBe(0);
  });
});

describe('caught as before: RFC 6962 edge cases and v1/v2 mixing', () => {
  it('proofs of the wrong length, index >= size, a node posing as a leaf, size 0 and 1', async () => {
    const { MerkleTree, leafHash, nodeHash, verifyInclusion, verifyConsistency, EMPTY_ROOT } = await import('../../src/receipt/merkle.js');
    for (let n = 1; n <= 9; n++) {
      const leaves = Array.from({ length: n }, (_, i) => leafHash(`leaf ${i}`));
      const tree = MerkleTree.fromLeafHashes(leaves);
      const root = tree.root();
      for (let i = 0; i < n; i++) {
        const p = tree.inclusionProof(i);
        expect(verifyInclusion(leaves[i]!, i, n, p, root)).toBe(true);
        expect(verifyInclusion(leaves[i]!, i, n, [...p, root], root)).toBe(false);
        if (p.length > 0) expect(verifyInclusion(leaves[i]!, i, n, p.slice(1), root)).toBe(false);
        expect(verifyInclusion(leaves[i]!, i + n, n, p, root)).toBe(false);
      }
      for (let m = 1; m < n; m++) {
        const p = tree.consistencyProof(m, n);
        expect(verifyConsistency(m, n, tree.root(m), root, p)).toBe(true);
        expect(verifyConsistency(m, n, tree.root(m), root, [tree.root(m), ...p])).toBe(false);
        expect(verifyConsistency(m, n, tree.root(m), root, p.slice(0, -1))).toBe(false);
      }
      if (n >= 2) {
        // second preimage: the 64 bytes of two child hashes offered as a leaf do not hash to the node
        expect(leafHash(Buffer.concat([leaves[0]!, leaves[1]!])).equals(nodeHash(leaves[0]!, leaves[1]!))).toBe(false);
      }
    }
    expect(verifyInclusion(leafHash('x'), 0, 1, [], leafHash('x'))).toBe(true);
    expect(verifyInclusion(leafHash('x'), 0, 0, [], EMPTY_ROOT)).toBe(false);
    expect(verifyConsistency(0, 3, EMPTY_ROOT, leafHash('x'), [leafHash('x')])).toBe(false);
  });

  it('a v1 receipt after v2 ones is refused; v2 continuing v1 verifies', async () => {
    const { v1Lines } = await import('./helpers.js');
    const { receiptHash } = await import('../../src/receipt/receipt.js');
    const { verifyReceiptFile } = await import('../../src/receipt/verify.js');
    const v1 = v1Lines(3);
    const v2 = sealedReceipts(2, { seq: 3, hash: receiptHash(v1[2]!) }, 3).map((r) => r.jcs);
    const dir = path.join(work, 'mixed');
    mkdirSync(dir);
    writeLines(path.join(dir, 'up.jsonl'), [...v1, ...v2]);
    expect((await verifyReceiptFile(path.join(dir, 'up.jsonl'), KEYS)).ok).toBe(true);
    const { chainHashOf } = await import('../../src/receipt/receipt.js');
    const after = v1Lines(1, chainHashOf(v2[1]!), 6); // chained correctly: refused for its format alone
    writeLines(path.join(dir, 'down.jsonl'), [...v1, ...v2, ...after]);
    const r = await verifyReceiptFile(path.join(dir, 'down.jsonl'), KEYS);
    expect(r.firstFailure).toMatchObject({
      line: 6,
      seq: 6,
      code: 'receipt_chain_broken',
      message: `a chio.receipt.v1 receipt after chio.receipt.v2 receipts (chain ${CHAIN_ID}): receipts are never written in the old format after the new one`,
    });
    expect(r.ok).toBe(false);
  });
});
