/**
 * The receipt query API over the central PostgreSQL store (SPEC §6; `GET /v1/receipts/query`,
 * `chio receipt list --control-url` when `receipts.sinks` has a postgres entry): the same
 * parameters, validation, AND-combined filters and answers as the embedded store (../query.ts),
 * across every replica's chain.
 *
 * Order and cursor: receipts come in the total order (time, chain, seq) — the receipt's
 * millisecond timestamp, then its chain id (byte order), then its seq. The cursor is opaque:
 * base64url of `chio.cursor.pg.v1:<time ms>:<seq>:<chain>` naming the last receipt of a page; the
 * next page starts strictly after it, so receipts shipped later with an earlier time than the
 * cursor are not seen by that walk (query again with `since` to catch late shipments). With one
 * chain whose clock never goes back this order is the embedded store's seq order.
 */
import { ChioError, describe } from '../../errors.js';
import { EQUALITY_COLUMNS, escapeLike, parseReceiptQuery, type ReceiptPage, type ReceiptQuery } from '../query.js';

/** Where a page ended: the last receipt's (time, chain, seq). */
export interface CentralPosition {
  readonly timeMs: number;
  readonly chain: string;
  readonly seq: number;
}

/** A validated query of the central store: the embedded filters, and a position instead of `afterSeq`. */
export interface CentralQuery extends Omit<ReceiptQuery, 'afterSeq'> {
  readonly after?: CentralPosition;
}

const CURSOR_PREFIX = 'chio.cursor.pg.v1:';
const CURSOR_TEXT = /^chio\.cursor\.pg\.v1:(0|[1-9][0-9]{0,15}):([1-9][0-9]{0,15}):([\x21-\x7e]{1,128})$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const MAX_CURSOR_LENGTH = 256;

export function encodeCentralCursor(p: CentralPosition): string {
  if (!Number.isSafeInteger(p.timeMs) || p.timeMs < 0 || !Number.isSafeInteger(p.seq) || p.seq < 1 || !/^[\x21-\x7e]{1,128}$/.test(p.chain)) {
    throw new TypeError(`not a cursor position: ${JSON.stringify(p)}`);
  }
  return Buffer.from(`${CURSOR_PREFIX}${p.timeMs}:${p.seq}:${p.chain}`, 'utf8').toString('base64url');
}

/** The position a cursor continues after; ChioError bad_request (field `cursor`) for anything else. */
export function decodeCentralCursor(cursor: string): CentralPosition {
  const bad = (): ChioError => new ChioError('bad_request', 'cursor is not a cursor returned by this API (nextCursor)', { field: 'cursor' });
  if (cursor.length > MAX_CURSOR_LENGTH || !BASE64URL.test(cursor)) throw bad();
  const buf = Buffer.from(cursor, 'base64url');
  if (buf.toString('base64url') !== cursor) throw bad();
  const m = CURSOR_TEXT.exec(buf.toString('latin1'));
  if (!m) throw bad();
  const timeMs = Number(m[1]);
  const seq = Number(m[2]);
  if (!Number.isSafeInteger(timeMs) || !Number.isSafeInteger(seq)) throw bad();
  return { timeMs, seq, chain: m[3] as string };
}

/**
 * Validates query parameters exactly as the embedded API does (../query.ts parseReceiptQuery:
 * unknown or repeated parameters, bad values, `until` after `since`), with this store's cursor.
 */
export function parseCentralQuery(params: Iterable<readonly [string, string]>): CentralQuery {
  const rest: Array<readonly [string, string]> = [];
  let cursor: string | undefined;
  for (const [key, value] of params) {
    if (key !== 'cursor') {
      rest.push([key, value]);
      continue;
    }
    if (cursor !== undefined) throw new ChioError('bad_request', 'query parameter "cursor" is given more than once', { field: 'cursor' });
    cursor = value;
  }
  const { afterSeq: _none, ...query } = parseReceiptQuery(rest);
  if (cursor === undefined) return query;
  let after: CentralPosition;
  try {
    after = decodeCentralCursor(cursor);
  } catch (err) {
    throw new ChioError('bad_request', `query parameter cursor: ${describe(err)}`, { field: 'cursor' });
  }
  return { ...query, after };
}

export interface PgStatement {
  readonly text: string;
  readonly values: ReadonlyArray<string | number>;
}


/**
 * The condition (on `chio_receipts r`) that a row is held by its chain: seq >= the chain's
 * first_seq. `chio_prune_chain` deletes a chain's rows below the new first_seq in the transaction
 * that moves it, so no row below it exists in a store only chio wrote; one that does (chio_chains
 * altered, rows restored) is pruned as far as the chain is concerned — `chio receipt verify
 * --pg-url-env` reports it — and is never served.
 */
export const HELD_ROW = 'EXISTS (SELECT 1 FROM chio_chains c WHERE c.chain = r.chain AND c.first_seq <= r.seq)';

/** One page: `limit + 1` rows of (time_ms, chain, seq, jcs) in the total order; the extra row says whether there is a next page. */
export function centralQuerySql(q: CentralQuery): PgStatement {
  const where: string[] = [];
  const values: Array<string | number> = [];
  const param = (v: string | number): string => {
    values.push(v);
    return `$${values.length}`;
  };
  for (const [key, column] of EQUALITY_COLUMNS) {
    const value = q[key];
    if (value !== undefined) where.push(`${column} = ${param(value)}`);
  }
  if (q.pathPrefix !== undefined) {
    where.push(`(workload_path = ${param(q.pathPrefix)} OR workload_path LIKE ${param(`${escapeLike(q.pathPrefix)}/%`)} ESCAPE '\\')`);
  }
  if (q.since !== undefined) where.push(`time_ms >= ${param(q.since)}`);
  if (q.until !== undefined) where.push(`time_ms < ${param(q.until)}`);
  if (q.after !== undefined) where.push(`(time_ms, chain, seq) > (${param(q.after.timeMs)}, ${param(q.after.chain)}, ${param(q.after.seq)})`);
  where.push(HELD_ROW);
  return {
    text: `SELECT time_ms, chain, seq, jcs FROM chio_receipts r WHERE ${where.join(' AND ')} ORDER BY time_ms, chain, seq LIMIT ${param(q.limit + 1)}`,
    values,
  };
}

export interface CentralRow {
  readonly time_ms: number;
  readonly chain: string;
  readonly seq: number;
  readonly jcs: string;
}

/** Turns the `limit + 1` rows of centralQuerySql into a page. */
export function toCentralPage(rows: readonly CentralRow[], limit: number): ReceiptPage {
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return {
    receipts: page.map((r) => r.jcs),
    nextCursor: rows.length > limit && last ? encodeCentralCursor({ timeMs: last.time_ms, chain: last.chain, seq: last.seq }) : null,
  };
}
