/**
 * The receipt query API (src/server/routes/receipts.ts, SPEC §6) over every worker's chain when
 * `chio serve --workers N` runs (./workers.ts): each worker writes its own chain to its own SQLite
 * store (`receipts-w<N>.db`); the primary reads them all (read-only) and merges.
 *
 * - `GET /v1/receipts/{id}`: the store that has it.
 * - `GET /v1/receipts/query?…`: the same filters; each store is asked for a page after its own
 *   position, the pages are merged in (timestamp, worker, seq) order and cut at `limit`. The
 *   cursor holds one position per worker: base64url of `chio.cursor.workers.v1:<seq>,<seq>,…`.
 *   Receipts are the stores' exact JCS texts (they verify byte for byte).
 */
import { ChioError } from '../errors.js';
import { pageJson, parseReceiptQuery, type ReceiptPage, type ReceiptQuery } from '../receipt/query.js';
import { RECEIPT_ID_PATTERN } from '../receipt/receipt.js';
import { SqliteReceiptStore } from '../receipt/store.js';
import { errorResponse, json, type AdminResponse, type Route } from './admin.js';

const CURSOR_PREFIX = 'chio.cursor.workers.v1:';
const JSON_HEADERS = { 'content-type': 'application/json' } as const;

/** One position (the last seq returned, 0 = none yet) per worker. */
export function encodeWorkersCursor(positions: readonly number[]): string {
  return Buffer.from(`${CURSOR_PREFIX}${positions.join(',')}`, 'utf8').toString('base64url');
}

/** The positions of a cursor from this API; ChioError bad_request (field `cursor`) otherwise. */
export function decodeWorkersCursor(cursor: string, workers: number): number[] {
  const bad = (): ChioError => new ChioError('bad_request', 'cursor is not a cursor returned by this API (nextCursor)', { field: 'cursor' });
  if (cursor.length > 64 + 18 * workers || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  const text = Buffer.from(cursor, 'base64url').toString('latin1');
  if (Buffer.from(text, 'latin1').toString('base64url') !== cursor || !text.startsWith(CURSOR_PREFIX)) throw bad();
  const parts = text.slice(CURSOR_PREFIX.length).split(',');
  if (parts.length !== workers || !parts.every((p) => /^(0|[1-9][0-9]{0,15})$/.test(p))) throw bad();
  return parts.map(Number);
}

interface Row {
  readonly jcs: string;
  readonly worker: number;
  readonly seq: number;
  readonly timestamp: string;
}

function rowOf(jcs: string, worker: number): Row {
  const r = JSON.parse(jcs) as { seq?: unknown; timestamp?: unknown };
  if (typeof r.seq !== 'number' || typeof r.timestamp !== 'string') throw new ChioError('io_error', 'a stored receipt has no seq or timestamp');
  return { jcs, worker, seq: r.seq, timestamp: r.timestamp };
}

/** The stores of every worker, opened read-only on first use (a worker creates its store when it starts). */
export class WorkerReceiptStores {
  readonly #paths: readonly string[];
  readonly #open = new Map<number, SqliteReceiptStore>();

  constructor(paths: readonly string[]) {
    this.#paths = paths;
  }

  get workers(): number {
    return this.#paths.length;
  }

  #store(i: number): SqliteReceiptStore | null {
    let s = this.#open.get(i);
    if (s === undefined) {
      const p = this.#paths[i];
      if (p === undefined) return null;
      try {
        s = SqliteReceiptStore.open(p);
      } catch (err) {
        if (err instanceof ChioError && err.code === 'file_not_found') return null; // no receipt written yet
        throw err;
      }
      this.#open.set(i, s);
    }
    return s;
  }

  async get(id: string): Promise<string | null> {
    for (let i = 0; i < this.#paths.length; i++) {
      const jcs = (await this.#store(i)?.get(id)) ?? null;
      if (jcs !== null) return jcs;
    }
    return null;
  }

  async query(q: ReceiptQuery, positions: readonly number[]): Promise<ReceiptPage> {
    const rows: Row[] = [];
    let more = false;
    for (let i = 0; i < this.#paths.length; i++) {
      const store = this.#store(i);
      if (store === null) continue;
      const after = positions[i] ?? 0;
      const page = await store.query({ ...q, ...(after > 0 ? { afterSeq: after } : {}) });
      if (page.nextCursor !== null) more = true;
      for (const jcs of page.receipts) rows.push(rowOf(jcs, i));
    }
    rows.sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : a.worker - b.worker || a.seq - b.seq));
    const taken = rows.slice(0, q.limit);
    if (rows.length > q.limit) more = true;
    const next = [...positions];
    while (next.length < this.#paths.length) next.push(0);
    for (const r of taken) next[r.worker] = Math.max(next[r.worker] ?? 0, r.seq);
    return { receipts: taken.map((r) => r.jcs), nextCursor: more ? encodeWorkersCursor(next) : null };
  }

  close(): void {
    for (const s of this.#open.values()) s.close();
    this.#open.clear();
  }
}

/** The two receipt routes over every worker's store; `null` (no sqlite sink): 404 as in single-process mode. */
export function workerReceiptRoutes(stores: WorkerReceiptStores | null): Route[] {
  const requireStores = (): WorkerReceiptStores => {
    if (stores === null) throw new ChioError('not_found', 'the receipt query API needs a sqlite or postgres sink in receipts.sinks of chio.yaml');
    return stores;
  };
  const fromStores = async (read: () => Promise<AdminResponse>): Promise<AdminResponse> => {
    try {
      return await read();
    } catch (err) {
      if (err instanceof ChioError && err.code !== 'bad_request' && err.code !== 'not_found') return json(503, { error: { code: err.code, message: err.message } });
      throw err;
    }
  };
  return [
    {
      method: 'GET',
      path: '/v1/receipts/query',
      auth: true,
      handler: async (req) => {
        const params = [...req.query.entries()];
        const cursor = params.find(([k]) => k === 'cursor')?.[1];
        const q = parseReceiptQuery(params.filter(([k]) => k !== 'cursor'));
        const s = requireStores();
        const positions = cursor === undefined ? new Array<number>(s.workers).fill(0) : decodeWorkersCursor(cursor, s.workers);
        return fromStores(async () => ({ status: 200, headers: JSON_HEADERS, body: pageJson(await s.query(q, positions)) }));
      },
    },
    {
      method: 'GET',
      path: '/v1/receipts/:id',
      auth: true,
      handler: async (req) => {
        const id = req.params['id'] ?? '';
        if (!RECEIPT_ID_PATTERN.test(id)) {
          return errorResponse(new ChioError('bad_request', `${JSON.stringify(id.slice(0, 64))} is not a receipt id (rct-<ULID>)`, { field: 'id' }));
        }
        const [extra] = req.query.keys();
        if (extra !== undefined) return errorResponse(new ChioError('bad_request', `unknown query parameter ${JSON.stringify(extra)}`, { field: extra }));
        const s = requireStores();
        return fromStores(async () => {
          const jcs = await s.get(id);
          if (jcs === null) return errorResponse(new ChioError('receipt_not_found', `no receipt ${id}`));
          return { status: 200, headers: JSON_HEADERS, body: `${jcs}\n` };
        });
      },
    },
  ];
}
