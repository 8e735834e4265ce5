/**
 * Name constraints (src/spiffe/name-constraints.ts): reading the extension strictly, the RFC 5280
 * §4.2.1.10 matching of URI hosts and DNS names, and the exact reason a name is refused.
 * Chain-level behaviour (a constrained CA in a path) is in chain.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DerError, DerReader } from '../../src/spiffe/der.js';
import {
  dnsNameMatches,
  nameConstraintsProblem,
  readNameConstraints,
  uriHost,
  uriHostMatches,
  type NameConstraints,
} from '../../src/spiffe/name-constraints.js';
import { derTlv, nameConstraintsExtension, type ConstraintName } from '../helpers/test-ca.js';

function read(der: Uint8Array, critical = true): NameConstraints {
  const r = new DerReader(der);
  return readNameConstraints(r, r.root(), critical);
}

/** The extension value a test-ca helper builds. */
function valueOf(subtrees: { permitted?: ConstraintName[]; excluded?: ConstraintName[]; withMinimum?: boolean }): Uint8Array {
  return new Uint8Array(nameConstraintsExtension(subtrees).value);
}

describe('readNameConstraints', () => {
  it('reads permitted and excluded URI and DNS subtrees, lower-cased', () => {
    const nc = read(valueOf({ permitted: [{ uri: 'Prod.Example.ORG' }, { dns: '.svc.local' }], excluded: [{ uri: '.evil.example.org' }] }));
    expect(nc).toEqual({
      permitted: [
        { kind: 'uri', name: 'prod.example.org' },
        { kind: 'dns', name: '.svc.local' },
      ],
      excluded: [{ kind: 'uri', name: '.evil.example.org' }],
      critical: true,
    });
  });

  it('records kinds it does not process, and subtrees with a minimum, as unsupported', () => {
    expect(read(valueOf({ permitted: [{ directoryName: true }, { ip: '0a000000ff000000' }] }), false)).toEqual({
      permitted: [
        { kind: 'unsupported', what: 'directoryName' },
        { kind: 'unsupported', what: 'iPAddress' },
      ],
      excluded: [],
      critical: false,
    });
    expect(read(valueOf({ excluded: [{ uri: 'a.test' }], withMinimum: true })).excluded).toEqual([
      { kind: 'unsupported', what: 'a uniformResourceIdentifier subtree with a minimum or maximum' },
    ]);
  });

  it('refuses an empty NameConstraints, an empty subtree list and a base that is not a GeneralName', () => {
    expect(() => read(derTlv(0x30))).toThrow(DerError);
    expect(() => read(derTlv(0x30))).toThrow('NameConstraints is empty (RFC 5280 §4.2.1.10 forbids it) (at byte 0)');
    expect(() => read(derTlv(0x30, derTlv(0xa0)))).toThrow('GeneralSubtrees is empty (at byte 2)');
    expect(() => read(derTlv(0x30, derTlv(0xa0, derTlv(0x30, derTlv(0x04, Buffer.from('x'))))))).toThrow(
      'GeneralSubtree base is OCTET STRING, not a GeneralName (at byte 6)',
    );
    // excluded before permitted is not the SEQUENCE's order
    expect(() => read(derTlv(0x30, derTlv(0xa1, derTlv(0x30, derTlv(0x86, Buffer.from('a')))), derTlv(0xa0, derTlv(0x30, derTlv(0x86, Buffer.from('b'))))))).toThrow(
      /^unexpected \[0\] constructed in NameConstraints/,
    );
  });
});

describe('dnsNameMatches (RFC 5280 §4.2.1.10 dNSName)', () => {
  it.each([
    ['example.com', 'example.com', true],
    ['api.example.com', 'example.com', true],
    ['API.Example.Com', 'example.COM', true],
    ['badexample.com', 'example.com', false],
    ['example.com', '.example.com', false],
    ['api.example.com', '.example.com', true],
    ['com', 'example.com', false],
    ['anything.at.all', '', true],
  ])('%s against %s → %s', (name, constraint, expected) => {
    expect(dnsNameMatches(name, constraint)).toBe(expected);
  });

  const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/);
  const domain = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));

  it('property: adding labels to the left of a constraint always matches it; with a leading dot, only when a label was added', () => {
    fc.assert(
      fc.property(fc.array(label, { maxLength: 3 }), domain, (prefix, base) => {
        const name = [...prefix, base].join('.');
        expect(dnsNameMatches(name, base)).toBe(true);
        expect(dnsNameMatches(name, `.${base}`)).toBe(prefix.length > 0);
      }),
    );
  });

  it('property: a name matches a constraint without a dot only if it is the constraint or ends with "." + it', () => {
    fc.assert(
      fc.property(domain, domain, (name, constraint) => {
        expect(dnsNameMatches(name, constraint)).toBe(name === constraint || name.endsWith(`.${constraint}`));
      }),
    );
  });
});

describe('uriHostMatches and uriHost (RFC 5280 §4.2.1.10 uniformResourceIdentifier)', () => {
  it.each([
    ['prod.example.org', 'prod.example.org', true],
    ['prod.example.org', 'example.org', false],
    ['prod.example.org', '.example.org', true],
    ['example.org', '.example.org', false],
    ['Prod.Example.Org', 'prod.example.org', true],
  ])('host %s against %s → %s', (host, constraint, expected) => {
    expect(uriHostMatches(host, constraint)).toBe(expected);
  });

  it.each([
    ['spiffe://prod.example.org/ns/a', 'prod.example.org'],
    ['spiffe://prod.example.org', 'prod.example.org'],
    ['https://user@host.example:8443/x?y#z', 'host.example'],
    ['urn:uuid:1234', null],
    ['spiffe:///path', null],
    ['https://[::1]/', null],
  ])('uriHost(%s) → %s', (uri, host) => {
    expect(uriHost(uri)).toBe(host);
  });
});

describe('nameConstraintsProblem', () => {
  const leaf = 'the SVID "spiffe://prod.example.org/api"';
  const names = { uris: ['spiffe://prod.example.org/api'], dns: ['api.prod.svc'] };
  const nc = (subtrees: { permitted?: ConstraintName[]; excluded?: ConstraintName[] }, critical = true): NameConstraints =>
    read(valueOf(subtrees), critical);

  it('names inside the permitted subtrees and outside the excluded ones pass', () => {
    expect(nameConstraintsProblem(nc({ permitted: [{ uri: 'prod.example.org' }, { dns: 'prod.svc' }] }), names, leaf)).toBeNull();
    expect(nameConstraintsProblem(nc({ excluded: [{ uri: 'dev.example.org' }, { dns: 'dev.svc' }] }), names, leaf)).toBeNull();
    // DNS subtrees do not bound URI names, and the other way round
    expect(nameConstraintsProblem(nc({ permitted: [{ dns: 'prod.svc' }] }), { uris: names.uris, dns: [] }, leaf)).toBeNull();
  });

  it('a URI outside every permitted URI subtree: named exactly', () => {
    expect(nameConstraintsProblem(nc({ permitted: [{ uri: 'dev.example.org' }, { uri: '.staging.example.org' }] }), names, leaf)).toBe(
      'does not permit the URI SAN "spiffe://prod.example.org/api" of the SVID "spiffe://prod.example.org/api" (permitted URI subtrees: "dev.example.org", ".staging.example.org")',
    );
  });

  it('a name inside an excluded subtree: named exactly', () => {
    expect(nameConstraintsProblem(nc({ excluded: [{ uri: '.example.org' }] }), names, leaf)).toBe(
      'excludes the URI SAN "spiffe://prod.example.org/api" of the SVID "spiffe://prod.example.org/api" (excluded URI subtree ".example.org")',
    );
    expect(nameConstraintsProblem(nc({ permitted: [{ uri: 'prod.example.org' }], excluded: [{ dns: 'prod.svc' }] }), names, leaf)).toBe(
      'excludes the DNS SAN "api.prod.svc" of the SVID "spiffe://prod.example.org/api" (excluded DNS subtree "prod.svc")',
    );
  });

  it('a critical extension with a kind chio does not process refuses every name; a non-critical one ignores that kind', () => {
    expect(nameConstraintsProblem(nc({ permitted: [{ uri: 'prod.example.org' }, { directoryName: true }] }), names, leaf)).toBe(
      'has critical nameConstraints with directoryName, which chio does not process (RFC 5280 §4.2 requires rejecting it)',
    );
    expect(nameConstraintsProblem(nc({ permitted: [{ uri: 'prod.example.org' }, { directoryName: true }] }, false), names, leaf)).toBeNull();
    expect(nameConstraintsProblem(nc({ permitted: [{ uri: 'dev.example.org' }, { directoryName: true }] }, false), names, leaf)).toMatch(
      /^does not permit the URI SAN/,
    );
  });

  it('under DNS constraints a DNS SAN must be a plain host name: a trailing dot or an empty label would slip past a subtree', () => {
    const excluded = nc({ excluded: [{ dns: 'evil.test' }] });
    for (const name of ['x.evil.test.', 'x..evil.test', '.evil.test', '']) {
      expect(nameConstraintsProblem(excluded, { uris: [], dns: [name] }, 'the SVID "spiffe://a.test/x"')).toBe(
        `has DNS nameConstraints, and the SVID "spiffe://a.test/x" has a DNS SAN ${JSON.stringify(name)} that is not a plain host name to check against them`,
      );
    }
    expect(nameConstraintsProblem(excluded, { uris: [], dns: ['x.good.test'] }, 'the SVID')).toBeNull();
    expect(nameConstraintsProblem(nc({ excluded: [{ uri: 'evil.test' }] }), { uris: [], dns: ['x.evil.test.'] }, 'the SVID')).toBeNull();
  });

  it('a URI without a host cannot be checked against URI subtrees', () => {
    expect(nameConstraintsProblem(nc({ excluded: [{ uri: 'evil.example' }] }), { uris: ['urn:x'], dns: [] }, 'intermediate "CN=i"')).toBe(
      'has URI nameConstraints, and intermediate "CN=i" has a URI SAN without a host ("urn:x") to check against them',
    );
    expect(nameConstraintsProblem(nc({ excluded: [{ dns: 'evil.example' }] }), { uris: ['urn:x'], dns: [] }, 'intermediate "CN=i"')).toBeNull();
  });
});
