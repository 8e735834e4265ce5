/**
 * parseRfc3339 (src/receipt/query.ts) reads years 0000–0099 as written: Date.UTC would take them
 * as 1900–1999, so `until=0099-…` came out later than `since=1950-…`.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { parseReceiptQuery, parseRfc3339 } from '../../src/receipt/query.js';

const YEAR_0 = Date.parse('0000-01-01T00:00:00.000Z'); // -62167219200000

describe('parseRfc3339: years 0000–0099', () => {
  it('reads them as written and agrees with Date over 0000–9999', () => {
    expect(parseRfc3339('0099-12-31T23:59:59Z')).toBe(Date.parse('0099-12-31T23:59:59.000Z'));
    expect(parseRfc3339('0000-01-01T00:00:00Z')).toBe(YEAR_0);
    expect(parseRfc3339('0050-06-15T12:00:00+01:00')).toBe(Date.parse('0050-06-15T11:00:00.000Z'));
    expect(new Date(parseRfc3339('0001-01-01T00:00:00Z') ?? NaN).toISOString()).toBe('0001-01-01T00:00:00.000Z');
    fc.assert(
      fc.property(fc.integer({ min: YEAR_0, max: Date.UTC(9999, 11, 31, 23, 59, 59, 999) }), (ms) => {
        expect(parseRfc3339(new Date(ms).toISOString())).toBe(ms);
      }),
    );
  });

  it('leap days of those years are their own (0000 and 0004 leap; 0100 not), not 1900 and 1904', () => {
    expect(parseRfc3339('0000-02-29T00:00:00Z')).toBe(Date.parse('0000-02-29T00:00:00.000Z'));
    expect(parseRfc3339('0004-02-29T00:00:00Z')).toBe(Date.parse('0004-02-29T00:00:00.000Z'));
    expect(parseRfc3339('0100-02-29T00:00:00Z')).toBeNull();
    expect(parseRfc3339('0099-02-30T00:00:00Z')).toBeNull();
  });

  it('the query API refuses since=1950-… with until=0099-… (until before since)', () => {
    let error: unknown;
    try {
      parseReceiptQuery([
        ['since', '1950-01-01T00:00:00Z'],
        ['until', '0099-01-01T00:00:00Z'],
      ]);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ChioError);
    expect((error as ChioError).toJSON()).toEqual({ code: 'bad_request', message: 'until must be later than since', field: 'until' });
    expect(parseReceiptQuery([['since', '0099-01-01T00:00:00Z'], ['until', '1950-01-01T00:00:00Z']])).toMatchObject({
      since: Date.parse('0099-01-01T00:00:00.000Z'),
      until: Date.parse('1950-01-01T00:00:00.000Z'),
    });
  });
});
