/**
 * The README's configuration and policy examples are real: they pass the same schemas the
 * service loads (placeholders filled in).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { compilePolicy } from '../src/policy/load.js';

const README = readFileSync(path.resolve(import.meta.dirname, '..', 'README.md'), 'utf8');

function yamlBlocks(): string[] {
  return [...README.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

describe('README examples', () => {
  it('the chio.yaml example validates', () => {
    const block = yamlBlocks().find((b) => b.startsWith('schema: chio.config.v1'));
    expect(block).toBeDefined();
    const text = (block as string).replace('<hex Ed25519 public key>', 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(() => parseConfig(text, 'README.md', '/tmp')).not.toThrow();
  });

  it('the grpc_tls example validates', () => {
    const block = yamlBlocks().find((b) => b.includes('grpc_tls:'));
    expect(block).toBeDefined();
    const text = `schema: chio.config.v1\n${block as string}policy: ./p.yaml\nkeys: { receipt_signing_seed: ./k }\n`;
    expect(() => parseConfig(text, 'README.md', '/tmp')).not.toThrow();
  });

  it('the policy example compiles', () => {
    const block = yamlBlocks().find((b) => b.startsWith('schema: chio.policy.v1'));
    expect(block).toBeDefined();
    expect(compilePolicy(block as string, 'README.md').rules.size).toBeGreaterThan(0);
  });
});
