/**
 * The central PostgreSQL receipt store, write side (README "Several replicas, one PostgreSQL"):
 * one multi-row INSERT per batch (arrays through `unnest`), in a transaction, idempotent on
 * (chain, seq) — a retried batch inserts nothing twice — and fork-checked: a receipt whose
 * (chain, seq) is already held with a different hash is refused (receipt_chain_broken), never
 * silently dropped.
 */
import { ChioError } from '../../errors.js';
import pg from 'pg';
import { inTransaction, int8, int8OrNull, type PgQueryable } from './connection.js';
import { STORED_COLUMNS, type ReceiptRow } from './receipt-row.js';

export interface CentralChainHead {
  /** the newest receipt held; null when the chain holds none */
  readonly seq: number | null;
  readonly hash: string | null;
  /** where the chain starts in the store (see chio_chains) */
  readonly firstSeq: number;
  readonly firstPrevHash: string | null;
}

/** The head of a chain in the store; null when the store does not know the chain. */
export async function centralChainHead(db: PgQueryable, chain: string): Promise<CentralChainHead | null> {
  const { rows } = await db.query<{ first_seq: number; first_prev_hash: string | null; seq: number | null; hash: string | null }>(
    `SELECT c.first_seq, c.first_prev_hash, h.seq, h.hash
       FROM chio_chains c
       LEFT JOIN LATERAL (SELECT seq, hash FROM chio_receipts r WHERE r.chain = c.chain ORDER BY seq DESC LIMIT 1) h ON true
      WHERE c.chain = $1`,
    [chain],
  );
  const row = rows[0];
  if (row === undefined) return null;
  return { seq: int8OrNull(row.seq), hash: row.hash, firstSeq: int8(row.first_seq), firstPrevHash: row.first_prev_hash };
}

/** Registers a chain starting at `firstSeq` (whose receipt names `firstPrevHash`); a known chain is left as it is. */
export async function registerChain(db: PgQueryable, chain: string, firstSeq: number, firstPrevHash: string | null): Promise<void> {
  await db.query('INSERT INTO chio_chains (chain, first_seq, first_prev_hash) VALUES ($1, $2, $3) ON CONFLICT (chain) DO NOTHING', [
    chain,
    firstSeq,
    firstSeq === 1 ? null : firstPrevHash,
  ]);
}

const INSERT_SQL = `INSERT INTO chio_receipts
  (chain, seq, id, time_ms, verdict, rule, tool, capability_id, workload_uri, trust_domain, workload_path, tier, hash, jcs)
  SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
  ON CONFLICT (chain, seq) DO NOTHING
  RETURNING seq`;

/**
 * Inserts receipts of one chain (the caller's batch, in any order) in one transaction; returns how
 * many were new. Throws ChioError receipt_chain_broken, inserting nothing, when a receipt's place is
 * held by a different receipt. `db`: a pool, or one client not inside a transaction.
 */
export async function insertReceipts(db: pg.Pool | PgQueryable, chain: string, rows: readonly ReceiptRow[]): Promise<number> {
  if (rows.length === 0) return 0;
  if (db instanceof pg.Pool) return inTransaction(db, (client) => insertIn(client, chain, rows));
  await db.query('BEGIN');
  try {
    const inserted = await insertIn(db, chain, rows);
    await db.query('COMMIT');
    return inserted;
  } catch (err) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

async function insertIn(db: PgQueryable, chain: string, rows: readonly ReceiptRow[]): Promise<number> {
  for (const r of rows) if (r.chain !== chain) throw new TypeError(`insertReceipts: a row of chain ${r.chain} in a batch of ${chain}`);
  const col = <T>(f: (r: ReceiptRow) => T): T[] => rows.map(f);
  const result = await db.query<{ seq: number }>(INSERT_SQL, [
    chain,
    col((r) => r.seq),
    ...STORED_COLUMNS.map(([, value]) => col(value)),
    col((r) => r.jcs),
  ]);
  const inserted = result.rows.length;
  if (inserted < rows.length) await checkDuplicates(db, chain, rows, new Set(result.rows.map((r) => int8(r.seq))));
  return inserted;
}

/** The rows not inserted must already be held with the same hash (a retry), else it is a fork. */
async function checkDuplicates(db: PgQueryable, chain: string, rows: readonly ReceiptRow[], inserted: ReadonlySet<number>): Promise<void> {
  const skipped = rows.filter((r) => !inserted.has(r.seq));
  const { rows: held } = await db.query<{ seq: number; hash: string }>('SELECT seq, hash FROM chio_receipts WHERE chain = $1 AND seq = ANY($2::int8[])', [
    chain,
    skipped.map((r) => r.seq),
  ]);
  const heldHash = new Map(held.map((h) => [int8(h.seq), h.hash]));
  for (const r of skipped) {
    const hash = heldHash.get(r.seq);
    if (hash !== undefined && hash !== r.hash) {
      throw new ChioError(
        'receipt_chain_broken',
        `chain ${chain} forked: the central store holds seq ${r.seq} with hash ${hash}, the local log has ${r.id} with hash ${r.hash}`,
      );
    }
  }
}
