/**
 * `chio receipt list --control-url` (src/cli/receipt-list.ts) against a query API that answers
 * badly: a page whose receipts are not receipts, and `--all` with a cursor that does not move.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/receipt.js';
import { capture, type CliRun, fakeIO } from '../helpers/cli-io.js';
import { tempDir } from '../receipt/helpers.js';

const cursor = (seq: number) => Buffer.from(`chio.cursor.v1:${seq}`).toString('base64url');

/** What the stand-in service answers, per request (the `cursor` query parameter, or null). */
let answer: (cursorParam: string | null) => unknown;
let requests = 0;
let server: Server;
let url: string;
let cwd: string;

beforeAll(async () => {
  cwd = tempDir('chio-cli-list-answers-');
  server = createServer((req, res) => {
    requests += 1;
    const param = new URL(req.url ?? '/', 'http://x').searchParams.get('cursor');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer(param)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
});

function list(args: string[]): Promise<CliRun> {
  requests = 0;
  return capture(run, ['list', '--control-url', url, ...args], fakeIO(cwd, { CHIO_ADMIN_TOKEN: 't' }));
}

describe('chio receipt list --control-url: a bad answer', () => {
  it('a page whose receipt lacks the table fields: one line with the code, exit 2 (no ZodError stack)', async () => {
    answer = () => ({ receipts: [{ seq: 'one', verdict: 'allow' }], nextCursor: null });
    expect(await list([])).toEqual({
      code: 2,
      out: '',
      err: `chio receipt list: receipt_malformed: receipt 1 from ${url} is not a receipt: seq: Invalid input: expected number, received string\n`,
    });
  });

  it('--all stops when the service hands back a cursor it already gave (the pages do not move forward)', async () => {
    answer = () => ({ receipts: [], nextCursor: cursor(5) });
    const r = await Promise.race([list(['--all', '--json']), new Promise<string>((resolve) => setTimeout(() => resolve('still looping after 5 s'), 5000))]);
    expect(r).toEqual({
      code: 2,
      out: '',
      err: `chio receipt list: io_error: ${url} answered the cursor ${cursor(5)} again: its pages do not move forward; stopped\n`,
    });
    expect(requests).toBe(2);
  });

  it('--all also stops on a cursor that comes back later, and on the --cursor it started from', async () => {
    answer = (param) => ({ receipts: [], nextCursor: param === cursor(7) ? cursor(3) : cursor(7) });
    expect((await list(['--all', '--json'])).err).toBe(`chio receipt list: io_error: ${url} answered the cursor ${cursor(7)} again: its pages do not move forward; stopped\n`);
    expect(requests).toBe(3);
    expect((await list(['--all', '--json', '--cursor', cursor(3)])).err).toBe(
      `chio receipt list: io_error: ${url} answered the cursor ${cursor(3)} again: its pages do not move forward; stopped\n`,
    );
    expect(requests).toBe(2);
  });
});
