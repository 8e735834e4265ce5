/**
 * Connections to the central PostgreSQL store (README "Several replicas, one PostgreSQL"; SPEC §6
 * receipts, §7 revocations): the URL comes from an environment variable named in chio.yaml
 * (`url_env`, never the URL itself: it may carry a password), every connection has bounded
 * connect, statement and idle-in-transaction timeouts (a database that hangs must not hang us),
 * and 64-bit integers come back as numbers (seq and times stay below 2^53).
 *
 * A connection string may choose the schema with libpq's `options` parameter, e.g.
 * `postgres://chio@db/audit?options=-c%20search_path%3Dchio` (the tests give each run its own).
 */
import pg from 'pg';
import { ChioError, describe } from '../../errors.js';

export type PgPool = pg.Pool;
export type PgClient = pg.Client;
export type PgQueryable = Pick<pg.ClientBase, 'query'>;

/** The environment variable chio's tools read by default (`chio db migrate --url-env`). */
export const DEFAULT_URL_ENV = 'CHIO_PG_URL';
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const INT8_OID = 20;
const int8AsNumber = (value: string): number => Number(value);

/** int8 (bigint) as a JS number: every int8 chio stores is a seq, a count or epoch milliseconds. */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID ? int8AsNumber : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

export interface PgConnectOptions {
  /** shown in pg_stat_activity */
  readonly applicationName?: string;
  /** default 5 s */
  readonly connectTimeoutMs?: number;
  /** server-side statement_timeout, default 30 s */
  readonly statementTimeoutMs?: number;
}

function clientConfig(url: string, o: PgConnectOptions): pg.ClientConfig {
  const statementTimeout = o.statementTimeoutMs ?? 30_000;
  return {
    connectionString: url,
    application_name: o.applicationName ?? 'chio-authz',
    connectionTimeoutMillis: o.connectTimeoutMs ?? 5000,
    statement_timeout: statementTimeout,
    // client side too: a server that stops answering (a cut network drops no RST) must not hang us
    ...(statementTimeout > 0 ? { query_timeout: statementTimeout + 5000 } : {}),
    idle_in_transaction_session_timeout: 60_000,
    keepAlive: true,
    types: TYPES,
  };
}

/** The URL in `env[name]`; ChioError config_invalid when it is unset or not a postgres:// URL. */
export function pgUrlFromEnv(env: NodeJS.ProcessEnv, name: string, what = 'url_env'): string {
  if (!ENV_NAME.test(name)) throw new ChioError('config_invalid', `${what} ${JSON.stringify(name)} is not an environment variable name`);
  const url = env[name]?.trim() ?? '';
  if (url === '') throw new ChioError('config_invalid', `${what} names ${name}, which is not set or empty (expected postgres://user@host:5432/db)`);
  checkPgUrl(url, `$${name}`);
  return url;
}

/** Throws ChioError config_invalid unless `url` is a postgres:// or postgresql:// URL. */
export function checkPgUrl(url: string, where: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ChioError('config_invalid', `${where} is not a URL (expected postgres://user@host:5432/db)`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new ChioError('config_invalid', `${where} must be a postgres:// URL, not ${parsed.protocol}//…`);
  }
}

/** The URL without its password, for logs and messages. */
export function redactPgUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    // libpq and node-postgres also take a password as a URL parameter (and sslpassword for the key)
    for (const secret of ['password', 'sslpassword']) if (u.searchParams.has(secret)) u.searchParams.set(secret, '***');
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/** A pool; its idle-client errors (the server went away) are reported, never thrown into the event loop. */
export function createPgPool(url: string, o: PgConnectOptions & { readonly max?: number; readonly onError?: (err: Error) => void } = {}): PgPool {
  const pool = new pg.Pool({ ...clientConfig(url, o), max: o.max ?? 4, idleTimeoutMillis: 30_000 });
  pool.on('error', (err) => o.onError?.(err));
  return pool;
}

/** One connected client (LISTEN needs its own). Throws ChioError io_error naming the server. */
export async function connectPgClient(url: string, o: PgConnectOptions & { readonly onError?: (err: Error) => void } = {}): Promise<PgClient> {
  const client = new pg.Client(clientConfig(url, o));
  client.on('error', (err) => o.onError?.(err));
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw pgError(err, `cannot connect to PostgreSQL at ${redactPgUrl(url)}`);
  }
  return client;
}

/** A driver or server error as ChioError io_error, with the server's SQLSTATE when it gave one. */
export function pgError(err: unknown, context: string): ChioError {
  if (err instanceof ChioError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const state = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? ` (SQLSTATE ${code})` : '';
  return new ChioError('io_error', `${context}: ${describe(err)}${state}`, { cause: err });
}

/**
 * Ends a pool or client, waiting at most `ms` (a server that stopped answering must not hold up a
 * shutdown; the sockets are closed with the process).
 */
export async function endWithin(target: { end(): Promise<void> }, ms = 1000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([target.end().catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/**
 * An int8 column value as a number, whatever the connection's type parsers (ours give numbers,
 * a plain pg client gives strings). Every int8 chio reads is below 2^53.
 */
export function int8(value: unknown): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(n)) throw new TypeError(`not a safe integer from PostgreSQL: ${String(value)}`);
  return n;
}

/** int8 or NULL. */
export function int8OrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : int8(value);
}

/**
 * Runs `fn` in one transaction on a client of the pool (ROLLBACK on any error). The client's
 * 'error' events are handled while it is checked out (the pool only watches idle clients: an
 * unhandled one — the server going away mid-transaction — would end the process), and a client
 * that failed is discarded, not returned to the pool.
 */
export async function inTransaction<T>(pool: PgPool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken = false;
  const onError = (): void => {
    broken = true;
  };
  client.on('error', onError);
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}
