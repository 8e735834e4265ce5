/**
 * Tests for src/spiffe/id.ts: SPIFFE-ID standard §2 rules with exact messages, plus fast-check
 * properties (character sets, round-trip, only DenyErrors, segment-prefix matching).
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { DenyError } from '../../src/errors.js';
import {
  MAX_SPIFFE_ID_BYTES,
  pathHasSegmentPrefix,
  quoteUntrusted,
  SpiffeId,
  TrustDomain,
  validatePath,
} from '../../src/spiffe/id.js';

const TD_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789.-_';
const SEGMENT_CHARS = `${TD_CHARS}ABCDEFGHIJKLMNOPQRSTUVWXYZ`;

/** The DenyError `fn` throws (fails the test if it throws anything else or nothing). */
function denial(fn: () => unknown): DenyError {
  try {
    fn();
  } catch (err) {
    if (err instanceof DenyError) return err;
    throw err;
  }
  throw new Error('expected a DenyError, nothing was thrown');
}

function expectIdRejected(input: string, message: string): void {
  const err = denial(() => SpiffeId.parse(input));
  expect(err.code).toBe('malformed_spiffe_id');
  expect(err.message).toBe(message);
}

describe('SpiffeId.parse accepts valid IDs', () => {
  it.each([
    ['spiffe://example.org', 'example.org', ''],
    ['spiffe://example.org/ns/default/sa/frontend', 'example.org', '/ns/default/sa/frontend'],
    ['spiffe://a-b_c.9/A.b-C_d/x', 'a-b_c.9', '/A.b-C_d/x'],
    ['spiffe://example.org/.../.a/a./..b', 'example.org', '/.../.a/a./..b'],
    ['spiffe://1', '1', ''],
  ])('%s', (input, trustDomain, path) => {
    const id = SpiffeId.parse(input);
    expect(id.trustDomain).toBe(trustDomain);
    expect(id.path).toBe(path);
    expect(id.uri).toBe(input);
    expect(id.toString()).toBe(input);
    expect(String(id)).toBe(input);
  });

  it('accepts a 255-byte trust domain and a 2048-byte ID', () => {
    const td = 'a'.repeat(255);
    expect(SpiffeId.parse(`spiffe://${td}`).trustDomain).toBe(td);
    const long = `spiffe://example.org/${'p'.repeat(MAX_SPIFFE_ID_BYTES - 'spiffe://example.org/'.length)}`;
    expect(long.length).toBe(2048);
    expect(SpiffeId.parse(long).uri).toBe(long);
  });

  it('compares by value and by trust domain', () => {
    const a = SpiffeId.parse('spiffe://example.org/a');
    expect(a.equals(SpiffeId.parse('spiffe://example.org/a'))).toBe(true);
    expect(a.equals(SpiffeId.parse('spiffe://example.org/b'))).toBe(false);
    expect(a.equals(SpiffeId.parse('spiffe://example.com/a'))).toBe(false);
    expect(a.memberOf(TrustDomain.parse('example.org'))).toBe(true);
    expect(a.memberOf(TrustDomain.parse('example.com'))).toBe(false);
  });

  it('builds from parts, validating the path', () => {
    const td = TrustDomain.parse('example.org');
    expect(SpiffeId.fromParts(td, '/a/b').uri).toBe('spiffe://example.org/a/b');
    expect(SpiffeId.fromParts(td, '').uri).toBe('spiffe://example.org');
    expect(denial(() => SpiffeId.fromParts(td, 'a')).message).toBe(
      'SPIFFE path "a": path must start with "/" (found "a" at index 0)',
    );
  });

  it('segment-aware hasPathPrefix', () => {
    const id = SpiffeId.parse('spiffe://example.org/payments/worker/shard-3');
    expect(id.hasPathPrefix('/payments/worker')).toBe(true);
    expect(id.hasPathPrefix('/payments/work')).toBe(false);
  });

  it('rejects a non-string as a programmer error', () => {
    expect(() => SpiffeId.parse(42 as unknown as string)).toThrow(new TypeError('SPIFFE ID must be a string'));
  });
});

describe('SpiffeId.parse rejects with exact messages', () => {
  it.each([
    // scheme
    ['', 'SPIFFE ID "": does not start with "spiffe://"'],
    ['example.org/a', 'SPIFFE ID "example.org/a": does not start with "spiffe://"'],
    ['://example.org', 'SPIFFE ID "://example.org": does not start with "spiffe://"'],
    ['http://example.org/a', 'SPIFFE ID "http://example.org/a": scheme "http" is not "spiffe"'],
    ['SPIFFE://example.org/a', 'SPIFFE ID "SPIFFE://example.org/a": scheme "SPIFFE" must be lower-case "spiffe"'],
    ['Spiffe://example.org', 'SPIFFE ID "Spiffe://example.org": scheme "Spiffe" must be lower-case "spiffe"'],
    ['spiffe:example.org', 'SPIFFE ID "spiffe:example.org": scheme "spiffe" must be followed by "://"'],
    ['spiffe:/example.org', 'SPIFFE ID "spiffe:/example.org": scheme "spiffe" must be followed by "://"'],
    [' spiffe://example.org', 'SPIFFE ID " spiffe://example.org": scheme " spiffe" is not "spiffe"'],
    // trust domain
    ['spiffe://', 'SPIFFE ID "spiffe://": trust domain is empty'],
    ['spiffe:///a', 'SPIFFE ID "spiffe:///a": trust domain is empty'],
    ['spiffe://Example.org/a', 'SPIFFE ID "spiffe://Example.org/a": trust domain contains an upper-case letter "E" at index 9'],
    ['spiffe://exAmple.org', 'SPIFFE ID "spiffe://exAmple.org": trust domain contains an upper-case letter "A" at index 11'],
    ['spiffe://example.org:8080/a', 'SPIFFE ID "spiffe://example.org:8080/a": trust domain contains ":" at index 20 (a port is not allowed)'],
    ['spiffe://user@example.org', 'SPIFFE ID "spiffe://user@example.org": trust domain contains "@" at index 13 (userinfo is not allowed)'],
    ['spiffe://ex%41mple.org', 'SPIFFE ID "spiffe://ex%41mple.org": trust domain contains "%" at index 11 (percent-encoding is not allowed)'],
    ['spiffe://example.org?x=1', 'SPIFFE ID "spiffe://example.org?x=1": trust domain contains "?" at index 20 (a query is not allowed)'],
    ['spiffe://example.org#f', 'SPIFFE ID "spiffe://example.org#f": trust domain contains "#" at index 20 (a fragment is not allowed)'],
    ['spiffe://exa mple.org', 'SPIFFE ID "spiffe://exa mple.org": trust domain contains " " (U+0020) at index 12; allowed are [a-z0-9.-_]'],
    ['spiffe://exa\tmple.org', 'SPIFFE ID "spiffe://exa\\tmple.org": trust domain contains "\\t" (U+0009) at index 12; allowed are [a-z0-9.-_]'],
    ['spiffe://exämple.org', 'SPIFFE ID "spiffe://exämple.org": trust domain contains "ä" (U+00E4) at index 11; allowed are [a-z0-9.-_]'],
    ['spiffe://[::1]/a', 'SPIFFE ID "spiffe://[::1]/a": trust domain contains "[" at index 9; allowed are [a-z0-9.-_]'],
    [`spiffe://${'a'.repeat(256)}`, `SPIFFE ID "spiffe://${'a'.repeat(191)}…": trust domain is 256 bytes long; the maximum is 255`],
    // path
    ['spiffe://example.org/', 'SPIFFE ID "spiffe://example.org/": path ends with "/" at index 20 (no trailing slash)'],
    ['spiffe://example.org/a/', 'SPIFFE ID "spiffe://example.org/a/": path ends with "/" at index 22 (no trailing slash)'],
    ['spiffe://example.org//a', 'SPIFFE ID "spiffe://example.org//a": path contains an empty segment ("//") at index 20'],
    ['spiffe://example.org/a//b', 'SPIFFE ID "spiffe://example.org/a//b": path contains an empty segment ("//") at index 22'],
    ['spiffe://example.org/.', 'SPIFFE ID "spiffe://example.org/.": path contains a "." segment at index 21'],
    ['spiffe://example.org/a/./b', 'SPIFFE ID "spiffe://example.org/a/./b": path contains a "." segment at index 23'],
    ['spiffe://example.org/a/../b', 'SPIFFE ID "spiffe://example.org/a/../b": path contains a ".." segment at index 23'],
    ['spiffe://example.org/..', 'SPIFFE ID "spiffe://example.org/..": path contains a ".." segment at index 21'],
    ['spiffe://example.org/a?x=1', 'SPIFFE ID "spiffe://example.org/a?x=1": contains "?" at index 22 (a query is not allowed)'],
    ['spiffe://example.org/a#f', 'SPIFFE ID "spiffe://example.org/a#f": contains "#" at index 22 (a fragment is not allowed)'],
    ['spiffe://example.org/a%2Fb', 'SPIFFE ID "spiffe://example.org/a%2Fb": path contains "%" at index 22 (percent-encoding is not allowed)'],
    ['spiffe://example.org/a b', 'SPIFFE ID "spiffe://example.org/a b": path contains " " (U+0020) at index 22; allowed are [a-zA-Z0-9.-_]'],
    ['spiffe://example.org/a\nb', 'SPIFFE ID "spiffe://example.org/a\\nb": path contains "\\n" (U+000A) at index 22; allowed are [a-zA-Z0-9.-_]'],
    ['spiffe://example.org/a\u0000', 'SPIFFE ID "spiffe://example.org/a\\u0000": path contains "\\u0000" (U+0000) at index 22; allowed are [a-zA-Z0-9.-_]'],
    ['spiffe://example.org/é', 'SPIFFE ID "spiffe://example.org/é": path contains "é" (U+00E9) at index 21; allowed are [a-zA-Z0-9.-_]'],
    ['spiffe://example.org/😀', 'SPIFFE ID "spiffe://example.org/😀": path contains "😀" (U+1F600) at index 21; allowed are [a-zA-Z0-9.-_]'],
    ['spiffe://example.org/a:b', 'SPIFFE ID "spiffe://example.org/a:b": path contains ":" at index 22; allowed are [a-zA-Z0-9.-_]'],
    ['spiffe://example.org/a\\b', 'SPIFFE ID "spiffe://example.org/a\\\\b": path contains "\\\\" at index 22; allowed are [a-zA-Z0-9.-_]'],
  ])('%j', (input, message) => {
    expectIdRejected(input, message);
  });

  it('rejects an ID longer than 2048 bytes, quoting only the first 200 characters', () => {
    const input = `spiffe://example.org/${'p'.repeat(2048)}`;
    expectIdRejected(input, `SPIFFE ID "${input.slice(0, 200)}…": longer than 2048 bytes (2069 characters)`);
  });

  it('quotes a long scheme briefly and the input at most 200 characters', () => {
    const input = `${'x'.repeat(300)}://example.org`;
    expectIdRejected(input, `SPIFFE ID "${'x'.repeat(200)}…": scheme "${'x'.repeat(16)}…" is not "spiffe"`);
  });
});

describe('TrustDomain.parse', () => {
  it.each([
    ['example.org', 'example.org'],
    ['spiffe://example.org', 'example.org'],
    ['a_b-c.9', 'a_b-c.9'],
  ])('accepts %s', (input, name) => {
    const td = TrustDomain.parse(input);
    expect(td.name).toBe(name);
    expect(td.toString()).toBe(name);
    expect(td.idString()).toBe(`spiffe://${name}`);
    expect(td.equals(TrustDomain.parse(name))).toBe(true);
  });

  it.each([
    ['', 'trust domain "": is empty'],
    ['Example.org', 'trust domain "Example.org": contains an upper-case letter "E" at index 0'],
    ['example.org:443', 'trust domain "example.org:443": contains ":" at index 11 (a port is not allowed)'],
    ['example.org/a', 'trust domain "example.org/a": contains "/" at index 11; allowed are [a-z0-9.-_]'],
    ['a'.repeat(256), `trust domain "${'a'.repeat(200)}…": is 256 bytes long; the maximum is 255`],
    ['spiffe://example.org/a', 'SPIFFE ID "spiffe://example.org/a": has a path; a trust domain ID has none'],
    ['spiffe://example.org/', 'SPIFFE ID "spiffe://example.org/": path ends with "/" at index 20 (no trailing slash)'],
    ['spiffe://Example.org', 'SPIFFE ID "spiffe://Example.org": trust domain contains an upper-case letter "E" at index 9'],
    ['http://example.org', 'SPIFFE ID "http://example.org": scheme "http" is not "spiffe"'],
  ])('rejects %j', (input, message) => {
    const err = denial(() => TrustDomain.parse(input));
    expect(err.code).toBe('malformed_spiffe_id');
    expect(err.message).toBe(message);
  });
});

describe('validatePath', () => {
  it.each(['', '/a', '/payments/worker', '/A.b-C_d/...'])('accepts %j', (path) => {
    expect(() => validatePath(path)).not.toThrow();
  });

  it.each([
    ['a', 'SPIFFE path "a": path must start with "/" (found "a" at index 0)'],
    ['/', 'SPIFFE path "/": path ends with "/" at index 0 (no trailing slash)'],
    ['/a/', 'SPIFFE path "/a/": path ends with "/" at index 2 (no trailing slash)'],
    ['/a//b', 'SPIFFE path "/a//b": path contains an empty segment ("//") at index 2'],
    ['/a/..', 'SPIFFE path "/a/..": path contains a ".." segment at index 3'],
    ['/./a', 'SPIFFE path "/./a": path contains a "." segment at index 1'],
    ['/a?b', 'SPIFFE path "/a?b": contains "?" at index 2 (a query is not allowed)'],
    ['/a b', 'SPIFFE path "/a b": path contains " " (U+0020) at index 2; allowed are [a-zA-Z0-9.-_]'],
    [`/${'a'.repeat(2038)}`, `SPIFFE path "/${'a'.repeat(199)}…": longer than 2038 bytes (2039 characters)`],
  ])('rejects %j', (path, message) => {
    const err = denial(() => validatePath(path));
    expect(err.code).toBe('malformed_spiffe_id');
    expect(err.message).toBe(message);
  });
});

describe('pathHasSegmentPrefix', () => {
  it.each([
    ['/a', '/a', true],
    ['/a/x', '/a', true],
    ['/a/x/y', '/a/x', true],
    ['/ab', '/a', false],
    ['/a', '/a/x', false],
    ['/payments/workerX', '/payments/worker', false],
    ['/anything', '', true],
    ['', '', true],
    ['/anything', '/', true],
    ['', '/', true],
    ['/api/x', '/api/', true],
    ['/api/', '/api/', true],
    ['/api', '/api/', false],
    ['/apix', '/api/', false],
    ['/v1/transfers?x=1', '/v1/transfers', false],
    ['/v1/transfers/1', '/v1/transfers', true],
  ])('path %j, prefix %j → %s', (path, prefix, expected) => {
    expect(pathHasSegmentPrefix(path, prefix)).toBe(expected);
  });
});

// ---------------------------------------------------------------- properties

const tdArb = fc.string({ unit: fc.constantFrom(...TD_CHARS), minLength: 1, maxLength: 40 });
const segmentArb = fc
  .string({ unit: fc.constantFrom(...SEGMENT_CHARS), minLength: 1, maxLength: 12 })
  .filter((s) => s !== '.' && s !== '..');
const pathArb = fc.array(segmentArb, { maxLength: 6 }).map((segments) => segments.map((s) => `/${s}`).join(''));
/** A segment that stays valid with any allowed character inserted anywhere (no dot-only results). */
const alnumSegmentArb = fc.string({ unit: fc.constantFrom(...'abcXYZ019'), minLength: 1, maxLength: 10 });

function insertAt(s: string, at: number, c: string): string {
  const i = at % (s.length + 1);
  return `${s.slice(0, i)}${c}${s.slice(i)}`;
}

describe('properties', () => {
  it('(a) a byte 0..255 in the trust domain is accepted iff it is in [a-z0-9.-_]', () => {
    for (let byte = 0; byte < 256; byte++) {
      const c = String.fromCharCode(byte);
      if (c === '/') continue; // ends the trust domain: tested by the path property
      const allowed = TD_CHARS.includes(c);
      fc.assert(
        fc.property(tdArb, fc.nat(), pathArb, (td, at, path) => {
          const mutated = insertAt(td, at, c);
          const input = `spiffe://${mutated}${path}`;
          if (allowed) {
            expect(SpiffeId.parse(input).trustDomain).toBe(mutated);
            expect(TrustDomain.parse(mutated).name).toBe(mutated);
          } else {
            expect(denial(() => SpiffeId.parse(input)).code).toBe('malformed_spiffe_id');
            expect(denial(() => TrustDomain.parse(mutated)).code).toBe('malformed_spiffe_id');
          }
        }),
        { numRuns: 20 },
      );
    }
  });

  it('(a) a byte 0..255 in a path segment is accepted iff it is in [a-zA-Z0-9.-_]', () => {
    for (let byte = 0; byte < 256; byte++) {
      const c = String.fromCharCode(byte);
      if (c === '/') continue; // a separator, not a segment character
      const allowed = SEGMENT_CHARS.includes(c);
      fc.assert(
        fc.property(tdArb, pathArb, alnumSegmentArb, fc.nat(), (td, before, segment, at) => {
          const path = `${before}/${insertAt(segment, at, c)}`;
          const input = `spiffe://${td}${path}`;
          if (allowed) {
            expect(SpiffeId.parse(input).path).toBe(path);
            expect(() => validatePath(path)).not.toThrow();
          } else {
            expect(denial(() => SpiffeId.parse(input)).code).toBe('malformed_spiffe_id');
            expect(denial(() => validatePath(path)).code).toBe('malformed_spiffe_id');
          }
        }),
        { numRuns: 20 },
      );
    }
  });

  it('(b) generated valid IDs round-trip', () => {
    fc.assert(
      fc.property(tdArb, pathArb, (td, path) => {
        const uri = `spiffe://${td}${path}`;
        const id = SpiffeId.parse(uri);
        expect(id.uri).toBe(uri);
        expect(id.trustDomain).toBe(td);
        expect(id.path).toBe(path);
        expect(SpiffeId.parse(id.uri).equals(id)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('(c) random strings never throw anything but a malformed_spiffe_id DenyError with a bounded, control-free message', () => {
    const anyText = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.string({ unit: 'binary', maxLength: 300 }).map((s) => `spiffe://${s}`),
      fc.tuple(tdArb, fc.string({ unit: 'binary-ascii', maxLength: 60 })).map(([td, s]) => `spiffe://${td}/${s}`),
      fc.string({ unit: fc.constantFrom(...'spife:/.aZ%?#@ \t'), maxLength: 40 }),
      fc.string({ unit: 'binary', minLength: 2040, maxLength: 2100 }),
    );
    fc.assert(
      fc.property(anyText, (input) => {
        for (const parse of [() => SpiffeId.parse(input), () => TrustDomain.parse(input), () => validatePath(input)]) {
          try {
            parse();
          } catch (err) {
            expect(err).toBeInstanceOf(DenyError);
            const deny = err as DenyError;
            expect(deny.code).toBe('malformed_spiffe_id');
            expect(deny.message).not.toMatch(/[\u0000-\u001f]/);
            expect(deny.message.length).toBeLessThanOrEqual(200 * 12 + 200);
          }
        }
      }),
      { numRuns: 1500 },
    );
  });

  it('(c) messages quote at most 200 characters of printable input', () => {
    const printable = fc.string({ unit: fc.constantFrom(...'spiffe:/.aZ%?#@ -_1'), maxLength: 3000 });
    fc.assert(
      fc.property(printable, (input) => {
        try {
          SpiffeId.parse(input);
        } catch (err) {
          expect((err as DenyError).message.length).toBeLessThanOrEqual(200 + 220);
        }
      }),
    );
  });

  it('(d) a path matches itself and each of its segment prefixes', () => {
    fc.assert(
      fc.property(pathArb, (path) => {
        expect(pathHasSegmentPrefix(path, path)).toBe(true);
        expect(pathHasSegmentPrefix(path, '')).toBe(true);
        expect(pathHasSegmentPrefix(path, '/')).toBe(true);
        const segments = path.split('/').slice(1);
        for (let n = 1; n <= segments.length; n++) {
          expect(pathHasSegmentPrefix(path, `/${segments.slice(0, n).join('/')}`)).toBe(true);
        }
      }),
    );
  });

  it('(d) a prefix continued by anything but "/" never matches (`/a/b` is not under `/a/bX`, `/a/bX` not under `/a/b`)', () => {
    const httpPath = fc.string({ unit: 'binary', maxLength: 30 }).map((s) => `/${s}`);
    fc.assert(
      fc.property(
        httpPath.filter((p) => !p.endsWith('/')),
        fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }),
        (prefix, more) => {
          expect(pathHasSegmentPrefix(prefix, prefix + more)).toBe(false);
          const continued = prefix + more;
          expect(pathHasSegmentPrefix(continued, prefix)).toBe(prefix === '/' || more.startsWith('/'));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('(d) a prefix ending in "/" matches exactly the paths that start with it', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), fc.string({ maxLength: 20 }), (a, b) => {
        const prefix = `/${a}/`;
        expect(pathHasSegmentPrefix(b, prefix)).toBe(b.startsWith(prefix));
        expect(pathHasSegmentPrefix(prefix + b, prefix)).toBe(true);
      }),
    );
  });
});

describe('quoteUntrusted', () => {
  it('JSON-escapes and truncates', () => {
    expect(quoteUntrusted('a"b\n')).toBe('"a\\"b\\n"');
    expect(quoteUntrusted('x'.repeat(201))).toBe(`"${'x'.repeat(200)}…"`);
    expect(quoteUntrusted('abcdef', 3)).toBe('"abc…"');
  });
});
