/**
 * Receipt shipping (src/receipt/pg/shipper.ts): a local log (the SQLite store here) tailed into
 * the central store in batches, exactly once, resuming from what PostgreSQL holds after a restart
 * or an outage (made with a TCP proxy we cut and restore), re-reading the local log when the
 * buffer overflowed, refusing forks, capping retention, and leaving every chain verifiable.
 * Needs PostgreSQL (support/pg.ts).
 */
import path from 'node:path';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/check/pipeline.js';
import { createPgPool, redactPgUrl, type PgPool } from '../../src/receipt/pg/connection.js';
import { migrate } from '../../src/receipt/pg/migrate.js';
import { ReceiptShipper, type ShipperMetrics } from '../../src/receipt/pg/shipper.js';
import { PgReceiptStore } from '../../src/receipt/pg/store.js';
import { verifyCentralStore } from '../../src/receipt/pg/verify.js';
import { ReceiptChain, type SealedReceipt } from '../../src/receipt/receipt.js';
import { SqliteReceiptStore } from '../../src/receipt/store.js';
import { verificationKeys } from '../../src/receipt/verify.js';
import { recordingLogger } from '../helpers/service.js';
import { KEY, T0, tempDir, variedDraft } from '../receipt/helpers.js';
import { createTestSchema, PgProxy, SKIP_PG, type TestSchema } from './support/pg.js';

const KEYS = verificationKeys([KEY]);

/** A replica's local side: a chain, its local store, and the batches it committed. */
class LocalReplica {
  readonly chain: ReceiptChain;
  readonly store: SqliteReceiptStore;
  readonly committed: SealedReceipt[] = [];
  #i = 0;

  constructor(chainId?: string) {
    this.chain = new ReceiptChain({ key: KEY, clock: () => T0 + this.#i * 1000, head: null, ...(chainId === undefined ? {} : { chainId }) });
    this.store = SqliteReceiptStore.open(path.join(tempDir('chio-ship-'), 'receipts.db'), { writable: true });
  }

  /** Seals `size` receipts as one group-commit batch, writes it locally, returns it (as onCommitted would get it). */
  async commit(size: number): Promise<SealedReceipt[]> {
    const pending = [];
    for (let n = 0; n < size; n++, this.#i++) pending.push(this.chain.next(variedDraft(this.#i)));
    const batch = this.chain.sealBatch(pending);
    await this.store.append(batch);
    this.committed.push(...batch);
    return batch;
  }
}

function metrics(): ShipperMetrics & { lagReceipts: number; lagSeconds: number; shippedTotal: number; errors: number } {
  const m = {
    lagReceipts: -1,
    lagSeconds: -1,
    shippedTotal: 0,
    errors: 0,
    lag: (r: number, s: number) => {
      m.lagReceipts = r;
      m.lagSeconds = s;
    },
    shipped: (n: number) => void (m.shippedTotal += n),
    error: () => void (m.errors += 1),
  };
  return m;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(SKIP_PG)('receipt shipping to PostgreSQL', () => {
  let schema: TestSchema;
  let proxy: PgProxy;
  let pool: PgPool;
  const cleanup: Array<() => Promise<void> | void> = [];

  beforeEach(async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
    proxy = await PgProxy.start();
    pool = createPgPool(proxy.url(schema.schema), { connectTimeoutMs: 1000, onError: () => undefined });
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    await pool.end().catch(() => undefined);
    await proxy.close();
    await schema.drop();
  });

  function shipper(local: LocalReplica, log: Logger, m: ShipperMetrics, extra: Partial<ConstructorParameters<typeof ReceiptShipper>[0]> = {}): ReceiptShipper {
    const s = new ReceiptShipper({
      db: pool,
      chain: local.chain.chainId,
      source: local.store,
      committedSeq: local.committed.length,
      log,
      metrics: m,
      batchSize: 100,
      minBackoffMs: 20,
      maxBackoffMs: 200,
      lagIntervalMs: 20,
      ...extra,
    });
    cleanup.push(() => s.close(0));
    s.start();
    return s;
  }

  async function centralSeqs(chain: string): Promise<number[]> {
    const { rows } = await schema.admin.query<{ seq: string }>('SELECT seq FROM chio_receipts WHERE chain = $1 ORDER BY seq', [chain]);
    return rows.map((r) => Number(r.seq));
  }

  const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

  it('ships every committed receipt once, in batches, and the chain verifies centrally', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    const m = metrics();
    const s = shipper(local, recordingLogger(), m);
    for (const size of [1, 7, 250, 3, 64]) s.committed(await local.commit(size));
    expect(await s.drain(10_000)).toBe(true);
    expect(await centralSeqs(local.chain.chainId)).toEqual(range(1, 325));
    expect(m.shippedTotal).toBe(325);
    await until('lag 0', () => m.lagReceipts === 0 && m.lagSeconds === 0);
    const { rows } = await schema.admin.query<{ jcs: string }>('SELECT jcs FROM chio_receipts WHERE chain = $1 ORDER BY seq', [local.chain.chainId]);
    expect(rows.map((r) => r.jcs)).toEqual(local.committed.map((c) => c.jcs));
    const reports = await verifyCentralStore(new PgReceiptStore(schema.admin), KEYS);
    expect(reports).toEqual([{ chain: local.chain.chainId, ok: true, receipts: 325, firstSeq: 1, headSeq: 325, firstFailure: null }]);
  });

  it('an outage never loses or duplicates a receipt: lag grows, backoff retries, the local log is re-read after the buffer overflowed', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    const log = recordingLogger();
    const m = metrics();
    const s = shipper(local, log, m, { bufferLimit: 150 });
    s.committed(await local.commit(40));
    expect(await s.drain(10_000)).toBe(true);

    proxy.cut();
    for (let b = 0; b < 20; b++) s.committed(await local.commit(25)); // 500 receipts: more than the buffer holds
    await until('lag to show', () => m.lagReceipts === 500 && m.errors > 0);
    expect(s.shippedSeq === null || s.shippedSeq === 40).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(await centralSeqs(local.chain.chainId)).toEqual(range(1, 40));
    expect(log.entries.filter((e) => e.level === 'error').map((e) => e.msg)).toContain(
      'receipt shipping to PostgreSQL failed; retrying with backoff (decisions go on; the local log keeps every receipt)',
    );

    proxy.restore();
    s.committed(await local.commit(10));
    expect(await s.drain(15_000)).toBe(true);
    expect(await centralSeqs(local.chain.chainId)).toEqual(range(1, 550));
    await until('lag 0', () => m.lagReceipts === 0);
    const [report] = await verifyCentralStore(new PgReceiptStore(schema.admin), KEYS);
    expect(report).toMatchObject({ ok: true, receipts: 550 });
  });

  it('lag seconds is the age of the oldest receipt not shipped yet, not how long some lag has lasted', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    let now = 1_000_000;
    const m = metrics();
    let cutAt = Number.POSITIVE_INFINITY;
    const counting: ShipperMetrics = {
      ...m,
      shipped: (n) => {
        m.shipped(n);
        if (m.shippedTotal >= cutAt) proxy.cut();
      },
    };
    const s = shipper(local, recordingLogger(), counting, { clock: () => now, batchSize: 10 });
    s.committed(await local.commit(40));
    expect(await s.drain(10_000)).toBe(true);

    proxy.cut();
    now = 1_010_000;
    s.committed(await local.commit(10)); // seq 41–50, committed at 1,010 s
    now = 1_070_000;
    s.committed(await local.commit(10)); // seq 51–60, committed at 1,070 s
    await until('the outage to show', () => m.lagReceipts === 20 && m.errors > 0);
    expect(m.lagSeconds).toBe(60);

    now = 1_100_000;
    cutAt = 50; // ship seq 41–50 only
    proxy.restore();
    await until('seq 41–50 shipped', () => s.shippedSeq === 50 && m.lagReceipts === 10);
    expect(m.lagSeconds).toBe(30); // seq 51's age; was 90 (the time since the lag began)
    expect(await centralSeqs(local.chain.chainId)).toEqual(range(1, 50));

    cutAt = Number.POSITIVE_INFINITY;
    proxy.restore();
    await until('all shipped', () => s.shippedSeq === 60 && m.lagReceipts === 0);
    expect(m.lagSeconds).toBe(0);
  });

  it('a restart (or a crash mid-batch) resumes after the last receipt PostgreSQL holds', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    const first = shipper(local, recordingLogger(), metrics());
    first.committed(await local.commit(120));
    expect(await first.drain(10_000)).toBe(true);
    proxy.cut();
    first.committed(await local.commit(80)); // committed locally, never shipped: the process dies now
    await first.close(0);

    proxy.restore();
    const m = metrics();
    const second = shipper(local, recordingLogger(), m);
    second.committed(await local.commit(5));
    expect(await second.drain(10_000)).toBe(true);
    expect(await centralSeqs(local.chain.chainId)).toEqual(range(1, 205));
    expect(m.shippedTotal).toBe(85); // read back from the local log, from seq 121 on
  });

  it('a retried batch inserts nothing twice; a different receipt at a shipped seq is a fork: refused and reported', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    const s = shipper(local, recordingLogger(), metrics());
    s.committed(await local.commit(30));
    expect(await s.drain(10_000)).toBe(true);
    await s.close(0);

    // the same chain id, another history (a local log replaced by a different one)
    const impostor = new LocalReplica(local.chain.chainId);
    cleanup.push(() => impostor.store.close());
    await impostor.commit(41); // seq 1..41 again, other receipt ids: its seq 31 names a seq 30 the store does not hold
    const log = recordingLogger();
    const m = metrics();
    const forked = shipper(impostor, log, m);
    await until('the fork to be reported', () => m.errors > 0);
    const error = log.entries.find((e) => e.level === 'error');
    expect(error?.msg).toBe(
      'receipt shipping to PostgreSQL stopped: the chain does not match the central store (decisions go on; the local log keeps every receipt)',
    );
    expect((error?.obj as { code: string }).code).toBe('receipt_chain_broken');
    expect(await centralSeqs(local.chain.chainId)).toEqual(range(1, 30));
    const { rows } = await schema.admin.query<{ jcs: string }>('SELECT jcs FROM chio_receipts WHERE chain = $1 ORDER BY seq', [local.chain.chainId]);
    expect(rows.map((r) => r.jcs)).toEqual(local.committed.map((c) => c.jcs));
    expect(forked.shippedSeq === null || forked.shippedSeq === 30).toBe(true);
  });

  it('retention never prunes a receipt that is not shipped yet', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    const s = shipper(local, recordingLogger(), metrics());
    expect(await s.prunableThrough(1000)).toBe(0);
    s.committed(await local.commit(50));
    expect(await s.drain(10_000)).toBe(true);
    expect(await s.prunableThrough(1000)).toBe(50);
    expect(await s.prunableThrough(20)).toBe(20);
    proxy.cut();
    s.committed(await local.commit(50));
    await new Promise((r) => setTimeout(r, 100));
    expect(await s.prunableThrough(1000)).toBe(50);
    expect(await s.pruneThrough()).toBe(0);
  });

  it('a local log that lost its start before shipping began: the chain starts there centrally, and still verifies', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    await local.commit(60);
    await local.commit(40);
    await local.store.pruneThrough(60); // retention ran before shipping was configured
    const log = recordingLogger();
    const s = shipper(local, log, metrics());
    expect(await s.drain(10_000)).toBe(true);
    expect(await centralSeqs(local.chain.chainId)).toEqual(range(61, 100));
    expect(log.entries.map((e) => e.msg)).toContain(
      'the local receipt log no longer holds the start of its chain; the central store starts this chain where the log does',
    );
    const reports = await verifyCentralStore(new PgReceiptStore(schema.admin), KEYS);
    expect(reports).toEqual([{ chain: local.chain.chainId, ok: true, receipts: 40, firstSeq: 61, headSeq: 100, firstFailure: null }]);
  });

  it('verification names the receipt an attacker changed in the central store', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    const s = shipper(local, recordingLogger(), metrics());
    s.committed(await local.commit(20));
    expect(await s.drain(10_000)).toBe(true);
    const admin = new pg.Client({ connectionString: schema.url });
    await admin.connect();
    cleanup.push(() => admin.end());
    await admin.query(`UPDATE chio_receipts SET jcs = replace(jcs, '"verdict":"deny"', '"verdict":"allow"') WHERE chain = $1 AND seq = 7`, [local.chain.chainId]);
    const [report] = await verifyCentralStore(new PgReceiptStore(admin), KEYS);
    expect(report).toMatchObject({ chain: local.chain.chainId, ok: false, receipts: 6, firstFailure: { line: 7, seq: 7, code: 'receipt_bad_signature' } });
  });
});

describe.skipIf(SKIP_PG)('PostgreSQL review of 2026-11-26', () => {
  let schema: TestSchema;
  const cleanup: Array<() => Promise<void> | void> = [];
  beforeEach(async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    await schema.drop();
  });

  async function shipped(local: LocalReplica, n: number): Promise<PgPool> {
    const pool = createPgPool(schema.url);
    cleanup.push(() => pool.end());
    const s = new ReceiptShipper({ db: pool, chain: local.chain.chainId, source: local.store, committedSeq: 0, log: recordingLogger(), batchSize: 50 });
    s.start();
    s.committed(await local.commit(n));
    expect(await s.drain(10_000)).toBe(true);
    await s.close(0);
    return pool;
  }

  it('verify catches a row whose query columns were altered (its signed text untouched), naming the receipt and the column', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    await shipped(local, 20);
    const deny = local.committed.find((c) => c.jcs.includes('"verdict":"deny"'));
    expect(deny).toBeDefined();
    await schema.admin.query(`UPDATE chio_receipts SET verdict = 'allow' WHERE chain = $1 AND seq = $2`, [local.chain.chainId, deny!.seq]);
    const [report] = await verifyCentralStore(new PgReceiptStore(schema.admin), KEYS);
    expect(report?.ok).toBe(false);
    expect(report?.firstFailure).toEqual({
      line: deny!.seq,
      id: deny!.id,
      seq: deny!.seq,
      code: 'receipt_malformed',
      message: 'the stored column verdict ("allow") does not describe the signed receipt ("deny"): the row was altered',
    });
  });

  it('a replica holding another history that ends exactly at the central head is refused as a fork at resume', async () => {
    const local = new LocalReplica();
    cleanup.push(() => local.store.close());
    await shipped(local, 10);
    const impostor = new LocalReplica(local.chain.chainId); // a cloned data volume, then diverged
    cleanup.push(() => impostor.store.close());
    await impostor.commit(10);
    const pool = createPgPool(schema.url);
    cleanup.push(() => pool.end());
    const log = recordingLogger();
    const s = new ReceiptShipper({ db: pool, chain: local.chain.chainId, source: impostor.store, committedSeq: 10, log, batchSize: 50 });
    cleanup.push(() => s.close(0));
    s.start();
    await until('the fork to be reported', () => log.entries.some((e) => e.level === 'error'));
    const error = log.entries.find((e) => e.level === 'error');
    expect((error?.obj as { code: string }).code).toBe('receipt_chain_broken');
    expect(String((error?.obj as { err: string }).err)).toMatch(/^chain chn-\S+: PostgreSQL holds sha256:[0-9a-f]{64} at seq 10, but the local log holds sha256:[0-9a-f]{64} there \(a fork: was the data volume cloned or restored\?\)$/);
    expect(await s.prunableThrough(1000)).toBe(0);
  });

  it('a password given as a URL parameter is masked wherever the URL is shown', () => {
    expect(redactPgUrl('postgres://chio@db:5432/audit?password=s3cr3t&sslmode=require')).toBe('postgres://chio@db:5432/audit?password=***&sslmode=require');
    expect(redactPgUrl('postgres://chio:pw@db/audit?sslpassword=k3y')).toBe('postgres://chio:***@db/audit?sslpassword=***');
  });
});

describe.skipIf(SKIP_PG)('the central insert', () => {
  let schema: TestSchema;
  afterEach(async () => {
    await schema.drop();
  });

  it('is idempotent for the same receipts and all-or-nothing for a batch that overlaps a different history', async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
    const { insertReceipts, registerChain } = await import('../../src/receipt/pg/insert.js');
    const { sealedRow } = await import('../../src/receipt/pg/receipt-row.js');
    const a = new LocalReplica();
    const b = new LocalReplica(a.chain.chainId);
    const chain = a.chain.chainId;
    const rowsA = (await a.commit(5)).map((s) => sealedRow(s, chain));
    const rowsB = (await b.commit(7)).map((s) => sealedRow(s, chain));
    a.store.close();
    b.store.close();
    await registerChain(schema.admin, chain, 1, null);
    expect(await insertReceipts(schema.admin, chain, rowsA)).toBe(5);
    expect(await insertReceipts(schema.admin, chain, rowsA.slice(1, 4))).toBe(0);
    await expect(insertReceipts(schema.admin, chain, rowsB.slice(2))).rejects.toMatchObject({
      code: 'receipt_chain_broken',
      message: `chain ${chain} forked: the central store holds seq 3 with hash ${rowsA[2]?.hash}, the local log has ${rowsB[2]?.id} with hash ${rowsB[2]?.hash}`,
    });
    const { rows } = await schema.admin.query<{ seq: string; id: string }>('SELECT seq, id FROM chio_receipts ORDER BY seq');
    expect(rows.map((r) => [Number(r.seq), r.id])).toEqual(rowsA.map((r) => [r.seq, r.id]));
  });
});

describe.skipIf(SKIP_PG)('chio db prune and chio receipt verify --pg-url-env', () => {
  let schema: TestSchema;
  afterEach(async () => {
    await schema.drop();
  });

  it('prunes each chain before a time, keeps its newest receipt, and what remains verifies; shipping goes on after it', async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
    const { main } = await import('../../src/cli/index.js');
    const { fakeIO } = await import('../helpers/cli-io.js');
    const local = new LocalReplica(); // receipt i is stamped T0 + i s
    const pool = createPgPool(schema.url);
    const s = new ReceiptShipper({ db: pool, chain: local.chain.chainId, source: local.store, committedSeq: 0, log: recordingLogger(), batchSize: 30 });
    try {
      s.start();
      s.committed(await local.commit(60));
      s.committed(await local.commit(40));
      expect(await s.drain(10_000)).toBe(true);

      const env = { PG: schema.url };
      const prune = fakeIO('/', env);
      expect(await main(['db', 'prune', '--url-env', 'PG', '--before', new Date(T0 + 40_500).toISOString(), '--json'], prune)).toBe(0);
      expect(JSON.parse(prune.out)).toEqual({ before: new Date(T0 + 40_500).toISOString(), deleted: 41, chains: [{ chain: local.chain.chainId, through: 41, deleted: 41 }] });

      const dir = tempDir('chio-pg-verify-');
      const keyArgs = ['--public-key', KEY.publicKeyRaw.toString('hex')];
      const verify = fakeIO(dir, env);
      expect(await main(['receipt', 'verify', '--pg-url-env', 'PG', ...keyArgs], verify)).toBe(0);
      expect(verify.out).toBe(`${schema.url}: OK\nchain ${local.chain.chainId}: OK: 59 receipt(s) verified, seq 42 to 100\n`);

      s.committed(await local.commit(10)); // shipping resumes after the pruned prefix
      expect(await s.drain(10_000)).toBe(true);
      const all = fakeIO('/', env);
      expect(await main(['db', 'prune', '--url-env', 'PG', '--before', '2100-01-01T00:00:00Z', '--json'], all)).toBe(0);
      // every receipt is older, but the chain's newest is kept: it now starts at 110, pruned through 109 (was reported as 110)
      expect(JSON.parse(all.out)).toEqual({ before: '2100-01-01T00:00:00Z', deleted: 68, chains: [{ chain: local.chain.chainId, through: 109, deleted: 68 }] });
      const status = fakeIO('/', env);
      expect(await main(['db', 'status', '--url-env', 'PG'], status)).toBe(0);
      expect(status.out).toContain(`chain ${local.chain.chainId}: 1 receipt(s), seq 110 to 110\n`);
      const again = fakeIO(dir, env);
      expect(await main(['receipt', 'verify', '--pg-url-env', 'PG', ...keyArgs, '--json'], again)).toBe(0);
      expect(JSON.parse(again.out)).toEqual({ ok: true, chains: [{ chain: local.chain.chainId, ok: true, receipts: 1, firstSeq: 110, headSeq: 110, firstFailure: null }] });

      // an altered receipt: exit 1 naming it; the wrong key: exit 1 too
      await schema.admin.query("UPDATE chio_receipts SET jcs = replace(jcs, '\"seq\":110', '\"seq\":110 ') WHERE seq = 110");
      const bad = fakeIO(dir, env);
      expect(await main(['receipt', 'verify', '--pg-url-env', 'PG', ...keyArgs], bad)).toBe(1);
      expect(bad.out).toContain(`chain ${local.chain.chainId}: FAILED\n  line 1 (`);
      const usage = fakeIO(dir, env);
      expect(await main(['receipt', 'verify', '--pg-url-env', 'PG', 'file.jsonl', ...keyArgs], usage)).toBe(2);
      expect(usage.err).toContain('chio receipt verify: give FILE|DIR or --pg-url-env, not both');
      const noKey = fakeIO(dir, env);
      expect(await main(['receipt', 'verify', '--pg-url-env', 'PG'], noKey)).toBe(2);
      expect(noKey.err).toContain('no public key to verify with');
      const notAChain = fakeIO(dir, env);
      expect(await main(['receipt', 'verify', '--pg-url-env', 'PG', '--chain', 'nope', ...keyArgs], notAChain)).toBe(2);
      expect(notAChain.err).toContain('chio receipt verify: --chain "nope" is not a chain id (chn- and a ULID, as `chio db status` lists them)');
      const absent = fakeIO(dir, env);
      expect(await main(['receipt', 'verify', '--pg-url-env', 'PG', '--chain', 'chn-01JD0000000000000000000000', ...keyArgs], absent)).toBe(1);
      expect(absent.out).toBe(`${schema.url}: OK\nno chain chn-01JD0000000000000000000000 in the store\n`);
      expect(await main(['db', 'prune', '--url-env', 'PG'], fakeIO('/', env))).toBe(2);
    } finally {
      await s.close(0);
      await pool.end();
      local.store.close();
    }
  });
});
