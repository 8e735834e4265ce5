/**
 * `x-forwarded-client-cert` (XFCC) parsing (SPEC §4; Envoy docs, configuration/http/http_conn_man/
 * headers.rst "x-forwarded-client-cert"; grammar as in test/fixtures/envoy/xfcc/xfcc-examples.json):
 *
 *   header  = element *( OWS "," OWS element )
 *   element = pair *( ";" pair )
 *   pair    = key "=" value
 *   value   = quoted / *( any character but , ; " )
 *   quoted  = DQUOTE *( any character but " and \ / "\" any character ) DQUOTE
 *
 * Keys are case-insensitive: By, Hash, Cert, Chain, Subject, URI, DNS. By, URI and DNS may
 * repeat; the others may not. A quoted value must be the whole value (only `;`, `,` or the end
 * may follow its closing quote). Anything else is `deny('malformed_xfcc')`: with strict closing
 * quotes, a client-supplied earlier element cannot swallow or reshape the element the local
 * proxy appended.
 *
 * Only the LAST element is trusted (the one the local proxy wrote); earlier elements are
 * client-controlled under APPEND_FORWARD. {@link trustedXfccElement} returns it.
 */
import { deny, type DenyError } from '../errors.js';

export interface XfccElement {
  readonly by: readonly string[];
  readonly hash: string | null;
  /** URL-encoded PEM of the client leaf */
  readonly cert: string | null;
  /** URL-encoded PEM of the whole client chain, leaf first */
  readonly chain: string | null;
  readonly subject: string | null;
  readonly uri: readonly string[];
  readonly dns: readonly string[];
}

/** Longest header parsed (a Cert plus Chain of a few certificates is ~10 KB). */
export const MAX_XFCC_LENGTH = 64 * 1024;
/** Most elements accepted (one per proxy hop). */
export const MAX_XFCC_ELEMENTS = 64;

type SingleKey = 'hash' | 'cert' | 'chain' | 'subject';
type ListKey = 'by' | 'uri' | 'dns';

const KEYS: ReadonlyMap<string, SingleKey | ListKey> = new Map([
  ['by', 'by'],
  ['hash', 'hash'],
  ['cert', 'cert'],
  ['chain', 'chain'],
  ['subject', 'subject'],
  ['uri', 'uri'],
  ['dns', 'dns'],
]);

const LIST_KEYS: ReadonlySet<string> = new Set(['by', 'uri', 'dns']);

const COMMA = 0x2c;
const SEMICOLON = 0x3b;
const EQUALS = 0x3d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const SPACE = 0x20;
const TAB = 0x09;

interface Draft {
  by: string[];
  uri: string[];
  dns: string[];
  hash: string | null;
  cert: string | null;
  chain: string | null;
  subject: string | null;
}

function emptyDraft(): Draft {
  return { by: [], uri: [], dns: [], hash: null, cert: null, chain: null, subject: null };
}

function malformed(message: string): DenyError {
  return deny('malformed_xfcc', `x-forwarded-client-cert: ${message}`);
}

class XfccScanner {
  private at = 0;
  private readonly elements: XfccElement[] = [];

  constructor(private readonly text: string) {}

  parse(): XfccElement[] {
    this.skipSpaces();
    for (;;) {
      if (this.elements.length >= MAX_XFCC_ELEMENTS) throw malformed(`more than ${MAX_XFCC_ELEMENTS} elements`);
      this.elements.push(this.element());
      this.skipSpaces();
      if (this.at >= this.text.length) return this.elements;
      if (this.text.charCodeAt(this.at) !== COMMA) throw malformed(`unexpected character at index ${this.at}`);
      this.at++;
      this.skipSpaces();
    }
  }

  private element(): XfccElement {
    const draft = emptyDraft();
    for (;;) {
      this.pair(draft);
      const code = this.text.charCodeAt(this.at);
      if (code === SEMICOLON) {
        this.at++;
        continue;
      }
      return Object.freeze(draft);
    }
  }

  private pair(draft: Draft): void {
    const keyStart = this.at;
    while (this.at < this.text.length && isKeyChar(this.text.charCodeAt(this.at))) this.at++;
    const rawKey = this.text.slice(keyStart, this.at);
    if (this.text.charCodeAt(this.at) !== EQUALS) {
      if (rawKey === '') throw malformed(`expected a key at index ${keyStart}`);
      throw malformed(`key ${JSON.stringify(rawKey.slice(0, 32))} at index ${keyStart} is not followed by "="`);
    }
    const key = KEYS.get(rawKey.toLowerCase());
    if (key === undefined) throw malformed(`unknown key ${JSON.stringify(rawKey.slice(0, 32))} at index ${keyStart}`);
    this.at++;
    const value = this.text.charCodeAt(this.at) === QUOTE ? this.quoted() : this.bare();
    this.assign(draft, key, value, keyStart);
  }

  private assign(draft: Draft, key: SingleKey | ListKey, value: string, index: number): void {
    if (LIST_KEYS.has(key)) {
      draft[key as ListKey].push(value);
      return;
    }
    const single = key as SingleKey;
    if (draft[single] !== null) throw malformed(`key ${JSON.stringify(single)} repeats in one element (index ${index})`);
    draft[single] = value;
  }

  /** An unquoted value; white space before a `,` or the end is list syntax (OWS), not value. */
  private bare(): string {
    const start = this.at;
    for (; this.at < this.text.length; this.at++) {
      const code = this.text.charCodeAt(this.at);
      if (code === COMMA || code === SEMICOLON) break;
      if (code === QUOTE) throw malformed(`unexpected '"' at index ${this.at} in an unquoted value`);
    }
    let end = this.at;
    if (this.text.charCodeAt(this.at) !== SEMICOLON) while (end > start && isSpace(this.text.charCodeAt(end - 1))) end--;
    return this.text.slice(start, end);
  }

  private quoted(): string {
    const open = this.at++;
    let value = '';
    let runStart = this.at;
    for (; this.at < this.text.length; this.at++) {
      const code = this.text.charCodeAt(this.at);
      if (code === BACKSLASH) {
        if (this.at + 1 >= this.text.length) break;
        value += this.text.slice(runStart, this.at);
        this.at++;
        runStart = this.at;
      } else if (code === QUOTE) {
        value += this.text.slice(runStart, this.at);
        this.at++;
        this.afterQuoted();
        return value;
      }
    }
    throw malformed(`quoted value opened at index ${open} is not closed`);
  }

  private afterQuoted(): void {
    if (this.at >= this.text.length) return;
    const code = this.text.charCodeAt(this.at);
    if (code === SEMICOLON || code === COMMA) return;
    let probe = this.at;
    while (isSpace(this.text.charCodeAt(probe))) probe++;
    if (probe >= this.text.length || this.text.charCodeAt(probe) === COMMA) {
      this.at = probe;
      return;
    }
    throw malformed(`unexpected character at index ${this.at} after a closing quote`);
  }

  private skipSpaces(): void {
    while (isSpace(this.text.charCodeAt(this.at))) this.at++;
  }
}

/** RFC 7230 token characters (keys are tokens). */
function isKeyChar(code: number): boolean {
  return (
    (code >= 0x30 && code <= 0x39) ||
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x61 && code <= 0x7a) ||
    code === 0x2d ||
    code === 0x5f ||
    code === 0x2e
  );
}

function isSpace(code: number): boolean {
  return code === SPACE || code === TAB;
}

/** Every element of an XFCC header value, in order. Throws DenyError('malformed_xfcc'). */
export function parseXfcc(header: string): XfccElement[] {
  if (typeof header !== 'string') throw new TypeError('x-forwarded-client-cert must be a string');
  if (header.length > MAX_XFCC_LENGTH) throw malformed(`is ${header.length} characters; the maximum is ${MAX_XFCC_LENGTH}`);
  if (header.trim() === '') throw malformed('is empty');
  return new XfccScanner(header).parse();
}

/**
 * The element the local proxy appended: the last one. The whole header must parse, so a
 * client-supplied prefix cannot hide a malformed structure. Throws DenyError('malformed_xfcc').
 */
export function trustedXfccElement(header: string): XfccElement {
  const elements = parseXfcc(header);
  const last = elements[elements.length - 1];
  if (last === undefined) throw malformed('has no element');
  return last;
}
