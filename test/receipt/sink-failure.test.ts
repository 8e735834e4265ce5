/**
 * A receipt sink that cannot write, through the real service (SPEC §2.1 receipts.on_failure):
 * deny → the allow becomes deny `receipt_unavailable`; allow → the request is allowed without a
 * receipt, `chio_receipt_sink_errors_total{sink}` counts it and it is logged. Either way the sinks
 * stay on one chain (the JSONL file that did take the batch is rewound) and recover afterwards.
 * (The SQLite store "starts failing" through a trigger that aborts every insert: that works for
 * root too, which permission bits do not.)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { startService } from '../../src/main.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
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

describe('receipts.on_failure: deny (the default)', () => {
  it('an allow whose receipt cannot be stored becomes deny receipt_unavailable; the sinks stay on one chain and recover', async () => {
    svc = await startStoreService({ onFailure: 'deny' });
    const first = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(first.status.code).toBe(0);

    const broken = breakStore(svc.dbFile);
    const denied = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(denied.status).toMatchObject({ code: 7, message: 'receipt_unavailable' });
    expect(denied.ok_response).toBeUndefined();
    expect(denied.denied_response?.status.code).toBe('Forbidden');
    // the deny could not be recorded either (the store still fails): no receipt id is claimed
    expect(receiptIdOf(denied)).toBeNull();
    expect(JSON.parse(denied.denied_response?.body ?? '')).toEqual({ verdict: 'deny', reason: 'receipt_unavailable', receiptId: null });
    expect(await sinkErrors(svc)).toEqual({ sqlite: 2 });
    const errors = svc.log.entries.filter((e) => e.level === 'error').map((e) => e.msg);
    expect(errors).toContain('receipt sink write failed');
    expect(errors).toContain('receipt not durable; allow becomes deny receipt_unavailable');
    expect(svc.log.entries.find((e) => e.msg === 'receipt sink write failed')?.obj).toMatchObject({ sink: 'sqlite', err: expect.stringContaining('disk full (simulated)') });
    // the JSONL file took both batches and was rewound each time
    await expectOneVerifiedChain(svc, 1);

    broken.heal();
    const after = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(after.status.code).toBe(0);
    await expectOneVerifiedChain(svc, 2);
    expect((JSON.parse((await svc.storeTexts())[1] ?? '') as { id: string }).id).toBe(receiptIdOf(after));
  });
});

describe('receipts.on_failure: allow', () => {
  it('the request is allowed without a receipt, the sink error is counted and logged; recovery continues the chain', async () => {
    svc = await startStoreService({ onFailure: 'allow' });
    await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    const broken = breakStore(svc.dbFile);
    const allowed = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(allowed.status.code).toBe(0);
    expect(allowed.ok_response).toBeDefined();
    expect(receiptIdOf(allowed)).toBeNull();
    expect(await sinkErrors(svc)).toEqual({ sqlite: 1 });
    expect(svc.log.entries.filter((e) => e.level === 'error').map((e) => e.msg)).toEqual([
      'receipt sink write failed',
      'receipt not durable; answering without it (receipts.on_failure)',
    ]);
    const metrics = await (await fetch(`${svc.adminUrl}/metrics`)).text();
    expect(metrics).toContain('chio_receipt_sink_errors_total{sink="sqlite"} 1');
    await expectOneVerifiedChain(svc, 1);

    broken.heal();
    expect((await svc.client.check(fixtureRequest('http-mtls-spiffe-full'))).status.code).toBe(0);
    await expectOneVerifiedChain(svc, 2);
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
