import { describe, expect, it } from 'vitest';
import { CAPABILITY_HEADER_DEFAULT } from '../../src/capability/config.js';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { authorityKey } from './helpers.js';

const BASE = ['schema: chio.config.v1', 'policy: ./policy.yaml', 'keys: { receipt_signing_seed: ./data/kernel.seed }'];
const parse = (...lines: string[]) => parseConfig([...BASE, ...lines, ''].join('\n'), '/etc/chio/chio.yaml', '/etc/chio');

function configError(...lines: string[]): string {
  try {
    parse(...lines);
  } catch (err) {
    if (err instanceof ChioError) {
      expect(err.code).toBe('config_invalid');
      return err.message;
    }
    throw err;
  }
  throw new Error('parsed');
}

const key = authorityKey(9);

describe('chio.yaml capabilities:', () => {
  it('defaults: the x-chio-capability header, no authorities, no issuance, no revocation file', () => {
    expect(parse().capabilities).toEqual({ header: CAPABILITY_HEADER_DEFAULT, authorities: [] });
    expect(CAPABILITY_HEADER_DEFAULT).toBe('x-chio-capability');
  });

  it('reads every key and resolves paths against the config folder', () => {
    const c = parse(
      'capabilities:',
      '  header: x-authz-capability',
      `  authorities: [ { public_key: ${key.publicKeyRaw.toString('hex')} }, { public_key: ${key.publicKeyRaw.toString('base64url')} } ]`,
      '  authority_seed: ./secrets/authority.seed',
      '  revocations_file: /var/lib/chio/revocations.jsonl',
    ).capabilities;
    expect(c).toEqual({
      header: 'x-authz-capability',
      authorities: [{ public_key: key.publicKeyRaw.toString('hex') }, { public_key: key.publicKeyRaw.toString('base64url') }],
      authority_seed: '/etc/chio/secrets/authority.seed',
      revocations_file: '/var/lib/chio/revocations.jsonl',
    });
  });

  it.each([
    [['capabilities: { header: X-Chio-Capability }'], '/etc/chio/chio.yaml:4:17: capabilities.header: expected a lower-case HTTP header name (Envoy lower-cases header names)'],
    [['capabilities: { header: x-chio-workload-id }'], '/etc/chio/chio.yaml:4:17: capabilities.header: must not be one of the headers chio sets (x-chio-receipt-id, x-chio-workload-id)'],
    [['capabilities: { authorities: [ { public_key: abc } ] }'], '/etc/chio/chio.yaml:4:34: capabilities.authorities[0].public_key: not an Ed25519 public key: expected 64 hex characters, 43 base64url characters or an OKP/Ed25519 JWK'],
    [['capabilities: { authorities: [ {} ] }'], '/etc/chio/chio.yaml:4:32: capabilities.authorities[0].public_key: Invalid input: expected string, received undefined'],
    [['capabilities: { authority: x }'], '/etc/chio/chio.yaml:4:17: capabilities.authority: unknown key "authority"'],
    [['capabilities: { revocation_file: ./r.jsonl }'], '/etc/chio/chio.yaml:4:17: capabilities.revocation_file: unknown key "revocation_file"'],
  ])('%j → %s', (lines, message) => {
    expect(configError(...lines)).toBe(message);
  });
});

describe('chio.yaml admin.token_env', () => {
  it('names an environment variable; not together with token_file', () => {
    expect(parse('admin: { token_env: CHIO_ADMIN_TOKEN }').admin).toEqual({ token_env: 'CHIO_ADMIN_TOKEN' });
    expect(configError('admin: { token_env: "CHIO ADMIN" }')).toBe('/etc/chio/chio.yaml:4:10: admin.token_env: expected an environment variable name');
    expect(configError('admin: { token_env: CHIO_ADMIN_TOKEN, token_file: ./t }')).toBe(
      '/etc/chio/chio.yaml:4:10: admin.token_env: set admin.token_file or admin.token_env, not both',
    );
  });
});
