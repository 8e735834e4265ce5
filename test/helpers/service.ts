/**
 * Starts the real service on loopback (ports chosen by the OS) in a temp folder, with an
 * injected clock, and a grpc-js client on Envoy's official protos.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { createCheckClient, type CheckClient } from '../../src/check/client.js';
import type { RawCheckRequest } from '../../src/check/envoy.js';
import type { Logger } from '../../src/check/pipeline.js';
import { startService, type RunningService } from '../../src/main.js';

export const FIXTURES = path.resolve(import.meta.dirname, '..', 'fixtures');

/** 2026-12-01T00:00:00Z: inside the fixture SVIDs' validity (2026-11-25 .. 2036). */
export const FIXED_NOW = Date.parse('2026-12-01T00:00:00Z');

export interface LogEntry {
  level: 'error' | 'warn' | 'info';
  obj: object;
  msg: string;
}

export function recordingLogger(): Logger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  return {
    entries,
    error: (obj, msg) => void entries.push({ level: 'error', obj, msg }),
    warn: (obj, msg) => void entries.push({ level: 'warn', obj, msg }),
    info: (obj, msg) => void entries.push({ level: 'info', obj, msg }),
  };
}

export interface TestService {
  readonly dir: string;
  readonly service: RunningService;
  readonly client: CheckClient;
  readonly log: Logger & { entries: LogEntry[] };
  readonly receiptsFile: string;
  readonly adminUrl: string;
  /** the receipts written so far, parsed */
  receipts(): Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export interface TestServiceOptions {
  /** policy YAML text (default: the demo policy) */
  policy?: string;
  /** extra chio.yaml lines (YAML), appended after the defaults */
  configExtra?: string;
  clock?: () => number;
  /** replaces the whole config text (then policy and configExtra still apply to files) */
  configText?: (dir: string) => string;
  /** runs after the files are written, before the service starts */
  beforeStart?: (dir: string) => Promise<void> | void;
}

export function demoPolicy(): string {
  return readFileSync(path.resolve(import.meta.dirname, '..', '..', 'demo', 'policy.yaml'), 'utf8');
}

export async function startTestService(opts: TestServiceOptions = {}): Promise<TestService> {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-it-'));
  writeFileSync(path.join(dir, 'policy.yaml'), opts.policy ?? demoPolicy());
  const configText =
    opts.configText?.(dir) ??
    [
      'schema: chio.config.v1',
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
      opts.configExtra ?? '',
    ].join('\n');
  writeFileSync(path.join(dir, 'chio.yaml'), configText);
  await opts.beforeStart?.(dir);
  const config = parseConfig(configText, path.join(dir, 'chio.yaml'), dir);
  const log = recordingLogger();
  const service = await startService(config, { log, clock: opts.clock ?? (() => FIXED_NOW), defaultMetrics: false });
  const client = createCheckClient(`127.0.0.1:${service.grpcPort}`);
  const receiptsFile = config.receipts.sinks[0]?.path ?? path.join(dir, 'data', 'receipts.jsonl');
  return {
    dir,
    service,
    client,
    log,
    receiptsFile,
    adminUrl: `http://127.0.0.1:${service.adminPort}`,
    // a line without its newline yet is being written (requests in flight): not read
    receipts: () =>
      existsSync(receiptsFile)
        ? readFileSync(receiptsFile, 'utf8')
            .split('\n')
            .slice(0, -1)
            .filter((l) => l !== '')
            .map((l) => JSON.parse(l) as Record<string, unknown>)
        : [],
    close: async () => {
      client.close();
      await service.close(2000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A reference CheckRequest in the grpc-js/proto-loader view, deep-copied so tests may edit it. */
export function fixtureRequest(name: string): FixtureRequest {
  const file = path.join(FIXTURES, 'envoy', 'check-requests', `${name}.loader-view.json`);
  return JSON.parse(readFileSync(file, 'utf8')) as FixtureRequest;
}

export type FixtureRequest = RawCheckRequest & { attributes: NonNullable<RawCheckRequest['attributes']> };

export function fixturePem(name: string): { pem: string; envoy: string } {
  const index = JSON.parse(readFileSync(path.join(FIXTURES, 'envoy', 'pki', 'index.json'), 'utf8')) as Record<
    string,
    { envoy_url_encoded_pem: string }
  >;
  const entry = index[name];
  if (!entry) throw new TypeError(`no fixture certificate ${name}`);
  return { pem: readFileSync(path.join(FIXTURES, 'envoy', 'pki', `${name}.pem`), 'utf8'), envoy: entry.envoy_url_encoded_pem };
}
