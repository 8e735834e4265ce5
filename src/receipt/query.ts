/**
 * Receipt queries (SPEC §6, §9; the receipt store's query API `GET /v1/receipts/query` and
 * `chio receipt list`): the filters, their validation (zod; a bad one names its parameter), the
 * opaque forward-only cursor, and the SQL that runs them against the SQLite store (./store.ts).
 *
 * Filters are AND-combined. `pathPrefix` is segment-aware on the workload's SPIFFE path (SPEC §5:
 * `/payments/worker` matches `/payments/worker` and `/payments/worker/x`, never
 * `/payments/workerX`): `path = ? OR path LIKE '<escaped prefix>/%' ESCAPE '\'`, with `\`, `%` and
 * `_` escaped and LIKE made case-sensitive on every connection (`PRAGMA case_sensitive_like`).
 * Times are RFC 3339; `since` is inclusive, `until` exclusive. Results are ordered by `seq`.
 */
import { z } from 'zod';
import { TIERS, type Tier } from '../attestation/tier.js';
import { CAPABILITY_ID_PATTERN } from '../capability/token.js';
import { ChioError, describe } from '../errors.js';
import { SpiffeId, TrustDomain, validatePath } from '../spiffe/id.js';

export const DEFAULT_QUERY_LIMIT = 50;
export const MAX_QUERY_LIMIT = 500;
/** Longest accepted rule, tool or capability id filter. */
const MAX_NAME_LENGTH = 256;

/** A validated query. Times are epoch milliseconds; `afterSeq` comes from the cursor. */
export interface ReceiptQuery {
  readonly workloadUri?: string;
  readonly trustDomain?: string;
  readonly pathPrefix?: string;
  readonly verdict?: 'allow' | 'deny';
  readonly rule?: string;
  readonly tool?: string;
  readonly capabilityId?: string;
  readonly tier?: Tier;
  /** inclusive */
  readonly since?: number;
  /** exclusive */
  readonly until?: number;
  /** only receipts with seq greater than this */
  readonly afterSeq?: number;
  readonly limit: number;
}

/** The query parameters, in the order they are documented. */
export const QUERY_PARAMETERS = [
  'workloadUri',
  'trustDomain',
  'pathPrefix',
  'verdict',
  'rule',
  'tool',
  'capabilityId',
  'tier',
  'since',
  'until',
  'cursor',
  'limit',
] as const;
export type QueryParameter = (typeof QUERY_PARAMETERS)[number];

// ---- cursor ----

const CURSOR_PREFIX = 'chio.cursor.v1:';
const CURSOR_TEXT = /^chio\.cursor\.v1:([1-9][0-9]{0,15})$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * The cursor after a page whose last receipt has `seq`: base64url of `chio.cursor.v1:<seq>`.
 * Opaque to clients. Not signed: it only moves the start of the result set forward, and the
 * caller may query every receipt anyway; it is validated strictly instead (decodeCursor).
 */
export function encodeCursor(seq: number): string {
  if (!Number.isSafeInteger(seq) || seq < 1) throw new TypeError(`cursor seq must be a positive safe integer, got ${seq}`);
  return Buffer.from(`${CURSOR_PREFIX}${seq}`, 'utf8').toString('base64url');
}

/** The seq a cursor continues after; ChioError bad_request (field `cursor`) for anything else. */
export function decodeCursor(cursor: string): number {
  const bad = (): ChioError => new ChioError('bad_request', 'cursor is not a cursor returned by this API (nextCursor)', { field: 'cursor' });
  if (cursor.length > 64 || !BASE64URL.test(cursor)) throw bad();
  const buf = Buffer.from(cursor, 'base64url');
  if (buf.toString('base64url') !== cursor) throw bad();
  const m = CURSOR_TEXT.exec(buf.toString('latin1'));
  const seq = m ? Number(m[1]) : NaN;
  if (!Number.isSafeInteger(seq)) throw bad();
  return seq;
}

// ---- RFC 3339 ----

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * Epoch milliseconds of an RFC 3339 date-time (section 5.6), rounded UP to the millisecond so that
 * `>= since` and `< until` stay exact for millisecond receipt times. Null when it is not one.
 * Leap seconds (`:60`) are refused: receipt times never carry them. Strict where Date.parse is not
 * (2026-02-30, hour 24 are refused), hence also the CLI's `--at` (svid, capability).
 */
export function parseRfc3339(text: string): number | null {
  const m = RFC3339.exec(text);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return null;
  // setUTCFullYear, not Date.UTC: Date.UTC takes years 0–99 as 1900–1999 (0099 would sort after 1950)
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (date.getUTCDate() !== day) return null; // e.g. 2026-02-30
  const dayStart = date.getTime();
  const fraction = m[7] ?? '';
  let ms = Number(fraction.slice(0, 3).padEnd(3, '0'));
  if (/[1-9]/.test(fraction.slice(3))) ms += 1;
  let offsetMinutes = 0;
  if (m[8] === undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return null;
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  return dayStart + ((hour * 60 + minute) * 60 + second) * 1000 + ms - offsetMinutes * 60_000;
}

// ---- validation ----

/** zod refinement that runs a validator throwing an error with a message (the SPIFFE parsers). */
function validWith(check: (value: string) => void) {
  return (value: string, ctx: z.RefinementCtx): void => {
    try {
      check(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: describe(err) });
    }
  };
}

const name = z.string().min(1, 'must not be empty').max(MAX_NAME_LENGTH, `at most ${MAX_NAME_LENGTH} characters`);
const time = z.string().transform((value, ctx) => {
  const ms = parseRfc3339(value);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: 'expected an RFC 3339 date-time, e.g. 2026-11-24T00:00:00Z' });
    return z.NEVER;
  }
  return ms;
});

const querySchema = z
  .strictObject({
    workloadUri: z.string().superRefine(validWith((v) => SpiffeId.parse(v))),
    trustDomain: z.string().superRefine(
      validWith((v) => {
        if (v.includes('://')) throw new TypeError('expected a bare trust domain name, e.g. prod.chio');
        TrustDomain.parse(v);
      }),
    ),
    pathPrefix: z.string().superRefine(
      validWith((v) => {
        if (!v.startsWith('/')) throw new TypeError('expected a SPIFFE path starting with /, e.g. /payments/worker');
        validatePath(v);
      }),
    ),
    verdict: z.enum(['allow', 'deny']),
    rule: name,
    tool: name,
    capabilityId: name.refine((v) => CAPABILITY_ID_PATTERN.test(v), 'expected a capability id (cap-<ULID>)'),
    tier: z.enum(TIERS),
    since: time,
    until: time,
    cursor: z.string().transform((value, ctx) => {
      try {
        return decodeCursor(value);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: describe(err) });
        return z.NEVER;
      }
    }),
    limit: z
      .string()
      .regex(/^[0-9]{1,6}$/, `expected an integer from 1 to ${MAX_QUERY_LIMIT}`)
      .transform(Number)
      .pipe(z.number().int().min(1, `expected an integer from 1 to ${MAX_QUERY_LIMIT}`).max(MAX_QUERY_LIMIT, `at most ${MAX_QUERY_LIMIT}`)),
  })
  .partial();

/**
 * Validates query parameters (strings, as in a URL query). Throws ChioError `bad_request` whose
 * `field` names the first bad parameter: an unknown one, one given twice, or a bad value.
 */
export function parseReceiptQuery(params: Iterable<readonly [string, string]>): ReceiptQuery {
  const seen = new Map<string, string>();
  for (const [key, value] of params) {
    if (seen.has(key)) throw new ChioError('bad_request', `query parameter ${JSON.stringify(key)} is given more than once`, { field: key });
    seen.set(key, value);
  }
  const parsed = querySchema.safeParse(Object.fromEntries(seen)); // own properties, even `__proto__`
  if (!parsed.success) throw queryError(parsed.error);
  const { cursor, limit, ...filters } = parsed.data;
  if (filters.since !== undefined && filters.until !== undefined && filters.until <= filters.since) {
    throw new ChioError('bad_request', 'until must be later than since', { field: 'until' });
  }
  return { ...filters, limit: limit ?? DEFAULT_QUERY_LIMIT, ...(cursor === undefined ? {} : { afterSeq: cursor }) };
}

function queryError(error: z.ZodError): ChioError {
  const issue = error.issues[0];
  if (issue?.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? '';
    return new ChioError('bad_request', `unknown query parameter ${JSON.stringify(key)}; known: ${QUERY_PARAMETERS.join(', ')}`, { field: key });
  }
  const field = String(issue?.path[0] ?? '');
  return new ChioError('bad_request', `query parameter ${field}: ${issue?.message ?? 'invalid'}`, { field });
}

// ---- SQL ----

/** `\`, `%` and `_` escaped for `LIKE … ESCAPE '\'`. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

export interface SqlStatement {
  readonly sql: string;
  readonly params: ReadonlyArray<string | number>;
}

/** The filters that are one column's equality, with their column (the same in SQLite and PostgreSQL). */
export const EQUALITY_COLUMNS = [
  ['workloadUri', 'workload_uri'],
  ['trustDomain', 'trust_domain'],
  ['verdict', 'verdict'],
  ['rule', 'rule'],
  ['tool', 'tool'],
  ['capabilityId', 'capability_id'],
  ['tier', 'tier'],
] as const satisfies ReadonlyArray<readonly [keyof ReceiptQuery, string]>;

/**
 * One page of a query: `limit + 1` rows (the extra one says whether there is a next page) of
 * `seq, jcs`, ordered by seq. The inner select finds the seqs through the indexes; only the rows
 * of the page are read whole.
 */
export function querySql(q: ReceiptQuery): SqlStatement {
  const where: string[] = [];
  const params: Array<string | number> = [];
  for (const [key, column] of EQUALITY_COLUMNS) {
    const value = q[key];
    if (value !== undefined) {
      where.push(`${column} = ?`);
      params.push(value);
    }
  }
  if (q.pathPrefix !== undefined) {
    where.push(`(workload_path = ? OR workload_path LIKE ? ESCAPE '\\')`);
    params.push(q.pathPrefix, `${escapeLike(q.pathPrefix)}/%`);
  }
  if (q.since !== undefined) {
    where.push('time_ms >= ?');
    params.push(q.since);
  }
  if (q.until !== undefined) {
    where.push('time_ms < ?');
    params.push(q.until);
  }
  if (q.afterSeq !== undefined) {
    where.push('seq > ?');
    params.push(q.afterSeq);
  }
  params.push(q.limit + 1);
  const filter = where.length === 0 ? '' : ` WHERE ${where.join(' AND ')}`;
  return {
    sql: `SELECT seq, jcs FROM receipts WHERE seq IN (SELECT seq FROM receipts${filter} ORDER BY seq LIMIT ?) ORDER BY seq`,
    params,
  };
}

/** A page of results: the receipts' JCS texts in seq order, and the cursor for the next page. */
export interface ReceiptPage {
  readonly receipts: readonly string[];
  readonly nextCursor: string | null;
}

/** Turns the `limit + 1` rows of querySql into a page. */
export function toPage(rows: ReadonlyArray<{ seq: number; jcs: string }>, limit: number): ReceiptPage {
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return { receipts: page.map((r) => r.jcs), nextCursor: rows.length > limit && last ? encodeCursor(last.seq) : null };
}

/** `{"receipts":[…],"nextCursor":…}` built from the stored JCS texts (no re-serialization: what is returned verifies byte for byte). */
export function pageJson(page: ReceiptPage): string {
  return `{"receipts":[${page.receipts.join(',')}],"nextCursor":${JSON.stringify(page.nextCursor)}}\n`;
}
