/**
 * Shared revocations (src/receipt/pg/revocations.ts): a revocation recorded through one replica is
 * enforced by another through LISTEN/NOTIFY within milliseconds (well inside the 2 s promise), the
 * poll catches what a notification missed, and a replica that loses the database keeps enforcing
 * the last list it read. Each replica talks through its own TCP proxy, cut and restored by the test.
 * Needs PostgreSQL (support/pg.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrate } from '../../src/receipt/pg/migrate.js';
import { PgRevocations, type PgRevocationsOptions } from '../../src/receipt/pg/revocations.js';
import { recordingLogger } from '../helpers/service.js';
import { createTestSchema, PgProxy, SKIP_PG, type TestSchema } from './support/pg.js';

const CAP = (n: number): string => `cap-01JD${String(n).padStart(22, '0')}`;
const NOW = Date.parse('2026-12-01T00:00:00.000Z');

async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return Date.now() - start;
}

describe.skipIf(SKIP_PG)('shared revocations in PostgreSQL', () => {
  let schema: TestSchema;
  const proxies: PgProxy[] = [];
  const lists: PgRevocations[] = [];

  beforeEach(async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
  });
  afterEach(async () => {
    for (const l of lists.splice(0)) await l.close();
    for (const p of proxies.splice(0)) await p.close();
    await schema.drop();
  });

  async function replica(options: Partial<PgRevocationsOptions> = {}): Promise<{ list: PgRevocations; proxy: PgProxy; log: ReturnType<typeof recordingLogger> }> {
    const proxy = await PgProxy.start();
    proxies.push(proxy);
    const log = recordingLogger();
    const list = await PgRevocations.start({ url: proxy.url(schema.schema), log, pollMs: 60_000, ...options });
    lists.push(list);
    return { list, proxy, log };
  }

  it('a revocation through one replica is enforced by another by notification, within milliseconds', async () => {
    const a = await replica();
    const b = await replica(); // polls only every minute: what it sees comes by LISTEN/NOTIFY
    expect(b.list.has(CAP(1))).toBe(false);
    const started = Date.now();
    const first = await a.list.revoke(CAP(1), 'key leaked', NOW);
    expect(first).toEqual({ created: true, revocation: { id: CAP(1), reason: 'key leaked', revokedAt: '2026-12-01T00:00:00.000Z' } });
    expect(a.list.has(CAP(1))).toBe(true);
    await until('replica b to see the revocation', () => b.list.has(CAP(1)), 2000);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(b.list.list()).toEqual([first.revocation]);
    const again = await b.list.revoke(CAP(1), 'another reason', NOW + 5000);
    expect(again).toEqual({ created: false, revocation: first.revocation });
    const { rows } = await schema.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM chio_revocations');
    expect(rows[0]?.n).toBe(1);
  });

  it('notifications of another schema on the same database are ignored', async () => {
    const b = await replica();
    await schema.admin.query("SELECT pg_notify('chio_revocations', 'some_other_schema cap-01JD0000000000000000000009')");
    await schema.admin.query("INSERT INTO chio_revocations (id, reason, revoked_at) VALUES ($1, NULL, now())", [CAP(9)]);
    await new Promise((r) => setTimeout(r, 150));
    expect(b.list.has(CAP(9))).toBe(false); // no notification for this schema, and the next poll is a minute away
    await schema.admin.query(`SELECT pg_notify('chio_revocations', $1)`, [`${schema.schema} ${CAP(9)}`]);
    await until('the notification for this schema', () => b.list.has(CAP(9)), 2000);
  });

  it('the poll catches a revocation whose notification was lost', async () => {
    const b = await replica({ pollMs: 100 });
    await schema.admin.query('INSERT INTO chio_revocations (id, reason, revoked_at) VALUES ($1, $2, now())', [CAP(2), 'inserted by hand, no NOTIFY']);
    await until('the poll to read it', () => b.list.has(CAP(2)), 2000);
  });

  it('a replica that loses the database keeps enforcing the last list it read, and catches up when it is back', async () => {
    const a = await replica();
    const b = await replica({ pollMs: 100 });
    await a.list.revoke(CAP(3), null, NOW);
    await until('b to see cap 3', () => b.list.has(CAP(3)), 2000);
    b.proxy.cut();
    await until('b to notice', () => !b.list.healthy, 2000);
    expect(b.list.has(CAP(3))).toBe(true);
    expect(b.log.entries.map((e) => e.msg)).toContain('PostgreSQL revocations cannot be read; enforcing the last list read');
    await a.list.revoke(CAP(4), null, NOW);
    await new Promise((r) => setTimeout(r, 300));
    expect(b.list.has(CAP(4))).toBe(false);
    expect(b.list.has(CAP(3))).toBe(true);
    b.proxy.restore();
    await until('b to catch up after the outage', () => b.list.has(CAP(4)), 2000);
  });

  it('a revocation that cannot be recorded fails loudly (it is in effect nowhere)', async () => {
    const a = await replica();
    a.proxy.cut();
    await expect(a.list.revoke(CAP(5), null, NOW)).rejects.toMatchObject({
      code: 'io_error',
      message: expect.stringMatching(/^cannot record the revocation in PostgreSQL: /) as unknown,
    });
    expect(a.list.has(CAP(5))).toBe(false);
  });

  it('a replica started while the database is away starts anyway, then reads the list', async () => {
    await schema.admin.query('INSERT INTO chio_revocations (id, reason, revoked_at) VALUES ($1, NULL, now())', [CAP(6)]);
    const proxy = await PgProxy.start();
    proxies.push(proxy);
    proxy.cut();
    const log = recordingLogger();
    const list = await PgRevocations.start({ url: proxy.url(schema.schema), log, pollMs: 100, startTimeoutMs: 300 });
    lists.push(list);
    expect(list.has(CAP(6))).toBe(false);
    expect(log.entries.map((e) => e.msg)).toContain('PostgreSQL revocations: no answer at startup; starting with the local list only and retrying');
    proxy.restore();
    await until('the list once the database is back', () => list.has(CAP(6)), 3000);
  });
});
