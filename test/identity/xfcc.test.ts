/**
 * XFCC parsing (src/identity/xfcc.ts): the reference examples, quoting edge cases, the spoofed
 * prefix, and fast-check properties (never anything but a DenyError('malformed_xfcc'); a client
 * prefix never changes the trusted last element).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DenyError } from '../../src/errors.js';
import { parseXfcc, trustedXfccElement, MAX_XFCC_ELEMENTS, type XfccElement } from '../../src/identity/xfcc.js';

const FIXTURES = path.resolve(import.meta.dirname, '..', 'fixtures', 'envoy');

interface Example {
  id: string;
  header: string;
  expected?: Array<Record<string, unknown>>;
  expected_trusted_identity?: string;
}

const examples = (JSON.parse(readFileSync(path.join(FIXTURES, 'xfcc', 'xfcc-examples.json'), 'utf8')) as { examples: Example[] }).examples;

/** An element in the fixture's shape. */
function fixtureShape(e: XfccElement): Record<string, unknown> {
  const out: Record<string, unknown> = { By: e.by };
  if (e.hash !== null) out['Hash'] = e.hash;
  if (e.cert !== null) out['Cert_decodes_to'] = decodeURIComponent(e.cert);
  if (e.subject !== null) out['Subject'] = e.subject;
  out['URI'] = e.uri;
  out['DNS'] = e.dns;
  return out;
}

function expectedShape(expected: Record<string, unknown>): Record<string, unknown> {
  const out = { ...expected };
  const certFile = out['Cert_decodes_to'];
  if (typeof certFile === 'string') out['Cert_decodes_to'] = readFileSync(path.join(FIXTURES, certFile), 'utf8');
  return out;
}

function denyOf(run: () => unknown): DenyError {
  try {
    run();
  } catch (err) {
    if (err instanceof DenyError) return err;
    throw err;
  }
  throw new Error('expected a DenyError');
}

function expectMalformed(header: string, message: string): void {
  const err = denyOf(() => parseXfcc(header));
  expect({ code: err.code, message: err.message }).toEqual({ code: 'malformed_xfcc', message: `x-forwarded-client-cert: ${message}` });
}

describe('XFCC: the reference examples', () => {
  for (const example of examples.filter((e) => e.expected !== undefined)) {
    it(`parses ${example.id}`, () => {
      const parsed = parseXfcc(example.header).map(fixtureShape);
      expect(parsed).toEqual((example.expected ?? []).map(expectedShape));
    });
  }

  it('trusts only the last element of the spoofed example', () => {
    const spoofed = examples.find((e) => e.id === 'spoofed-prefix');
    expect(spoofed?.expected_trusted_identity).toBe('spiffe://example.org/ns/default/sa/frontend');
    const elements = parseXfcc(spoofed?.header ?? '');
    expect(elements.map((e) => e.uri)).toEqual([['spiffe://example.org/ns/kube-system/sa/admin'], ['spiffe://example.org/ns/default/sa/frontend']]);
    expect(trustedXfccElement(spoofed?.header ?? '').uri).toEqual([spoofed?.expected_trusted_identity]);
  });

  it('trusts only the last element of the http-spoofed-xfcc CheckRequest header', () => {
    const req = JSON.parse(readFileSync(path.join(FIXTURES, 'check-requests', 'http-spoofed-xfcc.loader-view.json'), 'utf8')) as {
      attributes: { request: { http: { headers: Record<string, string> } } };
    };
    const header = req.attributes.request.http.headers['x-forwarded-client-cert'] ?? '';
    expect(trustedXfccElement(header).uri).toEqual(['spiffe://example.org/ns/default/sa/frontend']);
  });
});

describe('XFCC: quoting edge cases', () => {
  it('keeps commas, semicolons and equals signs inside quotes', () => {
    const [e] = parseXfcc('Subject="CN=a,OU=b;c=d";URI=spiffe://t/w');
    expect(e?.subject).toBe('CN=a,OU=b;c=d');
    expect(e?.uri).toEqual(['spiffe://t/w']);
  });

  it('unescapes \\" and \\\\ inside quotes', () => {
    const [e] = parseXfcc('Subject="CN=\\"quoted\\",O=back\\\\slash";URI=spiffe://t/w');
    expect(e?.subject).toBe('CN="quoted",O=back\\slash');
  });

  it('accepts a quoted value with a comma as a whole element and an empty quoted value', () => {
    expect(parseXfcc('Subject="a,b",Subject=""').map((e) => e.subject)).toEqual(['a,b', '']);
  });

  it('collects repeated By, URI and DNS, case-insensitive keys', () => {
    const [e] = parseXfcc('by=a;BY=b;uri=spiffe://t/x;Uri=spiffe://t/y;dns=a.b;DNS=c.d;hash=ff');
    expect(e).toEqual({ by: ['a', 'b'], hash: 'ff', cert: null, chain: null, subject: null, uri: ['spiffe://t/x', 'spiffe://t/y'], dns: ['a.b', 'c.d'] });
  });

  it('allows white space around the commas between elements (joined headers)', () => {
    expect(parseXfcc('URI=spiffe://t/a ,  URI=spiffe://t/b\t,Subject="x" ,URI=spiffe://t/c').map((e) => e.uri)).toEqual([
      ['spiffe://t/a'],
      ['spiffe://t/b'],
      [],
      ['spiffe://t/c'],
    ]);
  });

  it('keeps an empty URI as an empty value', () => {
    expect(parseXfcc('Subject="CN=x";URI=')[0]?.uri).toEqual(['']);
  });

  it('rejects an unterminated quote', () => {
    expectMalformed('By=a;Subject="CN=x', 'quoted value opened at index 13 is not closed');
    expectMalformed('Subject="abc\\"', 'quoted value opened at index 8 is not closed');
  });

  it('rejects text after a closing quote', () => {
    expectMalformed('Subject="a"b;URI=x', 'unexpected character at index 11 after a closing quote');
  });

  it('rejects a quote inside an unquoted value', () => {
    expectMalformed('URI=a"b', `unexpected '"' at index 5 in an unquoted value`);
  });

  it('rejects repeated single keys, unknown keys, missing "=", empty elements and empty headers', () => {
    expectMalformed('Hash=aa;Hash=bb', 'key "hash" repeats in one element (index 8)');
    expectMalformed('Foo=bar', 'unknown key "Foo" at index 0');
    expectMalformed('URI', 'key "URI" at index 0 is not followed by "="');
    expectMalformed('URI=a,,URI=b', 'expected a key at index 6');
    expectMalformed('URI=a,', 'expected a key at index 6');
    expectMalformed(';URI=a', 'expected a key at index 0');
    expectMalformed('', 'is empty');
    expectMalformed('  ', 'is empty');
  });

  it('bounds the number of elements and the length', () => {
    expectMalformed(Array.from({ length: MAX_XFCC_ELEMENTS + 1 }, () => 'URI=a').join(','), `more than ${MAX_XFCC_ELEMENTS} elements`);
    expectMalformed(`URI=${'a'.repeat(64 * 1024)}`, `is ${64 * 1024 + 4} characters; the maximum is ${64 * 1024}`);
  });

  it('a client prefix that opens a quote cannot take over the proxy element', () => {
    const proxy = 'By=spiffe://t/backend;Hash=ab;Subject="";URI=spiffe://t/frontend';
    for (const prefix of ['URI="', 'URI=spiffe://t/admin;Subject="', 'Subject="x\\', 'URI=spiffe://t/admin;']) {
      expect(denyOf(() => trustedXfccElement(`${prefix},${proxy}`)).code).toBe('malformed_xfcc');
    }
  });
});

/** Envoy's rendering of a value: quoted (with \" and \\ escaped) when it holds , ; = or ". */
function render(value: string): string {
  return /[,;="\\]/.test(value) || value === '' ? `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"` : value;
}

const segment = fc.stringMatching(/^[a-z0-9]{1,8}$/);
const spiffeId = fc.tuple(segment, segment).map(([td, p]) => `spiffe://${td}.test/${p}`);
/** RFC 2253-ish subjects: start with a letter, may hold , ; = " \ */
const subject = fc
  .array(fc.tuple(fc.constantFrom('CN', 'O', 'OU'), fc.string({ unit: fc.constantFrom('a', 'b', ',', ';', '=', '"', '\\', ' ', 'é') })), {
    minLength: 1,
    maxLength: 3,
  })
  .map((rdns) => rdns.map(([k, v]) => `${k}=${v}`).join(','));

const proxyElement = fc.record({ by: spiffeId, hash: fc.stringMatching(/^[0-9a-f]{64}$/), subject, uri: spiffeId }).map((e) => ({
  expected: { by: [e.by], hash: e.hash, cert: null, chain: null, subject: e.subject, uri: [e.uri], dns: [] },
  header: `By=${e.by};Hash=${e.hash};Subject=${render(e.subject)};URI=${e.uri}`,
}));

const clientText = fc.string({ unit: fc.constantFrom('U', 'R', 'I', 'B', 'y', 'S', 'u', 'b', '=', ';', ',', '"', '\\', ' ', 's', ':', '/', 'x'), maxLength: 40 });

describe('XFCC: properties', () => {
  it('random strings never throw anything but a DenyError(malformed_xfcc)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 200 }), clientText), (text) => {
        try {
          const elements = parseXfcc(text);
          expect(elements.length).toBeGreaterThan(0);
        } catch (err) {
          expect(err).toBeInstanceOf(DenyError);
          expect((err as DenyError).code).toBe('malformed_xfcc');
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('an element rendered like Envoy parses back to itself', () => {
    fc.assert(
      fc.property(proxyElement, ({ expected, header }) => {
        expect(parseXfcc(header)).toEqual([expected]);
      }),
      { numRuns: 500 },
    );
  });

  it('whatever a client prepends, the trusted element is the proxy element or the header is malformed', () => {
    fc.assert(
      fc.property(clientText, proxyElement, (prefix, { expected, header }) => {
        let trusted: XfccElement;
        try {
          trusted = trustedXfccElement(`${prefix},${header}`);
        } catch (err) {
          expect((err as DenyError).code).toBe('malformed_xfcc');
          return;
        }
        expect(trusted).toEqual(expected);
      }),
      { numRuns: 3000 },
    );
  });
});
