/**
 * `chio serve` as operators run it (a child process of bin/chio.js, built by `npm test`):
 * SIGTERM during load turns health NOT_SERVING, keeps answering through the drain, finishes
 * in-flight calls, leaves every answered call's receipt on disk, and exits 0 within the deadline.
 * SIGHUP reloads the policy.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createCheckClient } from '../../src/check/client.js';
import { keyFromSeed } from '../../src/keys.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
import { healthClient } from '../helpers/health-client.js';
import { demoPolicy, fixtureRequest } from '../helpers/service.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function startChild(drainSeconds: number): Promise<{ dir: string; child: ChildProcess; grpcPort: number; adminPort: number; exit: Promise<number | null> }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-shutdown-'));
  dirs.push(dir);
  const grpcPort = await freePort();
  const adminPort = await freePort();
  writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
  writeFileSync(
    path.join(dir, 'chio.yaml'),
    [
      'schema: chio.config.v1',
      `listen: { grpc: 127.0.0.1:${grpcPort}, admin: 127.0.0.1:${adminPort} }`,
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
      `shutdown: { drain_seconds: ${drainSeconds}, deadline_seconds: 5 }`,
      'log: { level: warn }',
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'chio.js'), 'serve', '--config', path.join(dir, 'chio.yaml')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error('chio serve did not become ready');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { dir, child, grpcPort, adminPort, exit };
}

describe('chio serve signals', () => {
  it('SIGTERM under load: NOT_SERVING during the drain, every answered call has its receipt on disk, exit 0', async () => {
    const { dir, child, grpcPort, exit } = await startChild(1);
    const client = createCheckClient(`127.0.0.1:${grpcPort}`);
    const health = healthClient(grpcPort);
    expect(await health.check()).toBe('SERVING');

    const answered: string[] = [];
    let errors = 0;
    let stop = false;
    const worker = async (): Promise<void> => {
      while (!stop) {
        try {
          const res = await client.check(fixtureRequest('http-mtls-spiffe-full'), 2000);
          const id = res.ok_response?.headers.find((h) => h.header.key === 'x-chio-receipt-id')?.header.value;
          if (res.status.code !== 0 || id === undefined) throw new Error('not an allow with a receipt');
          answered.push(id);
        } catch {
          errors++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const workers = Array.from({ length: 6 }, () => worker());
    await new Promise((r) => setTimeout(r, 400));
    const beforeTerm = answered.length;
    const termAt = Date.now();
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    expect(await health.check()).toBe('NOT_SERVING');
    const duringDrain = answered.length;
    const code = await exit;
    const exitedAfter = Date.now() - termAt;
    stop = true;
    await Promise.all(workers);
    client.close();
    health.close();

    expect(code).toBe(0);
    expect(exitedAfter).toBeGreaterThanOrEqual(900); // the 1 s drain was honoured
    expect(exitedAfter).toBeLessThan(6000); // within the deadline
    expect(beforeTerm).toBeGreaterThan(0);
    expect(answered.length).toBeGreaterThan(duringDrain); // still answering during the drain

    const file = path.join(dir, 'data', 'receipts.jsonl');
    const onDisk = new Set(
      readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { id: string }).id),
    );
    const missing = answered.filter((id) => !onDisk.has(id));
    expect(missing).toEqual([]);
    const seed = Buffer.from(readFileSync(path.join(dir, 'data', 'kernel.seed'), 'utf8').trim(), 'hex');
    const verdict = await verifyReceiptFile(file, verificationKeys([keyFromSeed(seed)]));
    expect(verdict.ok).toBe(true);
    expect(errors).toBeLessThan(answered.length); // after the stop, calls are refused (and retried) until the workers end
  });

  it('SIGHUP reloads the policy', async () => {
    const { child, adminPort, exit } = await startChild(0);
    const metric = async (): Promise<string> => (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    const before = /chio_policy_reloads_total\{result="ok"\} (\d+)/.exec(await metric())?.[1];
    child.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    let after = before;
    while (after === before && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      after = /chio_policy_reloads_total\{result="ok"\} (\d+)/.exec(await metric())?.[1];
    }
    expect(Number(after)).toBe(Number(before) + 1);
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
  });
});
