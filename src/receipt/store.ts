/**
 * The SQLite receipt store (SPEC §2.1 `receipts.sinks: [{type: sqlite, path}]`, §6): its schema
 * and SQL, the read API it offers (queries, by id, by seq range) and pruning, and
 * `SqliteReceiptStore`, a connection on the calling thread for the CLI (`chio receipt list|show
 * --store`), offline tools and tests. The running service writes and reads through
 * ./sinks/sqlite.ts instead (worker threads: a commit with fsync or a long query never blocks the
 * event loop). Both run the same connection code (./sinks/sqlite-worker.ts).
 *
 * One row per receipt: the receipt's exact JCS text (what is returned verifies byte for byte), its
 * chain hash, and the indexed columns the query API filters on. Every single-column index is
 * implicitly `(column, seq)` (seq is the rowid), so `column = ? ORDER BY seq LIMIT n` walks one
 * index in order and stops after n rows.
 *
 * For part B (Merkle checkpoints, export, retention): `ReceiptSource` — `iterateBySeq(from, to)`
 * yields `{seq, jcs}` in seq order (read in pages, so it is safe on a store being written), and
 * `pruneThrough(seq)` deletes a whole seq range from the start (in chunks, between writes; the
 * newest receipt is never deleted, so the store always knows its chain head).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import BetterSqlite3 from 'better-sqlite3';
import { ChioError } from '../errors.js';
import { querySql, toPage, type ReceiptPage, type ReceiptQuery } from './query.js';
import { chainHeadOf, type ChainHead, type SealedReceipt } from './receipt.js';
import {
  openStoreConnection,
  type HeadRef,
  type HeadRow,
  type SqlParam,
  type StoreConnection,
  type StoreFailure,
  type StoreSql,
  type WriteRequest,
} from './sinks/sqlite-worker.js';

export const STORE_SCHEMA_ID = 'chio.receipt-store.v1';

// workload_uri has no index of its own: receipts_by_workload_time (workload_uri, time_ms) serves it
// (one B-tree less to update per receipt, ~10% of the store's CPU per insert)
const INDEXED_COLUMNS = ['time_ms', 'verdict', 'rule', 'tool', 'trust_domain', 'workload_path', 'tier'] as const;

/** The store's SQL: schema, pragmas and statements. */
export const STORE_SQL: StoreSql = {
  schemaId: STORE_SCHEMA_ID,
  create: [
    'BEGIN;',
    `CREATE TABLE receipts (
      seq INTEGER PRIMARY KEY,
      id TEXT NOT NULL,
      time_ms INTEGER NOT NULL,
      verdict TEXT NOT NULL,
      rule TEXT,
      tool TEXT,
      capability_id TEXT,
      workload_uri TEXT,
      trust_domain TEXT,
      workload_path TEXT,
      tier TEXT NOT NULL,
      hash TEXT NOT NULL,
      jcs TEXT NOT NULL
    ) STRICT;`,
    'CREATE UNIQUE INDEX receipts_by_id ON receipts (id);',
    ...INDEXED_COLUMNS.map((c) => `CREATE INDEX receipts_by_${c} ON receipts (${c});`),
    // most receipts carry no capability: a partial index costs them nothing (`capability_id = ?` implies NOT NULL)
    'CREATE INDEX receipts_by_capability_id ON receipts (capability_id) WHERE capability_id IS NOT NULL;',
    // the query API's common case: one workload over a time range
    'CREATE INDEX receipts_by_workload_time ON receipts (workload_uri, time_ms);',
    'CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;',
    `INSERT INTO store_meta (key, value) VALUES ('schema', '${STORE_SCHEMA_ID}');`,
    'COMMIT;',
  ].join('\n'),
  schemaOf: "SELECT value FROM store_meta WHERE key = 'schema'",
  head: 'SELECT seq, hash, jcs FROM receipts ORDER BY seq DESC LIMIT 1',
  rowAt: 'SELECT hash FROM receipts WHERE seq = ?',
  insert:
    'INSERT INTO receipts (seq, id, time_ms, verdict, rule, tool, capability_id, workload_uri, trust_domain, workload_path, tier, hash, jcs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
  deleteAfter: 'DELETE FROM receipts WHERE seq > ?',
  pruneChunk:
    'DELETE FROM receipts WHERE seq IN (SELECT seq FROM receipts WHERE seq <= ? AND seq < (SELECT max(seq) FROM receipts) ORDER BY seq LIMIT ?)',
  syncMark: "INSERT INTO store_meta (key, value) VALUES ('synced_at', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  // wal_autocheckpoint 10,000 pages (~40 MB, under journal_size_limit): the append-mostly index pages are
  // rewritten in the WAL by every batch, and a checkpoint copies each of them to the database once;
  // checkpointing 10× less often cuts the store's CPU per receipt by ~20% (bench/receipts.mjs)
  writerPragmas: ['journal_mode = WAL', 'synchronous = FULL', 'busy_timeout = 5000', 'journal_size_limit = 67108864', 'wal_autocheckpoint = 10000', 'case_sensitive_like = ON'],
  readerPragmas: ['busy_timeout = 5000', 'case_sensitive_like = ON', 'query_only = ON'],
};

const BY_ID_SQL = 'SELECT seq, jcs FROM receipts WHERE id = ?';
/** A batch as the store's connection writes it (./sinks/sqlite-worker.ts WriteRequest): texts, hashes and the indexed columns. */
export function writeRequest(batch: readonly SealedReceipt[], after: HeadRef | null, truncate: boolean, durable: boolean): WriteRequest {
  const texts: string[] = new Array<string>(batch.length);
  const hashes: string[] = new Array<string>(batch.length);
  const rows: SqlParam[] = [];
  for (let i = 0; i < batch.length; i++) {
    const s = batch[i] as SealedReceipt;
    const c = s.columns;
    texts[i] = s.jcs;
    hashes[i] = s.hash;
    rows.push(s.seq, s.id, s.prevHash, c.timeMs, c.verdict, c.rule, c.tool, c.capabilityId, c.workloadUri, c.trustDomain, c.workloadPath, c.tier);
  }
  return { after, truncate, texts, hashes, rows, durable };
}

const RANGE_SQL = 'SELECT seq, jcs FROM receipts WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?';
const FIRST_SEQ_SQL = 'SELECT min(seq) AS seq FROM receipts';
/** Receipts read per page by iterateBySeq; deleted per transaction by pruneThrough. */
export const PAGE_ROWS = 1000;
export const PRUNE_CHUNK_ROWS = 5000;

/** Where better-sqlite3 is installed (a worker thread `require`s it by this absolute path). */
export const SQLITE_DRIVER = createRequire(import.meta.url).resolve('better-sqlite3');

export interface ReceiptRecord {
  readonly seq: number;
  /** the receipt's exact JCS text */
  readonly jcs: string;
}

/** What Merkle checkpoints, export and retention (part B) need from a store. */
export interface ReceiptSource {
  /** Receipts with fromSeq <= seq <= toSeq (to the end when toSeq is omitted), in seq order. */
  iterateBySeq(fromSeq: number, toSeq?: number): AsyncIterable<ReceiptRecord>;
  /** Deletes every receipt with seq <= `seq` except the newest one; returns how many were deleted. */
  pruneThrough(seq: number): Promise<number>;
}

/** The read API of a store (the query API and `chio receipt list|show`). */
export interface ReceiptStore extends ReceiptSource {
  head(): Promise<ChainHead | null>;
  /** the seq of the oldest receipt held (greater than 1 after pruning), null when empty */
  firstSeq(): Promise<number | null>;
  query(q: ReceiptQuery): Promise<ReceiptPage>;
  /** the JCS text of the receipt with this id, or null */
  get(id: string): Promise<string | null>;
}

type Rows = (sql: string, params: readonly SqlParam[]) => Promise<unknown[]>;

interface SeqRow {
  readonly seq: number;
  readonly jcs: string;
}

/** The query API over any way of running a SELECT (in this thread, or in a worker). */
export function storeReader(all: Rows): Pick<ReceiptStore, 'query' | 'get' | 'iterateBySeq' | 'firstSeq'> {
  return {
    async query(q) {
      const { sql, params } = querySql(q);
      return toPage((await all(sql, params)) as SeqRow[], q.limit);
    },
    async get(id) {
      const [row] = (await all(BY_ID_SQL, [id])) as SeqRow[];
      return row?.jcs ?? null;
    },
    async firstSeq() {
      const [row] = (await all(FIRST_SEQ_SQL, [])) as Array<{ seq: number | null }>;
      return row?.seq ?? null;
    },
    async *iterateBySeq(fromSeq, toSeq = Number.MAX_SAFE_INTEGER) {
      checkSeq(fromSeq, 'fromSeq');
      checkSeq(toSeq, 'toSeq');
      let next = fromSeq;
      while (next <= toSeq) {
        const rows = (await all(RANGE_SQL, [next, toSeq, PAGE_ROWS])) as SeqRow[];
        for (const row of rows) yield { seq: row.seq, jcs: row.jcs };
        const last = rows[rows.length - 1];
        if (last === undefined || rows.length < PAGE_ROWS) return;
        next = last.seq + 1;
      }
    },
  };
}

/** Deletes through `seq` one chunk (one transaction) at a time, so writes interleave. */
export async function pruneInChunks(seq: number, pruneChunk: (through: number, chunk: number) => Promise<number>): Promise<number> {
  checkSeq(seq, 'seq');
  let total = 0;
  for (;;) {
    const n = await pruneChunk(seq, PRUNE_CHUNK_ROWS);
    total += n;
    if (n < PRUNE_CHUNK_ROWS) return total;
  }
}

function checkSeq(seq: number, what: string): void {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError(`${what} must be a non-negative safe integer, got ${seq}`);
}

/** The chain head of a store's last row; its text is re-hashed, never trusted from the hash column. */
export function headOfRow(row: HeadRow | null, path: string): ChainHead | null {
  if (row === null) return null;
  const head = chainHeadOf(row.jcs); // v2: the leaf of its body, and its chain id; v1: SHA-256 of the text
  if (head.hash !== row.hash) {
    throw new ChioError('receipt_malformed', `receipt store ${path}: the last receipt (seq ${row.seq}) hashes to ${head.hash}, but its row says ${row.hash}`);
  }
  return head;
}

/** A failure reported by the store's connection code, as a ChioError. */
export function storeError(failure: StoreFailure, path: string): ChioError {
  const code = failure.code === 'store_diverged' ? 'receipt_chain_broken' : 'io_error';
  const prefix = failure.code.startsWith('SQLITE_') ? `${failure.code}: ` : '';
  return new ChioError(code, `receipt store ${path}: ${prefix}${failure.message}`);
}

function asFailure(err: unknown): StoreFailure {
  const e = err as { message?: unknown; code?: unknown } | null;
  return { message: typeof e?.message === 'string' ? e.message : String(err), code: typeof e?.code === 'string' ? e.code : 'io_error' };
}

export interface SqliteReceiptStoreOptions {
  /** open for writing too (creates a missing store); default read-only, and the file must exist */
  readonly writable?: boolean;
}

/**
 * A receipt store opened on the calling thread (synchronous SQLite under an async API): for the
 * CLI, offline tools and tests. Not for the service's event loop (use SqliteSink there).
 */
export class SqliteReceiptStore implements ReceiptStore {
  readonly path: string;
  readonly #conn: StoreConnection;
  readonly #reader: ReturnType<typeof storeReader>;

  private constructor(path: string, conn: StoreConnection) {
    this.path = path;
    this.#conn = conn;
    this.#reader = storeReader(async (sql, params) => this.#run(() => conn.all(sql, params)));
  }

  /** Throws ChioError file_not_found (read-only and missing), io_error (not a store, unreadable). */
  static open(path: string, options: SqliteReceiptStoreOptions = {}): SqliteReceiptStore {
    const writable = options.writable ?? false;
    if (!writable && !existsSync(path)) throw new ChioError('file_not_found', `receipt store ${path} does not exist`);
    try {
      return new SqliteReceiptStore(path, openStoreConnection(BetterSqlite3, { path, role: writable ? 'writer' : 'reader', sql: STORE_SQL }));
    } catch (err) {
      throw storeError(asFailure(err), path);
    }
  }

  async head(): Promise<ChainHead | null> {
    return headOfRow(this.#run(() => this.#conn.head()), this.path);
  }

  firstSeq(): Promise<number | null> {
    return this.#reader.firstSeq();
  }

  query(q: ReceiptQuery): Promise<ReceiptPage> {
    return this.#reader.query(q);
  }

  get(id: string): Promise<string | null> {
    return this.#reader.get(id);
  }

  iterateBySeq(fromSeq: number, toSeq?: number): AsyncIterable<ReceiptRecord> {
    return this.#reader.iterateBySeq(fromSeq, toSeq);
  }

  pruneThrough(seq: number): Promise<number> {
    return pruneInChunks(seq, async (through, chunk) => this.#run(() => this.#conn.pruneChunk(through, chunk)));
  }

  /** Appends sealed receipts that continue the store's chain (writable stores; seeding, tests, tools). */
  async append(batch: readonly SealedReceipt[], durable = true): Promise<void> {
    const after = await this.head();
    this.#run(() => this.#conn.write(writeRequest(batch, after, false, durable)));
  }

  close(): void {
    this.#conn.close();
  }

  #run<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof ChioError || err instanceof TypeError) throw err;
      throw storeError(asFailure(err), this.path);
    }
  }
}
