/**
 * SQLite receipt sink (SPEC §2.1 `receipts.sinks: [{type: sqlite, path}]`, §6) and the store the
 * query API reads (`GET /v1/receipts/…`). better-sqlite3 is synchronous, so nothing here touches
 * SQLite on the event loop:
 *
 * - a writer worker thread holds the one writing connection; each batch of the ReceiptWriter's
 *   group commit is posted to it and committed as one transaction (`synchronous = FULL`, i.e. an
 *   fsync of the WAL, when durable). Pruning runs there too, in chunks between batches.
 * - a reader worker thread (started on the first query) holds a read-only connection; WAL lets it
 *   read while the writer commits, so a slow query delays neither commits nor Checks.
 *
 * The sink remembers the head it last confirmed. After a failed operation the rows past it are
 * unconfirmed (a commit may have landed before the failure was seen): the next write deletes them
 * first, in its own transaction. A worker that dies is replaced on the next call.
 */
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ChioError, describe } from '../../errors.js';
import type { ReceiptPage, ReceiptQuery } from '../query.js';
import type { ChainHead, SealedReceipt } from '../receipt.js';
import {
  headOfRow,
  pruneInChunks,
  SQLITE_DRIVER,
  STORE_SQL,
  storeError,
  storeReader,
  writeRequest,
  type ReceiptRecord,
  type ReceiptStore,
} from '../store.js';
import { WriterLock } from './lock.js';
import type { ReceiptSink } from './sink.js';
import {
  workerSource,
  type HeadRow,
  type StoreConnectionOptions,
  type WorkerHello,
  type WorkerReply,
  type WorkerRequest,
} from './sqlite-worker.js';

/** A request without its id (each call gets one); distributes over the request union. */
type Call = WorkerRequest extends infer R ? (R extends WorkerRequest ? Omit<R, 'id'> : never) : never;

let cachedSource: string | undefined;

/** One store connection on its own thread: requests are answered in order. */
class StoreWorker {
  readonly #worker: Worker;
  readonly #path: string;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  #nextId = 1;
  #dead: ChioError | null = null;
  readonly #exited: Promise<void>;

  private constructor(worker: Worker, path: string) {
    this.#worker = worker;
    this.#path = path;
    this.#exited = new Promise((resolve) => worker.once('exit', () => resolve()));
  }

  /** Starts a worker and waits for its connection to open; returns the store's head row. */
  static start(options: StoreConnectionOptions): Promise<{ worker: StoreWorker; head: HeadRow | null }> {
    cachedSource ??= workerSource();
    const w = new Worker(cachedSource, { eval: true, workerData: { driver: SQLITE_DRIVER, options } });
    const sw = new StoreWorker(w, options.path);
    return new Promise((resolve, reject) => {
      const onError = (err: unknown): void => reject(new ChioError('io_error', `receipt store ${options.path}: the store thread failed: ${describe(err)}`));
      const onExit = (code: number): void => reject(new ChioError('io_error', `receipt store ${options.path}: the store thread exited (code ${code}) before it opened the store`));
      w.once('error', onError);
      w.once('exit', onExit);
      w.once('message', (hello: WorkerHello) => {
        w.off('error', onError);
        w.off('exit', onExit);
        if (!hello.ready) {
          void w.terminate();
          reject(storeError(hello.error, options.path));
          return;
        }
        sw.#listen();
        resolve({ worker: sw, head: hello.head });
      });
    });
  }

  get alive(): boolean {
    return this.#dead === null;
  }

  call<T>(request: Call): Promise<T> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ ...request, id } as WorkerRequest);
    });
  }

  /** Closes the connection (after the requests before it), then the thread. */
  async close(): Promise<void> {
    if (this.#dead === null) {
      await this.call({ op: 'close' }).catch(() => undefined);
      this.#die(new ChioError('io_error', `receipt store ${this.#path} is closed`));
    }
    await Promise.race([this.#exited, new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.#worker.terminate();
  }

  #listen(): void {
    this.#worker.on('message', (reply: WorkerReply) => {
      const p = this.#pending.get(reply.id);
      if (!p) return;
      this.#pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.result);
      else p.reject(storeError(reply.error, this.#path));
    });
    this.#worker.on('error', (err) => this.#die(new ChioError('io_error', `receipt store ${this.#path}: the store thread failed: ${describe(err)}`)));
    this.#worker.on('exit', (code) => this.#die(new ChioError('io_error', `receipt store ${this.#path}: the store thread exited (code ${code})`)));
  }

  #die(err: ChioError): void {
    if (this.#dead) return;
    this.#dead = err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}

export class SqliteSink implements ReceiptSink, ReceiptStore {
  readonly name = 'sqlite';
  readonly path: string;
  #writer: StoreWorker | null = null;
  #lock: WriterLock | null = null;
  #reader: Promise<StoreWorker> | null = null;
  #opened = false;
  #closed = false;
  /** the head this store last confirmed */
  #head: ChainHead | null = null;
  /** an operation failed: rows past #head may exist and are deleted before the next write */
  #uncertain = false;
  /** set by startAfter: the next write starts an empty store after this head */
  #startsEmpty = false;
  readonly #read = storeReader((sql, params) => this.#readerCall({ op: 'all', sql, params }));

  constructor(path: string) {
    this.path = path;
  }

  /** Creates the store if missing (and its folder, 0700) and returns the head of the chain it holds. */
  async open(): Promise<ChainHead | null> {
    if (this.#opened) throw new TypeError(`SqliteSink ${this.path} is already open`);
    this.#opened = true;
    await createStoreFile(this.path);
    // SQLite serializes two writers on one file but would take both chains: one chio per store
    const lock = WriterLock.acquire(this.path);
    try {
      const { worker, head } = await StoreWorker.start({ path: this.path, role: 'writer', sql: STORE_SQL });
      try {
        this.#head = headOfRow(head, this.path);
      } catch (err) {
        await worker.close();
        throw err;
      }
      this.#writer = worker;
    } catch (err) {
      lock.release();
      throw err;
    }
    this.#lock = lock;
    return this.#head;
  }

  /** Commits the batch as one transaction; with fsync of the WAL when durable. */
  async write(batch: readonly SealedReceipt[], durable: boolean): Promise<void> {
    const after = this.#head;
    const last = batch[batch.length - 1];
    const req = writeRequest(batch, after, this.#uncertain, durable);
    await this.#writeCall({ op: 'write', req: this.#startsEmpty && last !== undefined ? { ...req, startsEmpty: true } : req });
    if (last) {
      this.#head = { seq: last.seq, hash: last.hash };
      this.#startsEmpty = false;
    }
    this.#uncertain = false;
  }

  /**
   * An empty store is to hold the chain from the receipt after `head` (a log whose start retention
   * pruned): the next write continues from it. TypeError when the store is not empty.
   */
  startAfter(head: ChainHead): void {
    if (this.#head !== null) throw new TypeError(`SqliteSink ${this.path} is not empty (at seq ${this.#head.seq})`);
    this.#head = head;
    this.#startsEmpty = true;
  }

  /** Deletes the receipts after `head` (another sink failed the batch this one committed). */
  async rewind(head: ChainHead | null): Promise<void> {
    this.#head = head;
    this.#uncertain = true; // if this fails, the next write deletes them first
    await this.#writeCall({ op: 'rewind', head });
    this.#uncertain = false;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const reader = this.#reader;
    this.#reader = null;
    const writer = this.#writer;
    this.#writer = null;
    try {
      await Promise.all([reader?.then((r) => r.close(), () => undefined), writer?.close()]);
    } finally {
      this.#lock?.release();
      this.#lock = null;
    }
  }

  // ---- ReceiptStore ----

  async head(): Promise<ChainHead | null> {
    return headOfRow(await this.#readerCall<HeadRow | null>({ op: 'head' }), this.path);
  }

  firstSeq(): Promise<number | null> {
    return this.#read.firstSeq();
  }

  query(q: ReceiptQuery): Promise<ReceiptPage> {
    return this.#read.query(q);
  }

  get(id: string): Promise<string | null> {
    return this.#read.get(id);
  }

  iterateBySeq(fromSeq: number, toSeq?: number): AsyncIterable<ReceiptRecord> {
    return this.#read.iterateBySeq(fromSeq, toSeq);
  }

  /** Deletes receipts through `seq` (never the newest) on the writer thread, a chunk per transaction. */
  pruneThrough(seq: number): Promise<number> {
    return pruneInChunks(seq, (through, chunk) => this.#writeCall<number>({ op: 'prune', through, chunk }));
  }

  // ---- internals ----

  async #writeCall<T>(request: Call): Promise<T> {
    try {
      return await (await this.#writerWorker()).call<T>(request);
    } catch (err) {
      this.#uncertain = true;
      throw err;
    }
  }

  /** The writer thread; a new one when it died (the next write then deletes unconfirmed rows). */
  async #writerWorker(): Promise<StoreWorker> {
    if (this.#closed || !this.#opened) throw new ChioError('io_error', `receipt store ${this.path} is not open`);
    const current = this.#writer;
    if (current?.alive) return current;
    this.#uncertain = true;
    const { worker } = await StoreWorker.start({ path: this.path, role: 'writer', sql: STORE_SQL });
    this.#writer = worker;
    return worker;
  }

  async #readerCall<T>(request: Call): Promise<T> {
    if (this.#closed || !this.#opened) throw new ChioError('io_error', `receipt store ${this.path} is not open`);
    let reader = await (this.#reader ??= this.#startReader());
    if (!reader.alive) {
      this.#reader = this.#startReader();
      reader = await this.#reader;
    }
    return reader.call<T>(request);
  }

  #startReader(): Promise<StoreWorker> {
    const started = StoreWorker.start({ path: this.path, role: 'reader', sql: STORE_SQL }).then((s) => s.worker);
    started.catch(() => {
      if (this.#reader === started) this.#reader = null; // retried on the next query
    });
    return started;
  }
}

/** Folder 0700 and file 0600 when missing, like the JSONL sink (SQLite gives its -wal and -shm files the same mode). */
async function createStoreFile(file: string): Promise<void> {
  const cannot = (err: unknown): ChioError => new ChioError('io_error', `cannot create receipt store ${file}: ${describe(err)}`, { cause: err });
  await mkdir(dirname(file), { recursive: true, mode: 0o700 }).catch((err: unknown) => {
    throw cannot(err);
  });
  try {
    await (await open(file, 'wx', 0o600)).close();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw cannot(err);
  }
}
