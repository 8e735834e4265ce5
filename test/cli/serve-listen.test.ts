/**
 * `chio serve` when a listener cannot bind (a port in use): one line with a stable code and exit 2,
 * and the process ends. It printed a stack, and with the gRPC port taken it stayed alive with no
 * listener and ignored SIGTERM (what it had started before the listener was never closed).
 * And an empty `--config` or CHIO_CONFIG: a usage error, never the embedded demo config.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveConfigSource } from '../../src/config/load.js';
import { demoPolicy } from '../helpers/service.js';

const CHIO = path.resolve(import.meta.dirname, '..', '..', 'bin', 'chio.js');
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function occupied(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

/**
 * `chio serve` in a fresh folder holding policy.yaml and a chio.yaml listening on `listen`, with the
 * arguments `args(chio.yaml)` and `env` (default: this process's); killed after 15 s (a service that started).
 */
function runServe(listen: string, args: (config: string) => string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; err: string; ms: number }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-listen-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
  const config = path.join(dir, 'chio.yaml');
  writeFileSync(config, ['schema: chio.config.v1', `listen: ${listen}`, 'policy: ./policy.yaml', 'keys: { receipt_signing_seed: ./data/kernel.seed }', ''].join('\n'));
  const started = Date.now();
  const child = spawn(process.execPath, [CHIO, 'serve', ...args(config)], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, err, ms: Date.now() - started });
    }),
  );
}

function serve(listen: string): Promise<{ code: number | null; err: string; ms: number }> {
  return runServe(listen, (config) => ['--config', config]);
}

describe('chio serve with a listener address in use', () => {
  it('the gRPC port: exit 2, one line naming listen.grpc, and the process ends', async () => {
    const port = await occupied();
    const r = await serve(`{ grpc: 127.0.0.1:${port}, admin: 127.0.0.1:0 }`);
    expect(r).toMatchObject({ code: 2, err: `chio serve: io_error: listen.grpc: cannot listen on 127.0.0.1:${port}: the address is already in use (EADDRINUSE)\n` });
    expect(r.ms).toBeLessThan(10_000);
  }, 20_000);

  it('a host name that does not resolve: exit 2, one line naming listen.admin (was a getaddrinfo stack, exit 1)', async () => {
    const r = await serve('{ grpc: 127.0.0.1:0, admin: "no-such-host.invalid:9192" }');
    expect(r).toMatchObject({ code: 2, err: 'chio serve: io_error: listen.admin: cannot listen on no-such-host.invalid:9192: the host name does not resolve (ENOTFOUND)\n' });
  }, 20_000);

  it('an IPv4 address with a part over 255: a config error naming listen.grpc', async () => {
    const r = await serve('{ grpc: "999.999.999.999:9191", admin: 127.0.0.1:0 }');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^chio serve: config_invalid: .*chio\.yaml:2:\d+: listen\.grpc: not an IPv4 address: four decimal parts 0\.\.255, e\.g\. 127\.0\.0\.1\n$/);
  }, 20_000);

  it('the admin port: exit 2, one line naming listen.admin', async () => {
    const port = await occupied();
    const r = await serve(`{ grpc: 127.0.0.1:0, admin: 127.0.0.1:${port} }`);
    expect(r).toMatchObject({ code: 2, err: `chio serve: io_error: listen.admin: cannot listen on 127.0.0.1:${port}: the address is already in use (EADDRINUSE)\n` });
  }, 20_000);
});

/** `chio serve ARGS` with only PATH and `env` set, where a config that would start (ports chosen by the OS) is chio.yaml: only an empty setting may stop it. */
async function serveArgs(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; err: string }> {
  const { code, err } = await runServe('{ grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }', () => args, { PATH: process.env['PATH'], ...env });
  return { code, err };
}

describe('chio serve with an empty --config or CHIO_CONFIG', () => {
  // `'' ?? CHIO_CONFIG` never fell through: `--config ""` ran the embedded demo config (demo policy,
  // a new key in ./chio-data), whatever CHIO_CONFIG said (QA finding)
  it('--config "": exit 2, one line naming --config, even with CHIO_CONFIG set', async () => {
    const r = await serveArgs(['--config', ''], { CHIO_CONFIG: 'chio.yaml' });
    expect(r).toEqual({
      code: 2,
      err: 'chio serve: usage: --config is empty: give the path of chio.yaml (omit --config and CHIO_CONFIG for the embedded demo config)\n',
    });
  }, 20_000);

  it('CHIO_CONFIG set but empty: exit 2, one line naming CHIO_CONFIG', async () => {
    const r = await serveArgs([], { CHIO_CONFIG: '' });
    expect(r).toEqual({ code: 2, err: 'chio serve: usage: CHIO_CONFIG is set but empty: set it to the path of chio.yaml, or unset it for the embedded demo config\n' });
  }, 20_000);

  it('resolveConfigSource: --config wins over CHIO_CONFIG; neither is the embedded config', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-resolve-config-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
    writeFileSync(path.join(dir, 'chio.yaml'), ['schema: chio.config.v1', 'policy: ./policy.yaml', 'keys: { receipt_signing_seed: ./data/kernel.seed }', ''].join('\n'));
    expect(resolveConfigSource('chio.yaml', { CHIO_CONFIG: 'elsewhere.yaml' }, dir).config.file).toBe(path.join(dir, 'chio.yaml'));
    expect(resolveConfigSource(undefined, { CHIO_CONFIG: 'chio.yaml' }, dir).config.file).toBe(path.join(dir, 'chio.yaml'));
    expect(resolveConfigSource(undefined, {}, dir).config.file).toBe('(embedded)');
    expect(() => resolveConfigSource(' ', {}, dir)).toThrow(/^--config is empty/);
  });
});
