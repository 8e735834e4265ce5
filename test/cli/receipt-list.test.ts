/**
 * `chio receipt list` and `chio receipt show --store` (src/cli/receipt-list.ts): the local SQLite
 * store and a running service's query API, table and NDJSON output, cursors, and bad input.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/receipt.js';
import type { SealedReceipt } from '../../src/receipt/receipt.js';
import { SqliteReceiptStore } from '../../src/receipt/store.js';
import { pathHasSegmentPrefix } from '../../src/spiffe/id.js';
import { capture, type CliRun, fakeIO } from '../helpers/cli-io.js';
import { fixtureRequest } from '../helpers/service.js';
import { sealedReceipts, tempDir } from '../receipt/helpers.js';
import { startStoreService, TOKEN, type StoreService } from '../receipt/store-service.js';

let cwd: string;
let receipts: SealedReceipt[];

beforeAll(async () => {
  cwd = tempDir('chio-cli-list-');
  mkdirSync(path.join(cwd, 'chio-data'));
  receipts = sealedReceipts(30);
  const store = SqliteReceiptStore.open(path.join(cwd, 'chio-data', 'receipts.db'), { writable: true });
  await store.append(receipts);
  store.close();
});

function list(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return capture(run, ['list', ...args], fakeIO(cwd, env));
}

describe('chio receipt list --store', () => {
  it('prints a table (seq, time, verdict, rule, tool, reason, workload) from ./chio-data/receipts.db by default', async () => {
    const { code, out, err } = await list(['--limit', '4']);
    expect(code).toBe(0);
    expect(out).toBe(
      [
        'SEQ  TIME                      VERDICT  RULE            TOOL              REASON            WORKLOAD',
        '1    2026-11-24T00:00:00.000Z  deny     payments_write  transfer_funds    tool_not_allowed  spiffe://prod.chio/payments/worker',
        '2    2026-11-24T00:01:00.000Z  allow    orders          list_orders       -                 spiffe://prod.chio/payments/worker/shard-1',
        '3    2026-11-24T00:02:00.000Z  allow    -               reconcile_ledger  -                 spiffe://prod.chio/payments/workerX',
        '4    2026-11-24T00:03:00.000Z  deny     payments_write  -                 tool_not_allowed  spiffe://prod.chio/payments/my_worker',
        '4 receipt(s)',
        '',
      ].join('\n'),
    );
    expect(err).toBe(`more receipts: continue with --cursor ${Buffer.from('chio.cursor.v1:4').toString('base64url')} (or list them all with --all)\n`);
  });

  it('--json prints one receipt per line, exactly its stored JCS text; --all follows the cursors', async () => {
    const { code, out, err } = await list(['--json', '--all', '--limit', '7']);
    expect(code).toBe(0);
    expect(out).toBe(receipts.map((r) => `${r.jcs}\n`).join(''));
    expect(err).toBe('');
  });

  it('applies the filters (AND) and continues from a cursor', async () => {
    const want = receipts.filter((r) => {
      const wi = r.receipt.runtimeAttestation.workloadIdentity;
      return r.receipt.verdict === 'allow' && wi?.trustDomain === 'prod.chio' && pathHasSegmentPrefix(wi.path, '/payments/worker');
    });
    expect(want.map((r) => r.receipt.seq)).toEqual([2, 9, 17, 18, 26]);
    const all = await list(['--json', '--verdict', 'allow', '--path-prefix', '/payments/worker', '--trust-domain', 'prod.chio']);
    expect(all.out).toBe(want.map((r) => `${r.jcs}\n`).join(''));
    const after = await list(['--json', '--cursor', Buffer.from('chio.cursor.v1:20').toString('base64url'), '--workload-uri', 'spiffe://prod.chio/payments/worker']);
    expect(after.out.trim().split('\n').map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual([25]);
    const none = await list(['--since', '2030-01-01T00:00:00Z']);
    expect(none).toEqual({ code: 0, out: 'no receipts match\n', err: '' });
  });

  it('a bad filter is exit 2 naming the flag', async () => {
    const bad = await list(['--workload-uri', 'spiffe://prod.chio/a/../b']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^chio receipt list: --workload-uri: SPIFFE ID "spiffe:\/\/prod.chio\/a\/..\/b": /);
    expect((await list(['--limit', '501'])).err).toMatch(/^chio receipt list: --limit: at most 500\n/);
    expect((await list(['--since', 'yesterday'])).err).toMatch(/^chio receipt list: --since: expected an RFC 3339 date-time/);
    expect((await list(['--bogus'])).code).toBe(2);
    expect((await list(['--store', 'a.db', '--control-url', 'http://127.0.0.1:1'])).err).toMatch(/^chio receipt list: give --store or --control-url, not both\n/);
    expect((await list(['--token-file', 'x'])).err).toMatch(/^chio receipt list: --token-file goes with --control-url\n/);
  });

  it('--capability-id must be cap-<ULID>: exit 2 naming the flag; a well-formed one filters', async () => {
    // any text was taken and matched nothing: `--capability-id xyz` listed "no receipts match" (QA finding)
    for (const id of ['xyz', 'cap-123', 'rct-00000000000000000000000005', 'cap-80000000000000000000000000', 'cap-0000000000000000000000000u']) {
      const bad = await list(['--capability-id', id]);
      expect(bad, id).toEqual({ code: 2, out: '', err: expect.stringMatching(new RegExp(`^chio receipt list: --capability-id "${id}" is not a capability id \\(cap- and a ULID, as \`chio capability inspect\` shows it\\)\n\nusage: chio receipt list`)) });
    }
    const id = receipts.find((r) => r.receipt.capabilityId !== null)?.receipt.capabilityId as string;
    const good = await list(['--json', '--capability-id', id]);
    expect(good.code).toBe(0);
    expect(good.out.trim().split('\n').map((l) => (JSON.parse(l) as { capabilityId: string }).capabilityId)).toEqual([id]);
  });

  it('a missing store is exit 2 naming it', async () => {
    const missing = await list(['--store', 'nope.db']);
    expect(missing).toEqual({ code: 2, out: '', err: `chio receipt list: file_not_found: receipt store ${path.join(cwd, 'nope.db')} does not exist\n` });
  });

  it('--help', async () => {
    const help = await list(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/^usage: chio receipt list \[filters\]/);
  });
});

describe('chio receipt show --store', () => {
  it('prints a receipt from the SQLite store, exit 1 when absent', async () => {
    const r = receipts[11] as SealedReceipt;
    const io = fakeIO(cwd);
    expect(await run(['show', '--receipt-id', r.receipt.id, '--store', 'chio-data/receipts.db'], io)).toBe(0);
    expect(io.out).toBe(`${JSON.stringify(JSON.parse(r.jcs), null, 2)}\n`);
    const missing = fakeIO(cwd);
    expect(await run(['show', '--receipt-id', 'rct-01JD0000000000000000000000', '--store', 'chio-data/receipts.db'], missing)).toBe(1);
    expect(missing.err).toBe('chio receipt show: receipt_not_found: no receipt rct-01JD0000000000000000000000 in chio-data/receipts.db\n');
    const both = fakeIO(cwd);
    expect(await run(['show', '--receipt-id', r.receipt.id, '--store', 'a', '--file', 'b'], both)).toBe(2);
  });
});

describe('chio receipt list --control-url', () => {
  let svc: StoreService;
  beforeAll(async () => {
    svc = await startStoreService();
    for (const name of ['http-mtls-spiffe-full', 'http-foreign-trust-domain', 'http-mtls-spiffe-full']) await svc.client.check(fixtureRequest(name));
    writeFileSync(path.join(cwd, 'token'), `${TOKEN}\n`);
    writeFileSync(path.join(cwd, 'wrong-token'), 'nope\n');
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('reads the query API with the token from --token-file or $CHIO_ADMIN_TOKEN; NDJSON is the stored JCS text', async () => {
    const texts = await svc.storeTexts();
    const viaFile = await list(['--control-url', svc.adminUrl, '--token-file', 'token', '--json', '--all', '--limit', '2']);
    expect(viaFile).toEqual({ code: 0, out: texts.map((t) => `${t}\n`).join(''), err: '' });
    const viaEnv = await list(['--control-url', svc.adminUrl, '--verdict', 'deny', '--json'], { CHIO_ADMIN_TOKEN: TOKEN });
    expect(viaEnv.out).toBe(`${texts[1]}\n`);
    const table = await list(['--control-url', svc.adminUrl, '--token-file', 'token']);
    expect(table.out.split('\n')[0]).toMatch(/^SEQ +TIME +VERDICT +RULE +TOOL +REASON +WORKLOAD$/);
    expect(table.out).toMatch(/\n3 receipt\(s\)\n$/);
  });

  it('no token, a wrong token, a bad filter or an unreachable service: exit 2 with the reason', async () => {
    expect(await list(['--control-url', svc.adminUrl])).toEqual({ code: 2, out: '', err: 'chio receipt list: usage: no admin token: give --token-file FILE or set CHIO_ADMIN_TOKEN\n' });
    const wrong = await list(['--control-url', svc.adminUrl, '--token-file', 'wrong-token']);
    expect(wrong).toEqual({ code: 2, out: '', err: `chio receipt list: io_error: ${svc.adminUrl} answered 401 unauthorized: a valid Bearer token is required\n` });
    const down = await list(['--control-url', 'http://127.0.0.1:1', '--token-file', 'token']);
    expect(down.code).toBe(2);
    expect(down.err).toMatch(/^chio receipt list: io_error: cannot reach http:\/\/127\.0\.0\.1:1: /);
    expect((await list(['--control-url', 'ftp://x', '--token-file', 'token'])).err).toBe('chio receipt list: usage: --control-url must be http:// or https://, got ftp:\n');
  });
});
