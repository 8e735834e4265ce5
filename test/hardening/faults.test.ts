/**
 * Faults (SPEC §1 "fails closed", §2.1 receipts.on_failure, §4 bundles, §5 reload, §6, §8): each
 * with its documented behaviour and the metric that shows it (asserted on /metrics).
 *
 * - receipt sink unusable at start (a directory where the file should be, a path through a regular
 *   file, a read-only folder): the service refuses to start (`io_error`), no listener opens;
 * - receipt sink full (/dev/full: a real ENOSPC) or failing mid-run (a sink wrapper): an allow
 *   becomes deny `receipt_unavailable`, a deny is answered without a receipt id, never an allow
 *   without a receipt (on_failure: deny), `chio_receipt_sink_errors_total{sink}` counts; after
 *   recovery the chain continues and verifies, one receipt per answer that claimed one;
 * - policy file deleted or broken: the last good policy stays in force,
 *   `chio_policy_reloads_total{result="error"}` counts;
 * - trust bundle file gone: its last good bundle stays until it expires, then `bundle_expired`
 *   (injected clock), `chio_trust_bundle_refreshes_total{result="error"}` and the expiry gauge;
 * - SPIFFE Workload API socket flapping: bundles stay in force, no decision fails,
 *   `chio_workload_api_connected` follows the agent;
 * - clock jumps (injected clock): SVID and capability windows are judged at decision time in both
 *   directions; receipt timestamps are the decision times, seq and ids still strictly increase.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCheckClient } from '../../src/check/client.js';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { keyFromSeed } from '../../src/keys.js';
import { startService } from '../../src/main.js';
import { JsonlSink } from '../../src/receipt/sinks/jsonl.js';
import { verificationKeys, verifyReceiptFile } from '../../src/receipt/verify.js';
import { FIXED_NOW, fixtureRequest, recordingLogger, startTestService, type FixtureRequest, type TestService } from '../helpers/service.js';
import { createRootCa, issueSvid, type IssuedSvid, type TestCa } from '../helpers/test-ca.js';
import { FakeWorkloadApiAgent } from '../helpers/workload-api-server.js';
import { readAnswer, type Answer } from './support/answers.js';
import { capabilityTokens, errnoError, FailingSink, HARNESS_AUTHORITY_SEED, startHarness } from './support/pipeline.js';
import { DEMO_POLICY } from './support/policies.js';
import { indexReceipts } from './support/receipts.js';
import { metricValue, receiptLines, scrape, startHostileInputService } from './support/services.js';

const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';
const DAY = 24 * 3600 * 1000;

function baseConfig(sinkPath: string, extra: string[] = []): string {
  return [
    'schema: chio.config.v1',
    'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
    'policy: ./policy.yaml',
    'keys: { receipt_signing_seed: ./data/kernel.seed }',
    `receipts: { sinks: [ { type: jsonl, path: ${JSON.stringify(sinkPath)} } ] }`,
    ...extra,
  ].join('\n');
}

function requestAs(svid: IssuedSvid, uri = FRONTEND): FixtureRequest {
  const req = fixtureRequest('http-mtls-spiffe-full');
  req.attributes.source = { ...req.attributes.source, certificate: svid.envoyEncoded, principal: uri };
  return req;
}

async function until(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// ---------------------------------------------------------------------------------------------

describe('receipt sink unusable at start: the service refuses to start (io_error)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'chio-faults-'));
    writeFileSync(path.join(dir, 'policy.yaml'), DEMO_POLICY);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function startWith(sinkPath: string): Promise<unknown> {
    const config = parseConfig(baseConfig(sinkPath), path.join(dir, 'chio.yaml'), dir);
    try {
      const svc = await startService(config, { log: recordingLogger(), clock: () => FIXED_NOW, defaultMetrics: false });
      await svc.close(1000);
      return 'started';
    } catch (err) {
      return err;
    }
  }

  it('a directory where the receipt file should be', async () => {
    mkdirSync(path.join(dir, 'is-a-dir.jsonl'));
    const err = await startWith('./is-a-dir.jsonl');
    expect(err).toBeInstanceOf(ChioError);
    expect(err).toMatchObject({ code: 'io_error', message: expect.stringContaining('is-a-dir.jsonl') });
  });

  it('a receipt path through a regular file (no folder can be made there)', async () => {
    writeFileSync(path.join(dir, 'plain-file'), 'x');
    const err = await startWith('./plain-file/receipts.jsonl');
    expect(err).toMatchObject({ code: 'io_error', message: expect.stringContaining('plain-file') });
  });

  it.skipIf(process.getuid?.() === 0)('a read-only folder (skipped as root: root ignores permission bits)', async () => {
    const ro = path.join(dir, 'read-only');
    mkdirSync(ro);
    chmodSync(ro, 0o500);
    try {
      expect(await startWith('./read-only/receipts.jsonl')).toMatchObject({ code: 'io_error' });
    } finally {
      chmodSync(ro, 0o700);
    }
  });
});

function devFullWritable(): boolean {
  try {
    closeSync(openSync('/dev/full', 'a'));
    return true;
  } catch {
    return false;
  }
}

describe('receipt sink full', () => {
  it.runIf(devFullWritable())('/dev/full (a real ENOSPC): allows become receipt_unavailable, denies carry no receipt id, sink errors counted', async () => {
    const svc = await startTestService({ configText: () => baseConfig('/dev/full') });
    try {
      const allow = readAnswer(await svc.client.check(fixtureRequest('http-mtls-spiffe-full')));
      expect(allow).toMatchObject({ verdict: 'deny', reason: 'receipt_unavailable', httpStatus: 403, receiptId: null });
      const deny = readAnswer(await svc.client.check(fixtureRequest('http-plaintext-no-identity')));
      expect(deny).toMatchObject({ verdict: 'deny', reason: 'identity_required', receiptId: null });
      const text = await scrape(svc);
      expect(metricValue(text, 'chio_receipt_sink_errors_total', { sink: 'jsonl' })).toBeGreaterThanOrEqual(3);
      expect(metricValue(text, 'chio_receipts_written_total')).toBe(0);
      // the denial keeps the rule the request was decided under
      expect(metricValue(text, 'chio_admissions_total', { verdict: 'deny', rule: 'orders', reason: 'receipt_unavailable' })).toBe(1);
      expect(metricValue(text, 'chio_admissions_total', { verdict: 'allow' })).toBe(0);
      expect(svc.log.entries.filter((e) => e.msg === 'receipt sink write failed')[0]?.obj).toMatchObject({ sink: 'jsonl', err: expect.stringContaining('ENOSPC') });
      // still serving
      expect((await fetch(`${svc.adminUrl}/healthz`)).status).toBe(200);
    } finally {
      await svc.close();
    }
  });

  describe('a disk that fills up mid-run, then frees (sink wrapper around the real JSONL sink)', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'chio-faults-'));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    for (const onFailure of ['deny', 'allow'] as const) {
      it(`on_failure: ${onFailure}: no allow is ever recorded-less by accident; the chain continues and verifies`, async () => {
        const file = path.join(dir, `receipts-${onFailure}.jsonl`);
        const sink = new FailingSink(new JsonlSink(file));
        const h = await startHarness({ policyText: DEMO_POLICY, sink, onReceiptFailure: onFailure, sources: ['certificate', 'principal'] });
        const decide = async (name: string): Promise<Answer> => readAnswer(await h.pipeline.check(fixtureRequest(name)));
        const claimed: string[] = [];
        const keep = (a: Answer): Answer => {
          if (a.receiptId !== null) claimed.push(a.receiptId);
          return a;
        };

        for (let i = 0; i < 5; i++) expect(keep(await decide('http-mtls-spiffe-full'))).toMatchObject({ verdict: 'allow', receiptId: expect.stringMatching(/^rct-/) });
        sink.failure = errnoError('ENOSPC');
        const during = await Promise.all(['http-mtls-spiffe-full', 'http-plaintext-no-identity', 'http-mtls-spiffe-full'].map(decide));
        for (const a of during) expect(keep(a).receiptId).toBeNull();
        expect(during.map((a) => a.reason)).toEqual(
          onFailure === 'deny' ? ['receipt_unavailable', 'identity_required', 'receipt_unavailable'] : [null, 'identity_required', null],
        );
        sink.failure = null;
        for (let i = 0; i < 5; i++) keep(await decide(i % 2 === 0 ? 'http-mtls-spiffe-full' : 'http-expired-svid'));
        await h.writer.close();

        const text = await h.metrics.registry.metrics();
        expect(metricValue(text, 'chio_receipt_sink_errors_total', { sink: 'jsonl' })).toBe(sink.writesRefused);
        expect(metricValue(text, 'chio_receipts_written_total')).toBe(claimed.length);
        const result = await verifyReceiptFile(file, verificationKeys([h.key]));
        expect(result).toMatchObject({ ok: true, receipts: claimed.length });
        expect(indexReceipts(receiptLines(file)).size).toBe(claimed.length);
        expect(receiptLines(file).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(claimed);
      });
    }
  });
});

describe('a start that fails on its policy', () => {
  it('exits with policy_invalid and leaves no new signing key behind', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-faults-'));
    writeFileSync(path.join(dir, 'policy.yaml'), 'schema: chio.policy.v1\nrules: { orders: { default: allow, bogus: 1 } }\n');
    const config = parseConfig(baseConfig('./data/receipts.jsonl'), path.join(dir, 'chio.yaml'), dir);
    try {
      const err = await startService(config, { log: recordingLogger(), clock: () => FIXED_NOW, defaultMetrics: false }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'policy_invalid' });
      expect(existsSync(path.join(dir, 'data', 'kernel.seed'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a restart after hostile requests', () => {
  it('huge request fields never make a receipt the file reader refuses: the service restarts and continues its chain', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-faults-'));
    writeFileSync(path.join(dir, 'policy.yaml'), DEMO_POLICY);
    const config = parseConfig(baseConfig('./data/receipts.jsonl'), path.join(dir, 'chio.yaml'), dir);
    const start = () => startService(config, { log: recordingLogger(), clock: () => FIXED_NOW, defaultMetrics: false });
    try {
      const first = await start();
      const client = createCheckClient(`127.0.0.1:${first.grpcPort}`);
      const huge = fixtureRequest('http-mtls-spiffe-full');
      const http = huge.attributes.request?.http;
      if (http) {
        http.path = `/api/v1/orders/${'a'.repeat(3 * 1024 * 1024)}`;
        http.host = `backend.default.svc${'x'.repeat(256 * 1024)}`;
      }
      huge.attributes.source = { ...huge.attributes.source, address: { socket_address: { address: 'b'.repeat(256 * 1024), port_value: 1 } } };
      readAnswer(await client.check(huge));
      client.close();
      await first.close(2000);
      const file = path.join(dir, 'data', 'receipts.jsonl');
      for (const line of receiptLines(file)) expect(Buffer.byteLength(line)).toBeLessThan(16 * 1024);

      const second = await start();
      const again = createCheckClient(`127.0.0.1:${second.grpcPort}`);
      readAnswer(await again.check(fixtureRequest('http-mtls-spiffe-full')));
      again.close();
      await second.close(2000);
      expect(await verifyReceiptFile(file, verificationKeys([second.key]))).toMatchObject({ ok: true, receipts: 2 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('policy file deleted or broken: the last good policy stays', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService({ policy: DEMO_POLICY });
  });
  afterAll(async () => svc?.close());

  it('deleting it: reload fails with file_not_found, decisions continue under the old policy, counted', async () => {
    const hash = svc.service.policy().hash;
    const reloads = async (result: 'ok' | 'error'): Promise<number> => metricValue(await scrape(svc), 'chio_policy_reloads_total', { result });
    const [okBefore, errorsBefore] = [await reloads('ok'), await reloads('error')];

    rmSync(path.join(svc.dir, 'policy.yaml'));
    expect(() => svc.service.reloadPolicy()).toThrowError(expect.objectContaining({ code: 'file_not_found' }));
    const answer = readAnswer(await svc.client.check(fixtureRequest('http-mtls-spiffe-full')));
    expect(answer.verdict).toBe('allow');
    const receipt = indexReceipts(receiptLines(svc.receiptsFile)).get(answer.receiptId)?.record;
    expect(receipt?.policyHash).toBe(hash);
    expect(await (await fetch(`${svc.adminUrl}/readyz`)).json()).toEqual({ status: 'ready', policyHash: hash });
    expect(await reloads('error')).toBeGreaterThanOrEqual(errorsBefore + 1);

    writeFileSync(path.join(svc.dir, 'policy.yaml'), 'schema: chio.policy.v1\nrules: { orders: { default: allow, bogus: 1 } }\n');
    expect(() => svc.service.reloadPolicy()).toThrowError(expect.objectContaining({ code: 'policy_invalid' }));
    expect(svc.service.policy().hash).toBe(hash);
    expect(readAnswer(await svc.client.check(fixtureRequest('http-plaintext-no-identity')))).toMatchObject({ reason: 'identity_required' });
    // (a file watcher may count the same bad files again: at least once each)
    expect(await reloads('error')).toBeGreaterThanOrEqual(errorsBefore + 2);
    expect(await reloads('ok')).toBe(okBefore);
    expect(svc.log.entries.filter((e) => e.msg === 'policy reload failed; keeping the last good policy').length).toBeGreaterThanOrEqual(2);

    writeFileSync(path.join(svc.dir, 'policy.yaml'), DEMO_POLICY);
    expect(svc.service.reloadPolicy().hash).toBe(hash);
    expect(await reloads('ok')).toBeGreaterThanOrEqual(okBefore + 1);
  });
});

// ---------------------------------------------------------------------------------------------

describe('trust bundle source gone, then expired (injected clock)', () => {
  const rootNotAfter = new Date('2027-06-01T00:00:00Z');
  let root: TestCa;
  let svid: IssuedSvid;
  let svc: TestService;
  let now = FIXED_NOW;

  beforeAll(async () => {
    root = await createRootCa({ trustDomain: 'example.org', notAfter: rootNotAfter });
    svid = await issueSvid(root, { uris: [FRONTEND], notAfter: new Date('2030-01-01T00:00:00Z') });
    svc = await startTestService({
      policy: DEMO_POLICY,
      clock: () => now,
      configText: () =>
        baseConfig('./data/receipts.jsonl', [
          'identity: { sources: [certificate, principal], require_known_trust_domain: true }',
          'trust: { file_poll_interval_seconds: 1, bundles: [ { trust_domain: example.org, pem: ./bundles/example.org.pem, verifier: https://spire.test } ] }',
        ]),
      beforeStart: (dir) => {
        mkdirSync(path.join(dir, 'bundles'));
        writeFileSync(path.join(dir, 'bundles', 'example.org.pem'), root.pem);
      },
    });
  });
  afterAll(async () => svc?.close());

  it('verifies against the bundle; the bundle file disappears: the last good bundle stays, the failed refresh is counted', async () => {
    expect(readAnswer(await svc.client.check(requestAs(svid)))).toMatchObject({ verdict: 'allow', workloadId: FRONTEND });
    rmSync(path.join(svc.dir, 'bundles', 'example.org.pem'));
    await until('a failed bundle refresh', async () => metricValue(await scrape(svc), 'chio_trust_bundle_refreshes_total', { source: 'pem#0', result: 'error' }) >= 1);
    expect(readAnswer(await svc.client.check(requestAs(svid)))).toMatchObject({ verdict: 'allow', workloadId: FRONTEND });
    expect(metricValue(await scrape(svc), 'chio_trust_bundle_expiry_timestamp_seconds', { trust_domain: 'example.org' })).toBe(rootNotAfter.getTime() / 1000);
  });

  it('past the bundle’s expiry it fails closed with bundle_expired; judged at decision time, so a clock set back admits again', async () => {
    now = rootNotAfter.getTime() + DAY;
    const expired = readAnswer(await svc.client.check(requestAs(svid)));
    expect(expired).toMatchObject({ verdict: 'deny', reason: 'bundle_expired' });
    // nor is a certificate the bundle never vouched for: an expired bundle vouches for nothing
    expect(readAnswer(await svc.client.check(fixtureRequest('http-mtls-spiffe-full')))).toMatchObject({ verdict: 'deny', reason: 'bundle_expired' });
    now = FIXED_NOW;
    expect(readAnswer(await svc.client.check(requestAs(svid)))).toMatchObject({ verdict: 'allow' });
    expect(metricValue(await scrape(svc), 'chio_admissions_total', { reason: 'bundle_expired' })).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------

describe('SPIFFE Workload API socket flapping', () => {
  let agent: FakeWorkloadApiAgent;
  let root: TestCa;
  let svid: IssuedSvid;
  let svc: TestService;

  beforeAll(async () => {
    root = await createRootCa({ trustDomain: 'example.org' });
    svid = await issueSvid(root, { uris: [FRONTEND] });
    agent = new FakeWorkloadApiAgent();
    agent.setBundles({ x509: new Map([['example.org', [root]]]), jwt: new Map([['example.org', JSON.stringify({ keys: [] })]]) });
    await agent.start();
    svc = await startTestService({
      policy: DEMO_POLICY,
      configExtra: ['trust:', `  bundles: [ { workload_api: ${JSON.stringify(agent.address)}, verifier: https://spire.test } ]`].join('\n'),
    });
  });
  afterAll(async () => {
    await svc?.close();
    await agent?.close();
  });

  const connected = async (): Promise<number> => metricValue(await scrape(svc), 'chio_workload_api_connected', { source: 'workload_api#0' });

  it('bundles stay in force while the agent goes away and comes back, three times, with requests flowing', async () => {
    await until('the agent connected', async () => (await connected()) === 1);
    const okBefore = metricValue(await scrape(svc), 'chio_trust_bundle_refreshes_total', { source: 'workload_api#0', result: 'ok' });
    let flowing = true;
    const answers: Answer[] = [];
    const failures: string[] = [];
    const load = (async () => {
      while (flowing) {
        try {
          answers.push(readAnswer(await svc.client.check(requestAs(svid))));
        } catch (err) {
          failures.push(String(err));
        }
      }
    })();
    for (let cycle = 0; cycle < 3; cycle++) {
      await agent.stop();
      await until('the gauge to drop', async () => (await connected()) === 0);
      await new Promise((r) => setTimeout(r, 100));
      await agent.start();
      await until('the agent to reconnect', async () => (await connected()) === 1, 20_000);
    }
    flowing = false;
    await load;
    expect(failures).toEqual([]);
    expect(answers.length).toBeGreaterThan(10);
    expect(answers.filter((a) => a.verdict !== 'allow')).toEqual([]);
    const text = await scrape(svc);
    expect(metricValue(text, 'chio_trust_bundle_refreshes_total', { source: 'workload_api#0', result: 'ok' })).toBeGreaterThanOrEqual(okBefore + 3);
    expect(metricValue(text, 'chio_admissions_total', { verdict: 'allow' })).toBe(answers.length);
    expect(indexReceipts(receiptLines(svc.receiptsFile)).size).toBe(answers.length);
  });
});

// ---------------------------------------------------------------------------------------------

describe('clock jumps (injected clock)', () => {
  let now = FIXED_NOW;
  let svc: TestService;
  let token: string;

  beforeAll(async () => {
    svc = await startHostileInputService(DEMO_POLICY, { clock: () => now });
    token = (capabilityTokens(keyFromSeed(HARNESS_AUTHORITY_SEED), FIXED_NOW) as [string, string])[1];
  });
  afterAll(async () => svc?.close());

  async function at(time: number, req: FixtureRequest): Promise<Answer> {
    now = time;
    return readAnswer(await svc.client.check(req));
  }

  const withToken = (): FixtureRequest => {
    const req = fixtureRequest('http-mtls-spiffe-full');
    const headers = req.attributes.request?.http?.headers;
    if (headers) headers['x-chio-capability'] = token;
    return req;
  };

  it('SVID validity follows the clock both ways, never cached as a verdict', async () => {
    const svidNotAfter = Date.parse('2036-11-22T21:38:00Z');
    const svidNotBefore = Date.parse('2026-11-25T21:38:00Z');
    expect(await at(FIXED_NOW, fixtureRequest('http-mtls-spiffe-full'))).toMatchObject({ verdict: 'allow' });
    expect(await at(svidNotAfter + 1000, fixtureRequest('http-mtls-spiffe-full'))).toMatchObject({ verdict: 'deny', reason: 'svid_expired' });
    expect(await at(svidNotBefore - 1000, fixtureRequest('http-mtls-spiffe-full'))).toMatchObject({ verdict: 'deny', reason: 'svid_not_yet_valid' });
    expect(await at(FIXED_NOW, fixtureRequest('http-mtls-spiffe-full'))).toMatchObject({ verdict: 'allow' });
    const text = await scrape(svc);
    expect(metricValue(text, 'chio_admissions_total', { reason: 'svid_expired' })).toBe(1);
    expect(metricValue(text, 'chio_admissions_total', { reason: 'svid_not_yet_valid' })).toBe(1);
  });

  it('capability windows too: 30 s of skew, then capability_not_yet_valid / capability_expired', async () => {
    expect(await at(FIXED_NOW, withToken())).toMatchObject({ verdict: 'allow' });
    expect(await at(FIXED_NOW - 20_000, withToken())).toMatchObject({ verdict: 'allow' });
    expect(await at(FIXED_NOW - 60_000, withToken())).toMatchObject({ verdict: 'deny', reason: 'capability_not_yet_valid' });
    expect(await at(FIXED_NOW + 3600_000 + 20_000, withToken())).toMatchObject({ verdict: 'allow' });
    expect(await at(FIXED_NOW + 2 * 3600_000, withToken())).toMatchObject({ verdict: 'deny', reason: 'capability_expired' });
    expect(await at(FIXED_NOW, withToken())).toMatchObject({ verdict: 'allow' });
    const text = await scrape(svc);
    expect(metricValue(text, 'chio_admissions_total', { reason: 'capability_not_yet_valid' })).toBe(1);
    expect(metricValue(text, 'chio_admissions_total', { reason: 'capability_expired' })).toBe(1);
  });

  it('receipt timestamps are the decision times (a jump back shows), while seq and ids keep increasing and the chain verifies', async () => {
    const times = [FIXED_NOW + 5 * DAY, FIXED_NOW - DAY, FIXED_NOW + 10 * DAY, FIXED_NOW - 2 * DAY];
    const ids: string[] = [];
    for (const t of times) ids.push(String((await at(t, fixtureRequest('http-plaintext-no-identity'))).receiptId));
    const all = receiptLines(svc.receiptsFile).map((l) => JSON.parse(l) as { id: string; seq: number; timestamp: string });
    const mine = all.filter((r) => ids.includes(r.id));
    expect(mine.map((r) => r.timestamp)).toEqual(times.map((t) => new Date(t).toISOString()));
    for (let i = 1; i < all.length; i++) {
      expect(all[i]?.seq).toBe((all[i - 1]?.seq ?? 0) + 1);
      expect((all[i]?.id ?? '') > (all[i - 1]?.id ?? '')).toBe(true);
    }
    expect(await verifyReceiptFile(svc.receiptsFile, verificationKeys([svc.service.key]))).toMatchObject({ ok: true, receipts: all.length });
    now = FIXED_NOW;
  });
});
