/**
 * Envoy ext_authz v3 wire mapping (SPEC §3), on Envoy's official protos as shipped in
 * `@grpc/grpc-js-xds` `deps/` (envoy/service/auth/v3/external_auth.proto).
 *
 * CheckRequest (as proto-loader decodes it) → CheckInput, and decisions → CheckResponse.
 * The protobuf decoder is the schema validator here: every field has its proto type; we still
 * treat every value as hostile (absent, empty, huge, odd bytes).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { deny, type DenyError } from '../errors.js';
import { canonicalIpv6, ipv4SpellingFault } from '../policy/hosts.js';
import { canonicalPathSpelling } from '../policy/paths.js';
import { quoteUntrusted } from '../spiffe/id.js';
import type { CheckInput } from './request.js';

const require = createRequire(import.meta.url);

/** proto-loader options; the fixtures' `*.loader-view.json` show exactly this shape. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
};

export function envoyProtoIncludeDirs(): string[] {
  const deps = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  return ['envoy-api', 'googleapis', 'xds', 'protoc-gen-validate'].map((d) => path.join(deps, d));
}

let cached: protoLoader.PackageDefinition | undefined;

/** The package definition of envoy.service.auth.v3 (loaded once; ~40 ms). */
export function loadAuthProtos(): protoLoader.PackageDefinition {
  cached ??= protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
    ...LOADER_OPTIONS,
    includeDirs: envoyProtoIncludeDirs(),
  });
  return cached;
}

export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';

// ---- the parts of CheckRequest we read (proto-loader view; all optional) ----

interface SocketAddress {
  address?: string;
  port_value?: number;
}
interface Address {
  socket_address?: SocketAddress;
  pipe?: { path?: string };
}
interface Peer {
  address?: Address;
  principal?: string;
  certificate?: string;
}
interface HeaderValue {
  key?: string;
  value?: string;
  raw_value?: Buffer | Uint8Array;
}
interface HttpRequest {
  id?: string;
  method?: string;
  headers?: Record<string, string>;
  header_map?: { headers?: HeaderValue[] };
  path?: string;
  host?: string;
}
export interface RawCheckRequest {
  attributes?: {
    source?: Peer;
    destination?: Peer;
    request?: { http?: HttpRequest };
    context_extensions?: Record<string, string>;
  };
}

/** Limits on what we accept from one CheckRequest (grpc-js already caps messages at 4 MiB). */
const MAX_HEADERS = 512;

/**
 * What the gRPC listener hands on for request bytes that are not a decodable CheckRequest
 * (./request-wire.ts): denied `malformed_request` like any unreadable request.
 */
export const UNDECODABLE_REQUEST: RawCheckRequest = Object.freeze({});

/** CheckRequest → CheckInput. Throws DenyError('malformed_request') for a request we cannot read. */
export function toCheckInput(raw: RawCheckRequest | null | undefined): CheckInput {
  if (raw === UNDECODABLE_REQUEST) throw deny('malformed_request', 'CheckRequest is not a decodable protobuf message');
  const attrs = raw?.attributes;
  if (!attrs || typeof attrs !== 'object') throw deny('malformed_request', 'CheckRequest has no attributes');
  const source = attrs.source ?? {};
  const http = attrs.request?.http;
  const contextExtensions = toMap(attrs.context_extensions);
  const principal = nonEmpty(source.principal);
  const certificate = nonEmpty(source.certificate);
  const sourceAddr = formatAddress(source.address);

  if (!http) {
    return {
      kind: 'tcp',
      requestId: null,
      method: null,
      host: null,
      hostname: null,
      port: null,
      path: null,
      grpc: null,
      headers: new Map(),
      source: sourceAddr,
      principal,
      certificate,
      contextExtensions,
    };
  }

  const headers = readHeaders(http);
  const method = (nonEmpty(http.method) ?? headers.get(':method') ?? '').toUpperCase() || null;
  const hostRaw = nonEmpty(http.host) ?? headers.get(':authority') ?? headers.get('host') ?? null;
  const { host, hostname, port } = splitHost(hostRaw);
  const rawPath = nonEmpty(http.path) ?? headers.get(':path') ?? null;
  const reqPath = rawPath === null ? null : normalizePath(rawPath);
  const readings = rawPath === null || reqPath === null ? NO_READINGS : otherPathReadings(rawPath, reqPath);
  const requestId = headers.get('x-request-id') ?? nonEmpty(http.id);

  return {
    kind: 'http',
    requestId: requestId === null ? null : clip(requestId, 128),
    method,
    host,
    hostname,
    port,
    path: reqPath,
    grpc: grpcTarget(method, reqPath, headers.get('content-type')),
    otherReadings: readings.length === 0 ? NO_OTHER_READINGS : readings.map((p) => ({ path: p, grpc: grpcTarget(method, p, headers.get('content-type')) })),
    headers,
    source: sourceAddr,
    principal,
    certificate,
    contextExtensions,
  };
}

function nonEmpty(v: unknown): string | null {
  return typeof v === 'string' && v.length > 0 ? v : null;
}

/** At most `max` UTF-16 units of `s`, never ending in half a surrogate pair (receipts are JCS: I-JSON strings). */
export function clip(s: string, max: number): string {
  if (s.length <= max) return s;
  const last = s.charCodeAt(max - 1);
  return s.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

function toMap(rec: Record<string, string> | undefined): Map<string, string> {
  const m = new Map<string, string>();
  if (rec && typeof rec === 'object') {
    for (const k of Object.keys(rec)) {
      const v = rec[k];
      if (typeof v === 'string') m.set(k, v);
    }
  }
  return m;
}

function readHeaders(http: HttpRequest): Map<string, string> {
  const out = new Map<string, string>();
  const add = (key: string, value: string): void => {
    const k = key.toLowerCase();
    if (out.size >= MAX_HEADERS && !out.has(k)) throw deny('malformed_request', `more than ${MAX_HEADERS} distinct headers`);
    const prev = out.get(k);
    out.set(k, prev === undefined ? value : `${prev},${value}`);
  };
  const list = http.header_map?.headers;
  if (Array.isArray(list) && list.length > 0) {
    for (const h of list) {
      if (!h || typeof h.key !== 'string' || h.key === '') continue;
      const value =
        typeof h.value === 'string' && h.value !== ''
          ? h.value
          : h.raw_value
            ? Buffer.from(h.raw_value).toString('latin1')
            : '';
      add(h.key, value);
    }
  }
  if (http.headers && typeof http.headers === 'object') {
    for (const k of Object.keys(http.headers)) {
      const v = http.headers[k];
      if (typeof v === 'string') add(k, v);
    }
  }
  return out;
}

function formatAddress(addr: Address | undefined): string | null {
  if (!addr) return null;
  const sa = addr.socket_address;
  if (sa && typeof sa.address === 'string' && sa.address !== '') {
    const ip = sa.address.includes(':') ? `[${sa.address}]` : sa.address;
    return typeof sa.port_value === 'number' ? `${ip}:${sa.port_value}` : ip;
  }
  const pipe = addr.pipe?.path;
  return typeof pipe === 'string' && pipe !== '' ? clip(pipe, 256) : null;
}

// RFC 3986 §3.2.3: port = *DIGIT, so `host:` (empty port) is the host without a port
const HOST_RE = /^(\[[0-9a-f:.]+\]|[^:\[\]]*)(?::(\d{0,5}))?$/;
/** what a DNS name (or an IPv4 address) is made of: a Host with userinfo, `%`, spaces or raw UTF-8 is none */
const HOST_NAME_RE = /^[a-z0-9._-]*$/;
const NON_ASCII = /[^\x00-\x7f]/;

/**
 * `Host:8443` → host `host:8443`, hostname `host`, port `8443`. IPv6 literals in their RFC 5952
 * spelling (`[0:0::1]` is `[::1]`). A host that is neither a DNS name nor an IP literal, with an
 * optional port, is a deny `malformed_request` (`x@admin.svc`, compared whole, missed the rule of
 * admin.svc and matched `*.svc`; `a:b:c` matched no host pattern, so a catch-all rule decided).
 */
export function splitHost(raw: string | null): { host: string | null; hostname: string | null; port: string | null } {
  if (raw === null) return { host: null, hostname: null, port: null };
  // ASCII only, tested before lower-casing: "\u212Aube.svc" (a Kelvin sign) lower-cases to "kube.svc"
  const m = NON_ASCII.test(raw) ? null : HOST_RE.exec(raw.toLowerCase());
  if (m === null) throw notAHost(raw);
  let hostname = m[1] || null;
  if (hostname !== null) {
    hostname = hostname.startsWith('[') ? canonicalIpv6(hostname) : HOST_NAME_RE.test(hostname) ? hostname : null;
    if (hostname === null) throw notAHost(raw);
    const ipv4 = hostname.startsWith('[') ? null : ipv4SpellingFault(hostname);
    if (ipv4 !== null) throw deny('malformed_request', `request host ${ipv4}`);
  }
  // an empty port is no port and leading zeros are not part of it (`admin.svc:`, `admin.svc:0443`):
  // the host a host pattern is compared with must be the one the upstream sees, or a catch-all decides
  const port = m[2] === undefined || m[2] === '' ? null : String(Number(m[2]));
  return { host: hostname === null ? m[0] : port === null ? hostname : `${hostname}:${port}`, hostname, port };
}

function notAHost(raw: string): DenyError {
  return deny('malformed_request', `request host ${quoteUntrusted(raw, 100)} is not a DNS name or an IP literal`);
}

/** A request target without its query and fragment. */
function withoutQuery(target: string): string {
  const q = target.search(/[?#]/);
  return q >= 0 ? target.slice(0, q) : target;
}

/**
 * The path policy matches on: no query or fragment, percent-encoding normalized (RFC 3986
 * §6.2.2.1–2: `/%61dmin` is `/admin`, `%3a` is `%3A`, `/café` is `/caf%C3%A9`), repeated slashes
 * merged and dot-segments removed. So an encoded or dotted spelling cannot slip past a `block`
 * list or a prefix. Escapes of reserved characters stay encoded (`%2F` is not `/`; a server that
 * decodes them reads another path: `otherPathReadings`). Bad %-escapes are malformed.
 *
 * `order`: how `//` and dot-segments are read.
 * - `merge-first` (chio's own reading, Go's `path.Clean`, nginx): `//` merged, then dot-segments
 *   removed: `/a//../b` is `/b`;
 * - `rfc` (RFC 3986 §5.2.4, WHATWG URL): dot-segments removed, then `//` merged: `/a//../b` is `/a/b`;
 * - `keep` (Express, Werkzeug: a prefix router sees `/admin/../x` under `/admin`): `//` merged,
 *   dot-segments left as they are.
 *
 * A path longer than {@link MAX_PATH} is malformed (Envoy's default header limit is 60 KiB).
 */
export function normalizePath(raw: string, order: PathOrder = 'merge-first'): string {
  if (raw.length > MAX_PATH) throw deny('malformed_request', `request path is longer than ${MAX_PATH} characters`);
  let p = withoutQuery(raw);
  if (p.includes('%') && /%(?![0-9a-fA-F]{2})/.test(p)) throw deny('malformed_request', 'request path has an invalid percent-encoding');
  return segmentsOf(canonicalPathSpelling(p), order);
}

/** {@link normalizePath} of a path already in its canonical spelling, without query: `//` and dot-segments. */
function segmentsOf(canonical: string, order: PathOrder): string {
  let p = canonical;
  if (p === '*') return p;
  // a path without its leading slash (Envoy never forwards one; a direct caller might) is normalized
  // like any other: 'public/../admin' is /admin, not a path under /public (final review)
  if (!p.startsWith('/')) p = '/' + p;
  if (!p.includes('//') && !p.includes('/.')) return p;
  if (order === 'keep') return p.includes('//') ? p.replace(/\/{2,}/g, '/') : p;
  const mergeFirst = order === 'merge-first';
  const out: string[] = [];
  const segs = p.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i] as string;
    if (mergeFirst && s === '' && i < segs.length - 1) continue;
    if (s === '.') continue;
    if (s === '..') {
      out.pop();
      continue;
    }
    out.push(s);
  }
  const last = segs[segs.length - 1];
  let result = '/' + out.join('/');
  if ((last === '.' || last === '..') && result !== '/') result += '/';
  return mergeFirst || !result.includes('//') ? result : result.replace(/\/{2,}/g, '/');
}

export type PathOrder = 'merge-first' | 'rfc' | 'keep';

/** The longest request path read at all. */
export const MAX_PATH = 64 * 1024;

const ENCODED_SLASH = /%2[fF]/g;
const BACKSLASH = /%5[cC]|\\/g;
const PATH_PARAMS = /;[^/]*/g;
/** escapes of sub-delims, ":" and "@": a path carries them raw too, and a decoding server reads them so */
const RESERVED_ESCAPE = /%(?:2[146-9A-Ca-c]|3[ABDabd]|40)/;
const RESERVED_ESCAPES = new RegExp(RESERVED_ESCAPE.source, 'g');

const NO_READINGS: string[] = [];
const NO_OTHER_READINGS: NonNullable<CheckInput['otherReadings']> = [];

/**
 * The other ways servers read the path as sent, each normalized, without chio's own reading
 * (`normalized`) and without repeats (empty for almost every path: only one holding `%2F`, `%5C`,
 * `\`, `;`, an escaped sub-delim, `:` or `@`, a dot-segment, or starting with two slashes has any):
 * - `%2F` decoded to `/` (Go's `URL.Path`, many routers), `%5C` kept as a character;
 * - `%5C` and `\` read as `/` (Windows servers), `%2F` kept;
 * - all three as `/`;
 * - each of these with the escapes of sub-delims, `:` and `@` decoded (WSGI's PATH_INFO, Go, Spring
 *   decode them: `/v1/items%3Adelete` is `/v1/items:delete` there);
 * - each of these with `;parameters` dropped from every segment (Tomcat and Spring read `..;/` as
 *   `../`);
 * - each of these with dot-segments removed before `//` is merged (RFC 3986 §5.2.4, WHATWG URL:
 *   `/admin//../users` is `/admin/users`; chio, Go's `path.Clean` and nginx read `/users`), and with
 *   dot-segments kept (Express and Werkzeug route `/admin/../public` under `/admin`);
 * - a path starting with two slashes (or backslashes) as WHATWG URL reads it against a base, as
 *   Node servers do (`new URL(req.url, base)`): `//admin/x` is host `admin`, path `/x`.
 * Envoy keeps all of them unless `path_with_escaped_slashes_action` / `normalize_path` say
 * otherwise. `/api/orders/..%2F..%2Fadmin` is `/admin` to a server decoding `%2F`.
 */
export function otherPathReadings(sent: string, normalized: string): string[] {
  // read from the path as sent (query dropped), not the normalized one: a ".." after the segment that
  // holds the marker removes it there (/public/x/..;/../admin normalizes to /public/x/admin: a review)
  const path = withoutQuery(sent);
  const escaped = path.includes('%');
  const slash = escaped && /%2[fF]/.test(path);
  const back = path.includes('\\') || (escaped && /%5[cC]/.test(path));
  const reserved = escaped && RESERVED_ESCAPE.test(path);
  const params = path.includes(';');
  // a dot-segment as sent, or once %2F / "\" are read as "/", or spelled %2E
  const dots = (path.includes('.') && (path.includes('/.') || slash || back)) || (escaped && /%2[eE]/.test(path));
  const authority = /^[/\\][/\\]/.test(path);
  if (!slash && !back && !reserved && !params && !dots && !authority) return [];
  // each reading is a whole normalization (and a rule and tool lookup): bounded, failing closed
  if (path.length > MAX_READ_PATH) {
    throw deny('ambiguous_path', `the path is longer than ${MAX_READ_PATH} bytes and holds %2F, %5C, "\\", ";", ".", escaped reserved characters or a leading "//": it is not read as other servers would, and is refused`);
  }
  // every reading starts from the canonical spelling (escapes upper-cased, `\` as %5C, UTF-8 encoded),
  // spelled once: each reading below is only a split and join (re-spelling ~50 of them cost ~10 ms at 8 KiB).
  // Decoding %2F, %5C, sub-delims, ":" or "@", or dropping ";params", leaves a spelling canonical.
  const canonical = canonicalPathSpelling(path);
  const bases = [canonical];
  if (slash) bases.push(canonical.replace(ENCODED_SLASH, '/'));
  if (back) bases.push(canonical.replace(BACKSLASH, '/'));
  if (slash && back) bases.push(canonical.replace(ENCODED_SLASH, '/').replace(BACKSLASH, '/'));
  if (reserved) for (const base of bases.slice()) bases.push(base.replace(RESERVED_ESCAPES, (e) => decodeURIComponent(e)));
  const out = new Set<string>();
  for (const base of bases) {
    const spellings = base.includes(';') ? [base, base.replace(PATH_PARAMS, '')] : [base];
    for (const spelling of spellings) {
      out.add(segmentsOf(spelling, 'merge-first'));
      if (dots) {
        out.add(segmentsOf(spelling, 'rfc'));
        out.add(segmentsOf(spelling, 'keep'));
      }
    }
  }
  if (authority) {
    const whatwg = whatwgPathname(path);
    if (whatwg !== null) out.add(normalizePath(whatwg));
  }
  out.delete(normalized);
  return [...out];
}

/** The pathname WHATWG URL gives a request target against a base (null when it is no URL). */
function whatwgPathname(target: string): string | null {
  try {
    return new URL(target, 'http://chio.invalid').pathname;
  } catch {
    return null;
  }
}

/** The longest path read otherwise: each reading is a normalization and a rule and tool lookup (up to ~50 of them). */
export const MAX_READ_PATH = 4 * 1024;

const GRPC_PATH_RE = /^\/([A-Za-z_][A-Za-z0-9_.]*)\/([A-Za-z_][A-Za-z0-9_]*)$/;

function grpcTarget(method: string | null, p: string | null, contentType: string | undefined): CheckInput['grpc'] {
  if (method !== 'POST' || p === null || contentType === undefined) return null;
  if (!contentType.toLowerCase().startsWith('application/grpc')) return null;
  const m = GRPC_PATH_RE.exec(p);
  return m ? { service: m[1] as string, method: m[2] as string } : null;
}

// ---- CheckResponse ----

export interface HeaderValueOption {
  header: { key: string; value: string };
  append: { value: boolean };
}

type StructValue = { stringValue: string } | { nullValue: 'NULL_VALUE' };

export interface CheckResponseMessage {
  status: { code: number; message?: string };
  ok_response?: { headers: HeaderValueOption[]; headers_to_remove: string[] };
  denied_response?: { status: { code: number | string }; headers: HeaderValueOption[]; body: string };
  dynamic_metadata?: { fields: Record<string, StructValue> };
}

export const GRPC_OK = 0;
export const GRPC_PERMISSION_DENIED = 7;

/** `append: {value: false}` is the same on every header we set: one frozen object, not one per header per Check. */
const APPEND_FALSE: HeaderValueOption['append'] = Object.freeze({ value: false });

export function header(key: string, value: string): HeaderValueOption {
  return { header: { key, value }, append: APPEND_FALSE };
}

/** google.protobuf.Struct of string-or-null fields (proto-loader's Struct view is camelCase). */
export function structOf(fields: Record<string, string | null>): { fields: Record<string, StructValue> } {
  const out: Record<string, StructValue> = {};
  for (const k of Object.keys(fields)) {
    const v = fields[k];
    out[k] = typeof v === 'string' ? { stringValue: v } : { nullValue: 'NULL_VALUE' };
  }
  return { fields: out };
}
