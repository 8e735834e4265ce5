/**
 * A receipt sink that cannot write, through the real service (SPEC §2.1 receipts.on_failure):
 * deny → the allow becomes deny `receipt_unavailable`; allow → the request is allowed without a
 * receipt, `chio_receipt_sink_errors_total{sink}` counts it and it is logged. Either way the sinks
 * stay on one chain and recover afterwards. With a JSONL file, the SQLite store follows it
 * (src/receipt/sinks/follower.ts), so its failure shows one write late; without one, it is
 * written before the answer. (The SQLite store "starts failing" through a trigger that aborts
 * every insert: that works for root too, which permission bits do not.)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { startService } from '../../src/main.js';
import { SqliteReceiptStore } from '../../src/receipt/store.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
import { healthClient } from '../helpers/health-client.js';
import { demoPolicy, fixtureRequest, recordingLogger } from '../helpers/service.js';
import { tempDir } from './helpers.js';
import { breakStore, receiptIdOf, startStoreService, type StoreService } from './store-service.js';

let svc: StoreService | undefined;
afterEach(async () => {
  await svc?.close();
  svc = undefined;
});

async function sinkErrors(s: StoreService): Promise<Record<string, number>> {
  const metric = await s.service.metrics.receiptSinkErrors.get();
  return Object.fromEntries(metric.values.map((v) => [String(v.labels['sink']), v.value]));
}

async function expectOneVerifiedChain(s: StoreService, receipts: number): Promise<void> {
  const texts = await s.storeTexts();
  expect(texts).toHaveLength(receipts);
  expect(s.jsonlTexts()).toEqual(texts);
  const verified = await verifyReceiptFile(s.receiptsFile, verificationKeys([s.service.key]));
  expect(verified).toMatchObject({ ok: true, receipts });
}

/** Waits until the store's follower has reported `n` failed writes (it writes within ~50 ms of a commit). */
async function untilSinkErrors(s: StoreService, n: number): Promise<void> {
  await vi.waitFor(async () => expect((await sinkErrors(s))['sqlite'] ?? 0).toBeGreaterThanOrEqual(n), { timeout: 5000, interval: 10 });
}

function errorMessages(s: StoreService): string[] {
  return s.log.entries.filter((e) => e.level === 'error').map((e) => e.msg);
}

// With a JSONL file configured, the SQLite store follows it (src/receipt/sinks/follower.ts): a receipt
// is durable once the JSONL file holds it, and the store writes it within ~50 ms. So the first
// allow after the store breaks is answered (its receipt is durable); the failed write of the store
// then keeps further receipts from being committed until it can write again.
describe('receipts.on_failure: deny (the default)', () => {
  it('once the store cannot write, an allow becomes deny receipt_unavailable; the store catches up when it can write again', async () => {
    svc = await startStoreService({ onFailure: 'deny' });
    const first = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(first.status.code).toBe(0);
    await svc.storeTexts(); // the store has written it

    const broken = breakStore(svc.dbFile);
    // durable in the JSONL file: answered; the store's write of it fails after the answer
    const durable = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(durable.status.code).toBe(0);
    expect(receiptIdOf(durable)).toMatch(/^rct-/);
    await untilSinkErrors(svc, 1);
    expect(await sinkErrors(svc)).toEqual({ jsonl: 0, sqlite: 1 });

    const denied = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(denied.status).toMatchObject({ code: 7, message: 'receipt_unavailable' });
    expect(denied.ok_response).toBeUndefined();
    expect(denied.denied_response?.status.code).toBe('Forbidden');
    // the deny could not be recorded either (the store still fails): no receipt id is claimed
    expect(receiptIdOf(denied)).toBeNull();
    expect(JSON.parse(denied.denied_response?.body ?? '')).toEqual({ verdict: 'deny', reason: 'receipt_unavailable', receiptId: null });
    // the allow's batch and the deny's batch each retried the store's queue first, and failed
    expect(await sinkErrors(svc)).toEqual({ jsonl: 0, sqlite: 3 });
    expect(errorMessages(svc)).toEqual([
      'receipt sink write failed',
      'receipt sink write failed',
      'receipt not durable; allow becomes deny receipt_unavailable',
      'receipt sink write failed',
    ]);
    expect(svc.log.entries.find((e) => e.msg === 'receipt sink write failed')?.obj).toMatchObject({ sink: 'sqlite', err: expect.stringContaining('disk full (simulated)') });
    // nothing was committed while the store failed: the JSONL file holds the two answered receipts
    expect(svc.jsonlTexts().map((t) => (JSON.parse(t) as { id: string }).id)).toEqual([receiptIdOf(first), receiptIdOf(durable)]);
    // a replica that can only deny receipt_unavailable is not ready (Kubernetes serves from the others)
    const notReady = await svc.get('/readyz', null);
    expect(notReady.status).toBe(503);
    expect(notReady.json).toEqual({ status: 'not ready', reason: expect.stringMatching(/^receipt sink sqlite cannot write: .*disk full \(simulated\)/) });
    // and gRPC health says so too (probes and Envoy's gRPC health checks read it; it was SERVING)
    const health = healthClient(svc.service.grpcPort);
    try {
      await vi.waitFor(async () => expect(await health.check()).toBe('NOT_SERVING'), { timeout: 3000, interval: 50 });
      expect(await health.check('envoy.service.auth.v3.Authorization')).toBe('NOT_SERVING');

      broken.heal();
      const after = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
      expect(after.status.code).toBe(0);
      expect((await svc.get('/readyz', null)).status).toBe(200);
      await vi.waitFor(async () => expect(await health.check()).toBe('SERVING'), { timeout: 3000, interval: 50 });
    } finally {
      health.close();
    }
    const after = { id: svc.jsonlTexts().map((t) => (JSON.parse(t) as { id: string }).id).at(-1) };
    await expectOneVerifiedChain(svc, 3);
    expect((await svc.storeTexts()).map((t) => (JSON.parse(t) as { id: string }).id)).toEqual([receiptIdOf(first), receiptIdOf(durable), after.id]);
  });
});

describe('receipts.on_failure: allow', () => {
  it('once the store cannot write, requests are allowed without a receipt, the errors counted and logged; recovery continues the chain', async () => {
    svc = await startStoreService({ onFailure: 'allow' });
    await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    await svc.storeTexts(); // the store has written it
    const broken = breakStore(svc.dbFile);
    const durable = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(receiptIdOf(durable)).toMatch(/^rct-/);
    await untilSinkErrors(svc, 1);

    const allowed = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(allowed.status.code).toBe(0);
    expect(allowed.ok_response).toBeDefined();
    expect(receiptIdOf(allowed)).toBeNull();
    expect(await sinkErrors(svc)).toEqual({ jsonl: 0, sqlite: 2 });
    expect(errorMessages(svc)).toEqual(['receipt sink write failed', 'receipt sink write failed', 'receipt not durable; answering without it (receipts.on_failure)']);
    const metrics = await (await fetch(`${svc.adminUrl}/metrics`)).text();
    expect(metrics).toContain('chio_receipt_sink_errors_total{sink="sqlite"} 2');
    expect(svc.jsonlTexts()).toHaveLength(2);
    expect((await svc.get('/readyz', null)).status).toBe(200); // on_failure allow: it still admits

    broken.heal();
    const after = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(receiptIdOf(after)).toMatch(/^rct-/);
    await expectOneVerifiedChain(svc, 3);
  });
});

describe('a SQLite store without a JSONL file', () => {
  it('is written before the answer: the first allow after it breaks becomes deny receipt_unavailable', async () => {
    svc = await startStoreService({ onFailure: 'deny', sinks: ['sqlite'] });
    expect((await svc.client.check(fixtureRequest('http-mtls-spiffe-full'))).status.code).toBe(0);
    const broken = breakStore(svc.dbFile);
    const denied = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(denied.status).toMatchObject({ code: 7, message: 'receipt_unavailable' });
    expect(await sinkErrors(svc)).toEqual({ sqlite: 2 });
    broken.heal();
    expect((await svc.client.check(fixtureRequest('http-mtls-spiffe-full'))).status.code).toBe(0);
    const store = SqliteReceiptStore.open(svc.dbFile);
    try {
      expect((await store.head())?.seq).toBe(2);
    } finally {
      store.close();
    }
  });
});

describe('a store that cannot be opened', () => {
  it('fails the start with a message naming the file', async () => {
    const dir = tempDir('chio-badstore-');
    writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
    mkdirSync(path.join(dir, 'data'));
    writeFileSync(path.join(dir, 'data', 'not-a-folder'), 'x');
    const text = [
      'schema: chio.config.v1',
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: sqlite, path: ./data/not-a-folder/receipts.db } ] }',
      '',
    ].join('\n');
    const config = parseConfig(text, path.join(dir, 'chio.yaml'), dir);
    const file = path.join(dir, 'data', 'not-a-folder', 'receipts.db');
    const err = await startService(config, { log: recordingLogger(), defaultMetrics: false }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ChioError);
    expect((err as ChioError).code).toBe('io_error');
    expect((err as ChioError).message).toMatch(new RegExp(`^cannot create receipt store ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: (ENOTDIR|EEXIST)`));
  });
});
