import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import type { CheckResponseMessage } from '../../src/check/envoy.js';
import type { RawCheckRequest } from '../../src/check/envoy.js';
import { InFlightLimit, limitInFlight, type SheddableHandler } from '../../src/limits.js';
import { METRIC_NAMES } from '../../src/metrics.js';
import { fixtureRequest, startTestService, type TestService } from '../helpers/service.js';

describe('InFlightLimit', () => {
  it('takes at most max slots and gives them back', () => {
    const limit = new InFlightLimit(2);
    expect([limit.tryEnter(), limit.tryEnter(), limit.tryEnter()]).toStrictEqual([true, true, false]);
    expect(limit.inFlight).toBe(2);
    limit.leave();
    expect(limit.tryEnter()).toBe(true);
    limit.leave();
    limit.leave();
    expect(limit.inFlight).toBe(0);
  });

  it('refuses a bad cap and an unmatched leave', () => {
    expect(() => new InFlightLimit(0)).toThrow(TypeError);
    expect(() => new InFlightLimit(1.5)).toThrow(TypeError);
    expect(() => new InFlightLimit(1).leave()).toThrow('InFlightLimit.leave() without a matching tryEnter()');
  });
});

const ALLOW: CheckResponseMessage = { status: { code: 0 } };
const SHED: CheckResponseMessage = { status: { code: 7, message: 'overloaded' } };

/** A handler whose Checks stay in flight until released, counting what it was asked. */
function heldHandler(): SheddableHandler & { held: Array<() => void>; checks: number; shedCount: number } {
  const h = {
    held: [] as Array<() => void>,
    checks: 0,
    shedCount: 0,
    check(_req: RawCheckRequest): Promise<CheckResponseMessage> {
      h.checks++;
      return new Promise((resolve) => h.held.push(() => resolve(ALLOW)));
    },
    async shed(_req: RawCheckRequest): Promise<CheckResponseMessage> {
      h.shedCount++;
      return SHED;
    },
  };
  return h;
}

describe('limitInFlight', () => {
  it('admits at most max Checks at once, sheds the rest at once, and admits again when a slot frees', async () => {
    const limit = new InFlightLimit(3);
    const inner = heldHandler();
    const handler = limitInFlight(inner, limit);
    const answers = Array.from({ length: 10 }, () => handler.check({}));
    expect([inner.checks, inner.shedCount, limit.inFlight]).toStrictEqual([3, 7, 3]);
    // the shed answers do not wait for the held ones
    await expect(Promise.all(answers.slice(3))).resolves.toStrictEqual(Array(7).fill(SHED));
    inner.held.shift()?.();
    await expect(answers[0]).resolves.toBe(ALLOW);
    expect(limit.inFlight).toBe(2);
    const again = handler.check({});
    expect(inner.checks).toBe(4);
    for (const release of inner.held.splice(0)) release();
    await expect(Promise.all([answers[1], answers[2], again])).resolves.toStrictEqual([ALLOW, ALLOW, ALLOW]);
    expect(limit.inFlight).toBe(0);
  });

  it('frees the slot when the handler rejects or throws', async () => {
    const limit = new InFlightLimit(1);
    const failing: SheddableHandler = { check: () => Promise.reject(new Error('boom')), shed: async () => SHED };
    await expect(limitInFlight(failing, limit).check({})).rejects.toThrow('boom');
    expect(limit.inFlight).toBe(0);
    const throwing: SheddableHandler = {
      check: () => {
        throw new Error('sync boom');
      },
      shed: async () => SHED,
    };
    expect(() => limitInFlight(throwing, limit).check({})).toThrow('sync boom');
    expect(limit.inFlight).toBe(0);
  });
});

describe('a service flooded past limits.max_in_flight', () => {
  let svc: TestService | undefined;
  afterEach(async () => {
    await svc?.close();
    svc = undefined;
  });

  const receiptIdOf = (res: CheckResponseMessage): string | undefined =>
    (res.ok_response?.headers ?? res.denied_response?.headers)?.find((h) => h.header?.key === 'x-chio-receipt-id')?.header?.value;

  it('answers every Check: allows up to the cap, the rest deny overloaded (503) with a receipt; then recovers', async () => {
    svc = await startTestService({ configExtra: 'limits: { max_in_flight: 2 }' });
    const s = svc;
    const request = fixtureRequest('http-mtls-spiffe-full');
    // warm the SVID cache and the connection
    expect((await s.client.check(request)).status?.code ?? 0).toBe(0);

    const flood = await Promise.all(Array.from({ length: 300 }, () => s.client.check(request)));
    const allowed = flood.filter((r) => (r.status?.code ?? 0) === 0);
    const shed = flood.filter((r) => (r.status?.code ?? 0) !== 0);
    expect(allowed.length).toBeGreaterThanOrEqual(2);
    expect(shed.length).toBeGreaterThan(0);
    for (const res of shed) {
      expect(res.status?.code).toBe(7); // PERMISSION_DENIED: never an RPC error, whatever Envoy's failure_mode_allow
      expect(res.denied_response?.status?.code).toBe('ServiceUnavailable');
      const id = receiptIdOf(res);
      expect(id).toMatch(/^rct-[0-9A-HJKMNP-TV-Z]{26}$/);
      expect(JSON.parse(res.denied_response?.body ?? '')).toStrictEqual({ verdict: 'deny', reason: 'overloaded', receiptId: id });
    }

    // every answer has its receipt: the shed ones say why
    const receipts = s.receipts();
    expect(receipts).toHaveLength(1 + flood.length);
    const byId = new Map(receipts.map((r) => [r['id'], r]));
    for (const res of flood) expect(byId.has(receiptIdOf(res))).toBe(true);
    const shedReceipts = receipts.filter((r) => r['verdict'] === 'deny');
    expect(shedReceipts).toHaveLength(shed.length);
    for (const r of shedReceipts) {
      expect(r['reasons']).toStrictEqual([{ code: 'overloaded', message: 'too many Checks in flight; try again' }]);
      expect((r['request'] as Record<string, unknown>)['path']).toBe('/api/v1/orders');
    }

    const metrics = await (await fetch(`${s.adminUrl}/metrics`)).text();
    expect(metrics).toContain(`${METRIC_NAMES.checksInFlight} 0`);
    const overloaded = metrics.split('\n').find((l) => l.startsWith(`${METRIC_NAMES.admissions}{`) && l.includes('reason="overloaded"'));
    expect(overloaded?.split(' ').pop()).toBe(String(shed.length));

    // load gone: everything is admitted again
    for (let i = 0; i < 5; i++) expect((await s.client.check(request)).status?.code ?? 0).toBe(0);
  });

  it('advertises limits.max_concurrent_streams to every HTTP/2 client', async () => {
    svc = await startTestService({ configExtra: 'limits: { max_in_flight: 8, max_concurrent_streams: 17 }' });
    const session = http2.connect(`http://127.0.0.1:${svc.service.grpcPort}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxConcurrentStreams).toBe(17);
    } finally {
      session.destroy();
    }
  });
});
