/**
 * Review of the policy engine against SPEC §5, fail-closed: inputs where a request could be
 * allowed (or land on the wrong rule or tool) that should be denied, and policies that compile
 * into something more permissive than written instead of failing with policy_invalid.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Tier } from '../../src/attestation/tier.js';
import { normalizePath, toCheckInput } from '../../src/check/envoy.js';
import type { CheckInput } from '../../src/check/request.js';
import type { WorkloadIdentity } from '../../src/identity/identity.js';
import { evaluate, type Decision } from '../../src/policy/evaluate.js';
import { HostIndex, hostPatternMatches, parseHostPattern } from '../../src/policy/hosts.js';
import { compilePolicy } from '../../src/policy/load.js';
import { httpPathFault } from '../../src/policy/paths.js';
import { policySchema } from '../../src/policy/schema.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { httpRequest, WORKER } from './input.js';

function decide(policy: CompiledPolicy, input: CheckInput, identity: WorkloadIdentity | null = null, tier: Tier = identity ? 'attested' : 'none'): Decision {
  return evaluate({ policy, input, identity, identityError: null, tier });
}

/** The message of the policy_invalid error compiling `text` throws. */
function compileError(text: string): string {
  try {
    compilePolicy(text, 'policy.yaml');
  } catch (err) {
    expect((err as { code?: string }).code).toBe('policy_invalid');
    return (err as Error).message;
  }
  throw new Error('compiled');
}

/** A restrictive rule for one host, then a catch-all that allows everything. */
const HOST_POLICY = compilePolicy(
  `schema: chio.policy.v1
tools:
  admin_op: [{ hosts: [admin.svc], path_prefix: /admin }]
rules:
  admin:
    match: { hosts: [admin.svc] }
    default: allow
    require_workload_identity: { trust_domain: prod.chio, path_prefixes: [/payments/worker] }
  public:
    default: allow
    block: [admin_op]
`,
  'policy.yaml',
);

describe('host matching: an absolute DNS name (trailing dot) is the same host', () => {
  it('"admin.svc." selects the rule of admin.svc, not the catch-all', () => {
    for (const host of ['admin.svc.', 'ADMIN.SVC.', 'admin.svc.:443']) {
      const d = decide(HOST_POLICY, httpRequest({ host, path: '/x' }));
      expect(d).toMatchObject({ verdict: 'deny', rule: 'admin', reason: { code: 'identity_required' }, httpStatus: 401 });
    }
    // via the Envoy mapping too
    const input = toCheckInput({ attributes: { request: { http: { method: 'GET', host: 'admin.svc.', path: '/x' } } } } as never);
    expect(decide(HOST_POLICY, input)).toMatchObject({ verdict: 'deny', rule: 'admin', reason: { code: 'identity_required' } });
    expect(decide(HOST_POLICY, httpRequest({ host: 'admin.svc.', path: '/x' }), WORKER)).toMatchObject({ verdict: 'allow', rule: 'admin' });
  });

  it('"admin.svc:" (an empty port) and "admin.svc:0443" through the Envoy mapping select the rule of admin.svc', () => {
    for (const host of ['admin.svc:', 'admin.svc:0443']) {
      const input = toCheckInput({ attributes: { request: { http: { method: 'GET', host, path: '/x' } } } } as never);
      expect(decide(HOST_POLICY, input), host).toMatchObject({ verdict: 'deny', rule: 'admin', reason: { code: 'identity_required' } });
    }
  });

  it('IPv6 literals are compared in their RFC 5952 spelling, in patterns and in requests', () => {
    const v6 = compilePolicy(
      'schema: chio.policy.v1\nrules:\n  local: { match: { hosts: ["[0:0::1]", "[2001:DB8::1]:8443"] }, default: block }\n  rest: { default: allow }\n',
      'v6.yaml',
    );
    for (const host of ['[::1]', '[0:0::1]', '[0000::0001]:80', '[2001:db8:0:0::1]:8443']) {
      const input = toCheckInput({ attributes: { request: { http: { method: 'GET', host, path: '/x' } } } } as never);
      expect(v6.selectRule(input), host).toMatchObject({ rule: { name: 'local' } });
    }
    const other = toCheckInput({ attributes: { request: { http: { method: 'GET', host: '[::2]', path: '/x' } } } } as never);
    expect(v6.selectRule(other)).toMatchObject({ rule: { name: 'rest' } });
  });

  it('IPv4 addresses in other spellings than the dotted quad are malformed_request (WHATWG, curl and inet_aton read them as one)', () => {
    const meta = compilePolicy(
      'schema: chio.policy.v1\nrules:\n  metadata: { match: { hosts: [169.254.169.254, 127.0.0.1] }, default: block }\n  rest: { default: allow }\n',
      'meta.yaml',
    );
    for (const host of ['2852039166', '0xa9.0xfe.0xa9.0xfe', '0251.0376.0251.0376', '169.254.43518', '0xA9FEA9FE', '127.1', '0x7f.1', '127.000.000.001', '0177.0.0.1', '256.0.0.1', '1.2.3.4.5']) {
      expect(() => toCheckInput({ attributes: { request: { http: { method: 'GET', host, path: '/x' } } } } as never), host).toThrow(
        expect.objectContaining({ code: 'malformed_request', message: `request host ${JSON.stringify(host.toLowerCase())} ends in a number but is not a dotted-quad IPv4 address (write it as four decimal parts 0-255, e.g. 127.0.0.1)` }),
      );
    }
    for (const host of ['169.254.169.254', '169.254.169.254:80', '127.0.0.1.']) {
      const input = toCheckInput({ attributes: { request: { http: { method: 'GET', host, path: '/x' } } } } as never);
      expect(meta.selectRule(input), host).toMatchObject({ rule: { name: 'metadata' } });
    }
    // a DNS name may hold digits, so long as its last label is not a number
    expect(toCheckInput({ attributes: { request: { http: { method: 'GET', host: '1.2.3.example', path: '/x' } } } } as never).hostname).toBe('1.2.3.example');
    expect(compileError('schema: chio.policy.v1\nrules:\n  r: { match: { hosts: ["127.1"] } }\n')).toBe(
      'policy.yaml:3:25: rules.r.match.hosts[0]: "127.1" ends in a number but is not a dotted-quad IPv4 address (write it as four decimal parts 0-255, e.g. 127.0.0.1)',
    );
  });

  it('a host with a non-ASCII character is malformed_request, also one that lower-cases to ASCII (a Kelvin sign)', () => {
    expect(() => toCheckInput({ attributes: { request: { http: { method: 'GET', host: '\u212Aube.svc', path: '/x' } } } } as never)).toThrow(
      expect.objectContaining({ code: 'malformed_request', message: 'request host "\u212Aube.svc" is not a DNS name or an IP literal' }),
    );
  });

  it('"admin.svc." resolves to the tool of admin.svc (so a block list applies)', () => {
    const input = httpRequest({ host: 'admin.svc.', path: '/admin/users', contextExtensions: { chio_rule: 'public' } });
    expect(HOST_POLICY.resolveTool(input)).toBe('admin_op');
    expect(decide(HOST_POLICY, input)).toMatchObject({ verdict: 'deny', rule: 'public', tool: 'admin_op', reason: { code: 'tool_blocked' } });
  });

  it('only one trailing dot is a root label; "admin.svc.." and "." match nothing', () => {
    const admin = parseHostPattern('admin.svc');
    expect(hostPatternMatches(admin, 'admin.svc..', 'admin.svc..')).toBe(false);
    expect(hostPatternMatches(parseHostPattern('*.svc'), '.', '.')).toBe(false);
    expect(decide(HOST_POLICY, httpRequest({ host: 'admin.svc..', path: '/x' }))).toMatchObject({ rule: 'public' });
  });

  it('HostIndex and hostPatternMatches treat "h." as "h" (property)', () => {
    const labels = fc.constantFrom('a', 'b', 'example', 'com');
    const name = fc.array(labels, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
    const port = fc.constantFrom(null, '80', '8443');
    const pattern = fc.tuple(fc.boolean(), name, port).map(([wild, n, p]) => `${wild ? '*.' : ''}${n}${p === null ? '' : `:${p}`}`);
    fc.assert(
      fc.property(fc.uniqueArray(pattern, { maxLength: 8 }), name, port, (patterns, n, p) => {
        const index = new HostIndex<string>();
        for (const q of patterns) index.upsert(parseHostPattern(q), () => q);
        const withPort = (h: string) => (p === null ? h : `${h}:${p}`);
        const visit = (host: string, hostname: string) => {
          const seen: string[] = [];
          index.visitMatches(host, hostname, (q) => seen.push(q));
          return seen.sort();
        };
        expect(visit(withPort(`${n}.`), `${n}.`)).toEqual(visit(withPort(n), n));
        for (const q of patterns) {
          const pq = parseHostPattern(q);
          expect(hostPatternMatches(pq, withPort(`${n}.`), `${n}.`)).toBe(hostPatternMatches(pq, withPort(n), n));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('empty lists are refused where they would read as "any" (a template that rendered none)', () => {
  it.each([
    ['match.hosts', 'rules:\n  r: { match: { hosts: [] } }\n', 'policy.yaml:3:17: rules.r.match.hosts: must not be empty: omit hosts to govern every host'],
    ['match.path_prefixes', 'rules:\n  r: { match: { path_prefixes: [] } }\n', 'policy.yaml:3:17: rules.r.match.path_prefixes: must not be empty: omit path_prefixes to govern every path'],
    [
      'require_workload_identity.path_prefixes',
      'rules:\n  r: { require_workload_identity: { trust_domain: prod.chio, path_prefixes: [] } }\n',
      'policy.yaml:3:62: rules.r.require_workload_identity.path_prefixes: must not be empty: omit path_prefixes to admit any path',
    ],
  ])('%s: []', (_what, body, message) => {
    expect(compileError(`schema: chio.policy.v1\n${body}`)).toBe(message);
  });
});

describe('HTTP path prefixes that no normalized request path can match are policy_invalid', () => {
  const rulePrefix = (prefix: string) => `schema: chio.policy.v1\nrules:\n  admin:\n    match: { path_prefixes: ["${prefix}"] }\n`;

  it('names the fault for empty and dot segments, encoded unreserved characters, bad escapes', () => {
    expect(compileError(rulePrefix('/admin//secrets'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must not have an empty segment ("//"): requests are matched with "//" merged',
    );
    expect(compileError(rulePrefix('/admin/./x'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must not have a "." or ".." segment: requests are matched with dot-segments removed',
    );
    expect(compileError(rulePrefix('/admin/..'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must not have a "." or ".." segment: requests are matched with dot-segments removed',
    );
    expect(compileError(rulePrefix('/%61dmin'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must not percent-encode "a" ("%61"): requests are matched decoded; write "a"',
    );
    expect(compileError(rulePrefix('/v1/items%3Adelete'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must not percent-encode ":" ("%3A"): a path carries it raw, and a request spelling it encoded is read both ways; write ":"',
    );
    expect(compileError(rulePrefix('/cars;color=red'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must not contain ";": path parameters are read both with and without them (Tomcat, Spring), so a request to it is always ambiguous_path',
    );
    expect(compileError(rulePrefix('/a%2fb'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must write percent-encodings in upper case (requests are matched so, RFC 3986 §6.2.2.1): write "%2F", not "%2f"',
    );
    expect(compileError(rulePrefix('/café'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must percent-encode "é" (requests are matched with it encoded): write "%C3%A9"',
    );
    expect(compileError(rulePrefix('/a\\\\b'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix must percent-encode "\\\\" (requests are matched with it encoded): write "%5C"',
    );
    expect(compileError(rulePrefix('/admin%zz'))).toBe(
      'policy.yaml:4:30: rules.admin.match.path_prefixes[0]: a path prefix has an invalid percent-encoding at index 6',
    );
    expect(
      compileError('schema: chio.policy.v1\ntools:\n  t: [{ path: "/v1/./transfers" }]\n'),
    ).toBe('policy.yaml:3:9: tools.t[0].path: a path must not have a "." or ".." segment: requests are matched with dot-segments removed');
    expect(
      compileError('schema: chio.policy.v1\ntools:\n  t: [{ path_prefix: "/v1//transfers" }]\n'),
    ).toBe('policy.yaml:3:9: tools.t[0].path_prefix: a path prefix must not have an empty segment ("//"): requests are matched with "//" merged');
  });

  it('still accepts trailing slashes, encoded "/", "~", dots inside segments, sub-delims, ":" and "@", encoded UTF-8', () => {
    for (const ok of ['/', '/v1', '/v1/', '/a%2Fb', '/~user/a.b', '/.well-known/x', '/a/..b/c...', "/v1/items:delete!$&'()*+,=@", '/caf%C3%A9']) {
      expect(() => compilePolicy(rulePrefix(ok), 'policy.yaml'), ok).not.toThrow();
    }
  });

  it('every prefix the schema accepts is a fixed point of request normalization (property)', () => {
    const ch = fc.constantFrom('a', 'B', '.', '/', '%', '2', 'F', 'e', '6', '1', '~', '-', '_', 'z', ':', '@', ';', '\u00e9', '\\', '"');
    fc.assert(
      fc.property(fc.array(ch, { maxLength: 12 }).map((c) => `/${c.join('')}`), (prefix) => {
        if (httpPathFault(prefix) !== null) return;
        const ok = policySchema.safeParse({ schema: 'chio.policy.v1', rules: { r: { match: { path_prefixes: [prefix] } } } }).success;
        if (ok) expect(normalizePath(prefix)).toBe(prefix);
      }),
      { numRuns: 3000 },
    );
  });

  it('so a restrictive prefix rule written in any accepted spelling governs the request', () => {
    const policy = compilePolicy(
      `schema: chio.policy.v1
rules:
  admin:
    match: { path_prefixes: [/admin/] }
    require_workload_identity: { trust_domain: prod.chio }
    default: allow
  rest: { default: allow }
`,
      'policy.yaml',
    );
    for (const raw of ['/admin/x', '/%61dmin/x', '/admin/x?q=1', '/admin/x#f']) {
      const input = toCheckInput({ attributes: { request: { http: { method: 'GET', host: 'h', path: raw } } } } as never);
      expect(decide(policy, input), raw).toMatchObject({ verdict: 'deny', rule: 'admin', reason: { code: 'identity_required' } });
    }
    // read otherwise by some servers (WHATWG: host "admin", path /x; Express: /x/../admin/x under /x): denied as ambiguous
    for (const raw of ['//admin/x', '/x/../admin/x', '/./admin/x']) {
      const input = toCheckInput({ attributes: { request: { http: { method: 'GET', host: 'h', path: raw } } } } as never);
      expect(decide(policy, input), raw).toMatchObject({ verdict: 'deny', reason: { code: 'ambiguous_path' } });
    }
  });
});

describe('a "__proto__" name is policy_invalid with its location, not a TypeError', () => {
  it('under rules, tools and trusted_verifiers', () => {
    expect(compileError('schema: chio.policy.v1\nrules:\n  __proto__: { default: allow }\n')).toBe(
      'policy.yaml:3:3: rules.__proto__: invalid rule name "__proto__": must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$',
    );
    expect(compileError('schema: chio.policy.v1\ntools:\n  t: [{ path: /a }]\n  "__proto__": [{ path: /b }]\n')).toBe(
      'policy.yaml:4:3: tools.__proto__: invalid tool name "__proto__": must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$',
    );
    expect(
      compileError(
        'schema: chio.policy.v1\nextensions:\n  runtime_assurance:\n    trusted_verifiers:\n      __proto__: { schema: chio.runtime-attestation.spiffe.x509-svid.v1, verifier: v, effective_tier: verified }\n',
      ),
    ).toBe('policy.yaml:5:7: extensions.runtime_assurance.trusted_verifiers.__proto__: invalid trusted verifier name "__proto__": must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$');
  });
});

describe('checked and correct (regression guards for the review)', () => {
  it('an empty rule list denies by default; prototype names in chio_rule are unknown rules', () => {
    const empty = compilePolicy('schema: chio.policy.v1\nrules: {}\n', 'policy.yaml');
    expect(decide(empty, httpRequest())).toMatchObject({ verdict: 'deny', rule: null, reason: { code: 'no_matching_rule' } });
    for (const name of ['__proto__', 'constructor', 'toString', '']) {
      const input = httpRequest({ contextExtensions: { chio_rule: name } });
      expect(decide(HOST_POLICY, input)).toMatchObject({ verdict: 'deny', rule: name, reason: { code: 'unknown_rule' } });
    }
  });

  it('YAML merge keys, alias bombs, bare "*", IDNs and "example.org." are refused at load', () => {
    expect(compileError('schema: chio.policy.v1\nrules:\n  r: { <<: { default: allow } }\n')).toBe('policy.yaml:3:8: rules.r.<<: unknown key "<<"');
    const bomb = ['schema: chio.policy.v1', 'x0: &a0 [x,x,x,x,x,x,x,x,x,x]'];
    for (let i = 1; i < 9; i++) bomb.push(`x${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(',')}]`);
    expect(compileError(`${bomb.join('\n')}\n`)).toBe('policy.yaml: Excessive alias count indicates a resource exhaustion attack');
    const host = (h: string) => compileError(`schema: chio.policy.v1\nrules:\n  r: { match: { hosts: ["${h}"] } }\n`);
    expect(host('*')).toMatch(/"\*" is allowed only as the whole first label/);
    expect(host('bücher.example')).toMatch(/write IDNs in punycode/);
    expect(host('example.org.')).toMatch(/empty label in host name "example.org."/);
  });
});
