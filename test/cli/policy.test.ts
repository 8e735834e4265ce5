import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { fakeIO } from '../helpers/cli-io.js';
import { run } from '../../src/cli/policy.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'policy');
const VALID_HASH = `sha256:${bytesToHex(sha256(readFileSync(path.join(FIXTURES, 'valid.yaml'))))}`;

async function chioPolicy(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const io = fakeIO(FIXTURES, {}, () => Date.parse('2026-11-25T21:30:00Z'));
  const code = await run(args, io);
  return { code, stdout: io.out, stderr: io.err };
}

describe('chio policy check', () => {
  it('a valid policy: summary line, exit 0', async () => {
    expect(await chioPolicy('check', 'valid.yaml')).toEqual({
      code: 0,
      stdout: `ok: valid.yaml: 2 rules, 3 tools, policy hash ${VALID_HASH}\n`,
      stderr: '',
    });
  });

  it('--json on a valid policy', async () => {
    const { code, stdout } = await chioPolicy('check', 'valid.yaml', '--json');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ ok: true, file: 'valid.yaml', rules: 2, tools: 3, hash: VALID_HASH });
  });

  it('resolves an absolute path too', async () => {
    const file = path.join(FIXTURES, 'valid.yaml');
    expect((await chioPolicy('check', file)).stdout).toBe(`ok: ${file}: 2 rules, 3 tools, policy hash ${VALID_HASH}\n`);
  });

  const invalid: Array<[string, string]> = [
    ['unknown key at the top level', 'unknown-top-key.yaml:3:1: default: unknown key "default"'],
    ['unknown key inside a rule', 'unknown-rule-key.yaml:8:5: rules.api.requires_workload_identity: unknown key "requires_workload_identity"'],
    ['bad tier name', 'bad-tier.yaml:4:5: rules.api.require_runtime_assurance_tier: unknown tier "gold": expected one of none, basic, attested, verified'],
    ['undefined tool in allow', 'undefined-tool.yaml:7:29: rules.payments_write.allow[1]: tool "reconcile_ledger" is not defined under tools'],
    ['duplicate key', 'duplicate-key.yaml:5:3: rules.api: duplicate key "api"'],
    ['bad trust domain', 'bad-trust-domain.yaml:5:7: rules.api.require_workload_identity.trust_domain: trust domain "Prod.Chio": contains an upper-case letter "P" at index 0'],
    ['bad path prefix', 'bad-path-prefix.yaml:6:41: rules.api.require_workload_identity.path_prefixes[1]: SPIFFE path "/payments/../admin": path contains a ".." segment at index 10'],
    ['missing schema', 'missing-schema.yaml:1:1: schema: missing: must be "chio.policy.v1"'],
  ];

  for (const [what, message] of invalid) {
    it(`invalid (${what}): the located error, exit 1`, async () => {
      const file = message.slice(0, message.indexOf(':'));
      expect(await chioPolicy('check', file)).toEqual({ code: 1, stdout: '', stderr: `${message}\n` });
    });
  }

  it('--json on an invalid policy', async () => {
    const { code, stdout } = await chioPolicy('check', '--json', 'bad-tier.yaml');
    expect(code).toBe(1);
    expect(JSON.parse(stdout)).toEqual({
      ok: false,
      file: 'bad-tier.yaml',
      error: {
        code: 'policy_invalid',
        message: 'bad-tier.yaml:4:5: rules.api.require_runtime_assurance_tier: unknown tier "gold": expected one of none, basic, attested, verified',
        field: 'rules.api.require_runtime_assurance_tier',
      },
    });
  });

  it('a missing file: exit 2', async () => {
    expect(await chioPolicy('check', 'nope.yaml')).toEqual({ code: 2, stdout: '', stderr: 'nope.yaml: no such file\n' });
    const json = await chioPolicy('check', 'nope.yaml', '--json');
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({ ok: false, file: 'nope.yaml', error: { code: 'file_not_found', message: 'nope.yaml: no such file' } });
  });

  it('a file that cannot be read (a folder): exit 2, as a missing one (was 1, as an invalid policy)', async () => {
    expect(await chioPolicy('check', '.')).toEqual({ code: 2, stdout: '', stderr: '.: cannot read: EISDIR: illegal operation on a directory, read\n' });
  });

  it('usage errors: exit 2 with the usage text', async () => {
    for (const args of [[], ['check'], ['lint', 'valid.yaml'], ['check', 'a.yaml', 'b.yaml'], ['check', 'valid.yaml', '--strict']]) {
      const { code, stdout, stderr } = await chioPolicy(...args);
      expect(code).toBe(2);
      expect(stdout).toBe('');
      expect(stderr).toContain('usage: chio policy check FILE [--json]');
    }
    expect((await chioPolicy()).stderr.split('\n')[0]).toBe('chio policy: missing subcommand');
    expect((await chioPolicy('check')).stderr.split('\n')[0]).toBe('chio policy: missing FILE');
    expect((await chioPolicy('lint')).stderr.split('\n')[0]).toBe('chio policy: unknown subcommand "lint"');
    expect((await chioPolicy('check', 'a.yaml', 'b.yaml')).stderr.split('\n')[0]).toBe('chio policy: unexpected argument "b.yaml"');
    // The rest of this line is node:util parseArgs wording, which differs between Node versions.
    expect((await chioPolicy('check', 'valid.yaml', '--strict')).stderr).toMatch(/^chio policy: Unknown option '--strict'/);
  });

  it('--help prints the usage, exit 0', async () => {
    for (const args of [['--help'], ['check', '--help'], ['-h']]) {
      const { code, stdout } = await chioPolicy(...args);
      expect(code).toBe(0);
      expect(stdout.split('\n')[0]).toBe('usage: chio policy check FILE [--json]');
    }
  });
});
