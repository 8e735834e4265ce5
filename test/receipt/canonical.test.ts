import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jcs, jcsBytes } from '../../src/receipt/canonical.js';

describe('jcs (RFC 8785)', () => {
  it('sorts members by UTF-16 code units and drops whitespace', () => {
    expect(jcs({ b: 1, a: [true, null, 'x'], A: { d: 2, c: 1 } })).toBe('{"A":{"c":1,"d":2},"a":[true,null,"x"],"b":1}');
    // RFC 8785 §3.2.3 sorts by UTF-16 code units: U+10000 (as \ud800\udc00) before U+FB33
    expect(jcs({ '\ufb33': 1, '\u{10000}': 2, '\u0080': 3 })).toBe('{"\u0080":3,"\u{10000}":2,"\ufb33":1}');
  });

  it('serializes numbers and strings as ECMAScript does (RFC 8785 §3.2.2)', () => {
    expect(jcs([1e21, 1e-7, -0, 0.1, 333333333.3333333, 9007199254740991])).toBe(
      '[1e+21,1e-7,0,0.1,333333333.3333333,9007199254740991]',
    );
    expect(jcs('\u0000\u001f"\\/\u2028é')).toBe('"\\u0000\\u001f\\"\\\\/\u2028é"');
  });

  it('refuses what JSON cannot carry, as a TypeError', () => {
    expect(() => jcs(undefined)).toThrow(new TypeError('value of type undefined cannot be canonicalized as JSON'));
    expect(() => jcs({ n: Number.NaN })).toThrow(new TypeError('value cannot be canonicalized as JSON: NaN is not allowed'));
    expect(() => jcs([Infinity])).toThrow(TypeError);
  });

  it('round-trips: parsing the JCS text gives the value back, and JCS is idempotent', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = jcs(value);
        expect(jcs(JSON.parse(text))).toBe(text);
        expect(jcsBytes(value).equals(Buffer.from(text, 'utf8'))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
