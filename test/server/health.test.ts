/**
 * grpc.health.v1 on the Check listener (src/server/health.ts): the spec's answers, and a Watch of a
 * service name leaves nothing behind once the call ends (grpc-health-check kept a set per name ever
 * asked about: 300 Watch calls of 1 MB names took the heap from 34 to 324 MB, a review).
 */
import { describe, expect, it } from 'vitest';
import { HealthService, type HealthServer } from '../../src/server/health.js';

type Impl = Record<string, (...args: unknown[]) => void>;

function served(health: HealthService): Impl {
  let impl: Impl = {};
  const server: HealthServer = { addService: (_def, implementation) => void (impl = implementation as Impl) };
  health.addToServer(server);
  return impl;
}

function watchCall(service: string): { written: string[]; cancel: () => void; call: object } {
  const written: string[] = [];
  let onCancel: () => void = () => undefined;
  const call = {
    request: { service },
    write: (m: { status: string }) => written.push(m.status),
    on: (event: string, listener: () => void) => {
      if (event === 'cancelled') onCancel = listener;
    },
  };
  return { written, cancel: () => onCancel(), call };
}

describe('HealthService', () => {
  it('Check: the status of a known service; NOT_FOUND (without echoing the name) otherwise', () => {
    const impl = served(new HealthService({ '': 'SERVING' }));
    const answers: unknown[] = [];
    impl['check']?.({ request: { service: '' } }, (err: unknown, v: unknown) => answers.push(err ?? v));
    impl['check']?.({ request: { service: 'x'.repeat(1000) } }, (err: unknown, v: unknown) => answers.push(err ?? v));
    expect(answers).toEqual([{ status: 'SERVING' }, { code: 5, details: 'health status unknown for that service' }]);
  });

  it('Watch: the current status, then each change; SERVICE_UNKNOWN for an unknown name, the call left open', () => {
    const health = new HealthService({ '': 'SERVING' });
    const impl = served(health);
    const known = watchCall('');
    const unknown = watchCall('nope');
    impl['watch']?.(known.call);
    impl['watch']?.(unknown.call);
    health.setStatus('', 'NOT_SERVING');
    health.setStatus('', 'NOT_SERVING'); // no change, no message
    expect(known.written).toEqual(['SERVING', 'NOT_SERVING']);
    expect(unknown.written).toEqual(['SERVICE_UNKNOWN']);
  });

  it('a Watch of any number of distinct names leaves nothing once each call is cancelled', () => {
    const health = new HealthService({ '': 'SERVING' });
    const impl = served(health);
    const calls = Array.from({ length: 300 }, (_, i) => watchCall(`name-${i}-${'x'.repeat(1000)}`));
    for (const c of calls) impl['watch']?.(c.call);
    const twice = watchCall('');
    const again = watchCall('');
    impl['watch']?.(twice.call);
    impl['watch']?.(again.call);
    expect(health.watchedNames).toBe(301);
    for (const c of calls) c.cancel();
    twice.cancel();
    expect(health.watchedNames).toBe(1); // '' still watched by the other call
    again.cancel();
    expect(health.watchedNames).toBe(0);
  });
});
