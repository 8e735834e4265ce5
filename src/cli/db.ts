/**
 * `chio db` (SPEC §10; README "Several replicas, one PostgreSQL"): the central PostgreSQL store.
 *
 * - `chio db migrate [--url-env VAR]` applies the schema migrations this chio ships
 *   (src/receipt/pg/migrations/), idempotently, under an advisory lock.
 * - `chio db status [--url-env VAR]` shows the schema version and every chain (receipts, seq range).
 * - `chio db prune --before TIME [--url-env VAR]` deletes, per chain, the receipts before TIME
 *   (a whole prefix of the chain, never its newest receipt) and records where the chain now
 *   starts, so what remains still verifies.
 * - `chio receipt verify --pg-url-env VAR` (./receipt.ts) verifies every chain: `verifyCentral` here.
 *
 * The URL is read from an environment variable (default CHIO_PG_URL), never from the command line.
 * Exit codes: 0 done; 1 a chain failed verification; 2 bad usage, bad input or an unreachable store.
 */
import { parseArgs } from 'node:util';
import { ChioError, describe } from '../errors.js';
import { parseRfc3339 } from '../receipt/query.js';
import { formatFailure, type VerificationKeys } from '../receipt/verify.js';
import { connectPgClient, DEFAULT_URL_ENV, pgError, pgUrlFromEnv, redactPgUrl, type PgClient } from '../receipt/pg/connection.js';
import { migrate, schemaStatus } from '../receipt/pg/migrate.js';
import { PgReceiptStore } from '../receipt/pg/store.js';
import { verifyCentralStore, type ChainReport } from '../receipt/pg/verify.js';
import { dispatch, usageError } from './args.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const GROUP_HELP = `usage: chio db <subcommand> [options]

The central PostgreSQL store of several replicas (receipts shipped by every replica, shared
capability revocations). The URL is read from an environment variable (--url-env, default
${DEFAULT_URL_ENV}): postgres://user@host:5432/db[?options=-c%20search_path%3Dschema]

subcommands:
  migrate [--url-env VAR] [--json]              apply the schema migrations (safe to repeat)
  status [--url-env VAR] [--json]               schema version and every receipt chain
  prune --before TIME [--url-env VAR] [--json]  delete each chain's receipts older than TIME

Verify every chain with \`chio receipt verify --pg-url-env VAR --jwks keys.json\`.
`;

const MIGRATE_HELP = `usage: chio db migrate [--url-env VAR] [--json]

Applies every schema migration this chio ships that the database does not have yet, each in its
own transaction, under an advisory lock (replicas or jobs migrating at once apply each one once).
Replicas refuse to start on an older schema. Exit status: 0 migrated (or already current), 2 bad
usage or the database cannot be reached or migrated.
`;

const STATUS_HELP = `usage: chio db status [--url-env VAR] [--json]

Prints the schema version (applied / needed) and every receipt chain: receipts held, first and
last seq. Exit status: 0, or 2 when the database cannot be read.
`;

const PRUNE_HELP = `usage: chio db prune --before TIME [--url-env VAR] [--json]

Deletes, in every chain, the receipts before TIME (RFC 3339): the longest prefix of the chain whose
receipts are all older, never the chain's newest receipt (shipping resumes after it). Records where
each chain now starts, so \`chio receipt verify --pg-url-env\` still verifies what remains.
Replicas' local logs are pruned by their own receipts.retention. Exit status: 0, or 2.
`;

const COMMON = { 'url-env': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

export const run: Command = dispatch('db', GROUP_HELP, {
  migrate: (a, io) => withDb('migrate', a, io, MIGRATE_HELP, {}, async (db, _values, json) => {
    const result = await migrate(db);
    io.stdout(
      json
        ? `${JSON.stringify(result)}\n`
        : `schema "${result.schema}": version ${result.current} of ${result.latest}${result.applied.length === 0 ? ' (already current)' : `, applied ${result.applied.join(', ')}`}\n`,
    );
    return EXIT_OK;
  }),
  status: (a, io) => withDb('status', a, io, STATUS_HELP, {}, async (db, _values, json) => {
    const status = await schemaStatus(db);
    const chains = status.current >= 1 ? await new PgReceiptStore(db).chains() : [];
    if (json) {
      io.stdout(`${JSON.stringify({ ...status, chains })}\n`);
      return EXIT_OK;
    }
    const lines = [`schema "${status.schema}": version ${status.current} (this chio needs ${status.latest})${status.current < status.latest ? ' — run chio db migrate' : ''}`];
    for (const c of chains) {
      // the rows a chain holds are exactly first_seq..head; anything else is for chio receipt verify --pg-url-env to name
      const whole = c.receipts === 0 || (c.headSeq !== null && c.headSeq - c.firstSeq + 1 === c.receipts);
      const warning = whole ? '' : ` — its rows do not match chio_chains (first_seq ${c.firstSeq}): run chio receipt verify --pg-url-env`;
      lines.push(`chain ${c.chain}: ${c.receipts} receipt(s), seq ${c.receipts === 0 ? '-' : `${c.firstSeq} to ${c.headSeq}`}${warning}`);
    }
    if (chains.length === 0) lines.push('no receipt chains');
    io.stdout(`${lines.join('\n')}\n`);
    return EXIT_OK;
  }),
  prune: (a, io) => withDb('prune', a, io, PRUNE_HELP, { before: { type: 'string' } }, async (db, values, json) => {
    const before = values['before'];
    if (typeof before !== 'string') throw new ChioError('usage', 'missing --before TIME (RFC 3339, e.g. 2026-01-01T00:00:00Z)');
    const cutoff = parseRfc3339(before);
    if (cutoff === null) throw new ChioError('usage', `--before ${JSON.stringify(before)} is not an RFC 3339 date-time (e.g. 2026-01-01T00:00:00Z)`);
    const pruned = await pruneBefore(db, cutoff);
    const deleted = pruned.reduce((n, p) => n + p.deleted, 0);
    io.stdout(json ? `${JSON.stringify({ before, deleted, chains: pruned })}\n` : `deleted ${deleted} receipt(s) older than ${before} in ${pruned.length} chain(s)\n`);
    return EXIT_OK;
  }),
});

type Values = Record<string, string | boolean | undefined>;

/** Parses the options, connects to the database named by --url-env, runs `fn`, disconnects. */
async function withDb(
  name: string,
  args: string[],
  io: CliIO,
  help: string,
  extra: Record<string, { type: 'string' }>,
  fn: (db: PgClient, values: Values, json: boolean) => Promise<number>,
): Promise<number> {
  let values: Values;
  try {
    values = parseArgs({ args, options: { ...COMMON, ...extra }, strict: true, allowPositionals: false }).values as Values;
  } catch (err) {
    return usageError(io, `db ${name}`, describe(err), help);
  }
  if (values['help'] === true) {
    io.stdout(help);
    return EXIT_OK;
  }
  const urlEnv = typeof values['url-env'] === 'string' ? values['url-env'] : DEFAULT_URL_ENV;
  let db: PgClient;
  try {
    db = await connectPgClient(pgUrlFromEnv(io.env, urlEnv, '--url-env'), { applicationName: `chio db ${name}`, statementTimeoutMs: 0 });
  } catch (err) {
    return failed(io, `db ${name}`, err);
  }
  try {
    return await fn(db, values, values['json'] === true);
  } catch (err) {
    return failed(io, `db ${name}`, err);
  } finally {
    await db.end().catch(() => undefined);
  }
}

function failed(io: CliIO, command: string, err: unknown): number {
  if (!(err instanceof ChioError)) throw err;
  io.stderr(`chio ${command}: ${err.code}: ${err.message}\n`);
  return EXIT_USAGE;
}

export interface ChainPrune {
  readonly chain: string;
  /** receipts up to this seq are gone (null: nothing was old enough) */
  readonly through: number | null;
  readonly deleted: number;
}

/** Prunes every chain's prefix older than `cutoff` (epoch ms) with `chio_prune_chain`. */
export async function pruneBefore(db: PgClient, cutoff: number): Promise<ChainPrune[]> {
  try {
    const { rows } = await db.query<{ chain: string; through: number | null }>(
      `SELECT c.chain,
              coalesce((SELECT min(seq) - 1 FROM chio_receipts r WHERE r.chain = c.chain AND r.time_ms >= $1),
                       (SELECT max(seq) FROM chio_receipts r WHERE r.chain = c.chain)) AS through
         FROM chio_chains c ORDER BY c.chain`,
      [cutoff],
    );
    const out: ChainPrune[] = [];
    for (const { chain, through } of rows) {
      if (through === null || through < 1) {
        out.push({ chain, through: null, deleted: 0 });
        continue;
      }
      const { rows: done } = await db.query<{ deleted: number }>('SELECT chio_prune_chain($1, $2) AS deleted', [chain, through]);
      const deleted = Number(done[0]?.deleted ?? 0);
      // the function never deletes a chain's newest receipt: report where the chain now starts, not the cutoff's seq
      const { rows: first } = await db.query<{ first: number | null }>('SELECT min(seq) AS first FROM chio_receipts WHERE chain = $1', [chain]);
      const start = first[0]?.first;
      const actual = start === null || start === undefined ? through : Math.min(through, Number(start) - 1);
      out.push({ chain, through: deleted > 0 ? actual : null, deleted });
    }
    return out;
  } catch (err) {
    throw pgError(err, 'cannot prune the PostgreSQL receipt store');
  }
}

/**
 * `chio receipt verify --pg-url-env VAR [--chain ID]`: every chain of the central store. Prints one
 * line per chain (or JSON); exit 0 when all verify, 1 when one fails, 2 when the store cannot be read.
 */
export async function verifyCentral(urlEnv: string, keys: VerificationKeys, options: { json: boolean; chain?: string }, io: CliIO): Promise<number> {
  let db: PgClient;
  let url: string;
  try {
    url = pgUrlFromEnv(io.env, urlEnv, '--pg-url-env');
    db = await connectPgClient(url, { applicationName: 'chio receipt verify', statementTimeoutMs: 0 });
  } catch (err) {
    return failed(io, 'receipt verify', err);
  }
  let reports: ChainReport[];
  try {
    reports = await verifyCentralStore(new PgReceiptStore(db), keys, options.chain);
  } catch (err) {
    return failed(io, 'receipt verify', err);
  } finally {
    await db.end().catch(() => undefined);
  }
  const ok = reports.every((r) => r.ok);
  if (options.json) {
    io.stdout(`${JSON.stringify({ ok, chains: reports })}\n`);
  } else {
    const lines = reports.map((r) =>
      r.ok
        ? `chain ${r.chain}: OK: ${r.receipts} receipt(s) verified${r.headSeq === null ? '' : `, seq ${r.firstSeq} to ${r.headSeq}`}`
        : `chain ${r.chain}: FAILED\n  ${formatFailure(r.firstFailure ?? { line: 0, id: null, seq: null, code: 'receipt_malformed', message: 'unknown' })}\n  (${r.receipts} receipt(s) before it verified)`,
    );
    if (reports.length === 0) lines.push(options.chain === undefined ? 'no receipt chains in the store' : `no chain ${options.chain} in the store`);
    io.stdout(`${redactPgUrl(url)}: ${ok ? 'OK' : 'FAILED'}\n${lines.join('\n')}\n`);
  }
  if (options.chain !== undefined && reports.length === 0) return EXIT_CHECK_FAILED;
  return ok ? EXIT_OK : EXIT_CHECK_FAILED;
}
