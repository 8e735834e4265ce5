/**
 * Receipt retention (SPEC §2.1 `receipts.retention: {max_age: 30d}`, §6): only whole checkpointed
 * ranges are ever removed, no file is rewritten in place, and every checkpoint is kept.
 *
 * JSONL segments: `receipts.jsonl` is the live segment. When a checkpoint is decided and the live
 * file holds at least `segment_max_bytes`, the next write first renames it to
 * `receipts-<firstSeq>-<lastSeq>.jsonl` (so segments end on checkpoint boundaries) and starts a
 * new live file. `SegmentedJsonlSink` does this around the plain `JsonlSink` and, when the live
 * file is empty, takes the chain head from the newest segment, so the chain never restarts.
 *
 * Pruning: the newest checkpoint older than `max_age` (the checkpoint's own timestamp, which is
 * after every receipt it covers) bounds what may go; the boundary is as far under it as every store
 * can prune exactly (JSONL: the end of the last whole segment; SQLite: any seq). Before anything is
 * deleted, the compact range at the boundary is computed from the previous anchor plus the receipts
 * being pruned, extended to the checkpoint and checked against its signed root, and saved as
 * `<checkpoints>.anchor.json`; then every store prunes through the boundary (`pruneThrough`). What
 * remains still verifies: it starts right after a range covered by a signed checkpoint, and proofs
 * about it need only the anchor (./merkle.ts `MerkleTree` from a frontier).
 */
import { open, readdir, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from '../check/pipeline.js';
import { ChioError, describe } from '../errors.js';
import type { SigningKey } from '../keys.js';
import {
  Checkpointer,
  checkpointStatePaths,
  hashRef,
  isReceiptSource,
  linesBackwards,
  parseCheckpointLine,
  readFrontierFile,
  syncFolder,
  writeFrontierFile,
  type CheckpointsConfig,
  type SignedCheckpoint,
} from './checkpoint.js';
import { MerkleFrontier } from './merkle.js';
import { chainHeadOf, receiptLeafOf, type ChainHead, type SealedReceipt } from './receipt.js';
import { JsonlSink, type JsonlSinkOptions } from './sinks/jsonl.js';
import type { ReceiptSink } from './sinks/sink.js';
import type { ReceiptRecord, ReceiptSource } from './store.js';
import { readReceiptLines } from './verify.js';

// ---- configuration ----

const DURATION_UNITS_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `30d`, `12h`, `90m`, `3600s` → milliseconds; null when it is not one. */
export function parseDuration(text: string): number | null {
  const m = /^([1-9][0-9]{0,9})(s|m|h|d)$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * DURATION_UNITS_MS[m[2] as keyof typeof DURATION_UNITS_MS];
}

const duration = z.string().transform((text, ctx) => {
  const ms = parseDuration(text);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: 'expected a duration like 30d, 12h, 90m or 3600s' });
    return z.NEVER;
  }
  return ms;
});

export const DEFAULT_SEGMENT_MAX_BYTES = 64 * 1024 * 1024;

export const retentionConfigSchema = z
  .strictObject({
    /** receipts older than this may be pruned (whole checkpointed ranges only); milliseconds after parsing */
    max_age: duration,
    /** the live JSONL file is rotated into a segment at a checkpoint once it holds this much */
    segment_max_bytes: z.int().min(1).default(DEFAULT_SEGMENT_MAX_BYTES),
    /** how often (at most) pruning runs, after a checkpoint */
    check_every: duration.prefault('1h'),
  })
  .optional();

export type RetentionConfig = NonNullable<z.infer<typeof retentionConfigSchema>>;

// ---- segment files ----

export interface ReceiptFile {
  readonly path: string;
  /** seq of its first and last receipt */
  readonly first: number;
  readonly last: number;
}

/** `<dir>/<name>-<first>-<last><ext>` for the live file `<dir>/<name><ext>`. */
export function segmentPath(livePath: string, first: number, last: number): string {
  const { dir, name, ext } = path.parse(livePath);
  return path.join(dir, `${name}-${first}-${last}${ext}`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The rotated segments of a live file, oldest first. */
export async function listSegments(livePath: string): Promise<ReceiptFile[]> {
  const { dir, name, ext } = path.parse(livePath);
  const pattern = new RegExp(`^${escapeRegExp(name)}-([1-9][0-9]*)-([1-9][0-9]*)${escapeRegExp(ext)}$`);
  let entries: string[];
  try {
    entries = await readdir(dir || '.');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ChioError('io_error', `cannot list ${dir}: ${describe(err)}`, { cause: err });
  }
  const segments: ReceiptFile[] = [];
  for (const entry of entries) {
    const m = pattern.exec(entry);
    if (!m) continue;
    const first = Number(m[1]);
    const last = Number(m[2]);
    if (Number.isSafeInteger(first) && Number.isSafeInteger(last) && first <= last) {
      segments.push({ path: path.join(dir, entry), first, last });
    }
  }
  return segments.sort((a, b) => a.first - b.first);
}

const SEQ_MARK = Buffer.from('"schema":"chio.receipt.v2","seq":', 'utf8');
const SEQ_MARK_V1 = Buffer.from('"schema":"chio.receipt.v1","seq":', 'utf8');

/**
 * The seq of a receipt line without parsing all of it: in a receipt's JCS text `seq` directly
 * follows `schema` (members are sorted, and quotes inside strings are escaped), so the marker can
 * only be the top-level member. Falls back to JSON.parse; null when the line is not a receipt.
 */
export function receiptSeqOf(line: Uint8Array): number | null {
  const bytes = Buffer.from(line.buffer, line.byteOffset, line.byteLength);
  let at = bytes.indexOf(SEQ_MARK);
  if (at < 0) at = bytes.indexOf(SEQ_MARK_V1);
  if (at >= 0) {
    let seq = 0;
    let i = at + SEQ_MARK.length;
    for (; i < bytes.length; i++) {
      const c = bytes[i] as number;
      if (c < 0x30 || c > 0x39) break;
      seq = seq * 10 + (c - 0x30);
    }
    if (i > at + SEQ_MARK.length && bytes[i] === 0x2c && Number.isSafeInteger(seq) && seq > 0) return seq;
  }
  try {
    const value = JSON.parse(bytes.toString('utf8')) as { seq?: unknown };
    return typeof value.seq === 'number' && Number.isSafeInteger(value.seq) && value.seq > 0 ? value.seq : null;
  } catch {
    return null;
  }
}

/** The first complete line of a file; null when it has none. */
export async function firstLine(file: string): Promise<Buffer | null> {
  const fh = await open(file, 'r');
  try {
    const chunks: Buffer[] = [];
    for (let pos = 0; pos < 1024 * 1024; ) {
      const buf = Buffer.alloc(16 * 1024);
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return null;
      const nl = buf.subarray(0, bytesRead).indexOf(0x0a);
      if (nl >= 0) {
        chunks.push(buf.subarray(0, nl));
        return Buffer.concat(chunks);
      }
      chunks.push(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    return null;
  } finally {
    await fh.close();
  }
}

/** The last complete line of a file and the chain head it names; null when the file holds none. */
async function headOfFile(file: string): Promise<ChainHead | null> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    for await (const { bytes } of linesBackwards(fh, size)) {
      const seq = receiptSeqOf(bytes);
      if (seq === null) throw new ChioError('receipt_malformed', `${file}: the last line is not a receipt`);
      return chainHeadOf(bytes);
    }
    return null;
  } finally {
    await fh.close();
  }
}

/**
 * The receipts of a JSONL sink, read-only: its segments then the live file, in seq order. Safe
 * while the service appends (a line still being written ends the read).
 */
export class JsonlReceiptFiles implements Pick<ReceiptSource, 'iterateBySeq'> {
  constructor(readonly livePath: string) {}

  /** Segments and the live file (when it holds receipts), oldest first. */
  async files(): Promise<ReceiptFile[]> {
    const files = await listSegments(this.livePath);
    const first = await firstLine(this.livePath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw new ChioError('io_error', `cannot read ${this.livePath}: ${describe(err)}`, { cause: err });
    });
    if (first !== null) {
      const firstSeq = receiptSeqOf(first);
      const head = await headOfFile(this.livePath);
      if (firstSeq === null || head === null) throw new ChioError('receipt_malformed', `${this.livePath}: the first line is not a receipt`);
      files.push({ path: this.livePath, first: firstSeq, last: head.seq });
    }
    return files;
  }

  async *iterateBySeq(fromSeq: number, toSeq = Number.MAX_SAFE_INTEGER): AsyncGenerator<ReceiptRecord> {
    let next = fromSeq;
    for (const file of await this.files()) {
      if (file.last < next || next > toSeq) continue;
      if (file.first > toSeq) return;
      for await (const piece of readReceiptLines(file.path, await startOffset(file, next))) {
        if (piece.kind !== 'line') {
          if (piece.kind === 'torn' && file.path === this.livePath) break; // being appended right now
          throw new ChioError('receipt_malformed', `${file.path}: a line is incomplete or too long`);
        }
        const seq = receiptSeqOf(piece.bytes);
        if (seq === null) throw new ChioError('receipt_malformed', `${file.path}: a line is not a receipt (run chio receipt verify)`);
        if (seq < next) continue;
        if (seq > toSeq) return;
        yield { seq, jcs: piece.bytes.toString('utf8') };
        next = seq + 1;
      }
    }
  }
}

/** Where to start reading `file` for receipt `seq`: found from the end when it is nearer to it. */
async function startOffset(file: ReceiptFile, seq: number): Promise<number> {
  if (seq <= file.first || file.last - seq >= seq - file.first) return 0;
  const fh = await open(file.path, 'r');
  try {
    const { size } = await fh.stat();
    for await (const { start, bytes } of linesBackwards(fh, size)) {
      const at = receiptSeqOf(bytes);
      if (at === null) return 0;
      if (at <= seq) return start;
    }
    return 0;
  } finally {
    await fh.close();
  }
}

// ---- the sink ----

export interface SegmentedJsonlSinkOptions extends JsonlSinkOptions {
  /** rotate the live file at a checkpoint once it holds this many bytes; null: never rotate */
  readonly segmentMaxBytes?: number | null;
  /** a rotation failed (the live file stays and is written on) */
  readonly onRotationError?: (err: unknown) => void;
}

/**
 * The JSONL sink with segments (see the header). A `JsonlSink` (same file format, torn-tail
 * handling and rewind) that also rotates and reads its segments. Rotation happens at the start of
 * a write, when the writer has no other operation in flight on this sink.
 */
export class SegmentedJsonlSink extends JsonlSink implements ReceiptSource {
  readonly #options: SegmentedJsonlSinkOptions;
  readonly #files: JsonlReceiptFiles;
  /** the head at the end of the newest segment (the receipt before the live file's first) */
  #segmentEnd: ChainHead | null = null;
  #head: ChainHead | null = null;
  #liveFirst: number | null = null;
  #liveBytes = 0;
  /** rotate before the next write if the live file then ends at this seq */
  #rotateAt: number | null = null;
  /** a rotation closed the file and could not open the live one again: the next write tries first */
  #reopenPending = false;

  constructor(livePath: string, options: SegmentedJsonlSinkOptions = {}) {
    super(livePath, options);
    this.#options = options;
    this.#files = new JsonlReceiptFiles(livePath);
  }

  /** The head of the live file, or of the newest segment when the live file is empty (just rotated). */
  override async open(): Promise<ChainHead | null> {
    const liveHead = await super.open();
    try {
      const segments = await listSegments(this.path);
      const newest = segments[segments.length - 1];
      this.#segmentEnd = newest === undefined ? null : await headOfFile(newest.path);
      this.#liveBytes = (await stat(this.path)).size;
      const first = liveHead === null ? null : await firstLine(this.path);
      this.#liveFirst = first === null ? null : receiptSeqOf(first);
    } catch (err) {
      await super.close();
      if (err instanceof ChioError) throw err;
      throw new ChioError('io_error', `cannot open receipt segments of ${this.path}: ${describe(err)}`, { cause: err });
    }
    this.#head = liveHead ?? this.#segmentEnd;
    return this.#head;
  }

  override async write(batch: readonly SealedReceipt[], durable: boolean): Promise<void> {
    if (this.#reopenPending) await this.#reopen();
    if (this.#rotateAt !== null && this.#rotateAt === this.#head?.seq && this.#liveFirst !== null) await this.#rotate();
    await super.write(batch, durable);
    const first = batch[0];
    const last = batch[batch.length - 1];
    if (first === undefined || last === undefined) return;
    this.#liveFirst ??= first.seq;
    this.#head = { seq: last.seq, hash: last.hash };
    for (const s of batch) this.#liveBytes += Buffer.byteLength(s.jcs, 'utf8') + 1;
  }

  /** Rewinding to the end of the newest segment empties the live file. */
  override async rewind(head: ChainHead | null): Promise<void> {
    if (this.#reopenPending) await this.#reopen();
    const toSegmentEnd = head !== null && head.seq === this.#segmentEnd?.seq && head.hash === this.#segmentEnd.hash;
    await super.rewind(toSegmentEnd ? null : head);
    this.#head = head;
    this.#liveBytes = (await stat(this.path)).size;
    if (this.#liveBytes === 0) this.#liveFirst = null;
  }

  /** A checkpoint of `treeSize` receipts was decided: rotate before the next write if the live file is big enough. */
  rotateAt(treeSize: number): void {
    const max = this.#options.segmentMaxBytes ?? null;
    if (max !== null && this.#liveBytes >= max) this.#rotateAt = treeSize;
  }

  iterateBySeq(fromSeq: number, toSeq?: number): AsyncIterable<ReceiptRecord> {
    return this.#files.iterateBySeq(fromSeq, toSeq);
  }

  /** The end of the last segment that ends at or before `seq` (0 when none): how far pruneThrough(seq) goes. */
  async prunableThrough(seq: number): Promise<number> {
    let through = 0;
    for (const segment of await listSegments(this.path)) if (segment.last <= seq) through = Math.max(through, segment.last);
    return through;
  }

  /** Deletes every segment that ends at or before `seq` (never the live file); returns the receipts deleted. */
  async pruneThrough(seq: number): Promise<number> {
    let deleted = 0;
    for (const segment of await listSegments(this.path)) {
      if (segment.last > seq) continue;
      await unlink(segment.path);
      deleted += segment.last - segment.first + 1;
    }
    if (deleted > 0) await syncFolder(path.dirname(this.path));
    return deleted;
  }

  /** Renames the live file to its segment name and starts a fresh one; on failure keeps writing the old one. */
  async #rotate(): Promise<void> {
    const first = this.#liveFirst;
    const head = this.#head;
    this.#rotateAt = null;
    if (first === null || head === null) return;
    const target = segmentPath(this.path, first, head.seq);
    await super.write([], true); // fsync whatever relaxed mode left unsynced
    await super.closeFile(); // the writer lock stays: no other process may take the log between two files
    let rotated = false;
    try {
      if (await exists(target)) throw new ChioError('io_error', `segment ${target} already exists`);
      await rename(this.path, target);
      await syncFolder(path.dirname(this.path));
      rotated = true;
    } catch (err) {
      this.#options.onRotationError?.(err);
    }
    if (rotated) {
      this.#segmentEnd = head;
      this.#liveFirst = null;
      this.#liveBytes = 0;
    }
    await this.#reopen(); // a new, empty live file (or the old one again)
  }

  /**
   * Opens the live file again after a rotation closed it. When that fails (ENOSPC creating the new
   * file, say) this write fails, and every later write tries again first: the sink is not left
   * closed until a restart (every allow would be a deny receipt_unavailable).
   */
  async #reopen(): Promise<void> {
    try {
      await super.open();
      this.#reopenPending = false;
    } catch (err) {
      this.#reopenPending = true;
      this.#options.onRotationError?.(err);
      throw err;
    }
  }
}

/** The same sinks with every JSONL sink segment-aware (rotating when `segmentMaxBytes` is set). */
export function withSegments(sinks: readonly ReceiptSink[], options: SegmentedJsonlSinkOptions): ReceiptSink[] {
  return sinks.map((s) => (s instanceof JsonlSink && !(s instanceof SegmentedJsonlSink) ? new SegmentedJsonlSink(s.path, options) : s));
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

// ---- pruning ----

/** A store that can prune; one that can only prune whole pieces (JSONL segments) says how far it would go. */
export type PruneTarget = Pick<ReceiptSource, 'pruneThrough'> & {
  /** the largest seq ≤ `seq` it can prune through exactly (default: `seq`) */
  prunableThrough?(seq: number): Promise<number>;
};

export interface PruneOptions {
  readonly checkpointsPath: string;
  readonly maxAgeMs: number;
  readonly now: number;
  /** where the receipts being pruned are read from, to move the anchor */
  readonly source: Pick<ReceiptSource, 'iterateBySeq'>;
  /** every store that holds the receipts */
  readonly targets: readonly PruneTarget[];
}

export interface PruneResult {
  /** everything up to this seq may now be gone (the anchor); null when nothing could be pruned */
  readonly through: number | null;
  /** receipts deleted, summed over the stores */
  readonly deleted: number;
}

/**
 * Prunes under the newest checkpoint older than maxAge, as far as every store can prune exactly
 * (for JSONL, through the end of the last whole segment under it). The anchor at that boundary is
 * checked first: extended with the receipts up to the checkpoint, it must give the signed root.
 */
export async function pruneReceipts(o: PruneOptions): Promise<PruneResult> {
  const checkpoint = await newestCheckpointAtOrBefore(o.checkpointsPath, o.now - o.maxAgeMs);
  if (checkpoint === null) return { through: null, deleted: 0 };
  const { treeSize, rootHash } = checkpoint.checkpoint;
  const anchorPath = checkpointStatePaths(o.checkpointsPath).anchor;
  const anchor = (await readFrontierFile(anchorPath)) ?? new MerkleFrontier();
  const prunable = async (seq: number): Promise<number> => {
    let at = seq;
    for (const target of o.targets) at = Math.min(at, (await target.prunableThrough?.(seq)) ?? seq);
    return at;
  };
  let through = await prunable(treeSize);
  // the anchor must be a signed checkpoint's tree (receipt verify checks it against one): a segment
  // cut where the checkpoint then failed to be written is not a place to prune through; an earlier one is
  while (through > anchor.size && through !== treeSize && (await checkpointOfSize(o.checkpointsPath, through)) === null) {
    through = await prunable(through - 1);
  }
  if (through <= anchor.size) return { through: null, deleted: 0 };
  const { atBoundary, atCheckpoint } = await advanceFrontier(anchor, o.source, through, treeSize);
  if (hashRef(atCheckpoint.root()) !== rootHash) {
    throw new ChioError(
      'receipt_chain_broken',
      `refusing to prune: the receipts 1..${treeSize} do not match the signed checkpoint of treeSize ${treeSize} in ${o.checkpointsPath}`,
    );
  }
  await writeFrontierFile(anchorPath, atBoundary);
  let deleted = 0;
  for (const target of o.targets) deleted += await target.pruneThrough(through);
  return { through, deleted };
}

/** The frontier `from` extended with the receipts after it: a copy at `boundary`, and at `to` (checked to be contiguous). */
async function advanceFrontier(
  from: MerkleFrontier,
  source: Pick<ReceiptSource, 'iterateBySeq'>,
  boundary: number,
  to: number,
): Promise<{ atBoundary: MerkleFrontier; atCheckpoint: MerkleFrontier }> {
  const frontier = from.clone();
  let atBoundary = frontier.size === boundary ? frontier.clone() : null;
  for await (const record of source.iterateBySeq(frontier.size + 1, to)) {
    if (record.seq !== frontier.size + 1) break;
    frontier.append(receiptLeafOf(record.jcs));
    if (frontier.size === boundary) atBoundary = frontier.clone();
  }
  if (frontier.size !== to || atBoundary === null) {
    throw new ChioError('receipt_chain_broken', `refusing to prune: receipt seq ${frontier.size + 1} is missing (the receipts before the checkpoint of treeSize ${to} must all be there)`);
  }
  return { atBoundary, atCheckpoint: frontier };
}

/**
 * The newest checkpoint stamped at or before `cutoff` (epoch ms), by binary search over the log's
 * byte offsets (checkpoints are appended in time order), so a long log costs O(log n) reads.
 */
export async function newestCheckpointAtOrBefore(file: string, cutoff: number): Promise<SignedCheckpoint | null> {
  return newestCheckpointWhere(file, (c) => Date.parse(c.checkpoint.timestamp) <= cutoff);
}

/** The checkpoint of exactly `treeSize` receipts in the log, or null (tree sizes grow along the log: a binary search too). */
export async function checkpointOfSize(file: string, treeSize: number): Promise<SignedCheckpoint | null> {
  const found = await newestCheckpointWhere(file, (c) => c.checkpoint.treeSize <= treeSize);
  return found?.checkpoint.treeSize === treeSize ? found : null;
}

/** The last checkpoint of the log for which `before` holds, `before` being true for a prefix of the log. */
async function newestCheckpointWhere(file: string, before: (c: SignedCheckpoint) => boolean): Promise<SignedCheckpoint | null> {
  let fh: Handle;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ChioError('io_error', `cannot read ${file}: ${describe(err)}`, { cause: err });
  }
  try {
    const { size } = await fh.stat();
    let best: SignedCheckpoint | null = null;
    let lo = 0; // every line starting before lo is at or before the cutoff
    let hi = size; // every line starting at or after hi is after it
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const line = await lineStartingAtOrAfter(fh, mid, size);
      if (line === null || line.start >= hi) {
        hi = mid;
        continue;
      }
      let signed: SignedCheckpoint;
      try {
        signed = parseCheckpointLine(line.bytes);
      } catch (err) {
        throw new ChioError('receipt_malformed', `${file}: the line at byte ${line.start} is not a checkpoint: ${describe(err)}`);
      }
      if (before(signed)) {
        best = signed;
        lo = line.end;
      } else {
        hi = line.start;
      }
    }
    return best;
  } finally {
    await fh.close();
  }
}

type Handle = Awaited<ReturnType<typeof open>>;

/** The first complete line that starts at or after `pos`; `end` is the offset after its newline. */
async function lineStartingAtOrAfter(fh: Handle, pos: number, size: number): Promise<{ start: number; end: number; bytes: Buffer } | null> {
  let start = 0;
  if (pos > 0) {
    const nl = await newlineAtOrAfter(fh, pos - 1, size);
    if (nl < 0) return null;
    start = nl + 1;
  }
  const end = await newlineAtOrAfter(fh, start, size);
  if (end < 0) return null;
  const bytes = Buffer.alloc(end - start);
  await fh.read(bytes, 0, bytes.length, start);
  return { start, end: end + 1, bytes };
}

/** Offset of the first `\n` at or after `from`, or -1. */
async function newlineAtOrAfter(fh: Handle, from: number, size: number): Promise<number> {
  const chunk = Buffer.alloc(16 * 1024);
  for (let at = from; at < size; ) {
    const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, size - at), at);
    if (bytesRead === 0) return -1;
    const nl = chunk.subarray(0, bytesRead).indexOf(0x0a);
    if (nl >= 0) return at + nl;
    at += bytesRead;
  }
  return -1;
}

export interface RetentionOptions {
  readonly config: RetentionConfig;
  readonly checkpointsPath: string;
  readonly source: Pick<ReceiptSource, 'iterateBySeq'>;
  readonly targets: readonly PruneTarget[];
  readonly clock: () => number;
  readonly log: Logger;
}

/** Runs pruning after checkpoints, at most every `check_every`, one run at a time. */
export class Retention {
  readonly #o: RetentionOptions;
  #lastRun = Number.NEGATIVE_INFINITY;
  #running: Promise<PruneResult | null> | null = null;

  constructor(options: RetentionOptions) {
    this.#o = options;
  }

  /** A checkpoint was written: prune if it is time. */
  afterCheckpoint(): void {
    // a clock stepped back past the last run (a correction after a jump ahead) does not hold pruning off
    const elapsed = this.#o.clock() - this.#lastRun;
    if (this.#running !== null || (elapsed >= 0 && elapsed < this.#o.config.check_every)) return;
    void this.pruneNow();
  }

  /** Prunes now (waits for a run in progress instead of starting another); errors are logged, null returned. */
  pruneNow(): Promise<PruneResult | null> {
    this.#running ??= (async () => {
      this.#lastRun = this.#o.clock();
      try {
        const result = await pruneReceipts({
          checkpointsPath: this.#o.checkpointsPath,
          maxAgeMs: this.#o.config.max_age,
          now: this.#lastRun,
          source: this.#o.source,
          targets: this.#o.targets,
        });
        if (result.deleted > 0) this.#o.log.info({ ...result }, 'pruned receipts older than the retention period');
        return result;
      } catch (err) {
        this.#o.log.error({ err: describe(err) }, 'receipt retention failed; nothing more was pruned');
        return null;
      } finally {
        this.#running = null;
      }
    })();
    return this.#running;
  }

  async close(): Promise<void> {
    await this.#running;
  }
}

// ---- wiring for the service ----

export interface AuditTrailOptions {
  /** `receipts` of chio.yaml: the sinks' paths, `checkpoints`, `retention` */
  readonly config: {
    readonly sinks: ReadonlyArray<{ readonly path: string }>;
    readonly checkpoints: CheckpointsConfig;
    readonly retention?: RetentionConfig | undefined;
  };
  /** the opened sinks and following stores; the first that can be read back rebuilds the tree at startup */
  readonly sinks: readonly object[];
  /** the head they opened on */
  readonly head: ChainHead | null;
  readonly key: SigningKey;
  readonly clock: () => number;
  readonly log: Logger;
  /** makes every committed receipt durable (the writer's flush) */
  readonly flush: () => Promise<void>;
}

export interface AuditTrail {
  /** the receipt writer's onCommitted hook */
  committed(batch: readonly SealedReceipt[], durable: boolean): void;
  /** the latest checkpoint written */
  latest(): SignedCheckpoint | null;
  /** writes a checkpoint of what is not covered yet, then prunes what retention allows */
  checkpointNow(): Promise<SignedCheckpoint | null>;
  /** final checkpoint, pending pruning finished, log closed */
  close(): Promise<void>;
}

/** `checkpoints.jsonl` beside the first sink's file unless configured. */
export function defaultCheckpointsPath(checkpoints: CheckpointsConfig, sinks: ReadonlyArray<{ readonly path: string }>): string {
  const first = sinks[0];
  if (checkpoints.path !== undefined) return checkpoints.path;
  if (first === undefined) throw new TypeError('no receipt sink to put checkpoints.jsonl beside');
  return path.join(path.dirname(first.path), 'checkpoints.jsonl');
}

/**
 * Checkpoints (./checkpoint.ts), segment rotation at checkpoints and retention for the running
 * service. Throws ChioError when the receipts do not match the checkpoints already signed.
 */
export async function startAuditTrail(o: AuditTrailOptions): Promise<AuditTrail> {
  const sources = o.sinks.filter((s): s is ReceiptSource => isReceiptSource(s));
  const source = sources[0];
  if (source === undefined) {
    o.log.warn({}, 'no receipt sink can be read back: receipt checkpoints are off');
    return { committed: () => undefined, latest: () => null, checkpointNow: async () => null, close: async () => undefined };
  }
  const { checkpoints, retention: retentionConfig } = o.config;
  const checkpointsPath = defaultCheckpointsPath(checkpoints, o.config.sinks);
  const segmented = o.sinks.filter((s): s is SegmentedJsonlSink => s instanceof SegmentedJsonlSink);
  const retention =
    retentionConfig === undefined
      ? null
      : new Retention({ config: retentionConfig, checkpointsPath, source, targets: sources, clock: o.clock, log: o.log });
  const checkpointer = await Checkpointer.open({
    path: checkpointsPath,
    key: o.key,
    clock: o.clock,
    everyReceipts: checkpoints.every_receipts,
    everySeconds: checkpoints.every_seconds,
    source,
    head: o.head,
    makeDurable: o.flush,
    log: o.log,
    onDecided: (treeSize) => {
      for (const sink of segmented) sink.rotateAt(treeSize);
    },
    onWritten: () => retention?.afterCheckpoint(),
  });
  return {
    committed: (batch, durable) => checkpointer.committed(batch, durable),
    latest: () => checkpointer.latest,
    checkpointNow: async () => {
      const latest = await checkpointer.checkpointNow();
      await retention?.pruneNow();
      return latest;
    },
    close: async () => {
      await checkpointer.close();
      await retention?.close();
    },
  };
}
