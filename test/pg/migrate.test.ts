/**
 * Schema migrations of the central store (src/receipt/pg/migrate.ts, `chio db migrate|status`):
 * applied once and in order, idempotent, safe when several migrators race, refused when the
 * applied SQL differs, and the startup check that names the fix. Needs PostgreSQL (support/pg.ts).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/index.js';
import { MIGRATIONS } from '../../src/receipt/pg/migrations/index.js';
import { migrate, migrationChecksum, requireCurrentSchema, schemaStatus, SCHEMA_VERSION } from '../../src/receipt/pg/migrate.js';
import { fakeIO } from '../helpers/cli-io.js';
import { createTestSchema, SKIP_PG, type TestSchema } from './support/pg.js';

describe.skipIf(SKIP_PG)('PostgreSQL schema migrations', () => {
  const schemas: TestSchema[] = [];
  const clients: pg.Client[] = [];
  async function fresh(): Promise<TestSchema> {
    const s = await createTestSchema();
    schemas.push(s);
    return s;
  }
  async function client(url: string): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    clients.push(c);
    return c;
  }
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    for (const s of schemas) await s.drop();
  });

  it('the migrations are numbered 1..n and the code needs the last one', () => {
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
    expect(SCHEMA_VERSION).toBe(MIGRATIONS.length);
    expect(SCHEMA_VERSION).toBeGreaterThanOrEqual(2);
  });

  it('applies every migration once, in order; a second run applies nothing', async () => {
    const s = await fresh();
    expect(await schemaStatus(s.admin)).toEqual({ current: 0, latest: SCHEMA_VERSION, schema: s.schema });
    const first = await migrate(s.admin);
    expect(first).toEqual({ current: SCHEMA_VERSION, latest: SCHEMA_VERSION, schema: s.schema, applied: MIGRATIONS.map((m) => m.version) });
    const again = await migrate(s.admin);
    expect(again.applied).toEqual([]);
    const { rows } = await s.admin.query<{ version: number; checksum: string }>('SELECT version, checksum FROM chio_schema_migrations ORDER BY version');
    expect(rows).toEqual(MIGRATIONS.map((m) => ({ version: m.version, checksum: migrationChecksum(m) })));
    const tables = await s.admin.query<{ t: string }>(
      "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
      [s.schema],
    );
    expect(tables.rows.map((r) => r.t)).toEqual(['chio_chains', 'chio_receipts', 'chio_revocations', 'chio_schema_migrations']);
  });

  it('three migrators racing on one schema apply each migration exactly once', async () => {
    const s = await fresh();
    const racers = await Promise.all([client(s.url), client(s.url), client(s.url)]);
    const results = await Promise.all(racers.map((c) => migrate(c)));
    expect(results.flatMap((r) => r.applied).sort()).toEqual(MIGRATIONS.map((m) => m.version));
    for (const r of results) expect(r.current).toBe(SCHEMA_VERSION);
  });

  it('the startup check refuses an older schema and names the command that fixes it', async () => {
    const s = await fresh();
    await migrate(s.admin, MIGRATIONS.slice(0, 1));
    await expect(requireCurrentSchema(s.admin, 'CHIO_PG_URL')).rejects.toMatchObject({
      code: 'config_invalid',
      message: `the PostgreSQL schema "${s.schema}" is at version 1, this chio needs version ${SCHEMA_VERSION}: run \`chio db migrate --url-env CHIO_PG_URL\` first`,
    });
    await migrate(s.admin);
    await expect(requireCurrentSchema(s.admin, 'CHIO_PG_URL')).resolves.toMatchObject({ current: SCHEMA_VERSION });
  });

  it('refuses a database whose applied migration differs from the one shipped', async () => {
    const s = await fresh();
    await migrate(s.admin);
    await s.admin.query("UPDATE chio_schema_migrations SET checksum = 'sha256:00' WHERE version = 1");
    const expected = {
      code: 'config_invalid',
      message: expect.stringContaining('migration 1 (receipts) was applied with different SQL than this chio ships (checksum sha256:00)') as unknown,
    };
    await expect(schemaStatus(s.admin)).rejects.toMatchObject(expected);
    await expect(migrate(s.admin)).rejects.toMatchObject(expected);
  });

  describe('chio db', () => {
    let s: TestSchema;
    beforeAll(async () => {
      s = await fresh();
    });

    it('migrate applies, then reports the schema current; status shows the version', async () => {
      const io = fakeIO('/', { PG: s.url });
      expect(await main(['db', 'migrate', '--url-env', 'PG'], io)).toBe(0);
      expect(io.out).toBe(`schema "${s.schema}": version ${SCHEMA_VERSION} of ${SCHEMA_VERSION}, applied ${MIGRATIONS.map((m) => m.version).join(', ')}\n`);
      const again = fakeIO('/', { PG: s.url });
      expect(await main(['db', 'migrate', '--url-env', 'PG', '--json'], again)).toBe(0);
      expect(JSON.parse(again.out)).toEqual({ current: SCHEMA_VERSION, latest: SCHEMA_VERSION, schema: s.schema, applied: [] });
      const status = fakeIO('/', { CHIO_PG_URL: s.url });
      expect(await main(['db', 'status'], status)).toBe(0);
      expect(status.out).toBe(`schema "${s.schema}": version ${SCHEMA_VERSION} (this chio needs ${SCHEMA_VERSION})\nno receipt chains\n`);
    });

    it('a missing URL variable or an unreachable server is exit 2 with the reason', async () => {
      const unset = fakeIO('/', {});
      expect(await main(['db', 'migrate', '--url-env', 'NOPE'], unset)).toBe(2);
      expect(unset.err).toBe('chio db migrate: config_invalid: --url-env names NOPE, which is not set or empty (expected postgres://user@host:5432/db)\n');
      const notPg = fakeIO('/', { PG: 'mysql://x@127.0.0.1/db' });
      expect(await main(['db', 'status', '--url-env', 'PG'], notPg)).toBe(2);
      expect(notPg.err).toBe('chio db status: config_invalid: $PG must be a postgres:// URL, not mysql://…\n');
      const down = fakeIO('/', { PG: 'postgres://postgres@127.0.0.1:1/test' });
      expect(await main(['db', 'status', '--url-env', 'PG'], down)).toBe(2);
      expect(down.err).toMatch(/^chio db status: io_error: cannot connect to PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/test: .*ECONNREFUSED/);
    });

    it('bad usage is exit 2 with the help', async () => {
      const io = fakeIO('/', {});
      expect(await main(['db', 'migrate', '--url', 'x'], io)).toBe(2);
      expect(io.err).toContain("chio db migrate: Unknown option '--url'");
      expect(io.err).toContain('usage: chio db migrate');
    });
  });
});
