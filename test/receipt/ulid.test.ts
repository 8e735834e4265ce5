import fc from 'fast-check';
import { decodeTime, isValid } from 'ulid';
import { describe, expect, it } from 'vitest';
import { MonotonicUlid, ULID_TIME_MAX } from '../../src/receipt/ulid.js';

const ULID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

/** The 80-bit random part as a BigInt. */
const randomPart = (id: string): bigint => {
  let n = 0n;
  for (const c of id.slice(10)) n = n * 32n + BigInt('0123456789ABCDEFGHJKMNPQRSTVWXYZ'.indexOf(c));
  return n;
};

describe('MonotonicUlid', () => {
  it('makes valid ULIDs whose time part decodes (ulid package as oracle) to the given time (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: ULID_TIME_MAX }), (now) => {
        const id = new MonotonicUlid().next(now);
        expect(id).toMatch(ULID);
        expect(isValid(id)).toBe(true);
        expect(decodeTime(id)).toBe(now);
      }),
      { numRuns: 500 },
    );
  });

  it('within one millisecond, and when the clock steps back, increments the random part by one (sorted, unique)', () => {
    const u = new MonotonicUlid();
    const ids = [1000, 1000, 1000, 999, 1001, 1001].map((t) => u.next(t));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.slice(0, 4).map((id) => decodeTime(id))).toEqual([1000, 1000, 1000, 1000]);
    expect(randomPart(ids[1]!) - randomPart(ids[0]!)).toBe(1n);
    expect(randomPart(ids[3]!) - randomPart(ids[2]!)).toBe(1n);
    expect(decodeTime(ids[4]!)).toBe(1001);
  });

  it('carries the increment from the low 40 bits into the high ones, and refuses to overflow 80 bits', () => {
    const lowMax = new MonotonicUlid((buf) => buf.fill(0).fill(0xff, 5, 10)); // hi = 0, lo = 2^40 − 1
    const a = lowMax.next(5);
    const b = lowMax.next(5);
    expect(randomPart(b) - randomPart(a)).toBe(1n);
    expect(b.slice(10)).toBe('0000000100000000');
    const allMax = new MonotonicUlid((buf) => buf.fill(0xff));
    expect(allMax.next(5).slice(10)).toBe('ZZZZZZZZZZZZZZZZ');
    expect(() => allMax.next(5)).toThrow(new RangeError('ULID random part overflow: more than 2^80 ids in one millisecond'));
  });

  it('draws fresh randomness for each new millisecond from a pool refilled in large blocks', () => {
    let fills = 0;
    let state = 0x9e3779b9;
    const u = new MonotonicUlid((buf) => {
      fills++;
      for (let i = 0; i < buf.length; i++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        buf[i] = state & 0xff;
      }
    });
    const ids = Array.from({ length: 1000 }, (_, i) => u.next(i));
    expect(new Set(ids.map((id) => id.slice(10))).size).toBe(1000); // 10 fresh bytes per millisecond
    expect(fills).toBe(3); // 409 ids per 4 KiB block
  });

  it('refuses a time a ULID cannot hold', () => {
    const u = new MonotonicUlid();
    for (const bad of [-1, 1.5, Number.NaN, ULID_TIME_MAX + 1, Number.POSITIVE_INFINITY]) {
      expect(() => u.next(bad)).toThrow(new RangeError(`a ULID cannot hold the time ${String(bad)}`));
    }
  });
});
