/**
 * SPIFFE IDs and trust domains, parsed exactly per the SPIFFE-ID standard
 * (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md §2, §2.1, §2.2, §2.3) and
 * SPEC §4.
 *
 * Hand-written, never `new URL()`: WHATWG URL parsing strips tabs and newlines, resolves `..` and
 * lower-cases hosts, so it would accept IDs the standard rejects. Rules enforced:
 * - scheme exactly `spiffe` (lower-case) followed by `://`;
 * - trust domain non-empty, at most 255 bytes, characters `[a-z0-9.\-_]` only (so no upper-case,
 *   port, userinfo or percent-encoding);
 * - path empty or `/seg(/seg)*`, segment characters `[a-zA-Z0-9.\-_]`, no empty, `.` or `..`
 *   segment, no trailing `/`; no query, no fragment;
 * - the whole ID at most 2048 bytes.
 *
 * Every rejection is `deny('malformed_spiffe_id', message)`; the message quotes at most
 * {@link QUOTE_LIMIT} characters of the input, JSON-escaped (the input is attacker-controlled and
 * may contain control characters), and names the first fault with its index in the input.
 */
import { deny } from '../errors.js';

/** SPIFFE-ID §2.3: implementations MUST support, and we accept, IDs up to 2048 bytes. */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** SPIFFE-ID §2.3 (RFC 3986 host limit). */
export const MAX_TRUST_DOMAIN_BYTES = 255;
/** At most this many characters of untrusted input are quoted in an error message. */
export const QUOTE_LIMIT = 200;

const SCHEME_PREFIX = 'spiffe://';
const SLASH = 0x2f;

/** Lookup tables indexed by char code (< 128). 1 = allowed. */
const TRUST_DOMAIN_CHARS = charTable('abcdefghijklmnopqrstuvwxyz0123456789.-_');
const PATH_SEGMENT_CHARS = charTable(
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_',
);

function charTable(allowed: string): Uint8Array {
  const table = new Uint8Array(128);
  for (let i = 0; i < allowed.length; i++) table[allowed.charCodeAt(i)] = 1;
  return table;
}

function isAllowed(table: Uint8Array, code: number): boolean {
  return code < 128 && table[code] === 1;
}

/**
 * JSON-quoted rendering of untrusted input for error messages: at most `limit` characters
 * (then `…`), control characters escaped.
 */
export function quoteUntrusted(input: string, limit = QUOTE_LIMIT): string {
  const shown = input.length > limit ? `${input.slice(0, limit)}…` : input;
  return JSON.stringify(shown);
}

/** Schemes are quoted shorter: the whole input is quoted in the same message. */
const SCHEME_QUOTE_LIMIT = 16;

/** `"a"`, or `"\t" (U+0009)` for anything that is not printable ASCII. */
function describeChar(input: string, index: number): string {
  const codePoint = input.codePointAt(index) ?? 0;
  const char = String.fromCodePoint(codePoint);
  const printable = codePoint >= 0x21 && codePoint <= 0x7e;
  const hex = codePoint.toString(16).toUpperCase().padStart(4, '0');
  return printable ? JSON.stringify(char) : `${JSON.stringify(char)} (U+${hex})`;
}

/**
 * The fault in trust domain `input[start, end)`, or undefined if it is valid. The message
 * continues "trust domain …".
 */
function trustDomainFault(input: string, start: number, end: number): string | undefined {
  if (end === start) return 'is empty';
  for (let i = start; i < end; i++) {
    const code = input.charCodeAt(i);
    if (!isAllowed(TRUST_DOMAIN_CHARS, code)) return trustDomainCharFault(input, i);
  }
  if (end - start > MAX_TRUST_DOMAIN_BYTES) {
    return `is ${end - start} bytes long; the maximum is ${MAX_TRUST_DOMAIN_BYTES}`;
  }
  return undefined;
}

function trustDomainCharFault(input: string, i: number): string {
  const at = `at index ${i}`;
  const code = input.charCodeAt(i);
  if (code >= 0x41 && code <= 0x5a) {
    return `contains an upper-case letter ${describeChar(input, i)} ${at}`;
  }
  switch (input[i]) {
    case ':':
      return `contains ":" ${at} (a port is not allowed)`;
    case '@':
      return `contains "@" ${at} (userinfo is not allowed)`;
    case '%':
      return `contains "%" ${at} (percent-encoding is not allowed)`;
    case '?':
      return `contains "?" ${at} (a query is not allowed)`;
    case '#':
      return `contains "#" ${at} (a fragment is not allowed)`;
    default:
      return `contains ${describeChar(input, i)} ${at}; allowed are [a-z0-9.-_]`;
  }
}

/**
 * The fault in path `input[start..]`, or undefined if it is valid. Indices in messages are
 * indices into `input`.
 */
function pathFault(input: string, start: number): string | undefined {
  const end = input.length;
  if (start === end) return undefined;
  if (input.charCodeAt(start) !== SLASH) {
    return `path must start with "/" (found ${describeChar(input, start)} at index ${start})`;
  }
  let segmentStart = start + 1;
  for (let i = segmentStart; i <= end; i++) {
    const code = i === end ? SLASH : input.charCodeAt(i);
    if (code === SLASH) {
      const fault = segmentFault(input, segmentStart, i);
      if (fault !== undefined) return fault;
      segmentStart = i + 1;
    } else if (!isAllowed(PATH_SEGMENT_CHARS, code)) {
      return pathCharFault(input, i);
    }
  }
  return undefined;
}

/** Faults of a whole segment `input[start, end)` whose characters are already valid. */
function segmentFault(input: string, start: number, end: number): string | undefined {
  const length = end - start;
  if (length === 0) {
    return end === input.length
      ? `path ends with "/" at index ${start - 1} (no trailing slash)`
      : `path contains an empty segment ("//") at index ${start - 1}`;
  }
  if (length <= 2 && input.slice(start, end) === '.'.repeat(length)) {
    return `path contains a ${JSON.stringify(input.slice(start, end))} segment at index ${start}`;
  }
  return undefined;
}

function pathCharFault(input: string, i: number): string {
  const at = `at index ${i}`;
  switch (input[i]) {
    case '?':
      return `contains "?" ${at} (a query is not allowed)`;
    case '#':
      return `contains "#" ${at} (a fragment is not allowed)`;
    case '%':
      return `path contains "%" ${at} (percent-encoding is not allowed)`;
    default:
      return `path contains ${describeChar(input, i)} ${at}; allowed are [a-zA-Z0-9.-_]`;
  }
}

/** The fault in the scheme of `input` (which does not start with `spiffe://`). */
function schemeFault(input: string): string {
  const colon = input.indexOf(':');
  if (colon <= 0) return 'does not start with "spiffe://"';
  const scheme = input.slice(0, colon);
  if (scheme === 'spiffe') return 'scheme "spiffe" must be followed by "://"';
  if (scheme.toLowerCase() === 'spiffe') {
    return `scheme ${quoteUntrusted(scheme)} must be lower-case "spiffe"`;
  }
  return `scheme ${quoteUntrusted(scheme, SCHEME_QUOTE_LIMIT)} is not "spiffe"`;
}

function idError(input: string, fault: string) {
  return deny('malformed_spiffe_id', `SPIFFE ID ${quoteUntrusted(input)}: ${fault}`);
}

function requireString(input: unknown, what: string): asserts input is string {
  if (typeof input !== 'string') throw new TypeError(`${what} must be a string`);
}

/** A valid trust domain name. Instances exist only valid. */
export class TrustDomain {
  private constructor(readonly name: string) {}

  /** Parses a bare trust domain name (`example.org`) or a `spiffe://example.org` ID with no path. */
  static parse(input: string): TrustDomain {
    requireString(input, 'trust domain');
    if (input.includes('://')) {
      const id = SpiffeId.parse(input);
      if (id.path !== '') {
        throw idError(input, 'has a path; a trust domain ID has none');
      }
      return new TrustDomain(id.trustDomain);
    }
    const fault = trustDomainFault(input, 0, input.length);
    if (fault !== undefined) {
      throw deny('malformed_spiffe_id', `trust domain ${quoteUntrusted(input)}: ${fault}`);
    }
    return new TrustDomain(input);
  }

  /** `spiffe://<name>` */
  idString(): string {
    return `spiffe://${this.name}`;
  }

  equals(other: TrustDomain): boolean {
    return this.name === other.name;
  }

  toString(): string {
    return this.name;
  }
}

/** A valid SPIFFE ID. Instances exist only valid; `uri` is the exact input that was parsed. */
export class SpiffeId {
  private constructor(
    readonly trustDomain: string,
    readonly path: string,
    private readonly id: string,
  ) {}

  /** Throws DenyError('malformed_spiffe_id') with a message naming what is wrong. */
  static parse(input: string): SpiffeId {
    requireString(input, 'SPIFFE ID');
    if (input.length > MAX_SPIFFE_ID_BYTES) {
      throw idError(input, `longer than ${MAX_SPIFFE_ID_BYTES} bytes (${input.length} characters)`);
    }
    if (!input.startsWith(SCHEME_PREFIX)) throw idError(input, schemeFault(input));
    const tdStart = SCHEME_PREFIX.length;
    const slash = input.indexOf('/', tdStart);
    const tdEnd = slash === -1 ? input.length : slash;
    const tdFault = trustDomainFault(input, tdStart, tdEnd);
    if (tdFault !== undefined) throw idError(input, `trust domain ${tdFault}`);
    const fault = pathFault(input, tdEnd);
    if (fault !== undefined) throw idError(input, fault);
    // Every accepted character is ASCII, so input.length is the byte length checked above.
    return new SpiffeId(input.slice(tdStart, tdEnd), input.slice(tdEnd), input);
  }

  /** Builds `spiffe://<trustDomain><path>` from parts, validating both. */
  static fromParts(trustDomain: TrustDomain, path: string): SpiffeId {
    validatePath(path);
    return SpiffeId.parse(`${trustDomain.idString()}${path}`);
  }

  get uri(): string {
    return this.id;
  }

  toString(): string {
    return this.id;
  }

  equals(other: SpiffeId): boolean {
    return this.trustDomain === other.trustDomain && this.path === other.path;
  }

  /** True when this ID is in trust domain `td`. */
  memberOf(td: TrustDomain): boolean {
    return this.trustDomain === td.name;
  }

  /** Segment-aware: `/a/b` is under `/a` and `/a/b`, never under `/a/bc`. */
  hasPathPrefix(prefix: string): boolean {
    return pathHasSegmentPrefix(this.path, prefix);
  }
}

/**
 * Segment-aware prefix match on SPIFFE or HTTP paths (no character-set assumptions):
 * - `''` and `/` match every path;
 * - a prefix ending in `/` matches the paths that start with it (`/api/` matches `/api/x`, not `/api`);
 * - otherwise the prefix matches itself and the paths continuing with `/` after it
 *   (`/a` matches `/a` and `/a/x`, never `/ab`).
 */
export function pathHasSegmentPrefix(path: string, prefix: string): boolean {
  if (prefix === '' || prefix === '/') return true;
  if (!path.startsWith(prefix)) return false;
  if (path.length === prefix.length) return true;
  return prefix.charCodeAt(prefix.length - 1) === SLASH || path.charCodeAt(prefix.length) === SLASH;
}

/**
 * Validates a SPIFFE path (or a path prefix used in policy, e.g. `/payments/worker`) per
 * SPIFFE-ID §2.2; `''` (trust-domain-only) is valid. Throws DenyError('malformed_spiffe_id').
 */
export function validatePath(path: string): void {
  requireString(path, 'path');
  const maxPath = MAX_SPIFFE_ID_BYTES - SCHEME_PREFIX.length - 1;
  const fault =
    path.length > maxPath
      ? `longer than ${maxPath} bytes (${path.length} characters)`
      : pathFault(path, 0);
  if (fault !== undefined) {
    throw deny('malformed_spiffe_id', `SPIFFE path ${quoteUntrusted(path)}: ${fault}`);
  }
}
