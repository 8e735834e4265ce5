/**
 * `chio serve` when a listener cannot bind (a port in use): one line with a stable code and exit 2,
 * and the process ends. It printed a stack, and with the gRPC port taken it stayed alive with no
 * listener and ignored SIGTERM (what it had started before the listener was never closed).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
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

function serve(listen: string): Promise<{ code: number | null; err: string; ms: number }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-listen-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'policy.yaml'), demoPolicy());
  writeFileSync(path.join(dir, 'chio.yaml'), ['schema: chio.config.v1', `listen: ${listen}`, 'policy: ./policy.yaml', 'keys: { receipt_signing_seed: ./data/kernel.seed }', ''].join('\n'));
  const started = Date.now();
  const child = spawn(process.execPath, [CHIO, 'serve', '--config', path.join(dir, 'chio.yaml')], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
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

describe('chio serve with a listener address in use', () => {
  it('the gRPC port: exit 2, one line naming listen.grpc, and the process ends', async () => {
    const port = await occupied();
    const r = await serve(`{ grpc: 127.0.0.1:${port}, admin: 127.0.0.1:0 }`);
    expect(r).toMatchObject({ code: 2, err: `chio serve: io_error: listen.grpc: cannot listen on 127.0.0.1:${port}: the address is already in use (EADDRINUSE)\n` });
    expect(r.ms).toBeLessThan(10_000);
  }, 20_000);

  it('the admin port: exit 2, one line naming listen.admin', async () => {
    const port = await occupied();
    const r = await serve(`{ grpc: 127.0.0.1:0, admin: 127.0.0.1:${port} }`);
    expect(r).toMatchObject({ code: 2, err: `chio serve: io_error: listen.admin: cannot listen on 127.0.0.1:${port}: the address is already in use (EADDRINUSE)\n` });
  }, 20_000);
});
