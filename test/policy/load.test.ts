import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { compilePolicy, loadPolicyFile } from '../../src/policy/load.js';
import { httpRequest } from './input.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'policy');
const fixture = (name: string): string => path.join(FIXTURES, name);
const HEADER = 'schema: chio.policy.v1\n';

/** The ChioError that `fn` throws. */
function thrown(fn: () => unknown): ChioError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ChioError) return err;
    throw err;
  }
  throw new Error('expected a ChioError');
}

function compileError(text: string): string {
  const err = thrown(() => compilePolicy(text, 'p.yaml'));
  expect(err.code).toBe('policy_invalid');
  return err.message;
}

describe('loadPolicyFile: the SPEC §5 example', () => {
  const policy = loadPolicyFile(fixture('valid.yaml'), 'valid.yaml');

  it('hashes the file bytes', () => {
    expect(policy.hash).toBe(`sha256:${bytesToHex(sha256(readFileSync(fixture('valid.yaml'))))}`);
    expect(policy.source).toBe('valid.yaml');
  });

  it('compiles rules in file order with their defaults', () => {
    expect([...policy.rules.keys()]).toEqual(['payments_write', 'orders_read']);
    const write = policy.rules.get('payments_write');
    expect(write).toMatchObject({
      name: 'payments_write',
      enabled: true,
      default: 'block',
      allow: new Set(['transfer_funds', 'reconcile_ledger']),
      block: new Set(),
      preferWorkloadIdentity: null,
      requireTier: 'attested',
      preferTier: 'verified',
      requireCapability: false,
    });
    expect(write?.requireWorkloadIdentity).toMatchObject({
      scheme: 'spiffe',
      trustDomain: 'prod.chio',
      pathPrefixes: ['/payments/worker', '/payments/reconciler'],
      credentialKinds: ['x509_svid', 'jwt_svid'],
    });
    expect(policy.rules.get('orders_read')).toMatchObject({ enabled: true, default: 'block', requireWorkloadIdentity: null, requireTier: null, requireCapability: false });
    expect(policy.rules.get('orders_read')?.preferWorkloadIdentity).toMatchObject({ trustDomain: 'prod.chio', pathPrefixes: [], credentialKinds: ['uri', 'x509_svid', 'jwt_svid'] });
  });

  it('compiles tools, defaults and the runtime-assurance extension', () => {
    expect([...policy.toolNames]).toEqual(['transfer_funds', 'get_order', 'reconcile_ledger']);
    expect(policy.unmatched).toBe('deny');
    expect(policy.trustedVerifiers).toEqual([
      {
        name: 'spire_prod',
        schema: 'chio.runtime-attestation.spiffe.x509-svid.v1',
        verifier: 'https://spire.prod.internal',
        verifierFamily: 'spiffe',
        effectiveTier: 'verified',
        maxEvidenceAgeSeconds: 120,
        allowedAttestationTypes: ['x509_svid'],
      },
    ]);
    expect([...policy.tierCeilings.entries()]).toEqual([
      ['verified', { tier: 'verified', minimumAttestationTier: 'verified', maxScope: { operations: ['invoke'], ttlSeconds: 300 } }],
    ]);
  });

  it('selects rules and resolves tools', () => {
    const transfer = httpRequest({ method: 'POST', host: 'payments.prod.svc.cluster.local', path: '/v1/transfers/9' });
    expect(policy.selectRule(transfer)).toMatchObject({ kind: 'rule', via: 'match', rule: { name: 'payments_write' } });
    expect(policy.resolveTool(transfer)).toBe('transfer_funds');
    const order = httpRequest({ method: 'GET', host: 'orders.svc', path: '/api/v1/orders' });
    expect(policy.selectRule(order)).toMatchObject({ kind: 'rule', rule: { name: 'orders_read' } });
    expect(policy.resolveTool(order)).toBe('get_order');
    expect(policy.selectRule(httpRequest({ host: 'payments.prod.svc.cluster.local', path: '/v2' }))).toEqual({ kind: 'unmatched' });
  });
});

describe('compilePolicy', () => {
  it('hashes the UTF-8 bytes of the text, like loadPolicyFile', () => {
    const text = readFileSync(fixture('valid.yaml'), 'utf8');
    expect(compilePolicy(text, 'x.yaml').hash).toBe(loadPolicyFile(fixture('valid.yaml')).hash);
  });

  it('fills defaults for a minimal policy', () => {
    const policy = compilePolicy(`${HEADER}rules:\n  r: {}\n`, 'p.yaml');
    expect(policy.unmatched).toBe('deny');
    expect(policy.toolNames.size).toBe(0);
    expect(policy.trustedVerifiers).toEqual([]);
    expect(policy.tierCeilings.size).toBe(0);
    expect(policy.rules.get('r')).toMatchObject({ enabled: true, default: 'block', requireCapability: false });
    expect(compilePolicy(`${HEADER}defaults: { unmatched: allow }\n`, 'p.yaml').unmatched).toBe('allow');
  });

  it('keeps file order for integer-like rule names (a JS object would not)', () => {
    const policy = compilePolicy(`${HEADER}rules:\n  10: {}\n  '2': {}\n  b: {}\n`, 'p.yaml');
    expect([...policy.rules.keys()]).toEqual(['10', '2', 'b']);
    expect(policy.selectRule(httpRequest())).toMatchObject({ kind: 'rule', rule: { name: '10' } });
  });

  it('keeps file order for tools and trusted verifiers', () => {
    const policy = compilePolicy(
      `${HEADER}tools:\n  '9': [{ methods: [GET] }]\n  1: [{ methods: [GET] }]\n` +
        'extensions:\n  runtime_assurance:\n    trusted_verifiers:\n' +
        '      z: { schema: chio.runtime-attestation.spiffe.jwt-svid.v1, verifier: a, effective_tier: attested }\n' +
        '      "0": { schema: chio.runtime-attestation.spiffe.x509-svid.v1, verifier: b, effective_tier: verified }\n',
      'p.yaml',
    );
    expect([...policy.toolNames]).toEqual(['9', '1']);
    expect(policy.resolveTool(httpRequest({ method: 'GET' }))).toBe('9');
    expect(policy.trustedVerifiers.map((v) => [v.name, v.verifierFamily, v.maxEvidenceAgeSeconds, v.allowedAttestationTypes])).toEqual([
      ['z', 'spiffe', null, null],
      ['0', 'spiffe', null, null],
    ]);
  });

  it('defaults a tier ceiling to its own tier and an open scope', () => {
    const policy = compilePolicy(`${HEADER}extensions:\n  runtime_assurance:\n    tiers:\n      attested: {}\n`, 'p.yaml');
    expect(policy.tierCeilings.get('attested')).toEqual({ tier: 'attested', minimumAttestationTier: 'attested', maxScope: { operations: null, ttlSeconds: null } });
  });

  it('normalizes a spiffe:// trust domain and host pattern case', () => {
    const policy = compilePolicy(
      `${HEADER}rules:\n  r:\n    match: { hosts: [API.Example.COM] }\n    require_workload_identity: { trust_domain: "spiffe://prod.chio" }\n`,
      'p.yaml',
    );
    expect(policy.rules.get('r')?.requireWorkloadIdentity?.trustDomain).toBe('prod.chio');
    expect(policy.selectRule(httpRequest({ host: 'api.example.com' }))).toMatchObject({ kind: 'rule' });
  });
});

describe('located errors (file:line:col: yaml.path: message)', () => {
  it('the fixtures of the CLI tests', () => {
    const cases: Array<[string, string]> = [
      ['unknown-top-key.yaml', 'unknown-top-key.yaml:3:1: default: unknown key "default"'],
      ['unknown-rule-key.yaml', 'unknown-rule-key.yaml:8:5: rules.api.requires_workload_identity: unknown key "requires_workload_identity"'],
      ['bad-tier.yaml', 'bad-tier.yaml:4:5: rules.api.require_runtime_assurance_tier: unknown tier "gold": expected one of none, basic, attested, verified'],
      ['undefined-tool.yaml', 'undefined-tool.yaml:7:29: rules.payments_write.allow[1]: tool "reconcile_ledger" is not defined under tools'],
      ['bad-trust-domain.yaml', 'bad-trust-domain.yaml:5:7: rules.api.require_workload_identity.trust_domain: trust domain "Prod.Chio": contains an upper-case letter "P" at index 0'],
      ['bad-path-prefix.yaml', 'bad-path-prefix.yaml:6:41: rules.api.require_workload_identity.path_prefixes[1]: SPIFFE path "/payments/../admin": path contains a ".." segment at index 10'],
      ['missing-schema.yaml', 'missing-schema.yaml:1:1: schema: missing: must be "chio.policy.v1"'],
    ];
    for (const [file, message] of cases) {
      const err = thrown(() => loadPolicyFile(fixture(file), file));
      expect(err.code).toBe('policy_invalid');
      expect(err.message).toBe(message);
    }
  });

  it('a duplicate key, at the second occurrence', () => {
    // src/yaml-source.ts reports YAML parse errors without a YAML path (see the report).
    const err = thrown(() => loadPolicyFile(fixture('duplicate-key.yaml'), 'duplicate-key.yaml'));
    expect(err.code).toBe('policy_invalid');
    expect(err.message).toBe('duplicate-key.yaml:5:3: rules.api: duplicate key "api"');
  });

  it('schema and value errors', () => {
    expect(compileError('schema: chio.policy.v2\n')).toBe('p.yaml:1:1: schema: must be "chio.policy.v1", got "chio.policy.v2"');
    expect(compileError('')).toBe('p.yaml: (root): a policy file must be a YAML mapping with "schema: chio.policy.v1"');
    expect(compileError('- a\n')).toBe('p.yaml:1:1: (root): a policy file must be a YAML mapping with "schema: chio.policy.v1"');
    expect(compileError(`${HEADER}rules:\n  _x: {}\n`)).toBe('p.yaml:3:3: rules._x: invalid rule name "_x": must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$');
    expect(compileError(`${HEADER}rules:\n  r:\n    default: deny\n`)).toBe('p.yaml:4:5: rules.r.default: unknown value "deny": expected one of block, allow');
    expect(compileError(`${HEADER}defaults: { unmatched: block }\n`)).toBe('p.yaml:2:13: defaults.unmatched: unknown value "block": expected one of deny, allow');
    // a no-break space after a value is part of it, as every YAML reader sees it (the fast reader dropped it: `allow` for everyone)
    expect(compileError(`${HEADER}defaults:\n  unmatched: allow\u00a0\n`)).toBe('p.yaml:3:3: defaults.unmatched: unknown value "allow\u00a0": expected one of deny, allow');
    expect(compileError(`${HEADER}defaults:\n  unmatched\u00a0: allow\n`)).toBe('p.yaml:3:3: defaults.unmatched\u00a0: unknown key "unmatched\u00a0"');
    expect(compileError(`${HEADER}rules:\n  r:\n    enabled: "yes"\n`)).toBe('p.yaml:4:5: rules.r.enabled: Invalid input: expected boolean, received string');
    expect(compileError(`${HEADER}rules:\n  r:\n    allow:\n`)).toBe('p.yaml:4:5: rules.r.allow: Invalid input: expected array, received null');
  });

  it('tool errors', () => {
    expect(compileError(`${HEADER}tools:\n  t:\n    - {}\n`)).toBe(
      'p.yaml:4:7: tools.t[0]: a tool entry needs at least one condition: methods, path, path_prefix, hosts, grpc_service, grpc_method',
    );
    expect(compileError(`${HEADER}tools:\n  t: []\n`)).toBe('p.yaml:3:3: tools.t: a tool needs at least one entry');
    expect(compileError(`${HEADER}tools:\n  t:\n    - { methods: ["GE T"] }\n`)).toBe('p.yaml:4:19: tools.t[0].methods[0]: not an HTTP method token');
    expect(compileError(`${HEADER}tools:\n  t:\n    - { grpc_service: "pay/v1" }\n`)).toBe(
      'p.yaml:4:9: tools.t[0].grpc_service: not a fully-qualified gRPC service name (pkg.Service)',
    );
    expect(compileError(`${HEADER}tools:\n  t:\n    - { path: v1 }\n`)).toBe('p.yaml:4:9: tools.t[0].path: a path must start with "/"');
  });

  it('rule errors that need the whole document', () => {
    expect(compileError(`${HEADER}tools:\n  t:\n    - { methods: [GET] }\nrules:\n  r:\n    allow: [t]\n    block: [t]\n`)).toBe(
      'p.yaml:8:13: rules.r.block[0]: tool "t" is in both allow and block',
    );
    expect(compileError(`${HEADER}rules:\n  r:\n    block: [nope]\n`)).toBe('p.yaml:4:13: rules.r.block[0]: tool "nope" is not defined under tools');
    expect(compileError(`${HEADER}rules:\n  0x10: {}\n`)).toBe('p.yaml:2:1: rules: name "0x10" is read by YAML as "16"; quote it');
  });

  it('match and identity errors', () => {
    expect(compileError(`${HEADER}rules:\n  r:\n    match: { hosts: [a.*.com] }\n`)).toBe(
      'p.yaml:4:22: rules.r.match.hosts[0]: "*" is allowed only as the whole first label, as in "*.example.com"',
    );
    expect(compileError(`${HEADER}rules:\n  r:\n    match: { path_prefixes: [v1] }\n`)).toBe('p.yaml:4:30: rules.r.match.path_prefixes[0]: a path prefix must start with "/"');
    expect(compileError(`${HEADER}rules:\n  r:\n    match: { paths: [/v1] }\n`)).toBe('p.yaml:4:14: rules.r.match.paths: unknown key "paths"');
    expect(compileError(`${HEADER}rules:\n  r:\n    require_workload_identity: { credential_kinds: [x509] }\n`)).toBe(
      'p.yaml:4:53: rules.r.require_workload_identity.credential_kinds[0]: unknown credential kind "x509": expected one of uri, x509_svid, jwt_svid',
    );
    expect(compileError(`${HEADER}rules:\n  r:\n    require_workload_identity: { credential_kinds: [] }\n`)).toBe(
      'p.yaml:4:34: rules.r.require_workload_identity.credential_kinds: Too small: expected array to have >=1 items',
    );
    expect(compileError(`${HEADER}rules:\n  r:\n    require_workload_identity: { path_prefixes: [payments] }\n`)).toBe(
      'p.yaml:4:50: rules.r.require_workload_identity.path_prefixes[0]: a SPIFFE path prefix must start with "/"',
    );
    expect(compileError(`${HEADER}rules:\n  r:\n    prefer_workload_identity: { scheme: https }\n`)).toBe(
      'p.yaml:4:33: rules.r.prefer_workload_identity.scheme: unsupported scheme "https": only "spiffe"',
    );
    expect(compileError(`${HEADER}rules:\n  r:\n    prefer_runtime_assurance_tier: Verified\n`)).toBe(
      'p.yaml:4:5: rules.r.prefer_runtime_assurance_tier: unknown tier "Verified": expected one of none, basic, attested, verified',
    );
  });

  it('runtime-assurance extension errors', () => {
    const verifier = (fields: string): string =>
      `${HEADER}extensions:\n  runtime_assurance:\n    trusted_verifiers:\n      v:\n${fields}`;
    expect(compileError(verifier('        schema: nope\n        verifier: x\n        effective_tier: verified\n'))).toBe(
      'p.yaml:6:9: extensions.runtime_assurance.trusted_verifiers.v.schema: unknown attestation schema "nope": expected one of chio.runtime-attestation.spiffe.x509-svid.v1, chio.runtime-attestation.spiffe.jwt-svid.v1',
    );
    expect(
      compileError(verifier('        schema: chio.runtime-attestation.spiffe.jwt-svid.v1\n        verifier: x\n        effective_tier: verified\n        max_evidence_age_seconds: -1\n')),
    ).toBe('p.yaml:9:9: extensions.runtime_assurance.trusted_verifiers.v.max_evidence_age_seconds: Too small: expected number to be >0');
    expect(compileError(verifier('        schema: chio.runtime-attestation.spiffe.jwt-svid.v1\n        verifier: x\n'))).toBe(
      'p.yaml:5:7: extensions.runtime_assurance.trusted_verifiers.v.effective_tier: missing: expected one of none, basic, attested, verified',
    );
    expect(compileError(`${HEADER}extensions:\n  runtime_assurance:\n    tiers:\n      gold: {}\n`)).toBe(
      'p.yaml:5:7: extensions.runtime_assurance.tiers.gold: unknown key "gold"',
    );
  });
});

describe('compilePolicy on arbitrary input', () => {
  it('either compiles or throws policy_invalid, never anything else', () => {
    const anything = fc.jsonValue({ maxDepth: 3 });
    const value = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: anything });
    const name = fc.oneof({ weight: 3, arbitrary: fc.constantFrom('t', 'r', 'tool_1', '10', '_bad', '') }, { weight: 1, arbitrary: fc.string() });
    const toolEntry = fc.record(
      {
        methods: value(fc.constant(['GET'])),
        path: value(fc.constantFrom('/a', 'a', '/a?b')),
        path_prefix: value(fc.constantFrom('/a', '/', '/a/', '')),
        hosts: value(fc.constantFrom(['a.svc'], ['*.svc'], ['*'], ['[::1]:80'], [])),
        grpc_service: value(fc.constant('p.v1.S')),
      },
      { requiredKeys: [] },
    );
    const identity = fc.record(
      {
        trust_domain: value(fc.constantFrom('prod.chio', 'Prod', 'spiffe://prod.chio', 'spiffe://prod.chio/x')),
        path_prefixes: value(fc.constantFrom(['/a'], ['/a/'], ['/..'], [''])),
        credential_kinds: value(fc.constantFrom(['uri'], [], ['x'])),
      },
      { requiredKeys: [] },
    );
    const rule = fc.record(
      {
        enabled: value(fc.boolean()),
        match: value(fc.record({ hosts: value(fc.constant(['a.svc'])), path_prefixes: value(fc.constant(['/a'])) }, { requiredKeys: [] })),
        default: value(fc.constantFrom('allow', 'block')),
        allow: value(fc.array(fc.constantFrom('t', 'u'))),
        block: value(fc.array(fc.constantFrom('t', 'u'))),
        require_workload_identity: value(identity),
        require_runtime_assurance_tier: value(fc.constantFrom('attested', 'gold')),
      },
      { requiredKeys: [] },
    );
    const policy = fc.record(
      {
        schema: value(fc.constant('chio.policy.v1')),
        tools: value(fc.dictionary(name, value(fc.array(toolEntry, { maxLength: 2 })), { maxKeys: 3 })),
        rules: value(fc.dictionary(name, rule, { maxKeys: 3 })),
        defaults: value(fc.record({ unmatched: value(fc.constantFrom('deny', 'allow')) })),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(policy, (doc) => {
        try {
          const compiled = compilePolicy(JSON.stringify(doc), 'fuzz.yaml');
          expect(compiled.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
        } catch (err) {
          expect(err).toBeInstanceOf(ChioError);
          expect((err as ChioError).code).toBe('policy_invalid');
          expect((err as ChioError).message).toMatch(/^fuzz\.yaml(:\d+:\d+)?: /);
        }
      }),
      { numRuns: 400 },
    );
  });
});

describe('loadPolicyFile errors', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-policy-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a missing file is file_not_found', () => {
    const err = thrown(() => loadPolicyFile(path.join(dir, 'nope.yaml'), 'nope.yaml'));
    expect(err.code).toBe('file_not_found');
    expect(err.message).toBe('nope.yaml: no such file');
  });

  it('bytes that are not UTF-8 are policy_invalid', () => {
    const file = path.join(dir, 'latin1.yaml');
    writeFileSync(file, Buffer.from([...Buffer.from('schema: chio.policy.v1\n# caf'), 0xe9, 0x0a]));
    const err = thrown(() => loadPolicyFile(file, 'latin1.yaml'));
    expect(err.code).toBe('policy_invalid');
    expect(err.message).toBe('latin1.yaml: not valid UTF-8');
  });

  it('a directory is io_error (it cannot be read: not an invalid policy)', () => {
    const err = thrown(() => loadPolicyFile(dir, 'dir'));
    expect(err.code).toBe('io_error');
    expect(err.message).toBe('dir: cannot read: EISDIR: illegal operation on a directory, read');
  });
});
