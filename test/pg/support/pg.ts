/**
 * PostgreSQL for the tests under test/pg/ (README "Several replicas, one PostgreSQL").
 *
 * The server: `CHIO_TEST_PG_URL` (default postgres://postgres@127.0.0.1:5432/test, trust auth).
 * On a laptop without one these tests are skipped, saying how to run them; in CI (`CI` or
 * `CHIO_REQUIRE_PG` set, as .ci/run does) a missing server FAILS the run instead.
 *
 * Each test file works in a schema of its own (`chio_t_<random>`), created here and dropped after,
 * so parallel files and parallel runs never see each other's tables; the URL handed to chio selects
 * it with `options=-c search_path=…`.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';

export const TEST_PG_URL = process.env['CHIO_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
export const PG_REQUIRED = isSet(process.env['CI']) || isSet(process.env['CHIO_REQUIRE_PG']);

function isSet(v: string | undefined): boolean {
  return v !== undefined && v !== '' && v !== '0' && v !== 'false';
}

async function reachable(url: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    await client.end().catch(() => undefined);
  }
}

const unreachable = await reachable(TEST_PG_URL);
if (unreachable !== null && !PG_REQUIRED) {
  process.stderr.write(
    `test/pg: skipped: no PostgreSQL at ${TEST_PG_URL} (${unreachable}). Point CHIO_TEST_PG_URL at a server ` +
      '(postgres://user@host:5432/db; the tests create and drop their own schemas) to run them.\n',
  );
}

/** Skip the PostgreSQL tests when there is no server, unless it is required (then they fail). */
export const SKIP_PG = unreachable !== null && !PG_REQUIRED;

/** Throws (failing the test) when the server is required and unreachable. */
export function assertPgReachable(): void {
  if (unreachable !== null) {
    throw new Error(`PostgreSQL is required here (CI / CHIO_REQUIRE_PG) but ${TEST_PG_URL} is unreachable: ${unreachable}`);
  }
}

/** `url` with `options=-c search_path=<schema>` (replacing any options it had). */
export function withSearchPath(url: string, schema: string): string {
  const u = new URL(url);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
}

export interface TestSchema {
  readonly schema: string;
  /** the test server's URL selecting this schema */
  readonly url: string;
  /** a client on this schema (closed by drop) */
  readonly admin: pg.Client;
  drop(): Promise<void>;
}

/** Creates a fresh schema (dropped by `drop()`, with everything in it). */
export async function createTestSchema(): Promise<TestSchema> {
  assertPgReachable();
  const schema = `chio_t_${randomBytes(6).toString('hex')}`;
  const url = withSearchPath(TEST_PG_URL, schema);
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.query(`SET search_path = ${schema}`);
  return {
    schema,
    url,
    admin,
    drop: async () => {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    },
  };
}

/** The host and port of a postgres:// URL. */
export function hostPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname || '127.0.0.1', port: Number(u.port || 5432) };
}

/**
 * A TCP proxy in front of the test server, to make the database unreachable and back without
 * touching the machine's PostgreSQL: `cut()` drops every connection and refuses new ones until
 * `restore()`. `url(schema)` is the URL through the proxy.
 */
export class PgProxy {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #cut = false;
  #port = 0;

  private constructor(server: net.Server) {
    this.#server = server;
  }

  static async start(target = hostPort(TEST_PG_URL)): Promise<PgProxy> {
    const holder: { proxy: PgProxy | null } = { proxy: null };
    const server = net.createServer((client) => {
      if (holder.proxy === null) client.destroy();
      else holder.proxy.#accept(client, target);
    });
    const proxy = new PgProxy(server);
    holder.proxy = proxy;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy.#port = (server.address() as net.AddressInfo).port;
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  /** The test server's URL, through this proxy, on `schema`. */
  url(schema: string): string {
    const u = new URL(withSearchPath(TEST_PG_URL, schema));
    u.hostname = '127.0.0.1';
    u.port = String(this.#port);
    return u.toString();
  }

  cut(): void {
    this.#cut = true;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  restore(): void {
    this.#cut = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: net.Socket, target: { host: string; port: number }): void {
    if (this.#cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      this.#sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.#sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
