/**
 * CommitTimes (src/receipt/pg/commit-times.ts): the commit time of the oldest receipt not shipped
 * yet, at a bounded resolution and in bounded memory, never understated. Needs no PostgreSQL.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CommitTimes } from '../../src/receipt/pg/commit-times.js';

describe('CommitTimes', () => {
  it('names the commit time of the first receipt after the shipped one', () => {
    const t = new CommitTimes({ resolutionMs: 100 });
    t.committed(1, 1_000);
    t.committed(11, 2_000);
    t.committed(21, 3_000);
    expect(t.oldestAfter(0)).toBe(1_000);
    expect(t.oldestAfter(9)).toBe(1_000);
    expect(t.oldestAfter(10)).toBe(2_000);
    expect(t.oldestAfter(25)).toBe(3_000);
    t.clear();
    expect(t.oldestAfter(30)).toBeNull();
  });

  it('a batch committed within the resolution of the last mark keeps the earlier time (overstated by less than it)', () => {
    const t = new CommitTimes({ resolutionMs: 100 });
    t.committed(1, 1_000);
    t.committed(5, 1_099);
    t.committed(9, 1_100);
    expect(t.size).toBe(2);
    expect(t.oldestAfter(4)).toBe(1_000);
    expect(t.oldestAfter(8)).toBe(1_100);
  });

  it('a batch that does not continue after the last mark adds nothing', () => {
    const t = new CommitTimes({ resolutionMs: 0 });
    t.committed(10, 1_000);
    t.committed(10, 2_000);
    t.committed(3, 3_000);
    expect(t.size).toBe(1);
    expect(t.oldestAfter(0)).toBe(1_000);
  });

  it('rejects a bound below two marks', () => {
    expect(() => new CommitTimes({ maxMarks: 1 })).toThrow(new TypeError('CommitTimes: maxMarks must be at least 2'));
  });

  it('holds at most maxMarks, and what it reports is never younger than the truth (within the resolution while nothing was halved)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ size: fc.integer({ min: 1, max: 20 }), gap: fc.integer({ min: 0, max: 300 }) }), { minLength: 1, maxLength: 300 }),
        fc.oneof(fc.integer({ min: 2, max: 16 }), fc.constant(1_000)),
        fc.integer({ min: 0, max: 150 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (batches, maxMarks, resolutionMs, where) => {
          const t = new CommitTimes({ maxMarks, resolutionMs });
          const truth: number[] = []; // truth[seq] = commit time
          let seq = 1;
          let ms = 0;
          for (const b of batches) {
            ms += b.gap;
            t.committed(seq, ms);
            for (let i = 0; i < b.size; i++) truth[seq + i] = ms;
            seq += b.size;
            expect(t.size).toBeLessThanOrEqual(maxMarks);
          }
          const shipped = Math.min(seq - 2, Math.floor(where * (seq - 1))); // 0 … last seq - 1: something lags
          const oldest = t.oldestAfter(shipped);
          const real = truth[shipped + 1] as number;
          expect(oldest).not.toBeNull();
          expect(oldest as number).toBeLessThanOrEqual(real);
          // without a halving (300 batches at most < 1,000 marks), at most one resolution older
          if (maxMarks === 1_000) expect(real - (oldest as number)).toBeLessThan(Math.max(resolutionMs, 1));
        },
      ),
    );
  });
});
