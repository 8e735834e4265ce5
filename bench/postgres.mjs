#!/usr/bin/env node
/**
 * PostgreSQL benchmark (README "Several replicas, one PostgreSQL"; the issue "Many replicas, one
 * audit trail"):
 *
 * 1. `postgres-shipping` — receipts/s shipped into PostgreSQL by the receipt shipper
 *    (dist/receipt/pg/shipper.js) with 1 and 3 replicas, each shipping its own chain of N real
 *    batch-signed receipts from its local log (SQLite store): "live" (the receipts come from the
 *    writer's commit hook, the normal case) and "catch-up" (re-read from the local log, as after an
 *    outage). The shippers of the 3 replicas run in this one process (one event loop, pinned like
 *    every bench script to CPU 0); PostgreSQL runs on the other core. Checked: every receipt is in
 *    the store exactly once.
 * 2. `postgres-query` — query latency of the central store holding 1,000,000 receipts (3 chains,
 *    30 days, 200 workloads, seeded server-side with generate_series), through the same code as
 *    `GET /v1/receipts/query` (dist/receipt/pg/store.js): p50/p99 over 200 queries per shape.
 *    Target: p99 ≤ 50 ms for one workload over one day, limit 50 (the embedded store's target).
 *
 *   npm run build && node bench/postgres.mjs [--quick] [--only shipping|query] [--keep-schema NAME]
 *
 * The server: CHIO_BENCH_PG_URL, else CHIO_TEST_PG_URL, else postgres://postgres@127.0.0.1:5432/test.
 * Each run works in its own schema, dropped after (`--keep-schema NAME` keeps/reuses the 1M-receipt
 * schema between runs: seeding takes about a minute). bench/run.mjs runs both as sections
 * (`--only postgres-shipping,postgres-query`; not in the default run).
 * Exit 0 when every check passes, 1 when one fails, 2 when there is no PostgreSQL or no build.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { formatCheck, formatTable } from './lib/report.mjs';
import { DAY_MS, QUERY_P99_TARGET_MS, STORE_DAYS, STORE_RECEIPTS, STORE_START, STORE_WORKLOADS } from './lib/receipt-store-seed.mjs';
import { summarize } from './lib/stats.mjs';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(REPO_ROOT, 'dist');
const PG_URL = process.env.CHIO_BENCH_PG_URL ?? process.env.CHIO_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** dist modules (built by `npm run build`). */
async function load() {
  const need = ['receipt/pg/shipper.js', 'receipt/pg/migrate.js', 'receipt/pg/connection.js', 'receipt/pg/store.js', 'receipt/receipt.js', 'receipt/store.js', 'keys.js'];
  for (const f of need) if (!existsSync(path.join(DIST, f))) throw Object.assign(new Error(`dist/${f} is missing: run npm run build`), { exit: 2 });
  const imp = (f) => import(pathToFileURL(path.join(DIST, f)).href);
  const [shipper, migrate, connection, store, receipt, localStore, keys] = await Promise.all(need.map(imp));
  return { ...shipper, ...migrate, ...connection, ...store, ...receipt, ...localStore, ...keys };
}

/** A fresh schema (or the kept one) and a pool on it; `drop()` removes a fresh one. */
async function schemaOn(m, name) {
  const pg = (await import('pg')).default;
  const admin = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  await admin.connect();
  const schema = name ?? `chio_bench_${process.pid}_${Date.now().toString(36)}`;
  await admin.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  const u = new URL(PG_URL);
  u.searchParams.set('options', `-c search_path=${schema}`);
  const url = u.toString();
  const client = await m.connectPgClient(url, { statementTimeoutMs: 0 });
  await m.migrate(client);
  await client.end();
  return {
    schema,
    url,
    admin,
    drop: async () => {
      if (name === undefined) await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    },
  };
}

const silentLog = { error: () => undefined, warn: () => undefined, info: () => undefined };

/** Draft of receipt i: a realistic mix of verdicts, rules, tools and workloads. */
function draft(i) {
  const w = i % STORE_WORKLOADS;
  const allow = i % 3 !== 0;
  return {
    verdict: allow ? 'allow' : 'deny',
    rule: ['payments_write', 'orders', 'admin'][i % 3],
    tool: ['transfer_funds', 'list_orders', 'reconcile_ledger', 'refund'][i % 4],
    capabilityId: null,
    reasons: allow ? [] : [{ code: 'tool_not_allowed', message: 'the tool is not on the allow list' }],
    request: { id: `req-${i}`, method: 'POST', host: 'payments.prod.svc.cluster.local', path: '/v1/transfers', source: '10.0.0.7:51234' },
    runtimeAttestation: {
      tier: 'attested',
      verifier: 'envoy',
      workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri: `spiffe://prod.chio/ns/prod/sa/w${w}`, trustDomain: 'prod.chio', path: `/ns/prod/sa/w${w}` },
    },
    workloadIdentityMatch: { mode: 'require', matched: true },
    runtimeAssuranceMatch: null,
    policyHash: `sha256:${'ab'.repeat(32)}`,
  };
}

// ---- 1. shipping ----

/** One replica's local side: N receipts sealed in group-commit batches of 256 and written to its local store. */
async function makeReplica(m, dir, n, key) {
  let now = Date.now() - n;
  const chain = new m.ReceiptChain({ key, clock: () => now++, head: null });
  const local = m.SqliteReceiptStore.open(path.join(dir, `${chain.chainId}.db`), { writable: true });
  const batches = [];
  for (let i = 0; i < n; i += 256) {
    const pending = [];
    for (let k = i; k < Math.min(n, i + 256); k++) pending.push(chain.next(draft(k)));
    const batch = chain.sealBatch(pending);
    await local.append(batch, false);
    batches.push(batch);
  }
  return { chain, local, batches };
}

/** Ships every replica's receipts (live: handed over as commits; catch-up: read back from the local logs); receipts/s. */
async function shipOnce(m, pool, replicas, mode, batchSize) {
  const shippers = replicas.map(
    (r) =>
      new m.ReceiptShipper({
        db: pool,
        chain: r.chain.chainId,
        source: r.local,
        committedSeq: mode === 'catch-up' ? r.batches.reduce((n, b) => n + b.length, 0) : 0,
        log: silentLog,
        batchSize,
        bufferLimit: 1_000_000,
      }),
  );
  const total = replicas.reduce((n, r) => n + r.batches.reduce((k, b) => k + b.length, 0), 0);
  const started = performance.now();
  for (const s of shippers) s.start();
  if (mode === 'live') {
    // the writer's commit hook: one batch per replica per turn, as group commits arrive
    const longest = Math.max(...replicas.map((r) => r.batches.length));
    for (let b = 0; b < longest; b++) {
      replicas.forEach((r, i) => {
        const batch = r.batches[b];
        if (batch) shippers[i].committed(batch);
      });
      if (b % 8 === 7) await new Promise((resolve) => setImmediate(resolve));
    }
  }
  const drained = await Promise.all(shippers.map((s) => s.drain(600_000)));
  const seconds = (performance.now() - started) / 1000;
  await Promise.all(shippers.map((s) => s.close(0)));
  if (!drained.every(Boolean)) throw new Error('a shipper did not drain within 10 minutes');
  return { total, seconds, perSecond: total / seconds };
}

async function runShipping(m, o) {
  const perReplica = o.quick ? 5_000 : 30_000;
  const key = m.keyFromSeed(Buffer.alloc(32, 11));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chio-bench-pg-'));
  const rows = [];
  const checks = [];
  try {
    for (const replicaCount of [1, 3]) {
      for (const mode of ['live', 'catch-up']) {
        const db = await schemaOn(m);
        const pool = m.createPgPool(db.url, { max: 4 });
        try {
          const replicas = [];
          for (let r = 0; r < replicaCount; r++) replicas.push(await makeReplica(m, dir, perReplica, key));
          const result = await shipOnce(m, pool, replicas, mode, 1000);
          const { rows: count } = await db.admin.query(`SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM ${db.schema}.chio_receipts`);
          const ok = count[0].n === result.total && count[0].ids === result.total;
          checks.push({ name: `${replicaCount} replica(s), ${mode}: every receipt shipped once`, target: `${result.total} rows, distinct ids`, value: `${count[0].n} rows, ${count[0].ids} ids`, pass: ok });
          rows.push({ replicas: replicaCount, mode, receipts: result.total, seconds: result.seconds.toFixed(2), perSecond: result.perSecond });
          for (const r of replicas) r.local.close();
        } finally {
          await pool.end();
          await db.drop();
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    tables: [
      {
        title: `Shipping into PostgreSQL: ${perReplica.toLocaleString('en-US')} receipts per replica, INSERT batches of 1,000 (receipts/s, all replicas together)`,
        columns: [['replicas', 'replicas', 'int'], ['mode', 'mode'], ['receipts', 'receipts', 'int'], ['seconds', 's'], ['perSecond', 'receipts/s', 'int']],
        rows,
      },
    ],
    checks,
    notes: [
      'live: receipts handed to the shipper by the writer\'s commit hook (buffered); catch-up: re-read from the local SQLite log, as after an outage.',
      'The 3 replicas\' shippers share this process (pinned to CPU 0); PostgreSQL runs on the other core. Every INSERT is one transaction with all filter indexes maintained.',
    ],
    data: { rows },
  };
}

// ---- 2. query latency on 1M ----

/** Seeds the central store server-side (no signatures: query latency does not depend on them). */
async function seedMillion(db) {
  const { rows } = await db.admin.query(`SELECT count(*)::int AS n FROM ${db.schema}.chio_receipts`);
  if (rows[0].n >= STORE_RECEIPTS) return { seeded: false, seconds: 0 };
  const started = performance.now();
  const s = db.schema;
  await db.admin.query(`TRUNCATE ${s}.chio_receipts, ${s}.chio_chains`);
  const chains = ['chn-01JDBENCH0000000000000000A', 'chn-01JDBENCH0000000000000000B', 'chn-01JDBENCH0000000000000000C'];
  for (const c of chains) await db.admin.query(`INSERT INTO ${s}.chio_chains (chain) VALUES ($1)`, [c]);
  const perChain = Math.ceil(STORE_RECEIPTS / chains.length); // 1,000,002 in all
  const step = (STORE_DAYS * DAY_MS) / perChain;
  for (const [k, chain] of chains.entries()) {
    await db.admin.query(
      `INSERT INTO ${s}.chio_receipts (chain, seq, id, time_ms, verdict, rule, tool, capability_id, workload_uri, trust_domain, workload_path, tier, hash, jcs)
       SELECT $1, g, 'rct-' || lpad(to_hex(g * 3 + $2), 26, '0'), ($3::int8 + (g * $4::float8)::int8 + $2),
              CASE WHEN g % 3 = 0 THEN 'deny' ELSE 'allow' END,
              (ARRAY['payments_write','orders','admin'])[g % 3 + 1],
              (ARRAY['transfer_funds','list_orders','reconcile_ledger','refund'])[g % 4 + 1],
              CASE WHEN g % 50 = 0 THEN 'cap-' || lpad(g::text, 26, '0') END,
              'spiffe://prod.chio/ns/prod/sa/w' || ((g * 7 + $2) % ${STORE_WORKLOADS}),
              'prod.chio', '/ns/prod/sa/w' || ((g * 7 + $2) % ${STORE_WORKLOADS}), 'attested',
              'sha256:' || md5(g::text || $1) || md5($1 || g::text),
              '{"chain":"' || $1 || '","seq":' || g || ',"pad":"' || repeat('x', 900) || '"}'
         FROM generate_series(1, $5::int) g`,
      [chain, k, STORE_START, step, perChain],
    );
  }
  await db.admin.query(`ANALYZE ${s}.chio_receipts`);
  return { seeded: true, seconds: (performance.now() - started) / 1000 };
}

async function timeQueries(store, n, makeParams) {
  const samples = [];
  let rows = 0;
  for (let i = 0; i < n; i++) {
    const params = makeParams(i);
    const t = performance.now();
    const page = await store.query(store.parse(params));
    samples.push(performance.now() - t);
    rows += page.receipts.length;
  }
  return { ...summarize(samples), rowsPerQuery: rows / n };
}

async function runQuery(m, o) {
  const db = await schemaOn(m, o.keepSchema);
  const pool = m.createPgPool(db.url, { max: 2 });
  try {
    const seed = await seedMillion(db);
    const store = new m.PgReceiptStore(pool);
    const n = o.quick ? 50 : 200;
    const day = (i) => STORE_START + ((i * 7) % (STORE_DAYS - 1)) * DAY_MS;
    const iso = (ms) => new Date(ms).toISOString();
    const w = (i) => `spiffe://prod.chio/ns/prod/sa/w${(i * 37) % STORE_WORKLOADS}`;
    const shapes = [
      ['one workload, one day, limit 50', (i) => [['workloadUri', w(i)], ['since', iso(day(i))], ['until', iso(day(i) + DAY_MS)], ['limit', '50']]],
      ['verdict=deny, limit 50', () => [['verdict', 'deny'], ['limit', '50']]],
      ['pathPrefix, limit 50', (i) => [['pathPrefix', `/ns/prod/sa/w${(i * 13) % STORE_WORKLOADS}`], ['limit', '50']]],
      ['tool + verdict + one day, limit 50', (i) => [['tool', 'refund'], ['verdict', 'allow'], ['since', iso(day(i))], ['until', iso(day(i) + DAY_MS)], ['limit', '50']]],
      ['capabilityId (rare), limit 50', (i) => [['capabilityId', `cap-${String(((i % 600) + 1) * 50).padStart(26, '0')}`], ['limit', '50']]],
      ['no filter, limit 500', () => [['limit', '500']]],
    ];
    const rows = [];
    for (const [name, make] of shapes) rows.push({ shape: name, ...(await timeQueries(store, n, make)) });
    // a deep walk: one workload over all 30 days, 20 pages of 50 through the cursors
    const deep = [];
    let cursor = null;
    for (let p = 0; p < 20; p++) {
      const t = performance.now();
      const page = await store.query(store.parse([['workloadUri', w(3)], ['limit', '50'], ...(cursor ? [['cursor', cursor]] : [])]));
      deep.push(performance.now() - t);
      cursor = page.nextCursor;
      if (cursor === null) break;
    }
    rows.push({ shape: 'one workload, 30 days, pages 1–20 by cursor', ...summarize(deep), rowsPerQuery: 50 });
    const ids = [];
    for (let i = 0; i < n; i++) ids.push(`rct-${((i * 9973) % STORE_RECEIPTS).toString(16).padStart(26, '0')}`);
    const byId = [];
    for (const id of ids) {
      const t = performance.now();
      await store.get(id);
      byId.push(performance.now() - t);
    }
    rows.push({ shape: 'one receipt by id', ...summarize(byId), rowsPerQuery: 1 });
    const target = rows[0];
    return {
      tables: [
        {
          title: `Query latency on ${STORE_RECEIPTS.toLocaleString('en-US')} central receipts (3 chains, ${STORE_DAYS} days, ${STORE_WORKLOADS} workloads), ms, ${n} queries per shape`,
          columns: [['shape', 'query'], ['p50', 'p50 ms', 'ms'], ['p90', 'p90 ms', 'ms'], ['p99', 'p99 ms', 'ms'], ['max', 'max ms', 'ms'], ['rowsPerQuery', 'rows/query']],
          rows,
        },
      ],
      checks: [{ name: 'one workload over one day, limit 50: p99', target: `≤ ${QUERY_P99_TARGET_MS} ms`, value: `${target.p99.toFixed(2)} ms`, pass: target.p99 <= QUERY_P99_TARGET_MS }],
      notes: [
        seed.seeded ? `seeded ${STORE_RECEIPTS.toLocaleString('en-US')} receipts in ${seed.seconds.toFixed(1)} s (server-side, indexes maintained)` : `reused the seeded schema ${db.schema}`,
        'Measured through PgReceiptStore (the code behind GET /v1/receipts/query when receipts.sinks has a postgres entry), over a pool of 2 connections, one query at a time.',
      ],
      data: { rows, seed },
    };
  } finally {
    await pool.end();
    await db.drop();
  }
}

// ---- sections and the command ----

async function pgReachable() {
  const pg = (await import('pg')).default;
  const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    return null;
  } catch (err) {
    return err.message;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** The two sections for bench/run.mjs (not default). */
export function postgresSections() {
  const section = (name, title, run) => ({
    name,
    title,
    default: false,
    async run(h) {
      const why = await pgReachable();
      if (why !== null) return { tables: [], checks: [], notes: [`skipped: no PostgreSQL at ${PG_URL} (${why}); set CHIO_BENCH_PG_URL`], data: { skipped: true } };
      return run(await load(), { quick: h.settings.quick === true });
    },
  });
  return [
    section('postgres-shipping', 'Receipt shipping into PostgreSQL with 1 and 3 replicas (bench/postgres.mjs)', runShipping),
    section('postgres-query', 'Central query latency on 1,000,000 receipts in PostgreSQL (bench/postgres.mjs)', runQuery),
  ];
}

async function cli() {
  const { values } = parseArgs({ options: { quick: { type: 'boolean' }, only: { type: 'string' }, 'keep-schema': { type: 'string' } } });
  const why = await pgReachable();
  if (why !== null) {
    process.stderr.write(`bench/postgres.mjs: no PostgreSQL at ${PG_URL} (${why}); set CHIO_BENCH_PG_URL\n`);
    return 2;
  }
  let m;
  try {
    m = await load();
  } catch (err) {
    process.stderr.write(`bench/postgres.mjs: ${err.message}\n`);
    return 2;
  }
  const o = { quick: values.quick === true, keepSchema: values['keep-schema'] };
  const parts = values.only ? [values.only] : ['shipping', 'query'];
  let failed = false;
  for (const part of parts) {
    const result = part === 'shipping' ? await runShipping(m, o) : await runQuery(m, o);
    for (const t of result.tables) process.stdout.write(`${formatTable(t)}\n\n`);
    for (const c of result.checks) process.stdout.write(`${formatCheck(c)}\n`);
    for (const n of result.notes) process.stdout.write(`  note: ${n}\n`);
    process.stdout.write('\n');
    failed ||= result.checks.some((c) => !c.pass);
  }
  return failed ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  cli().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`bench/postgres.mjs: ${err.stack ?? err}\n`);
      process.exit(err.exit ?? 1);
    },
  );
}
