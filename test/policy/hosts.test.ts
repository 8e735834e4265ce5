import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HostIndex, hostPatternFault, hostPatternMatches, parseHostPattern } from '../../src/policy/hosts.js';

describe('parseHostPattern', () => {
  it('parses exact, wildcard, port and IPv6 patterns, lower-cased', () => {
    expect(parseHostPattern('Payments.Prod.SVC')).toEqual({ text: 'payments.prod.svc', withPort: false, wildcard: false, key: 'payments.prod.svc' });
    expect(parseHostPattern('*.example.com')).toEqual({ text: '*.example.com', withPort: false, wildcard: true, key: 'example.com' });
    expect(parseHostPattern('api.example.com:8443')).toEqual({ text: 'api.example.com:8443', withPort: true, wildcard: false, key: 'api.example.com:8443' });
    expect(parseHostPattern('*.example.com:8443')).toEqual({ text: '*.example.com:8443', withPort: true, wildcard: true, key: 'example.com:8443' });
    expect(parseHostPattern('[::1]')).toEqual({ text: '[::1]', withPort: false, wildcard: false, key: '[::1]' });
    expect(parseHostPattern('[2001:DB8::1]:8080')).toEqual({ text: '[2001:db8::1]:8080', withPort: true, wildcard: false, key: '[2001:db8::1]:8080' });
    expect(parseHostPattern('10.0.0.1:80').key).toBe('10.0.0.1:80');
  });

  it('rejects bad patterns with a reason', () => {
    expect(hostPatternFault('')).toBe('a host pattern must not be empty');
    expect(hostPatternFault('*')).toBe('"*" is allowed only as the whole first label, as in "*.example.com"');
    expect(hostPatternFault('a.*.com')).toBe('"*" is allowed only as the whole first label, as in "*.example.com"');
    expect(hostPatternFault('*x.example.com')).toBe('"*" is allowed only as the whole first label, as in "*.example.com"');
    expect(hostPatternFault('example..com')).toBe('empty label in host name "example..com"');
    expect(hostPatternFault('example.com.')).toBe('empty label in host name "example.com."');
    expect(hostPatternFault('exa mple.com')).toBe('host name "exa mple.com" may contain only letters, digits, "-", "_" and "." (write IDNs in punycode)');
    expect(hostPatternFault('bücher.de')).toBe('host name "bücher.de" may contain only letters, digits, "-", "_" and "." (write IDNs in punycode)');
    expect(hostPatternFault('api:0')).toBe('invalid port "0": expected 1-65535 without leading zeros');
    expect(hostPatternFault('api:080')).toBe('invalid port "080": expected 1-65535 without leading zeros');
    expect(hostPatternFault('api:65536')).toBe('invalid port "65536": expected 1-65535 without leading zeros');
    expect(hostPatternFault('api:')).toBe('invalid port "": expected 1-65535 without leading zeros');
    expect(hostPatternFault('::1')).toBe('an IPv6 address must be written in brackets, e.g. "[::1]" or "[::1]:8080"');
    expect(hostPatternFault('[::1')).toBe('invalid IPv6 literal "[::1"');
    expect(hostPatternFault('[zz::1]')).toBe('invalid IPv6 literal "[zz::1]"');
    expect(hostPatternFault('[::1]8080')).toBe('invalid IPv6 literal "[::1]8080"');
    expect(hostPatternFault('[::1]:http')).toBe('invalid port "http": expected 1-65535 without leading zeros');
    expect(hostPatternFault(`${'a'.repeat(250)}.com`)).toBe('a host name is at most 253 characters');
    expect(() => parseHostPattern('*')).toThrow(TypeError);
  });

  it('never throws on arbitrary input; accepted patterns are lower-case and keyed consistently', () => {
    const hostish = fc.stringMatching(/^[*.a-zA-Z0-9:\[\]_-]{0,24}$/);
    fc.assert(
      fc.property(fc.oneof(hostish, fc.string()), (raw) => {
        const fault = hostPatternFault(raw);
        if (fault !== null) {
          expect(typeof fault).toBe('string');
          expect(() => parseHostPattern(raw)).toThrow(TypeError);
          return;
        }
        const p = parseHostPattern(raw);
        expect(p.text).toBe(raw.toLowerCase());
        expect(p.key).toBe(p.wildcard ? p.text.slice(2) : p.text);
        expect(p.key.includes('*')).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('hostPatternMatches', () => {
  const m = (pattern: string, host: string | null, hostname: string | null = host): boolean =>
    hostPatternMatches(parseHostPattern(pattern), host, hostname);

  it('compares without the port unless the pattern has one', () => {
    expect(m('api.example.com', 'api.example.com:8443', 'api.example.com')).toBe(true);
    expect(m('api.example.com:8443', 'api.example.com:8443', 'api.example.com')).toBe(true);
    expect(m('api.example.com:8443', 'api.example.com:9443', 'api.example.com')).toBe(false);
    expect(m('api.example.com:8443', 'api.example.com')).toBe(false);
  });

  it('"*." matches one or more leading labels, never the bare domain', () => {
    expect(m('*.example.com', 'a.example.com')).toBe(true);
    expect(m('*.example.com', 'a.b.example.com')).toBe(true);
    expect(m('*.example.com', 'example.com')).toBe(false);
    expect(m('*.example.com', 'aexample.com')).toBe(false);
    expect(m('*.example.com', '.example.com')).toBe(false);
    expect(m('*.example.com:8443', 'a.example.com:8443', 'a.example.com')).toBe(true);
  });

  it('matches IPv6 literals in brackets', () => {
    expect(m('[::1]', '[::1]:8080', '[::1]')).toBe(true);
    expect(m('[::1]:8080', '[::1]:8080', '[::1]')).toBe(true);
    expect(m('[::1]:8080', '[::1]:9090', '[::1]')).toBe(false);
  });

  it('never matches a request without a host (tcp)', () => {
    expect(m('*.example.com', null, null)).toBe(false);
  });
});

describe('HostIndex', () => {
  const labels = fc.constantFrom('a', 'b', 'example', 'com');
  const name = fc.array(labels, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
  const port = fc.constantFrom(null, '80', '8443');
  const pattern = fc
    .tuple(fc.boolean(), name, port)
    .map(([wild, n, p]) => `${wild ? '*.' : ''}${n}${p === null ? '' : `:${p}`}`);
  const request = fc.oneof(
    fc.tuple(name, port).map(([n, p]) => ({ hostname: n, host: p === null ? n : `${n}:${p}` })),
    fc.constant({ hostname: null, host: null }),
    fc.constant({ hostname: '[::1]', host: '[::1]:80' }),
  );

  it('visits exactly the patterns that match (against the naive definition)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(pattern, { maxLength: 10 }), fc.array(request, { maxLength: 6 }), (patterns, requests) => {
        const index = new HostIndex<string>();
        for (const p of patterns) index.upsert(parseHostPattern(p), () => p);
        for (const { host, hostname } of requests) {
          const visited: string[] = [];
          index.visitMatches(host, hostname, (p) => visited.push(p));
          const expected = patterns.filter((p) => hostPatternMatches(parseHostPattern(p), host, hostname));
          expect(visited.sort()).toEqual(expected.sort());
          expect(index.matches(host, hostname)).toBe(expected.length > 0);
        }
      }),
      { numRuns: 500 },
    );
  });
});
