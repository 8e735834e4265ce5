/**
 * Offline export bundles of the receipt log (SPEC §6 "an audit trail they can verify offline",
 * §10 `chio receipt export`): the receipts of a time range with RFC 6962 inclusion proofs against
 * signed checkpoints (./checkpoint.ts), the chain of checkpoints to the latest one with consistency
 * proofs between successive ones, and the public keys. ./bundle-verify.ts checks a bundle.
 *
 *   DIR/receipts.jsonl     the receipts of the range, their exact lines (contiguous in seq)
 *   DIR/proofs.jsonl       per receipt, same order: {seq, id, leafIndex, treeSize, auditPath: [hex…]}
 *                          against the first checkpoint that covers it
 *   DIR/checkpoints.jsonl  the checkpoint log's exact lines, from the first one needed to the latest
 *   DIR/consistency.jsonl  per successive pair: {fromTreeSize, toTreeSize, proof: [hex…]}
 *   DIR/keys.json          JWKS of the signing keys
 *   DIR/manifest.json      schema, tool version, range, counts
 *   DIR/bounds.jsonl       the receipts just outside the range, their exact lines: seq firstSeq − 1
 *                          (stamped before `since`) and seq lastSeq + 1 (stamped at or after `until`),
 *                          each when it exists, is not pruned and is checkpointed
 *   DIR/bounds-proofs.jsonl their inclusion proofs, same order
 *   DIR/retention-checkpoint.jsonl  when the range starts right after the receipts retention pruned
 *                          (no receipt before it is left): the signed checkpoint retention pruned at,
 *                          the one the bundle's first checkpoint names as its previous
 *
 * The bounds make the range provably whole (the manifest is not signed): the receipt before the
 * first is signed, chained to it and stamped before `since`, so no receipt of the range was cut
 * from the start; the one after the last likewise at the end. Without a bound an end is proven only
 * by the chain's start (seq 1) or the latest checkpoint (receipts after it are not exported yet).
 *
 * The range is the contiguous run of receipts from the first one stamped at or after `since` up to
 * the first one after it stamped at or after `until` (exclusive), so the bundle's own hash chain
 * is whole even if the clock stepped back inside it. Receipts after the latest checkpoint cannot
 * be proven: they are left out and counted in `notYetCheckpointed` (the service checkpoints every
 * N receipts, every T seconds and when it stops).
 *
 * Memory: the tree is kept from the first exported receipt to the latest checkpoint (about 64
 * bytes per receipt); the receipts before the range only pass through an O(log n) frontier.
 */
import { mkdir, open, readdir, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ChioError, describe } from '../errors.js';
import { publicJwk, type PublicKeyInfo } from '../keys.js';
import { jcs } from './canonical.js';
import {
  checkpointStatePaths,
  hashRef,
  readCheckpointLog,
  readFrontierFile,
  type CheckpointLine,
} from './checkpoint.js';
import { MerkleFrontier, MerkleTree } from './merkle.js';
import { RECEIPT_ID_PATTERN, receiptLeafOf } from './receipt.js';
import type { ReceiptSource } from './store.js';
import { verificationKeys } from './verify.js';

export const BUNDLE_SCHEMA = 'chio.receipt-bundle.v1';

export const BUNDLE_FILES = {
  receipts: 'receipts.jsonl',
  proofs: 'proofs.jsonl',
  checkpoints: 'checkpoints.jsonl',
  consistency: 'consistency.jsonl',
  keys: 'keys.json',
  manifest: 'manifest.json',
  bounds: 'bounds.jsonl',
  boundsProofs: 'bounds-proofs.jsonl',
  retentionCheckpoint: 'retention-checkpoint.jsonl',
} as const;

export interface InclusionProofLine {
  readonly seq: number;
  readonly id: string;
  /** seq − 1 */
  readonly leafIndex: number;
  /** the checkpoint it is proven against */
  readonly treeSize: number;
  readonly auditPath: readonly string[];
}

export interface ConsistencyProofLine {
  readonly fromTreeSize: number;
  readonly toTreeSize: number;
  readonly proof: readonly string[];
}

const seqRange = z.strictObject({ count: z.int().min(0), firstSeq: z.int().min(1).nullable(), lastSeq: z.int().min(1).nullable() });

export const manifestSchema = z.strictObject({
  schema: z.literal(BUNDLE_SCHEMA),
  tool: z.strictObject({ name: z.string(), version: z.string() }),
  createdAt: z.string(),
  range: z.strictObject({ since: z.string(), until: z.string() }),
  receipts: seqRange.extend({ firstId: z.string().nullable(), lastId: z.string().nullable() }),
  checkpoints: z.strictObject({ count: z.int().min(0), firstTreeSize: z.int().min(1).nullable(), latestTreeSize: z.int().min(1).nullable() }),
  notYetCheckpointed: seqRange,
});

export type BundleManifest = z.infer<typeof manifestSchema>;

export interface ExportOptions {
  /** the receipts in seq order (JSONL segments + live file, or a store) */
  readonly source: Pick<ReceiptSource, 'iterateBySeq'>;
  /** checkpoints.jsonl (its state files beside it give the retention anchor) */
  readonly checkpointsPath: string;
  /** created; must not exist or be empty */
  readonly outDir: string;
  /** epoch milliseconds; [since, until) */
  readonly since: number;
  readonly until: number;
  /** the signing keys: checkpoints and receipts must be signed by one of them; written to keys.json */
  readonly keys: readonly PublicKeyInfo[];
  readonly now: number;
  readonly tool: { readonly name: string; readonly version: string };
}

interface Included {
  readonly seq: number;
  readonly id: string;
}

/** A receipt just outside the range (bounds.jsonl). */
interface Bound extends Included {
  readonly jcs: string;
}

const receiptHeader = z.looseObject({
  id: z.string().regex(RECEIPT_ID_PATTERN),
  seq: z.int().min(1),
  timestamp: z.string(),
  kernelKey: z.string(),
});

/**
 * The part of [since, until) a bundle can prove whole, which its manifest then names:
 * - it ends no later than the stamp of the last checkpointed receipt (seq = the latest checkpoint's
 *   treeSize), so the receipt after the range (its bound) is always checkpointed: a receipt's stamp
 *   is taken when it is decided, before the receipts after it, so a range ending there holds every
 *   receipt stamped before it. (A checkpoint's own timestamp proves nothing here: receipts of a
 *   batch still in flight when it was signed carry earlier stamps: a review's finding.)
 * - when retention pruned the receipts before the range's start, it starts after the checkpoint
 *   retention pruned at: every pruned receipt was stamped before that checkpoint was signed.
 * The range is kept as asked when narrowing would leave nothing (such a bundle does not verify
 * without --open-ends, truthfully).
 */
export function provableRange(
  o: { readonly since: number; readonly until: number },
  checkpoints: readonly CheckpointLine[],
  prunedThrough: number,
  lastCheckpointedStamp: number | null,
): { since: number; until: number } {
  const prunedAt = prunedThrough > 0 ? checkpoints.find((c) => c.signed.checkpoint.treeSize === prunedThrough) : undefined;
  const prunedTime = prunedAt === undefined ? null : Date.parse(prunedAt.signed.checkpoint.timestamp);
  const since = prunedTime !== null && prunedTime >= o.since ? prunedTime + 1 : o.since;
  const until = lastCheckpointedStamp !== null && lastCheckpointedStamp < o.until ? lastCheckpointedStamp : o.until;
  return since < until ? { since, until } : { since: o.since, until: o.until };
}

/** The stamp of receipt `seq` (ms), or null when the log does not hold it. */
async function stampOf(source: Pick<ReceiptSource, 'iterateBySeq'>, seq: number): Promise<number | null> {
  if (seq < 1) return null;
  for await (const record of source.iterateBySeq(seq, seq)) {
    if (record.seq !== seq) return null;
    return Date.parse(parseHeader(record.jcs, record.seq).timestamp);
  }
  return null;
}

/** Writes the bundle; returns its manifest. Throws ChioError for bad input or a log that does not match its checkpoints. */
export async function exportBundle(o: ExportOptions): Promise<BundleManifest> {
  if (!(o.since < o.until)) throw new ChioError('usage', 'the range is empty: --since must be before --until');
  await prepareOutDir(o.outDir);
  const checkpoints = await loadCheckpoints(o.checkpointsPath, o.keys);
  const latest = checkpoints[checkpoints.length - 1]?.signed.checkpoint.treeSize ?? 0;
  const anchor = await loadAnchor(o.checkpointsPath, checkpoints);
  const prunedThrough = anchor.size; // (the frontier grows below)
  const kids = new Set(o.keys.map((k) => k.kid));
  const { since, until } = provableRange(o, checkpoints, prunedThrough, await stampOf(o.source, latest));

  const out = await BufferedFile.create(path.join(o.outDir, BUNDLE_FILES.receipts));
  const included: Included[] = [];
  const notYet = { count: 0, firstSeq: null as number | null, lastSeq: null as number | null };
  let tree: MerkleTree | null = null;
  const frontier = anchor; // before the range: only the compact range is kept
  // the last receipt before the range is held back from the frontier: it starts the tree when the range starts (its bound)
  let held: (Bound & { readonly leaf: Buffer }) | null = null;
  const bounds: { before: Bound | null; after: Bound | null } = { before: null, after: null };
  try {
    let state: 'before' | 'in' | 'after' = 'before';
    for await (const record of o.source.iterateBySeq(anchor.size + 1)) {
      const size: number = tree?.size ?? frontier.size + (held === null ? 0 : 1);
      if (record.seq !== size + 1) {
        throw new ChioError('receipt_chain_broken', `receipt seq ${size + 1} is missing from the receipts (found seq ${record.seq}); run chio receipt verify`);
      }
      const header = parseHeader(record.jcs, record.seq);
      const at = Date.parse(header.timestamp);
      if (state === 'before' && at >= since) {
        state = at < until ? 'in' : 'after';
        // straight to 'after': the range is empty; the receipts around it prove that when checkpointed
        if (state === 'in' || record.seq <= latest) {
          tree = new MerkleTree(frontier);
          if (held !== null) {
            tree.append(held.leaf);
            bounds.before = { seq: held.seq, id: held.id, jcs: held.jcs };
            held = null;
          }
          if (state === 'after') bounds.after = { seq: record.seq, id: header.id, jcs: record.jcs };
        }
      } else if (state === 'in' && at >= until) {
        state = 'after';
        const last = included[included.length - 1];
        if (last !== undefined && last.seq === record.seq - 1 && record.seq <= latest) bounds.after = { seq: record.seq, id: header.id, jcs: record.jcs };
      }
      const leaf = receiptLeafOf(record.jcs); // the checkpoint leaf: v2 over the body, v1 over the line
      if (tree !== null) tree.append(leaf);
      else {
        if (held !== null) frontier.append(held.leaf);
        held = { seq: record.seq, id: header.id, jcs: record.jcs, leaf };
      }
      if (state === 'in' && !kids.has(header.kernelKey)) {
        throw new ChioError('key_invalid', `receipt seq ${record.seq} is signed by key ${header.kernelKey}, which is not among the keys given`);
      }
      if (record.seq > latest && (state === 'in' || (state === 'after' && at < o.until))) {
        // asked for and not checkpointed yet: in the range, or after the provable range (./provableRange)
        notYet.count++;
        notYet.firstSeq ??= record.seq;
        notYet.lastSeq = record.seq;
      } else if (state === 'in') {
        await out.write(`${record.jcs}\n`);
        included.push({ seq: record.seq, id: header.id });
      }
      if (state === 'after' && record.seq >= latest && at >= o.until) break;
    }
  } finally {
    await out.close();
  }
  const firstProven = included[0]?.seq ?? bounds.before?.seq ?? bounds.after?.seq;
  const chain = firstProven === undefined ? [] : checkpointsFrom(checkpoints, firstProven);
  if (tree !== null && chain.length > 0) checkRoots(tree, chain, o.checkpointsPath);
  await writeProofs(o.outDir, tree, included, chain);
  const outside = [bounds.before, bounds.after].filter((b): b is Bound => b !== null);
  await writeBounds(o.outDir, tree, outside, chain);
  const first = included[0];
  const last = included[included.length - 1];
  const prunedAt =
    first !== undefined && bounds.before === null && prunedThrough > 0 && first.seq === prunedThrough + 1
      ? checkpoints.find((c) => c.signed.checkpoint.treeSize === prunedThrough)
      : undefined;
  const retention = await BufferedFile.create(path.join(o.outDir, BUNDLE_FILES.retentionCheckpoint));
  try {
    if (prunedAt !== undefined) await retention.write(`${prunedAt.signed.jcs}\n`);
  } finally {
    await retention.close();
  }
  await writeJson(path.join(o.outDir, BUNDLE_FILES.keys), { keys: o.keys.map((k) => publicJwk(k)) });

  const manifest: BundleManifest = {
    schema: BUNDLE_SCHEMA,
    tool: { name: o.tool.name, version: o.tool.version },
    createdAt: new Date(o.now).toISOString(),
    range: { since: new Date(since).toISOString(), until: new Date(until).toISOString() },
    receipts: { count: included.length, firstSeq: first?.seq ?? null, lastSeq: last?.seq ?? null, firstId: first?.id ?? null, lastId: last?.id ?? null },
    checkpoints: {
      count: chain.length,
      firstTreeSize: chain[0]?.signed.checkpoint.treeSize ?? null,
      latestTreeSize: chain[chain.length - 1]?.signed.checkpoint.treeSize ?? null,
    },
    notYetCheckpointed: notYet,
  };
  await writeJson(path.join(o.outDir, BUNDLE_FILES.manifest), manifest);
  return manifest;
}

async function prepareOutDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const entries = await readdir(dir);
    if (entries.length > 0) throw new ChioError('usage', `${dir} is not empty: export into a new or empty folder`);
  } catch (err) {
    if (err instanceof ChioError) throw err;
    throw new ChioError('io_error', `cannot create ${dir}: ${describe(err)}`, { cause: err });
  }
}

/** The whole checkpoint log, every line checked (form, signature, link); none when the file does not exist. */
async function loadCheckpoints(file: string, keys: readonly PublicKeyInfo[]): Promise<CheckpointLine[]> {
  const lines: CheckpointLine[] = [];
  let failure;
  try {
    failure = await readCheckpointLog(file, verificationKeys(keys), (entry) => lines.push(entry));
  } catch (err) {
    if (err instanceof ChioError && err.code === 'file_not_found') return [];
    throw err;
  }
  if (failure !== null) {
    const where = `${file} line ${failure.line}: checkpoint${failure.treeSize === null ? '' : ` of treeSize ${failure.treeSize}`}`;
    if (failure.unknownKey) throw new ChioError('key_invalid', `${where}: ${failure.message}: pass its key`);
    throw new ChioError(failure.code, `${where}: ${failure.message}`);
  }
  return lines;
}

/**
 * The retention anchor (the receipts before it were pruned). Every root computed from it is checked
 * against the signed checkpoints (checkRoots), so a wrong anchor cannot produce a bundle that
 * verifies; a checkpoint of exactly its size gives the clearer message here.
 */
async function loadAnchor(checkpointsPath: string, checkpoints: readonly CheckpointLine[]): Promise<MerkleFrontier> {
  const file = checkpointStatePaths(checkpointsPath).anchor;
  const anchor = await readFrontierFile(file);
  if (anchor === null) return new MerkleFrontier();
  const cp = checkpoints.find((c) => c.signed.checkpoint.treeSize === anchor.size);
  if (cp !== undefined && cp.signed.checkpoint.rootHash !== hashRef(anchor.root())) {
    throw new ChioError('receipt_chain_broken', `${file} does not match the signed checkpoint of treeSize ${anchor.size} in ${checkpointsPath}`);
  }
  return anchor;
}

function parseHeader(text: string, seq: number): z.infer<typeof receiptHeader> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ChioError('receipt_malformed', `receipt seq ${seq} is not valid JSON; run chio receipt verify`);
  }
  const parsed = receiptHeader.safeParse(value);
  if (!parsed.success || parsed.data.seq !== seq) {
    throw new ChioError('receipt_malformed', `receipt seq ${seq} is not a chio receipt; run chio receipt verify`);
  }
  return parsed.data;
}

/** The checkpoints from the first whose tree covers `seq` to the latest. */
function checkpointsFrom(checkpoints: readonly CheckpointLine[], seq: number): CheckpointLine[] {
  const at = checkpoints.findIndex((c) => c.signed.checkpoint.treeSize >= seq);
  return at < 0 ? [] : checkpoints.slice(at);
}

/** Every checkpoint of the chain must sign the root of exactly these receipts. */
function checkRoots(tree: MerkleTree, chain: readonly CheckpointLine[], file: string): void {
  for (const { line, signed } of chain) {
    const { treeSize, rootHash } = signed.checkpoint;
    if (treeSize > tree.size) {
      throw new ChioError('receipt_chain_broken', `${file} line ${line}: the checkpoint covers ${treeSize} receipts but the receipts end at seq ${tree.size}`);
    }
    const root = hashRef(tree.root(treeSize));
    if (root !== rootHash) {
      throw new ChioError(
        'receipt_chain_broken',
        `${file} line ${line}: the receipts 1..${treeSize} have root ${root}, not the signed ${rootHash}: the receipt files were altered`,
      );
    }
  }
}

async function writeProofs(dir: string, tree: MerkleTree | null, included: readonly Included[], chain: readonly CheckpointLine[]): Promise<void> {
  const proofs = await BufferedFile.create(path.join(dir, BUNDLE_FILES.proofs));
  const checkpoints = await BufferedFile.create(path.join(dir, BUNDLE_FILES.checkpoints));
  const consistency = await BufferedFile.create(path.join(dir, BUNDLE_FILES.consistency));
  try {
    if (tree !== null) {
      let cover = 0;
      for (const { seq, id } of included) {
        while ((chain[cover]?.signed.checkpoint.treeSize ?? Infinity) < seq) cover++;
        await proofs.write(`${jcs(proofLine(tree, { seq, id }, (chain[cover] as CheckpointLine).signed.checkpoint.treeSize))}\n`);
      }
      for (let i = 0; i < chain.length; i++) {
        const current = (chain[i] as CheckpointLine).signed;
        await checkpoints.write(`${current.jcs}\n`);
        const next = chain[i + 1]?.signed;
        if (next === undefined) continue;
        const from = current.checkpoint.treeSize;
        const to = next.checkpoint.treeSize;
        const line: ConsistencyProofLine = { fromTreeSize: from, toTreeSize: to, proof: hexes(tree.consistencyProof(from, to)) };
        await consistency.write(`${jcs(line)}\n`);
      }
    }
  } finally {
    await Promise.all([proofs.close(), checkpoints.close(), consistency.close()]);
  }
}

/** bounds.jsonl and bounds-proofs.jsonl: the receipts just outside the range, each with its inclusion proof. */
async function writeBounds(dir: string, tree: MerkleTree | null, bounds: readonly Bound[], chain: readonly CheckpointLine[]): Promise<void> {
  const receipts = await BufferedFile.create(path.join(dir, BUNDLE_FILES.bounds));
  const proofs = await BufferedFile.create(path.join(dir, BUNDLE_FILES.boundsProofs));
  try {
    for (const b of tree === null ? [] : bounds) {
      const cover = chain.find((c) => c.signed.checkpoint.treeSize >= b.seq);
      if (cover === undefined) continue;
      await receipts.write(`${b.jcs}\n`);
      await proofs.write(`${jcs(proofLine(tree as MerkleTree, b, cover.signed.checkpoint.treeSize))}\n`);
    }
  } finally {
    await Promise.all([receipts.close(), proofs.close()]);
  }
}

/** The inclusion proof line of receipt `seq` against the checkpoint of `treeSize` (proofs.jsonl, bounds-proofs.jsonl). */
function proofLine(tree: MerkleTree, r: Included, treeSize: number): InclusionProofLine {
  return { seq: r.seq, id: r.id, leafIndex: r.seq - 1, treeSize, auditPath: hexes(tree.inclusionProof(r.seq - 1, treeSize)) };
}

function hexes(hashes: readonly Buffer[]): string[] {
  return hashes.map((h) => h.toString('hex'));
}

async function writeJson(file: string, value: unknown): Promise<void> {
  const out = await BufferedFile.create(file);
  try {
    await out.write(`${JSON.stringify(value, null, 2)}\n`);
  } finally {
    await out.close();
  }
}

/** A new file (0600) written in ~1 MB appends, fsynced on close. */
class BufferedFile {
  readonly #fh: FileHandle;
  readonly #file: string;
  #pending: string[] = [];
  #pendingBytes = 0;

  private constructor(fh: FileHandle, file: string) {
    this.#fh = fh;
    this.#file = file;
  }

  static async create(file: string): Promise<BufferedFile> {
    try {
      return new BufferedFile(await open(file, 'wx', 0o600), file);
    } catch (err) {
      throw new ChioError('io_error', `cannot create ${file}: ${describe(err)}`, { cause: err });
    }
  }

  async write(text: string): Promise<void> {
    this.#pending.push(text);
    this.#pendingBytes += text.length;
    if (this.#pendingBytes >= 1024 * 1024) await this.#flush();
  }

  async close(): Promise<void> {
    try {
      await this.#flush();
      await this.#fh.sync();
    } finally {
      await this.#fh.close();
    }
  }

  async #flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const text = this.#pending.join('');
    this.#pending = [];
    this.#pendingBytes = 0;
    try {
      await this.#fh.writeFile(text, 'utf8');
    } catch (err) {
      throw new ChioError('io_error', `cannot write ${this.#file}: ${describe(err)}`, { cause: err });
    }
  }
}
