/**
 * Fuzzing the REAL service over gRPC (SPEC §1 "fails closed", §3, §6, §9): two services on
 * loopback (src/main.ts), one under the demo policy, one under a deny-everything policy, each
 * sent the same hostile CheckRequests:
 *
 * 1. generated requests (test/hardening/support/requests.ts, wire-safe) through the grpc-js client
 *    of src/check/client.ts, in concurrent batches;
 * 2. raw wire bytes over node:http2: the reference `.pb` fixtures bit-flipped, truncated, spliced,
 *    with invalid UTF-8 in string fields and deeper nesting than protobufjs decodes, correctly
 *    framed, so malformed protobuf reaches the server.
 *
 * Invariants: every call is an OK RPC (gRPC status 0, the verdict inside the CheckResponse),
 * well-formed (support/answers.ts); the deny-everything service never allows; the demo service
 * allows only its one workload; every answer has exactly one receipt (by x-chio-receipt-id) and
 * the receipt files verify with src/receipt/verify.ts holding exactly one receipt per answered
 * call; the server never crashes or hangs (it still serves a normal request and /healthz after).
 *
 * Framing the gRPC layer itself refuses (a message over 4 MiB, a length prefix that lies, a
 * compressed flag without an encoding) never reaches chio: the transport (src/server/native-grpc.ts)
 * answers with an RPC error. Those are pinned at the end as the documented limit (SECURITY.md: keep
 * `failure_mode_allow: false`).
 */
import * as fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import { keyFromSeed } from '../../src/keys.js';
import { verifyReceiptFile, verificationKeys } from '../../src/receipt/verify.js';
import { FIXED_NOW, fixtureRequest, type TestService } from '../helpers/service.js';
import { readAnswer, unstrippedChioHeaders, type Answer } from './support/answers.js';
import { fuzzParameters, fuzzTimeout } from './support/fuzz.js';
import { capabilityTokens, HARNESS_AUTHORITY_SEED } from './support/pipeline.js';
import { DEMO_ADMITS, DEMO_POLICY, DENY_ALL_POLICY } from './support/policies.js';
import { ReceiptIndex, receiptMismatches } from './support/receipts.js';
import { checkRequestArbitrary, FIXTURE_WIRE, type GeneratedRequest } from './support/requests.js';
import { metricValue, receiptLines, scrape, startHostileInputService } from './support/services.js';
import { deepMetadataMessage, grpcFrame, RawGrpcClient, type WireResult } from './support/wire.js';

const STRUCTURED = { runs: 60, batch: { minLength: 40, maxLength: 50 } };
const RAW = { runs: 40, batch: { minLength: 25, maxLength: 30 } };

interface Target {
  readonly name: string;
  readonly svc: TestService;
  readonly raw: RawGrpcClient;
  readonly receipts: ReceiptIndex;
  answered: number;
}

let demo: Target;
let denyAll: Target;
let tokens: string[];

async function target(name: string, policy: string): Promise<Target> {
  const svc = await startHostileInputService(policy);
  return { name, svc, raw: new RawGrpcClient(svc.service.grpcPort), receipts: new ReceiptIndex(), answered: 0 };
}

beforeAll(async () => {
  [demo, denyAll] = await Promise.all([target('demo', DEMO_POLICY), target('deny-all', DENY_ALL_POLICY)]);
  tokens = capabilityTokens(keyFromSeed(HARNESS_AUTHORITY_SEED), FIXED_NOW);
});

afterAll(async () => {
  for (const t of [demo, denyAll]) {
    t?.raw.close();
    await t?.svc.close();
  }
});

/** Problems of one answer from `t` (empty when every invariant holds). */
function problemsOf(t: Target, answer: Answer, request: GeneratedRequest['request'] | null): string[] {
  const out = receiptMismatches(answer, t.receipts.get(answer.receiptId));
  if (answer.reason === 'internal_error') out.push('internal_error');
  if (t === denyAll && answer.verdict !== 'deny') out.push('the deny-everything policy allowed it');
  if (answer.verdict === 'allow') {
    if (answer.workloadId !== DEMO_ADMITS.workload) out.push(`allowed workload ${String(answer.workloadId)}`);
    const leaked = request === null ? [] : unstrippedChioHeaders(answer, request);
    if (leaked.length > 0) out.push(`client headers reach the upstream: ${leaked.join(', ')}`);
  }
  return out.map((p) => `${t.name}: ${p}`);
}

/** Sends `call` to both services; an RPC error or a malformed answer is a problem, never a throw. */
async function both(call: (t: Target) => Promise<CheckResponseMessage>): Promise<Array<{ t: Target; answer: Answer | null; problem: string | null }>> {
  return Promise.all(
    [demo, denyAll].map(async (t) => {
      try {
        const answer = readAnswer(await call(t));
        t.answered++;
        return { t, answer, problem: null };
      } catch (err) {
        return { t, answer: null, problem: `${t.name}: ${err instanceof Error ? err.message : String(err)}` };
      }
    }),
  );
}

function refreshReceipts(): void {
  for (const t of [demo, denyAll]) t.receipts.update(receiptLines(t.svc.receiptsFile));
}

describe('fuzzing the real service over gRPC', () => {
  it('generated hostile CheckRequests: OK RPCs, deny-all never allows, one receipt per answer', async () => {
    const arbitrary = checkRequestArbitrary({ wire: true, huge: { maxBytes: 1024 * 1024 }, tokens: { capabilities: tokens } });
    await fc.assert(
      fc.asyncProperty(fc.array(arbitrary, STRUCTURED.batch), async (batch) => {
        const results = await Promise.all(batch.map(async (g) => ({ g, answers: await both((t) => t.svc.client.check(g.request, 10_000)) })));
        refreshReceipts();
        const problems = results.flatMap(({ g, answers }) =>
          answers
            .flatMap(({ t, answer, problem }) => (problem !== null ? [problem] : answer === null ? [] : problemsOf(t, answer, g.request)))
            .map((p) => `${p} [${g.fixture}: ${g.mutations.join(' | ')}]`),
        );
        expect(problems).toEqual([]);
      }),
      fuzzParameters('gRPC structured', STRUCTURED.runs),
    );
  }, fuzzTimeout(120_000));

  it('raw wire bytes (mutated .pb fixtures, invalid UTF-8, malformed protobuf): still an OK RPC with a deny or allow', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(wireMessage(), RAW.batch), async (batch) => {
        const results = await Promise.all(batch.map(async (w) => ({ w, answers: await both((t) => t.raw.call(grpcFrame(w.bytes)).then(okResponse)) })));
        refreshReceipts();
        const problems = results.flatMap(({ w, answers }) =>
          answers
            .flatMap(({ t, answer, problem }) => (problem !== null ? [problem] : answer === null ? [] : problemsOf(t, answer, null)))
            .map((p) => `${p} [${w.describe}]`),
        );
        expect(problems).toEqual([]);
      }),
      fuzzParameters('gRPC raw wire', RAW.runs),
    );
  }, fuzzTimeout(120_000));

  it('the receipt files verify and hold exactly one receipt per answered call', async () => {
    refreshReceipts();
    for (const t of [demo, denyAll]) {
      expect(t.answered).toBeGreaterThan(1000);
      expect(t.receipts.size).toBe(t.answered);
      const result = await verifyReceiptFile(t.svc.receiptsFile, verificationKeys([t.svc.service.key]));
      expect(result).toMatchObject({ ok: true, receipts: t.answered, firstFailure: null });
    }
    console.info(`[fuzz] gRPC: ${demo.answered} calls per service answered, ${demo.answered * 2} receipts verified`);
  }, fuzzTimeout(60_000));

  it('neither server crashed or wedged: a normal request is still decided and /healthz answers', async () => {
    for (const t of [demo, denyAll]) {
      const answer = readAnswer(await t.svc.client.check(fixtureRequest('http-mtls-spiffe-full')));
      expect(answer.verdict).toBe(t === demo ? 'allow' : 'deny');
      expect((await fetch(`${t.svc.adminUrl}/healthz`)).status).toBe(200);
    }
  });
});

describe('hostile requests found by the fuzzers, pinned', () => {
  it('a CheckRequest with metadata_context nested deeper than protobufjs decodes (a JWT payload Envoy copied there): decided on the fields chio reads, with a receipt', async () => {
    // src/check/request-wire.ts skips metadata_context unread; this message has nothing else, so no identity
    for (const t of [demo, denyAll]) {
      const answer = readAnswer(okResponse(await t.raw.call(grpcFrame(deepMetadataMessage(150)))));
      expect(answer).toMatchObject({ verdict: 'deny', reason: 'no_matching_rule' }); // no host: no rule of either policy matches
      const receipt = t.receipts.update(receiptLines(t.svc.receiptsFile)).get(answer.receiptId)?.record;
      expect(receipt?.reasons?.[0]?.code).toBe(answer.reason);
    }
  });

  it('an unknown chio_rule of 100,000 characters: unknown_rule, the metric label is `other`, the receipt keeps 2,048 characters', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    req.attributes.context_extensions = { chio_rule: 'r'.repeat(100_000) };
    const answer = readAnswer(await demo.svc.client.check(req));
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'unknown_rule' });
    const receipt = demo.receipts.update(receiptLines(demo.svc.receiptsFile)).get(answer.receiptId)?.record;
    expect(receipt?.rule).toBe(`${'r'.repeat(2048)}…`);
    const text = await scrape(demo.svc);
    expect(metricValue(text, 'chio_admissions_total', { rule: 'other', reason: 'unknown_rule' })).toBeGreaterThanOrEqual(1);
    expect(text).not.toContain('rrrrrrrrrrrrrrrr');
  });
});

describe('what the gRPC layer refuses before chio sees it (documented limit: keep failure_mode_allow false)', () => {
  const pb = (): Buffer => FIXTURE_WIRE.get('http-mtls-spiffe-full') as Buffer;

  it('a message over the 4 MiB limit: RESOURCE_EXHAUSTED, no decision, no receipt', async () => {
    const before = receiptLines(demo.svc.receiptsFile).length;
    const big = fixtureRequest('http-mtls-spiffe-full');
    if (big.attributes.request?.http) big.attributes.request.http.path = `/api/v1/orders/${'a'.repeat(4 * 1024 * 1024)}`;
    const counted = (text: string): number => metricValue(text, 'chio_grpc_errors_total', { code: 'RESOURCE_EXHAUSTED' });
    const countedBefore = counted(await scrape(demo.svc));
    await expect(demo.svc.client.check(big)).rejects.toMatchObject({ code: 8 });
    expect(receiptLines(demo.svc.receiptsFile).length).toBe(before);
    expect(counted(await scrape(demo.svc))).toBe(countedBefore + 1);
  });

  it('a field just under the limit is decided (a 4 MiB − 64 KiB path: a deny malformed_request with a receipt, no path is read past 64 KiB)', async () => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    if (req.attributes.request?.http) req.attributes.request.http.path = `/api/v1/orders/${'a'.repeat(4 * 1024 * 1024 - 64 * 1024)}`;
    const answer = readAnswer(await demo.svc.client.check(req));
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'malformed_request' });
    const receipt = receiptLines(demo.svc.receiptsFile).find((l) => l.includes(String(answer.receiptId)));
    expect(Buffer.byteLength(receipt ?? '')).toBeLessThan(8 * 1024);
  });

  it('a length prefix longer than the data: an RPC error (the call never completes a message), not an allow', async () => {
    const lying = await demo.raw.call(grpcFrame(pb(), { declaredLength: pb().length + 100 }));
    expect(lying.response).toBeNull();
    expect(lying.grpcStatus).toBe(13);
    expect(lying.grpcMessage).toBe('request message cut short');
  });

  it('a compressed flag without grpc-encoding: an RPC error, not an allow (grpc-js would read it as uncompressed)', async () => {
    const flagged = await demo.raw.call(grpcFrame(pb(), { compressed: true }));
    expect(flagged.response).toBeNull();
    expect(flagged.grpcStatus).toBe(13);
    expect(flagged.grpcMessage).toBe('compressed flag set without grpc-encoding');
  });
});

// ---- raw wire messages ----

interface WireMessage {
  readonly describe: string;
  readonly bytes: Buffer;
}

/** fast-check reports a wire message by its recipe, not its bytes. */
function described(describe: string, bytes: Buffer): WireMessage {
  return { describe, bytes, [fc.toStringMethod]: () => describe } as WireMessage;
}

function okResponse(result: WireResult): CheckResponseMessage {
  if (result.grpcStatus !== 0 || result.response === null) {
    throw new Error(`RPC error: grpc-status ${String(result.grpcStatus)} ${String(result.grpcMessage)}`);
  }
  return result.response;
}

function wireMessage(): fc.Arbitrary<WireMessage> {
  const names = [...FIXTURE_WIRE.keys()];
  const fixture = fc.constantFrom(...names);
  const bytesOf = (name: string): Buffer => FIXTURE_WIRE.get(name) as Buffer;
  const at = (name: string) => fc.nat({ max: Math.max(0, bytesOf(name).length - 1) });
  return fc.oneof(
    fixture.chain((n) =>
      fc.array(fc.tuple(at(n), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 8 }).map((flips): WireMessage => {
        const b = Buffer.from(bytesOf(n));
        for (const [i, bit] of flips) b[i] = (b[i] as number) ^ (1 << bit);
        return described(`${n} with ${flips.length} bit flips`, b);
      }),
    ),
    fixture.chain((n) => at(n).map((cut) => described(`${n} truncated at ${cut}`, bytesOf(n).subarray(0, cut)))),
    fixture.chain((n) =>
      fc.tuple(at(n), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([i, junk]): WireMessage => {
        const b = bytesOf(n);
        return described(`${n} with ${junk.length} bytes inserted at ${i}`, Buffer.concat([b.subarray(0, i), Buffer.from(junk), b.subarray(i)]));
      }),
    ),
    fixture.chain((n) =>
      fc.array(fc.tuple(at(n), fc.constantFrom(0xff, 0xfe, 0xc0, 0x80, 0xed)), { minLength: 1, maxLength: 6 }).map((spots): WireMessage => {
        const b = Buffer.from(bytesOf(n));
        for (const [i, byte] of spots) if ((b[i] as number) >= 0x20 && (b[i] as number) < 0x7f) b[i] = byte;
        return described(`${n} with invalid UTF-8 in ${spots.length} places`, b);
      }),
    ),
    fc.tuple(fixture, fixture).chain(([a, b]) =>
      fc.tuple(at(a), at(b)).map(([i, j]) => described(`${a}[..${i}] + ${b}[${j}..]`, Buffer.concat([bytesOf(a).subarray(0, i), bytesOf(b).subarray(j)]))),
    ),
    fc.uint8Array({ maxLength: 256 }).map((u) => described(`${u.length} random bytes`, Buffer.from(u))),
    fc.integer({ min: 90, max: 3000 }).map((d) => described(`metadata_context Struct nested ${d} deep`, deepMetadataMessage(d))),
  );
}
