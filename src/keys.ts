/**
 * Ed25519 keys from 32-byte seeds (RFC 8032), used for receipts and capability authorities
 * (SPEC §6, §7). Key ids are RFC 7638 JWK thumbprints; public keys travel as RFC 8037 OKP JWKs.
 *
 * Signing uses node:crypto with a KeyObject made once (never re-imported per call: that costs
 * ~690 µs, see performance.md §4.3). Seed bytes never appear in any message.
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { closeSync, constants, fchmodSync, fstatSync, fsyncSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { z } from 'zod';
import { ChioError, describe } from './errors.js';
import { makeFolderOf } from './folders.js';

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** 32-byte raw public key */
  readonly publicKeyRaw: Buffer;
  /** RFC 7638 JWK thumbprint (base64url SHA-256) of the public key: the receipt's `kernelKey`. */
  readonly kid: string;
  sign(data: Uint8Array): Buffer;
}

export interface PublicJwk {
  readonly kty: 'OKP';
  readonly crv: 'Ed25519';
  readonly x: string;
  readonly kid: string;
  readonly use?: 'sig';
  readonly alg?: 'EdDSA';
}

export interface PublicKeyInfo {
  readonly publicKey: KeyObject;
  readonly publicKeyRaw: Buffer;
  readonly kid: string;
}

const SEED_BYTES = 32;
/** RFC 8410 PKCS#8 PrivateKeyInfo for Ed25519, up to the 32-byte seed. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** RFC 8410 SubjectPublicKeyInfo for Ed25519, up to the 32-byte public key. */
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const HEX_KEY = /^[0-9a-fA-F]{64}$/;
const B64URL_KEY = /^[A-Za-z0-9_-]{43}$/;
/** Any group or other permission bit. */
const GROUP_OTHER_BITS = 0o077;

/** RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of the canonical required members). */
export function ed25519Kid(publicKeyRaw: Uint8Array): string {
  const x = Buffer.from(publicKeyRaw).toString('base64url');
  return createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest('base64url');
}

export function keyFromSeed(seed: Uint8Array): SigningKey {
  if (seed.length !== SEED_BYTES) throw new TypeError(`an Ed25519 seed is ${SEED_BYTES} bytes, got ${seed.length}`);
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  const publicKey = createPublicKey(privateKey);
  const publicKeyRaw = publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_ED25519_PREFIX.length);
  return {
    privateKey,
    publicKey,
    publicKeyRaw,
    kid: ed25519Kid(publicKeyRaw),
    sign: (data) => sign(null, data, privateKey),
  };
}

/** Reads a seed file (64 hex chars, or 32 raw bytes). Refuses a file readable by group or others (ChioError key_permissions). */
export function loadSeedFile(path: string): SigningKey {
  const fd = openSeedForReading(path);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ChioError('key_invalid', `seed file ${path} is not a regular file`);
    if ((stat.mode & GROUP_OTHER_BITS) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
      throw new ChioError(
        'key_permissions',
        `seed file ${path} is accessible by group or others (mode ${mode}); run: chmod 600 ${path}`,
      );
    }
    // One byte more than the longest accepted content tells "too long" apart without reading a huge file.
    const buf = Buffer.alloc(SEED_BYTES * 2 + 3);
    const length = readFully(fd, buf);
    const seed = seedFromFileContent(buf.subarray(0, length));
    buf.fill(0);
    if (seed === null) {
      throw new ChioError(
        'key_invalid',
        `seed file ${path} is not an Ed25519 seed (expected 64 hex characters and an optional newline, or exactly 32 raw bytes)`,
      );
    }
    try {
      return keyFromSeed(seed);
    } finally {
      seed.fill(0);
    }
  } finally {
    closeSync(fd);
  }
}

/** Loads the seed, or creates it (mode 0600, parent folder 0700 if created) when missing. */
export function loadOrCreateSeedFile(path: string): { key: SigningKey; created: boolean } {
  try {
    return { key: loadSeedFile(path), created: false };
  } catch (err) {
    if (!(err instanceof ChioError && err.code === 'file_not_found')) throw err;
  }
  try {
    return { key: generateSeedFile(path), created: true };
  } catch (err) {
    // Someone else created it between our two calls: use theirs.
    if (err instanceof ChioError && err.code === 'io_error' && (err.cause as NodeJS.ErrnoException | undefined)?.code === 'EEXIST') {
      return { key: loadSeedFile(path), created: false };
    }
    throw err;
  }
}

/** Writes a fresh seed with mode 0600; refuses to overwrite an existing file. Creates missing parent folders (0700). */
export function generateSeedFile(path: string): SigningKey {
  makeFolderOf(path); // one level at a time (./folders.ts: a recursive mkdir spins forever under /proc)
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const message =
      code === 'EEXIST' ? `refusing to overwrite existing file ${path}` : `cannot create seed file ${path}: ${describe(err)}`;
    throw new ChioError('io_error', message, { cause: err });
  }
  const seed = randomBytes(SEED_BYTES);
  const text = Buffer.from(`${seed.toString('hex')}\n`, 'latin1');
  try {
    fchmodSync(fd, 0o600); // the umask cannot widen it, but make it exactly 0600
    writeFully(fd, text);
    fsyncSync(fd);
    return keyFromSeed(seed);
  } catch (err) {
    closeSync(fd);
    fd = -1;
    removeQuietly(path);
    throw new ChioError('io_error', `cannot write seed file ${path}: ${describe(err)}`, { cause: err });
  } finally {
    if (fd >= 0) closeSync(fd);
    seed.fill(0);
    text.fill(0);
  }
}

export function publicJwk(key: Pick<SigningKey, 'publicKeyRaw' | 'kid'>): PublicJwk {
  return { kty: 'OKP', crv: 'Ed25519', x: key.publicKeyRaw.toString('base64url'), kid: key.kid };
}

const jwkSchema = z.looseObject({
  kty: z.literal('OKP'),
  crv: z.literal('Ed25519'),
  x: z.string().regex(B64URL_KEY, 'expected 43 base64url characters'),
  kid: z.string().optional(),
  d: z.never('a public JWK must not carry the private member "d"').optional(),
});

/** Public key from an OKP/Ed25519 JWK object (e.g. an entry of GET /v1/keys); throws ChioError('key_invalid'). */
export function publicKeyFromJwk(value: unknown): PublicKeyInfo {
  const parsed = jwkSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? ` (${issue.path.join('.')})` : '';
    throw new ChioError('key_invalid', `not an Ed25519 public JWK${where}: ${issue?.message ?? 'invalid'}`);
  }
  const info = publicKeyFromRaw(decodeBase64url32(parsed.data.x));
  if (parsed.data.kid !== undefined && parsed.data.kid !== info.kid) {
    throw new ChioError(
      'key_invalid',
      `JWK kid ${JSON.stringify(parsed.data.kid)} is not the RFC 7638 thumbprint of its key (${info.kid})`,
    );
  }
  return info;
}

/** Public key from 64 hex chars, base64url (43 chars) or a JWK; throws ChioError('key_invalid'). */
export function parsePublicKey(text: string): PublicKeyInfo {
  const trimmed = text.trim();
  if (HEX_KEY.test(trimmed)) return publicKeyFromRaw(Buffer.from(trimmed, 'hex'));
  if (B64URL_KEY.test(trimmed)) return publicKeyFromRaw(decodeBase64url32(trimmed));
  if (trimmed.startsWith('{')) {
    let value: unknown;
    try {
      value = JSON.parse(trimmed);
    } catch (err) {
      throw new ChioError('key_invalid', `public key looks like a JWK but is not valid JSON: ${describe(err)}`);
    }
    return publicKeyFromJwk(value);
  }
  throw new ChioError(
    'key_invalid',
    'not an Ed25519 public key: expected 64 hex characters, 43 base64url characters or an OKP/Ed25519 JWK',
  );
}

export function verifyEd25519(publicKey: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  try {
    return verify(null, data, publicKey, signature);
  } catch {
    return false;
  }
}

function publicKeyFromRaw(raw: Buffer): PublicKeyInfo {
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
  } catch (err) {
    throw new ChioError('key_invalid', `not a valid Ed25519 public key: ${describe(err)}`);
  }
  return { publicKey, publicKeyRaw: raw, kid: ed25519Kid(raw) };
}

/** Strict base64url of 32 bytes: the unused low bits of the last character must be zero. */
function decodeBase64url32(text: string): Buffer {
  const raw = Buffer.from(text, 'base64url');
  if (raw.length !== 32 || raw.toString('base64url') !== text) {
    throw new ChioError('key_invalid', 'not a canonical base64url encoding of 32 bytes');
  }
  return raw;
}

/** 64 hex chars with an optional trailing newline, or exactly 32 raw bytes; null for anything else. */
function seedFromFileContent(content: Buffer): Buffer | null {
  if (content.length === SEED_BYTES) return Buffer.from(content);
  let end = content.length;
  if (end > 0 && content[end - 1] === 0x0a) end--;
  if (end > 0 && content[end - 1] === 0x0d) end--;
  if (end !== SEED_BYTES * 2) return null;
  const hex = content.subarray(0, end);
  for (const byte of hex) if (!isHexDigit(byte)) return null;
  return Buffer.from(hex.toString('latin1'), 'hex');
}

function isHexDigit(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66);
}

function openSeedForReading(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ChioError('file_not_found', `seed file ${path} does not exist`, { cause: err });
    throw new ChioError('io_error', `cannot open seed file ${path}: ${describe(err)}`, { cause: err });
  }
}


function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // best effort: the half-written file is refused as key_invalid on the next load anyway
  }
}

function readFully(fd: number, buf: Buffer): number {
  let total = 0;
  for (;;) {
    const n = readSync(fd, buf, total, buf.length - total, null);
    if (n === 0) return total;
    total += n;
    if (total === buf.length) return total;
  }
}

function writeFully(fd: number, buf: Buffer): void {
  let offset = 0;
  while (offset < buf.length) offset += writeSync(fd, buf, offset, buf.length - offset);
}
