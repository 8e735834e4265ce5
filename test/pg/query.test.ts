/**
 * "Same answers": the central PostgreSQL store (src/receipt/pg/query.ts, store.ts) answers every
 * query exactly as the embedded SQLite store (src/receipt/query.ts, store.ts) when both hold the
 * same chain — every filter alone and combined, every page and cursor — and across several chains
 * it follows the documented total order (time, chain, seq), checked against a plain oracle.
 * Needs PostgreSQL (support/pg.ts).
 */
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { insertReceipts, registerChain } from '../../src/receipt/pg/insert.js';
import { migrate } from '../../src/receipt/pg/migrate.js';
import { decodeCentralCursor, encodeCentralCursor, parseCentralQuery, type CentralQuery } from '../../src/receipt/pg/query.js';
import { sealedRow } from '../../src/receipt/pg/receipt-row.js';
import { PgReceiptStore } from '../../src/receipt/pg/store.js';
import { parseReceiptQuery, type ReceiptPage } from '../../src/receipt/query.js';
import { ReceiptChain, type Receipt, type SealedReceipt } from '../../src/receipt/receipt.js';
import { SqliteReceiptStore } from '../../src/receipt/store.js';
import { pathHasSegmentPrefix } from '../../src/spiffe/id.js';
import { KEY, sealedReceipts, T0, tempDir, variedDraft, WORKLOADS } from '../receipt/helpers.js';
import { createTestSchema, SKIP_PG, type TestSchema } from './support/pg.js';

const COUNT = 1200;

/** Filter sets exercised: every parameter alone with each of its values, combinations, time windows. */
function queries(): Array<Array<[string, string]>> {
  const out: Array<Array<[string, string]>> = [[]];
  for (const w of WORKLOADS) {
    if (w === null) continue;
    out.push([['workloadUri', `spiffe://${w.trustDomain}${w.path}`]]);
    out.push([['pathPrefix', w.path]]);
  }
  out.push([['pathPrefix', '/payments']], [['pathPrefix', '/payments/worker']], [['pathPrefix', '/nothing']]);
  for (const td of ['prod.chio', 'staging.chio', 'absent.chio']) out.push([['trustDomain', td]]);
  for (const v of ['allow', 'deny']) out.push([['verdict', v]]);
  for (const r of ['payments_write', 'orders', 'none_such']) out.push([['rule', r]]);
  for (const t of ['transfer_funds', 'list_orders', 'reconcile_ledger']) out.push([['tool', t]]);
  for (const t of ['none', 'basic', 'attested', 'verified']) out.push([['tier', t]]);
  out.push([['capabilityId', `cap-${String(0).padStart(26, '0')}`]], [['capabilityId', `cap-${String(5).padStart(26, '0')}`]]);
  const iso = (minutes: number): string => new Date(T0 + minutes * 60_000).toISOString();
  out.push([['since', iso(100)]], [['until', iso(100)]], [['since', iso(100)], ['until', iso(700)]]);
  out.push([['since', '2026-11-24T01:40:00.000000001Z']]);
  out.push([['verdict', 'allow'], ['trustDomain', 'prod.chio'], ['pathPrefix', '/payments/worker']]);
  out.push([['tool', 'transfer_funds'], ['tier', 'attested'], ['since', iso(10)], ['until', iso(1000)]]);
  out.push([['rule', 'orders'], ['verdict', 'deny'], ['workloadUri', 'spiffe://prod.chio/payments/worker']]);
  return out;
}

/** Every page of a query (walking the cursors) with `limit`, through `page`. */
async function walk(params: Array<[string, string]>, limit: number, page: (p: Array<[string, string]>) => Promise<ReceiptPage>): Promise<ReceiptPage[]> {
  const pages: ReceiptPage[] = [];
  let cursor: string | null = null;
  do {
    const p = await page([...params, ['limit', String(limit)], ...(cursor === null ? [] : ([['cursor', cursor]] as Array<[string, string]>))]);
    pages.push(p);
    cursor = p.nextCursor;
  } while (cursor !== null && pages.length < 10_000);
  return pages;
}

/** A page without its cursor text (opaque, different per store): the receipts and whether more follow. */
const shape = (pages: readonly ReceiptPage[]): Array<{ receipts: readonly string[]; more: boolean }> => pages.map((p) => ({ receipts: p.receipts, more: p.nextCursor !== null }));

describe.skipIf(SKIP_PG)('the central store answers like the embedded store', () => {
  let schema: TestSchema;
  let central: PgReceiptStore;
  let sqlite: SqliteReceiptStore;
  let chainId: string;

  beforeAll(async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
    central = new PgReceiptStore(schema.admin);
    const sealed = sealedReceipts(COUNT);
    chainId = (sealed[0]?.receipt as { chain: string }).chain;
    sqlite = SqliteReceiptStore.open(path.join(tempDir('chio-pg-query-'), 'receipts.db'), { writable: true });
    for (let i = 0; i < COUNT; i += 300) await sqlite.append(sealed.slice(i, i + 300));
    await registerChain(schema.admin, chainId, 1, null);
    // shipped in uneven batches, one batch twice (a retry): the store holds each receipt once
    for (const [from, to] of [[0, 1], [1, 500], [500, 501], [400, 900], [900, COUNT]] as const) {
      await insertReceipts(schema.admin, chainId, sealed.slice(from, to).map((s) => sealedRow(s, chainId)));
    }
  });
  afterAll(async () => {
    sqlite?.close();
    await schema?.drop();
  });

  it('holds every receipt exactly once', async () => {
    const { rows } = await schema.admin.query<{ n: number; distinct_ids: number }>('SELECT count(*)::int AS n, count(DISTINCT id)::int AS distinct_ids FROM chio_receipts');
    expect(rows[0]).toEqual({ n: COUNT, distinct_ids: COUNT });
  });

  it('every filter, alone and combined, gives the same pages with limits 1, 7, 50 and 500', async () => {
    let compared = 0;
    for (const params of queries()) {
      for (const limit of [1, 7, 50, 500]) {
        if (limit === 1 && params.length === 0) continue; // 1,200 single-receipt pages: covered by the others
        const embedded = await walk(params, limit, (p) => sqlite.query(parseReceiptQuery(p)));
        const pg = await walk(params, limit, (p) => central.query(parseCentralQuery(p)));
        expect(shape(pg), JSON.stringify(params) + ` limit ${limit}`).toEqual(shape(embedded));
        compared += embedded.reduce((n, p) => n + p.receipts.length, 0);
      }
    }
    expect(compared).toBeGreaterThan(10_000);
  });

  it('a receipt by id is the same exact text; an unknown id is null', async () => {
    const [first] = (await sqlite.query(parseReceiptQuery([['limit', '1']]))).receipts;
    const id = (JSON.parse(first ?? '{}') as { id: string }).id;
    expect(await central.get(id)).toBe(await sqlite.get(id));
    expect(await central.get('rct-00000000000000000000000000')).toBeNull();
  });

  it('knows the chain with its seq range', async () => {
    expect(await central.chains()).toEqual([{ chain: chainId, firstSeq: 1, firstPrevHash: null, receipts: COUNT, headSeq: COUNT }]);
  });
});

describe.skipIf(SKIP_PG)('several chains: the total order (time, chain, seq)', () => {
  let schema: TestSchema;
  let central: PgReceiptStore;
  const all: Array<{ chain: string; r: Receipt; jcs: string }> = [];

  beforeAll(async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
    central = new PgReceiptStore(schema.admin);
    // three replicas: two share timestamps (ties broken by chain, then seq), one's clock steps back
    const clocks: Array<(n: number) => number> = [(n) => T0 + Math.floor(n / 3) * 1000, (n) => T0 + Math.floor(n / 3) * 1000, (n) => T0 + (n % 50) * 777];
    let i = 0;
    for (const clock of clocks) {
      let n = 0;
      const chain = new ReceiptChain({ key: KEY, clock: () => clock(n), head: null });
      const sealed: SealedReceipt[] = [];
      for (; n < 300; n++, i++) sealed.push(chain.seal(variedDraft(i)));
      await registerChain(schema.admin, chain.chainId, 1, null);
      await insertReceipts(schema.admin, chain.chainId, sealed.map((s) => sealedRow(s, chain.chainId)));
      for (const s of sealed) all.push({ chain: chain.chainId, r: s.receipt as Receipt, jcs: s.jcs });
    }
  });
  afterAll(async () => {
    await schema?.drop();
  });

  function oracle(q: CentralQuery): string[] {
    const order = (a: (typeof all)[number], b: (typeof all)[number]): number => {
      const ta = Date.parse(a.r.timestamp);
      const tb = Date.parse(b.r.timestamp);
      if (ta !== tb) return ta - tb;
      if (a.chain !== b.chain) return a.chain < b.chain ? -1 : 1;
      return a.r.seq - b.r.seq;
    };
    return all
      .filter(({ r }) => {
        const wi = r.runtimeAttestation.workloadIdentity;
        const t = Date.parse(r.timestamp);
        return (
          (q.workloadUri === undefined || wi?.uri === q.workloadUri) &&
          (q.trustDomain === undefined || wi?.trustDomain === q.trustDomain) &&
          (q.pathPrefix === undefined || (wi != null && pathHasSegmentPrefix(wi.path, q.pathPrefix))) &&
          (q.verdict === undefined || r.verdict === q.verdict) &&
          (q.rule === undefined || r.rule === q.rule) &&
          (q.tool === undefined || r.tool === q.tool) &&
          (q.capabilityId === undefined || r.capabilityId === q.capabilityId) &&
          (q.tier === undefined || r.runtimeAttestation.tier === q.tier) &&
          (q.since === undefined || t >= q.since) &&
          (q.until === undefined || t < q.until)
        );
      })
      .sort(order)
      .map((x) => x.jcs);
  }

  it('every filter walks all chains in (time, chain, seq) order, each receipt once', async () => {
    for (const params of queries()) {
      for (const limit of [13, 500]) {
        const pages = await walk(params, limit, (p) => central.query(parseCentralQuery(p)));
        expect(pages.flatMap((p) => p.receipts), JSON.stringify(params)).toEqual(oracle(parseCentralQuery(params)));
        for (const p of pages.slice(0, -1)) expect(p.receipts).toHaveLength(limit);
      }
    }
  });
});

describe('the central cursor', () => {
  it('round-trips any position and is opaque base64url', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.stringMatching(/^chn-[0-7][0-9A-HJKMNP-TV-Z]{25}$/),
        (timeMs, seq, chain) => {
          const cursor = encodeCentralCursor({ timeMs, seq, chain });
          expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
          expect(decodeCentralCursor(cursor)).toEqual({ timeMs, seq, chain });
        },
      ),
    );
  });

  it('refuses anything it did not make, as a 400 naming the cursor parameter', () => {
    const bad = (text: string): string => Buffer.from(text, 'utf8').toString('base64url');
    const good = encodeCentralCursor({ timeMs: 5, seq: 2, chain: 'chn-01JDX3AAAAAAAAAAAAAAAAAAAA' });
    for (const cursor of [
      '',
      '!!',
      `${good}=`,
      bad('chio.cursor.v1:5'),
      bad('chio.cursor.pg.v1:5:0:chn-x'),
      bad('chio.cursor.pg.v1:05:1:chn-x'),
      bad('chio.cursor.pg.v1:-5:1:chn-x'),
      bad('chio.cursor.pg.v1:5:1:'),
      bad('chio.cursor.pg.v1:5:1:a b'),
      bad('chio.cursor.pg.v1:99999999999999999:1:c'),
      'A'.repeat(300),
    ]) {
      let error: unknown;
      try {
        parseCentralQuery([['cursor', cursor]]);
      } catch (err) {
        error = err;
      }
      expect(error, cursor).toBeInstanceOf(ChioError);
      expect((error as ChioError).toJSON()).toEqual({
        code: 'bad_request',
        message: 'query parameter cursor: cursor is not a cursor returned by this API (nextCursor)',
        field: 'cursor',
      });
    }
  });

  it('validates the other parameters exactly as the embedded API (same errors)', () => {
    const cases: Array<Array<[string, string]>> = [
      [['verdict', 'maybe']],
      [['limit', '0']],
      [['limit', '501']],
      [['since', 'yesterday']],
      [['since', '2026-11-24T00:00:00Z'], ['until', '2026-11-23T00:00:00Z']],
      [['workloadUri', 'spiffe://prod.chio/a/../b']],
      [['bogus', 'x']],
      [['tool', 'a'], ['tool', 'b']],
    ];
    for (const params of cases) {
      const embedded = (() => {
        try {
          parseReceiptQuery(params);
        } catch (err) {
          return (err as ChioError).toJSON();
        }
        return null;
      })();
      expect(embedded, JSON.stringify(params)).not.toBeNull();
      expect(() => parseCentralQuery(params)).toThrow(expect.objectContaining(embedded as object) as Error);
    }
    expect(() => parseCentralQuery([['cursor', 'a'], ['cursor', 'b']])).toThrow('query parameter "cursor" is given more than once');
  });
});
