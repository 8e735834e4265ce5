/**
 * The central PostgreSQL receipt store, read side (SPEC §6; README "Several replicas, one
 * PostgreSQL"): the query API across every replica's chain (./query.ts), a receipt by id, and each
 * chain in seq order for `chio receipt verify --pg-url-env` (read in pages by keyset, so a chain of
 * any length streams in bounded memory). Rows are written by the shipper (./shipper.ts).
 */
import type { ReceiptPage } from '../query.js';
import type { ReceiptRecord } from '../store.js';
import { int8, int8OrNull, pgError, type PgQueryable } from './connection.js';
import { centralQuerySql, HELD_ROW, parseCentralQuery, toCentralPage, type CentralQuery, type CentralRow } from './query.js';
import { STORED_COLUMNS, type StoredColumn } from './receipt-row.js';

/** The columns stored beside a receipt's text, as read back (the query API filters on them; `hash` links the chain). */
export type StoredColumns = { readonly time_ms: number } & { readonly [K in Exclude<StoredColumn, 'time_ms'>]: string | null };

/** Rows read per page by `iterateChain`. */
export const CHAIN_PAGE_ROWS = 2000;

export interface ChainInfo {
  readonly chain: string;
  /** the oldest seq held (greater than 1 after pruning, or when shipping began on a pruned log) */
  readonly firstSeq: number;
  /** the hash the receipt at firstSeq must name as prevHash (null: a chain from seq 1, or not known) */
  readonly firstPrevHash: string | null;
  /** receipts held, and the newest seq (null when none) */
  readonly receipts: number;
  readonly headSeq: number | null;
}

export class PgReceiptStore {
  readonly #db: PgQueryable;

  constructor(db: PgQueryable) {
    this.#db = db;
  }

  /** Validates query parameters (ChioError bad_request naming the parameter). */
  parse(params: Iterable<readonly [string, string]>): CentralQuery {
    return parseCentralQuery(params);
  }

  async query(q: CentralQuery): Promise<ReceiptPage> {
    const { text, values } = centralQuerySql(q);
    const rows = await this.#read<CentralRow>(text, values);
    return toCentralPage(
      rows.map((r) => ({ time_ms: int8(r.time_ms), chain: r.chain, seq: int8(r.seq), jcs: r.jcs })),
      q.limit,
    );
  }

  /**
   * The JCS text of the receipt with this id (the first in the total order, should two chains share
   * one), or null. A row below its chain's first_seq is pruned as far as the chain is concerned: never served.
   */
  async get(id: string): Promise<string | null> {
    const [row] = await this.#read<{ jcs: string }>(
      `SELECT jcs FROM chio_receipts r WHERE id = $1 AND ${HELD_ROW} ORDER BY time_ms, chain, seq LIMIT 1`,
      [id],
    );
    return row?.jcs ?? null;
  }

  /**
   * The rows of a chain with seq < `firstSeq` (none in a store only chio wrote: `chio_prune_chain`
   * deletes them and moves first_seq in one transaction): how many, and the lowest and highest.
   */
  async heldBelow(chain: string, firstSeq: number): Promise<{ readonly rows: number; readonly lowest: { readonly seq: number; readonly id: string } | null; readonly highestSeq: number | null }> {
    const [row] = await this.#read<{ rows: number; lowest_seq: number | null; lowest_id: string | null; highest_seq: number | null }>(
      `SELECT count(*)::int8 AS rows, min(seq) AS lowest_seq, max(seq) AS highest_seq,
              (SELECT id FROM chio_receipts WHERE chain = $1 AND seq < $2 ORDER BY seq LIMIT 1) AS lowest_id
         FROM chio_receipts WHERE chain = $1 AND seq < $2`,
      [chain, firstSeq],
    );
    const lowestSeq = int8OrNull(row?.lowest_seq ?? null);
    return {
      rows: int8(row?.rows ?? 0),
      lowest: lowestSeq === null ? null : { seq: lowestSeq, id: row?.lowest_id ?? '' },
      highestSeq: int8OrNull(row?.highest_seq ?? null),
    };
  }

  /** Every chain the store knows, by chain id. */
  async chains(): Promise<ChainInfo[]> {
    const rows = await this.#read<{ chain: string; first_seq: number; first_prev_hash: string | null; receipts: number; head_seq: number | null }>(
      `SELECT c.chain, c.first_seq, c.first_prev_hash, count(r.seq)::int8 AS receipts, max(r.seq) AS head_seq
         FROM chio_chains c LEFT JOIN chio_receipts r ON r.chain = c.chain
        GROUP BY c.chain, c.first_seq, c.first_prev_hash ORDER BY c.chain`,
      [],
    );
    return rows.map((r) => ({ chain: r.chain, firstSeq: int8(r.first_seq), firstPrevHash: r.first_prev_hash, receipts: int8(r.receipts), headSeq: int8OrNull(r.head_seq) }));
  }

  /** The receipts of one chain with seq >= fromSeq, in seq order. */
  async *iterateChain(chain: string, fromSeq = 1): AsyncGenerator<ReceiptRecord & { readonly columns: StoredColumns }> {
    let next = fromSeq;
    for (;;) {
      const rows = await this.#read<{ seq: number; jcs: string } & Omit<StoredColumns, 'time_ms'> & { time_ms: unknown }>(
        `SELECT seq, jcs, ${STORED_COLUMNS.map(([column]) => column).join(', ')} FROM chio_receipts WHERE chain = $1 AND seq >= $2 ORDER BY seq LIMIT $3`,
        [chain, next, CHAIN_PAGE_ROWS],
      );
      for (const row of rows) {
        const { seq, jcs, time_ms: timeMs, ...rest } = row;
        yield { seq: int8(seq), jcs, columns: { ...rest, time_ms: int8(timeMs) } };
      }
      const last = rows[rows.length - 1];
      if (last === undefined || rows.length < CHAIN_PAGE_ROWS) return;
      next = int8(last.seq) + 1;
    }
  }

  async #read<R extends object>(text: string, values: ReadonlyArray<string | number>): Promise<R[]> {
    try {
      return (await this.#db.query(text, [...values])).rows as R[];
    } catch (err) {
      throw pgError(err, 'the PostgreSQL receipt store cannot be read');
    }
  }
}
