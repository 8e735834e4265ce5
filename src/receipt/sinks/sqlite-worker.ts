/**
 * The SQLite receipt store's connection code (SPEC §2.1 `receipts.sinks: [{type: sqlite}]`, §6),
 * shared by the main thread (`chio receipt list --store`, tests) and the store's worker threads
 * (./sqlite.ts): better-sqlite3 is synchronous, so the service commits (with fsync) and answers
 * queries on worker threads, never on the event loop.
 *
 * SELF-CONTAINED ON PURPOSE: `openStoreConnection` and `serveStoreConnection` are started in
 * worker threads from their source text (`Function.prototype.toString`, see `workerSource()`),
 * which works the same from the TypeScript sources under vitest and from dist/. So they must not
 * use anything from outside their own bodies: no imports, no module-level values — only their
 * parameters (the better-sqlite3 constructor, the SQL texts of ../store.ts) and globals.
 *
 * Durability (https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html#pragma_synchronous):
 * WAL mode; a durable batch commits with `synchronous = FULL` (the WAL is fsynced at commit), a
 * relaxed one with `NORMAL` (no fsync; still safe against a process crash). A batch must continue
 * the chain the store holds (seq and prevHash), so the store can never hold a fork.
 */
import type BetterSqlite3 from 'better-sqlite3';
import type { MessagePort } from 'node:worker_threads';

/** The SQL of the store (../store.ts STORE_SQL), passed in because this code must be self-contained. */
export interface StoreSql {
  readonly schemaId: string;
  /** creates the tables and indexes of a new store and stamps store_meta */
  readonly create: string;
  readonly schemaOf: string;
  readonly head: string;
  readonly rowAt: string;
  readonly insert: string;
  readonly deleteAfter: string;
  readonly pruneChunk: string;
  readonly syncMark: string;
  readonly writerPragmas: readonly string[];
  readonly readerPragmas: readonly string[];
}

export interface StoreConnectionOptions {
  readonly path: string;
  /** writer: creates a missing store, commits; reader: read-only, the file must exist */
  readonly role: 'writer' | 'reader';
  readonly sql: StoreSql;
}

/** The last row: its seq, stored chain hash and JCS text (the caller re-hashes the text). */
export interface HeadRow {
  readonly seq: number;
  readonly hash: string;
  readonly jcs: string;
}

export interface HeadRef {
  readonly seq: number;
  readonly hash: string;
}

export interface WriteRequest {
  /** the head the batch continues from (what this store last confirmed) */
  readonly after: HeadRef | null;
  /** a previous operation failed after `after`: rows past it are unconfirmed and are deleted first */
  readonly truncate: boolean;
  /** the receipts' JCS texts, in seq order */
  readonly texts: readonly string[];
  /**
   * Per receipt, 12 values in this order: seq, id, prevHash, time_ms, verdict, rule, tool,
   * capability_id, workload_uri, trust_domain, workload_path, tier (../store.ts `writeRequest`
   * fills it from SealedReceipt.columns): the indexed columns come from the caller, so no text is
   * parsed here; seq, id and prevHash are checked against the text.
   */
  readonly rows: readonly SqlParam[];
  /** their chain hashes (`sha256:<hex>` of each text) */
  readonly hashes: readonly string[];
  /** commit with fsync */
  readonly durable: boolean;
  /** an empty store takes `after` as where it starts (rebuilt from a log retention pruned) */
  readonly startsEmpty?: boolean;
}

export type SqlParam = string | number | null;

export interface StoreConnection {
  head(): HeadRow | null;
  write(req: WriteRequest): void;
  /** deletes the rows after `head` (all rows for null); refuses when the row at head.seq is not `head` */
  rewind(head: HeadRef | null): number;
  /** deletes up to `chunk` rows with seq <= through, never the last row; returns how many */
  pruneChunk(through: number, chunk: number): number;
  all(sql: string, params: readonly SqlParam[]): unknown[];
  close(): void;
}

/** An error with a stable `code` the caller maps to a ChioError (SQLite's own codes pass through). */
export interface StoreFailure {
  readonly message: string;
  readonly code: string;
}

/** Opens a store connection. Throws Error with `code` (`store_invalid`, `store_diverged`, SQLITE_*). */
export function openStoreConnection(Database: typeof BetterSqlite3, options: StoreConnectionOptions): StoreConnection {
  const { sql, path } = options;
  const fail = (code: string, message: string): Error => Object.assign(new Error(message), { code });
  const writer = options.role === 'writer';
  const db = new Database(path, writer ? {} : { readonly: true, fileMustExist: true });
  try {
    for (const p of writer ? sql.writerPragmas : sql.readerPragmas) db.pragma(p);
    if (writer) {
      const objects = (db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").get() as { n: number }).n;
      if (objects === 0) db.exec(sql.create);
    }
    let schema: string | undefined;
    try {
      schema = (db.prepare(sql.schemaOf).get() as { value: string } | undefined)?.value;
    } catch {
      schema = undefined;
    }
    if (schema !== sql.schemaId) {
      throw fail('store_invalid', `${path} is not a chio receipt store (expected ${sql.schemaId} in its store_meta table)`);
    }
  } catch (err) {
    db.close();
    throw err;
  }

  const headStmt = db.prepare(sql.head);
  const rowAtStmt = db.prepare(sql.rowAt);
  const statements = new Map<string, BetterSqlite3.Statement>();
  const prepared = (text: string): BetterSqlite3.Statement => {
    let s = statements.get(text);
    if (s === undefined) {
      s = db.prepare(text);
      statements.set(text, s);
    }
    return s;
  };
  let durableMode = true; // writerPragmas set synchronous = FULL
  let unsynced = false;

  const head = (): HeadRow | null => (headStmt.get() as HeadRow | undefined) ?? null;
  const describeHead = (h: HeadRef | null): string => (h === null ? 'an empty store' : `seq ${h.seq} (${h.hash})`);
  /** rows after `to` are deleted; the row at to.seq must be `to` */
  const truncateAfter = (to: HeadRef | null): number => {
    if (to !== null) {
      const row = rowAtStmt.get(to.seq) as { hash: string } | undefined;
      if (row === undefined || row.hash !== to.hash) {
        throw fail('store_diverged', `cannot rewind ${path} to seq ${to.seq}: the store holds ${row === undefined ? 'no such receipt' : `a different receipt there (${row.hash})`}`);
      }
    }
    return db.prepare(sql.deleteAfter).run(to?.seq ?? 0).changes;
  };
  const setDurable = (durable: boolean): void => {
    if (durable === durableMode) return;
    db.pragma(durable ? 'synchronous = FULL' : 'synchronous = NORMAL');
    durableMode = durable;
  };

  const insert = writer ? db.prepare(sql.insert) : null;
  const writeTx = db.transaction((req: WriteRequest) => {
    if (insert === null) throw fail('store_invalid', `${path} is open read-only`);
    if (req.truncate) truncateAfter(req.after);
    const current = head();
    const startsHere = current === null && req.startsEmpty === true;
    if (!startsHere && ((current?.seq ?? null) !== (req.after?.seq ?? null) || (current?.hash ?? null) !== (req.after?.hash ?? null))) {
      throw fail('store_diverged', `${path} holds ${describeHead(current)}, but the batch continues from ${describeHead(req.after)}: refusing to fork the chain`);
    }
    const width = 12; // values per receipt in req.rows (WriteRequest.rows names them)
    if (req.rows.length !== req.texts.length * width || req.hashes.length !== req.texts.length) {
      throw new TypeError(`a write of ${req.texts.length} receipts needs ${req.texts.length * width} row values and as many hashes`);
    }
    let prevSeq = req.after?.seq ?? 0;
    let prevHash = req.after?.hash ?? null;
    const rows = req.rows;
    for (let i = 0, at = 0; i < req.texts.length; i++, at += width) {
      const seq = rows[at];
      const hash = req.hashes[i] as string;
      if (seq !== prevSeq + 1 || rows[at + 2] !== prevHash) {
        throw fail('store_diverged', `receipt ${String(rows[at + 1])} (seq ${String(seq)}) does not follow seq ${prevSeq} in the batch for ${path}`);
      }
      // the row describes its text (a JCS line names each member once): seq, id and prevHash as stored
      const text = req.texts[i] as string;
      const prevText = prevHash === null ? 'null' : `"${prevHash}"`;
      if (!text.includes(`"seq":${seq},`) || !text.includes(`"id":"${String(rows[at + 1])}"`) || !text.includes(`"prevHash":${prevText},`)) {
        throw fail('store_diverged', `receipt seq ${String(seq)} for ${path}: its indexed columns do not describe its text`);
      }
      insert.run(seq, rows[at + 1], rows[at + 3], rows[at + 4], rows[at + 5], rows[at + 6], rows[at + 7], rows[at + 8], rows[at + 9], rows[at + 10], rows[at + 11], hash, text);
      prevSeq = seq;
      prevHash = hash;
    }
    // an empty durable batch after relaxed ones: commit a small row with fsync (a WAL sync covers the earlier frames)
    if (req.texts.length === 0 && req.durable && unsynced) db.prepare(sql.syncMark).run(new Date().toISOString());
  });

  return {
    head,
    write(req) {
      setDurable(req.durable);
      writeTx.immediate(req);
      if (req.durable) unsynced = false;
      else if (req.texts.length > 0) unsynced = true;
    },
    rewind(to) {
      setDurable(true);
      return db.transaction(() => truncateAfter(to)).immediate();
    },
    pruneChunk(through, chunk) {
      setDurable(true);
      return db.prepare(sql.pruneChunk).run(through, chunk).changes;
    },
    all: (text, params) => prepared(text).all(...params),
    close: () => db.close(),
  };
}

/** Request and reply messages between ./sqlite.ts and a store worker. */
export type WorkerRequest =
  | { readonly id: number; readonly op: 'head' }
  | { readonly id: number; readonly op: 'write'; readonly req: WriteRequest }
  | { readonly id: number; readonly op: 'rewind'; readonly head: HeadRef | null }
  | { readonly id: number; readonly op: 'prune'; readonly through: number; readonly chunk: number }
  | { readonly id: number; readonly op: 'all'; readonly sql: string; readonly params: readonly SqlParam[] }
  | { readonly id: number; readonly op: 'close' };

export type WorkerReply =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: StoreFailure };

/** The first message of a worker: the head of the store, or why it could not be opened. */
export type WorkerHello = { readonly ready: true; readonly head: HeadRow | null } | { readonly ready: false; readonly error: StoreFailure };

/** A worker's message loop: one request at a time, in order. Must stay self-contained (see the header). */
export function serveStoreConnection(port: MessagePort, open: () => StoreConnection): void {
  const failure = (err: unknown): StoreFailure => {
    const e = err as { message?: unknown; code?: unknown } | null;
    return {
      message: typeof e?.message === 'string' ? e.message : String(err),
      code: typeof e?.code === 'string' ? e.code : 'io_error',
    };
  };
  let conn: StoreConnection;
  try {
    conn = open();
    port.postMessage({ ready: true, head: conn.head() } satisfies WorkerHello);
  } catch (err) {
    port.postMessage({ ready: false, error: failure(err) } satisfies WorkerHello);
    port.close();
    return;
  }
  port.on('message', (msg: WorkerRequest) => {
    let reply: WorkerReply;
    try {
      let result: unknown;
      switch (msg.op) {
        case 'head':
          result = conn.head();
          break;
        case 'write':
          conn.write(msg.req);
          result = null;
          break;
        case 'rewind':
          result = conn.rewind(msg.head);
          break;
        case 'prune':
          result = conn.pruneChunk(msg.through, msg.chunk);
          break;
        case 'all':
          result = conn.all(msg.sql, msg.params);
          break;
        case 'close':
          conn.close();
          result = null;
          break;
      }
      reply = { id: msg.id, ok: true, result };
    } catch (err) {
      reply = { id: msg.id, ok: false, error: failure(err) };
    }
    port.postMessage(reply);
    if (msg.op === 'close') port.close();
  });
}

/** The script of a store worker thread (`new Worker(source, {eval: true, workerData})`). */
export function workerSource(): string {
  return [
    "'use strict';",
    "const { parentPort, workerData } = require('node:worker_threads');",
    `const openStoreConnection = ${openStoreConnection.toString()};`,
    `const serveStoreConnection = ${serveStoreConnection.toString()};`,
    'const Database = require(workerData.driver);',
    'serveStoreConnection(parentPort, () => openStoreConnection(Database, workerData.options));',
    '',
  ].join('\n');
}
