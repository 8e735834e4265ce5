/**
 * JSONL file sink for receipts (SPEC §2.1 `receipts.sinks: [{type: jsonl, path}]`, §6): one receipt
 * per line, its full JCS text + `\n`, appended through one fd kept open with the async fs API.
 *
 * On open the head of the chain is read from the LAST line only (the file is scanned backwards in
 * chunks). A torn tail left by a crash mid-write (bytes without a final `\n`, or a last line that
 * is not JSON) is moved to `<path>.torn-<ISO timestamp>`, the file is truncated to its last
 * complete receipt and `onTornTail` reports it; the chain continues from that receipt. A file that
 * holds no receipt before such a line is refused unless the line looks torn (`looksTorn`).
 *
 * One writer per file: `open` takes `<path>.lock` (./lock.ts) until `close`.
 */
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ChioError, describe } from '../../errors.js';
import { chainHeadOf, type ChainHead, type SealedReceipt } from '../receipt.js';
import { WriterLock } from './lock.js';
import type { ReceiptSink } from './sink.js';

export interface TornTailInfo {
  /** the receipt file */
  readonly path: string;
  /** where the torn bytes were moved */
  readonly quarantinedTo: string;
  /** how many bytes were moved */
  readonly bytes: number;
}

export interface JsonlSinkOptions {
  readonly onTornTail?: (info: TornTailInfo) => void;
  /** names the quarantine file; default Date.now */
  readonly clock?: () => number;
}

const NEWLINE = 0x0a;
const SCAN_CHUNK = 64 * 1024;
/** A line longer than this is not a receipt (receipts are ~1 KB). */
const MAX_LINE_BYTES = 1024 * 1024;
/** Batch boundaries remembered for rewind(). */
const MAX_MARKS = 8;

/** Where the good part of a file ends and the head of the chain it holds. */
interface Tail {
  readonly head: ChainHead | null;
  /** bytes [0, goodSize) are complete receipts; the rest is torn */
  readonly goodSize: number;
}

export class JsonlSink implements ReceiptSink {
  readonly name = 'jsonl';
  readonly path: string;
  readonly #options: JsonlSinkOptions;
  #fh: FileHandle | null = null;
  #lock: WriterLock | null = null;
  /** bytes known to hold complete receipts */
  #size = 0;
  /** a failed write may have left bytes past #size: truncate before appending again */
  #dirty = false;
  #writing = false;
  /** the chain head and file size after the last few batches (and at open), for rewind() */
  #marks: Array<{ readonly head: ChainHead | null; readonly size: number }> = [];

  constructor(path: string, options: JsonlSinkOptions = {}) {
    this.path = path;
    this.#options = options;
  }

  /** Opens (creating file 0600 and folder 0700 if missing) and returns the head of the chain the file holds. */
  async open(): Promise<ChainHead | null> {
    if (this.#fh !== null) throw new TypeError(`JsonlSink ${this.path} is already open`);
    await mkdirFor(this.path);
    // held across a rotation's close and reopen (./../retention.ts): released by close() only
    const held = this.#lock;
    const lock = held ?? WriterLock.acquire(this.path);
    const dropLock = (): void => {
      if (held !== null) return;
      lock.release();
      this.#lock = null;
    };
    this.#lock = lock;
    let fh: FileHandle;
    try {
      fh = await this.#openFile();
    } catch (err) {
      dropLock();
      throw err;
    }
    try {
      const { size } = await fh.stat();
      const tail = await findTail(fh, size, this.path);
      if (tail.goodSize < size) await this.#quarantine(fh, tail.goodSize, size);
      this.#fh = fh;
      this.#size = tail.goodSize;
      this.#marks = [{ head: tail.head, size: tail.goodSize }];
      return tail.head;
    } catch (err) {
      await fh.close();
      dropLock();
      if (err instanceof ChioError) throw err;
      throw new ChioError('io_error', `cannot open receipt file ${this.path}: ${describe(err)}`, { cause: err });
    }
  }

  /** Appends the batch with one write; fdatasync when durable. A failed write is truncated away. */
  async write(batch: readonly SealedReceipt[], durable: boolean): Promise<void> {
    const fh = this.#fh;
    if (fh === null) throw new TypeError(`JsonlSink ${this.path} is not open`);
    if (this.#writing) throw new TypeError(`JsonlSink ${this.path}: a write is already in flight`);
    this.#writing = true;
    try {
      if (this.#dirty) await this.#truncateToGood(fh);
      if (batch.length > 0) {
        const bytes = linesOf(batch);
        this.#dirty = true;
        await writeAll(fh, bytes);
        if (durable) await fh.datasync();
        this.#size += bytes.length;
        this.#dirty = false;
        this.#mark(batch, this.#size);
      } else if (durable) {
        await fh.datasync();
      }
    } catch (err) {
      if (this.#dirty) await this.#truncateToGood(fh).catch(() => undefined); // retried before the next write
      throw err;
    } finally {
      this.#writing = false;
    }
  }

  /**
   * Truncates the file back to the end of the receipt `head` (null: to empty), which must be one
   * of the last MAX_MARKS batch boundaries (the writer rewinds by one batch), then fdatasyncs.
   * If the truncate fails, the next write retries it before appending.
   */
  async rewind(head: ChainHead | null): Promise<void> {
    const fh = this.#fh;
    if (fh === null) throw new TypeError(`JsonlSink ${this.path} is not open`);
    if (this.#writing) throw new TypeError(`JsonlSink ${this.path}: a write is in flight`);
    const at = this.#marks.findIndex((m) => m.head?.seq === head?.seq && m.head?.hash === head?.hash);
    const mark = this.#marks[at];
    if (mark === undefined) {
      throw new ChioError('io_error', `cannot rewind ${this.path} to seq ${head?.seq ?? 0}: not one of the last ${this.#marks.length} batch boundaries written`);
    }
    this.#marks.length = at + 1;
    if (mark.size === this.#size && !this.#dirty) return;
    this.#size = mark.size;
    this.#dirty = true;
    this.#writing = true;
    try {
      await this.#truncateToGood(fh);
      await fh.datasync();
    } finally {
      this.#writing = false;
    }
  }

  async close(): Promise<void> {
    try {
      await this.closeFile();
    } finally {
      this.#lock?.release();
      this.#lock = null;
    }
  }

  /** Closes the file but keeps the writer lock: a rotation renames the file and opens a new one. */
  protected async closeFile(): Promise<void> {
    const fh = this.#fh;
    this.#fh = null;
    if (fh !== null) await fh.close();
  }

  #mark(batch: readonly SealedReceipt[], size: number): void {
    const last = batch[batch.length - 1];
    if (last === undefined) return;
    this.#marks.push({ head: { seq: last.seq, hash: last.hash }, size });
    if (this.#marks.length > MAX_MARKS) this.#marks.shift();
  }

  async #openFile(): Promise<FileHandle> {
    try {
      return await open(this.path, 'a+', 0o600);
    } catch (err) {
      throw new ChioError('io_error', `cannot open receipt file ${this.path}: ${describe(err)}`, { cause: err });
    }
  }

  async #truncateToGood(fh: FileHandle): Promise<void> {
    await fh.truncate(this.#size);
    this.#dirty = false;
  }

  /** Moves bytes [from, to) to `<path>.torn-<ISO timestamp>`, truncates the file to `from` and reports it. */
  async #quarantine(fh: FileHandle, from: number, to: number): Promise<void> {
    const stamp = new Date((this.#options.clock ?? Date.now)()).toISOString();
    const { handle, path } = await createExclusive(`${this.path}.torn-${stamp}`);
    try {
      await copyRange(fh, handle, from, to);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await syncFolder(dirname(this.path));
    await fh.truncate(from);
    await fh.datasync();
    this.#options.onTornTail?.({ path: this.path, quarantinedTo: path, bytes: to - from });
  }
}

/** Creates the folder of a receipt file (0700) if missing. */
async function mkdirFor(path: string): Promise<void> {
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new ChioError('io_error', `cannot open receipt file ${path}: ${describe(err)}`, { cause: err });
  }
}

/** Finds the last complete receipt, reading only the end of the file. */
async function findTail(fh: FileHandle, size: number, path: string): Promise<Tail> {
  if (size === 0) return { head: null, goodSize: 0 };
  const lastByte = (await readRange(fh, size - 1, size))[0];
  // complete lines end at `completeEnd`; anything after it has no trailing newline
  const completeEnd = lastByte === NEWLINE ? size : (await lastNewlineBefore(fh, size)) + 1;
  if (completeEnd === 0) return { head: null, goodSize: 0 };
  const lastStart = (await lastNewlineBefore(fh, completeEnd - 1)) + 1;
  const last = await headOfLine(fh, lastStart, completeEnd - 1, path);
  if (last !== null) return { head: last, goodSize: completeEnd };
  // the last complete line is not JSON (e.g. zero-filled by a crash): torn as well; but a file whose
  // only line is some other text is not a receipt log at all (a sink path that names another file)
  if (lastStart === 0) {
    if (!(await looksTorn(fh, completeEnd - 1))) {
      throw new ChioError('receipt_malformed', `${path}: its only line is not a receipt: not a receipt file (refusing to move it aside)`);
    }
    return { head: null, goodSize: 0 };
  }
  const prevStart = (await lastNewlineBefore(fh, lastStart - 1)) + 1;
  const prev = await headOfLine(fh, prevStart, lastStart - 1, path);
  if (prev === null) {
    throw new ChioError(
      'receipt_malformed',
      `${path}: neither of the last two lines is a receipt; refusing to continue the chain (inspect it with \`chio receipt verify\`)`,
    );
  }
  return { head: prev, goodSize: lastStart };
}

/**
 * Whether a first line that is not JSON is what a crash leaves of a receipt: it starts as one (`{`)
 * or holds NUL bytes (a file system that zero-fills blocks allocated before the crash).
 */
async function looksTorn(fh: FileHandle, end: number): Promise<boolean> {
  const head = await readRange(fh, 0, Math.min(end, SCAN_CHUNK));
  return head[0] === 0x7b || head.includes(0);
}

/** The chain head a line holds; null when it is not JSON (torn); ChioError when it is JSON but not a receipt. */
async function headOfLine(fh: FileHandle, start: number, end: number, path: string): Promise<ChainHead | null> {
  if (end - start > MAX_LINE_BYTES) return null;
  const bytes = await readRange(fh, start, end);
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
  const seq = typeof value === 'object' && value !== null ? (value as { seq?: unknown }).seq : undefined;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) {
    throw new ChioError('receipt_malformed', `${path}: the last line is JSON but not a receipt (no valid seq)`);
  }
  try {
    return chainHeadOf(bytes); // v2: the leaf of its body, and its chain id; v1: SHA-256 of the line
  } catch (err) {
    throw new ChioError('receipt_malformed', `${path}: the last line is JSON but not a receipt (${describe(err)})`);
  }
}

/** Offset of the last `\n` strictly before `before`, or -1; reads backwards in chunks. */
async function lastNewlineBefore(fh: FileHandle, before: number): Promise<number> {
  let end = before;
  while (end > 0) {
    const start = Math.max(0, end - SCAN_CHUNK);
    const chunk = await readRange(fh, start, end);
    const at = chunk.lastIndexOf(NEWLINE);
    if (at >= 0) return start + at;
    end = start;
  }
  return -1;
}

async function readRange(fh: FileHandle, start: number, end: number): Promise<Buffer> {
  const buf = Buffer.alloc(end - start);
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, start + done);
    if (bytesRead === 0) throw new ChioError('io_error', 'receipt file shrank while it was being read');
    done += bytesRead;
  }
  return buf;
}

/**
 * The batch's lines, each + `\n`, encoded straight into one buffer: no joined string of the whole
 * batch (~1.6 KB of short-lived heap per receipt, at every batch of the hot path).
 */
function linesOf(batch: readonly SealedReceipt[]): Buffer {
  let size = 0;
  for (const s of batch) size += Buffer.byteLength(s.jcs, 'utf8') + 1;
  const bytes = Buffer.allocUnsafe(size);
  let at = 0;
  for (const s of batch) {
    at += bytes.write(s.jcs, at, 'utf8');
    bytes[at++] = NEWLINE;
  }
  return bytes;
}

async function writeAll(fh: FileHandle, bytes: Buffer): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, null);
    done += bytesWritten;
  }
}

async function copyRange(from: FileHandle, to: FileHandle, start: number, end: number): Promise<void> {
  for (let at = start; at < end; at += SCAN_CHUNK) {
    await writeAll(to, await readRange(from, at, Math.min(end, at + SCAN_CHUNK)));
  }
}

/** Creates `path` (0600) without overwriting; adds `-1`, `-2`, … when it exists. */
async function createExclusive(path: string): Promise<{ handle: FileHandle; path: string }> {
  for (let n = 0; ; n++) {
    const candidate = n === 0 ? path : `${path}-${n}`;
    try {
      return { handle: await open(candidate, 'wx', 0o600), path: candidate };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || n >= 100) throw err;
    }
  }
}

/** Makes a new directory entry durable (best effort: not every platform can fsync a folder). */
async function syncFolder(folder: string): Promise<void> {
  try {
    const handle = await open(folder, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // the quarantine copy is already fsynced; only its name might be lost on power failure
  }
}
