/**
 * The PostgreSQL parts of chio.yaml (SPEC §2.1; README "Several replicas, one PostgreSQL"):
 *
 * ```yaml
 * receipts:
 *   sinks:
 *     - { type: jsonl, path: ./data/receipts.jsonl }        # the local log: the source of truth
 *     - { type: postgres, url_env: CHIO_PG_URL }            # shipped asynchronously, queried centrally
 * revocations: { type: postgres, url_env: CHIO_PG_URL }     # shared capability revocations
 * ```
 *
 * A postgres entry is not a sink on the durability path: it is split out of `receipts.sinks` when
 * the config is parsed (`receipts.postgres`), so `receipts.sinks` keeps only local sinks, and at
 * least one of them is required (it is what the shipper tails).
 */
import { z } from 'zod';
import { DEFAULT_URL_ENV, ENV_NAME } from './connection.js';

const envName = z.string().regex(ENV_NAME, 'expected an environment variable name (the URL itself never goes in chio.yaml)');

export const postgresSinkSchema = z.strictObject({
  type: z.literal('postgres'),
  /** the environment variable holding postgres://… */
  url_env: envName.default(DEFAULT_URL_ENV),
  /** receipts per INSERT */
  batch_size: z.int().min(1).max(10_000).default(1000),
  /** receipts kept in memory while PostgreSQL is slow or away (then re-read from the local log) */
  buffer_receipts: z.int().min(0).max(1_000_000).default(20_000),
});
export type PostgresSinkConfig = z.infer<typeof postgresSinkSchema>;

export const revocationsConfigSchema = z
  .strictObject({
    type: z.literal('postgres'),
    url_env: envName.default(DEFAULT_URL_ENV),
    /** safety-net poll behind LISTEN/NOTIFY */
    poll_seconds: z.number().min(0.1).max(60).default(1),
  })
  .optional();
export type RevocationsConfig = NonNullable<z.infer<typeof revocationsConfigSchema>>;

/** `receipts.sinks` with the postgres entry taken out into `postgres` (null without one). */
export function splitSinks<S extends { readonly type: string }>(
  sinks: ReadonlyArray<S | PostgresSinkConfig>,
): { sinks: Array<Exclude<S, { type: 'postgres' }>>; postgres: PostgresSinkConfig | null } {
  const isPostgres = (s: S | PostgresSinkConfig): s is PostgresSinkConfig => s.type === 'postgres';
  return {
    sinks: sinks.filter((s) => !isPostgres(s)) as Array<Exclude<S, { type: 'postgres' }>>,
    postgres: sinks.find(isPostgres) ?? null,
  };
}

/** Refinements of `receipts.sinks` for the postgres entry: at most one, and never alone. */
export function checkPostgresSinks(sinks: ReadonlyArray<{ readonly type: string }>, ctx: z.RefinementCtx): void {
  const pg = sinks.filter((s) => s.type === 'postgres').length;
  if (pg > 1) ctx.addIssue({ code: 'custom', message: 'at most one postgres sink' });
  if (pg > 0 && pg === sinks.length) {
    ctx.addIssue({ code: 'custom', message: 'a postgres sink ships the receipts of a local log: add a jsonl or sqlite sink too' });
  }
}
