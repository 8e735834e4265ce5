/**
 * A minimal, strict DER reader (ITU-T X.690 §8 basic encoding, §10 DER restrictions), enough to
 * walk an X.509 certificate (RFC 5280 §4.1) and read the extensions X509-SVID validation needs.
 *
 * Strict by construction:
 * - definite lengths only; the indefinite form (0x80) is rejected;
 * - minimal length encoding (no leading zero length octets, long form only for lengths >= 128),
 *   length fields of at most 4 octets;
 * - every element is bounds-checked against its parent; truncation is an error;
 * - the contents of a constructed element (and of an OCTET STRING read with `wrapped`) must be
 *   filled exactly: trailing garbage is an error;
 * - nesting is limited to {@link MAX_DER_DEPTH} levels;
 * - low-tag-number identifiers only (tag numbers 0..30), which covers every field X.509 uses.
 *
 * Errors are {@link DerError}s carrying the byte offset; callers map them to their own failure
 * codes (x509-svid.ts → `malformed_certificate`). Nothing is copied: values are subarrays.
 */

/** Universal tags (identifier octets) used by X.509. */
export const DerTag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OBJECT_IDENTIFIER: 0x06,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

const CONSTRUCTED = 0x20;
const CONTEXT_SPECIFIC = 0x80;
const HIGH_TAG_NUMBER = 0x1f;

/** Identifier octet of a context-specific tag `[n]`. */
export function contextTag(n: number, constructed: boolean): number {
  if (!Number.isInteger(n) || n < 0 || n >= HIGH_TAG_NUMBER) {
    throw new TypeError(`context tag number must be an integer in 0..30, got ${n}`);
  }
  return CONTEXT_SPECIFIC | (constructed ? CONSTRUCTED : 0) | n;
}

/** Maximum nesting depth; an X.509 walk needs about 8. */
export const MAX_DER_DEPTH = 16;
const MAX_LENGTH_OCTETS = 4;
/** Longest time value quoted in an error message. */
const MAX_QUOTED_TIME = 32;
/** Keeps OID sub-identifiers within Number.MAX_SAFE_INTEGER. */
const MAX_SUBIDENTIFIER_BEFORE_SHIFT = Math.floor((Number.MAX_SAFE_INTEGER - 127) / 128);

export class DerError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} (at byte ${offset})`);
    this.name = 'DerError';
  }
}

/** One element: identifier octet, and where its contents are. */
export interface Tlv {
  /** The identifier octet (class, constructed bit and tag number). */
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly offset: number;
  /** Offset of the first contents octet. */
  readonly start: number;
  /** Offset one past the last contents octet. */
  readonly end: number;
  /** 0 for the outermost element. */
  readonly depth: number;
}

export interface BitString {
  /** Number of unused (zero) bits in the last octet, 0..7. */
  readonly unusedBits: number;
  /** The bit octets (without the unused-bits octet). */
  readonly bytes: Uint8Array;
}

const TAG_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(DerTag).map(([name, tag]) => [tag, name.replace(/_/g, ' ')]),
);

/** `SEQUENCE`, `[3] constructed`, `0x45` … for messages. */
export function tagName(tag: number): string {
  const universal = TAG_NAMES.get(tag);
  if (universal !== undefined) return universal;
  if ((tag & 0xc0) === CONTEXT_SPECIFIC) {
    return `[${tag & HIGH_TAG_NUMBER}]${tag & CONSTRUCTED ? ' constructed' : ''}`;
  }
  return `tag 0x${tag.toString(16).padStart(2, '0')}`;
}

export class DerReader {
  constructor(readonly bytes: Uint8Array) {}

  /** The one element that spans the whole input exactly. */
  root(): Tlv {
    const tlv = this.element(0, this.bytes.length, 0);
    if (tlv.end !== this.bytes.length) {
      throw new DerError(`${this.bytes.length - tlv.end} trailing bytes after the outermost element`, tlv.end);
    }
    return tlv;
  }

  /** The elements that exactly fill the contents of constructed element `parent`. */
  children(parent: Tlv): Tlv[] {
    if ((parent.tag & CONSTRUCTED) === 0) {
      throw new DerError(`${tagName(parent.tag)} is primitive; expected a constructed element`, parent.offset);
    }
    const out: Tlv[] = [];
    for (let offset = parent.start; offset < parent.end; ) {
      const child = this.element(offset, parent.end, parent.depth + 1);
      out.push(child);
      offset = child.end;
    }
    return out;
  }

  /**
   * The one element encoded inside a primitive element's contents (an extension's `extnValue`
   * OCTET STRING wraps the DER of the extension value); it must fill the contents exactly.
   */
  wrapped(outer: Tlv): Tlv {
    const inner = this.element(outer.start, outer.end, outer.depth + 1);
    if (inner.end !== outer.end) {
      throw new DerError(`${outer.end - inner.end} trailing bytes inside ${tagName(outer.tag)}`, inner.end);
    }
    return inner;
  }

  /** Throws unless `tlv` has identifier octet `tag`; `what` names the field in the message. */
  expect(tlv: Tlv | undefined, tag: number, what: string, parentEnd?: number): Tlv {
    if (tlv === undefined) {
      throw new DerError(`missing ${what} (${tagName(tag)})`, parentEnd ?? this.bytes.length);
    }
    if (tlv.tag !== tag) {
      throw new DerError(`${what}: expected ${tagName(tag)}, found ${tagName(tlv.tag)}`, tlv.offset);
    }
    return tlv;
  }

  contents(tlv: Tlv): Uint8Array {
    return this.bytes.subarray(tlv.start, tlv.end);
  }

  /** DER BOOLEAN: one octet, 0x00 or 0xFF. */
  boolean(tlv: Tlv): boolean {
    this.expect(tlv, DerTag.BOOLEAN, 'BOOLEAN');
    const value = tlv.end - tlv.start === 1 ? this.bytes[tlv.start] : undefined;
    if (value !== 0x00 && value !== 0xff) {
      throw new DerError('BOOLEAN must be one octet 0x00 or 0xFF', tlv.offset);
    }
    return value === 0xff;
  }

  /** OBJECT IDENTIFIER in dotted form, e.g. `2.5.29.17`. Rejects non-minimal sub-identifiers. */
  oid(tlv: Tlv): string {
    this.expect(tlv, DerTag.OBJECT_IDENTIFIER, 'OBJECT IDENTIFIER');
    if (tlv.end === tlv.start) throw new DerError('empty OBJECT IDENTIFIER', tlv.offset);
    const arcs: number[] = [];
    let value = 0;
    let atSubidStart = true;
    for (let i = tlv.start; i < tlv.end; i++) {
      const byte = this.bytes[i] ?? 0;
      if (atSubidStart && byte === 0x80) {
        throw new DerError('OBJECT IDENTIFIER sub-identifier has a leading 0x80 octet', i);
      }
      if (value > MAX_SUBIDENTIFIER_BEFORE_SHIFT) {
        throw new DerError('OBJECT IDENTIFIER sub-identifier too large', i);
      }
      value = value * 128 + (byte & 0x7f);
      atSubidStart = (byte & 0x80) === 0;
      if (atSubidStart) {
        if (arcs.length === 0) arcs.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
        else arcs.push(value);
        value = 0;
      }
    }
    if (!atSubidStart) throw new DerError('OBJECT IDENTIFIER ends inside a sub-identifier', tlv.end);
    return arcs.join('.');
  }

  /** DER BIT STRING: unused-bits octet 0..7 (0 when empty), unused bits zero. */
  bitString(tlv: Tlv): BitString {
    this.expect(tlv, DerTag.BIT_STRING, 'BIT STRING');
    if (tlv.end === tlv.start) throw new DerError('BIT STRING has no unused-bits octet', tlv.offset);
    const unusedBits = this.bytes[tlv.start] ?? 0;
    const bytes = this.bytes.subarray(tlv.start + 1, tlv.end);
    if (unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
      throw new DerError(`BIT STRING has an invalid unused-bits count ${unusedBits}`, tlv.start);
    }
    const last = bytes[bytes.length - 1] ?? 0;
    if ((last & ((1 << unusedBits) - 1)) !== 0) {
      throw new DerError('BIT STRING has non-zero unused bits', tlv.end - 1);
    }
    return { unusedBits, bytes };
  }

  /**
   * UTCTime `YYMMDDHHMMSSZ` (YY < 50 → 20YY) or GeneralizedTime `YYYYMMDDHHMMSSZ`, the only forms
   * RFC 5280 §4.1.2.5 allows, as ms since the epoch.
   */
  time(tlv: Tlv): number {
    const length = tlv.end - tlv.start;
    const text = length <= MAX_QUOTED_TIME ? String.fromCharCode(...this.contents(tlv)) : '';
    let digits: string;
    if (tlv.tag === DerTag.UTC_TIME && /^\d{12}Z$/.test(text)) {
      const yy = Number(text.slice(0, 2));
      digits = `${yy < 50 ? '20' : '19'}${text.slice(0, 12)}`;
    } else if (tlv.tag === DerTag.GENERALIZED_TIME && /^\d{14}Z$/.test(text)) {
      digits = text.slice(0, 14);
    } else {
      throw new DerError(`invalid time ${JSON.stringify(text)} (${tagName(tlv.tag)}, ${length} bytes)`, tlv.offset);
    }
    const [year, month, day, hour, minute, second] = [0, 4, 6, 8, 10, 12].map((at, k) =>
      Number(digits.slice(at, k === 0 ? 4 : at + 2)),
    ) as [number, number, number, number, number, number];
    const ms = Date.UTC(year, month - 1, day, hour, minute, second);
    const back = new Date(ms);
    if (
      back.getUTCFullYear() !== year ||
      back.getUTCMonth() !== month - 1 ||
      back.getUTCDate() !== day ||
      back.getUTCHours() !== hour ||
      back.getUTCMinutes() !== minute ||
      back.getUTCSeconds() !== second
    ) {
      throw new DerError(`invalid calendar time ${JSON.stringify(text)}`, tlv.offset);
    }
    return ms;
  }

  /** Reads one element at `offset` that must end by `limit`. */
  private element(offset: number, limit: number, depth: number): Tlv {
    if (depth > MAX_DER_DEPTH) throw new DerError(`nesting deeper than ${MAX_DER_DEPTH} levels`, offset);
    if (offset + 2 > limit) throw new DerError('truncated element header', offset);
    const tag = this.bytes[offset] ?? 0;
    if ((tag & HIGH_TAG_NUMBER) === HIGH_TAG_NUMBER) {
      throw new DerError('high-tag-number identifiers are not supported', offset);
    }
    const first = this.bytes[offset + 1] ?? 0;
    let length = first;
    let start = offset + 2;
    if (first === 0x80) throw new DerError('indefinite length is not DER', offset + 1);
    if (first > 0x80) {
      const count = first & 0x7f;
      if (count > MAX_LENGTH_OCTETS) throw new DerError(`length field of ${count} octets is too long`, offset + 1);
      if (start + count > limit) throw new DerError('truncated length field', offset + 1);
      if (this.bytes[start] === 0) throw new DerError('non-minimal length encoding (leading zero)', start);
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + (this.bytes[start + i] ?? 0);
      if (length < 0x80) throw new DerError('non-minimal length encoding (long form for a short length)', offset + 1);
      start += count;
    }
    const end = start + length;
    if (end > limit) {
      const remaining = limit - start;
      throw new DerError(`truncated: ${tagName(tag)} declares ${length} content bytes, ${remaining} remain`, offset);
    }
    return { tag, offset, start, end, depth };
  }
}
