#!/usr/bin/env node
/**
 * The SQLite receipt store's CPU per receipt by transaction size (the reason the store follows the
 * JSONL file in ~1,000-receipt transactions: src/receipt/sinks/follower.ts). Writes `--receipts`
 * chained rows (1,400-byte texts, 200 workloads, the store's real schema and indexes) through the
 * store's own connection code, on this thread, one transaction per `--batches` entry, and prints
 * user + system CPU and wall time per receipt. `--durable` commits with fsync (synchronous FULL).
 * `--indexes none` drops every secondary index (only the table and its rowid B-tree): the floor of
 * a row per receipt. `--rounds N` repeats each size N times, alternating, and prints the lowest
 * (the host is noisy; the lowest is the least disturbed).
 *
 *   npm run build && node bench/sqlite-batch.mjs [--batches 1,12,64,256,1024] [--receipts 20000] [--durable]
 *     [--indexes store|none] [--rounds 1] [--dir DIR]
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    batches: { type: 'string', default: '1,12,64,256,1024' },
    receipts: { type: 'string', default: '20000' },
    durable: { type: 'boolean', default: false },
    indexes: { type: 'string', default: 'store' },
    rounds: { type: 'string', default: '1' },
    dir: { type: 'string' },
  },
});
const dist = (p) => pathToFileURL(path.join(REPO_ROOT, 'dist', p)).href;
const { openStoreConnection } = await import(dist('receipt/sinks/sqlite-worker.js'));
const { STORE_SQL } = await import(dist('receipt/store.js'));
const Database = createRequire(import.meta.url)('better-sqlite3');
const dir = values.dir ?? mkdtempSync(path.join(os.tmpdir(), 'chio-sqlite-batch-'));
mkdirSync(dir, { recursive: true });
const total = Number(values.receipts);
const body = 'x'.repeat(1400);
if (values.indexes !== 'store' && values.indexes !== 'none') throw new TypeError(`--indexes must be store or none, not ${values.indexes}`);
// the store's schema without its CREATE INDEX statements: the table alone
const sql = values.indexes === 'none' ? { ...STORE_SQL, create: STORE_SQL.create.split('\n').filter((l) => !/^\s*CREATE (UNIQUE )?INDEX/.test(l)).join('\n') } : STORE_SQL;
const rounds = Number(values.rounds);
const sizes = values.batches.split(',').map(Number);
const best = new Map();

for (let round = 0; round < rounds; round++) for (const size of sizes) {
  const file = path.join(dir, `batch-${size}.db`);
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  const conn = openStoreConnection(Database, { path: file, role: 'writer', sql });
  // the write requests are built first: only the store's work is timed
  const requests = [];
  let prev = null;
  let after = null;
  for (let seq = 1; seq <= total; ) {
    const texts = [];
    const hashes = [];
    const rows = [];
    for (let i = 0; i < size && seq <= total; i++, seq++) {
      const id = `rct-01K${String(seq).padStart(23, '0')}`;
      const text = `{"id":"${id}","prevHash":${prev === null ? 'null' : `"${prev}"`},"seq":${seq},"body":"${body}"}`;
      const hash = `sha256:${createHash('sha256').update(text).digest('hex')}`;
      const w = (seq * 7919) % 200;
      texts.push(text);
      hashes.push(hash);
      rows.push(seq, id, prev, 1_764_000_000_000 + seq, seq % 5 ? 'allow' : 'deny', `rule-${seq % 5}`, `tool-${seq % 10}`, null, `spiffe://prod.chio/ns/team-${w % 10}/sa/w${w}`, 'prod.chio', `/ns/team-${w % 10}/sa/w${w}`, 'attested');
      prev = hash;
    }
    requests.push({ after, truncate: false, texts, hashes, rows, durable: values.durable });
    after = { seq: seq - 1, hash: prev };
  }
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (const r of requests) conn.write(r);
  const cpu = process.cpuUsage(cpu0);
  const wallUs = Number(process.hrtime.bigint() - t0) / 1e3;
  conn.close();
  const was = best.get(size);
  if (was === undefined || cpu.user + cpu.system < was.cpu.user + was.cpu.system) best.set(size, { cpu, wallUs });
}
const per = (us) => (us / total).toFixed(1);
const what = `${values.indexes === 'none' ? ', no secondary index' : ''}${values.durable ? ' (fsync)' : ''}${rounds > 1 ? `, lowest of ${rounds}` : ''}`;
for (const size of sizes) {
  const { cpu, wallUs } = best.get(size);
  console.log(`${String(size).padStart(5)} receipts per transaction${what}: CPU ${per(cpu.user + cpu.system)} µs per receipt (user ${per(cpu.user)}, system ${per(cpu.system)}), wall ${per(wallUs)} µs`);
}
if (values.dir === undefined) rmSync(dir, { recursive: true, force: true });
