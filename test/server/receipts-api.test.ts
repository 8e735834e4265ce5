/**
 * The receipt query API on the real service's admin listener (src/server/routes/receipts.ts):
 * Bearer token, filters, pagination, by id, and a 400 naming each bad parameter.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUERY_PARAMETERS } from '../../src/receipt/query.js';
import { fixtureRequest } from '../helpers/service.js';
import { receiptIdOf, startStoreService, type StoreService } from '../receipt/store-service.js';

let svc: StoreService;
const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';
const FOREIGN = 'spiffe://other-domain.test/ns/default/sa/frontend';

beforeAll(async () => {
  svc = await startStoreService();
  // 3 allows of example.org, 2 denies of other-domain.test, 1 deny without identity, interleaved
  for (const name of ['http-mtls-spiffe-full', 'http-foreign-trust-domain', 'http-mtls-spiffe-full', 'http-plaintext-no-identity', 'http-foreign-trust-domain', 'http-mtls-spiffe-full']) {
    const res = await svc.client.check(fixtureRequest(name));
    expect(receiptIdOf(res)).toMatch(/^rct-/);
  }
});
afterAll(async () => {
  await svc?.close();
});

type Page = { receipts: Array<Record<string, unknown>>; nextCursor: string | null };

describe('GET /v1/receipts/query', () => {
  it('401 without a token or with a wrong one', async () => {
    for (const token of [null, 'wrong-token']) {
      const res = await svc.get('/v1/receipts/query', token);
      expect(res.status).toBe(401);
      expect(res.json).toEqual({ error: { code: 'unauthorized', message: 'a valid Bearer token is required' } });
    }
    expect((await svc.get('/v1/receipts/rct-01JD0000000000000000000000', null)).status).toBe(401);
  });

  it('returns every receipt, in seq order, byte for byte what both sinks hold', async () => {
    const res = await svc.get('/v1/receipts/query');
    expect(res.status).toBe(200);
    const texts = await svc.storeTexts();
    expect(texts).toHaveLength(6);
    expect(svc.jsonlTexts()).toEqual(texts);
    expect(res.text).toBe(`{"receipts":[${texts.join(',')}],"nextCursor":null}\n`);
  });

  it('filters by workloadUri, trustDomain, pathPrefix, verdict, rule, tool and tier (AND)', async () => {
    const ids = async (q: string): Promise<number[]> => ((await svc.get(`/v1/receipts/query?${q}`)).json as Page).receipts.map((r) => r['seq'] as number);
    expect(await ids(`workloadUri=${encodeURIComponent(FRONTEND)}`)).toEqual([1, 3, 6]);
    expect(await ids(`workloadUri=${encodeURIComponent(FOREIGN)}`)).toEqual([2, 5]);
    expect(await ids('trustDomain=other-domain.test')).toEqual([2, 5]);
    expect(await ids('pathPrefix=/ns/default')).toEqual([1, 2, 3, 5, 6]);
    expect(await ids('pathPrefix=/ns/default/sa/front')).toEqual([]);
    expect(await ids('verdict=deny')).toEqual([2, 4, 5]);
    expect(await ids('verdict=allow&trustDomain=example.org&rule=orders&tool=list_orders&tier=attested')).toEqual([1, 3, 6]);
    expect(await ids('tier=none')).toEqual([4]);
    expect(await ids('since=2026-12-01T00:00:00Z&until=2026-12-01T00:00:00.001Z')).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await ids('until=2026-12-01T00:00:00Z')).toEqual([]);
  });

  it('pages with limit and cursor, forward only, without duplicates or gaps', async () => {
    const seen: number[] = [];
    let q = '/v1/receipts/query?limit=4';
    for (;;) {
      const page = (await svc.get(q)).json as Page;
      seen.push(...page.receipts.map((r) => r['seq'] as number));
      if (page.nextCursor === null) break;
      q = `/v1/receipts/query?limit=4&cursor=${page.nextCursor}`;
    }
    expect(seen).toEqual([1, 2, 3, 4, 5, 6]);
  });

  const BAD: Record<(typeof QUERY_PARAMETERS)[number], string> = {
    workloadUri: 'spiffe://example.org/../x',
    trustDomain: 'Example.org',
    pathPrefix: 'ns/default',
    verdict: 'yes',
    rule: '',
    tool: '',
    capabilityId: '',
    tier: 'platinum',
    since: 'last tuesday',
    until: '2026-11-31T00:00:00Z',
    cursor: 'not-a-cursor',
    limit: '1000',
  };
  it.each(QUERY_PARAMETERS)('400 naming %s when it is bad', async (param) => {
    const res = await svc.get(`/v1/receipts/query?${param}=${encodeURIComponent(BAD[param])}`);
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ error: { code: 'bad_request', field: param, message: expect.stringMatching(new RegExp(`^query parameter ${param}: `)) } });
  });

  it('400 naming an unknown or repeated parameter', async () => {
    const unknown = await svc.get('/v1/receipts/query?workload=x');
    expect(unknown.status).toBe(400);
    expect(unknown.json).toMatchObject({ error: { code: 'bad_request', field: 'workload' } });
    const twice = await svc.get('/v1/receipts/query?verdict=allow&verdict=deny');
    expect(twice.json).toEqual({ error: { code: 'bad_request', message: 'query parameter "verdict" is given more than once', field: 'verdict' } });
  });
});

describe('GET /v1/receipts/{id}', () => {
  it('returns the stored JCS text of the receipt', async () => {
    const texts = await svc.storeTexts();
    const third = JSON.parse(texts[2] ?? '') as { id: string };
    const res = await svc.get(`/v1/receipts/${third.id}`);
    expect(res.status).toBe(200);
    expect(res.text).toBe(`${texts[2]}\n`);
  });

  it('404 receipt_not_found for an unknown id, 400 for a malformed one', async () => {
    const missing = await svc.get('/v1/receipts/rct-01JD0000000000000000000000');
    expect(missing.status).toBe(404);
    expect(missing.json).toEqual({ error: { code: 'receipt_not_found', message: 'no receipt rct-01JD0000000000000000000000' } });
    const bad = await svc.get('/v1/receipts/cap-123');
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({ error: { code: 'bad_request', message: '"cap-123" is not a receipt id (rct-<ULID>)', field: 'id' } });
    const extra = await svc.get('/v1/receipts/rct-01JD0000000000000000000000?verbose=1');
    expect(extra.json).toEqual({ error: { code: 'bad_request', message: 'unknown query parameter "verbose"', field: 'verbose' } });
  });
});

describe('without a sqlite sink', () => {
  it('the query API says it needs one (404)', async () => {
    const jsonlOnly = await startStoreService({ sinks: ['jsonl'] });
    try {
      const res = await jsonlOnly.get('/v1/receipts/query');
      expect(res.status).toBe(404);
      expect(res.json).toEqual({ error: { code: 'not_found', message: 'the receipt query API needs a sqlite or postgres sink in receipts.sinks of chio.yaml' } });
    } finally {
      await jsonlOnly.close();
    }
  });
});
