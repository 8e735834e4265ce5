/**
 * `chio serve --workers 2` and `POST /v1/revocations` (the review of 2026-11-27): the primary
 * records the revocation and answers it, the workers decide the Checks, so a 201 must mean every
 * worker denies the capability — also when the revocations file has a line that does not parse
 * (the workers cannot re-read it), and in a worker restarted after the file was deleted (it would
 * read an empty list). A worker that does not confirm makes the answer 503, never 201.
 * Each case runs its own service (bin/chio.js, node:cluster: `npm run build` first) in a temp folder.
 */
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createCheckClient, type CheckClient } from '../../src/check/client.js';
import { startCapabilities } from '../../src/capability/service.js';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { compilePolicy } from '../../src/policy/load.js';
import { migrate } from '../../src/receipt/pg/migrate.js';
import { killServe, signalQuietly, spawnServe, waitFor, type ServeProcess } from '../helpers/chio-process.js';
import { demoPolicy, fixtureRequest, recordingLogger, type FixtureRequest } from '../helpers/service.js';
import { createTestSchema, PgProxy, SKIP_PG } from '../pg/support/pg.js';

const TOKEN = 'workers-revocations-admin-token';
/** a line a person might add by hand: not a revocation line (an id followed by a comment) */
const BAD_LINE = 'cap-01M8D4AMZ01TK0FBRK09R70JCY  # revoked by hand';
/** Checks per round, each on its own connection: node:cluster hands connections to the workers in turn */
const CONNECTIONS = 6;

interface Ready {
  grpc: string;
  admin: string;
  workerPids: number[];
}

type Running = ServeProcess<Ready>;

interface Verdict {
  code: number;
  message: string;
}

const running: Running[] = [];
const clients: CheckClient[] = [];
const stopped: number[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const pid of stopped.splice(0)) signalQuietly(pid, 'SIGCONT');
  for (const r of running.splice(0)) killServe(r);
});

/** A service with capability issuance and a revocations file, 2 workers; `extra` config lines, `env` added. */
function serve(extra: string[] = [], env: NodeJS.ProcessEnv = {}): Running {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-workers-revocations-'));
  writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
  writeFileSync(path.join(dir, 'authority.seed'), `${'33'.repeat(32)}\n`, { mode: 0o600 });
  writeFileSync(path.join(dir, 'admin.token'), `${TOKEN}\n`, { mode: 0o600 });
  writeFileSync(
    path.join(dir, 'chio.yaml'),
    [
      'schema: chio.config.v1',
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
      'capabilities: { authority_seed: ./authority.seed, revocations_file: ./data/revocations.jsonl }',
      'admin: { token_file: ./admin.token }',
      'shutdown: { drain_seconds: 0, deadline_seconds: 5 }',
      'log: { level: info }',
      ...extra,
      '',
    ].join('\n'),
  );
  const r = spawnServe<Ready>(dir, ['--workers', '2', '--config', path.join(dir, 'chio.yaml')], env);
  running.push(r);
  return r;
}

async function post(ready: Ready, p: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://${ready.admin}${p}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function listedRevocations(ready: Ready): Promise<string[]> {
  const res = await fetch(`http://${ready.admin}/v1/revocations`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return ((await res.json()) as { revocations: Array<{ id: string }> }).revocations.map((r) => r.id);
}

/** A capability for the demo policy's `orders` rule: its token and id. */
async function issue(ready: Ready): Promise<{ token: string; id: string }> {
  const issued = await post(ready, '/v1/capabilities/issue', { subject: 'orders-bot', tools: ['list_orders'], ttlSeconds: 300 });
  expect(issued.status).toBe(201);
  return { token: String(issued.json['token']), id: (issued.json['capability'] as { id: string }).id };
}

function withToken(token: string): FixtureRequest {
  const req = fixtureRequest('http-mtls-spiffe-full');
  const headers = req.attributes.request?.http?.headers;
  if (headers) headers['x-chio-capability'] = token;
  return req;
}

function receiptLines(dir: string, worker: number): Array<{ verdict: string; capabilityId: string | null; reasons: Array<{ code: string }> }> {
  const file = path.join(dir, 'data', `receipts-w${worker}.jsonl`);
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l)) : [];
}

/**
 * One Check with `token` on each of {@link CONNECTIONS} new connections. Returns the verdicts, and
 * the receipts each worker wrote for them (by worker number; durability strict: written before the
 * answer), so a test sees that both workers decided.
 */
async function checkEverywhere(r: Running, ready: Ready, token: string): Promise<{ verdicts: Verdict[]; byWorker: Array<Array<{ verdict: string; reasons: Array<{ code: string }> }>> }> {
  const before = [1, 2].map((w) => receiptLines(r.dir, w).length);
  const verdicts: Verdict[] = [];
  for (let i = 0; i < CONNECTIONS; i++) {
    const c = createCheckClient(ready.grpc, undefined, { 'grpc.use_local_subchannel_pool': 1 });
    clients.push(c);
    const res = await c.check(withToken(token));
    verdicts.push({ code: res.status?.code ?? 0, message: res.status?.message ?? '' });
  }
  const byWorker = [1, 2].map((w, k) => receiptLines(r.dir, w).slice(before[k]));
  return { verdicts, byWorker };
}

const ALLOWED: Verdict = { code: 0, message: '' };
const REVOKED: Verdict = { code: 7, message: 'capability_revoked' };

/** Every Check on every worker is a deny capability_revoked (verdict, and each worker's receipts). */
function expectRevokedEverywhere(seen: Awaited<ReturnType<typeof checkEverywhere>>): void {
  expect(seen.verdicts).toEqual(Array.from({ length: CONNECTIONS }, () => REVOKED));
  expect(seen.byWorker.map((w) => w.length > 0)).toEqual([true, true]); // both workers decided
  for (const receipts of seen.byWorker) {
    for (const receipt of receipts) expect([receipt.verdict, receipt.reasons.map((x) => x.code)]).toEqual(['deny', ['capability_revoked']]);
  }
}

const reloadFailures = (r: Running): number => r.logs.filter((l) => l['msg'] === 'revocation file reload failed; keeping the last good list').length;

describe('chio serve --workers 2: POST /v1/revocations with a revocations file that does not parse', () => {
  it('201 means every worker denies the capability (capability_revoked), though no worker can re-read the file', async () => {
    const r = serve();
    const ready = await r.ready;
    const { token, id } = await issue(ready);
    const allowed = await checkEverywhere(r, ready, token);
    expect(allowed.verdicts).toEqual(Array.from({ length: CONNECTIONS }, () => ALLOWED));

    appendFileSync(path.join(r.dir, 'data', 'revocations.jsonl'), `${BAD_LINE}\n`);
    // the primary and both workers have seen the bad file and kept their last good list (empty)
    await waitFor('every process to refuse the bad file', () => (reloadFailures(r) >= 3 ? true : undefined));
    const revoked = await post(ready, '/v1/revocations', { id, reason: 'leaked' });
    expect(revoked.status).toBe(201);
    expect(revoked.json['revocation']).toMatchObject({ id, reason: 'leaked' });

    expectRevokedEverywhere(await checkEverywhere(r, ready, token));
    expect(await listedRevocations(ready)).toEqual([id]);

    // a worker restarted while the file still does not parse starts on the primary's list (it could not start at all)
    process.kill(ready.workerPids[0] as number, 'SIGKILL');
    const readyz = async (): Promise<number> => (await fetch(`http://${ready.admin}/readyz`)).status;
    await waitFor('readyz 503', async () => ((await readyz()) === 503 ? true : undefined));
    await waitFor('readyz 200', async () => ((await readyz()) === 200 ? true : undefined), 15_000);
    for (const c of clients.splice(0)) c.close();
    expectRevokedEverywhere(await checkEverywhere(r, ready, token));
    r.child.kill('SIGTERM');
    expect((await r.exit).code).toBe(0);
  }, 60_000);
});

describe('chio serve --workers 2: a worker restarted after the revocations file was deleted', () => {
  it('takes the primary\'s list before it serves: it denies the revoked capability (capability_revoked), as the others do', async () => {
    const r = serve();
    const ready = await r.ready;
    const { token, id } = await issue(ready);
    expect((await post(ready, '/v1/revocations', { id, reason: 'leaked' })).status).toBe(201);
    expectRevokedEverywhere(await checkEverywhere(r, ready, token));

    // the POST created the file: every watcher looks at it (debounce ~50 ms) before it goes, or for
    // them nothing changed (missing, then missing again) and there is no re-read to wait for
    await new Promise((res) => setTimeout(res, 500));
    const failuresBefore = reloadFailures(r);
    rmSync(path.join(r.dir, 'data', 'revocations.jsonl'));
    // deleting the file lifts nothing: every process keeps its list (README "Revocation")
    await waitFor('every process to keep its list', () => (reloadFailures(r) >= failuresBefore + 3 ? true : undefined));
    expectRevokedEverywhere(await checkEverywhere(r, ready, token));

    const receiptsBefore = receiptLines(r.dir, 1).length;
    process.kill(ready.workerPids[0] as number, 'SIGKILL');
    const readyz = async (): Promise<number> => (await fetch(`http://${ready.admin}/readyz`)).status;
    await waitFor('readyz 503', async () => ((await readyz()) === 503 ? true : undefined));
    await waitFor('readyz 200', async () => ((await readyz()) === 200 ? true : undefined));
    for (const c of clients.splice(0)) c.close(); // connections to the dead worker are gone
    const after = await checkEverywhere(r, ready, token);
    expectRevokedEverywhere(after);
    // worker 1 is the restarted one: its chain goes on with denies
    expect(receiptLines(r.dir, 1).length).toBeGreaterThan(receiptsBefore);
    expect(await listedRevocations(ready)).toEqual([id]);
    r.child.kill('SIGTERM');
    expect((await r.exit).code).toBe(0);
  }, 60_000);
});

describe('chio serve --workers 2: a worker that does not confirm a revocation', () => {
  it('makes POST /v1/revocations 503 io_error (recorded, not confirmed everywhere), never 201; a retry once it answers is 200', async () => {
    const r = serve();
    const ready = await r.ready;
    const { token, id } = await issue(ready);
    const frozen = ready.workerPids[1] as number;
    stopped.push(frozen);
    process.kill(frozen, 'SIGSTOP'); // alive and connected, but answers nothing
    const started = Date.now();
    const revoked = await post(ready, '/v1/revocations', { id, reason: 'leaked' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900); // it waited REVOCATION_TIMEOUT_MS for the worker
    expect(revoked.status).toBe(503);
    const error = revoked.json['error'] as { code: string; message: string };
    expect(error.code).toBe('io_error');
    expect(error.message).toBe(
      'not every worker confirmed the revocation (worker 2 did not answer within 2000 ms). ' +
        `It is recorded in ${path.join(r.dir, 'data', 'revocations.jsonl')} and in force in the primary and in every worker that confirmed it; ` +
        'a worker that did not may still allow the capability until it takes the message late, its file watch re-reads the file, or it restarts. POST it again to retry.',
    );
    expect(revoked.json['revocation']).toMatchObject({ id, reason: 'leaked' });
    expect(readFileSync(path.join(r.dir, 'data', 'revocations.jsonl'), 'utf8')).toContain(id);
    expect(await listedRevocations(ready)).toEqual([id]);

    process.kill(frozen, 'SIGCONT');
    const retried = await post(ready, '/v1/revocations', { id, reason: 'leaked' });
    expect(retried.status).toBe(200); // already recorded; every worker confirmed this time
    expectRevokedEverywhere(await checkEverywhere(r, ready, token));
    r.child.kill('SIGTERM');
    expect((await r.exit).code).toBe(0);
  }, 60_000);
});

describe('POST /v1/revocations when afterRevoke throws (the primary: a worker did not confirm)', () => {
  it('answers 503 with the error and the revocation, which stays recorded and listed', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-revoke-503-'));
    try {
      const config = parseConfig(
        'schema: chio.config.v1\npolicy: ./p.yaml\nkeys: { receipt_signing_seed: ./k.seed }\ncapabilities: { revocations_file: ./revocations.jsonl }\n',
        path.join(dir, 'chio.yaml'),
        dir,
      );
      const sent: string[] = [];
      const capabilities = startCapabilities({
        config: config.capabilities,
        log: recordingLogger(),
        clock: () => Date.parse('2026-12-01T00:00:00Z'),
        policy: () => compilePolicy(demoPolicy(), 'policy.yaml'),
        afterRevoke: async (revocation) => {
          sent.push(revocation.id);
          throw new ChioError('io_error', 'not every worker confirmed the revocation (worker 2 could not apply it: boom)');
        },
      });
      const route = capabilities.routes.find((x) => x.method === 'POST' && x.path === '/v1/revocations');
      const id = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3';
      const res = await route!.handler({
        method: 'POST',
        path: '/v1/revocations',
        query: new URLSearchParams(),
        params: {},
        headers: {},
        body: async () => Buffer.from(JSON.stringify({ id, reason: 'leaked' })),
      });
      expect(res.status).toBe(503);
      expect(JSON.parse(String(res.body))).toStrictEqual({
        error: { code: 'io_error', message: 'not every worker confirmed the revocation (worker 2 could not apply it: boom)' },
        revocation: { id, reason: 'leaked', revokedAt: '2026-12-01T00:00:00.000Z' },
      });
      expect(sent).toEqual([id]);
      expect(capabilities.revocations.has(id)).toBe(true);
      expect(readFileSync(path.join(dir, 'revocations.jsonl'), 'utf8')).toContain(id);
      await capabilities.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(SKIP_PG)('chio serve --workers 2 with revocations in PostgreSQL (needs PostgreSQL: test/pg/support/pg.ts)', () => {
  it('a worker restarted while PostgreSQL is unreachable takes the primary\'s shared list before it serves: it denies (capability_revoked)', async () => {
    const schema = await createTestSchema();
    await migrate(schema.admin);
    const proxy = await PgProxy.start();
    try {
      const r = serve(['revocations: { type: postgres, url_env: CHIO_TEST_REVOCATIONS_URL }'], { CHIO_TEST_REVOCATIONS_URL: proxy.url(schema.schema) });
      const ready = await r.ready;
      const { token, id } = await issue(ready);
      expect((await post(ready, '/v1/revocations', { id, reason: 'leaked' })).status).toBe(201);
      expectRevokedEverywhere(await checkEverywhere(r, ready, token));
      proxy.cut(); // PostgreSQL away: a restarted worker cannot read the shared list itself
      process.kill(ready.workerPids[0] as number, 'SIGKILL');
      const readyz = async (): Promise<number> => (await fetch(`http://${ready.admin}/readyz`)).status;
      await waitFor('readyz 503', async () => ((await readyz()) === 503 ? true : undefined));
      await waitFor('readyz 200', async () => ((await readyz()) === 200 ? true : undefined));
      for (const c of clients.splice(0)) c.close();
      expectRevokedEverywhere(await checkEverywhere(r, ready, token));
      r.child.kill('SIGTERM');
      await r.exit;
    } finally {
      await proxy.close();
      await schema.drop();
    }
  }, 60_000);
});
