/**
 * The PostgreSQL parts of chio.yaml and of the running service (src/receipt/pg/config.ts,
 * service.ts, src/main.ts): parsing, the startup schema check, a start while the database is away
 * (decisions go on, shipping catches up), and the shipping metrics. The config tests need no
 * server; the others need PostgreSQL (support/pg.ts).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCheckClient } from '../../src/check/client.js';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { startService, type RunningService } from '../../src/main.js';
import { migrate } from '../../src/receipt/pg/migrate.js';
import { MIGRATIONS } from '../../src/receipt/pg/migrations/index.js';
import { demoPolicy, fixtureRequest, recordingLogger } from '../helpers/service.js';
import { createTestSchema, PgProxy, SKIP_PG, type TestSchema } from './support/pg.js';

const BASE = ['schema: chio.config.v1', 'policy: ./policy.yaml', 'keys: { receipt_signing_seed: ./data/kernel.seed }'];

function parse(lines: string[]): ReturnType<typeof parseConfig> {
  return parseConfig([...BASE, ...lines, ''].join('\n'), '/etc/chio/chio.yaml', '/etc/chio');
}

function configError(lines: string[]): string {
  try {
    parse(lines);
  } catch (err) {
    if (err instanceof ChioError) return `${err.code}: ${err.message}`;
    throw err;
  }
  throw new Error('parsed');
}

describe('chio.yaml: a postgres receipt sink and shared revocations', () => {
  it('takes the postgres entry out of receipts.sinks (it is shipped to, not written through)', () => {
    const c = parse(['receipts: { sinks: [ { type: jsonl, path: ./r.jsonl }, { type: postgres, url_env: AUDIT_PG } ] }', 'revocations: { type: postgres }']);
    expect(c.receipts.sinks).toEqual([{ type: 'jsonl', path: '/etc/chio/r.jsonl' }]);
    expect(c.receipts.postgres).toEqual({ type: 'postgres', url_env: 'AUDIT_PG', batch_size: 1000, buffer_receipts: 20_000 });
    expect(c.revocations).toEqual({ type: 'postgres', url_env: 'CHIO_PG_URL', poll_seconds: 1 });
    const plain = parse([]);
    expect(plain.receipts.postgres).toBeNull();
    expect(plain.revocations).toBeUndefined();
    expect(plain.receipts.sinks).toEqual([{ type: 'jsonl', path: '/etc/chio/data/receipts.jsonl' }]);
  });

  it('refuses a postgres sink without a local log, two of them, a bad variable name, unknown keys', () => {
    expect(configError(['receipts: { sinks: [ { type: postgres } ] }'])).toContain(
      'a postgres sink ships the receipts of a local log: add a jsonl or sqlite sink too',
    );
    expect(configError(['receipts: { sinks: [ { type: sqlite, path: a.db }, { type: postgres }, { type: postgres } ] }'])).toContain('at most one postgres sink');
    expect(configError(['receipts: { sinks: [ { type: jsonl, path: a }, { type: postgres, url_env: "postgres://x" } ] }'])).toContain(
      'expected an environment variable name (the URL itself never goes in chio.yaml)',
    );
    expect(configError(['receipts: { sinks: [ { type: jsonl, path: a }, { type: postgres, url: x } ] }'])).toMatch(/^config_invalid: .*url/);
    expect(configError(['revocations: { type: postgres, poll_seconds: 0 }'])).toMatch(/^config_invalid: .*poll_seconds/);
  });
});

describe.skipIf(SKIP_PG)('a replica and its PostgreSQL', () => {
  let schema: TestSchema;
  let proxy: PgProxy;
  const dirs: string[] = [];
  const services: RunningService[] = [];

  beforeAll(async () => {
    schema = await createTestSchema();
    proxy = await PgProxy.start();
  });
  afterEach(async () => {
    for (const s of services.splice(0)) await s.close(2000);
  });
  afterAll(async () => {
    await proxy?.close();
    await schema?.drop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  function config(extra: string[] = []): ReturnType<typeof parseConfig> {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-pg-svc-'));
    dirs.push(dir);
    writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
    const text = [
      ...BASE,
      'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: postgres, url_env: PG } ] }',
      ...extra,
      '',
    ].join('\n');
    return parseConfig(text, path.join(dir, 'chio.yaml'), dir);
  }

  it('refuses to start on a schema older than the code, naming the command that fixes it', async () => {
    await migrate(schema.admin, MIGRATIONS.slice(0, 1));
    const log = recordingLogger();
    await expect(startService(config(), { log, defaultMetrics: false, env: { PG: proxy.url(schema.schema) } })).rejects.toMatchObject({
      code: 'config_invalid',
      message: `the PostgreSQL schema "${schema.schema}" is at version 1, this chio needs version ${MIGRATIONS.length}: run \`chio db migrate --url-env PG\` first`,
    });
    await expect(startService(config(), { log, defaultMetrics: false, env: {} })).rejects.toMatchObject({
      code: 'config_invalid',
      message: 'receipts.sinks[type=postgres].url_env names PG, which is not set or empty (expected postgres://user@host:5432/db)',
    });
    await migrate(schema.admin);
  });

  it('starts while the database is away, decides, and ships once it is back; the lag is a metric', async () => {
    await migrate(schema.admin);
    proxy.cut();
    const log = recordingLogger();
    const service = await startService(config(['admin: { token_env: T }']), { log, defaultMetrics: false, env: { PG: proxy.url(schema.schema), T: 'tok' } });
    services.push(service);
    const query = async (): Promise<{ status: number; body: { receipts?: unknown[]; error?: { code: string } } }> => {
      const res = await fetch(`http://127.0.0.1:${service.adminPort}/v1/receipts/query?limit=500`, { headers: { authorization: 'Bearer tok' } });
      return { status: res.status, body: (await res.json()) as { receipts?: unknown[]; error?: { code: string } } };
    };
    expect(log.entries.map((e) => e.msg)).toContain(
      'PostgreSQL is not reachable at startup; starting anyway (the local log keeps every receipt, shipping retries)',
    );
    const client = createCheckClient(`127.0.0.1:${service.grpcPort}`);
    try {
      for (let i = 0; i < 20; i++) await client.check(fixtureRequest('http-mtls-spiffe-full'));
    } finally {
      client.close();
    }
    const metric = async (): Promise<string> => service.metrics.registry.metrics();
    await new Promise((r) => setTimeout(r, 1200));
    expect(await metric()).toContain('chio_receipt_shipping_lag_receipts{sink="postgres"} 20');
    expect(await metric()).toMatch(/chio_receipt_sink_errors_total\{sink="postgres"\} [1-9]/);
    const away = await query(); // the central store cannot be read: the server's fault, 503
    expect(away.status).toBe(503);
    expect(away.body.error?.code).toBe('io_error');
    proxy.restore();
    const deadline = Date.now() + 15_000;
    while (!(await metric()).includes('chio_receipt_shipping_lag_receipts{sink="postgres"} 0') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await metric()).toContain('chio_receipts_shipped_total{sink="postgres"} 20');
    expect(await metric()).toContain('chio_receipt_shipping_lag_seconds{sink="postgres"} 0');
    const { rows } = await schema.admin.query<{ n: number }>('SELECT count(*)::int AS n FROM chio_receipts');
    expect(rows[0]?.n).toBe(20);
    const back = await query();
    expect(back.status).toBe(200);
    expect(back.body.receipts).toHaveLength(20);
  });
});

describe('the README example of several replicas', () => {
  it('validates: a local log and a postgres sink, shared revocations', () => {
    const readme = readFileSync(path.resolve(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string).find((b) => b.includes('type: postgres'));
    expect(block).toBeDefined();
    const c = parse((block as string).split('\n'));
    expect(c.receipts.sinks.map((s) => s.type)).toEqual(['jsonl']);
    expect(c.receipts.postgres?.url_env).toBe('CHIO_PG_URL');
    expect(c.revocations?.url_env).toBe('CHIO_PG_URL');
  });
});
