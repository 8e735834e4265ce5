/**
 * The query API's filters, cursor and validation (src/receipt/query.ts) against a store seeded with
 * 1,200 varied receipts; every result is compared with a plain filter over the receipts (the oracle).
 */
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TIERS } from '../../src/attestation/tier.js';
import { ChioError } from '../../src/errors.js';
import {
  decodeCursor,
  encodeCursor,
  escapeLike,
  parseReceiptQuery,
  parseRfc3339,
  type ReceiptQuery,
} from '../../src/receipt/query.js';
import type { AnyReceipt, Receipt, SealedReceipt } from '../../src/receipt/receipt.js';
import { SqliteSink } from '../../src/receipt/sinks/sqlite.js';
import { SqliteReceiptStore, type ReceiptStore } from '../../src/receipt/store.js';
import { pathHasSegmentPrefix } from '../../src/spiffe/id.js';
import { CHAIN, sealedReceipts, T0, tempDir, WORKLOADS } from './helpers.js';

const COUNT = 1200;
let sealed: SealedReceipt[];
let store: SqliteReceiptStore;
let sink: SqliteSink;

beforeAll(async () => {
  const file = path.join(tempDir(), 'receipts.db');
  sealed = sealedReceipts(COUNT);
  store = SqliteReceiptStore.open(file, { writable: true });
  for (let i = 0; i < COUNT; i += 300) await store.append(sealed.slice(i, i + 300));
  sink = new SqliteSink(file);
  await sink.open();
});
afterAll(async () => {
  store?.close();
  await sink?.close();
});

function matches(r: AnyReceipt, q: ReceiptQuery): boolean {
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
    (q.until === undefined || t < q.until) &&
    (q.afterSeq === undefined || r.seq > q.afterSeq)
  );
}

function expected(q: ReceiptQuery): string[] {
  return sealed.filter((s) => matches(s.receipt, q)).map((s) => s.jcs);
}

/** Every page of a query, following nextCursor. */
async function allPages(s: ReceiptStore, q: ReceiptQuery): Promise<{ receipts: string[]; pages: number }> {
  const receipts: string[] = [];
  let pages = 0;
  let cursor: string | null = null;
  do {
    const page = await s.query(cursor === null ? q : { ...q, afterSeq: decodeCursor(cursor) });
    pages++;
    expect(page.receipts.length).toBeLessThanOrEqual(q.limit);
    receipts.push(...page.receipts);
    cursor = page.nextCursor;
  } while (cursor !== null);
  return { receipts, pages };
}

const at = (minutes: number): number => T0 + minutes * 60_000;

describe('receipt queries on a seeded store', () => {
  const single: Array<[string, ReceiptQuery]> = [
    ['workloadUri (exact)', { workloadUri: 'spiffe://prod.chio/payments/worker', limit: 500 }],
    ['trustDomain', { trustDomain: 'staging.chio', limit: 500 }],
    ['pathPrefix /payments/worker: itself and below, never /payments/workerX', { pathPrefix: '/payments/worker', limit: 500 }],
    ['pathPrefix with `_` (a LIKE wildcard, escaped)', { pathPrefix: '/payments/my_worker', limit: 500 }],
    ['pathPrefix is case-sensitive', { pathPrefix: '/Payments', limit: 500 }],
    ['verdict', { verdict: 'deny', limit: 500 }],
    ['rule', { rule: 'orders', limit: 500 }],
    ['tool', { tool: 'reconcile_ledger', limit: 500 }],
    ['capabilityId', { capabilityId: `cap-${'5'.padStart(26, '0')}`, limit: 500 }],
    ['tier', { tier: 'verified', limit: 500 }],
    ['since (inclusive)', { since: at(1000), limit: 500 }],
    ['until (exclusive)', { until: at(10), limit: 500 }],
    ['AND of several', { trustDomain: 'prod.chio', pathPrefix: '/payments', verdict: 'allow', rule: 'orders', tier: 'attested', since: at(100), until: at(900), limit: 500 }],
  ];
  it.each(single)('%s', async (_, q) => {
    const want = expected(q);
    expect(want.length).toBeGreaterThan(0);
    expect(want.length).toBeLessThan(COUNT);
    expect((await store.query(q)).receipts).toEqual(want);
  });

  it('pathPrefix matches whole segments only, escapes LIKE wildcards and is case-sensitive', async () => {
    const paths = async (pathPrefix: string): Promise<string[]> =>
      [...new Set((await allPages(store, { pathPrefix, limit: 500 })).receipts.map((t) => (JSON.parse(t) as Receipt).runtimeAttestation.workloadIdentity?.path ?? ''))].sort();
    expect(await paths('/payments/worker')).toEqual(['/payments/worker', '/payments/worker/shard-1']);
    expect(await paths('/payments/my_worker')).toEqual(['/payments/my_worker']);
    expect(await paths('/Payments')).toEqual(['/Payments/Worker']);
    expect(await paths('/payments/work')).toEqual([]);
  });

  it('pages through 1,000+ receipts in seq order with no duplicates and no gaps (every page size)', async () => {
    for (const limit of [1, 37, 50, 500]) {
      const { receipts, pages } = await allPages(store, { limit });
      expect(receipts).toEqual(sealed.map((s) => s.jcs));
      expect(pages).toBe(Math.ceil(COUNT / limit));
    }
    const q: ReceiptQuery = { trustDomain: 'prod.chio', verdict: 'allow', limit: 41 };
    expect((await allPages(store, q)).receipts).toEqual(expected(q));
  });

  it('the last page has no cursor; an exactly full last page too', async () => {
    const first = await store.query({ limit: 500, afterSeq: 700 });
    expect(first.receipts).toHaveLength(500);
    expect(first.nextCursor).toBeNull();
    const mid = await store.query({ limit: 500, afterSeq: 100 });
    expect(mid.nextCursor).toBe(encodeCursor(600));
  });

  it('any combination of filters returns exactly what the oracle does (property)', async () => {
    const workloads = WORKLOADS.filter((w) => w !== null);
    const arbQuery: fc.Arbitrary<ReceiptQuery> = fc.record(
      {
        workloadUri: fc.constantFrom(...workloads.map((w) => `spiffe://${w.trustDomain}${w.path}`)),
        trustDomain: fc.constantFrom('prod.chio', 'staging.chio', 'other.chio'),
        pathPrefix: fc.constantFrom('/payments', '/payments/worker', '/payments/my_worker', '/Payments/Worker', '/payments/workerX'),
        verdict: fc.constantFrom('allow' as const, 'deny' as const),
        rule: fc.constantFrom('payments_write', 'orders'),
        tool: fc.constantFrom('transfer_funds', 'list_orders', 'reconcile_ledger'),
        tier: fc.constantFrom(...TIERS),
        since: fc.integer({ min: 0, max: COUNT }).map(at),
        until: fc.integer({ min: 0, max: COUNT }).map(at),
        afterSeq: fc.integer({ min: 0, max: COUNT }),
        limit: fc.integer({ min: 1, max: 500 }),
      },
      { requiredKeys: ['limit'] },
    );
    await fc.assert(
      fc.asyncProperty(arbQuery, async (q) => {
        const page = await store.query(q);
        const want = expected(q);
        expect(page.receipts).toEqual(want.slice(0, q.limit));
        expect(page.nextCursor === null).toBe(want.length <= q.limit);
      }),
      { numRuns: 150 },
    );
  });

  it('SqliteSink answers the same queries from its reader thread, and by id', async () => {
    const q: ReceiptQuery = { pathPrefix: '/payments/worker', since: at(200), limit: 60 };
    expect((await allPages(sink, q)).receipts).toEqual(expected(q));
    const r = sealed[777];
    expect(await sink.get(r?.receipt.id ?? '')).toBe(r?.jcs);
    expect(await sink.head()).toEqual({ seq: COUNT, hash: sealed[COUNT - 1]?.hash, chain: CHAIN });
    expect(await sink.firstSeq()).toBe(1);
  });

  it('iterateBySeq yields {seq, jcs} in order over a range, across pages', async () => {
    const got: number[] = [];
    for await (const r of store.iterateBySeq(5, 1105)) {
      expect(r.jcs).toBe(sealed[r.seq - 1]?.jcs);
      got.push(r.seq);
    }
    expect(got).toEqual(Array.from({ length: 1101 }, (_, i) => i + 5));
    const tail: number[] = [];
    for await (const r of sink.iterateBySeq(1195)) tail.push(r.seq);
    expect(tail).toEqual([1195, 1196, 1197, 1198, 1199, 1200]);
  });
});

describe('pruneThrough', () => {
  it('deletes a seq range from the start, never the newest receipt, and the chain head stays', async () => {
    const file = path.join(tempDir(), 'prune.db');
    const s = SqliteReceiptStore.open(file, { writable: true });
    const batch = sealedReceipts(30);
    await s.append(batch);
    expect(await s.pruneThrough(10)).toBe(10);
    expect(await s.firstSeq()).toBe(11);
    expect(await s.pruneThrough(10)).toBe(0);
    expect(await s.pruneThrough(1000)).toBe(19);
    expect(await s.head()).toEqual({ seq: 30, hash: batch[29]?.hash, chain: CHAIN });
    s.close();

    const w = new SqliteSink(file);
    expect(await w.open()).toEqual({ seq: 30, hash: batch[29]?.hash, chain: CHAIN });
    const more = sealedReceipts(5, { seq: 30, hash: batch[29]?.hash ?? '' });
    await w.write(more, true);
    expect(await w.pruneThrough(33)).toBe(4); // 30 (left by the first prune), 31, 32, 33
    const left: number[] = [];
    for await (const r of w.iterateBySeq(0)) left.push(r.seq);
    expect(left).toEqual([34, 35]);
    await w.close();
  });
});

describe('parseReceiptQuery', () => {
  const bad = (params: Record<string, string> | Array<[string, string]>): ChioError => {
    try {
      parseReceiptQuery(Array.isArray(params) ? params : Object.entries(params));
    } catch (err) {
      if (err instanceof ChioError) return err;
      throw err;
    }
    throw new Error(`accepted ${JSON.stringify(params)}`);
  };

  it('accepts every filter and converts times and the cursor', () => {
    expect(
      parseReceiptQuery(
        Object.entries({
          workloadUri: 'spiffe://prod.chio/payments/worker',
          trustDomain: 'prod.chio',
          pathPrefix: '/payments/worker',
          verdict: 'allow',
          rule: 'payments_write',
          tool: 'transfer_funds',
          capabilityId: 'cap-01JD0000000000000000000000',
          tier: 'attested',
          since: '2026-11-24T00:00:00Z',
          until: '2026-11-25T01:00:00+01:00',
          cursor: encodeCursor(42),
          limit: '500',
        }),
      ),
    ).toEqual({
      workloadUri: 'spiffe://prod.chio/payments/worker',
      trustDomain: 'prod.chio',
      pathPrefix: '/payments/worker',
      verdict: 'allow',
      rule: 'payments_write',
      tool: 'transfer_funds',
      capabilityId: 'cap-01JD0000000000000000000000',
      tier: 'attested',
      since: Date.UTC(2026, 10, 24),
      until: Date.UTC(2026, 10, 25),
      afterSeq: 42,
      limit: 500,
    });
    expect(parseReceiptQuery([])).toEqual({ limit: 50 });
  });

  it.each([
    ['workloadUri', 'spiffe://prod.chio/payments/../x', 'query parameter workloadUri: SPIFFE ID "spiffe://prod.chio/payments/../x": '],
    ['workloadUri', 'https://prod.chio/x', 'query parameter workloadUri: SPIFFE ID "https://prod.chio/x": '],
    ['trustDomain', 'Prod.Chio', 'query parameter trustDomain: trust domain "Prod.Chio": '],
    ['trustDomain', 'spiffe://prod.chio', 'query parameter trustDomain: expected a bare trust domain name, e.g. prod.chio'],
    ['pathPrefix', 'payments', 'query parameter pathPrefix: expected a SPIFFE path starting with /, e.g. /payments/worker'],
    ['pathPrefix', '/payments/', 'query parameter pathPrefix: SPIFFE path "/payments/": '],
    ['pathPrefix', '/pay%ments', 'query parameter pathPrefix: SPIFFE path "/pay%ments": '],
    ['verdict', 'maybe', 'query parameter verdict: '],
    ['rule', '', 'query parameter rule: must not be empty'],
    ['tool', 'x'.repeat(257), 'query parameter tool: at most 256 characters'],
    ['capabilityId', '', 'query parameter capabilityId: must not be empty'],
    ['capabilityId', 'xyz', 'query parameter capabilityId: expected a capability id (cap-<ULID>)'],
    ['tier', 'gold', 'query parameter tier: '],
    ['since', 'yesterday', 'query parameter since: expected an RFC 3339 date-time, e.g. 2026-11-24T00:00:00Z'],
    ['since', '2026-11-24', 'query parameter since: expected an RFC 3339 date-time'],
    ['until', '2026-02-30T00:00:00Z', 'query parameter until: expected an RFC 3339 date-time'],
    ['until', '2026-11-24T00:00:60Z', 'query parameter until: expected an RFC 3339 date-time'],
    ['cursor', 'abc', 'query parameter cursor: cursor is not a cursor returned by this API (nextCursor)'],
    ['cursor', Buffer.from('chio.cursor.v1:0').toString('base64url'), 'query parameter cursor: cursor is not a cursor'],
    ['cursor', `${encodeCursor(5)}=`, 'query parameter cursor: cursor is not a cursor'],
    ['limit', '0', 'query parameter limit: expected an integer from 1 to 500'],
    ['limit', '501', 'query parameter limit: at most 500'],
    ['limit', '5.5', 'query parameter limit: expected an integer from 1 to 500'],
    ['limit', '-1', 'query parameter limit: expected an integer from 1 to 500'],
  ])('400 naming %s for %j', (field, value, message) => {
    const err = bad({ [field]: value });
    expect(err.code).toBe('bad_request');
    expect(err.field).toBe(field);
    expect(err.message.startsWith(message)).toBe(true);
  });

  it('refuses unknown parameters, repeated ones, and until not after since, naming them', () => {
    expect(bad({ workload: 'x' }).toJSON()).toEqual({
      code: 'bad_request',
      message: 'unknown query parameter "workload"; known: workloadUri, trustDomain, pathPrefix, verdict, rule, tool, capabilityId, tier, since, until, cursor, limit',
      field: 'workload',
    });
    expect(bad([['__proto__', '{}']]).field).toBe('__proto__');
    expect(bad([['constructor', 'x']]).field).toBe('constructor');
    expect(bad([['verdict', 'allow'], ['verdict', 'deny']]).toJSON()).toEqual({ code: 'bad_request', message: 'query parameter "verdict" is given more than once', field: 'verdict' });
    expect(bad({ since: '2026-11-24T00:00:00Z', until: '2026-11-24T00:00:00Z' }).toJSON()).toEqual({ code: 'bad_request', message: 'until must be later than since', field: 'until' });
  });
});

describe('RFC 3339 and cursors', () => {
  it('parseRfc3339 agrees with Date for ISO times, applies offsets, and rounds sub-milliseconds up', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Date.UTC(9999, 11, 31) }), (ms) => {
        expect(parseRfc3339(new Date(ms).toISOString())).toBe(ms);
      }),
    );
    expect(parseRfc3339('2026-11-24T01:30:00+01:30')).toBe(Date.UTC(2026, 10, 24));
    expect(parseRfc3339('2026-11-23T22:00:00-02:00')).toBe(Date.UTC(2026, 10, 24));
    expect(parseRfc3339('2026-11-24t00:00:00z')).toBe(Date.UTC(2026, 10, 24));
    expect(parseRfc3339('2026-11-24T00:00:00.1234Z')).toBe(Date.UTC(2026, 10, 24) + 124);
    expect(parseRfc3339('2026-11-24T00:00:00.1230000Z')).toBe(Date.UTC(2026, 10, 24) + 123);
    for (const bad of ['2026-11-24 00:00:00Z', '2026-13-01T00:00:00Z', '2026-11-24T24:00:00Z', '2026-11-24T00:00:00', '2026-11-24T00:00:00+24:00', '2025-02-29T00:00:00Z']) {
      expect(parseRfc3339(bad)).toBeNull();
    }
    expect(parseRfc3339('2024-02-29T00:00:00Z')).toBe(Date.UTC(2024, 1, 29));
  });

  it('a cursor round-trips any positive seq and nothing else decodes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), (seq) => {
        expect(decodeCursor(encodeCursor(seq))).toBe(seq);
      }),
    );
    fc.assert(
      fc.property(fc.string(), (text) => {
        let seq: number | null = null;
        try {
          seq = decodeCursor(text);
        } catch (err) {
          expect(err).toMatchObject({ code: 'bad_request', field: 'cursor' });
        }
        if (seq !== null) expect(encodeCursor(seq)).toBe(text);
      }),
    );
  });

  it('escapeLike escapes exactly \\, % and _', () => {
    expect(escapeLike('/a_b%c\\d')).toBe('/a\\_b\\%c\\\\d');
    fc.assert(
      fc.property(fc.string(), (s) => {
        expect(escapeLike(s).replace(/\\([\\%_])/g, '$1')).toBe(s);
      }),
    );
  });
});
