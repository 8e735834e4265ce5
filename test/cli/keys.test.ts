import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fakeIO } from '../helpers/cli-io.js';
import { run } from '../../src/cli/keys.js';
import { keyFromSeed, publicJwk } from '../../src/keys.js';

const SEED_HEX = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const PUBLIC_HEX = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';


function workDir(): string {
  return mkdtempSync(join(tmpdir(), 'chio-cli-keys-'));
}

describe('chio keys generate', () => {
  it('writes a 0600 seed relative to cwd and prints its public key and kid', async () => {
    const cwd = workDir();
    const io = fakeIO(cwd);
    expect(await run(['generate', '--out', 'data/kernel.seed'], io)).toBe(0);
    const file = join(cwd, 'data', 'kernel.seed');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const key = keyFromSeed(Buffer.from(readFileSync(file, 'latin1').trim(), 'hex'));
    expect(io.out).toBe(
      `wrote a new Ed25519 seed to ${file} (mode 0600)\npublic key: ${key.publicKeyRaw.toString('hex')}\nkid: ${key.kid}\n`,
    );
    expect(io.err).toBe('');
  });

  it('--json prints the seed path, public key, kid and JWK', async () => {
    const cwd = workDir();
    const io = fakeIO(cwd);
    expect(await run(['generate', '--out', 'k.seed', '--json'], io)).toBe(0);
    const key = keyFromSeed(Buffer.from(readFileSync(join(cwd, 'k.seed'), 'latin1').trim(), 'hex'));
    expect(JSON.parse(io.out)).toEqual({
      seed: join(cwd, 'k.seed'),
      publicKey: key.publicKeyRaw.toString('hex'),
      kid: key.kid,
      jwk: publicJwk(key),
    });
  });

  it('refuses to overwrite an existing file (exit 2)', async () => {
    const cwd = workDir();
    writeFileSync(join(cwd, 'k.seed'), `${SEED_HEX}\n`, { mode: 0o600 });
    const io = fakeIO(cwd);
    expect(await run(['generate', '--out', 'k.seed'], io)).toBe(2);
    expect(io.err).toBe(`chio keys generate: io_error: refusing to overwrite existing file ${join(cwd, 'k.seed')}\n`);
    expect(readFileSync(join(cwd, 'k.seed'), 'latin1')).toBe(`${SEED_HEX}\n`);
  });

  it('needs --out, rejects unknown options and prints --help', async () => {
    const io = fakeIO(workDir());
    expect(await run(['generate'], io)).toBe(2);
    expect(io.err).toMatch(/^chio keys generate: missing --out FILE\n\nusage: chio keys generate --out FILE/);
    const io2 = fakeIO(workDir());
    expect(await run(['generate', '--out', 'x', '--force'], io2)).toBe(2);
    expect(io2.err).toMatch(/^chio keys generate: Unknown option '--force'/);
    const io3 = fakeIO(workDir());
    expect(await run(['generate', '--help'], io3)).toBe(0);
    expect(io3.out).toMatch(/^usage: chio keys generate --out FILE \[--json\]\n/);
  });
});

describe('chio keys public', () => {
  function seedIn(cwd: string, rel: string, mode = 0o600): void {
    writeFileSync(join(cwd, rel), `${SEED_HEX}\n`, { mode });
    chmodSync(join(cwd, rel), mode);
  }

  it('prints the hex public key of --seed, or the JWK with --json', async () => {
    const cwd = workDir();
    seedIn(cwd, 'k.seed');
    const io = fakeIO(cwd);
    expect(await run(['public', '--seed', 'k.seed'], io)).toBe(0);
    expect(io.out).toBe(`${PUBLIC_HEX}\n`);
    const io2 = fakeIO(cwd);
    expect(await run(['public', '--seed', 'k.seed', '--json'], io2)).toBe(0);
    const key = keyFromSeed(Buffer.from(SEED_HEX, 'hex'));
    expect(JSON.parse(io2.out)).toEqual({ kty: 'OKP', crv: 'Ed25519', x: key.publicKeyRaw.toString('base64url'), kid: key.kid });
  });

  it('defaults to ./chio-data/kernel.seed', async () => {
    const cwd = workDir();
    const io = fakeIO(cwd);
    expect(await run(['public'], io)).toBe(2);
    expect(io.err).toBe(`chio keys public: file_not_found: seed file ${join(cwd, 'chio-data', 'kernel.seed')} does not exist\n`);
  });

  it('refuses a seed readable by others (exit 2, with the chmod fix)', async () => {
    const cwd = workDir();
    seedIn(cwd, 'k.seed', 0o644);
    const io = fakeIO(cwd);
    expect(await run(['public', '--seed', 'k.seed'], io)).toBe(2);
    const file = join(cwd, 'k.seed');
    expect(io.err).toBe(
      `chio keys public: key_permissions: seed file ${file} is accessible by group or others (mode 0644); run: chmod 600 ${file}\n`,
    );
    expect(io.out).toBe('');
  });
});

describe('chio keys', () => {
  it('lists its subcommands; an unknown one is a usage error', async () => {
    const io = fakeIO(workDir());
    expect(await run(['--help'], io)).toBe(0);
    expect(io.out).toMatch(/^usage: chio keys <subcommand>/);
    const io2 = fakeIO(workDir());
    expect(await run(['rotate'], io2)).toBe(2);
    expect(io2.err).toMatch(/^chio keys: unknown subcommand "rotate"\n/);
  });
});

describe('chio keys generate: the folders of --out', () => {
  // `--out /proc/nope/x.seed` hung at 100% CPU: Node's recursive mkdir loops under /proc (mkdir there
  // answers ENOENT for a folder whose parent exists). Folders are now made one level at a time.
  it.skipIf(!existsSync('/proc/self'))('a folder that cannot be made (under /proc): exit 2 io_error at once, one line (bin/chio.js; needs npm run build)', () => {
    const started = Date.now();
    const r = spawnSync(process.execPath, [resolve(import.meta.dirname, '..', '..', 'bin', 'chio.js'), 'keys', 'generate', '--out', '/proc/nope/x.seed'], { encoding: 'utf8', timeout: 10_000 });
    expect(r.signal).toBeNull(); // not killed by the timeout
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('chio keys generate: io_error: cannot create folder /proc/nope: ENOENT\n');
    expect(Date.now() - started).toBeLessThan(5_000);
  }, 15_000);

  it('missing folders are made one level at a time, each 0700; a file in the way is io_error, exit 2', async () => {
    const cwd = workDir();
    const io = fakeIO(cwd);
    expect(await run(['generate', '--out', 'a/b/c/k.seed'], io)).toBe(0);
    for (const dir of ['a', 'a/b', 'a/b/c']) expect(statSync(join(cwd, dir)).mode & 0o777, dir).toBe(0o700);
    writeFileSync(join(cwd, 'plain'), 'x');
    const io2 = fakeIO(cwd);
    expect(await run(['generate', '--out', 'plain/d/k.seed'], io2)).toBe(2);
    expect(io2.err).toBe(`chio keys generate: io_error: cannot create folder ${join(cwd, 'plain', 'd')}: ${join(cwd, 'plain')} exists and is not a folder\n`);
    expect(existsSync(join(cwd, 'plain', 'd'))).toBe(false);
  });
});
