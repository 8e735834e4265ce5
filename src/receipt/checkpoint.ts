/**
 * Signed Merkle checkpoints of the receipt log (`chio.checkpoint.v1`, SPEC §6 audit trail):
 * every `every_receipts` receipts or `every_seconds` seconds the service signs the RFC 6962 tree
 * head (./merkle.ts) of all receipts so far — leaves are the receipts' Merkle leaves in seq order
 * (`chio.receipt.v2`: SHA-256(0x00 ‖ JCS of the body, without batch and signature), the leaf its
 * batch signature covers; `chio.receipt.v1`: over the full JCS line), leaf index = seq − 1 — and
 * appends it, as its RFC 8785 JCS text, to `checkpoints.jsonl`:
 *
 *   {schema, treeSize, rootHash: "sha256:<hex>", previousCheckpointHash: "sha256:<hex of the
 *    previous checkpoint's JCS bytes>" | null, timestamp, kernelKey, signature: "ed25519:<b64url>"}
 *
 * `signature` is Ed25519 (RFC 8032) over the JCS bytes without `signature`, as for receipts.
 *
 * State kept beside the log (both self-verifying: the root of a frontier must equal the signed
 * root of the checkpoint of the same size, so neither needs to be trusted):
 * - `<log>.frontier.json`: the compact range (O(log n) hashes) at the latest checkpoint, replaced
 *   atomically after each one. At startup the tree is rebuilt from it plus the receipts after it.
 * - `<log>.anchor.json`: the compact range at the retention boundary (./retention.ts), so proofs
 *   about the receipts kept after pruning still work.
 *
 * On the request path the only cost is the writer's hook: one leaf hash and O(1) amortized node
 * hashes per receipt after its batch is committed. Signing and file writes happen off it, one at
 * a time; in relaxed durability the receipts are flushed before a checkpoint covers them.
 */
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from '../check/pipeline.js';
import { ChioError, describe } from '../errors.js';
import type { AdminResponse } from '../server/admin.js';
import { verifyEd25519, type SigningKey } from '../keys.js';
import { jcs } from './canonical.js';
import { MerkleFrontier } from './merkle.js';
import { RECEIPT_HASH_PATTERN, receiptFacts, receiptHash, type ChainHead, type SealedReceipt } from './receipt.js';
import type { ReceiptSource } from './store.js';
import { readReceiptLines, type VerificationKeys, type VerifyFailureCode } from './verify.js';

export const CHECKPOINT_SCHEMA = 'chio.checkpoint.v1';
export const FRONTIER_SCHEMA = 'chio.merkle-frontier.v1';

export interface Checkpoint {
  readonly schema: typeof CHECKPOINT_SCHEMA;
  readonly treeSize: number;
  /** `sha256:` + hex of the RFC 6962 root of the first treeSize receipts */
  readonly rootHash: string;
  /** `sha256:` + hex of the previous checkpoint's full JCS bytes; null for the first */
  readonly previousCheckpointHash: string | null;
  readonly timestamp: string;
  readonly kernelKey: string;
  readonly signature: string;
}

export interface SignedCheckpoint {
  readonly checkpoint: Checkpoint;
  /** the checkpoint's full JCS text (a line of checkpoints.jsonl without its `\n`) */
  readonly jcs: string;
  /** `sha256:<hex>` of `jcs`: what the next checkpoint's previousCheckpointHash names */
  readonly hash: string;
}

// ---- configuration (SPEC §2.1 `receipts.checkpoints`) ----

export const checkpointsConfigSchema = z
  .strictObject({
    every_receipts: z.int().min(1).max(100_000_000).default(1000),
    every_seconds: z.int().min(1).max(86_400).default(60),
    /** default: checkpoints.jsonl beside the first receipt sink's file */
    path: z.string().min(1).optional(),
  })
  .prefault({});

export type CheckpointsConfig = z.infer<typeof checkpointsConfigSchema>;

/** `<dir>/<name>.frontier.json` and `<dir>/<name>.anchor.json` for `<dir>/<name>.jsonl`. */
export function checkpointStatePaths(checkpointsPath: string): { frontier: string; anchor: string } {
  const { dir, name } = path.parse(checkpointsPath);
  return { frontier: path.join(dir, `${name}.frontier.json`), anchor: path.join(dir, `${name}.anchor.json`) };
}

// ---- signing and parsing ----

const HEX_HASH = /^[0-9a-f]{64}$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export function hashRef(bytes: Uint8Array): string {
  return `sha256:${Buffer.from(bytes).toString('hex')}`;
}

/** The 32 bytes a `sha256:<hex>` reference names. */
export function hashBytes(ref: string): Buffer {
  if (!RECEIPT_HASH_PATTERN.test(ref)) throw new TypeError(`not a sha256:<hex> reference: ${ref}`);
  return Buffer.from(ref.slice('sha256:'.length), 'hex');
}

export interface CheckpointFields {
  readonly treeSize: number;
  readonly root: Uint8Array;
  readonly previous: SignedCheckpoint | null;
  /** epoch milliseconds */
  readonly timestamp: number;
}

export function signCheckpoint(fields: CheckpointFields, key: SigningKey): SignedCheckpoint {
  if (!Number.isSafeInteger(fields.treeSize) || fields.treeSize < 1) throw new TypeError(`bad checkpoint treeSize ${fields.treeSize}`);
  const unsigned = {
    schema: CHECKPOINT_SCHEMA,
    treeSize: fields.treeSize,
    rootHash: hashRef(fields.root),
    previousCheckpointHash: fields.previous?.hash ?? null,
    timestamp: new Date(fields.timestamp).toISOString(),
    kernelKey: key.kid,
  } as const;
  const signature = `ed25519:${key.sign(Buffer.from(jcs(unsigned), 'utf8')).toString('base64url')}`;
  const checkpoint: Checkpoint = { ...unsigned, signature };
  const text = jcs(checkpoint);
  return { checkpoint, jcs: text, hash: receiptHash(text) };
}

const checkpointSchema = z.strictObject({
  schema: z.literal(CHECKPOINT_SCHEMA),
  treeSize: z.int().min(1),
  rootHash: z.string().regex(RECEIPT_HASH_PATTERN, 'expected sha256:<64 hex>'),
  previousCheckpointHash: z.string().regex(RECEIPT_HASH_PATTERN, 'expected sha256:<64 hex>').nullable(),
  timestamp: z
    .string()
    .regex(TIMESTAMP, 'expected an ISO 8601 UTC time with milliseconds')
    .refine((t) => !Number.isNaN(Date.parse(t)) && new Date(t).toISOString() === t, 'not a valid date'),
  kernelKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'expected a JWK thumbprint (43 base64url characters)'),
  signature: z.string().regex(/^ed25519:[A-Za-z0-9_-]{86}$/, 'expected ed25519:<86 base64url characters>'),
});

/** Why a line is not a good checkpoint; `code` is one of the receipt verification codes. */
export class CheckpointError extends Error {
  constructor(
    readonly code: VerifyFailureCode,
    message: string,
    /** signed by a key that is not among those given (rather than a bad signature) */
    readonly unknownKey = false,
  ) {
    super(message);
  }
}

/** Parses one line of a checkpoint log: a chio.checkpoint.v1 object written as exactly its JCS text. */
export function parseCheckpointLine(bytes: Uint8Array): SignedCheckpoint {
  let text: string;
  let value: unknown;
  try {
    // ignoreBOM: a BOM is kept (and then fails the JCS check), never silently stripped
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    value = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError('receipt_malformed', `not valid JSON: ${describe(err)}`);
  }
  const parsed = checkpointSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? `field ${issue.path.join('.')}` : 'checkpoint';
    throw new CheckpointError('receipt_malformed', `not a ${CHECKPOINT_SCHEMA} checkpoint: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  const checkpoint = parsed.data as Checkpoint;
  if (jcs(checkpoint) !== text) {
    throw new CheckpointError('receipt_malformed', "the line is not the checkpoint's canonical JSON (RFC 8785 JCS) text");
  }
  return { checkpoint, jcs: text, hash: receiptHash(text) };
}

/** Throws CheckpointError unless the checkpoint is signed by one of `keys`. */
export function checkCheckpointSignature(signed: SignedCheckpoint, keys: VerificationKeys): void {
  const { signature, ...unsigned } = signed.checkpoint;
  const key = keys.get(unsigned.kernelKey);
  if (key === undefined) {
    throw new CheckpointError(
      'receipt_bad_signature',
      `signed by key ${unsigned.kernelKey}, which is unknown: not among the ${keys.size} public key(s) given`,
      true,
    );
  }
  const encoded = signature.slice('ed25519:'.length);
  const raw = Buffer.from(encoded, 'base64url');
  if (raw.toString('base64url') !== encoded || !verifyEd25519(key, Buffer.from(jcs(unsigned), 'utf8'), raw)) {
    throw new CheckpointError('receipt_bad_signature', `the Ed25519 signature does not verify with key ${unsigned.kernelKey}`);
  }
}

/** Throws CheckpointError unless `next` directly follows `previous` in a checkpoint log. */
export function checkCheckpointLink(previous: SignedCheckpoint, next: SignedCheckpoint): void {
  if (next.checkpoint.previousCheckpointHash !== previous.hash) {
    throw new CheckpointError(
      'receipt_chain_broken',
      `previousCheckpointHash ${String(next.checkpoint.previousCheckpointHash)} does not match the previous checkpoint (treeSize ${previous.checkpoint.treeSize}) hash ${previous.hash}`,
    );
  }
  if (next.checkpoint.treeSize <= previous.checkpoint.treeSize) {
    throw new CheckpointError(
      'receipt_chain_broken',
      `treeSize ${next.checkpoint.treeSize} does not grow from the previous checkpoint's ${previous.checkpoint.treeSize}`,
    );
  }
}

/** A checkpoint log line, its 1-based line number and the checkpoint. */
export interface CheckpointLine {
  readonly line: number;
  readonly signed: SignedCheckpoint;
}

export interface CheckpointLogFailure {
  readonly line: number;
  readonly treeSize: number | null;
  readonly code: VerifyFailureCode;
  readonly message: string;
  readonly unknownKey: boolean;
}

/**
 * Streams a checkpoint log, checking each line (form, signature with `keys`, link to the line
 * before it). Stops at the first bad line and returns its failure. Throws ChioError
 * (file_not_found, io_error) for a file that cannot be read.
 */
export async function readCheckpointLog(
  file: string,
  keys: VerificationKeys,
  each: (entry: CheckpointLine) => void,
): Promise<CheckpointLogFailure | null> {
  let previous: SignedCheckpoint | null = null;
  let line = 0;
  for await (const piece of readCheckpointFileLines(file)) {
    line++;
    if (piece.kind !== 'line') {
      const code = piece.kind === 'torn' ? 'receipt_torn_tail' : 'receipt_malformed';
      return { line, treeSize: null, code, message: 'the last line is incomplete or too long', unknownKey: false };
    }
    let signed: SignedCheckpoint | null = null;
    try {
      signed = parseCheckpointLine(piece.bytes);
      checkCheckpointSignature(signed, keys);
      if (previous !== null) checkCheckpointLink(previous, signed);
    } catch (err) {
      if (!(err instanceof CheckpointError)) throw err;
      return { line, treeSize: signed?.checkpoint.treeSize ?? null, code: err.code, message: err.message, unknownKey: err.unknownKey };
    }
    each({ line, signed });
    previous = signed;
  }
  return null;
}

/** The lines of a checkpoint file, with errors that name it as such. */
async function* readCheckpointFileLines(file: string): ReturnType<typeof readReceiptLines> {
  try {
    yield* readReceiptLines(file);
  } catch (err) {
    if (err instanceof ChioError && err.code === 'file_not_found') {
      throw new ChioError('file_not_found', `checkpoint file ${file} does not exist`, { cause: err });
    }
    throw err;
  }
}

// ---- frontier files ----

const frontierFileSchema = z.strictObject({
  schema: z.literal(FRONTIER_SCHEMA),
  treeSize: z.int().min(0),
  rootHash: z.string().regex(RECEIPT_HASH_PATTERN),
  hashes: z.array(z.string().regex(HEX_HASH)),
});

/** Reads a frontier file; null when it does not exist. Throws ChioError('receipt_malformed') when it is not one. */
export async function readFrontierFile(file: string): Promise<MerkleFrontier | null> {
  let text: string;
  try {
    const fh = await open(file, 'r');
    try {
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ChioError('io_error', `cannot read ${file}: ${describe(err)}`, { cause: err });
  }
  try {
    const parsed = frontierFileSchema.parse(JSON.parse(text));
    const frontier = new MerkleFrontier(
      parsed.treeSize,
      parsed.hashes.map((h) => Buffer.from(h, 'hex')),
    );
    if (hashRef(frontier.root()) !== parsed.rootHash) throw new TypeError('its hashes do not lead to its rootHash');
    return frontier;
  } catch (err) {
    throw new ChioError('receipt_malformed', `${file} is not a ${FRONTIER_SCHEMA} file: ${describe(err)}`, { cause: err });
  }
}

/** Replaces a frontier file atomically (temp file, fsync, rename, fsync of the folder). */
export async function writeFrontierFile(file: string, frontier: MerkleFrontier): Promise<void> {
  const body = `${jcs({
    schema: FRONTIER_SCHEMA,
    treeSize: frontier.size,
    rootHash: hashRef(frontier.root()),
    hashes: frontier.hashes.map((h) => h.toString('hex')),
  })}\n`;
  await writeFileAtomically(file, body);
}

export async function writeFileAtomically(file: string, body: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(body, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    await syncFolder(path.dirname(file));
  } catch (err) {
    throw new ChioError('io_error', `cannot write ${file}: ${describe(err)}`, { cause: err });
  }
}

/** Makes a rename or unlink in `folder` durable (best effort: not every platform can fsync a folder). */
export async function syncFolder(folder: string): Promise<void> {
  try {
    const fh = await open(folder, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // the data itself is already fsynced
  }
}

// ---- reading lines backwards ----

const NEWLINE = 0x0a;
const BACK_CHUNK = 64 * 1024;

/**
 * The complete lines of a file from the last one backwards, each with its byte offset. Bytes
 * after the last `\n` (a torn tail) are skipped. Stops early when the consumer stops.
 */
export async function* linesBackwards(fh: FileHandle, size: number): AsyncGenerator<{ start: number; bytes: Buffer }> {
  let end = size; // exclusive end of the unconsumed region
  let carry = Buffer.alloc(0); // bytes after the last newline seen, before `end` of the previous chunk
  let tailSkipped = false;
  while (end > 0) {
    const start = Math.max(0, end - BACK_CHUNK);
    const chunk = Buffer.alloc(end - start);
    const { bytesRead } = await fh.read(chunk, 0, chunk.length, start);
    if (bytesRead !== chunk.length) throw new ChioError('io_error', 'file shrank while it was being read');
    const buf = carry.length > 0 ? Buffer.concat([chunk, carry]) : chunk;
    let at = buf.length;
    // (at 0 stop: a negative offset would make lastIndexOf search from the end again)
    while (at > 0) {
      const nl = buf.lastIndexOf(NEWLINE, at - 1);
      if (nl < 0) break;
      if (!tailSkipped) {
        tailSkipped = true; // whatever follows the last newline is not a complete line
      } else {
        yield { start: start + nl + 1, bytes: buf.subarray(nl + 1, at) };
      }
      at = nl;
    }
    carry = buf.subarray(0, at);
    end = start;
  }
  if (tailSkipped) yield { start: 0, bytes: carry }; // the first line (when there is a newline at all)
}

// ---- the service side ----

/** A sink that can also be read back in seq order (JSONL segments, the SQLite store). */
export function isReceiptSource(value: object): value is ReceiptSource {
  const v = value as Partial<ReceiptSource>;
  return typeof v.iterateBySeq === 'function' && typeof v.pruneThrough === 'function';
}

export interface CheckpointerOptions {
  /** checkpoints.jsonl */
  readonly path: string;
  readonly key: SigningKey;
  readonly clock: () => number;
  readonly everyReceipts: number;
  readonly everySeconds: number;
  /** the receipts, to rebuild the tree at startup */
  readonly source: ReceiptSource;
  /** the chain head the sinks hold (what they opened with) */
  readonly head: ChainHead | null;
  /** makes every committed receipt durable (writer.flush); needed before a checkpoint covers relaxed-mode receipts */
  readonly makeDurable: () => Promise<void>;
  readonly log: Logger;
  /** synchronously, when a checkpoint of `treeSize` receipts is decided (the writer is between batches) */
  readonly onDecided?: (treeSize: number) => void;
  /** after a checkpoint is durably written */
  readonly onWritten?: (checkpoint: SignedCheckpoint) => void;
}

/** How long a checkpoint the timer made due waits for the next committed batch before it is decided anyway (idle). */
const DUE_IDLE_MS = 50;

/**
 * Keeps the frontier of the receipt tree, decides checkpoints (every N receipts, every T seconds,
 * at close) and writes them one at a time. Feed it every committed batch with `committed()`.
 *
 * Every decision is taken between batches: in `committed()` (the writer's hook after a batch is in
 * every sink) or, for the timer, at the next committed batch (after {@link DUE_IDLE_MS} without one:
 * then nothing is being written). So a checkpoint's treeSize is where the receipt files end when it
 * is decided, which is where a JSONL sink can start a new segment (`onDecided`): a timer firing
 * while a batch was being written decided an older size, the files had moved on, and no segment
 * was ever cut at a timer checkpoint (retention then had nothing to prune).
 */
export class Checkpointer {
  readonly #options: CheckpointerOptions;
  readonly #statePath: string;
  readonly #fh: FileHandle;
  #fileSize: number;
  #frontier: MerkleFrontier;
  /** the last checkpoint written */
  #latest: SignedCheckpoint | null;
  /** tree size of the last checkpoint decided (written or being written) */
  #decided: number;
  /** receipts were committed without fsync since the last makeDurable */
  #unsynced = false;
  #queue: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  /** the frontier no longer follows the chain (a hook misuse): checkpointing stopped */
  #broken: Error | null = null;
  /** the last write failed: retry on the timer (or at close), not on every batch */
  #failed = false;
  /** the timer fired with receipts waiting: decide at the next committed batch */
  #due = false;
  #dueIdle: NodeJS.Timeout | null = null;
  #closed = false;

  private constructor(options: CheckpointerOptions, fh: FileHandle, fileSize: number, latest: SignedCheckpoint | null, frontier: MerkleFrontier) {
    this.#options = options;
    this.#statePath = checkpointStatePaths(options.path).frontier;
    this.#fh = fh;
    this.#fileSize = fileSize;
    this.#latest = latest;
    this.#decided = latest?.checkpoint.treeSize ?? 0;
    this.#frontier = frontier;
  }

  /**
   * Opens the checkpoint log (creating it), and rebuilds the tree of the receipts the sinks hold:
   * from the saved frontier (or the retention anchor, or leaf 0) plus the receipts after it. Throws
   * ChioError('receipt_chain_broken') when the receipts do not match the signed checkpoints.
   */
  static async open(options: CheckpointerOptions): Promise<Checkpointer> {
    const fh = await openLog(options.path);
    try {
      const { latest, size } = await readLatest(fh, options.path, options.log);
      const frontier = await rebuildFrontier(options, latest);
      const cp = new Checkpointer(options, fh, size, latest, frontier);
      cp.#startTimer();
      if (frontier.size - cp.#decided >= options.everyReceipts) void cp.#decide();
      return cp;
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** The last checkpoint written, or null. */
  get latest(): SignedCheckpoint | null {
    return this.#latest;
  }

  /** Receipts in the tree so far. */
  get treeSize(): number {
    return this.#frontier.size;
  }

  /** The writer's hook: a batch was written in every sink (durable: and fsynced). O(1) amortized per receipt. */
  committed(batch: readonly SealedReceipt[], durable: boolean): void {
    if (this.#broken !== null || this.#closed) return;
    for (const sealed of batch) {
      const expected = this.#frontier.size + 1;
      if (sealed.seq !== expected) {
        this.#broken = new TypeError(`checkpointer: receipt seq ${sealed.seq} committed, expected ${expected}`);
        this.#options.log.error({ err: this.#broken.message }, 'checkpointing stopped: the receipt tree no longer follows the chain');
        return;
      }
      // the leaf the batch signing already computed (v2: over the body): no hashing of the line here (saves ~3 µs per Check)
      this.#frontier.append(sealed.leaf);
    }
    if (!durable) this.#unsynced = true;
    if (this.#due || (!this.#failed && this.#frontier.size - this.#decided >= this.#options.everyReceipts)) void this.#decide();
  }

  /** Checkpoints the receipts not covered yet (if any) and resolves with the latest checkpoint. */
  async checkpointNow(): Promise<SignedCheckpoint | null> {
    await this.#decide();
    return this.#latest;
  }

  /** Stops the timer, checkpoints what is left and closes the log. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#timer !== null) clearInterval(this.#timer);
    if (this.#dueIdle !== null) clearTimeout(this.#dueIdle);
    await this.#decide();
    this.#closed = true;
    await this.#fh.close();
  }

  #startTimer(): void {
    this.#timer = setInterval(() => {
      this.#failed = false;
      if (this.#frontier.size <= this.#decided || this.#due) return;
      this.#due = true;
      this.#dueIdle = setTimeout(() => {
        this.#dueIdle = null;
        if (this.#due) void this.#decide();
      }, DUE_IDLE_MS);
      this.#dueIdle.unref();
    }, this.#options.everySeconds * 1000);
    this.#timer.unref();
  }

  /** Snapshots the tree now (synchronously) and queues the checkpoint's signing and writing. */
  #decide(): Promise<unknown> {
    this.#due = false;
    const size = this.#frontier.size;
    if (this.#broken !== null || this.#closed || size === 0 || size <= this.#decided) return this.#queue;
    this.#decided = size;
    const snapshot = { frontier: this.#frontier.clone(), at: this.#options.clock(), sync: this.#unsynced };
    this.#unsynced = false;
    try {
      this.#options.onDecided?.(size);
    } catch (err) {
      this.#options.log.error({ err: describe(err) }, 'checkpoint boundary hook failed');
    }
    this.#queue = this.#queue.then(() => this.#write(snapshot));
    return this.#queue;
  }

  async #write(snapshot: { frontier: MerkleFrontier; at: number; sync: boolean }): Promise<void> {
    const { frontier } = snapshot;
    try {
      if (snapshot.sync) await this.#options.makeDurable();
      const signed = signCheckpoint({ treeSize: frontier.size, root: frontier.root(), previous: this.#latest, timestamp: snapshot.at }, this.#options.key);
      await this.#append(`${signed.jcs}\n`);
      this.#latest = signed;
      await writeFrontierFile(this.#statePath, frontier);
      this.#options.onWritten?.(signed);
    } catch (err) {
      // not checkpointed: the next decision (timer or close) covers these receipts again
      if (this.#latest?.checkpoint.treeSize !== frontier.size) {
        this.#decided = this.#latest?.checkpoint.treeSize ?? 0;
        this.#failed = true;
        if (snapshot.sync) this.#unsynced = true;
      }
      this.#options.log.error({ err: describe(err), treeSize: frontier.size }, 'cannot write a receipt checkpoint');
    }
  }

  /** Appends one line durably; a failed write is truncated away. */
  async #append(text: string): Promise<void> {
    const bytes = Buffer.from(text, 'utf8');
    try {
      let done = 0;
      while (done < bytes.length) done += (await this.#fh.write(bytes, done, bytes.length - done, this.#fileSize + done)).bytesWritten;
      await this.#fh.datasync();
      this.#fileSize += bytes.length;
    } catch (err) {
      await this.#fh.truncate(this.#fileSize).catch(() => undefined);
      throw new ChioError('io_error', `cannot append to ${this.#options.path}: ${describe(err)}`, { cause: err });
    }
  }
}

async function openLog(file: string): Promise<FileHandle> {
  try {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    return await open(file, 'a+', 0o600);
  } catch (err) {
    throw new ChioError('io_error', `cannot open checkpoint file ${file}: ${describe(err)}`, { cause: err });
  }
}

/** The last checkpoint of the log; a torn last line (a crash mid-append) is truncated away. */
async function readLatest(fh: FileHandle, file: string, log: Logger): Promise<{ latest: SignedCheckpoint | null; size: number }> {
  const { size } = await fh.stat();
  for await (const { start, bytes } of linesBackwards(fh, size)) {
    const end = start + bytes.length + 1;
    if (end < size) {
      log.warn({ path: file, bytes: size - end }, 'checkpoint file had a torn last line (crash mid-write); truncated it');
      await fh.truncate(end);
      await fh.datasync();
    }
    try {
      return { latest: parseCheckpointLine(bytes), size: end };
    } catch (err) {
      if (!(err instanceof CheckpointError)) throw err;
      throw new ChioError('receipt_malformed', `${file}: the last line is not a checkpoint: ${err.message}`);
    }
  }
  if (size > 0) {
    log.warn({ path: file, bytes: size }, 'checkpoint file held only a torn line (crash mid-write); truncated it');
    await fh.truncate(0);
    await fh.datasync();
  }
  return { latest: null, size: 0 };
}

/** The frontier of every receipt the sinks hold, checked against the latest signed checkpoint. */
async function rebuildFrontier(options: CheckpointerOptions, latest: SignedCheckpoint | null): Promise<MerkleFrontier> {
  const target = options.head?.seq ?? 0;
  const checkpointed = latest?.checkpoint.treeSize ?? 0;
  if (checkpointed > target) {
    throw new ChioError(
      'receipt_chain_broken',
      `${options.path}: the latest checkpoint covers ${checkpointed} receipts but the receipt sinks hold only ${target}: checkpointed receipts are missing (restore them, or move ${options.path} and its state files away to start a new log)`,
    );
  }
  const frontier = await startingFrontier(options.path, checkpointed, options.log);
  const checkAt = (f: MerkleFrontier): void => {
    if (latest !== null && f.size === checkpointed && hashRef(f.root()) !== latest.checkpoint.rootHash) {
      throw new ChioError(
        'receipt_chain_broken',
        `the receipts 1..${checkpointed} do not match the signed checkpoint of ${options.path} (root ${hashRef(f.root())}, signed ${latest.checkpoint.rootHash}): the receipt files were altered`,
      );
    }
  };
  checkAt(frontier);
  let lastHash: string | null = null;
  if (frontier.size < target) {
    for await (const record of options.source.iterateBySeq(frontier.size + 1, target)) {
      if (record.seq !== frontier.size + 1) {
        throw new ChioError('receipt_chain_broken', `cannot rebuild the receipt tree: receipt seq ${frontier.size + 1} is missing (found seq ${record.seq})`);
      }
      const facts = receiptFacts(record.jcs);
      frontier.append(facts.leaf);
      lastHash = facts.hash;
      checkAt(frontier);
    }
  }
  if (frontier.size !== target) {
    throw new ChioError('receipt_chain_broken', `cannot rebuild the receipt tree: the receipts end at seq ${frontier.size}, the chain head is seq ${target}`);
  }
  if (lastHash !== null && lastHash !== options.head?.hash) {
    throw new ChioError('receipt_chain_broken', `cannot rebuild the receipt tree: receipt seq ${target} does not hash to the chain head`);
  }
  return frontier;
}

/** The saved frontier at the latest checkpoint, else the retention anchor, else the empty tree. */
async function startingFrontier(file: string, checkpointed: number, log: Logger): Promise<MerkleFrontier> {
  const paths = checkpointStatePaths(file);
  let best = new MerkleFrontier();
  for (const candidate of [paths.frontier, paths.anchor]) {
    let f: MerkleFrontier | null;
    try {
      f = await readFrontierFile(candidate);
    } catch (err) {
      log.warn({ path: candidate, err: describe(err) }, 'ignoring a bad checkpoint state file');
      continue;
    }
    // A frontier past the latest checkpoint belongs to another log: never trust it.
    if (f !== null && f.size <= checkpointed && f.size > best.size) best = f;
  }
  return best;
}

/** `GET /v1/checkpoints/latest` (public, like /v1/keys): the latest checkpoint as its exact JCS text, or 404. */
export function checkpointResponse(latest: SignedCheckpoint | null): AdminResponse {
  if (latest === null) {
    return {
      status: 404,
      headers: { 'content-type': 'application/json' },
      body: `${JSON.stringify({ error: { code: 'not_found', message: 'no receipt checkpoint has been written yet' } })}\n`,
    };
  }
  return { status: 200, headers: { 'content-type': 'application/json' }, body: `${latest.jcs}\n` };
}
