import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CheckInput } from '../../src/check/request.js';
import { hostPatternMatches, parseHostPattern } from '../../src/policy/hosts.js';
import { RuleSelector, type SelectableRule } from '../../src/policy/rule-selector.js';
import type { CompiledRule } from '../../src/policy/types.js';
import { pathHasSegmentPrefix } from '../../src/spiffe/id.js';
import { httpRequest, tcpRequest } from './input.js';

function rule(name: string, enabled = true): CompiledRule {
  return {
    name,
    enabled,
    default: 'block',
    allow: new Set(),
    block: new Set(),
    requireWorkloadIdentity: null,
    preferWorkloadIdentity: null,
    requireTier: null,
    preferTier: null,
    requireCapability: false,
  };
}

interface RuleInit {
  readonly name: string;
  readonly enabled?: boolean;
  readonly hosts?: readonly string[];
  readonly pathPrefixes?: readonly string[];
}

function selectable(init: RuleInit): SelectableRule {
  return {
    rule: rule(init.name, init.enabled ?? true),
    match: { hosts: (init.hosts ?? []).map(parseHostPattern), pathPrefixes: init.pathPrefixes ?? [] },
  };
}

/** The definition: the first enabled rule, in order, whose every present condition holds. */
function naiveFirstMatch(rules: readonly SelectableRule[], input: CheckInput): number {
  return rules.findIndex(
    ({ rule: r, match }) =>
      r.enabled &&
      (match.hosts.length === 0 || match.hosts.some((h) => hostPatternMatches(h, input.host, input.hostname))) &&
      (match.pathPrefixes.length === 0 ||
        (input.path !== null && match.pathPrefixes.some((p) => pathHasSegmentPrefix(input.path as string, p)))),
  );
}

function selectedName(selector: RuleSelector, input: CheckInput): string | null {
  const s = selector.select(input);
  if (s.kind === 'rule') return s.rule.name;
  if (s.kind === 'unmatched') return null;
  return `error:${s.code}`;
}

describe('RuleSelector', () => {
  const selector = new RuleSelector(
    [
      { name: 'off', enabled: false },
      { name: 'payments_write', hosts: ['payments.prod.svc.cluster.local'], pathPrefixes: ['/v1'] },
      { name: 'payments_admin', hosts: ['payments.prod.svc.cluster.local:8443'] },
      { name: 'wild', hosts: ['*.example.com'], pathPrefixes: ['/api/'] },
      { name: 'ipv6', hosts: ['[::1]:8080'] },
      { name: 'any_host_health', pathPrefixes: ['/healthz'] },
      { name: 'orders', hosts: ['orders.svc', 'orders.svc.cluster.local'] },
    ].map(selectable),
  );

  it('takes the first enabled rule whose match fits, skipping disabled ones', () => {
    expect(selectedName(selector, httpRequest({ host: 'payments.prod.svc.cluster.local', path: '/v1/transfers' }))).toBe('payments_write');
    expect(selector.select(httpRequest({ host: 'orders.svc', path: '/x' }))).toMatchObject({ kind: 'rule', via: 'match' });
  });

  it('compares hosts without the port unless the pattern has one, case-insensitively', () => {
    expect(selectedName(selector, httpRequest({ host: 'PAYMENTS.prod.svc.cluster.local:8443', path: '/v1/x' }))).toBe('payments_write');
    expect(selectedName(selector, httpRequest({ host: 'payments.prod.svc.cluster.local:8443', path: '/other' }))).toBe('payments_admin');
    expect(selectedName(selector, httpRequest({ host: 'payments.prod.svc.cluster.local', path: '/other' }))).toBeNull();
    expect(selectedName(selector, httpRequest({ host: '[::1]:8080', path: '/' }))).toBe('ipv6');
    expect(selectedName(selector, httpRequest({ host: '[::1]:9090', path: '/' }))).toBeNull();
  });

  it('matches wildcard hosts on one or more labels and path prefixes on whole segments', () => {
    expect(selectedName(selector, httpRequest({ host: 'a.b.example.com', path: '/api/v2' }))).toBe('wild');
    expect(selectedName(selector, httpRequest({ host: 'example.com', path: '/api/v2' }))).toBeNull();
    expect(selectedName(selector, httpRequest({ host: 'a.example.com', path: '/api' }))).toBeNull();
    expect(selectedName(selector, httpRequest({ host: 'payments.prod.svc.cluster.local', path: '/v10' }))).toBeNull();
    expect(selectedName(selector, httpRequest({ host: 'anything', path: '/healthz/live' }))).toBe('any_host_health');
    expect(selectedName(selector, httpRequest({ host: 'anything', path: '/healthzX' }))).toBeNull();
  });

  it('a tcp request (no host, no path) matches only rules without conditions', () => {
    expect(selectedName(selector, tcpRequest())).toBeNull();
    const catchAll = new RuleSelector([selectable({ name: 'h', hosts: ['a'] }), selectable({ name: 'all' })]);
    expect(selectedName(catchAll, tcpRequest())).toBe('all');
  });

  it('context_extensions.chio_rule names the rule, enabled or not', () => {
    const named = (name: string) => httpRequest({ host: 'nowhere', contextExtensions: { chio_rule: name } });
    expect(selector.select(named('orders'))).toMatchObject({ kind: 'rule', via: 'context_extension', rule: { name: 'orders' } });
    expect(selector.select(named('nope'))).toEqual({
      kind: 'error',
      code: 'unknown_rule',
      ruleName: 'nope',
      message: 'context_extensions.chio_rule names no rule of the policy: "nope"',
    });
    expect(selector.select(named('off'))).toEqual({
      kind: 'error',
      code: 'rule_disabled',
      ruleName: 'off',
      message: 'context_extensions.chio_rule names rule "off", which is disabled',
    });
    expect(selector.select(named('x'.repeat(300)))).toMatchObject({
      code: 'unknown_rule',
      message: `context_extensions.chio_rule names no rule of the policy: "${'x'.repeat(128)}…"`,
    });
    expect(selector.select(tcpRequest({ chio_rule: 'orders' }))).toMatchObject({ kind: 'rule', rule: { name: 'orders' } });
  });

  it('agrees with a linear scan on random policies and requests', () => {
    const label = fc.constantFrom('a', 'b', 'svc', 'example');
    const hostName = fc.array(label, { minLength: 1, maxLength: 3 }).map((l) => l.join('.'));
    const port = fc.constantFrom(null, '80', '8443');
    const hostPattern = fc
      .tuple(fc.boolean(), hostName, port)
      .map(([wild, n, p]) => `${wild ? '*.' : ''}${n}${p === null ? '' : `:${p}`}`);
    const segments = fc.array(fc.constantFrom('v1', 'v2', 'x', ''), { maxLength: 3 });
    const prefix = fc.tuple(segments, fc.boolean()).map(([s, dir]) => `/${s.join('/')}${dir && s.length > 0 ? '/' : ''}`);
    const ruleInit = fc.record({
      enabled: fc.boolean(),
      hosts: fc.array(hostPattern, { maxLength: 3 }),
      pathPrefixes: fc.array(prefix, { maxLength: 3 }),
    });
    const request = fc.oneof(
      { weight: 8, arbitrary: fc.tuple(hostName, port, segments).map(([h, p, s]) => httpRequest({ host: p === null ? h : `${h}:${p}`, path: `/${s.join('/')}` })) },
      { weight: 1, arbitrary: fc.constant(tcpRequest()) },
    );
    fc.assert(
      fc.property(fc.array(ruleInit, { maxLength: 12 }), fc.array(request, { minLength: 1, maxLength: 10 }), (inits, requests) => {
        const rules = inits.map((r, i) => selectable({ name: `r${i}`, ...r }));
        const compiled = new RuleSelector(rules);
        for (const input of requests) expect(compiled.firstMatchIndex(input)).toBe(naiveFirstMatch(rules, input));
      }),
      { numRuns: 1000 },
    );
  });
});
