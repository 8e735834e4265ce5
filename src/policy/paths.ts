/**
 * Segment-aware path-prefix index for policy matching (SPEC §5: "`path_prefixes` match whole
 * segments"). The semantics are exactly those of `pathHasSegmentPrefix` (src/spiffe/id.ts):
 * - `/` matches every path;
 * - a prefix ending in `/` matches the paths that start with it (`/api/` matches `/api/x`, not `/api`);
 * - any other prefix matches itself and the paths continuing with `/` after it
 *   (`/v1/transfers` matches `/v1/transfers/9`, never `/v1/transfersX`).
 *
 * A {@link SegmentTrie} stores a value per prefix; `visitPrefixesOf(path)` visits the values of every
 * stored prefix that matches `path`, in O(number of segments of `path`), however many prefixes
 * are stored.
 */
import { deny } from '../errors.js';

/** RFC 3986 §2.3 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function isUnreserved(code: number): boolean {
  return (
    (code >= 0x30 && code <= 0x39) ||
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x61 && code <= 0x7a) ||
    code === 0x2d ||
    code === 0x2e ||
    code === 0x5f ||
    code === 0x7e
  );
}

/** The value of a hex digit's char code (`0-9`, `a-f`, `A-F`). */
function hexDigit(code: number): number {
  return code <= 0x39 ? code - 0x30 : (code | 0x20) - 0x57;
}

/**
 * Percent-encoding normalization (RFC 3986 §6.2.2.1–2), in one pass (a regex replace with a callback
 * costs ~1 s on a 4 MiB path of `%2e`): escapes of unreserved characters decoded, the hex of the
 * others upper-cased (`%3a` is `%3A`). Every `%` is followed by two hex digits (checked before).
 */
function canonicalEscapes(p: string): string {
  let out = '';
  let from = 0;
  for (let i = p.indexOf('%'); i !== -1; i = p.indexOf('%', i + 1)) {
    const hi = p.charCodeAt(i + 1);
    const lo = p.charCodeAt(i + 2);
    const code = hexDigit(hi) * 16 + hexDigit(lo);
    if (isUnreserved(code)) {
      out += p.slice(from, i) + String.fromCharCode(code);
    } else if (hi >= 0x61 || lo >= 0x61) {
      out += p.slice(from, i) + p.slice(i, i + 3).toUpperCase();
    } else {
      continue;
    }
    from = i + 3;
    i += 2;
  }
  return from === 0 ? p : out + p.slice(from);
}

/**
 * A character a path carries percent-encoded (RFC 3986 §3.3: pchar = unreserved / pct-encoded /
 * sub-delims / ":" / "@", and "/" between segments): non-ASCII, space and controls, `\`, `"`, `<`…
 */
const NOT_RAW_IN_PATH = /[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]/;

/** Each ASCII character as a path carries it: itself, or its upper-case escape. */
const ASCII_SPELLING: readonly string[] = Array.from({ length: 128 }, (_, c) => {
  const ch = String.fromCharCode(c);
  return NOT_RAW_IN_PATH.test(ch) ? `%${c.toString(16).toUpperCase().padStart(2, '0')}` : ch;
});

/**
 * Percent-encodes (UTF-8, upper-case hex) every character a path does not carry raw: ASCII by a
 * table, runs of other characters by `encodeURIComponent` (a regex and a call per character took
 * ~18 ms for 60 KiB of `"`).
 */
function encodeNotRaw(p: string): string {
  let out = '';
  let i = 0;
  while (i < p.length) {
    const c = p.charCodeAt(i);
    if (c < 128) {
      out += ASCII_SPELLING[c] as string;
      i++;
      continue;
    }
    let end = i + 1;
    while (end < p.length && p.charCodeAt(end) >= 128) end++;
    try {
      out += encodeURIComponent(p.slice(i, end));
    } catch {
      throw deny('malformed_request', 'request path holds a lone UTF-16 surrogate');
    }
    i = end;
  }
  return out;
}

/** The canonical spelling of a path chio matches on (also what a policy path must be written as). */
export function canonicalPathSpelling(p: string): string {
  const escaped = p.includes('%') ? canonicalEscapes(p) : p;
  return NOT_RAW_IN_PATH.test(escaped) ? encodeNotRaw(escaped) : escaped;
}

/** An upper-case ASCII letter outside `%XX` escapes (whose hex is upper case by rule). */
export function hasUpperCase(path: string): boolean {
  return /[A-Z]/.test(path.includes('%') ? path.replace(/%[0-9A-F]{2}/g, '') : path);
}

/** `path` lower-cased but for its `%XX` escapes (upper-case hex by rule). */
export function lowerOutsideEscapes(path: string): string {
  return path.includes('%') ? path.replace(/[^%]+|%[0-9A-F]{2}/g, (s) => (s.startsWith('%') ? s : s.toLowerCase())) : path.toLowerCase();
}

/** Why `value` cannot be an HTTP path (`what` = "a path") or path prefix, or null when it can. */
export function httpPathFault(value: string, what = 'a path prefix'): string | null {
  if (!value.startsWith('/')) return `${what} must start with "/"`;
  if (value.includes('?') || value.includes('#')) return `${what} must not contain "?" or "#"`;
  if (/[\u0000-\u0020\u007f]/.test(value)) return `${what} must not contain spaces or control characters`;
  return null;
}

/**
 * Why `value` (valid per {@link httpPathFault}) can never equal a request path as policy matches it,
 * or null. Request paths are normalized (src/check/envoy.ts `normalizePath`: `//` merged,
 * dot-segments removed, escapes of unreserved characters decoded, the others in upper case,
 * characters a path does not carry raw encoded, a bad escape is malformed), so a
 * prefix written otherwise would silently match nothing: a rule meant to restrict would not govern
 * its requests, a tool meant to be blocked would not be resolved. Fail at load instead.
 */
export function unmatchablePathFault(value: string, what = 'a path prefix'): string | null {
  for (let i = value.indexOf('%'); i !== -1; i = value.indexOf('%', i + 1)) {
    const hex = value.slice(i + 1, i + 3);
    if (!/^[0-9a-fA-F]{2}$/.test(hex)) return `${what} has an invalid percent-encoding at index ${i}`;
    const ch = String.fromCharCode(parseInt(hex, 16));
    if (/^[A-Za-z0-9._~-]$/.test(ch)) {
      return `${what} must not percent-encode ${JSON.stringify(ch)} (${JSON.stringify(`%${hex}`)}): requests are matched decoded; write ${JSON.stringify(ch)}`;
    }
    if (/^[!$&'()*+,;=:@]$/.test(ch)) {
      return `${what} must not percent-encode ${JSON.stringify(ch)} (${JSON.stringify(`%${hex}`)}): a path carries it raw, and a request spelling it encoded is read both ways; write ${JSON.stringify(ch)}`;
    }
    if (hex !== hex.toUpperCase()) {
      return `${what} must write percent-encodings in upper case (requests are matched so, RFC 3986 §6.2.2.1): write ${JSON.stringify(`%${hex.toUpperCase()}`)}, not ${JSON.stringify(`%${hex}`)}`;
    }
  }
  const raw = NOT_RAW_IN_PATH.exec(value);
  if (raw !== null) {
    const ch = String.fromCodePoint(value.codePointAt(raw.index) ?? 0);
    let spelled: string;
    try {
      spelled = encodeNotRaw(ch);
    } catch {
      return `${what} holds a lone UTF-16 surrogate at index ${raw.index}`;
    }
    return `${what} must percent-encode ${JSON.stringify(ch)} (requests are matched with it encoded): write ${JSON.stringify(spelled)}`;
  }
  if (value.includes(';')) {
    return `${what} must not contain ";": path parameters are read both with and without them (Tomcat, Spring), so a request to it is always ambiguous_path`;
  }
  const segments = value.split('/');
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i];
    if (segment === '' && i < segments.length - 1) {
      return `${what} must not have an empty segment ("//"): requests are matched with "//" merged`;
    }
    if (segment === '.' || segment === '..') {
      return `${what} must not have a "." or ".." segment: requests are matched with dot-segments removed`;
    }
  }
  return null;
}

/**
 * A node's children: up to SMALL_FANOUT of them in two parallel arrays (scanned), more in a Map.
 * Most nodes of a big policy have a handful of children; a Map per node made compiling a
 * 50,000-prefix policy allocation- and GC-bound (~30% of its compile time), and a short scan is as
 * fast as a Map lookup at that size.
 */
const SMALL_FANOUT = 8;

interface TrieNode<T> {
  keys: string[] | null;
  nodes: TrieNode<T>[] | null;
  map: Map<string, TrieNode<T>> | null;
  /** the prefix that ends at this node without a trailing `/` */
  prefix: T | undefined;
  /** the prefix that ends at this node with a trailing `/` (needs more path after the `/`) */
  dirPrefix: T | undefined;
}

function newNode<T>(): TrieNode<T> {
  return { keys: null, nodes: null, map: null, prefix: undefined, dirPrefix: undefined };
}

function childOf<T>(node: TrieNode<T>, segment: string): TrieNode<T> | undefined {
  if (node.map !== null) return node.map.get(segment);
  const keys = node.keys;
  if (keys === null) return undefined;
  for (let i = 0; i < keys.length; i++) if (keys[i] === segment) return (node.nodes as TrieNode<T>[])[i];
  return undefined;
}

function addChild<T>(node: TrieNode<T>, segment: string, child: TrieNode<T>): void {
  if (node.map !== null) {
    node.map.set(segment, child);
  } else if (node.keys === null || node.nodes === null) {
    node.keys = [segment];
    node.nodes = [child];
  } else if (node.keys.length < SMALL_FANOUT) {
    node.keys.push(segment);
    node.nodes.push(child);
  } else {
    const map = new Map<string, TrieNode<T>>();
    node.keys.forEach((k, i) => map.set(k, (node.nodes as TrieNode<T>[])[i] as TrieNode<T>));
    map.set(segment, child);
    node.map = map;
    node.keys = null;
    node.nodes = null;
  }
}

export class SegmentTrie<T> {
  private readonly root: TrieNode<T> = newNode();
  /** the value of the prefix `/`, which matches every path */
  private everyPath: T | undefined;

  /** The value stored for `prefix` (which starts with `/`), created with `create()` if absent. */
  upsert(prefix: string, create: () => T): T {
    if (!prefix.startsWith('/')) throw new TypeError(`path prefix must start with "/": ${JSON.stringify(prefix)}`);
    if (prefix === '/') return (this.everyPath ??= create());
    const dir = prefix.endsWith('/');
    const body = dir ? prefix.slice(1, -1) : prefix.slice(1);
    let node = this.root;
    for (const segment of body.split('/')) {
      let child = childOf(node, segment);
      if (child === undefined) {
        child = newNode();
        addChild(node, segment, child);
      }
      node = child;
    }
    if (dir) return (node.dirPrefix ??= create());
    return (node.prefix ??= create());
  }

  /** Calls `visit` with the value of every stored prefix that matches `path`. */
  visitPrefixesOf(path: string, visit: (value: T) => void): void {
    if (this.everyPath !== undefined) visit(this.everyPath);
    if (path.charCodeAt(0) !== 0x2f) return;
    let node = this.root;
    let pos = 1;
    for (;;) {
      const slash = path.indexOf('/', pos);
      const segment = slash === -1 ? path.slice(pos) : path.slice(pos, slash);
      const child = childOf(node, segment);
      if (child === undefined) return;
      node = child;
      if (node.prefix !== undefined) visit(node.prefix);
      if (slash === -1) return;
      if (node.dirPrefix !== undefined) visit(node.dirPrefix);
      pos = slash + 1;
    }
  }
}
