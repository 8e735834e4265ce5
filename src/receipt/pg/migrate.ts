/**
 * Schema migrations of the central PostgreSQL store (README "Several replicas, one PostgreSQL";
 * `chio db migrate --url-env VAR`, and the check every replica makes at startup).
 *
 * `chio_schema_migrations` records each applied migration (version, name, SHA-256 of its SQL).
 * Migrating takes a transaction-scoped advisory lock per schema, so replicas or jobs that migrate
 * at the same time apply each migration once; each migration runs in its own transaction.
 * A replica refuses to start on a schema older than its code; a newer one (a rolling upgrade that
 * migrated first: migrations only add) is accepted with a warning.
 */
import { createHash } from 'node:crypto';
import { ChioError } from '../../errors.js';
import { pgError, type PgQueryable } from './connection.js';
import { MIGRATIONS, type Migration } from './migrations/index.js';

export const MIGRATIONS_TABLE = 'chio_schema_migrations';
/** The schema version this code needs. */
export const SCHEMA_VERSION = MIGRATIONS.length;

export interface SchemaStatus {
  /** the newest version applied (0: none) */
  readonly current: number;
  readonly latest: number;
  /** the schema search_path resolves to */
  readonly schema: string;
}

export interface MigrateResult extends SchemaStatus {
  /** versions applied by this call */
  readonly applied: readonly number[];
}

export function migrationChecksum(m: Migration): string {
  return `sha256:${createHash('sha256').update(m.sql, 'utf8').digest('hex')}`;
}

function checkList(list: readonly Migration[]): void {
  list.forEach((m, i) => {
    if (m.version !== i + 1) throw new TypeError(`migration ${m.name} has version ${m.version}, expected ${i + 1}`);
  });
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
}

async function currentSchema(db: PgQueryable): Promise<string> {
  const { rows } = await db.query<{ schema: string | null }>('SELECT current_schema() AS schema');
  const schema = rows[0]?.schema ?? null;
  if (schema === null) {
    throw new ChioError('config_invalid', 'PostgreSQL: no schema of the search_path exists (create it, or fix options=-c search_path=… in the URL)');
  }
  return schema;
}

async function appliedMigrations(db: PgQueryable): Promise<AppliedRow[] | null> {
  const { rows } = await db.query<{ t: string | null }>(`SELECT to_regclass('${MIGRATIONS_TABLE}')::text AS t`);
  if (rows[0]?.t == null) return null;
  return (await db.query<AppliedRow>(`SELECT version, name, checksum FROM ${MIGRATIONS_TABLE} ORDER BY version`)).rows;
}

/** Throws ChioError config_invalid when an applied migration is not the one this code ships. */
function checkApplied(applied: readonly AppliedRow[], list: readonly Migration[]): void {
  for (const row of applied) {
    const m = list[row.version - 1];
    if (m === undefined) continue; // newer than this code
    if (row.checksum !== migrationChecksum(m)) {
      throw new ChioError(
        'config_invalid',
        `PostgreSQL schema: migration ${row.version} (${row.name}) was applied with different SQL than this chio ships (checksum ${row.checksum}); the database was changed by hand or by another build`,
      );
    }
  }
}

/** The schema version of the database (no changes made). */
export async function schemaStatus(db: PgQueryable, list: readonly Migration[] = MIGRATIONS): Promise<SchemaStatus> {
  checkList(list);
  try {
    const schema = await currentSchema(db);
    const applied = (await appliedMigrations(db)) ?? [];
    checkApplied(applied, list);
    return { current: applied.reduce((max, r) => Math.max(max, r.version), 0), latest: list.length, schema };
  } catch (err) {
    throw pgError(err, 'cannot read the PostgreSQL schema version');
  }
}

/**
 * Applies every migration not applied yet, each in its own transaction, under an advisory lock.
 * `db` must be one connection (not a pool): the lock and the transactions live on it.
 */
export async function migrate(db: PgQueryable, list: readonly Migration[] = MIGRATIONS): Promise<MigrateResult> {
  checkList(list);
  const applied: number[] = [];
  let schema: string;
  try {
    schema = await currentSchema(db);
    await lockedTransaction(db, async () => {
      await db.query(
        `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
    });
    for (const m of list) {
      await lockedTransaction(db, async () => {
        const done = (await appliedMigrations(db)) ?? [];
        checkApplied(done, list);
        if (done.some((r) => r.version === m.version)) return;
        await db.query(m.sql);
        await db.query(`INSERT INTO ${MIGRATIONS_TABLE} (version, name, checksum) VALUES ($1, $2, $3)`, [m.version, m.name, migrationChecksum(m)]);
        applied.push(m.version);
      });
    }
  } catch (err) {
    throw pgError(err, `cannot migrate the PostgreSQL schema${applied.length > 0 ? ` (applied ${applied.join(', ')} before the failure)` : ''}`);
  }
  const status = await schemaStatus(db, list);
  return { ...status, schema, applied };
}

/** `fn` in a transaction holding the schema's migration lock (concurrent migrators wait for each other). */
async function lockedTransaction(db: PgQueryable, fn: () => Promise<void>): Promise<void> {
  await db.query('BEGIN');
  try {
    await db.query('SELECT pg_advisory_xact_lock(hashtext(current_schema() || $1))', [`.${MIGRATIONS_TABLE}`]);
    await fn();
    await db.query('COMMIT');
  } catch (err) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * The startup check: ChioError config_invalid when the database's schema is older than this code,
 * naming the command that fixes it. Returns the status (a newer schema is the caller's warning).
 */
export async function requireCurrentSchema(db: PgQueryable, urlEnv: string, list: readonly Migration[] = MIGRATIONS): Promise<SchemaStatus> {
  const status = await schemaStatus(db, list);
  if (status.current < status.latest) {
    throw new ChioError(
      'config_invalid',
      `the PostgreSQL schema "${status.schema}" is at version ${status.current}, this chio needs version ${status.latest}: run \`chio db migrate --url-env ${urlEnv}\` first`,
    );
  }
  return status;
}
