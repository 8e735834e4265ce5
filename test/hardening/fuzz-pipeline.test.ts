/**
 * Fuzzing the Check pipeline in-process (SPEC §1 "fails closed", §3, §6, §9): 10,000 hostile
 * CheckRequests (test/hardening/support/requests.ts) decided by two pipelines wired like the
 * service, one under the demo policy and one under a deny-everything policy, concurrently in
 * batches. Invariants, for every request:
 *
 * - `check()` resolves (never rejects, never hangs) with a well-formed allow or deny (answers.ts);
 * - under the deny-everything policy the answer is a deny;
 * - under the demo policy an allow is only ever for the one admitted workload, rule and tools,
 *   never carries a client's `x-chio-*` header upstream, and names the workload of its receipt;
 * - nothing is an `internal_error` (an unexpected exception is a bug, even though it denies);
 * - exactly one receipt per answer, matched by `x-chio-receipt-id`, with the answer's verdict and
 *   reason, at most 16 KiB; at the end the chain verifies (signatures, seq, prevHash);
 * - metric labels stay bounded: rules of the policy (or `other`), deny codes, known trust domains.
 *
 * Seeds: test/hardening/support/fuzz.ts (CHIO_FUZZ_SEED to replay).
 */
import * as fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DENY_CODES } from '../../src/errors.js';
import { FIXED_NOW } from '../helpers/service.js';
import { readAnswer, unstrippedChioHeaders, type Answer } from './support/answers.js';
import { fuzzParameters, fuzzTimeout } from './support/fuzz.js';
import { capabilityTokens, startHarness, verifyReceiptLines, MemorySink, type Harness } from './support/pipeline.js';
import { DEMO_ADMITS, DEMO_POLICY, DENY_ALL_POLICY } from './support/policies.js';
import { indexReceipts, receiptMismatches, ReceiptIndex } from './support/receipts.js';
import { checkRequestArbitrary, type GeneratedRequest } from './support/requests.js';

/** 200 runs × at least 50 requests: at least 10,000 cases per CI run. */
const RUNS = 200;
const BATCH = { minLength: 50, maxLength: 60 };
/** a decision that takes longer than this counts as a hang */
const HANG_MS = 5_000;

let demo: Harness;
let denyAll: Harness;
let demoSink: MemorySink;
let denySink: MemorySink;
let tokens: string[];
const counted = { cases: 0, allows: 0, denies: 0 };
const demoReceipts = new ReceiptIndex();
const denyReceipts = new ReceiptIndex();

beforeAll(async () => {
  demoSink = new MemorySink();
  denySink = new MemorySink();
  demo = await startHarness({ policyText: DEMO_POLICY, sink: demoSink });
  denyAll = await startHarness({ policyText: DENY_ALL_POLICY, sink: denySink });
  tokens = capabilityTokens(demo.authority, FIXED_NOW);
});

afterAll(async () => {
  await demo?.writer.close();
  await denyAll?.writer.close();
  console.info(`[fuzz] in-process pipeline: ${counted.cases} cases, ${counted.allows} allowed by the demo policy, ${counted.denies} denied`);
});

function withinHangLimit<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${HANG_MS} ms`)), HANG_MS);
  });
  return Promise.race([p, hang]).finally(() => clearTimeout(timer));
}

interface Decided {
  readonly generated: GeneratedRequest;
  readonly demo: Answer;
  readonly denyAll: Answer;
}

async function decideBoth(generated: GeneratedRequest): Promise<Decided> {
  const [a, b] = await Promise.all([
    withinHangLimit(demo.pipeline.check(generated.request), 'the demo pipeline'),
    withinHangLimit(denyAll.pipeline.check(generated.request), 'the deny-all pipeline'),
  ]);
  return { generated, demo: readAnswer(a), denyAll: readAnswer(b) };
}

/** Everything wrong with one decided case (empty when the invariants hold). */
function violations(d: Decided, demoReceipts: ReceiptIndex, denyReceipts: ReceiptIndex): string[] {
  const out: string[] = [];
  if (d.denyAll.verdict !== 'deny') out.push('the deny-everything policy allowed it');
  for (const [name, answer, receipts] of [
    ['demo', d.demo, demoReceipts],
    ['deny-all', d.denyAll, denyReceipts],
  ] as const) {
    if (answer.reason === 'internal_error') out.push(`${name}: internal_error`);
    out.push(...receiptMismatches(answer, receipts.get(answer.receiptId)).map((p) => `${name}: ${p}`));
  }
  const allow = d.demo;
  if (allow.verdict === 'allow') {
    const receipt = demoReceipts.get(allow.receiptId)?.record;
    if (allow.workloadId !== DEMO_ADMITS.workload) out.push(`allowed workload ${String(allow.workloadId)}`);
    if (receipt && (receipt.rule !== DEMO_ADMITS.rule || !(DEMO_ADMITS.tools as readonly string[]).includes(receipt.tool ?? ''))) {
      out.push(`allowed under rule ${String(receipt.rule)} tool ${String(receipt.tool)}`);
    }
    const leaked = unstrippedChioHeaders(allow, d.generated.request);
    if (leaked.length > 0) out.push(`client headers reach the upstream: ${leaked.join(', ')}`);
  }
  return out.map((v) => `${v} [${d.generated.fixture}: ${d.generated.mutations.join(' | ')}]`);
}

describe('fuzzing the Check pipeline in-process', () => {
  it('10,000 hostile CheckRequests: always a well-formed answer, one receipt each, nothing allowed that policy denies', async () => {
    const arbitrary = checkRequestArbitrary({ wire: false, huge: { maxBytes: 4 * 1024 * 1024 }, tokens: { capabilities: tokens } });
    await fc.assert(
      fc.asyncProperty(fc.array(arbitrary, BATCH), async (batch) => {
        const decided = await Promise.all(batch.map(decideBoth));
        demoReceipts.update(demoSink.lines);
        denyReceipts.update(denySink.lines);
        const problems = decided.flatMap((d) => violations(d, demoReceipts, denyReceipts));
        counted.cases += decided.length;
        counted.allows += decided.filter((d) => d.demo.verdict === 'allow').length;
        counted.denies += decided.filter((d) => d.demo.verdict === 'deny').length;
        expect(problems).toEqual([]);
      }),
      fuzzParameters('in-process pipeline', RUNS),
    );
    expect(counted.cases).toBeGreaterThanOrEqual(10_000);
    // the fuzzer reaches both outcomes (an allow-free run would prove little about allows)
    expect(counted.allows).toBeGreaterThan(100);
  }, fuzzTimeout(180_000));

  it('wrote exactly one verifiable receipt per answer, in one unbroken chain per pipeline', () => {
    for (const [harness, sink] of [
      [demo, demoSink],
      [denyAll, denySink],
    ] as const) {
      expect(sink.lines.length).toBe(counted.cases);
      expect(indexReceipts(sink.lines).size).toBe(counted.cases);
      expect(verifyReceiptLines(sink.lines, harness.key)).toEqual({ receipts: counted.cases, failure: null });
    }
  }, fuzzTimeout(60_000));

  it('kept every metric label bounded: policy rules, deny codes, known trust domains', async () => {
    const admissions = (await demo.metrics.registry.getMetricsAsJSON()).find((m) => m.name === 'chio_admissions_total');
    const series = (admissions?.values ?? []) as Array<{ labels: Record<string, string | number>; value: number }>;
    const total = series.reduce((n, s) => n + s.value, 0);
    expect(total).toBe(counted.cases);
    const rules = new Set(['', 'other', ...demo.policy.rules.keys()]);
    const reasons = new Set(['', ...DENY_CODES]);
    for (const { labels } of series) {
      expect(rules.has(String(labels['rule'])), `rule label ${String(labels['rule']).slice(0, 80)}`).toBe(true);
      expect(reasons.has(String(labels['reason']))).toBe(true);
      expect(['', 'other', 'example.org']).toContain(labels['trust_domain']);
      expect(['', 'uri', 'x509_svid', 'jwt_svid']).toContain(labels['credential_kind']);
      expect(['none', 'basic', 'attested', 'verified']).toContain(labels['tier']);
    }
    expect(series.length).toBeLessThan(500);
  });
});
