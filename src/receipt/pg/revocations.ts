/**
 * Shared capability revocations in PostgreSQL (SPEC §7 "not revoked"; chio.yaml
 * `revocations: {type: postgres, url_env: CHIO_PG_URL}`; README "Several replicas, one PostgreSQL").
 *
 * `POST /v1/revocations` on any replica inserts the revocation (idempotent on the capability id)
 * and notifies channel `chio_revocations` in the same transaction (payload `<schema> <id>`, since
 * LISTEN/NOTIFY is per database and several schemas may share one). Every replica:
 *
 * - LISTENs on its own connection and, on a notification for its schema, reads that revocation:
 *   it is enforced within milliseconds of the commit;
 * - polls for new rows (`change` > the last seen) every `poll_seconds` as the safety net (a lost
 *   notification, a listener reconnecting), and re-reads the whole list every `full_reload_seconds`;
 * - when the database goes away, keeps enforcing the last list it read, reconnects with backoff,
 *   and re-reads everything once back. Revocations are never deleted, so the list only grows.
 *
 * Reads on the Check path (`has`) are a Map lookup: nothing waits for the database.
 */
import type { Logger } from '../../check/pipeline.js';
import type { Revocation } from '../../capability/revocations.js';
import { ChioError, describe } from '../../errors.js';
import { connectPgClient, createPgPool, endWithin, inTransaction, int8, pgError, type PgClient, type PgPool } from './connection.js';

export const REVOCATIONS_CHANNEL = 'chio_revocations';

export interface PgRevocationsOptions {
  readonly url: string;
  readonly log: Logger;
  /** safety-net poll period (default 1000 ms) */
  readonly pollMs?: number;
  /** full re-read period (default 30 s) */
  readonly fullReloadMs?: number;
  /** how long start() waits for the first read (default 5 s); after that the replica starts and keeps trying */
  readonly startTimeoutMs?: number;
}

interface RevocationRow {
  id: string;
  reason: string | null;
  revoked_ms: number;
  change: number;
}

const SELECT = 'SELECT id, reason, round(extract(epoch FROM revoked_at) * 1000)::int8 AS revoked_ms, change FROM chio_revocations';
const MAX_BACKOFF_MS = 10_000;

export class PgRevocations {
  readonly #o: PgRevocationsOptions;
  readonly #pool: PgPool;
  readonly #revoked = new Map<string, Revocation>();
  #schema: string | null = null;
  #lastChange = 0;
  #listener: PgClient | null = null;
  #pollTimer: NodeJS.Timeout | null = null;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #backoffMs = 250;
  #lastFull = 0;
  #reading: Promise<void> | null = null;
  #healthy = false;
  #closed = false;

  private constructor(options: PgRevocationsOptions) {
    this.#o = options;
    this.#pool = createPgPool(options.url, {
      max: 2,
      applicationName: 'chio-authz revocations',
      onError: (err) => options.log.warn({ err: describe(err) }, 'PostgreSQL revocations: an idle connection failed'),
    });
  }

  /**
   * Reads the list and starts listening. When the database cannot be reached within
   * startTimeoutMs the replica starts anyway (logged) and keeps trying in the background.
   */
  static async start(options: PgRevocationsOptions): Promise<PgRevocations> {
    const r = new PgRevocations(options);
    const first = r.#connectListener();
    const timeout = new Promise<false>((resolve) => setTimeout(() => resolve(false), options.startTimeoutMs ?? 5000).unref());
    if (!(await Promise.race([first, timeout]))) {
      options.log.error({}, 'PostgreSQL revocations: no answer at startup; starting with the local list only and retrying');
    }
    r.#pollTimer = setInterval(() => r.#poll(), options.pollMs ?? 1000);
    r.#pollTimer.unref();
    return r;
  }

  has(id: string): boolean {
    return this.#revoked.has(id);
  }

  get size(): number {
    return this.#revoked.size;
  }

  /** whether the last read from PostgreSQL succeeded */
  get healthy(): boolean {
    return this.#healthy;
  }

  list(): Revocation[] {
    return [...this.#revoked.values()];
  }

  /**
   * Records a revocation in PostgreSQL (and notifies every replica); applied here at once.
   * An id already revoked is not recorded again (`created: false`). Throws ChioError io_error
   * when the database cannot record it (the revocation is then NOT in effect anywhere).
   */
  async revoke(id: string, reason: string | null, now: number): Promise<{ revocation: Revocation; created: boolean }> {
    let outcome: { row: RevocationRow | undefined; created: boolean };
    try {
      outcome = await inTransaction(this.#pool, async (client) => {
        const inserted = await client.query<RevocationRow>(
          `INSERT INTO chio_revocations (id, reason, revoked_at) VALUES ($1, $2, to_timestamp($3::float8 / 1000)) ON CONFLICT (id) DO NOTHING
           RETURNING id, reason, round(extract(epoch FROM revoked_at) * 1000)::int8 AS revoked_ms, change`,
          [id, reason, now],
        );
        const created = inserted.rows[0];
        // delivered to every listener when the transaction commits
        if (created !== undefined) await client.query('SELECT pg_notify($1, current_schema() || $2)', [REVOCATIONS_CHANNEL, ` ${id}`]);
        const row = created ?? (await client.query<RevocationRow>(`${SELECT} WHERE id = $1`, [id])).rows[0];
        return { row, created: created !== undefined };
      });
    } catch (err) {
      throw pgError(err, 'cannot record the revocation in PostgreSQL');
    }
    if (outcome.row === undefined) throw new ChioError('io_error', `revocation ${id} was neither inserted nor found`);
    return { revocation: this.#apply(outcome.row), created: outcome.created };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#pollTimer !== null) clearInterval(this.#pollTimer);
    if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer);
    const listener = this.#listener;
    this.#listener = null;
    if (listener !== null) await endWithin(listener);
    await endWithin(this.#pool);
  }

  // ---- reading ----

  #apply(row: RevocationRow): Revocation {
    const existing = this.#revoked.get(row.id);
    const change = int8(row.change);
    if (change > this.#lastChange) this.#lastChange = change;
    if (existing !== undefined) return existing;
    const revocation: Revocation = { id: row.id, reason: row.reason, revokedAt: new Date(int8(row.revoked_ms)).toISOString() };
    this.#revoked.set(row.id, revocation);
    return revocation;
  }

  /** One read at a time: everything (full) or what is new since the last change seen. */
  #read(kind: 'full' | 'new' | { id: string }): Promise<void> {
    const previous = this.#reading ?? Promise.resolve();
    const run = async (): Promise<void> => {
      const { rows } =
        kind === 'full'
          ? await this.#pool.query<RevocationRow>(`${SELECT} ORDER BY change`)
          : kind === 'new'
            ? await this.#pool.query<RevocationRow>(`${SELECT} WHERE change > $1 ORDER BY change LIMIT 10000`, [this.#lastChange])
            : await this.#pool.query<RevocationRow>(`${SELECT} WHERE id = $1`, [kind.id]);
      const before = this.#revoked.size;
      for (const row of rows) this.#apply(row);
      if (kind === 'full') this.#lastFull = Date.now();
      if (!this.#healthy) this.#o.log.info({ revocations: this.#revoked.size }, 'PostgreSQL revocations: reading the shared list');
      this.#healthy = true;
      if (this.#revoked.size > before) this.#o.log.info({ added: this.#revoked.size - before, revocations: this.#revoked.size }, 'capability revocations updated from PostgreSQL');
    };
    const reading = previous.then(run, run);
    this.#reading = reading.catch(() => undefined);
    return reading;
  }

  #poll(): void {
    if (this.#closed) return;
    const full = Date.now() - this.#lastFull >= (this.#o.fullReloadMs ?? 30_000);
    this.#read(full ? 'full' : 'new').catch((err: unknown) => this.#unhealthy(err));
  }

  #unhealthy(err: unknown): void {
    if (this.#healthy) {
      this.#o.log.error({ err: describe(err), revocations: this.#revoked.size }, 'PostgreSQL revocations cannot be read; enforcing the last list read');
    }
    this.#healthy = false;
  }

  /** Connects the LISTEN connection, then reads everything (so nothing committed meanwhile is missed); false when that failed. */
  async #connectListener(): Promise<boolean> {
    if (this.#closed) return false;
    let connected: PgClient | null = null;
    try {
      const client = await connectPgClient(this.#o.url, {
        applicationName: 'chio-authz revocations listener',
        onError: (err) => {
          if (connected !== null) this.#lostListener(connected, err);
        },
      });
      connected = client;
      if (this.#closed) {
        await client.end().catch(() => undefined);
        return false;
      }
      this.#listener = client;
      client.on('notification', (msg) => this.#onNotification(msg.channel, msg.payload));
      client.on('end', () => this.#lostListener(client, new Error('connection ended')));
      this.#schema = (await client.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]?.s ?? null;
      await client.query(`LISTEN ${REVOCATIONS_CHANNEL}`);
      await this.#read('full');
      this.#backoffMs = 250;
      return true;
    } catch (err) {
      this.#unhealthy(err);
      this.#scheduleReconnect();
      return false;
    }
  }

  #onNotification(channel: string, payload: string | undefined): void {
    if (channel !== REVOCATIONS_CHANNEL || payload === undefined || this.#schema === null) return;
    const space = payload.lastIndexOf(' ');
    if (space < 0 || payload.slice(0, space) !== this.#schema) return;
    this.#read({ id: payload.slice(space + 1) }).catch((err: unknown) => this.#unhealthy(err));
  }

  #lostListener(client: PgClient, err: unknown): void {
    if (this.#listener !== client) return;
    this.#listener = null;
    client.end().catch(() => undefined);
    this.#unhealthy(err);
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#reconnectTimer !== null) return;
    const delay = this.#backoffMs * (0.5 + Math.random() / 2);
    this.#backoffMs = Math.min(this.#backoffMs * 2, MAX_BACKOFF_MS);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      void this.#connectListener();
    }, delay);
    this.#reconnectTimer.unref();
  }
}
