/**
 * `listen.grpc_transport`: the native transport (src/server/native-grpc.ts, the default) and
 * grpc-js's server answer every reference CheckRequest, and the gRPC health service, alike.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, fixtureRequest, startTestService, type TestService } from '../helpers/service.js';

const NAMES = readdirSync(path.join(FIXTURES, 'envoy', 'check-requests'))
  .filter((f) => f.endsWith('.loader-view.json'))
  .map((f) => f.slice(0, -'.loader-view.json'.length))
  .sort();

/** The answer with its receipt ids (ULIDs, random) made equal. */
const normalized = (res: unknown): string => JSON.stringify(res).replace(/rct-[0-9A-HJKMNP-TV-Z]{26}/g, 'rct-X');

let native: TestService;
let grpcJs: TestService;

beforeAll(async () => {
  native = await startTestService();
  grpcJs = await startTestService({
    configText: () =>
      [
        'schema: chio.config.v1',
        'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0, grpc_transport: grpc-js }',
        'policy: ./policy.yaml',
        'keys: { receipt_signing_seed: ./data/kernel.seed }',
        'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
      ].join('\n'),
  });
});
afterAll(async () => {
  await native?.close();
  await grpcJs?.close();
});

describe('native and grpc-js transports', () => {
  it('are the default and the option', () => {
    expect(NAMES.length).toBeGreaterThanOrEqual(15);
    expect(native.service.grpcTransport).toBe('native');
    expect(grpcJs.service.grpcTransport).toBe('grpc-js');
  });

  it.each(NAMES)('answer %s alike', async (name) => {
    const [a, b] = await Promise.all([native.client.check(fixtureRequest(name)), grpcJs.client.check(fixtureRequest(name))]);
    expect(normalized(a)).toBe(normalized(b));
  });

  it('answer the health service alike', async () => {
    const Client = grpc.makeClientConstructor(healthService, 'Health');
    for (const svc of [native, grpcJs]) {
      const client = new Client(`127.0.0.1:${svc.service.grpcPort}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
        check(req: object, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
      };
      const check = (service: string): Promise<unknown> =>
        new Promise((resolve) => client.check({ service }, (err, res) => resolve(err ? { code: err.code, details: err.details } : res)));
      expect(await check('')).toEqual({ status: 'SERVING' });
      expect(await check('envoy.service.auth.v3.Authorization')).toEqual({ status: 'SERVING' });
      expect(await check('nope')).toEqual({ code: grpc.status.NOT_FOUND, details: 'health status unknown for that service' });
      client.close();
    }
  });
});
