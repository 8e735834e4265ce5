/**
 * Policy hot reload under load: the file is rewritten 20 times, good and bad alternating, while
 * Checks keep coming. No call fails, every decision is signed and on disk, every receipt names the
 * hash of a good policy, a bad file keeps the last good policy and counts a reload error.
 */
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { policyHash } from '../../src/policy/load.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
import { demoPolicy, fixtureRequest, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
const A = demoPolicy();
const B = A.replace('schema: chio.policy.v1', '# revision B\nschema: chio.policy.v1');
const BAD = A.replace('default: block', 'default: maybe');

function writePolicy(text: string): void {
  const file = path.join(svc.dir, 'policy.yaml');
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file); // how editors and ConfigMaps replace a file
}

async function reloads(result: 'ok' | 'error'): Promise<number> {
  const text = await (await fetch(`${svc.adminUrl}/metrics`)).text();
  const m = new RegExp(`chio_policy_reloads_total\\{result="${result}"\\} (\\d+)`).exec(text);
  return m ? Number(m[1]) : 0;
}

async function until(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => {
  await svc?.close();
});

describe('policy hot reload', () => {
  it('survives 20 reloads (good and bad alternating) under load with no failed or unsigned decision', async () => {
    const answered: Array<{ code: number; receiptId: string | undefined }> = [];
    const failures: unknown[] = [];
    let running = true;
    const worker = async (): Promise<void> => {
      while (running) {
        try {
          const res = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
          answered.push({
            code: res.status.code,
            receiptId: res.ok_response?.headers.find((h) => h.header.key === 'x-chio-receipt-id')?.header.value,
          });
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const workers = Array.from({ length: 8 }, () => worker());

    const okBefore = await reloads('ok');
    for (let i = 0; i < 20; i++) {
      const bad = i % 2 === 1;
      const errorsBefore = await reloads('error');
      const oksBefore = await reloads('ok');
      writePolicy(bad ? BAD : i % 4 === 0 ? B : A);
      await until(async () => (bad ? (await reloads('error')) > errorsBefore : (await reloads('ok')) > oksBefore));
      expect(svc.service.policy().hash).toBe(policyHash(Buffer.from(i % 4 === 0 || (bad && i % 4 === 1) ? B : A)));
    }
    running = false;
    await Promise.all(workers);

    expect(failures).toEqual([]);
    expect(answered.length).toBeGreaterThan(50);
    expect(answered.every((a) => a.code === 0 && a.receiptId !== undefined)).toBe(true);
    expect(await reloads('error')).toBe(10);
    expect((await reloads('ok')) - okBefore).toBe(10);

    const receipts = svc.receipts();
    const byId = new Map(receipts.map((r) => [r['id'], r]));
    for (const a of answered) expect(byId.has(a.receiptId)).toBe(true);
    const good = new Set([policyHash(Buffer.from(A)), policyHash(Buffer.from(B))]);
    for (const r of receipts) expect(good.has(String(r['policyHash']))).toBe(true);
    const verdict = await verifyReceiptFile(svc.receiptsFile, verificationKeys([svc.service.key]));
    expect(verdict).toMatchObject({ ok: true, firstFailure: null });
    expect(svc.log.entries.filter((e) => e.msg === 'policy reload failed; keeping the last good policy')).toHaveLength(10);
  });

  it('keeps the last good policy when the file is deleted', async () => {
    const before = svc.service.policy().hash;
    const errors = await reloads('error');
    const { rmSync } = await import('node:fs');
    rmSync(path.join(svc.dir, 'policy.yaml'));
    await until(async () => (await reloads('error')) > errors);
    expect(svc.service.policy().hash).toBe(before);
    const res = await svc.client.check(fixtureRequest('http-mtls-spiffe-full'));
    expect(res.status.code).toBe(0);
    writePolicy(A);
  });
});
