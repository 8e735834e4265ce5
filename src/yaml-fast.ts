/**
 * A fast reader for the plain subset of YAML 1.2 (https://yaml.org/spec/1.2.2/) that chio.yaml and
 * policy files are written in: block mappings and sequences, single-line flow collections, and
 * single-line plain, single-quoted and double-quoted scalars, with comments. Plain scalars are
 * resolved with the `yaml` package's own core-schema tags, so a value read here is exactly the
 * value `parseDocument(text).toJS()` gives.
 *
 * Why: the `yaml` package reads ~1.5 MB/s here (a 10,000-rule policy is 2.8 MB: 2 s), because it
 * builds a located syntax tree. This reader does ~30 MB/s and keeps no positions. It is a fast
 * path only: anything outside the subset, or anything the full parser would refuse or warn about
 * (anchors, aliases, tags, block scalars, multi-line scalars, duplicate keys, deep nesting, tabs,
 * document markers, directives, odd indentation…), returns `undefined`, and the caller reads the
 * file with the full parser, which gives the located error (src/yaml-source.ts). So it can never
 * accept what the full parser refuses, and never reads a value differently (property-tested in
 * test/yaml-fast.test.ts against the `yaml` package).
 */
import { isScalar, parseDocument, type ScalarTag } from 'yaml';

/** The options src/yaml-source.ts gives the full parser; the scalar tags and their options come from them. */
export const FULL_PARSER_OPTIONS = { uniqueKeys: false, prettyErrors: false, strict: true } as const;

const REFERENCE = parseDocument('', FULL_PARSER_OPTIONS);
/** The core schema's scalar tags that a plain scalar is tested against, in the parser's order. */
const PLAIN_TAGS: readonly ScalarTag[] = REFERENCE.schema.tags.filter(
  (t): t is ScalarTag => t.default === true && !('collection' in t && t.collection) && t.test instanceof RegExp,
);
const RESOLVE_OPTIONS = REFERENCE.options;

/** Thrown inside the reader when the text leaves the subset; never escapes this module. */
const OUTSIDE = Symbol('outside the fast YAML subset');

/** Characters (anywhere) that send a file to the full parser: tabs, control characters, BOM, a lone CR. */
const UNSUPPORTED_CHARS = /[\t\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff]|\r(?!\n)/;

/** Longest implicit key accepted here (the YAML spec's limit is 1024 characters). */
const MAX_KEY_LENGTH = 1000;

/**
 * Trailing spaces off. Only U+0020: YAML's white space is space and tab (tabs never get here), and
 * `String.prototype.trimEnd` would also drop U+00A0, U+2000–U+200A, U+3000… that YAML keeps in a
 * plain scalar (`unmatched: allow\u00a0` read as `allow` here, `"allow\u00a0"` by every other YAML
 * reader: found by a review).
 */
function trimSpaces(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === SPACE) end--;
  return end === text.length ? text : text.slice(0, end);
}

const SPACE = 0x20;
const HASH = 0x23;
const COLON = 0x3a;
const DASH = 0x2d;
const COMMA = 0x2c;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;

/**
 * The value of `text`, or `undefined` when the text is outside the subset (then use the full
 * parser). `maxDepth`: nesting deeper than this is left to the full parser, which refuses it.
 */
export function readPlainYaml(text: string, maxDepth: number): { value: unknown } | undefined {
  if (UNSUPPORTED_CHARS.test(text)) return undefined;
  try {
    return { value: new PlainYamlReader(text, maxDepth).document() };
  } catch (err) {
    if (err === OUTSIDE) return undefined;
    throw err;
  }
}

/** A plain scalar's value under the core schema: null, boolean, number or string. */
export function resolvePlainScalar(source: string): unknown {
  // Every non-string pattern of the core schema starts with one of `~nNtTfF0-9+-.`
  // (test/yaml-fast.test.ts pins the patterns): skip the regexes for everything else.
  const c = source.charCodeAt(0);
  const maybeTyped =
    source.length === 0 ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x7e || c === 0x6e || c === 0x4e || c === 0x74 || c === 0x54 || c === 0x66 || c === 0x46 || c === 0x2b || c === DASH || c === 0x2e;
  if (!maybeTyped) return source;
  for (const tag of PLAIN_TAGS) {
    if (tag.test?.test(source)) {
      const res: unknown = tag.resolve(source, () => {
        throw OUTSIDE;
      }, RESOLVE_OPTIONS);
      return isScalar(res) ? res.value : res;
    }
  }
  return source;
}

class PlainYamlReader {
  private readonly lines: string[];
  /** indentation of each line, or -1 for a blank or comment-only line */
  private readonly indents: Int32Array;
  /** the first line not consumed yet by the node just read */
  private row = 0;

  constructor(
    text: string,
    private readonly maxDepth: number,
  ) {
    const lines = text.split('\n');
    if (text.includes('\r')) for (let i = 0; i < lines.length; i++) lines[i] = (lines[i] as string).replace(/\r$/, '');
    this.lines = lines;
    this.indents = new Int32Array(lines.length);
    lines.forEach((line, i) => (this.indents[i] = indentOf(line)));
  }

  document(): unknown {
    const first = this.nextContent(0);
    if (first >= this.lines.length) throw OUTSIDE; // empty document: rare, leave it to the full parser
    const value = this.node(-1, first, this.indents[first] as number, 0);
    if (this.row < this.lines.length) throw OUTSIDE;
    return value;
  }

  /** The next line at or after `row` with content (lines.length when none). */
  private nextContent(row: number): number {
    const n = this.lines.length;
    while (row < n && this.indents[row] === -1) row++;
    return row;
  }

  private indentAt(row: number): number {
    return row < this.lines.length ? (this.indents[row] as number) : -1;
  }

  /**
   * The node whose first character is at (`row`, `col`) (`col` may be mid-line: the content of a
   * `- ` entry). `parentIndent`: the indentation of the collection holding it; a following line
   * indented more than that continues a scalar, which this reader leaves to the full parser.
   */
  private node(parentIndent: number, row: number, col: number, depth: number): unknown {
    if (depth >= this.maxDepth) throw OUTSIDE;
    const line = this.lines[row] as string;
    if (isEntryDash(line, col)) return this.sequence(row, col, depth);
    if (keyEnd(line, col) !== -1) return this.mapping(row, col, depth);
    return this.valueLine(parentIndent, row, col, depth);
  }

  /** A scalar or flow collection that ends its line; the next line must not be indented past `parentIndent`. */
  private valueLine(parentIndent: number, row: number, col: number, depth: number): unknown {
    const value = this.inlineValue(this.lines[row] as string, col, depth);
    this.row = this.nextContent(row + 1);
    if (this.indentAt(this.row) > parentIndent) throw OUTSIDE; // a multi-line scalar, or bad indentation
    return value;
  }

  /** A block sequence whose first `-` is at (`row`, `indent`). */
  private sequence(row: number, indent: number, depth: number): unknown[] {
    if (depth >= this.maxDepth) throw OUTSIDE;
    const items: unknown[] = [];
    let r = row;
    let col = indent;
    for (;;) {
      const line = this.lines[r] as string;
      if (!isEntryDash(line, col)) throw OUTSIDE;
      const p = skipSpaces(line, col + 1);
      items.push(p === line.length || line.charCodeAt(p) === HASH ? this.valueBelow(indent, r, depth + 1) : this.node(indent, r, p, depth + 1));
      r = this.row;
      const next = this.indentAt(r);
      if (next < indent) return items;
      if (next > indent) throw OUTSIDE;
      if (!isEntryDash(this.lines[r] as string, indent)) return items; // a mapping key: this sequence was its parent's value
      col = indent;
    }
  }

  /** A block mapping whose first key is at (`row`, `indent`). */
  private mapping(row: number, indent: number, depth: number): Record<string, unknown> {
    const map: Record<string, unknown> = {};
    let r = row;
    let col = indent;
    for (;;) {
      const line = this.lines[r] as string;
      const { key, next } = this.blockKey(line, col);
      if (Object.prototype.hasOwnProperty.call(map, key)) throw OUTSIDE; // the full parser names the duplicate
      const p = skipSpaces(line, next);
      let value: unknown;
      if (p === line.length || line.charCodeAt(p) === HASH) {
        const below = this.nextContent(r + 1);
        // `key:` then `- item` lines at the key's own indentation: the sequence is the value
        value =
          this.indentAt(below) === indent && isEntryDash(this.lines[below] as string, indent)
            ? this.sequence(below, indent, depth + 1)
            : this.valueBelow(indent, r, depth + 1);
      } else {
        // `key: - item` and `a: b: c` (block collections after a key on its line) are errors
        if (isEntryDash(line, p) || keyEnd(line, p) !== -1) throw OUTSIDE;
        value = this.valueLine(indent, r, p, depth + 1);
      }
      map[key] = value;
      r = this.row;
      const nextIndent = this.indentAt(r);
      if (nextIndent < indent) return map;
      if (nextIndent > indent) throw OUTSIDE;
      col = indent;
    }
  }

  /** The value of an entry whose line ends after its indicator: the block below it, or null. */
  private valueBelow(indent: number, row: number, depth: number): unknown {
    if (depth >= this.maxDepth) throw OUTSIDE; // a null leaf this deep is as deep as any other node
    const below = this.nextContent(row + 1);
    const belowIndent = this.indentAt(below);
    if (belowIndent > indent) return this.node(indent, below, belowIndent, depth);
    this.row = below;
    return null;
  }

  /** A block mapping key at `col` and the position after its `:`. */
  private blockKey(line: string, col: number): { key: string; next: number } {
    const c = line.charCodeAt(col);
    let key: string;
    let colon: number;
    if (c === DQUOTE || c === SQUOTE) {
      const q = quoted(line, col);
      key = q.value;
      colon = q.end;
      if (line.charCodeAt(colon) !== COLON) throw OUTSIDE;
      if (colon + 1 < line.length && line.charCodeAt(colon + 1) !== SPACE) throw OUTSIDE;
    } else {
      colon = keyEnd(line, col);
      if (colon === -1) throw OUTSIDE;
      key = plainKey(trimSpaces(line.slice(col, colon)), false);
    }
    if (colon - col > MAX_KEY_LENGTH) throw OUTSIDE;
    return { key: checkKey(key), next: colon + 1 };
  }

  /** A scalar or a one-line flow collection at `p`, then only spaces and a comment to the end of the line. */
  private inlineValue(line: string, p: number, depth: number): unknown {
    const c = line.charCodeAt(p);
    let value: unknown;
    let end: number;
    if (c === LBRACKET || c === LBRACE) {
      ({ value, end } = flowCollection(line, p, depth, this.maxDepth));
    } else if (c === DQUOTE || c === SQUOTE) {
      ({ value, end } = quoted(line, p));
    } else {
      const stop = commentStart(line, p);
      const text = trimSpaces(line.slice(p, stop));
      checkPlainStart(text, false);
      if (text.endsWith(':') || text.includes(': ')) throw OUTSIDE;
      return resolvePlainScalar(text);
    }
    const q = skipSpaces(line, end);
    if (q < line.length && !(line.charCodeAt(q) === HASH && q > end)) throw OUTSIDE;
    return value;
  }
}

/** Leading spaces of a line, or -1 when it is blank or only a comment. Throws on document markers and directives. */
function indentOf(line: string): number {
  let i = 0;
  while (line.charCodeAt(i) === SPACE) i++;
  if (i === line.length || line.charCodeAt(i) === HASH) return -1;
  if (i === 0 && (line.startsWith('---') || line.startsWith('...') || line.charCodeAt(0) === 0x25 /* % */)) throw OUTSIDE;
  return i;
}

function skipSpaces(line: string, i: number): number {
  while (line.charCodeAt(i) === SPACE) i++;
  return i;
}

/** `-` at `col` followed by a space or the end of the line: a block sequence entry. */
function isEntryDash(line: string, col: number): boolean {
  return line.charCodeAt(col) === DASH && (col + 1 === line.length || line.charCodeAt(col + 1) === SPACE);
}

/** Where a comment starts (` #`), or the end of the line. */
function commentStart(line: string, from: number): number {
  let i = line.indexOf('#', from);
  while (i !== -1 && line.charCodeAt(i - 1) !== SPACE) i = line.indexOf('#', i + 1);
  return i === -1 ? line.length : i;
}

/**
 * The `:` ending a plain implicit key that starts at `col` (`: ` or `:` at the end of the line,
 * before any comment), or -1 when the text at `col` is not a plain key.
 */
function keyEnd(line: string, col: number): number {
  const c = line.charCodeAt(col);
  if (c === DQUOTE || c === SQUOTE) {
    // a quoted key is a key when `:` follows the closing quote
    try {
      const q = quoted(line, col);
      return line.charCodeAt(q.end) === COLON ? q.end : -1;
    } catch {
      return -1;
    }
  }
  if (c === LBRACKET || c === LBRACE) return -1;
  for (let i = col; i < line.length; i++) {
    const ch = line.charCodeAt(i);
    if (ch === COLON && (i + 1 === line.length || line.charCodeAt(i + 1) === SPACE)) return i;
    if (ch === HASH && i > col && line.charCodeAt(i - 1) === SPACE) return -1;
  }
  return -1;
}

/** A plain key's text as the full parser reads it; only keys that are strings as written are accepted. */
function plainKey(text: string, inFlow: boolean): string {
  checkPlainStart(text, inFlow);
  if (resolvePlainScalar(text) !== text) throw OUTSIDE; // `10:`, `true:`, `null:`: the full parser decides
  return text;
}

/**
 * Keys the full parser handles: `__proto__` (it defines an own property), and integer-like keys,
 * which a JS object moves to the front (then `Object.keys` would not be file order; see
 * `plainKeysInFileOrder` in src/yaml-source.ts).
 */
function checkKey(key: string): string {
  if (key === '__proto__' || /^(?:0|[1-9][0-9]*)$/.test(key)) throw OUTSIDE;
  return key;
}

/**
 * A plain scalar may not start with an indicator (YAML 1.2 §7.3.3); `-` only before a non-space.
 * In a flow collection the flow indicators may not follow that `-` either.
 */
function checkPlainStart(text: string, inFlow: boolean): void {
  if (text.length === 0) throw OUTSIDE;
  const c = text.charCodeAt(0);
  if ('?:,[]{}#&*!|>\'"%@`'.includes(text[0] as string)) throw OUTSIDE;
  if (c === DASH) {
    const d = text[1];
    if (d === undefined || d === ' ' || (inFlow && ',[]{}'.includes(d))) throw OUTSIDE;
  }
}

/** A single-line quoted scalar at `i`: its value and the position after the closing quote. */
function quoted(line: string, i: number): { value: string; end: number } {
  const open = line.charCodeAt(i);
  if (open === SQUOTE) {
    let j = i + 1;
    for (;;) {
      const k = line.indexOf("'", j);
      if (k === -1) throw OUTSIDE; // continues on the next line
      if (line.charCodeAt(k + 1) === SQUOTE) {
        j = k + 2;
        continue;
      }
      return { value: line.slice(i + 1, k).replaceAll("''", "'"), end: k + 1 };
    }
  }
  let escapes = false;
  for (let j = i + 1; j < line.length; j++) {
    const ch = line.charCodeAt(j);
    if (ch === DQUOTE) {
      const raw = line.slice(i, j + 1);
      if (!escapes) return { value: raw.slice(1, -1), end: j + 1 };
      try {
        return { value: JSON.parse(raw) as string, end: j + 1 };
      } catch {
        throw OUTSIDE;
      }
    }
    if (ch === BACKSLASH) {
      // only the escapes YAML and JSON share (then JSON.parse decodes them exactly)
      if (!'"\\/bfnrtu'.includes(line[j + 1] ?? '')) throw OUTSIDE;
      escapes = true;
      j++;
    }
  }
  throw OUTSIDE; // continues on the next line
}

/** A flow sequence or mapping that opens at `i` and closes on the same line. */
function flowCollection(line: string, i: number, depth: number, maxDepth: number): { value: unknown; end: number } {
  if (depth >= maxDepth) throw OUTSIDE;
  const isSeq = line.charCodeAt(i) === LBRACKET;
  const close = isSeq ? RBRACKET : RBRACE;
  const seq: unknown[] = [];
  const map: Record<string, unknown> = {};
  let p = skipSpaces(line, i + 1);
  if (line.charCodeAt(p) === close) return { value: isSeq ? seq : map, end: p + 1 };
  for (;;) {
    if (isSeq) {
      const item = flowItem(line, p, depth + 1, maxDepth);
      seq.push(item.value);
      p = item.end;
    } else {
      const key = flowKey(line, p);
      if (Object.prototype.hasOwnProperty.call(map, key.key)) throw OUTSIDE;
      const item = flowItem(line, skipSpaces(line, key.end), depth + 1, maxDepth);
      map[key.key] = item.value;
      p = item.end;
    }
    p = skipSpaces(line, p);
    const c = line.charCodeAt(p);
    if (c === close) return { value: isSeq ? seq : map, end: p + 1 };
    if (c !== COMMA) throw OUTSIDE;
    p = skipSpaces(line, p + 1);
    if (p >= line.length || line.charCodeAt(p) === close) throw OUTSIDE; // a trailing comma or an open end
  }
}

/** A flow mapping key and the position after `: `. */
function flowKey(line: string, p: number): { key: string; end: number } {
  const c = line.charCodeAt(p);
  let key: string;
  let colon: number;
  if (c === DQUOTE || c === SQUOTE) {
    const q = quoted(line, p);
    key = q.value;
    colon = q.end;
  } else {
    colon = flowPlainEnd(line, p);
    key = plainKey(trimSpaces(line.slice(p, colon)), true);
  }
  if (line.charCodeAt(colon) !== COLON || line.charCodeAt(colon + 1) !== SPACE) throw OUTSIDE;
  if (colon - p > MAX_KEY_LENGTH) throw OUTSIDE;
  return { key: checkKey(key), end: colon + 1 };
}

/** A value inside a flow collection: a nested flow collection, a quoted or a plain scalar. */
function flowItem(line: string, p: number, depth: number, maxDepth: number): { value: unknown; end: number } {
  const c = line.charCodeAt(p);
  if (c === LBRACKET || c === LBRACE) return flowCollection(line, p, depth, maxDepth);
  if (c === DQUOTE || c === SQUOTE) {
    const q = quoted(line, p);
    if (line.charCodeAt(skipSpaces(line, q.end)) === COLON) throw OUTSIDE; // a pair inside a flow sequence
    return q;
  }
  const end = flowPlainEnd(line, p);
  if (line.charCodeAt(end) === COLON) throw OUTSIDE; // `[a: b]` or `{a: b: c}`
  const text = trimSpaces(line.slice(p, end));
  checkPlainStart(text, true);
  return { value: resolvePlainScalar(text), end };
}

/**
 * Where a plain scalar inside a flow collection ends: at a flow indicator, at `:` followed by a
 * space, a flow indicator or the end of the line, at a comment, or at the end of the line.
 */
function flowPlainEnd(line: string, p: number): number {
  for (let i = p; i < line.length; i++) {
    const ch = line.charCodeAt(i);
    if (ch === COMMA || ch === LBRACKET || ch === RBRACKET || ch === LBRACE || ch === RBRACE) return i;
    if (ch === COLON) {
      const d = line.charCodeAt(i + 1);
      if (i + 1 === line.length || d === SPACE || d === COMMA || d === LBRACKET || d === RBRACKET || d === LBRACE || d === RBRACE) return i;
    }
    if (ch === HASH && line.charCodeAt(i - 1) === SPACE) return i;
  }
  return line.length;
}
