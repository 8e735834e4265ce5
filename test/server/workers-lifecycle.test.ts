/**
 * `chio serve --workers 2` through its lifecycle's awkward moments (the workers review of
 * 2026-11-26): signals before the service is ready, a worker that cannot start again after it
 * died, /metrics while a worker is away, a config edited under a running service, and the primary
 * killed outright. Each case runs its own service (bin/chio.js, node:cluster) in a temp folder.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createCheckClient, type CheckClient } from '../../src/check/client.js';
import { killServe, spawnServe, waitFor, type ServeProcess } from '../helpers/chio-process.js';
import { demoPolicy, fixtureRequest } from '../helpers/service.js';
import { breakStore } from '../receipt/store-service.js';

interface Ready {
  grpc: string;
  admin: string;
  kernelKey: string;
  workerPids: number[];
}

type Running = ServeProcess<Ready>;

const running: Running[] = [];
const clients: CheckClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const r of running.splice(0)) killServe(r);
});

function configText(extra = ''): string {
  return [
    'schema: chio.config.v1',
    'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
    'policy: ./policy.yaml',
    'keys: { receipt_signing_seed: ./data/kernel.seed }',
    'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ]' + extra + ' }',
    'shutdown: { drain_seconds: 0, deadline_seconds: 5 }',
    'log: { level: info }',
    '',
  ].join('\n');
}

function serve(opts: { config?: string; dir?: string; workers?: number } = {}): Running {
  const dir = opts.dir ?? mkdtempSync(path.join(tmpdir(), 'chio-workers-life-'));
  if (opts.dir === undefined) {
    writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
    writeFileSync(path.join(dir, 'chio.yaml'), opts.config ?? configText());
  }
  const workers = opts.workers === 1 ? [] : ['--workers', String(opts.workers ?? 2)];
  const r = spawnServe<Ready>(dir, [...workers, '--config', path.join(dir, 'chio.yaml')]);
  running.push(r);
  return r;
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const receiptLines = (dir: string): string[] =>
  [1, 2].flatMap((i) => {
    const file = path.join(dir, 'data', `receipts-w${i}.jsonl`);
    return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : [];
  });

describe('chio serve --workers 2: signals before ready', () => {
  it('a SIGHUP while starting is ignored and a SIGTERM while starting stops the service once it is up: exit 0, no worker left', async () => {
    // the primary logs the key it creates in a fresh folder as it starts its workers: the service is not up yet
    const starting = (r: Running): Promise<true> =>
      waitFor('the primary to start', () => (r.logs.some((l) => l['msg'] === 'created a new receipt signing key') ? true : undefined));
    const r = serve();
    await starting(r);
    r.child.kill('SIGHUP');
    const ready = await r.ready; // SIGHUP's default action would have killed it
    expect(ready.workerPids).toHaveLength(2);

    const r2 = serve();
    await starting(r2);
    expect(r2.logs.some((l) => l['msg'] === 'chio-authz ready')).toBe(false);
    r2.child.kill('SIGTERM');
    const exit = await r2.exit;
    expect([exit.code, exit.signal]).toEqual([0, null]);
    const pids = (await r2.ready.catch(() => null))?.workerPids ?? [];
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
  }, 40_000);
});

describe('chio serve: signals during the shutdown', () => {
  it.each([1, 2])('a SIGHUP and a second SIGTERM while draining are ignored: exit 0 after the drain (%i process(es))', async (workers) => {
    const r = serve({ workers, config: configText().replace('drain_seconds: 0', 'drain_seconds: 1') });
    await r.ready;
    r.child.kill('SIGTERM');
    await new Promise((res) => setTimeout(res, 300));
    r.child.kill('SIGHUP');
    r.child.kill('SIGTERM');
    const exit = await r.exit;
    expect([exit.code, exit.signal]).toEqual([0, null]);
  }, 40_000);
});

describe('chio serve --workers 2: a worker that cannot start again', () => {
  it('is logged and retried until it starts; /metrics answers meanwhile with the ready worker', async () => {
    const r = serve();
    const ready = await r.ready;
    const admin = (p: string): Promise<Response> => fetch(`http://${ready.admin}${p}`);
    writeFileSync(path.join(r.dir, 'policy.yaml'), 'rules: [oops\n'); // a bad policy: the restart fails
    process.kill(ready.workerPids[0] as number, 'SIGKILL');
    await waitFor('the failed start logged', () => (r.logs.some((l) => l['msg'] === 'worker failed to start; retrying') ? true : undefined));
    const failed = r.logs.find((l) => l['msg'] === 'worker failed to start; retrying');
    expect(failed?.['worker']).toBe(1);
    expect(String(failed?.['err'])).toMatch(/^policy_invalid: /);
    expect((await admin('/readyz')).status).toBe(503);
    const metrics = await admin('/metrics');
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('chio_check_duration_seconds_count');

    writeFileSync(path.join(r.dir, 'policy.yaml'), demoPolicy());
    await waitFor('ready again', async () => ((await admin('/readyz')).status === 200 ? true : undefined), 40_000);
    r.child.kill('SIGTERM');
    expect((await r.exit).code).toBe(0);
  }, 60_000);
});

describe('chio serve --workers 2: summed counters across a worker restart', () => {
  it('chio_admissions_total does not go backwards when a worker dies and starts again (its last scraped counts are kept)', async () => {
    const r = serve();
    const ready = await r.ready;
    const admissions = async (): Promise<number> => {
      const text = await (await fetch(`http://${ready.admin}/metrics`)).text();
      return text
        .split('\n')
        .filter((l) => l.startsWith('chio_admissions_total{'))
        .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
    };
    for (let i = 0; i < 4; i++) clients.push(createCheckClient(ready.grpc, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
    for (let round = 0; round < 5; round++) for (const c of clients) await c.check(fixtureRequest('http-mtls-spiffe-full'));
    const before = await admissions();
    expect(before).toBe(20);
    process.kill(ready.workerPids[0] as number, 'SIGKILL');
    const admin = (p: string): Promise<Response> => fetch(`http://${ready.admin}${p}`);
    await waitFor('readyz 503', async () => ((await admin('/readyz')).status === 503 ? true : undefined));
    expect(await admissions()).toBe(20); // the dead worker's counts, as last scraped, plus the live one's
    await waitFor('readyz 200', async () => ((await admin('/readyz')).status === 200 ? true : undefined));
    expect(await admissions()).toBe(20);
  }, 40_000);
});

describe('chio serve --workers 2: the config the primary read', () => {
  it('a restarted worker runs the config text the primary started with, not the edited file (same key)', async () => {
    const r = serve();
    const ready = await r.ready;
    writeFileSync(path.join(r.dir, 'chio.yaml'), configText().replace('./data/kernel.seed', './data/other.seed'));
    process.kill(ready.workerPids[0] as number, 'SIGKILL');
    const admin = (p: string): Promise<Response> => fetch(`http://${ready.admin}${p}`);
    await waitFor('readyz 503', async () => ((await admin('/readyz')).status === 503 ? true : undefined));
    await waitFor('readyz 200', async () => ((await admin('/readyz')).status === 200 ? true : undefined));
    for (let i = 0; i < 4; i++) clients.push(createCheckClient(ready.grpc, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
    for (const c of clients) expect((await c.check(fixtureRequest('http-mtls-spiffe-full'))).status?.code ?? 0).toBe(0);
    expect(existsSync(path.join(r.dir, 'data', 'other.seed'))).toBe(false);
    const kids = new Set(receiptLines(r.dir).map((l) => (JSON.parse(l) as { kernelKey: string }).kernelKey));
    expect([...kids]).toEqual([ready.kernelKey]);
  }, 40_000);
});

describe('chio serve --workers 2: the primary killed outright', () => {
  it('its workers drain and flush before they exit: every answered Check has its receipt (relaxed durability)', async () => {
    const r = serve({ config: configText(', durability: relaxed') });
    const ready = await r.ready;
    for (let i = 0; i < 4; i++) clients.push(createCheckClient(ready.grpc, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
    const answered: string[] = [];
    let go = true;
    const request = fixtureRequest('http-mtls-spiffe-full');
    const load = clients.map(async (c) => {
      while (go) {
        try {
          const res = await c.check(request);
          const id = res.ok_response?.headers?.find((h) => h.header?.key === 'x-chio-receipt-id')?.header?.value;
          if (id !== undefined) answered.push(id);
        } catch {
          return; // the worker is gone
        }
      }
    });
    await new Promise((res) => setTimeout(res, 800));
    r.child.kill('SIGKILL');
    go = false;
    await Promise.all(load);
    await waitFor('the workers to exit', () => (ready.workerPids.every((pid) => !isAlive(pid)) ? true : undefined), 20_000);
    expect(r.logs.length).toBeGreaterThan(0);
    const written = new Set(receiptLines(r.dir).map((l) => (JSON.parse(l) as { id: string }).id));
    expect(answered.length).toBeGreaterThan(50);
    expect(answered.filter((id) => !written.has(id))).toEqual([]);
  }, 40_000);
});

describe('chio serve --workers 2: a worker whose receipts cannot be written', () => {
  it('makes the primary /readyz 503 naming the worker and the sink (on_failure deny), and ready again once it writes', async () => {
    const r = serve({
      config: configText().replace(
        'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
        'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: sqlite, path: ./data/receipts.db } ], on_failure: deny }',
      ),
    });
    const ready = await r.ready;
    const admin = (p: string): Promise<Response> => fetch(`http://${ready.admin}${p}`);
    const client = createCheckClient(ready.grpc);
    clients.push(client);
    expect((await client.check(fixtureRequest('http-mtls-spiffe-full'))).status.code).toBe(0);
    const broken = [1, 2].map((i) => breakStore(path.join(r.dir, 'data', `receipts-w${i}.db`)));
    // one connection: one worker takes every Check of it
    const body = await waitFor('not ready', async () => {
      await client.check(fixtureRequest('http-mtls-spiffe-full'));
      const res = await admin('/readyz');
      return res.status === 503 ? ((await res.json()) as Record<string, unknown>) : undefined;
    });
    expect(body).toMatchObject({ status: 'not ready', workers: 2, workersReady: 2 });
    expect(String(body['reason'])).toMatch(/^worker [12]: receipt sink sqlite cannot write: .*disk full \(simulated\)/);
    for (const b of broken) b.heal();
    await waitFor('ready again', async () => {
      await client.check(fixtureRequest('http-mtls-spiffe-full'));
      return (await admin('/readyz')).status === 200 ? true : undefined;
    });
    r.child.kill('SIGTERM');
    expect((await r.exit).code).toBe(0);
  }, 60_000);
});

describe('chio serve --workers 2: a revocation', () => {
  it('is in force in every worker when POST /v1/revocations answers (the primary records it, the workers check the Checks)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-workers-revoke-'));
    writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
    writeFileSync(path.join(dir, 'authority.seed'), `${'33'.repeat(32)}\n`, { mode: 0o600 });
    writeFileSync(path.join(dir, 'admin.token'), 'workers-admin-token\n', { mode: 0o600 });
    writeFileSync(
      path.join(dir, 'chio.yaml'),
      configText().replace(
        'log: { level: info }',
        'log: { level: info }\ncapabilities: { authority_seed: ./authority.seed, revocations_file: ./data/revocations.jsonl }\nadmin: { token_file: ./admin.token }',
      ),
    );
    const r = serve({ dir });
    const ready = await r.ready;
    const post = async (p: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
      const res = await fetch(`http://${ready.admin}${p}`, { method: 'POST', headers: { authorization: 'Bearer workers-admin-token', 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    const issued = await post('/v1/capabilities/issue', { subject: 'orders-bot', tools: ['list_orders'], ttlSeconds: 300 });
    expect(issued.status).toBe(201);
    const token = String(issued.json['token']);
    const id = String((issued.json['capability'] as { id: string }).id);
    const withToken = (): ReturnType<typeof fixtureRequest> => {
      const req = fixtureRequest('http-mtls-spiffe-full');
      const headers = req.attributes.request?.http?.headers;
      if (headers) headers['x-chio-capability'] = token;
      return req;
    };
    // several connections: the workers share them
    const cs = [createCheckClient(ready.grpc), createCheckClient(ready.grpc), createCheckClient(ready.grpc), createCheckClient(ready.grpc)];
    clients.push(...cs);
    for (const c of cs) expect((await c.check(withToken())).status.code).toBe(0);
    expect((await post('/v1/revocations', { id, reason: 'test' })).status).toBe(201);
    for (const c of cs) expect((await c.check(withToken())).status).toMatchObject({ code: 7, message: 'capability_revoked' });
    r.child.kill('SIGTERM');
    expect((await r.exit).code).toBe(0);
  }, 60_000);
});
