/**
 * Three replicas, one PostgreSQL (README "Several replicas, one PostgreSQL"): three `chio serve`
 * processes (bin/chio.js, built by `npm test`) ship to one database through a TCP proxy the test
 * controls. Under concurrent load on all three, one replica is killed (SIGKILL, mid-batch) and
 * restarted, and the database is made unreachable and back. Afterwards every decision any client
 * saw is in the central store exactly once, every chain verifies (`chio receipt verify
 * --pg-url-env`), the query API of any replica returns every replica's receipts, and a revocation
 * made on one replica denies on the other two within 2 s. Replica a runs `--workers 2` (two chains,
 * one admin listener in the cluster primary): its query API reads PostgreSQL like the others', and a
 * revocation posted to its primary reaches every worker and replica. Needs PostgreSQL (support/pg.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCapability } from '../../src/capability/issue.js';
import { createCheckClient, type CheckClient } from '../../src/check/client.js';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import { main } from '../../src/cli/index.js';
import { migrate } from '../../src/receipt/pg/migrate.js';
import { fakeIO } from '../helpers/cli-io.js';
import { authorityKey, checkRequest, fixturePolicy, fixturePresenter, POLICY_FILE } from '../capability/helpers.js';
import { createTestSchema, PgProxy, SKIP_PG, type TestSchema } from './support/pg.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CHIO = path.join(ROOT, 'bin', 'chio.js');
const TOKEN = `admin-${process.pid}-${Math.random().toString(36).slice(2)}`;
const AUTHORITY = authorityKey(0x5a);

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function receiptIdOf(res: CheckResponseMessage): string | null {
  const list = res.ok_response?.headers ?? res.denied_response?.headers ?? [];
  return list.find((h) => h.header.key === 'x-chio-receipt-id')?.header.value ?? null;
}

function reasonOf(res: CheckResponseMessage): string | null {
  const body = res.denied_response?.body;
  return body ? ((JSON.parse(body) as { reason?: string }).reason ?? null) : null;
}

class Replica {
  child: ChildProcess | null = null;
  stderr = '';
  constructor(
    readonly name: string,
    readonly dir: string,
    readonly grpcPort: number,
    readonly adminPort: number,
    readonly env: NodeJS.ProcessEnv,
    readonly workers = 1,
  ) {}

  get adminUrl(): string {
    return `http://127.0.0.1:${this.adminPort}`;
  }

  async start(): Promise<void> {
    const workers = this.workers > 1 ? ['--workers', String(this.workers)] : [];
    const child = spawn(process.execPath, [CHIO, 'serve', '--config', path.join(this.dir, 'chio.yaml'), ...workers], {
      cwd: this.dir,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    this.stderr = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} did not become ready:\n${this.stderr}`)), 20_000);
      child.stderr?.on('data', (d: Buffer) => {
        this.stderr += d.toString();
        if (this.stderr.includes('chio-authz ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited with ${code}:\n${this.stderr}`));
      });
    });
  }

  async stop(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(signal);
    await exited;
  }

  /** every local log of the replica: receipts.jsonl, or receipts-w1.jsonl … with --workers */
  localReceiptIds(): string[] {
    const data = path.join(this.dir, 'data');
    return readdirSync(data)
      .filter((f) => /^receipts(-w\d+)?\.jsonl$/.test(f))
      .flatMap((f) => readFileSync(path.join(data, f), 'utf8').split('\n'))
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as { id: string }).id);
  }
}

/** Concurrent Checks against one replica until stopped; the receipt ids of every answer received. */
function drive(replica: Replica, seen: Set<string>, concurrency = 6): { stop: () => Promise<void>; answered: () => number } {
  // one connection per worker (node:cluster hands connections to the workers in turn)
  const clients: CheckClient[] = Array.from({ length: replica.workers }, () =>
    // reconnect within 100–200 ms after the replica is killed and back (grpc-js backs off from 1 s up)
    createCheckClient(`127.0.0.1:${replica.grpcPort}`, undefined, {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 200,
    }),
  );
  let running = true;
  let answered = 0;
  const requests = [
    checkRequest({ presenter: fixturePresenter('svid-frontend'), method: 'GET', path: '/api/v1/orders', host: 'backend.default.svc' }),
    checkRequest({ presenter: fixturePresenter('svid-backend'), method: 'GET', path: '/admin/users', host: 'backend.default.svc' }),
    checkRequest({ presenter: null, method: 'POST', path: '/v1/transfers', host: 'payments.default.svc' }),
  ];
  const loops = Array.from({ length: concurrency }, async (_, k) => {
    for (let i = k; running; i++) {
      try {
        const client = clients[k % clients.length] as CheckClient;
        const res = await client.check(requests[i % requests.length] ?? requests[0]!, 2000);
        const id = receiptIdOf(res);
        if (id !== null) seen.add(id);
        answered++;
      } catch {
        await new Promise((r) => setTimeout(r, 20)); // the replica is down (killed): retry soon
      }
    }
  });
  return {
    answered: () => answered,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      for (const client of clients) client.close();
    },
  };
}

describe.skipIf(SKIP_PG)('three replicas, one PostgreSQL', () => {
  let schema: TestSchema;
  let proxy: PgProxy;
  const replicas: Replica[] = [];
  let work: string;

  beforeAll(async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
    proxy = await PgProxy.start();
    work = mkdtempSync(path.join(tmpdir(), 'chio-replicas-'));
    for (const name of ['a', 'b', 'c']) {
      const dir = path.join(work, name);
      const [grpcPort, adminPort] = [await freePort(), await freePort()];
      mkdirSync(dir);
      writeFileSync(path.join(dir, 'policy.yaml'), readFileSync(POLICY_FILE, 'utf8'));
      writeFileSync(
        path.join(dir, 'chio.yaml'),
        [
          'schema: chio.config.v1',
          `listen: { grpc: 127.0.0.1:${grpcPort}, admin: 127.0.0.1:${adminPort} }`,
          'policy: ./policy.yaml',
          'keys: { receipt_signing_seed: ./data/kernel.seed }',
          'receipts:',
          '  sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: postgres, url_env: CHIO_PG_URL, batch_size: 200 } ]',
          '  durability: strict',
          'revocations: { type: postgres, url_env: CHIO_PG_URL, poll_seconds: 0.5 }',
          `capabilities: { authorities: [ { public_key: ${AUTHORITY.publicKeyRaw.toString('hex')} } ] }`,
          'admin: { token_env: CHIO_ADMIN_TOKEN }',
          'shutdown: { deadline_seconds: 5 }',
          'log: { level: warn }',
          '',
        ].join('\n'),
      );
      replicas.push(new Replica(name, dir, grpcPort, adminPort, { CHIO_PG_URL: proxy.url(schema.schema), CHIO_ADMIN_TOKEN: TOKEN }, name === 'a' ? 2 : 1));
    }
    await Promise.all(replicas.map((r) => r.start()));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop('SIGKILL')));
    await proxy?.close();
    await schema?.drop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function centralCount(): Promise<{ n: number; ids: number }> {
    const { rows } = await schema.admin.query<{ n: number; ids: number }>('SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM chio_receipts');
    return rows[0] ?? { n: 0, ids: 0 };
  }

  it('load, a replica killed mid-batch, the database away and back: every answered decision is central exactly once and every chain verifies', async () => {
    const [, b, c] = replicas as [Replica, Replica, Replica];
    const seen = new Set<string>();
    const drivers = replicas.map((r) => drive(r, seen));
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

    await sleep(800);
    await b.stop('SIGKILL'); // mid-run, with batches being written and shipped
    await sleep(300);
    await b.start(); // the same local log: the chain goes on, shipping resumes from what PostgreSQL holds
    await sleep(500);
    proxy.cut(); // the database goes away for everyone; decisions go on
    const duringOutage = drivers.map((d) => d.answered());
    await sleep(1200);
    const answeredDuringOutage = drivers.map((d, i) => d.answered() - (duringOutage[i] ?? 0));
    expect(answeredDuringOutage.every((n) => n > 0), `answered during the outage by a, b, c: ${answeredDuringOutage.join(', ')}`).toBe(true);
    proxy.restore();
    await sleep(500);
    await Promise.all(drivers.map((d) => d.stop()));
    expect(seen.size).toBeGreaterThan(100);

    // every replica's local log, shipped: wait for the shippers to catch up (backoff after the outage)
    const local = replicas.flatMap((r) => r.localReceiptIds());
    const deadline = Date.now() + 30_000;
    while ((await centralCount()).n < local.length && Date.now() < deadline) await sleep(100);
    const count = await centralCount();
    expect(count).toEqual({ n: local.length, ids: local.length });
    const { rows } = await schema.admin.query<{ id: string }>('SELECT id FROM chio_receipts');
    const central = new Set(rows.map((r) => r.id));
    const missing = [...seen].filter((id) => !central.has(id));
    expect(missing).toEqual([]);
    expect(new Set(local)).toEqual(central);

    const chains = await schema.admin.query<{ chain: string }>('SELECT chain FROM chio_chains ORDER BY chain');
    expect(chains.rows).toHaveLength(4); // a's two workers, b, c
    const io = fakeIO(work, { PG: schema.url });
    const code = await main(['receipt', 'verify', '--pg-url-env', 'PG', '--seed', 'a/data/kernel.seed', '--seed', 'b/data/kernel.seed', '--seed', 'c/data/kernel.seed', '--json'], io);
    const report = JSON.parse(io.out) as { ok: boolean; chains: Array<{ ok: boolean; receipts: number }> };
    expect(report.ok, io.out + io.err).toBe(true);
    expect(code).toBe(0);
    expect(report.chains.map((ch) => ch.ok)).toEqual([true, true, true, true]);
    expect(report.chains.reduce((n, ch) => n + ch.receipts, 0)).toBe(local.length);

    // the query API of any replica (a cluster primary too) reads every replica's receipts, in (time, chain, seq) order
    for (const r of [c, replicas[0] as Replica]) {
    const listed: string[] = [];
    let cursor: string | null = null;
    do {
      const url = new URL('/v1/receipts/query', r.adminUrl);
      url.searchParams.set('limit', '500');
      if (cursor !== null) url.searchParams.set('cursor', cursor);
      const res = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(res.status).toBe(200);
      const page = (await res.json()) as { receipts: Array<{ id: string; chain: string; timestamp: string }>; nextCursor: string | null };
      listed.push(...page.receipts.map((r) => r.id));
      cursor = page.nextCursor;
    } while (cursor !== null);
    expect(listed).toHaveLength(local.length);
    expect(new Set(listed)).toEqual(central);
    }
  }, 120_000);

  it('a revocation made on one replica (a cluster primary) denies on every replica within 2 s', async () => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const issued = issueCapability(
      { subject: 'spiffe://example.org/ns/default/sa/frontend', tools: ['transfer_funds'], ttlSeconds: 300 },
      { authority: AUTHORITY, policy: fixturePolicy(), now: Date.now() },
    );
    const request = checkRequest({ presenter: fixturePresenter('svid-frontend'), capability: issued.token, method: 'POST', path: '/v1/transfers', host: 'payments.default.svc' });
    // posted to a's cluster primary: enforced by a's workers and by b and c
    const clients = [a, b, c].map((r) => createCheckClient(`127.0.0.1:${r.grpcPort}`, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
    try {
      for (const client of clients) expect((await client.check(request)).status?.code ?? 0).toBe(0);
      const started = Date.now();
      const res = await fetch(new URL('/v1/revocations', a.adminUrl), {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: issued.capability.id, reason: 'replica test' }),
      });
      expect(res.status).toBe(201);
      for (const client of clients) {
        for (;;) {
          const answer = await client.check(request);
          if (reasonOf(answer) === 'capability_revoked') break;
          expect(Date.now() - started, 'revocation not enforced within 2 s').toBeLessThan(2000);
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      for (const client of clients) client.close();
    }
  }, 30_000);
});
