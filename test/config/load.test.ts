/**
 * Loading chio.yaml (src/config/load.ts, src/config/schema.ts): the spellings a setting accepts.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { keyFromSeed, publicJwk } from '../../src/keys.js';

const DIR = '/srv/chio';
const key = keyFromSeed(randomBytes(32));
const jwk = publicJwk(key);

function load(capabilities: string[]) {
  const text = ['schema: chio.config.v1', 'policy: ./policy.yaml', 'keys: { receipt_signing_seed: ./data/kernel.seed }', 'capabilities:', ...capabilities, ''].join('\n');
  return parseConfig(text, path.join(DIR, 'chio.yaml'), DIR);
}

function loadError(capabilities: string[]): string {
  try {
    load(capabilities);
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    expect(err.code).toBe('config_invalid');
    return err.message;
  }
  throw new Error('expected config_invalid');
}

describe('capabilities.authorities[].public_key', () => {
  // the README says "hex, base64url or JWK"; a JWK was accepted only as a quoted JSON string (QA finding)
  it('a JWK written as a YAML mapping, with or without kid, is the same key as its JSON string', () => {
    const asString = load(['  authorities:', `    - { public_key: '${JSON.stringify(jwk)}' }`]).capabilities.authorities;
    const flow = load(['  authorities:', `    - { public_key: { kty: OKP, crv: Ed25519, x: ${jwk.x} } }`]).capabilities.authorities;
    const block = load(['  authorities:', '    - public_key:', '        kty: OKP', '        crv: Ed25519', `        x: ${jwk.x}`, `        kid: ${jwk.kid}`]).capabilities.authorities;
    expect(asString).toEqual([{ public_key: JSON.stringify(jwk) }]);
    expect(JSON.parse(flow[0]?.public_key as string)).toEqual({ kty: 'OKP', crv: 'Ed25519', x: jwk.x });
    expect(JSON.parse(block[0]?.public_key as string)).toEqual(jwk);
    // beside the other spellings
    const mixed = load(['  authorities:', `    - { public_key: ${key.publicKeyRaw.toString('hex')} }`, `    - { public_key: { kty: OKP, crv: Ed25519, x: ${jwk.x} } }`]);
    expect(mixed.capabilities.authorities).toHaveLength(2);
  });

  it('a mapping that is not an Ed25519 public JWK is refused with the JWK parser\'s reason, at its line', () => {
    expect(loadError(['  authorities:', `    - { public_key: { kty: OKP, crv: Ed25519, x: ${jwk.x}, kid: not-the-thumbprint } }`])).toBe(
      `${path.join(DIR, 'chio.yaml')}:6:9: capabilities.authorities[0].public_key: JWK kid "not-the-thumbprint" is not the RFC 7638 thumbprint of its key (${jwk.kid})`,
    );
    expect(loadError(['  authorities:', `    - { public_key: { kty: OKP, crv: Ed25519, x: ${jwk.x}, d: ${jwk.x} } }`])).toMatch(/public_key: not an Ed25519 public JWK \(d\): /);
    expect(loadError(['  authorities:', '    - { public_key: { kty: RSA, n: abc, e: AQAB } }'])).toMatch(/public_key: not an Ed25519 public JWK \(kty\): /);
    expect(loadError(['  authorities:', '    - { public_key: [1, 2] }'])).toMatch(/capabilities\.authorities\[0\]\.public_key: /);
  });
});
