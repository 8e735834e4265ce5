/**
 * `chio serve --workers 2` as a user runs it (bin/chio.js, node:cluster): one gRPC listener, one
 * chain per worker, one admin listener with summed metrics, the query API over every worker's
 * store, readiness across workers, a worker restarted after it dies, graceful shutdown.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createCheckClient, type CheckClient } from '../../src/check/client.js';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import { decodeWorkersCursor, encodeWorkersCursor } from '../../src/server/worker-receipts.js';
import { workerConfig, workerFile } from '../../src/server/workers.js';
import { parseConfig } from '../../src/config/load.js';
import { demoPolicy, fixtureRequest } from '../helpers/service.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CHIO = path.join(ROOT, 'bin', 'chio.js');
const TOKEN = 'test-admin-token-for-workers';

interface Ready {
  grpc: string;
  grpcTransport: string;
  admin: string;
  workers: number;
  workerPids: number[];
}

function receiptIdOf(res: CheckResponseMessage): string {
  const id = (res.ok_response?.headers ?? res.denied_response?.headers)?.find((h) => h.header?.key === 'x-chio-receipt-id')?.header?.value;
  if (id === undefined) throw new TypeError('answer without x-chio-receipt-id');
  return id;
}

function lines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : [];
}

function runChio(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CHIO, ...args], (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('workerFile and workerConfig', () => {
  it('give each worker its own receipt files and checkpoint log', () => {
    expect(workerFile('/d/receipts.jsonl', 2)).toBe('/d/receipts-w2.jsonl');
    expect(workerFile('/d/store', 1)).toBe('/d/store-w1');
    const config = parseConfig(
      'schema: chio.config.v1\npolicy: ./p.yaml\nkeys: { receipt_signing_seed: ./k.seed }\nreceipts: { sinks: [ { type: jsonl, path: ./r/receipts.jsonl }, { type: sqlite, path: ./r/receipts.db } ] }\n',
      '/x/chio.yaml',
      '/x',
    );
    const w = workerConfig(config, 3);
    expect(w.receipts.sinks.map((s) => s.path)).toStrictEqual(['/x/r/receipts-w3.jsonl', '/x/r/receipts-w3.db']);
    expect(w.receipts.checkpoints.path).toBe('/x/r/checkpoints-w3.jsonl');
    expect(w.keys.receipt_signing_seed).toBe('/x/k.seed'); // one key for every worker
  });

  it('round-trip the query cursor and refuse a forged one', () => {
    expect(decodeWorkersCursor(encodeWorkersCursor([4, 0, 17]), 3)).toStrictEqual([4, 0, 17]);
    expect(() => decodeWorkersCursor(encodeWorkersCursor([4, 0]), 3)).toThrow('cursor is not a cursor returned by this API (nextCursor)');
    expect(() => decodeWorkersCursor('not a cursor', 1)).toThrow('cursor is not a cursor returned by this API (nextCursor)');
  });
});

describe('chio serve --workers 2', () => {
  let dir: string;
  let child: ChildProcess;
  let ready: Ready;
  let exitCode: Promise<number | null>;
  const clients: CheckClient[] = [];
  const answered: string[] = [];

  const admin = (p: string, auth = false): Promise<Response> =>
    fetch(`http://${ready.admin}${p}`, auth ? { headers: { authorization: `Bearer ${TOKEN}` } } : {});
  const receiptFiles = (): string[] => [1, 2].map((i) => path.join(dir, 'data', `receipts-w${i}.jsonl`));
  /** Checks over 4 connections: node:cluster hands connections to the workers in turn */
  const checkMany = async (perClient: number): Promise<void> => {
    const request = fixtureRequest('http-mtls-spiffe-full');
    for (let round = 0; round < perClient; round++) {
      const answers = await Promise.all(clients.map((c) => c.check(request)));
      for (const res of answers) {
        expect(res.status?.code ?? 0).toBe(0);
        answered.push(receiptIdOf(res));
      }
    }
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'chio-workers-'));
    writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
    writeFileSync(path.join(dir, 'admin.token'), `${TOKEN}\n`);
    writeFileSync(
      path.join(dir, 'chio.yaml'),
      [
        'schema: chio.config.v1',
        'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
        'policy: ./policy.yaml',
        'keys: { receipt_signing_seed: ./data/kernel.seed }',
        'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: sqlite, path: ./data/receipts.db } ] }',
        'admin: { token_file: ./admin.token }',
        'log: { level: info }',
        '',
      ].join('\n'),
    );
    child = spawn(process.execPath, [CHIO, 'serve', '--workers', '2', '--config', path.join(dir, 'chio.yaml')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    exitCode = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    let stderr = '';
    child.stderr?.on('data', (d) => (stderr += String(d)));
    ready = await new Promise<Ready>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ready line; stderr: ${stderr}`)), 20_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        try {
          const obj = JSON.parse(line) as Ready & { msg?: string };
          if (obj.msg === 'chio-authz ready') {
            clearTimeout(timer);
            resolve(obj);
          }
        } catch {
          /* not JSON */
        }
      });
    });
    // separate subchannel pools: 4 real connections
    for (let i = 0; i < 4; i++) clients.push(createCheckClient(ready.grpc, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
  }, 30_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('announces both workers on one gRPC port and is ready when both are', async () => {
    expect(ready.workers).toBe(2);
    expect(ready.workerPids).toHaveLength(2);
    expect(ready.grpcTransport).toBe('native');
    const res = await admin('/readyz');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ready', workers: 2 });
  });

  it('says why /v1/checkpoints/latest is not served (each worker signs its own chain\'s checkpoints)', async () => {
    const res = await admin('/v1/checkpoints/latest');
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({
      error: { code: 'not_found', message: "not served under chio serve --workers: each worker signs its own chain's checkpoints, in checkpoints-wN.jsonl beside the receipts" },
    });
  });

  it('spreads connections over the workers, one verifiable chain each', async () => {
    await checkMany(10);
    const [w1, w2] = receiptFiles().map(lines);
    expect(w1?.length).toBeGreaterThan(0);
    expect(w2?.length).toBeGreaterThan(0);
    expect((w1?.length ?? 0) + (w2?.length ?? 0)).toBe(answered.length);
    const verified = await runChio(['receipt', 'verify', ...receiptFiles(), '--seed', path.join(dir, 'data', 'kernel.seed')]);
    expect(verified.stderr).toBe('');
    expect(verified.code).toBe(0);
    expect(verified.stdout.match(/: OK: /g)).toHaveLength(2);
  });

  it('sums the workers in one /metrics', async () => {
    const text = await (await admin('/metrics')).text();
    const allowed = text.split('\n').find((l) => l.startsWith('chio_admissions_total{verdict="allow"'));
    expect(allowed?.split(' ').pop()).toBe(String(answered.length));
    expect(text).toMatch(new RegExp(`^chio_receipts_written_total ${answered.length}$`, 'm'));
    expect(text).toMatch(/^chio_checks_in_flight 0$/m);
  });

  it('counts a worker too slow to answer a scrape as last scraped: no counter goes backwards', async () => {
    await admin('/metrics'); // each worker's last answer is this scrape's
    const frozen = ready.workerPids[0] as number;
    process.kill(frozen, 'SIGSTOP');
    try {
      const text = await (await admin('/metrics')).text(); // waits out the 2 s metrics timeout
      expect(text).toMatch(new RegExp(`^chio_receipts_written_total ${answered.length}$`, 'm'));
    } finally {
      process.kill(frozen, 'SIGCONT');
    }
  }, 15_000);

  it('answers the receipt query API from every worker store, paging with one cursor', async () => {
    const readAll = async (): Promise<string[]> => {
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const res = await admin(`/v1/receipts/query?limit=7${cursor === null ? '' : `&cursor=${cursor}`}`, true);
        expect(res.status).toBe(200);
        const page = (await res.json()) as { receipts: Array<{ id: string; timestamp: string }>; nextCursor: string | null };
        expect(page.receipts.length).toBeLessThanOrEqual(7);
        seen.push(...page.receipts.map((r) => r.id));
        cursor = page.nextCursor;
      } while (cursor !== null);
      return seen;
    };
    // each worker's store follows its JSONL file within ~50 ms (README "Durability across sinks")
    await vi.waitFor(async () => expect((await readAll()).length).toBeGreaterThanOrEqual(answered.length), { timeout: 2000, interval: 50 });
    const seen = await readAll();
    expect([...seen].sort()).toStrictEqual([...answered].sort());
    const one = answered[answered.length - 1] as string;
    const got = await admin(`/v1/receipts/${one}`, true);
    expect(got.status).toBe(200);
    expect(((await got.json()) as { id: string }).id).toBe(one);
    expect((await admin('/v1/receipts/query?limit=7', false)).status).toBe(401);
  });

  it('starts a worker that died again, and its chain goes on', async () => {
    const victim = ready.workerPids[0] as number;
    process.kill(victim, 'SIGKILL');
    await waitFor('readyz to notice', async () => ((await admin('/readyz')).status === 503 ? true : undefined));
    await waitFor('the worker to be back', async () => ((await admin('/readyz')).status === 200 ? true : undefined));
    // connections to the dead worker are gone: new clients
    for (const c of clients.splice(0)) c.close();
    for (let i = 0; i < 4; i++) clients.push(createCheckClient(ready.grpc, undefined, { 'grpc.use_local_subchannel_pool': 1 }));
    await checkMany(5);
    const verified = await runChio(['receipt', 'verify', ...receiptFiles(), '--seed', path.join(dir, 'data', 'kernel.seed')]);
    expect(verified.code).toBe(0);
  }, 30_000);

  it('shuts every worker down on SIGTERM, receipts flushed, exit 0', async () => {
    for (const c of clients.splice(0)) c.close();
    child.kill('SIGTERM');
    expect(await exitCode).toBe(0);
    const total = receiptFiles().map(lines).reduce((n, l) => n + l.length, 0);
    expect(total).toBe(answered.length);
    const verified = await runChio(['receipt', 'verify', ...receiptFiles(), '--seed', path.join(dir, 'data', 'kernel.seed'), '--json']);
    expect(verified.code).toBe(0);
    expect(verified.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { ok: boolean }).ok)).toStrictEqual([true, true]);
  }, 30_000);
});
