/**
 * A file chio writes is its own (src/config/files.ts): compared resolved and through symlinks,
 * against every other file the config writes or names. Each case was accepted before (a review:
 * receipts written twice into one file, a sink writing into the signing seed).
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { embeddedConfig, parseConfig } from '../../src/config/load.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'chio-files-'));
  dirs.push(d);
  return d;
}

function configError(dir: string, lines: string[]): string {
  const text = ['schema: chio.config.v1', 'policy: ./policy.yaml', ...lines, ''].join('\n');
  try {
    parseConfig(text, path.join(dir, 'chio.yaml'), dir);
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    expect(err.code).toBe('config_invalid');
    return err.message;
  }
  throw new Error('expected config_invalid');
}

const SEED = 'keys: { receipt_signing_seed: ./data/kernel.seed }';

describe('every file chio writes is its own', () => {
  it('two sinks spelled differently on one file', () => {
    const dir = tempDir();
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./r.jsonl }, { type: jsonl, path: r.jsonl } ] }'])).toBe(
      `receipts.sinks[0].path and receipts.sinks[1].path name the same file ${path.join(dir, 'r.jsonl')}: each file chio writes must be its own`,
    );
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./data/../r.db }, { type: sqlite, path: r.db } ] }'])).toBe(
      `receipts.sinks[0].path and receipts.sinks[1].path name the same file ${path.join(dir, 'r.db')}: each file chio writes must be its own`,
    );
  });

  it('a sink on the signing seed, the checkpoint log, a SQLite store\'s WAL or the revocation list', () => {
    const dir = tempDir();
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./data/kernel.seed } ] }'])).toBe(
      `receipts.sinks[0].path and keys.receipt_signing_seed name the same file ${path.join(dir, 'data', 'kernel.seed')}: each file chio writes must be its own`,
    );
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./d/r.jsonl }, { type: jsonl, path: ./d/checkpoints.jsonl } ] }'])).toBe(
      `receipts.sinks[1].path and receipts.checkpoints.path name the same file ${path.join(dir, 'd', 'checkpoints.jsonl')}: each file chio writes must be its own`,
    );
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: sqlite, path: ./r.db }, { type: jsonl, path: ./r.db-wal } ] }'])).toBe(
      `receipts.sinks[0].path-wal and receipts.sinks[1].path name the same file ${path.join(dir, 'r.db-wal')}: each file chio writes must be its own`,
    );
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./r.jsonl } ] }', 'capabilities: { revocations_file: ./r.jsonl.lock }'])).toBe(
      `receipts.sinks[0].path (writer lock) and capabilities.revocations_file name the same file ${path.join(dir, 'r.jsonl.lock')}: each file chio writes must be its own`,
    );
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./r.jsonl } ] }', 'capabilities: { revocations_file: ./r.jsonl }'])).toBe(
      `receipts.sinks[0].path and capabilities.revocations_file name the same file ${path.join(dir, 'r.jsonl')}: each file chio writes must be its own`,
    );
  });

  it('a sink on a state file chio keeps: the checkpoint frontier, an https_spiffe federation\'s kept bundle', () => {
    const dir = tempDir();
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./d/r.jsonl }, { type: jsonl, path: ./d/checkpoints.frontier.json } ] }'])).toBe(
      `receipts.sinks[1].path and receipts.checkpoints.path (frontier) name the same file ${path.join(dir, 'd', 'checkpoints.frontier.json')}: each file chio writes must be its own`,
    );
    const federation = 'trust: { bundles: [ { trust_domain: peer.example, federation: { url: "https://spire.peer.example:8443", profile: https_spiffe, endpoint_spiffe_id: spiffe://other.example/spire/server }, verifier: v } ] }';
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./data/federation-peer.example.json } ] }', federation])).toBe(
      `receipts.sinks[0].path and trust federation state of peer.example name the same file ${path.join(dir, 'data', 'federation-peer.example.json')}: each file chio writes must be its own`,
    );
  });

  it('a written file that the config also names for another purpose (the policy, the admin token)', () => {
    const dir = tempDir();
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./policy.yaml } ] }'])).toBe(
      `receipts.sinks[0].path (${path.join(dir, 'policy.yaml')}) is also named for another purpose (the policy, a key, a bundle, a TLS or token file): each file chio writes must be its own`,
    );
    expect(configError(dir, [SEED, 'admin: { token_file: ./data/kernel.seed }'])).toBe(
      `keys.receipt_signing_seed (${path.join(dir, 'data', 'kernel.seed')}) is also named for another purpose (the policy, a key, a bundle, a TLS or token file): each file chio writes must be its own`,
    );
  });

  it('through a symlinked folder', () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, 'real'));
    symlinkSync(path.join(dir, 'real'), path.join(dir, 'link'));
    expect(configError(dir, [SEED, 'receipts: { sinks: [ { type: jsonl, path: ./real/r.jsonl }, { type: sqlite, path: ./link/r.jsonl } ] }'])).toBe(
      `receipts.sinks[0].path and receipts.sinks[1].path name the same file ${path.join(dir, 'real', 'r.jsonl')}: each file chio writes must be its own`,
    );
  });

  it('accepts distinct files: the embedded default and a config with every kind', () => {
    expect(() => embeddedConfig(tempDir())).not.toThrow();
    const dir = tempDir();
    const text = [
      'schema: chio.config.v1',
      'policy: ./policy.yaml',
      SEED,
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: sqlite, path: ./data/receipts.db } ], checkpoints: { path: ./data/cp.jsonl } }',
      'capabilities: { revocations_file: ./data/revocations.jsonl }',
      'admin: { token_file: ./secrets/admin.token }',
      '',
    ].join('\n');
    expect(parseConfig(text, path.join(dir, 'chio.yaml'), dir).receipts.checkpoints.path).toBe(path.join(dir, 'data', 'cp.jsonl'));
  });
});
