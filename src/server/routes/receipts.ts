/**
 * The receipt query API on the admin listener (SPEC §2 `/v1/...`, §6, §9), Bearer token required:
 *
 * - `GET /v1/receipts/query?workloadUri=…&trustDomain=…&pathPrefix=…&verdict=…&rule=…&tool=…
 *   &capabilityId=…&tier=…&since=…&until=…&cursor=…&limit=…` → `{receipts: [...], nextCursor}`,
 *   AND-combined filters (./../../receipt/query.ts), ordered by seq; a bad or unknown parameter is
 *   400 `{error: {code: 'bad_request', message, field: '<parameter>'}}`.
 * - `GET /v1/receipts/{id}` → the receipt (its exact stored JCS text); 404 `receipt_not_found`.
 *
 * Receipts are returned as the exact JCS texts the store holds, so what a client gets verifies
 * byte for byte (`chio receipt verify`).
 */
import { ChioError } from '../../errors.js';
import { pageJson, parseReceiptQuery } from '../../receipt/query.js';
import { RECEIPT_ID_PATTERN } from '../../receipt/receipt.js';
import type { ReceiptStore } from '../../receipt/store.js';
import type { PgReceiptStore } from '../../receipt/pg/store.js';
import { errorResponse, json, type AdminResponse, type Route } from '../admin.js';

const JSON_HEADERS = { 'content-type': 'application/json' } as const;

/** Runs a store read; the store failing (I/O, a dead thread) is the server's fault: 503 with its code, never a 400. */
async function fromStore(read: () => Promise<AdminResponse>): Promise<AdminResponse> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof ChioError) return json(503, { error: { code: err.code, message: err.message } });
    throw err;
  }
}

/**
 * `store` is null when no sqlite sink is configured: the routes then say so (404). `central` (a
 * postgres entry in receipts.sinks) answers instead when given: every replica's receipts, in the
 * order (time, chain, seq) with its own cursor (src/receipt/pg/query.ts).
 */
export function receiptRoutes(configured: ReceiptStore | null, central: PgReceiptStore | null = null): Route[] {
  const requireStore = (): ReceiptStore => {
    if (configured === null) throw new ChioError('not_found', 'the receipt query API needs a sqlite or postgres sink in receipts.sinks of chio.yaml');
    return configured;
  };
  return [
    {
      method: 'GET',
      path: '/v1/receipts/query',
      auth: true,
      handler: async (req): Promise<AdminResponse> => {
        if (central !== null) {
          const q = central.parse(req.query.entries());
          return fromStore(async () => ({ status: 200, headers: JSON_HEADERS, body: pageJson(await central.query(q)) }));
        }
        const query = parseReceiptQuery(req.query.entries());
        const store = requireStore();
        return fromStore(async () => ({ status: 200, headers: JSON_HEADERS, body: pageJson(await store.query(query)) }));
      },
    },
    {
      method: 'GET',
      path: '/v1/receipts/:id',
      auth: true,
      handler: async (req): Promise<AdminResponse> => {
        const id = req.params['id'] ?? '';
        if (!RECEIPT_ID_PATTERN.test(id)) {
          return errorResponse(new ChioError('bad_request', `${JSON.stringify(id.slice(0, 64))} is not a receipt id (rct-<ULID>)`, { field: 'id' }));
        }
        const [extra] = req.query.keys();
        if (extra !== undefined) return errorResponse(new ChioError('bad_request', `unknown query parameter ${JSON.stringify(extra)}`, { field: extra }));
        const store = central ?? requireStore();
        return fromStore(async () => {
          const jcs = await store.get(id);
          if (jcs === null) return errorResponse(new ChioError('receipt_not_found', `no receipt ${id}`));
          return { status: 200, headers: JSON_HEADERS, body: `${jcs}\n` };
        });
      },
    },
  ];
}
