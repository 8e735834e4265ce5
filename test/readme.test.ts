/**
 * The README's configuration and policy examples are real: they pass the same schemas the
 * service loads (placeholders filled in); its Metrics and Commands sections name every metric
 * the service registers and every command group `chio` has.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { GROUPS } from '../src/cli/index.js';
import { parseConfig } from '../src/config/load.js';
import { METRIC_NAMES } from '../src/metrics.js';
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

describe('README reference sections', () => {
  const section = (title: string): string => {
    const start = README.indexOf(`\n## ${title}\n`);
    expect(start).toBeGreaterThan(0);
    const end = README.indexOf('\n## ', start + 1);
    return README.slice(start, end === -1 ? undefined : end);
  };

  it('Metrics names every metric the service registers', () => {
    const metrics = section('Metrics');
    expect(Object.values(METRIC_NAMES).filter((name) => !metrics.includes(`\`${name}`))).toEqual([]);
  });

  it('Commands names every command group of chio', () => {
    const commands = section('Commands');
    expect(Object.keys(GROUPS).filter((name) => !commands.includes(`\`chio ${name}`))).toEqual([]);
  });
});
