import { describe, expect, it } from 'vitest';
import type { Tier } from '../../src/attestation/tier.js';
import type { CheckInput } from '../../src/check/request.js';
import { deny, type DenyError } from '../../src/errors.js';
import type { WorkloadIdentity } from '../../src/identity/identity.js';
import { evaluate, type Decision } from '../../src/policy/evaluate.js';
import { compilePolicy } from '../../src/policy/load.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { normalizePath, otherPathReadings } from '../../src/check/envoy.js';
import { httpRequest, tcpRequest, WORKER } from './input.js';

const POLICY = `schema: chio.policy.v1
tools:
  transfer_funds: [{ methods: [POST], path_prefix: /v1/transfers }]
  refund: [{ methods: [POST], path_prefix: /v1/refunds }]
  admin: [{ path_prefix: /admin }]
rules:
  payments_write:
    match: { hosts: [payments.prod.svc.cluster.local] }
    allow: [transfer_funds]
    block: [admin]
    require_workload_identity:
      trust_domain: prod.chio
      path_prefixes: [/payments/worker]
      credential_kinds: [x509_svid, jwt_svid]
    require_runtime_assurance_tier: attested
    require_capability: true
  reports:
    match: { hosts: [reports.svc] }
    default: allow
    block: [admin]
    prefer_workload_identity: { trust_domain: prod.chio }
    prefer_runtime_assurance_tier: verified
  maintenance:
    enabled: false
defaults: { unmatched: deny }
`;

const policy = compilePolicy(POLICY, 'policy.yaml');

/** `input` as src/check/envoy.ts makes it for a path sent as `sent` (normalized, with its slash-decoded reading). */
function sentAs(input: CheckInput, sent: string): CheckInput {
  const path = normalizePath(sent);
  return { ...input, path, otherReadings: otherPathReadings(sent, path).map((p) => ({ path: p, grpc: null })) };
}
const openPolicy = compilePolicy(POLICY.replace('unmatched: deny', 'unmatched: allow'), 'policy.yaml');

const transfer = httpRequest({ method: 'POST', host: 'payments.prod.svc.cluster.local:443', path: '/v1/transfers/9' });
const report = httpRequest({ method: 'GET', host: 'reports.svc', path: '/reports/daily' });

interface Args {
  policy?: CompiledPolicy;
  input?: CheckInput;
  identity?: WorkloadIdentity | null;
  identityError?: DenyError | null;
  tier?: Tier;
}

function decide(args: Args = {}): Decision {
  return evaluate({
    policy: args.policy ?? policy,
    input: args.input ?? transfer,
    identity: args.identity === undefined ? WORKER : args.identity,
    identityError: args.identityError ?? null,
    tier: args.tier ?? 'attested',
  });
}

describe('evaluate', () => {
  it('allows a request that passes every step, recording rule, tool and matches', () => {
    expect(decide()).toEqual({
      verdict: 'allow',
      rule: 'payments_write',
      tool: 'transfer_funds',
      reason: null,
      httpStatus: null,
      workloadIdentityMatch: { mode: 'require', matched: true },
      runtimeAssuranceMatch: { mode: 'require', tier: 'attested', matched: true },
      requireCapability: true,
    });
  });

  it('step 2: a presented-but-invalid credential is a deny whatever the rule', () => {
    const expired = deny('svid_expired', 'certificate expired at 2024-01-02T00:00:00Z');
    expect(decide({ identity: null, identityError: expired })).toEqual({
      verdict: 'deny',
      rule: 'payments_write',
      tool: 'transfer_funds',
      reason: { code: 'svid_expired', message: 'certificate expired at 2024-01-02T00:00:00Z' },
      httpStatus: 403,
      workloadIdentityMatch: null,
      runtimeAssuranceMatch: null,
      requireCapability: true,
    });
    expect(decide({ policy: openPolicy, input: httpRequest({ host: 'elsewhere' }), identity: null, identityError: expired })).toMatchObject({
      verdict: 'deny',
      rule: null,
      reason: { code: 'svid_expired' },
      httpStatus: 403,
    });
    expect(decide({ input: httpRequest({ contextExtensions: { chio_rule: 'nope' } }), identityError: expired })).toMatchObject({
      reason: { code: 'svid_expired' },
      rule: 'nope',
    });
  });

  it('step 3: context_extensions naming an unknown or disabled rule', () => {
    expect(decide({ input: httpRequest({ method: 'POST', path: '/v1/transfers', contextExtensions: { chio_rule: 'nope' } }) })).toEqual({
      verdict: 'deny',
      rule: 'nope',
      tool: 'transfer_funds',
      reason: { code: 'unknown_rule', message: 'context_extensions.chio_rule names no rule of the policy: "nope"' },
      httpStatus: 403,
      workloadIdentityMatch: null,
      runtimeAssuranceMatch: null,
      requireCapability: false,
    });
    expect(decide({ input: httpRequest({ contextExtensions: { chio_rule: 'maintenance' } }) })).toMatchObject({
      verdict: 'deny',
      rule: 'maintenance',
      reason: { code: 'rule_disabled', message: 'context_extensions.chio_rule names rule "maintenance", which is disabled' },
      httpStatus: 403,
    });
  });

  it('context_extensions select the rule even when its match does not fit', () => {
    const named = httpRequest({ method: 'GET', host: 'other.svc', path: '/x', contextExtensions: { chio_rule: 'reports' } });
    expect(decide({ input: named })).toMatchObject({ verdict: 'allow', rule: 'reports', tool: null });
  });

  it('step 4: an unmatched request follows defaults.unmatched', () => {
    const elsewhere = httpRequest({ method: 'POST', host: 'elsewhere.svc', path: '/v1/transfers' });
    expect(decide({ input: elsewhere })).toEqual({
      verdict: 'deny',
      rule: null,
      tool: 'transfer_funds',
      reason: { code: 'no_matching_rule', message: 'no rule of the policy governs this request and defaults.unmatched is deny' },
      httpStatus: 403,
      workloadIdentityMatch: null,
      runtimeAssuranceMatch: null,
      requireCapability: false,
    });
    expect(decide({ policy: openPolicy, input: elsewhere, identity: null, tier: 'none' })).toEqual({
      verdict: 'allow',
      rule: null,
      tool: 'transfer_funds',
      reason: null,
      httpStatus: null,
      workloadIdentityMatch: null,
      runtimeAssuranceMatch: null,
      requireCapability: false,
    });
    expect(decide({ input: tcpRequest(), identity: null, tier: 'none' })).toMatchObject({ verdict: 'deny', reason: { code: 'no_matching_rule' } });
  });

  it('step 5: require_workload_identity without an identity is a 401', () => {
    expect(decide({ identity: null, tier: 'none' })).toEqual({
      verdict: 'deny',
      rule: 'payments_write',
      tool: 'transfer_funds',
      reason: { code: 'identity_required', message: 'rule "payments_write" requires a workload identity and none was presented' },
      httpStatus: 401,
      workloadIdentityMatch: { mode: 'require', matched: false },
      runtimeAssuranceMatch: null,
      requireCapability: true,
    });
  });

  it('step 5: require_workload_identity with the wrong identity is a 403 with the field at fault', () => {
    const foreign = { ...WORKER, uri: 'spiffe://partner.example/payments/worker', trustDomain: 'partner.example' };
    expect(decide({ identity: foreign })).toMatchObject({
      verdict: 'deny',
      reason: { code: 'workload_trust_domain_mismatch', message: 'workload trust domain is "partner.example"; the rule requires "prod.chio"' },
      httpStatus: 403,
      workloadIdentityMatch: { mode: 'require', matched: false },
    });
    const bare = { ...WORKER, credentialKind: 'uri' as const };
    expect(decide({ identity: bare })).toMatchObject({
      reason: { code: 'workload_credential_kind_not_allowed', message: 'credential kind "uri" is not allowed; the rule allows x509_svid, jwt_svid' },
      httpStatus: 403,
    });
    const sibling = { ...WORKER, uri: 'spiffe://prod.chio/payments/workerX', path: '/payments/workerX' };
    expect(decide({ identity: sibling })).toMatchObject({ reason: { code: 'workload_path_mismatch' }, httpStatus: 403 });
  });

  it('step 5: prefer_workload_identity records a miss and never denies', () => {
    expect(decide({ input: report })).toMatchObject({ verdict: 'allow', rule: 'reports', workloadIdentityMatch: { mode: 'prefer', matched: true } });
    const foreign = { ...WORKER, trustDomain: 'partner.example' };
    expect(decide({ input: report, identity: foreign })).toMatchObject({ verdict: 'allow', workloadIdentityMatch: { mode: 'prefer', matched: false } });
    expect(decide({ input: report, identity: null, tier: 'none' })).toMatchObject({
      verdict: 'allow',
      workloadIdentityMatch: { mode: 'prefer', matched: false },
    });
  });

  it('step 6: require_runtime_assurance_tier below the requirement', () => {
    expect(decide({ tier: 'basic' })).toEqual({
      verdict: 'deny',
      rule: 'payments_write',
      tool: 'transfer_funds',
      reason: { code: 'runtime_assurance_insufficient', message: 'runtime assurance tier too low: have basic, need attested' },
      httpStatus: 403,
      workloadIdentityMatch: { mode: 'require', matched: true },
      runtimeAssuranceMatch: { mode: 'require', tier: 'attested', matched: false },
      requireCapability: true,
    });
    expect(decide({ tier: 'verified' })).toMatchObject({ verdict: 'allow', runtimeAssuranceMatch: { mode: 'require', tier: 'attested', matched: true } });
  });

  it('step 6: prefer_runtime_assurance_tier is recorded only', () => {
    expect(decide({ input: report, tier: 'attested' })).toMatchObject({ verdict: 'allow', runtimeAssuranceMatch: { mode: 'prefer', tier: 'verified', matched: false } });
    expect(decide({ input: report, tier: 'verified' })).toMatchObject({ verdict: 'allow', runtimeAssuranceMatch: { mode: 'prefer', tier: 'verified', matched: true } });
  });

  it('step 7: block list, allow list and default', () => {
    const admin = httpRequest({ method: 'GET', host: 'payments.prod.svc.cluster.local', path: '/admin/users' });
    expect(decide({ input: admin })).toMatchObject({
      verdict: 'deny',
      tool: 'admin',
      reason: { code: 'tool_blocked', message: 'tool "admin" is blocked by rule "payments_write"' },
      httpStatus: 403,
    });
    const refund = httpRequest({ method: 'POST', host: 'payments.prod.svc.cluster.local', path: '/v1/refunds' });
    expect(decide({ input: refund })).toMatchObject({
      verdict: 'deny',
      tool: 'refund',
      reason: { code: 'tool_not_allowed', message: 'tool "refund" is not in the allow list and rule "payments_write" defaults to block' },
    });
    const unknown = httpRequest({ method: 'GET', host: 'payments.prod.svc.cluster.local', path: '/v1/balance' });
    expect(decide({ input: unknown })).toMatchObject({
      verdict: 'deny',
      tool: null,
      reason: { code: 'tool_not_allowed', message: 'the request maps to no tool and rule "payments_write" defaults to block' },
    });
    expect(decide({ input: httpRequest({ host: 'reports.svc', path: '/admin' }) })).toMatchObject({ verdict: 'deny', reason: { code: 'tool_blocked' } });
    expect(decide({ input: httpRequest({ method: 'POST', host: 'reports.svc', path: '/v1/refunds' }) })).toMatchObject({
      verdict: 'allow',
      tool: 'refund',
      requireCapability: false,
    });
  });

  it('never throws: an unexpected exception is a deny internal_error', () => {
    const broken: CompiledPolicy = {
      ...policy,
      rules: policy.rules,
      selectRule: () => {
        throw new Error('index corrupted');
      },
      resolveTool: () => null,
    };
    expect(decide({ policy: broken })).toEqual({
      verdict: 'deny',
      rule: null,
      tool: null,
      reason: { code: 'internal_error', message: 'policy evaluation failed: index corrupted' },
      httpStatus: 403,
      workloadIdentityMatch: null,
      runtimeAssuranceMatch: null,
      requireCapability: false,
    });
    const garbage = { ...transfer, contextExtensions: undefined } as unknown as CheckInput;
    expect(decide({ input: garbage })).toMatchObject({ verdict: 'deny', reason: { code: 'internal_error' }, httpStatus: 403 });
    const toolThrows: CompiledPolicy = { ...broken, selectRule: (input) => policy.selectRule(input), resolveTool: () => { throw new TypeError('boom'); } };
    expect(decide({ policy: toolThrows })).toMatchObject({ verdict: 'deny', rule: 'payments_write', tool: null, reason: { code: 'internal_error', message: 'policy evaluation failed: boom' } });
  });
});

describe('a path that reads otherwise where %2F, %5C or \\ is "/" (ambiguous_path)', () => {
  it('denies when the other reading falls under another tool: a block list cannot be passed by an encoded slash', () => {
    // /reports/..%2F..%2Fadmin is governed by rule reports as /reports/..%2F..%2Fadmin (no tool, default allow),
    // but a server decoding %2F routes it to /admin, the blocked tool
    const d = decide({ input: sentAs(report, '/reports/..%2F..%2Fadmin') });
    expect(d).toMatchObject({ verdict: 'deny', rule: 'reports', tool: null, httpStatus: 403 });
    expect(d.reason).toEqual({
      code: 'ambiguous_path',
      message: 'read as another server may route it ("/admin"), the path falls under rule "reports", tool "admin" instead of rule "reports", tool (none)',
    });
    expect(decide({ input: sentAs(report, '/reports\\..\\admin') }).reason?.code).toBe('ambiguous_path');
  });

  it('denies when the other reading falls under another rule; agrees when neither reading has one', () => {
    const byPath = compilePolicy(
      'schema: chio.policy.v1\nrules:\n  public: { match: { path_prefixes: [/public] }, default: allow }\n  private: { match: { path_prefixes: [/] }, default: block }\n',
      'p.yaml',
    );
    const d = decide({ policy: byPath, input: sentAs(httpRequest({ host: 'any.svc' }), '/public/..%2F..%2Fsecret') });
    expect(d).toMatchObject({ verdict: 'deny', rule: 'public' });
    expect(d.reason?.message).toBe(
      'read as another server may route it ("/secret"), the path falls under rule "private", tool (none) instead of rule "public", tool (none)',
    );
    // mixed separators (a %2F-only server keeps %5C as a character) and Tomcat's "..;"
    for (const sent of ['/public/a%5Cb%2F..%2F..%2Fsecret', '/public/a\\b%2F..%2F..%2Fsecret', '/public/..;/secret', '/public/%2e%2e;x/secret', '/public/x/..;/../secret', '/public/x/..%2F..%2Fsecret%2Fy/..']) {
      expect(decide({ policy: byPath, input: sentAs(httpRequest({ host: 'any.svc' }), sent) }).reason?.code, sent).toBe('ambiguous_path');
    }
    expect(decide({ policy: openPolicy, input: sentAs(httpRequest({ host: 'other.svc' }), '/x%2F..%2F..%2Fv1') }).reason).toBeNull(); // unmatched both ways
  });

  it('escaped ":", "@" and sub-delims, hex case and UTF-8: a decoding server cannot be reached past a block list', () => {
    const items = compilePolicy(
      `schema: chio.policy.v1
tools:
  delete_item: [{ path: "/v1/items:delete" }]
  purge: [{ path: /v2/what%3Fnow }]
  me: [{ path_prefix: /users/@me }]
  cafe: [{ path: /caf%C3%A9 }]
rules:
  api: { match: { hosts: [api.svc] }, default: allow, block: [delete_item, purge, me, cafe] }
`,
      'items.yaml',
    );
    const at = (sent: string): Decision => decide({ policy: items, input: sentAs(httpRequest({ host: 'api.svc' }), sent) });
    expect(at('/v1/items:delete')).toMatchObject({ verdict: 'deny', tool: 'delete_item', reason: { code: 'tool_blocked' } });
    expect(at('/v1/items%3Adelete')).toMatchObject({ verdict: 'deny', tool: null, reason: { code: 'ambiguous_path' } });
    expect(at('/v1/items%3Adelete').reason?.message).toBe(
      'read as another server may route it ("/v1/items:delete"), the path falls under rule "api", tool "delete_item" instead of rule "api", tool (none)',
    );
    expect(at('/users/%40me/keys')).toMatchObject({ verdict: 'deny', reason: { code: 'ambiguous_path' } });
    // one canonical spelling: hex case and raw UTF-8 are the policy's escapes
    expect(at('/v2/what%3fnow')).toMatchObject({ verdict: 'deny', tool: 'purge', reason: { code: 'tool_blocked' } });
    expect(at('/caf\u00e9')).toMatchObject({ verdict: 'deny', tool: 'cafe', reason: { code: 'tool_blocked' } });
    expect(at('/caf%c3%a9')).toMatchObject({ verdict: 'deny', tool: 'cafe', reason: { code: 'tool_blocked' } });
    // an escape that changes neither rule nor tool is allowed
    expect(at('/v1/items/a%3Ab')).toMatchObject({ verdict: 'allow', tool: null, reason: null });
  });

  it('"//" then "..": RFC 3986 order (WHATWG, Envoy normalize_path) is another reading', () => {
    const ops = compilePolicy(
      'schema: chio.policy.v1\nrules:\n  ops: { match: { path_prefixes: [/ops] }, default: block }\n  api: { match: { path_prefixes: [/] }, default: allow }\n',
      'ops.yaml',
    );
    const d = decide({ policy: ops, input: sentAs(httpRequest({ host: 'any.svc' }), '/ops//../run') });
    expect(d).toMatchObject({ verdict: 'deny', rule: 'api', reason: { code: 'ambiguous_path' } });
    expect(d.reason?.message).toMatch(/^read as another server may route it \("\/ops\/(\.\.\/)?run"\), the path falls under rule "ops", tool \(none\) instead of rule "api", tool \(none\)$/);
    expect(decide({ policy: ops, input: sentAs(httpRequest({ host: 'any.svc' }), '/api//x/../y') })).toMatchObject({ verdict: 'allow', reason: null });
  });

  it('dot-segments as Express and Werkzeug keep them, and a leading "//" as WHATWG URL reads it: a block list holds', () => {
    const admin = compilePolicy(
      'schema: chio.policy.v1\ntools:\n  admin: [{ path_prefix: /admin }]\n  x: [{ path_prefix: /x }]\nrules:\n  all: { default: allow, block: [admin, x] }\n',
      'admin.yaml',
    );
    const at = (sent: string): Decision => decide({ policy: admin, input: sentAs(httpRequest({ host: 'any.svc' }), sent) });
    // chio reads /public; app.use('/admin') in Express and /admin/<path:p> in Flask take the path as sent
    for (const sent of ['/admin/../public', '/admin/%2e%2e/public', '/admin/users/../../public']) {
      expect(at(sent), sent).toMatchObject({ verdict: 'deny', tool: null, reason: { code: 'ambiguous_path' } });
    }
    // new URL('//admin/x', base) is host "admin", path /x in a Node server
    for (const sent of ['//admin/x', '///admin/x', '/\\admin/x']) {
      expect(at(sent), sent).toMatchObject({ verdict: 'deny', reason: { code: 'ambiguous_path' } });
    }
    expect(at('/public/./a')).toMatchObject({ verdict: 'allow', reason: null }); // read alike everywhere
  });

  it('a path with upper-case letters is also read lower-cased (Express routes so) when every policy path is lower case', () => {
    const lower = compilePolicy(
      'schema: chio.policy.v1\ntools:\n  admin: [{ path_prefix: /admin }]\n  users: [{ path_prefix: /users }]\nrules:\n  all: { default: allow, block: [admin] }\n',
      'lower.yaml',
    );
    expect(lower.lowercasePaths).toBe(true);
    const at = (policy: typeof lower, sent: string): Decision => decide({ policy, input: sentAs(httpRequest({ host: 'any.svc' }), sent) });
    expect(at(lower, '/ADMIN/users')).toMatchObject({ verdict: 'deny', tool: null, reason: { code: 'ambiguous_path', message: 'read as another server may route it ("/admin/users"), the path falls under rule "all", tool "admin" instead of rule "all", tool (none)' } });
    expect(at(lower, '/Admin/x%3F')).toMatchObject({ verdict: 'deny', reason: { code: 'ambiguous_path' } });
    // an ID in mixed case under the same tool reads alike
    expect(at(lower, '/users/AbC123')).toMatchObject({ verdict: 'allow', tool: 'users', reason: null });
    // a policy naming a path in upper case is case-sensitive as written: no lower-cased reading (it would refuse /Reports itself)
    const mixed = compilePolicy('schema: chio.policy.v1\ntools:\n  reports: [{ path_prefix: /Reports }]\nrules:\n  all: { default: allow }\n', 'mixed.yaml');
    expect(mixed.lowercasePaths).toBe(false);
    expect(at(mixed, '/Reports/q1')).toMatchObject({ verdict: 'allow', tool: 'reports', reason: null });
  });

  it('allows an encoded slash that changes neither rule nor tool (an ID holding %2F)', () => {
    const d = decide({ input: sentAs(report, '/reports/group%2Fdaily') });
    expect(d).toMatchObject({ verdict: 'allow', rule: 'reports', tool: null, reason: null });
  });
});
