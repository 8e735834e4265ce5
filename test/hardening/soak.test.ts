/**
 * The short soak (SPEC §1, §6, §9): the load loop of scripts/soak.mjs (`npm run soak` runs it for
 * minutes against the built `chio serve`) for 15 s against the real service started from the
 * TypeScript sources: a mixed allow/deny load at a steady rate over gRPC; zero errors (RPC
 * failures, wrong verdicts or reasons, answers without a receipt id), zero mismatches between
 * receipts written and decisions answered, the file verifies, the counters agree, and latency and
 * memory stay bounded. CHIO_SOAK_SECONDS changes the duration.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckClient } from '../../src/check/client.js';
import { verificationKeys, verifyReceiptFile, type VerifyResult } from '../../src/receipt/verify.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { DEMO_POLICY } from './support/policies.js';
import { metricValue, scrape } from './support/services.js';

/** The typed surface of scripts/soak.mjs this test uses. */
interface SoakModule {
  runLoad(o: { client: CheckClient; durationMs: number; rate: number; concurrency: number; rss: () => Promise<number> }): Promise<{
    seconds: number;
    decisions: number;
    allows: number;
    denies: number;
    errors: Record<string, number>;
    errorCount: number;
    latencyMs: { p50: number; p99: number; max: number };
    rssMiB: { start: number; peak: number; end: number };
    answeredIds: string[];
  }>;
  checkReceipts(o: { answeredIds: string[]; receiptsFile: string; verify: (file: string) => Promise<VerifyResult> }): Promise<{
    receiptsWritten: number;
    decisionsAnswered: number;
    mismatches: number;
    verified: boolean;
  }>;
}

const SECONDS = Number(process.env['CHIO_SOAK_SECONDS'] ?? 15);
const RATE = 300;

let soak: SoakModule;
let svc: TestService;

beforeAll(async () => {
  soak = (await import(pathToFileURL(path.resolve(import.meta.dirname, '..', '..', 'scripts', 'soak.mjs')).href)) as SoakModule;
  svc = await startTestService({ policy: DEMO_POLICY });
});

afterAll(async () => {
  await svc?.close();
});

describe(`soak: ${SECONDS} s of mixed allow/deny at ${RATE} calls/s`, () => {
  it(
    'zero errors, zero receipt mismatches, verified receipts, bounded latency and memory',
    async () => {
      const load = await soak.runLoad({
        client: svc.client,
        durationMs: SECONDS * 1000,
        rate: RATE,
        concurrency: 8,
        rss: async () => process.memoryUsage().rss,
      });
      const text = await scrape(svc);
      const receipts = await soak.checkReceipts({
        answeredIds: load.answeredIds,
        receiptsFile: svc.receiptsFile,
        verify: (file) => verifyReceiptFile(file, verificationKeys([svc.service.key])),
      });
      const { answeredIds: _ids, ...report } = load;
      console.info(`[soak] ${JSON.stringify({ ...report, receipts })}`);

      expect(load.errors).toEqual({});
      expect(load.decisions).toBeGreaterThan(SECONDS * RATE * 0.8);
      expect(load.allows).toBeGreaterThan(load.decisions * 0.4);
      expect(load.denies).toBeGreaterThan(load.decisions * 0.3);
      expect(receipts).toMatchObject({ receiptsWritten: load.decisions, decisionsAnswered: load.decisions, mismatches: 0, verified: true });
      expect(metricValue(text, 'chio_receipts_written_total')).toBe(load.decisions);
      expect(metricValue(text, 'chio_admissions_total')).toBe(load.decisions);
      // generous bounds: a noisy 2-core machine running other test files at the same time
      expect(load.latencyMs.p99).toBeLessThan(250);
      expect(load.rssMiB.peak - load.rssMiB.start).toBeLessThan(256);
    },
    (SECONDS + 30) * 1000,
  );
});
