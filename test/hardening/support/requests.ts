/**
 * fast-check generators of hostile CheckRequests (envoy.service.auth.v3.CheckRequest in the
 * proto-loader view, SPEC §3), random and mutated from the reference fixtures in
 * test/fixtures/envoy/check-requests/*.loader-view.json.
 *
 * A generated request is a fixture plus a list of mutations: random bytes, invalid UTF-16 / UTF-8,
 * control characters and percent-encoding garbage in the principal, certificate, headers, host and
 * path; truncated or bit-flipped certificates; spoofed `x-chio-*`, XFCC, JWT and capability headers;
 * `header_map` with duplicates and raw bytes; huge fields; deeply nested `metadata_context` Structs;
 * a missing `request`, `source` or `attributes`. `wire: true` keeps every value the type its proto
 * field has (what a gRPC client can serialize); in-process fuzzing also confuses types.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as fc from 'fast-check';
import type { RawCheckRequest } from '../../../src/check/envoy.js';
import { FIXTURES, fixturePem } from '../../helpers/service.js';

const CHECK_REQUESTS = path.join(FIXTURES, 'envoy', 'check-requests');

/** Every reference CheckRequest, by name (`http-mtls-spiffe-full`, …). */
export const FIXTURE_REQUESTS: ReadonlyMap<string, RawCheckRequest> = new Map(
  readdirSync(CHECK_REQUESTS)
    .filter((f) => f.endsWith('.loader-view.json'))
    .sort()
    .map((f) => [f.slice(0, -'.loader-view.json'.length), JSON.parse(readFileSync(path.join(CHECK_REQUESTS, f), 'utf8')) as RawCheckRequest]),
);

/** The binary (wire) form of every reference CheckRequest. */
export const FIXTURE_WIRE: ReadonlyMap<string, Buffer> = new Map(
  [...FIXTURE_REQUESTS.keys()].map((name) => [name, readFileSync(path.join(CHECK_REQUESTS, `${name}.pb`))]),
);

const PKI_NAMES = ['svid-frontend', 'svid-backend', 'svid-expired', 'svid-foreign-td', 'svid-multi-uri', 'svid-untrusted', 'dns-only', 'subject-only', 'ca'];
const FIXTURE_CERTIFICATES = PKI_NAMES.map((n) => fixturePem(n).envoy);
const XFCC_EXAMPLES = (
  JSON.parse(readFileSync(path.join(FIXTURES, 'envoy', 'xfcc', 'xfcc-examples.json'), 'utf8')) as { examples: Array<{ header: string }> }
).examples.map((e) => e.header);

export const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';

// ---- strings ----

const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
const controlChar = fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c));
const percentPiece = fc.constantFrom('%', '%%', '%0', '%ZZ', '%00', '%0A', '%2F', '%2f', '%5C', '%2e', '%2E%2E', '%61', '%C0%AF', '%E0%80%AF', '%FF', '%25');
const pathPiece = fc.constantFrom('/', '//', '.', '..', '/..', '/./', 'admin', 'api', 'v1', 'orders', '\\', ';', '?', '#', '*', ' ', '\t', 'ADMIN');

/** Text an attacker would send: anything, with a bias to the bytes parsers trip on. */
export function hostileText(maxLength = 48): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ maxLength }),
    fc.string({ unit: 'binary', maxLength }),
    fc.string({ unit: fc.oneof(loneSurrogate, controlChar, fc.constantFrom('\u00e9', '\ufffd', '\u2028', '\u0000', '"', '\\', ',', ';', '=')), maxLength }),
    fc.array(fc.oneof(percentPiece, pathPiece, fc.string({ maxLength: 3 })), { maxLength: 12 }).map((a) => a.join('')),
  );
}

const trustDomainish = fc.oneof(fc.constantFrom('example.org', 'Example.org', 'example.org:443', 'user@example.org', 'example%2eorg', 'other.test', ''), hostileText(12));
const spiffePathish = fc.oneof(
  fc.constantFrom('/ns/default/sa/frontend', '/ns/default/sa/frontend/', '/ns/default/../sa/frontend', '/ns//default', '/ns/default/sa/frontend?x=1', '/ns/default/sa/front\tend', ''),
  hostileText(24),
);

/** Strings that look like SPIFFE IDs and are almost, or exactly, the fixture workload's. */
export const spiffeish: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(FRONTEND, 'spiffe://example.org/ns/default/sa/backend', 'SPIFFE://example.org/ns/default/sa/frontend', 'spiffe:/example.org/x', 'spiffe://'),
  fc.tuple(fc.constantFrom('spiffe://', 'SPIFFE://', 'spiffe:', 'https://', ''), trustDomainish, spiffePathish).map(([s, td, p]) => s + td + p),
  flipChar(fc.constant(FRONTEND)),
);

/** One character of `text` replaced, or removed, or text cut short. */
export function flipChar(text: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return text.chain((t) =>
    fc.tuple(fc.nat({ max: Math.max(0, t.length - 1) }), fc.oneof(fc.constant(''), fc.string({ unit: 'binary', minLength: 1, maxLength: 2 })), fc.boolean()).map(
      ([at, by, truncate]) => (truncate ? t.slice(0, at) : t.slice(0, at) + by + t.slice(at + 1)),
    ),
  );
}

export interface HugeOptions {
  /** largest field generated (bytes); gRPC requests must stay under the 4 MiB message limit */
  readonly maxBytes: number;
}

/** A field of 64 KiB up to `maxBytes`, of one repeated piece. */
function hugeText({ maxBytes }: HugeOptions): fc.Arbitrary<string> {
  const sizes = [64 * 1024, 1024 * 1024, maxBytes].filter((n) => n <= maxBytes);
  return fc.tuple(fc.constantFrom(...sizes), fc.constantFrom('a', '/', '%2e', '.', 'é', '/..', 'x-chio-')).map(([n, piece]) => piece.repeat(Math.floor(n / Buffer.byteLength(piece))));
}

// ---- header values ----

const b64url = (s: string): string => Buffer.from(s, 'utf8').toString('base64url');

/** `Bearer <something JWT-shaped>`: alg none / HS256 / garbage, nested JSON, bad base64. */
const jwtish: fc.Arbitrary<string> = fc
  .tuple(
    fc.oneof(
      fc.constantFrom('{"alg":"none"}', '{"alg":"HS256","kid":"k"}', '{"alg":"ES256","kid":"k","crit":["x"]}', '{"alg":"ES256","kid":"k"}', '{}', '[]', 'null'),
      fc.nat({ max: 2000 }).map((d) => `{"alg":"ES256","kid":${'['.repeat(d)}${']'.repeat(d)}}`),
      hostileText(40),
    ),
    fc.oneof(
      fc.constantFrom(`{"sub":"${FRONTEND}","aud":"chio","exp":9999999999}`, '{"sub":1}', '{}'),
      fc.nat({ max: 2000 }).map((d) => `{"sub":"${FRONTEND}","aud":${'{"a":'.repeat(d)}1${'}'.repeat(d)},"exp":1}`),
      hostileText(40),
    ),
    hostileText(16),
    fc.boolean(),
  )
  .map(([h, p, s, encode]) => `Bearer ${encode ? `${b64url(h)}.${b64url(p)}.${b64url(s)}` : `${h}.${p}.${s}`}`);

/** XFCC values: the documented examples, a spoofed earlier element, garbage. */
const xfccish: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...XFCC_EXAMPLES),
  fc.tuple(spiffeish, fc.constantFrom(...XFCC_EXAMPLES)).map(([uri, real]) => `By=spiffe://x;URI=${uri},${real}`),
  fc.tuple(fc.constantFrom(...XFCC_EXAMPLES), spiffeish).map(([real, uri]) => `${real},URI=${uri}`),
  fc.tuple(fc.constantFrom(...FIXTURE_CERTIFICATES), spiffeish).map(([cert, uri]) => `Hash=00;Cert="${cert}";URI=${uri}`),
  hostileText(80),
);

export interface TokenPool {
  /** valid capability tokens (header values) the harness's authority issued */
  readonly capabilities: readonly string[];
}

const CHIO_HEADERS = ['x-chio-workload-id', 'x-chio-receipt-id', 'x-chio-tier', 'X-Chio-Verdict', 'x-chio-', 'x-chio-capability'];

function headerEntry(tokens: TokenPool): fc.Arbitrary<[string, string]> {
  const capability = tokens.capabilities.length === 0 ? hostileText(40) : fc.oneof(fc.constantFrom(...tokens.capabilities), flipChar(fc.constantFrom(...tokens.capabilities)));
  return fc.oneof(
    fc.tuple(fc.constantFrom(...CHIO_HEADERS), fc.oneof(spiffeish, fc.constantFrom('rct-01JD0000000000000000000000', 'verified', 'allow'), hostileText())),
    fc.tuple(fc.constant('x-chio-capability'), fc.oneof(capability, hostileText(60))),
    fc.tuple(fc.constant('x-forwarded-client-cert'), xfccish),
    fc.tuple(fc.constantFrom('authorization', 'Authorization'), fc.oneof(jwtish, hostileText())),
    fc.tuple(fc.constantFrom(':path', ':authority', ':method', 'host', 'content-type', 'x-request-id'), hostileText()),
    fc.tuple(hostileText(16), hostileText()),
  );
}

// ---- mutations ----

/** One change applied to a request (deep-copied before the first one). */
export type Mutation = { readonly describe: string; apply(req: MutableRequest): void };

interface MutableHttp {
  id?: unknown;
  method?: unknown;
  path?: unknown;
  host?: unknown;
  headers?: Record<string, unknown>;
  header_map?: { headers?: Array<{ key?: unknown; value?: unknown; raw_value?: unknown }> };
}
interface MutableRequest {
  attributes?: {
    source?: { principal?: unknown; certificate?: unknown; address?: unknown };
    request?: { http?: MutableHttp };
    context_extensions?: Record<string, unknown>;
    metadata_context?: unknown;
  };
}

function mutation(describe: string, apply: (req: MutableRequest) => void): Mutation {
  return { describe, apply };
}

function http(req: MutableRequest): MutableHttp | undefined {
  return req.attributes?.request?.http;
}

function source(req: MutableRequest): NonNullable<NonNullable<MutableRequest['attributes']>['source']> | undefined {
  if (!req.attributes) return undefined;
  req.attributes.source ??= {};
  return req.attributes.source;
}

function setHeader(req: MutableRequest, name: string, value: string): void {
  const h = http(req);
  if (!h) return;
  if (h.header_map?.headers) h.header_map.headers.push({ key: name, value });
  else (h.headers ??= {})[name] = value;
}

/** A loader-view google.protobuf.Struct nested `depth` levels deep. */
export function nestedStruct(depth: number): unknown {
  let value: unknown = { stringValue: 'leaf', kind: 'stringValue' };
  for (let i = 0; i < depth; i++) value = { structValue: { fields: { a: value } }, kind: 'structValue' };
  return { fields: { a: value } };
}

function certificateMutation(): fc.Arbitrary<Mutation> {
  const original = fc.constantFrom(...FIXTURE_CERTIFICATES);
  return fc.oneof(
    original.map((c) => mutation('certificate: another fixture', (r) => void (source(r) && ((source(r) as { certificate?: unknown }).certificate = c)))),
    flipChar(original).map((c) => mutation('certificate: flipped or truncated', (r) => void (source(r) && ((source(r) as { certificate?: unknown }).certificate = c)))),
    original.map((c) => mutation('certificate: raw newlines', (r) => void (source(r) && ((source(r) as { certificate?: unknown }).certificate = decodeURIComponent(c))))),
    hostileText(200).map((c) => mutation('certificate: hostile text', (r) => void (source(r) && ((source(r) as { certificate?: unknown }).certificate = c)))),
    fc.constant(mutation('certificate: removed', (r) => void delete r.attributes?.source?.certificate)),
  );
}

function principalMutation(): fc.Arbitrary<Mutation> {
  return fc.oneof(
    fc.oneof(spiffeish, hostileText()).map((p) => mutation('principal: spoofed or hostile', (r) => void (source(r) && ((source(r) as { principal?: unknown }).principal = p)))),
    fc.constant(mutation('principal: removed', (r) => void delete r.attributes?.source?.principal)),
  );
}

function httpMutation(): fc.Arbitrary<Mutation> {
  const field = (name: 'path' | 'host' | 'method' | 'id', value: fc.Arbitrary<string>): fc.Arbitrary<Mutation> =>
    value.map((v) =>
      mutation(`http.${name}`, (r) => {
        const h = http(r);
        if (h) h[name] = v;
      }),
    );
  return fc.oneof(
    field('path', fc.oneof(hostileText(), fc.array(fc.oneof(percentPiece, pathPiece), { maxLength: 16 }).map((a) => a.join('')))),
    field('host', fc.oneof(fc.constantFrom('backend.default.svc', 'BACKEND.default.svc:8443', 'backend.default.svc.', '[::1]:8443', 'backend'), hostileText())),
    field('method', fc.oneof(fc.constantFrom('GET', 'POST', 'get', 'DELETE', ''), hostileText(12))),
    field('id', hostileText()),
    fc.constant(
      mutation('headers → header_map with duplicates', (r) => {
        const h = http(r);
        if (!h) return;
        const entries = Object.entries(h.headers ?? {});
        delete h.headers;
        h.header_map = { headers: [...entries, ...entries].map(([key, value]) => ({ key, raw_value: Buffer.from(String(value), 'latin1') })) };
      }),
    ),
    fc.array(fc.uint8Array({ maxLength: 24 }), { minLength: 1, maxLength: 4 }).map((values) =>
      mutation('header_map raw bytes (invalid UTF-8)', (r) => {
        const h = http(r);
        if (!h) return;
        h.header_map ??= { headers: [] };
        h.header_map.headers ??= [];
        for (const v of values) h.header_map.headers.push({ key: 'x-chio-workload-id', raw_value: Buffer.from(v) });
      }),
    ),
    fc.nat({ max: 700 }).map((n) =>
      mutation(`${n} distinct headers`, (r) => {
        for (let i = 0; i < n; i++) setHeader(r, `x-h-${i}`, 'v');
      }),
    ),
  );
}

/** 64 KiB up to the largest field allowed, in the path or a header (rare: each costs milliseconds). */
function hugeMutation(huge: HugeOptions): fc.Arbitrary<Mutation> {
  return fc.oneof(
    hugeText(huge).map((v) =>
      mutation(`huge http.path (${v.length} chars)`, (r) => {
        const h = http(r);
        if (h) h.path = v;
      }),
    ),
    fc.tuple(fc.constantFrom('x-chio-workload-id', 'x-forwarded-client-cert', 'authorization', 'x-chio-capability', 'x-request-id', ':path'), hugeText(huge)).map(([n, v]) =>
      mutation(`huge header ${n} (${v.length} chars)`, (r) => setHeader(r, n, v)),
    ),
  );
}

function shapeMutation(): fc.Arbitrary<Mutation> {
  return fc.oneof(
    fc.constant(mutation('request removed (L4 shape)', (r) => void delete r.attributes?.request)),
    fc.constant(mutation('http emptied', (r) => void (r.attributes?.request && (r.attributes.request.http = {})))),
    fc.constant(mutation('source removed', (r) => void delete r.attributes?.source)),
    fc.constant(mutation('attributes removed', (r) => void delete r.attributes)),
    fc.oneof(fc.constantFrom('orders', 'nope', ''), hostileText(), fc.constant('r'.repeat(100_000))).map((rule) =>
      mutation('context_extensions.chio_rule', (r) => void (r.attributes && (r.attributes.context_extensions = { chio_rule: rule }))),
    ),
    fc.oneof(hostileText(), fc.constant('a'.repeat(100_000))).map((address) =>
      mutation('source address', (r) => {
        const s = source(r);
        if (s) s.address = { socket_address: { address, port_value: 65535 } };
      }),
    ),
  );
}

/**
 * Nesting deeper than protobufjs encodes or decodes (100 messages, two per level here) is only
 * sent in-process or as raw wire bytes.
 */
function metadataMutation(maxDepth: number): fc.Arbitrary<Mutation> {
  return fc.integer({ min: 1, max: maxDepth }).map((depth) =>
    mutation(`metadata_context nested ${depth} deep`, (r) => {
      if (r.attributes) r.attributes.metadata_context = { filter_metadata: { 'envoy.filters.http.jwt_authn': nestedStruct(depth) } };
    }),
  );
}

/** In-process only: values of the wrong type where the proto has strings, maps and lists. */
function typeConfusion(): fc.Arbitrary<Mutation> {
  const junk = fc.oneof(fc.constant(null), fc.integer(), fc.boolean(), fc.array(fc.string(), { maxLength: 2 }), fc.object({ maxDepth: 1 }), fc.constant(Symbol('x')));
  const target = fc.constantFrom('principal', 'certificate', 'path', 'host', 'method', 'headers', 'header_map', 'context_extensions', 'request', 'http', 'attributes');
  return fc.tuple(target, junk).map(([t, v]) =>
    mutation(`type confusion: ${t}`, (r) => {
      const a = r.attributes as Record<string, unknown> | undefined;
      const s = r.attributes?.source as Record<string, unknown> | undefined;
      const h = http(r) as Record<string, unknown> | undefined;
      if (t === 'attributes') (r as Record<string, unknown>)['attributes'] = v;
      else if ((t === 'principal' || t === 'certificate') && s) s[t] = v;
      else if ((t === 'request' || t === 'context_extensions') && a) a[t] = v;
      else if (t === 'http' && a?.['request'] && typeof a['request'] === 'object') (a['request'] as Record<string, unknown>)['http'] = v;
      else if (h) h[t] = v;
    }),
  );
}

export interface RequestArbitraryOptions {
  /** only values a gRPC client can serialize (no type confusion, no undecodable nesting) */
  readonly wire: boolean;
  readonly huge: HugeOptions;
  readonly tokens: TokenPool;
}

export interface GeneratedRequest {
  readonly fixture: string;
  readonly mutations: readonly string[];
  readonly request: RawCheckRequest;
}

/** A generated request that fast-check reports as its recipe, not as megabytes of JSON. */
function generated(fixture: string, mutations: string[], request: RawCheckRequest): GeneratedRequest {
  return { fixture, mutations, request, [fc.toStringMethod]: () => `${fixture} + [${mutations.join(' | ')}]` } as GeneratedRequest;
}

/** A reference fixture with up to 6 hostile mutations, or (1 in 12) a random object in-process. */
export function checkRequestArbitrary(options: RequestArbitraryOptions): fc.Arbitrary<GeneratedRequest> {
  const header = headerEntry(options.tokens).map(([n, v]) => mutation(`header ${JSON.stringify(n.slice(0, 24))}`, (r) => setHeader(r, n, v)));
  const mutations: Array<fc.WeightedArbitrary<Mutation>> = [
    { arbitrary: certificateMutation(), weight: 10 },
    { arbitrary: principalMutation(), weight: 10 },
    { arbitrary: httpMutation(), weight: 10 },
    { arbitrary: header, weight: 20 },
    { arbitrary: shapeMutation(), weight: 8 },
    { arbitrary: metadataMutation(options.wire ? 40 : 400), weight: 4 },
    { arbitrary: hugeMutation(options.huge), weight: 1 },
  ];
  if (!options.wire) mutations.push({ arbitrary: typeConfusion(), weight: 4 });
  const mutated = fc
    .tuple(fc.constantFrom(...FIXTURE_REQUESTS.keys()), fc.array(fc.oneof(...mutations), { maxLength: 6 }))
    .map(([fixture, list]): GeneratedRequest => {
      const req = structuredClone(FIXTURE_REQUESTS.get(fixture)) as MutableRequest;
      const applied: string[] = [];
      for (const m of list) {
        try {
          m.apply(req);
          applied.push(m.describe);
        } catch {
          // an earlier type confusion left no object to change: this mutation does not apply
        }
      }
      return generated(fixture, applied, req as RawCheckRequest);
    });
  if (options.wire) return mutated;
  const random = fc.anything({ maxDepth: 3 }).map((v) => generated(`(random value ${fc.stringify(v).slice(0, 200)})`, [], v as RawCheckRequest));
  return fc.oneof({ arbitrary: mutated, weight: 11 }, { arbitrary: random, weight: 1 });
}
