/**
 * The real service (test/helpers/service.ts) with both receipt sinks, a JSONL file and a SQLite
 * store, and an admin token: for the query API and the sink-failure tests.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import { SqliteReceiptStore } from '../../src/receipt/store.js';
import { startTestService, type TestService } from '../helpers/service.js';

export const TOKEN = 'test-admin-token-0123456789';

export interface StoreService extends TestService {
  readonly dbFile: string;
  /** GET on the admin listener, with the token unless `token` is null */
  get(pathAndQuery: string, token?: string | null): Promise<{ status: number; text: string; json: unknown }>;
  /**
   * The SQLite store's receipts (JCS texts), in seq order, read from its file once it holds as
   * many as the JSONL file (it follows that file within ~50 ms; src/receipt/sinks/follower.ts), or
   * after 5 s as it is.
   */
  storeTexts(): Promise<string[]>;
  /** the JSONL file's lines */
  jsonlTexts(): string[];
}

export interface StoreServiceOptions {
  readonly durability?: 'strict' | 'relaxed';
  readonly onFailure?: 'deny' | 'allow';
  /** the sinks, in order (default jsonl then sqlite) */
  readonly sinks?: ReadonlyArray<'jsonl' | 'sqlite'>;
}

export async function startStoreService(o: StoreServiceOptions = {}): Promise<StoreService> {
  const sinks = (o.sinks ?? ['jsonl', 'sqlite']).map((t) => `{ type: ${t}, path: ./data/receipts.${t === 'jsonl' ? 'jsonl' : 'db'} }`);
  const svc = await startTestService({
    configText: (dir) => {
      writeFileSync(path.join(dir, 'admin.token'), `${TOKEN}\n`, { mode: 0o600 });
      return [
        'schema: chio.config.v1',
        'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
        'policy: ./policy.yaml',
        'keys: { receipt_signing_seed: ./data/kernel.seed }',
        `receipts: { sinks: [ ${sinks.join(', ')} ], durability: ${o.durability ?? 'strict'}, on_failure: ${o.onFailure ?? 'deny'} }`,
        'admin: { token_file: ./admin.token }',
        '',
      ].join('\n');
    },
  });
  const dbFile = path.join(svc.dir, 'data', 'receipts.db');
  return {
    ...svc,
    dbFile,
    async get(pathAndQuery, token = TOKEN) {
      const res = await fetch(`${svc.adminUrl}${pathAndQuery}`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
      const text = await res.text();
      let json: unknown = null;
      try {
        json = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      return { status: res.status, text, json };
    },
    async storeTexts() {
      const deadline = Date.now() + 5000;
      for (;;) {
        const store = SqliteReceiptStore.open(dbFile);
        const out: string[] = [];
        try {
          for await (const r of store.iterateBySeq(0)) out.push(r.jcs);
        } finally {
          store.close();
        }
        if (out.length >= svc.receipts().length || Date.now() > deadline) return out;
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    jsonlTexts: () => svc.receipts().map((r) => JSON.stringify(r)),
  };
}

/** Makes every insert into the store fail (a sink that "starts failing"), until `heal()`. */
export function breakStore(dbFile: string): { heal: () => void } {
  const db = new BetterSqlite3(dbFile);
  db.exec("CREATE TRIGGER chio_test_fail BEFORE INSERT ON receipts BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;");
  return {
    heal: () => {
      db.exec('DROP TRIGGER chio_test_fail');
      db.close();
    },
  };
}

export function receiptIdOf(res: CheckResponseMessage): string | null {
  const list = res.ok_response?.headers ?? res.denied_response?.headers ?? [];
  return list.find((h) => h.header.key === 'x-chio-receipt-id')?.header.value ?? null;
}
