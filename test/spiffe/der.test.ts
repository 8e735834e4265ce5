/**
 * Tests for src/spiffe/der.ts: strict DER framing (X.690 §8.1, §10.1), primitive decoders, and
 * a fast-check property that random input only ever raises DerError.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { contextTag, DerError, DerReader, DerTag, MAX_DER_DEPTH, tagName, type Tlv } from '../../src/spiffe/der.js';
import { derTlv } from '../helpers/test-ca.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function derError(fn: () => unknown): DerError {
  try {
    fn();
  } catch (err) {
    if (err instanceof DerError) return err;
    throw err;
  }
  throw new Error('expected a DerError, nothing was thrown');
}

/** Walks every constructed element recursively; returns the number of elements seen. */
function walkAll(r: DerReader, tlv: Tlv): number {
  if ((tlv.tag & 0x20) === 0) return 1;
  return 1 + r.children(tlv).reduce((n, child) => n + walkAll(r, child), 0);
}

describe('framing', () => {
  it('reads short- and long-form lengths', () => {
    const short = new DerReader(hex('04 03 010203'));
    expect(short.root()).toEqual({ tag: 0x04, offset: 0, start: 2, end: 5, depth: 0 });
    const body = Buffer.alloc(200, 7);
    const long = new DerReader(derTlv(0x04, body));
    const root = long.root();
    expect(root).toEqual({ tag: 0x04, offset: 0, start: 3, end: 203, depth: 0 });
    expect(Buffer.from(long.contents(root))).toEqual(body);
    const longer = new DerReader(derTlv(0x04, Buffer.alloc(300)));
    expect(longer.root()).toEqual({ tag: 0x04, offset: 0, start: 4, end: 304, depth: 0 });
  });

  it('lists the children of a constructed element with depth', () => {
    const r = new DerReader(hex('30 06 0101ff 020105'));
    const children = r.children(r.root());
    expect(children).toEqual([
      { tag: 0x01, offset: 2, start: 4, end: 5, depth: 1 },
      { tag: 0x02, offset: 5, start: 7, end: 8, depth: 1 },
    ]);
    expect(r.boolean(children[0] as Tlv)).toBe(true);
  });

  it.each([
    ['indefinite length', '30 80 0000', 'indefinite length is not DER (at byte 1)'],
    ['non-minimal long form', '04 81 05 0102030405', 'non-minimal length encoding (long form for a short length) (at byte 1)'],
    ['leading zero length octet', '04 82 0080' + '00'.repeat(128), 'non-minimal length encoding (leading zero) (at byte 2)'],
    ['5 length octets', '04 85 0100000000', 'length field of 5 octets is too long (at byte 1)'],
    ['reserved 0xff length', '04 ff', 'length field of 127 octets is too long (at byte 1)'],
    ['empty input', '', 'truncated element header (at byte 0)'],
    ['lone identifier', '30', 'truncated element header (at byte 0)'],
    ['truncated length field', '04 82 01', 'truncated length field (at byte 1)'],
    ['truncated contents', '04 05 0102', 'truncated: OCTET STRING declares 5 content bytes, 2 remain (at byte 0)'],
    ['trailing garbage', '05 00 00', '1 trailing bytes after the outermost element (at byte 2)'],
    ['high tag number', '1f 81 00 00', 'high-tag-number identifiers are not supported (at byte 0)'],
  ])('rejects %s', (_what, input, message) => {
    expect(derError(() => new DerReader(hex(input)).root()).message).toBe(message);
  });

  it('rejects trailing bytes and a child that overruns its parent', () => {
    const r = new DerReader(hex('30 03 04 05 01 0203 04'));
    expect(derError(() => r.root()).message).toBe('3 trailing bytes after the outermost element (at byte 5)');
    const r2 = new DerReader(hex('30 03 0405 01'));
    expect(derError(() => r2.children(r2.root())).message).toBe(
      'truncated: OCTET STRING declares 5 content bytes, 1 remain (at byte 2)',
    );
  });

  it('refuses to list children of a primitive element', () => {
    const r = new DerReader(hex('04 00'));
    expect(derError(() => r.children(r.root())).message).toBe('OCTET STRING is primitive; expected a constructed element (at byte 0)');
  });

  it(`limits nesting to ${MAX_DER_DEPTH} levels`, () => {
    const nest = (levels: number): Buffer => {
      let der = hex('05 00');
      for (let i = 0; i < levels; i++) der = derTlv(0x30, der);
      return der;
    };
    const ok = new DerReader(nest(MAX_DER_DEPTH));
    expect(walkAll(ok, ok.root())).toBe(MAX_DER_DEPTH + 1);
    const deep = new DerReader(nest(MAX_DER_DEPTH + 1));
    expect(derError(() => walkAll(deep, deep.root())).message).toBe(`nesting deeper than ${MAX_DER_DEPTH} levels (at byte ${2 * (MAX_DER_DEPTH + 1)})`);
  });

  it('reads an element wrapped in an OCTET STRING, exactly', () => {
    const r = new DerReader(hex('04 03 0101ff'));
    const inner = r.wrapped(r.root());
    expect(inner).toEqual({ tag: 0x01, offset: 2, start: 4, end: 5, depth: 1 });
    const extra = new DerReader(hex('04 04 0101ff 00'));
    expect(derError(() => extra.wrapped(extra.root())).message).toBe('1 trailing bytes inside OCTET STRING (at byte 5)');
  });

  it('expect() names the field', () => {
    const r = new DerReader(hex('02 01 05'));
    expect(r.expect(r.root(), DerTag.INTEGER, 'serial').tag).toBe(0x02);
    expect(derError(() => r.expect(r.root(), DerTag.SEQUENCE, 'Certificate')).message).toBe(
      'Certificate: expected SEQUENCE, found INTEGER (at byte 0)',
    );
    expect(derError(() => r.expect(undefined, DerTag.SEQUENCE, 'validity', 3)).message).toBe('missing validity (SEQUENCE) (at byte 3)');
  });
});

describe('primitives', () => {
  it('BOOLEAN is one octet 0x00 or 0xFF', () => {
    expect(new DerReader(hex('01 01 00')).boolean({ tag: 1, offset: 0, start: 2, end: 3, depth: 0 })).toBe(false);
    for (const bad of ['01 01 01', '01 00', '01 02 ffff']) {
      const r = new DerReader(hex(bad));
      expect(derError(() => r.boolean(r.root())).message).toBe('BOOLEAN must be one octet 0x00 or 0xFF (at byte 0)');
    }
  });

  it.each([
    ['06 03 551d11', '2.5.29.17'],
    ['06 08 2a8648ce3d040302', '1.2.840.10045.4.3.2'],
    ['06 01 00', '0.0'],
    ['06 02 8837', '2.999'],
    ['06 09 2b0601040182371402', '1.3.6.1.4.1.311.20.2'],
  ])('OID %s → %s', (input, dotted) => {
    const r = new DerReader(hex(input));
    expect(r.oid(r.root())).toBe(dotted);
  });

  it.each([
    ['06 00', 'empty OBJECT IDENTIFIER (at byte 0)'],
    ['06 02 8001', 'OBJECT IDENTIFIER sub-identifier has a leading 0x80 octet (at byte 2)'],
    ['06 02 5581', 'OBJECT IDENTIFIER ends inside a sub-identifier (at byte 4)'],
    ['06 0a 2a ffffffffffffffff7f', 'OBJECT IDENTIFIER sub-identifier too large (at byte 10)'],
  ])('rejects OID %s', (input, message) => {
    const r = new DerReader(hex(input));
    expect(derError(() => r.oid(r.root())).message).toBe(message);
  });

  it('BIT STRING', () => {
    const r = new DerReader(hex('03 02 0780'));
    const bits = r.bitString(r.root());
    expect(bits.unusedBits).toBe(7);
    expect(Buffer.from(bits.bytes)).toEqual(hex('80'));
    const empty = new DerReader(hex('03 01 00'));
    expect(empty.bitString(empty.root()).bytes.length).toBe(0);
  });

  it.each([
    ['03 00', 'BIT STRING has no unused-bits octet (at byte 0)'],
    ['03 02 0880', 'BIT STRING has an invalid unused-bits count 8 (at byte 2)'],
    ['03 01 01', 'BIT STRING has an invalid unused-bits count 1 (at byte 2)'],
    ['03 02 0181', 'BIT STRING has non-zero unused bits (at byte 3)'],
  ])('rejects BIT STRING %s', (input, message) => {
    const r = new DerReader(hex(input));
    expect(derError(() => r.bitString(r.root())).message).toBe(message);
  });

  const time = (tag: number, text: string): { r: DerReader; tlv: Tlv } => {
    const r = new DerReader(derTlv(tag, Buffer.from(text, 'latin1')));
    return { r, tlv: r.root() };
  };

  it.each([
    [DerTag.UTC_TIME, '240101000000Z', '2024-01-01T00:00:00.000Z'],
    [DerTag.UTC_TIME, '491231235959Z', '2049-12-31T23:59:59.000Z'],
    [DerTag.UTC_TIME, '500101000000Z', '1950-01-01T00:00:00.000Z'],
    [DerTag.GENERALIZED_TIME, '20500101000000Z', '2050-01-01T00:00:00.000Z'],
    [DerTag.GENERALIZED_TIME, '20240229120000Z', '2024-02-29T12:00:00.000Z'],
  ])('time %s %s', (tag, text, iso) => {
    const { r, tlv } = time(tag, text);
    expect(new Date(r.time(tlv)).toISOString()).toBe(iso);
  });

  it.each([
    [DerTag.UTC_TIME, '2401010000Z', 'invalid time "2401010000Z" (UTC TIME, 11 bytes) (at byte 0)'],
    [DerTag.UTC_TIME, '240101000000+0100', 'invalid time "240101000000+0100" (UTC TIME, 17 bytes) (at byte 0)'],
    [DerTag.UTC_TIME, '20240101000000Z', 'invalid time "20240101000000Z" (UTC TIME, 15 bytes) (at byte 0)'],
    [DerTag.GENERALIZED_TIME, '20240101000000.5Z', 'invalid time "20240101000000.5Z" (GENERALIZED TIME, 17 bytes) (at byte 0)'],
    [DerTag.GENERALIZED_TIME, '20230229000000Z', 'invalid calendar time "20230229000000Z" (at byte 0)'],
    [DerTag.GENERALIZED_TIME, '20231301000000Z', 'invalid calendar time "20231301000000Z" (at byte 0)'],
    [DerTag.GENERALIZED_TIME, '20230101240000Z', 'invalid calendar time "20230101240000Z" (at byte 0)'],
    [DerTag.GENERALIZED_TIME, '00500101000000Z', 'invalid calendar time "00500101000000Z" (at byte 0)'],
    [DerTag.INTEGER, '240101000000Z', 'invalid time "240101000000Z" (INTEGER, 13 bytes) (at byte 0)'],
  ])('rejects time %s %s', (tag, text, message) => {
    const { r, tlv } = time(tag, text);
    expect(derError(() => r.time(tlv)).message).toBe(message);
  });

  it('names tags', () => {
    expect(tagName(0x30)).toBe('SEQUENCE');
    expect(tagName(contextTag(3, true))).toBe('[3] constructed');
    expect(tagName(contextTag(6, false))).toBe('[6]');
    expect(tagName(0x13)).toBe('tag 0x13');
    expect(() => contextTag(31, false)).toThrow(TypeError);
  });
});

describe('real certificates', () => {
  it('walks every fixture certificate completely', () => {
    const index = JSON.parse(readFileSync('test/fixtures/envoy/pki/index.json', 'utf8')) as Record<string, { file: string }>;
    for (const { file } of Object.values(index)) {
      const der = new X509Certificate(readFileSync(`test/fixtures/envoy/${file}`)).raw;
      const r = new DerReader(der);
      expect(walkAll(r, r.root())).toBeGreaterThan(20);
    }
  });

  it('random bytes and mutated certificates only ever raise DerError', () => {
    const der = new X509Certificate(readFileSync('test/fixtures/envoy/pki/svid-frontend.pem')).raw;
    const mutated = fc
      .tuple(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 }), fc.nat(der.length))
      .map(([at, byte, cut]) => {
        const copy = Buffer.from(der);
        copy[at] = byte;
        return copy.subarray(0, Math.max(cut, at + 1));
      });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated), (bytes) => {
        const r = new DerReader(bytes);
        try {
          walkAll(r, r.root());
        } catch (err) {
          expect(err).toBeInstanceOf(DerError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
