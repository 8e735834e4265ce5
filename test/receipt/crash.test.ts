/**
 * `kill -9` under load (SPEC §6, §9 "no receipt is lost"): `chio serve` (the built dist/, as a child
 * process) with a JSONL file and a SQLite store, durability strict, takes concurrent Checks and is
 * killed mid-load. After a restart every receipt id any client received is in both sinks, both
 * sinks hold the same chain, and it verifies. A torn last line (a write cut short) is quarantined
 * and reported on restart, not silently dropped. Needs `npm run build` (npm test does it first).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCheckClient } from '../../src/check/client.js';
import { loadSeedFile } from '../../src/keys.js';
import { SqliteReceiptStore } from '../../src/receipt/store.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
import { demoPolicy, fixtureRequest } from '../helpers/service.js';
import { tempDir } from './helpers.js';
import { receiptIdOf } from './store-service.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const CHIO = path.join(ROOT, 'bin', 'chio.js');
const CONCURRENCY = 24;
const LOAD_MS = 1000;
const MIN_ANSWERED = 100;

interface Running {
  readonly child: ChildProcess;
  readonly grpc: string;
  readonly lines: string[];
}

/** Starts `chio serve` and waits for its ready log line (pino JSON on stdout). */
function serve(config: string): Promise<Running> {
  const child = spawn(process.execPath, [CHIO, 'serve', '--config', config], { cwd: path.dirname(config), stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chio serve did not become ready:\n${lines.join('\n')}\n${stderr}`)), 15_000);
    let buffered = '';
    child.stdout?.on('data', (d: Buffer) => {
      buffered += d.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        lines.push(line);
        const obj = JSON.parse(line) as { msg?: string; grpc?: string };
        if (obj.msg === 'chio-authz ready' && obj.grpc) {
          clearTimeout(timer);
          resolve({ child, grpc: obj.grpc, lines });
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`chio serve exited with ${code}:\n${lines.join('\n')}\n${stderr}`));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

/** Concurrent Checks until `stop()`; the receipt ids of the answers received. */
function drive(grpc: string): { stop: () => Promise<void>; ids: Set<string>; errors: () => number } {
  const client = createCheckClient(grpc);
  const ids = new Set<string>();
  let errors = 0;
  let running = true;
  const worker = async (): Promise<void> => {
    while (running) {
      try {
        const res = await client.check(fixtureRequest('http-mtls-spiffe-full'), 3000);
        const id = receiptIdOf(res);
        if (id !== null) ids.add(id);
      } catch {
        errors++;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  const workers = Array.from({ length: CONCURRENCY }, worker);
  return {
    ids,
    errors: () => errors,
    stop: async () => {
      running = false;
      await Promise.all(workers);
      client.close();
    },
  };
}

let dir: string;
let config: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  if (!existsSync(path.join(ROOT, 'dist', 'receipt', 'sinks', 'sqlite.js'))) {
    throw new Error('dist/ is missing or stale: run `npm run build` first (`npm test` does)');
  }
  dir = tempDir('chio-crash-');
  writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
  config = path.join(dir, 'chio.yaml');
  writeFileSync(
    config,
    [
      'schema: chio.config.v1',
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: sqlite, path: ./data/receipts.db } ], durability: strict, on_failure: deny }',
      '',
    ].join('\n'),
  );
});
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

describe('kill -9 under load', () => {
  it('every receipt id a client received is in both sinks after a restart; one chain, verified; a torn tail is reported', async () => {
    const first = await serve(config);
    children.push(first.child);
    const load = drive(first.grpc);
    // under load for a while (at least MIN_ANSWERED answers), then killed mid-flight
    const started = Date.now();
    while (load.ids.size < MIN_ANSWERED && Date.now() - started < 10_000) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, LOAD_MS));
    expect(load.ids.size).toBeGreaterThanOrEqual(MIN_ANSWERED);
    first.child.kill('SIGKILL');
    await exited(first.child);
    await load.stop();
    expect(load.errors()).toBeGreaterThan(0); // calls were in flight when it died

    // a write cut short by the crash (the start of a receipt line, no newline)
    const jsonlFile = path.join(dir, 'data', 'receipts.jsonl');
    const torn = '{"capabilityId":null,"id":"rct-01JD';
    appendFileSync(jsonlFile, torn);

    const second = await serve(config);
    children.push(second.child);
    const tornLog = second.lines.map((l) => JSON.parse(l) as { msg: string; bytes?: number; quarantinedTo?: string }).find((l) => l.msg.startsWith('receipt file had a torn last line'));
    expect(tornLog?.bytes).toBe(torn.length);
    expect(readFileSync(tornLog?.quarantinedTo ?? '', 'utf8')).toBe(torn);
    // the restarted service continues the chain
    const more = drive(second.grpc);
    await new Promise((r) => setTimeout(r, 200));
    await more.stop();
    expect(more.errors()).toBe(0);
    second.child.kill('SIGTERM');
    await exited(second.child);
    expect(second.child.exitCode).toBe(0);

    const key = loadSeedFile(path.join(dir, 'data', 'kernel.seed'));
    const verified = await verifyReceiptFile(jsonlFile, verificationKeys([key]));
    expect(verified.firstFailure).toBeNull();
    const jsonl = readFileSync(jsonlFile, 'utf8').split('\n').filter((l) => l !== '');
    const store = SqliteReceiptStore.open(path.join(dir, 'data', 'receipts.db'));
    const stored: string[] = [];
    for await (const r of store.iterateBySeq(0)) stored.push(r.jcs);
    store.close();
    expect(stored).toEqual(jsonl); // one chain in both sinks, no gap (verified above)
    const onDisk = new Set(jsonl.map((l) => (JSON.parse(l) as { id: string }).id));
    const missing = [...load.ids, ...more.ids].filter((id) => !onDisk.has(id));
    expect(missing).toEqual([]);
    expect(readdirSync(path.join(dir, 'data')).filter((f) => f.includes('.torn-'))).toHaveLength(1);
  }, 30_000);
});
