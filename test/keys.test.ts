import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ed from '@noble/ed25519';
import { sha512 } from '@noble/hashes/sha2.js';
import fc from 'fast-check';
import { calculateJwkThumbprint } from 'jose';
import { describe, expect, it } from 'vitest';
import { ChioError } from '../src/errors.js';
import {
  generateSeedFile,
  keyFromSeed,
  loadOrCreateSeedFile,
  loadSeedFile,
  parsePublicKey,
  publicJwk,
  verifyEd25519,
} from '../src/keys.js';

ed.hashes.sha512 = sha512;

// RFC 8032 §7.1, TEST 1
const RFC_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const RFC_PUBLIC = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const RFC_SIG_EMPTY =
  'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'chio-keys-'));
}

function thrown(fn: () => unknown): ChioError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ChioError) return err;
    throw err;
  }
  throw new Error('expected a ChioError');
}

describe('keyFromSeed', () => {
  it('matches the RFC 8032 test vector', () => {
    const key = keyFromSeed(Buffer.from(RFC_SEED, 'hex'));
    expect(key.publicKeyRaw.toString('hex')).toBe(RFC_PUBLIC);
    expect(key.sign(new Uint8Array(0)).toString('hex')).toBe(RFC_SIG_EMPTY);
  });

  it('signs byte-identically to @noble/ed25519 for the same seed', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 300 }), (seed, msg) => {
        const key = keyFromSeed(seed);
        expect(Buffer.from(ed.getPublicKey(seed)).equals(key.publicKeyRaw)).toBe(true);
        expect(Buffer.from(ed.sign(msg, seed)).equals(key.sign(msg))).toBe(true);
      }),
      { numRuns: 25 },
    );
  });

  it('uses the RFC 7638 JWK thumbprint as kid', async () => {
    const key = keyFromSeed(Buffer.from(RFC_SEED, 'hex'));
    const x = key.publicKeyRaw.toString('base64url');
    expect(key.kid).toBe(await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x }, 'sha256'));
    expect(publicJwk(key)).toEqual({ kty: 'OKP', crv: 'Ed25519', x, kid: key.kid });
  });

  it('refuses a seed that is not 32 bytes (programmer error)', () => {
    expect(() => keyFromSeed(new Uint8Array(31))).toThrow(new TypeError('an Ed25519 seed is 32 bytes, got 31'));
  });
});

describe('verifyEd25519', () => {
  const key = keyFromSeed(Buffer.from(RFC_SEED, 'hex'));
  const data = Buffer.from('receipt bytes');
  it('accepts a good signature and rejects a changed message, signature or length', () => {
    const sig = key.sign(data);
    expect(verifyEd25519(key.publicKey, data, sig)).toBe(true);
    expect(verifyEd25519(key.publicKey, Buffer.from('receipt bytez'), sig)).toBe(false);
    const flipped = Buffer.from(sig);
    flipped[10] = (flipped[10] ?? 0) ^ 1;
    expect(verifyEd25519(key.publicKey, data, flipped)).toBe(false);
    expect(verifyEd25519(key.publicKey, data, sig.subarray(0, 63))).toBe(false);
  });
});

describe('seed files', () => {
  it('generateSeedFile writes 64 hex + newline with mode 0600, creating folders 0700', () => {
    const dir = tempDir();
    const file = join(dir, 'a', 'b', 'kernel.seed');
    const key = generateSeedFile(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o700);
    const text = readFileSync(file, 'latin1');
    expect(text).toMatch(/^[0-9a-f]{64}\n$/);
    expect(keyFromSeed(Buffer.from(text.trim(), 'hex')).kid).toBe(key.kid);
    expect(loadSeedFile(file).kid).toBe(key.kid);
  });

  it('generateSeedFile refuses to overwrite an existing file', () => {
    const file = join(tempDir(), 'kernel.seed');
    writeFileSync(file, 'keep me', { mode: 0o600 });
    const err = thrown(() => generateSeedFile(file));
    expect(err.code).toBe('io_error');
    expect(err.message).toBe(`refusing to overwrite existing file ${file}`);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });

  it('loadSeedFile refuses a seed readable by group or others, with the fix in the message', () => {
    const file = join(tempDir(), 'kernel.seed');
    writeFileSync(file, `${RFC_SEED}\n`);
    chmodSync(file, 0o644);
    const err = thrown(() => loadSeedFile(file));
    expect(err.code).toBe('key_permissions');
    expect(err.message).toBe(`seed file ${file} is accessible by group or others (mode 0644); run: chmod 600 ${file}`);
    chmodSync(file, 0o640);
    expect(thrown(() => loadSeedFile(file)).code).toBe('key_permissions');
    chmodSync(file, 0o600);
    expect(loadSeedFile(file).publicKeyRaw.toString('hex')).toBe(RFC_PUBLIC);
  });

  it('accepts 64 hex (any case, optional LF or CRLF) and exactly 32 raw bytes', () => {
    const dir = tempDir();
    const cases: Array<[string, Buffer]> = [
      ['plain', Buffer.from(RFC_SEED)],
      ['lf', Buffer.from(`${RFC_SEED}\n`)],
      ['crlf', Buffer.from(`${RFC_SEED}\r\n`)],
      ['upper', Buffer.from(RFC_SEED.toUpperCase())],
      ['raw', Buffer.from(RFC_SEED, 'hex')],
    ];
    for (const [name, content] of cases) {
      const file = join(dir, name);
      writeFileSync(file, content, { mode: 0o600 });
      expect(loadSeedFile(file).publicKeyRaw.toString('hex')).toBe(RFC_PUBLIC);
    }
  });

  it('refuses malformed content as key_invalid without echoing any of it', () => {
    const dir = tempDir();
    const bad = [`${RFC_SEED.slice(0, 62)}zz`, `${RFC_SEED}\n\n`, RFC_SEED.slice(0, 60), `${RFC_SEED}00`, '', ` ${RFC_SEED}`];
    for (const [i, content] of bad.entries()) {
      const file = join(dir, `bad-${i}`);
      writeFileSync(file, content, { mode: 0o600 });
      const err = thrown(() => loadSeedFile(file));
      expect(err.code).toBe('key_invalid');
      expect(err.message).toBe(
        `seed file ${file} is not an Ed25519 seed (expected 64 hex characters and an optional newline, or exactly 32 raw bytes)`,
      );
      expect(err.message).not.toContain(RFC_SEED.slice(0, 16));
    }
  });

  it('reports a missing seed file as file_not_found', () => {
    const file = join(tempDir(), 'missing.seed');
    const err = thrown(() => loadSeedFile(file));
    expect(err.code).toBe('file_not_found');
    expect(err.message).toBe(`seed file ${file} does not exist`);
  });

  it('loadOrCreateSeedFile creates once, then loads the same key', () => {
    const file = join(tempDir(), 'data', 'kernel.seed');
    const first = loadOrCreateSeedFile(file);
    expect(first.created).toBe(true);
    const second = loadOrCreateSeedFile(file);
    expect(second.created).toBe(false);
    expect(second.key.kid).toBe(first.key.kid);
  });

  it('loadOrCreateSeedFile still refuses a too open existing seed', () => {
    const file = join(tempDir(), 'kernel.seed');
    writeFileSync(file, RFC_SEED, { mode: 0o644 });
    chmodSync(file, 0o644);
    expect(thrown(() => loadOrCreateSeedFile(file)).code).toBe('key_permissions');
  });
});

describe('parsePublicKey', () => {
  const key = keyFromSeed(Buffer.from(RFC_SEED, 'hex'));
  const x = key.publicKeyRaw.toString('base64url');

  it('accepts hex, base64url and a JWK, all giving the same kid', () => {
    for (const text of [RFC_PUBLIC, RFC_PUBLIC.toUpperCase(), x, ` ${x}\n`, JSON.stringify(publicJwk(key))]) {
      const parsed = parsePublicKey(text);
      expect(parsed.kid).toBe(key.kid);
      expect(parsed.publicKeyRaw.toString('hex')).toBe(RFC_PUBLIC);
      expect(verifyEd25519(parsed.publicKey, Buffer.from('m'), key.sign(Buffer.from('m')))).toBe(true);
    }
    expect(parsePublicKey(JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x, use: 'sig', alg: 'EdDSA' })).kid).toBe(key.kid);
  });

  it('refuses what is not an Ed25519 public key', () => {
    const cases: Array<[string, string]> = [
      [RFC_PUBLIC.slice(2), 'not an Ed25519 public key: expected 64 hex characters, 43 base64url characters or an OKP/Ed25519 JWK'],
      [`${x.slice(0, 42)}B`, 'not a canonical base64url encoding of 32 bytes'],
      ['{"kty":"OKP"', 'public key looks like a JWK but is not valid JSON: Expected \',\' or \'}\' after property value in JSON at position 12'],
      [JSON.stringify({ kty: 'EC', crv: 'Ed25519', x }), 'not an Ed25519 public JWK (kty): Invalid input: expected "OKP"'],
      [JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x, kid: 'other' }), `JWK kid "other" is not the RFC 7638 thumbprint of its key (${key.kid})`],
      [JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x, d: x }), 'not an Ed25519 public JWK (d): a public JWK must not carry the private member "d"'],
    ];
    for (const [text, message] of cases) {
      const err = thrown(() => parsePublicKey(text));
      expect(err.code).toBe('key_invalid');
      expect(err.message).toBe(message);
    }
  });
});
