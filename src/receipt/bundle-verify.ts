/**
 * Offline verification of an export bundle (./export.ts; SPEC §6, §10 `chio receipt verify DIR`):
 *
 * 1. every checkpoint is a canonical `chio.checkpoint.v1` signed by a known key, and each names
 *    the one before it (`previousCheckpointHash`) with a larger tree;
 * 2. successive checkpoints are consistent: an RFC 6962 consistency proof per pair;
 * 3. every receipt verifies as in `chio receipt verify FILE` (canonical JCS, Ed25519 signature,
 *    seq + 1 and prevHash from the line before; the first continues from seq firstSeq − 1);
 * 4. every receipt is included in a signed checkpoint: its audit path leads from its leaf hash
 *    (v2: of its body; v1: of its exact line) to that checkpoint's signed root;
 * 5. the manifest's counts match what is there;
 * 6. the range is whole (the manifest is not signed, so this is what proves it): the receipt before
 *    the first is in bounds.jsonl, signed, included, chained to the first and stamped before
 *    `since`, or the first is seq 1; the receipt after the last likewise (stamped at or after
 *    `until`), or the last is the latest checkpoint's. An end proven neither way is a failure unless
 *    the caller accepts open ends (a start pruned by retention has no receipt before it).
 *
 * The first failure is reported with the file and line, and the receipt it concerns (id, seq): an
 * altered receipt fails its signature and its inclusion; a deleted one is named from its proof
 * line (proofs.jsonl keeps one per receipt); a moved one is found where it went.
 *
 * Also `scanCheckpointLog`: what `chio receipt verify FILE` needs from a checkpoint log (where a file
 * that does not start at seq 1 is anchored, the retention anchor's root, where a live file must end).
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ChioError, describe } from '../errors.js';
import { publicKeyFromJwk } from '../keys.js';
import {
  hashBytes,
  readCheckpointLog,
  type CheckpointLine,
  type CheckpointLogFailure,
} from './checkpoint.js';
import { BUNDLE_FILES, manifestSchema, type BundleManifest } from './export.js';
import { verifyConsistency, verifyInclusion } from './merkle.js';
import { RECEIPT_ID_PATTERN, receiptLeafOf, type ChainHead } from './receipt.js';
import {
  ReceiptChainVerifier,
  readReceiptLines,
  verificationKeys,
  type ChainStart,
  type ReceiptLine,
  type VerificationKeys,
  type VerifyFailure,
  type VerifyFailureCode,
} from './verify.js';

export interface BundleFailure {
  /** the bundle file where it was found */
  readonly file: string;
  /** 1-based line in that file; null for a whole-file problem */
  readonly line: number | null;
  /** the receipt concerned, when known */
  readonly id: string | null;
  readonly seq: number | null;
  readonly code: VerifyFailureCode | 'file_not_found';
  readonly message: string;
}

export interface BundleVerifyResult {
  readonly ok: boolean;
  /** receipts verified before the first failure (all of them when ok) */
  readonly receipts: number;
  readonly firstSeq: number | null;
  readonly lastSeq: number | null;
  readonly checkpoints: number;
  readonly latestTreeSize: number | null;
  readonly consistencyProofs: number;
  /** the chain the receipts belong to (`chn-…`; null for v1 receipts or none): each replica or worker writes its own */
  readonly chain: string | null;
  /** what proves the range's ends (null when the bundle holds no receipts) */
  readonly complete: { readonly start: RangeEnd; readonly end: RangeEnd } | null;
  /** where the keys came from: the caller, or the bundle's own keys.json (then not pinned) */
  readonly keys: 'given' | 'bundle';
  readonly kids: readonly string[];
  readonly firstFailure: BundleFailure | null;
}

/**
 * How an end of the range is known to be its end: `chain` the first receipt is seq 1; `bound` the
 * receipt beyond it is in bounds.jsonl; `checkpoint` the last is the latest checkpoint's; `pruned`
 * the receipts before the first were pruned by retention at a signed checkpoint
 * (retention-checkpoint.jsonl); `open` unproven.
 */
export type RangeEnd = 'chain' | 'bound' | 'checkpoint' | 'pruned' | 'open';

export interface BundleVerifyOptions {
  /** accept a range whose start or end is not proven (e.g. a start pruned by retention) */
  readonly openEnds?: boolean;
}

const hex = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex digits');
const proofLineSchema = z.strictObject({
  seq: z.int().min(1),
  id: z.string().regex(RECEIPT_ID_PATTERN),
  leafIndex: z.int().min(0),
  treeSize: z.int().min(1),
  auditPath: z.array(hex).max(64),
});
const consistencyLineSchema = z.strictObject({
  fromTreeSize: z.int().min(1),
  toTreeSize: z.int().min(1),
  proof: z.array(hex).max(128),
});
const jwksSchema = z.object({ keys: z.array(z.unknown()) });

class Failed extends Error {
  constructor(readonly failure: BundleFailure) {
    super(failure.message);
  }
}

function fail(file: string, line: number | null, receipt: { id: string | null; seq: number | null }, code: BundleFailure['code'], message: string): never {
  throw new Failed({ file, line, id: receipt.id, seq: receipt.seq, code, message });
}

const NO_RECEIPT = { id: null, seq: null } as const;

/**
 * Verifies the bundle in `dir`. Keys: the given ones, else the bundle's keys.json (reported as not
 * pinned). Throws ChioError when `dir` is not a bundle (no or bad manifest.json) or no keys can be had.
 */
export async function verifyBundle(dir: string, given: VerificationKeys | null, options: BundleVerifyOptions = {}): Promise<BundleVerifyResult> {
  const manifest = await readManifest(dir);
  const keys = given ?? (await bundleKeys(dir));
  const progress: Progress & { checkpoints: number; latestTreeSize: number | null; consistencyProofs: number } = {
    receipts: 0,
    lastSeq: null,
    head: null,
    chain: null,
    checkpoints: 0,
    latestTreeSize: null,
    consistencyProofs: 0,
  };
  let complete: BundleVerifyResult['complete'] = null;
  const result = (failure: BundleFailure | null): BundleVerifyResult => ({
    ok: failure === null,
    receipts: progress.receipts,
    firstSeq: progress.receipts > 0 ? manifest.receipts.firstSeq : null,
    lastSeq: progress.lastSeq,
    checkpoints: progress.checkpoints,
    latestTreeSize: progress.latestTreeSize,
    consistencyProofs: progress.consistencyProofs,
    chain: progress.chain,
    complete,
    keys: given === null ? 'bundle' : 'given',
    kids: [...keys.keys()],
    firstFailure: failure,
  });
  try {
    const checkpoints = await verifyCheckpoints(dir, keys);
    progress.checkpoints = checkpoints.length;
    progress.latestTreeSize = checkpoints[checkpoints.length - 1]?.signed.checkpoint.treeSize ?? null;
    progress.consistencyProofs = await verifyConsistencyProofs(dir, checkpoints);
    const roots = new Map(checkpoints.map((c) => [c.signed.checkpoint.treeSize, hashBytes(c.signed.checkpoint.rootHash)]));
    const bounds = await readBounds(dir);
    if (manifest.receipts.count === 0) {
      complete = verifyEmptyRange(bounds, keys, roots, manifest);
      await verifyReceipts(dir, keys, manifest, roots, progress, null);
      checkManifest(manifest, progress, checkpoints);
      if (options.openEnds !== true) checkEmptyComplete(complete);
      return result(null);
    }
    const firstSeq = manifest.receipts.firstSeq ?? 1;
    const before = bounds.find((b) => b.seq === firstSeq - 1) ?? null;
    const start = before === null ? null : verifyBound(before, keys, { seq: firstSeq - 2, hash: null }, roots, manifest, 'before');
    await verifyReceipts(dir, keys, manifest, roots, progress, start?.hash ?? null);
    checkManifest(manifest, progress, checkpoints);
    const after = progress.head === null ? null : (bounds.find((b) => b.seq === (progress.head as ChainHead).seq + 1) ?? null);
    if (after !== null) verifyBound(after, keys, progress.head as ChainHead, roots, manifest, 'after');
    const stray = bounds.find((b) => b !== before && b !== after);
    if (stray !== undefined) {
      const last = progress.lastSeq ?? firstSeq - 1;
      const [from, to] = stray.seq > last ? [last + 1, stray.seq - 1] : [stray.seq + 1, firstSeq - 1];
      const gap = from <= to ? `: receipt${from === to ? ` seq ${from} is` : `s seq ${from} to ${to} are`} missing from the ${stray.seq > last ? 'end' : 'start'} of the range` : '';
      fail(BUNDLE_FILES.bounds, stray.line, { id: null, seq: from <= to ? from : stray.seq }, 'receipt_chain_broken', `receipt seq ${stray.seq} is not next to the bundle's receipts (seq ${firstSeq} to ${last})${gap}`);
    }
    if (progress.receipts > 0) {
      const prunedAt = firstSeq > 1 && before === null ? await prunedBefore(dir, keys, checkpoints, firstSeq) : null;
      // pruned receipts were all stamped before the checkpoint retention pruned at was signed: none is
      // of the range when it was signed before since (else receipts of the range may be gone)
      const prunedOutside = prunedAt !== null && Date.parse(prunedAt.signed.checkpoint.timestamp) < Date.parse(manifest.range.since);
      // an end is proven by its bound only: a range ending at the latest checkpoint proves nothing of
      // the receipts after it (they may be stamped before until: a batch in flight when it was signed)
      const latest = checkpoints[checkpoints.length - 1];
      complete = {
        start: firstSeq === 1 ? 'chain' : before !== null ? 'bound' : prunedOutside ? 'pruned' : 'open',
        end: after !== null ? 'bound' : 'open',
      };
      if (options.openEnds !== true) {
        checkComplete(complete, firstSeq, progress.lastSeq as number, {
          start: prunedAt !== null && !prunedOutside ? `retention pruned at the checkpoint of treeSize ${firstSeq - 1}, signed ${prunedAt.signed.checkpoint.timestamp}, not before since ${manifest.range.since}: receipts of the range may be among those gone` : null,
          end:
            progress.lastSeq === progress.latestTreeSize && latest !== undefined
              ? `its last is the latest checkpoint's (treeSize ${latest.signed.checkpoint.treeSize}), and no receipt after it proves that none stamped before until ${manifest.range.until} is missing (export again after the next checkpoint; bundles made before 2026-11-26 end so)`
              : null,
        });
      }
    }
    return result(null);
  } catch (err) {
    if (err instanceof Failed) return result(err.failure);
    throw err;
  }
}

async function readManifest(dir: string): Promise<BundleManifest> {
  const file = path.join(dir, BUNDLE_FILES.manifest);
  let text: string;
  try {
    text = await readText(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ChioError('file_not_found', `${dir} is not a receipt bundle: it has no ${BUNDLE_FILES.manifest} (make one with chio receipt export)`);
    }
    throw new ChioError('io_error', `cannot read ${file}: ${describe(err)}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ChioError('receipt_malformed', `${file} is not valid JSON: ${describe(err)}`);
  }
  const parsed = manifestSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ChioError('receipt_malformed', `${file} is not a bundle manifest: ${issue?.path.join('.') || 'manifest'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

async function bundleKeys(dir: string): Promise<VerificationKeys> {
  const file = path.join(dir, BUNDLE_FILES.keys);
  let value: unknown;
  try {
    value = JSON.parse(await readText(file));
  } catch (err) {
    throw new ChioError('key_invalid', `no public key to verify with: ${file} cannot be read (${describe(err)}); pass --public-key, --jwks or --seed`);
  }
  const parsed = jwksSchema.safeParse(value);
  if (!parsed.success) throw new ChioError('key_invalid', `${file} is not {"keys":[…]}`);
  return verificationKeys(
    parsed.data.keys.map((jwk, i) => {
      try {
        return publicKeyFromJwk(jwk);
      } catch (err) {
        throw new ChioError('key_invalid', `${file}, keys[${i}]: ${describe(err)}`);
      }
    }),
  );
}

async function readText(file: string): Promise<string> {
  const fh = await open(file, 'r');
  try {
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** Lines of a bundle file; a missing file is a failure (something was removed from the bundle). */
async function* bundleLines(dir: string, name: string): AsyncGenerator<ReceiptLine> {
  try {
    yield* readReceiptLines(path.join(dir, name));
  } catch (err) {
    if (err instanceof ChioError && err.code === 'file_not_found') fail(name, null, NO_RECEIPT, 'file_not_found', `the bundle has no ${name}`);
    throw err;
  }
}

async function verifyCheckpoints(dir: string, keys: VerificationKeys): Promise<CheckpointLine[]> {
  const lines: CheckpointLine[] = [];
  let failure: CheckpointLogFailure | null;
  try {
    failure = await readCheckpointLog(path.join(dir, BUNDLE_FILES.checkpoints), keys, (entry) => lines.push(entry));
  } catch (err) {
    if (err instanceof ChioError && err.code === 'file_not_found') fail(BUNDLE_FILES.checkpoints, null, NO_RECEIPT, 'file_not_found', `the bundle has no ${BUNDLE_FILES.checkpoints}`);
    throw err;
  }
  if (failure !== null) {
    const what = failure.treeSize === null ? 'checkpoint' : `checkpoint of treeSize ${failure.treeSize}`;
    fail(BUNDLE_FILES.checkpoints, failure.line, NO_RECEIPT, failure.code, `${what}: ${failure.message}`);
  }
  return lines;
}

/** One consistency proof per successive pair of checkpoints, in order; returns how many verified. */
async function verifyConsistencyProofs(dir: string, checkpoints: readonly CheckpointLine[]): Promise<number> {
  const file = BUNDLE_FILES.consistency;
  let line = 0;
  for await (const piece of bundleLines(dir, file)) {
    line++;
    const from = checkpoints[line - 1]?.signed.checkpoint;
    const to = checkpoints[line]?.signed.checkpoint;
    if (from === undefined || to === undefined) {
      fail(file, line, NO_RECEIPT, 'receipt_malformed', `there are ${checkpoints.length} checkpoint(s), so at most ${Math.max(0, checkpoints.length - 1)} consistency proof(s); this one is extra`);
    }
    const proof = parseLine(piece, consistencyLineSchema, file, line, NO_RECEIPT);
    if (proof.fromTreeSize !== from.treeSize || proof.toTreeSize !== to.treeSize) {
      fail(file, line, NO_RECEIPT, 'receipt_chain_broken', `the proof is from treeSize ${proof.fromTreeSize} to ${proof.toTreeSize}; checkpoints ${line} and ${line + 1} have treeSize ${from.treeSize} and ${to.treeSize}`);
    }
    const ok = verifyConsistency(from.treeSize, to.treeSize, hashBytes(from.rootHash), hashBytes(to.rootHash), proof.proof.map((h) => Buffer.from(h, 'hex')));
    if (!ok) {
      fail(file, line, NO_RECEIPT, 'receipt_chain_broken', `the consistency proof from treeSize ${from.treeSize} to ${to.treeSize} does not verify: the checkpoint of treeSize ${to.treeSize} does not extend the one of treeSize ${from.treeSize}`);
    }
  }
  if (line < checkpoints.length - 1) {
    fail(file, null, NO_RECEIPT, 'receipt_chain_broken', `${line} consistency proof(s) for ${checkpoints.length} checkpoints: the proof from treeSize ${checkpoints[line]?.signed.checkpoint.treeSize} is missing`);
  }
  return line;
}

function parseLine<T>(piece: ReceiptLine, schema: z.ZodType<T>, file: string, line: number, receipt: { id: string | null; seq: number | null }): T {
  if (piece.kind !== 'line') fail(file, line, receipt, 'receipt_malformed', 'the line is incomplete or too long');
  let value: unknown;
  try {
    value = JSON.parse(piece.bytes.toString('utf8'));
  } catch (err) {
    fail(file, line, receipt, 'receipt_malformed', `not valid JSON: ${describe(err)}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    fail(file, line, receipt, 'receipt_malformed', `${issue?.path.join('.') || 'line'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}

interface Progress {
  receipts: number;
  lastSeq: number | null;
  /** the last verified receipt */
  head: ChainHead | null;
  /** the receipts' chain id */
  chain: string | null;
  firstId?: string | null;
  lastId?: string | null;
}

/** A line of bounds.jsonl with its proof line. */
interface BoundLine {
  readonly line: number;
  readonly bytes: Buffer;
  readonly seq: number;
  readonly id: string | null;
  readonly proof: z.infer<typeof proofLineSchema>;
}

/** bounds.jsonl and bounds-proofs.jsonl in lockstep; none when the bundle has no bounds.jsonl (older bundles). */
async function readBounds(dir: string): Promise<BoundLine[]> {
  const file = BUNDLE_FILES.bounds;
  const out: BoundLine[] = [];
  let lines: ReceiptLine[];
  try {
    lines = [];
    for await (const piece of readReceiptLines(path.join(dir, file))) lines.push(piece);
  } catch (err) {
    if (err instanceof ChioError && err.code === 'file_not_found') return out;
    throw err;
  }
  const proofs: ReceiptLine[] = [];
  for await (const piece of bundleLines(dir, BUNDLE_FILES.boundsProofs)) proofs.push(piece);
  if (lines.length > 2 || proofs.length !== lines.length) {
    fail(file, null, NO_RECEIPT, 'receipt_malformed', `${lines.length} bound receipt(s) with ${proofs.length} proof(s) in ${BUNDLE_FILES.boundsProofs}: expected at most 2, one proof each`);
  }
  for (const [i, piece] of lines.entries()) {
    if (piece.kind !== 'line') fail(file, i + 1, NO_RECEIPT, 'receipt_malformed', 'the line is incomplete or too long');
    const { id } = headerOf(piece.bytes);
    const proof = parseLine(proofs[i] as ReceiptLine, proofLineSchema, BUNDLE_FILES.boundsProofs, i + 1, { id, seq: null });
    out.push({ line: i + 1, bytes: piece.bytes, seq: proof.seq, id, proof });
  }
  return out;
}

/**
 * A receipt just outside the range: signed, at the seq its proof names, chained from `after`
 * (for the one after the range: the bundle's last receipt), included in a signed checkpoint, and
 * stamped outside [since, until) on its side. Returns its chain head (the start of the range's chain).
 */
function verifyBound(
  bound: BoundLine,
  keys: VerificationKeys,
  after: ChainStart,
  roots: ReadonlyMap<number, Buffer>,
  manifest: BundleManifest,
  side: 'before' | 'after',
): ChainHead {
  const file = BUNDLE_FILES.bounds;
  const verifier = new ReceiptChainVerifier(keys, { after });
  const failure = verifier.line(bound.bytes);
  if (failure !== null) fail(file, bound.line, bound, failure.code, `the receipt ${side} the range: ${failure.message}`);
  checkInclusion(bound.bytes, bound, bound.proof, roots, bound.line, { receipts: file, proofs: BUNDLE_FILES.boundsProofs });
  const { timestamp } = headerOf(bound.bytes);
  const at = timestamp === null ? Number.NaN : Date.parse(timestamp);
  const { since, until } = manifest.range;
  if (side === 'before' ? !(at < Date.parse(since)) : !(at >= Date.parse(until))) {
    fail(file, bound.line, bound, 'receipt_chain_broken', `the receipt ${side} the range is stamped ${String(timestamp)}, inside the manifest's range [${since}, ${until}): it belongs in ${BUNDLE_FILES.receipts}`);
  }
  return verifier.head as ChainHead;
}

/**
 * An empty range is proven empty by the two receipts around it: adjacent, chained, the first stamped
 * before `since`, the second at or after `until` (or the second alone when it starts the chain).
 */
function verifyEmptyRange(
  bounds: readonly BoundLine[],
  keys: VerificationKeys,
  roots: ReadonlyMap<number, Buffer>,
  manifest: BundleManifest,
): NonNullable<BundleVerifyResult['complete']> {
  const [a, b] = bounds;
  if (a === undefined) return { start: 'open', end: 'open' };
  if (b === undefined) {
    // one bound, on the side its stamp says: the receipt after the range (which starts the chain when
    // it is seq 1; otherwise the one before was pruned), or the one before it (nothing checkpointed after)
    const afterIt = Date.parse(headerOf(a.bytes).timestamp ?? '') >= Date.parse(manifest.range.until);
    verifyBound(a, keys, { seq: a.seq - 1, hash: null }, roots, manifest, afterIt ? 'after' : 'before');
    return afterIt ? { start: a.seq === 1 ? 'chain' : 'open', end: 'bound' } : { start: 'bound', end: 'open' };
  }
  if (b.seq !== a.seq + 1) {
    fail(BUNDLE_FILES.bounds, b.line, b, 'receipt_chain_broken', `the receipts around an empty range must be adjacent: seq ${a.seq} and ${b.seq} are not`);
  }
  const head = verifyBound(a, keys, { seq: a.seq - 1, hash: null }, roots, manifest, 'before');
  verifyBound(b, keys, head, roots, manifest, 'after');
  return { start: 'bound', end: 'bound' };
}

function checkEmptyComplete(complete: NonNullable<BundleVerifyResult['complete']>): void {
  if (complete.start === 'open' || complete.end === 'open') {
    fail(BUNDLE_FILES.bounds, null, NO_RECEIPT, 'receipt_chain_broken', `the bundle holds no receipts and does not prove its range empty: ${BUNDLE_FILES.bounds} needs the receipts just before and after it (receipts may have been removed; --open-ends accepts this)`);
  }
}

/**
 * retention-checkpoint.jsonl: the signed checkpoint of treeSize firstSeq − 1 that the bundle's first
 * checkpoint names as its previous (signed link): retention pruned exactly there. False when the
 * bundle has none; a failure when it has one that is not that.
 */
async function prunedBefore(dir: string, keys: VerificationKeys, checkpoints: readonly CheckpointLine[], firstSeq: number): Promise<CheckpointLine | null> {
  const file = BUNDLE_FILES.retentionCheckpoint;
  const entries: CheckpointLine[] = [];
  let failure: CheckpointLogFailure | null;
  try {
    failure = await readCheckpointLog(path.join(dir, file), keys, (entry) => entries.push(entry));
  } catch (err) {
    if (err instanceof ChioError && err.code === 'file_not_found') return null;
    throw err;
  }
  if (failure !== null) fail(file, failure.line, NO_RECEIPT, failure.code, failure.message);
  const [at, extra] = entries;
  if (at === undefined) return null;
  const next = checkpoints[0]?.signed;
  if (extra !== undefined || at.signed.checkpoint.treeSize !== firstSeq - 1 || next?.checkpoint.previousCheckpointHash !== at.signed.hash) {
    fail(file, 1, NO_RECEIPT, 'receipt_chain_broken', `the checkpoint retention pruned at must have treeSize ${firstSeq - 1} (the seq before the bundle's first receipt) and be the one ${BUNDLE_FILES.checkpoints} line 1 names as previous; this one (treeSize ${at.signed.checkpoint.treeSize}) is not`);
  }
  return at;
}

/** `why`: a more exact reason than the generic one for an open start or end, when known. */
function checkComplete(complete: NonNullable<BundleVerifyResult['complete']>, firstSeq: number, lastSeq: number, why: { readonly start: string | null; readonly end: string | null }): void {
  const file = BUNDLE_FILES.bounds;
  if (complete.start === 'open') {
    const reason = why.start === null ? `receipt seq ${firstSeq - 1}, the one before its first, is not in ${file} (receipts may have been cut from the start, or it was pruned by retention; --open-ends accepts this)` : `${why.start} (--open-ends accepts this)`;
    fail(file, null, { id: null, seq: firstSeq - 1 }, 'receipt_chain_broken', `the bundle does not prove where its range starts: ${reason}`);
  }
  if (complete.end === 'open') {
    const reason = why.end === null ? `receipt seq ${lastSeq + 1}, the one after its last, is not in ${file} and its last is not the latest checkpoint's (receipts may have been cut from the end; --open-ends accepts this)` : `${why.end} (--open-ends accepts this)`;
    fail(file, null, { id: null, seq: lastSeq + 1 }, 'receipt_chain_broken', `the bundle does not prove where its range ends: ${reason}`);
  }
}

/** receipts.jsonl and proofs.jsonl in lockstep: chain, signatures and inclusion of each receipt. */
async function verifyReceipts(
  dir: string,
  keys: VerificationKeys,
  manifest: BundleManifest,
  roots: ReadonlyMap<number, Buffer>,
  progress: Progress,
  /** the chain hash of the receipt before the first (its bound), when known: the first's prevHash is checked against it */
  startHash: string | null,
): Promise<void> {
  const file = BUNDLE_FILES.receipts;
  const firstSeq = manifest.receipts.firstSeq ?? 1;
  const verifier = new ReceiptChainVerifier(keys, { after: { seq: firstSeq - 1, hash: startHash } });
  const proofs = bundleLines(dir, BUNDLE_FILES.proofs);
  let line = 0;
  for await (const piece of bundleLines(dir, file)) {
    line++;
    const failure =
      piece.kind === 'line' ? verifier.line(piece.bytes) : piece.kind === 'torn' ? verifier.tornTail(piece.bytes) : verifier.lineTooLong();
    const expected = (verifier.head?.seq ?? firstSeq - 1) + (failure === null ? 0 : 1);
    const proofPiece = await proofs.next();
    if (failure !== null) {
      throw new Failed(await explainChainFailure(dir, failure, expected, proofPiece.done ? null : proofPiece.value));
    }
    const bytes = (piece as { bytes: Buffer }).bytes;
    const shown = headerOf(bytes);
    const receipt = { id: shown.id, seq: expected };
    checkInRange(manifest, shown.timestamp, receipt, line);
    if (proofPiece.done) {
      fail(BUNDLE_FILES.proofs, line, receipt, 'receipt_chain_broken', `no inclusion proof for receipt seq ${receipt.seq}: ${BUNDLE_FILES.proofs} ends at line ${line - 1}`);
    }
    checkInclusion(bytes, receipt, parseLine(proofPiece.value, proofLineSchema, BUNDLE_FILES.proofs, line, receipt), roots, line);
    progress.receipts++;
    progress.lastSeq = receipt.seq;
    progress.head = verifier.head;
    progress.chain = verifier.chain;
    progress.firstId ??= receipt.id;
    progress.lastId = receipt.id;
  }
  const extra = await proofs.next();
  if (!extra.done) {
    const proof = parseLine(extra.value, proofLineSchema, BUNDLE_FILES.proofs, line + 1, NO_RECEIPT);
    fail(file, line + 1, { id: proof.id, seq: proof.seq }, 'receipt_chain_broken', `receipt seq ${proof.seq} (${proof.id}) is missing: ${file} ends after line ${line}, but ${BUNDLE_FILES.proofs} line ${line + 1} proves it (deleted from the bundle)`);
  }
}

/** id and timestamp of a receipt line that verified (so both are there and well formed). */
function headerOf(bytes: Buffer): { id: string | null; timestamp: string | null } {
  try {
    const { id, timestamp } = JSON.parse(bytes.toString('utf8')) as { id?: unknown; timestamp?: unknown };
    return { id: typeof id === 'string' ? id : null, timestamp: typeof timestamp === 'string' ? timestamp : null };
  } catch {
    return { id: null, timestamp: null };
  }
}

/**
 * The bundle holds the receipts of the manifest's range [since, until): the first one is stamped in
 * it and none at or after `until` (one before `since` may follow the first: a clock that stepped
 * back, ./export.ts). A manifest whose range the receipts do not match claims what the bundle is not.
 */
function checkInRange(manifest: BundleManifest, timestamp: string | null, receipt: { id: string | null; seq: number }, line: number): void {
  const { since, until } = manifest.range;
  const from = Date.parse(since);
  const to = Date.parse(until);
  if (Number.isNaN(from) || Number.isNaN(to)) {
    fail(BUNDLE_FILES.manifest, null, NO_RECEIPT, 'receipt_malformed', `the manifest's range [${since}, ${until}) is not two dates`);
  }
  const at = timestamp === null ? Number.NaN : Date.parse(timestamp);
  const outside = !(at < to) || (line === 1 && !(at >= from));
  if (outside) {
    fail(BUNDLE_FILES.receipts, line, receipt, 'receipt_chain_broken', `the receipt is stamped ${String(timestamp)}, outside the manifest's range [${since}, ${until}): the bundle does not hold the range its manifest claims`);
  }
}

function checkInclusion(
  bytes: Buffer,
  receipt: { id: string | null; seq: number },
  proof: z.infer<typeof proofLineSchema>,
  roots: ReadonlyMap<number, Buffer>,
  line: number,
  files: { readonly receipts: string; readonly proofs: string } = { receipts: BUNDLE_FILES.receipts, proofs: BUNDLE_FILES.proofs },
): void {
  const file = files.proofs;
  if (proof.seq !== receipt.seq || proof.id !== receipt.id) {
    fail(file, line, receipt, 'receipt_chain_broken', `the proof on this line is for receipt seq ${proof.seq} (${proof.id}), not for receipt seq ${receipt.seq} (${String(receipt.id)}) on line ${line} of ${files.receipts}`);
  }
  if (proof.leafIndex !== receipt.seq - 1) {
    fail(file, line, receipt, 'receipt_chain_broken', `leafIndex ${proof.leafIndex} is not seq - 1 (${receipt.seq - 1})`);
  }
  const root = roots.get(proof.treeSize);
  if (root === undefined || proof.treeSize < receipt.seq) {
    fail(file, line, receipt, 'receipt_chain_broken', `no checkpoint in the bundle of treeSize ${proof.treeSize} covers receipt seq ${receipt.seq}`);
  }
  const auditPath = proof.auditPath.map((h) => Buffer.from(h, 'hex'));
  if (!verifyInclusion(receiptLeafOf(bytes), proof.leafIndex, proof.treeSize, auditPath, root)) {
    fail(
      files.receipts,
      line,
      receipt,
      'receipt_chain_broken',
      `the receipt is not included in the signed checkpoint of treeSize ${proof.treeSize}: its audit path (${file} line ${line}) does not lead to the signed root`,
    );
  }
}

/**
 * A chain failure, with the receipt it concerns named: when the line holds another seq than the
 * expected one, the expected receipt was moved (found further on) or deleted (named from its
 * proof line, which was not).
 */
async function explainChainFailure(dir: string, failure: VerifyFailure, expected: number, proof: ReceiptLine | null): Promise<BundleFailure> {
  const file = BUNDLE_FILES.receipts;
  const base: BundleFailure = { file, ...failure };
  if (failure.code !== 'receipt_chain_broken' || failure.seq === null || failure.seq === expected) return base;
  const found = `line ${failure.line} holds seq ${failure.seq} (${failure.id ?? 'no id'})`;
  const movedTo = await lineOfSeq(path.join(dir, file), expected, failure.line);
  const expectedId = proof?.kind === 'line' ? proofId(proof.bytes, expected) : null;
  const named = `receipt seq ${expected}${expectedId === null ? '' : ` (${expectedId})`}`;
  if (movedTo !== null) {
    return { ...base, message: `receipts out of order: ${found} where ${named} belongs; ${named} is at line ${movedTo}` };
  }
  return { file, line: failure.line, id: expectedId, seq: expected, code: failure.code, message: `${named} is missing (deleted from the bundle): ${found} where it belongs` };
}

function proofId(bytes: Buffer, seq: number): string | null {
  const parsed = proofLineSchema.safeParse(safeJson(bytes));
  return parsed.success && parsed.data.seq === seq ? parsed.data.id : null;
}

function safeJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
}

/** The line (after `after`) of receipts.jsonl that holds receipt `seq`, or null. */
async function lineOfSeq(file: string, seq: number, after: number): Promise<number | null> {
  let line = 0;
  for await (const piece of readReceiptLines(file)) {
    line++;
    if (line <= after || piece.kind !== 'line') continue;
    const value = safeJson(piece.bytes) as { seq?: unknown } | null;
    if (value?.seq === seq) return line;
  }
  return null;
}

function checkManifest(manifest: BundleManifest, progress: Progress & { checkpoints: number }, checkpoints: readonly CheckpointLine[]): void {
  const file = BUNDLE_FILES.manifest;
  const m = manifest.receipts;
  if (m.count !== progress.receipts || m.lastSeq !== progress.lastSeq) {
    fail(file, null, { id: m.lastId, seq: m.lastSeq }, 'receipt_chain_broken', `the manifest lists ${m.count} receipt(s) through seq ${String(m.lastSeq)} (${String(m.lastId)}), but ${BUNDLE_FILES.receipts} holds ${progress.receipts} through seq ${String(progress.lastSeq)}: receipts were removed from the bundle`);
  }
  const held = { first: progress.firstId ?? null, last: progress.lastId ?? null };
  if (m.firstId !== held.first || m.lastId !== held.last) {
    fail(file, null, { id: m.firstId, seq: m.firstSeq }, 'receipt_chain_broken', `the manifest lists the receipts ${String(m.firstId)} to ${String(m.lastId)}, but ${BUNDLE_FILES.receipts} holds ${String(held.first)} to ${String(held.last)}`);
  }
  const latest = checkpoints[checkpoints.length - 1]?.signed.checkpoint.treeSize ?? null;
  if (manifest.checkpoints.count !== checkpoints.length || manifest.checkpoints.latestTreeSize !== latest) {
    fail(file, null, NO_RECEIPT, 'receipt_chain_broken', `the manifest lists ${manifest.checkpoints.count} checkpoint(s) up to treeSize ${String(manifest.checkpoints.latestTreeSize)}, but ${BUNDLE_FILES.checkpoints} holds ${checkpoints.length} up to treeSize ${String(latest)}`);
  }
}

/** `receipts.jsonl line 4 (rct-…, seq 4): receipt_bad_signature: …` */
export function formatBundleFailure(f: BundleFailure): string {
  const where = f.line === null ? f.file : `${f.file} line ${f.line}`;
  const shown = f.id === null && f.seq === null ? '' : ` (${f.id ?? 'no id'}, seq ${f.seq ?? '?'})`;
  return `${where}${shown}: ${f.code}: ${f.message}`;
}

// ---- FILE mode: anchoring a file that does not start at seq 1 ----

/**
 * What `chio receipt verify FILE` needs from a checkpoint log, read in one pass: every line up to the
 * first failure is checked (form, signature with `keys`, link), and the read stops there.
 */
export interface CheckpointLogFacts {
  /** the first checkpoint that covers the receipts before seq `cover` (treeSize ≥ cover − 1), or null */
  readonly covering: CheckpointLine | null;
  /** the last checkpoint that verified, or null */
  readonly latest: CheckpointLine | null;
  /** the signed root (`sha256:<hex>`) of the checkpoint of treeSize `rootOfSize`, or null */
  readonly rootAtSize: string | null;
  readonly failure: CheckpointLogFailure | null;
}

/** Reads the checkpoint log once for {@link CheckpointLogFacts}. Throws ChioError file_not_found / io_error. */
export async function scanCheckpointLog(
  checkpointsPath: string,
  keys: VerificationKeys,
  want: { readonly cover: number; readonly rootOfSize: number },
): Promise<CheckpointLogFacts> {
  let covering: CheckpointLine | null = null;
  let latest: CheckpointLine | null = null;
  let rootAtSize: string | null = null;
  const failure = await readCheckpointLog(checkpointsPath, keys, (entry) => {
    const { treeSize, rootHash } = entry.signed.checkpoint;
    if (covering === null && treeSize >= want.cover - 1) covering = entry;
    if (treeSize === want.rootOfSize) rootAtSize = rootHash;
    latest = entry;
  });
  return { covering, latest, rootAtSize, failure };
}
