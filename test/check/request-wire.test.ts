/**
 * src/check/request-wire.ts against proto-loader on the official Envoy protos: the same fields for
 * every well-formed CheckRequest (the reference fixtures and generated messages with every field
 * of the schema set, read or not), never a throw on hostile bytes, and stricter where protobufjs is
 * lenient (truncation, wrong wire types).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AUTHORIZATION_SERVICE, loadAuthProtos, toCheckInput, UNDECODABLE_REQUEST, type RawCheckRequest } from '../../src/check/envoy.js';
import { decodeCheckRequest } from '../../src/check/request-wire.js';
import { DenyError } from '../../src/errors.js';
import { deepMetadataMessage } from '../hardening/support/wire.js';
import { FIXTURES } from '../helpers/service.js';

const REQ_DIR = path.join(FIXTURES, 'envoy', 'check-requests');
const FIXTURE_NAMES = readdirSync(REQ_DIR).filter((f) => f.endsWith('.pb')).map((f) => f.slice(0, -3));
const fixture = (name: string): Buffer => readFileSync(path.join(REQ_DIR, `${name}.pb`));

const method = (loadAuthProtos()[AUTHORIZATION_SERVICE] as unknown as { Check: { requestDeserialize(b: Buffer): unknown; requestSerialize(v: unknown): Buffer } }).Check;

/** proto-loader's decode, or undefined where protobufjs throws. */
function protoLoader(bytes: Buffer): RawCheckRequest | undefined {
  try {
    return method.requestDeserialize(bytes) as RawCheckRequest;
  } catch {
    return undefined;
  }
}

type Loose = Record<string, unknown> | undefined;
const sortedEntries = (m: unknown): Array<[string, unknown]> | undefined =>
  m === undefined ? undefined : Object.entries(m as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
const hex = (b: unknown): string | undefined => (b === undefined ? undefined : Buffer.from(b as Uint8Array).toString('hex'));

/** Exactly the fields the Check path reads (src/check/envoy.ts toCheckInput), presence included. */
function projection(raw: RawCheckRequest): unknown {
  const a = raw.attributes as Loose;
  if (a === undefined) return {};
  const peer = (p: Loose): unknown => {
    if (p === undefined) return undefined;
    const addr = p['address'] as Loose;
    const sa = addr?.['socket_address'] as Loose;
    const pipe = addr?.['pipe'] as Loose;
    return {
      principal: p['principal'],
      certificate: p['certificate'],
      address: addr && {
        socket_address: sa && { address: sa['address'], port_value: sa['port_value'] },
        pipe: pipe && { path: pipe['path'] },
      },
    };
  };
  const req = a['request'] as Loose;
  const http = req?.['http'] as Loose;
  const hm = http?.['header_map'] as Loose;
  return {
    source: peer(a['source'] as Loose),
    context_extensions: sortedEntries(a['context_extensions']),
    request: req && {
      http: http && {
        id: http['id'],
        method: http['method'],
        path: http['path'],
        host: http['host'],
        headers: sortedEntries(http['headers']),
        header_map: hm && {
          headers: (hm['headers'] as Loose[] | undefined)?.map((h) => ({ key: h?.['key'], value: h?.['value'], raw_value: hex(h?.['raw_value']) })),
        },
      },
    },
  };
}

/** What the pipeline makes of a decoded request: its CheckInput, or the deny it raises. */
function checkInputOf(raw: RawCheckRequest): unknown {
  try {
    const i = toCheckInput(raw);
    return { ...i, headers: [...i.headers], contextExtensions: [...i.contextExtensions] };
  } catch (err) {
    if (err instanceof DenyError) return { deny: err.code, message: err.message };
    throw err;
  }
}

// ---- generated CheckRequests: every field of the schema, read or skipped ----

const text = fc.oneof(fc.string({ maxLength: 24 }), fc.string({ unit: 'grapheme', maxLength: 12 }), fc.string({ unit: 'binary', maxLength: 8 }));
const mapKey = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom(':path', ':authority', 'x-request-id', 'host', 'x-chio-capability', '__proto__'));
const stringMap = fc.dictionary(mapKey, text, { maxKeys: 5 });
const u32 = fc.oneof(fc.nat({ max: 65535 }), fc.nat({ max: 0xffffffff }));
const socketAddress = fc.record(
  { protocol: fc.constantFrom('TCP', 'UDP'), address: text, port_value: u32, resolver_name: text, ipv4_compat: fc.boolean() },
  { requiredKeys: [] },
);
const address = fc.oneof(
  fc.record({ socket_address: socketAddress }),
  fc.record({ pipe: fc.record({ path: text, mode: fc.nat({ max: 511 }) }, { requiredKeys: [] }) }),
  fc.record({ socket_address: socketAddress, named: fc.constant(true) }).map(({ socket_address }) => ({ socket_address: { ...socket_address, named_port: 'http' } })),
);
const peer = fc.record(
  { address, service: text, labels: stringMap, principal: text, certificate: fc.oneof(text, fc.constant('-----BEGIN%20CERTIFICATE-----%0AMIIB%0A')) },
  { requiredKeys: [] },
);
const headerValue = fc.record({ key: text, value: text, raw_value: fc.uint8Array({ maxLength: 8 }).map((u) => Buffer.from(u)) }, { requiredKeys: [] });
const http = fc.record(
  {
    id: text,
    method: fc.oneof(text, fc.constantFrom('GET', 'POST')),
    headers: stringMap,
    header_map: fc.record({ headers: fc.array(headerValue, { maxLength: 4 }) }),
    path: fc.oneof(text, fc.constantFrom('/api/v1/orders?x=1', '/a/./b//c')),
    host: text,
    scheme: text,
    query: text,
    fragment: text,
    size: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
    protocol: text,
    body: text,
    raw_body: fc.uint8Array({ maxLength: 32 }).map((u) => Buffer.from(u)),
  },
  { requiredKeys: [] },
);
const structValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.record({ stringValue: text }),
    fc.record({ numberValue: fc.double({ noNaN: true }) }),
    fc.record({ structValue: tie('struct') }),
  ),
  struct: fc.record({ fields: fc.dictionary(fc.string({ maxLength: 6 }).filter((k) => k !== '__proto__'), tie('value'), { maxKeys: 3 }) }),
})).struct;
const checkRequest = fc.record(
  {
    attributes: fc.record(
      {
        source: peer,
        destination: peer,
        request: fc.record({ time: fc.record({ seconds: fc.nat().map(String), nanos: fc.nat({ max: 999_999_999 }) }), http }, { requiredKeys: [] }),
        context_extensions: stringMap,
        metadata_context: fc.record({ filter_metadata: fc.dictionary(fc.constantFrom('envoy.filters.http.jwt_authn', 'x'), structValue, { maxKeys: 2 }) }),
        tls_session: fc.record({ sni: text }),
      },
      { requiredKeys: [] },
    ),
  },
  { requiredKeys: [] },
);

describe('decodeCheckRequest', () => {
  it.each(FIXTURE_NAMES)('reads the reference request %s as proto-loader does', (name) => {
    const bytes = fixture(name);
    const ours = decodeCheckRequest(bytes);
    const theirs = protoLoader(bytes) as RawCheckRequest;
    expect(ours).not.toBe(UNDECODABLE_REQUEST);
    expect(projection(ours)).toEqual(projection(theirs));
    expect(checkInputOf(ours)).toEqual(checkInputOf(theirs));
  });

  it('reads every generated CheckRequest (every field of the schema set) as proto-loader does (property)', () => {
    fc.assert(
      fc.property(checkRequest, (msg) => {
        const bytes = method.requestSerialize(msg);
        const ours = decodeCheckRequest(bytes);
        const theirs = protoLoader(bytes);
        expect(theirs).toBeDefined();
        expect(ours).not.toBe(UNDECODABLE_REQUEST);
        expect(projection(ours)).toEqual(projection(theirs as RawCheckRequest));
        expect(checkInputOf(ours)).toEqual(checkInputOf(theirs as RawCheckRequest));
      }),
      { numRuns: 400 },
    );
  });

  it('padded varints (valid protobuf, never sent by Envoy) are read whole: a tag and a length of 6 and 7 bytes', () => {
    const id = 'spiffe://example.org/ns/default/sa/frontend';
    /** `n` as a varint of exactly `bytes` bytes (continuation bits set on all but the last) */
    const padded = (n: number, bytes: number): Buffer => {
      const out: number[] = [];
      for (let i = 0; i < bytes - 1; i++, n >>>= 7) out.push((n & 0x7f) | 0x80);
      out.push(n & 0x7f);
      return Buffer.from(out);
    };
    const field1 = (body: Buffer): Buffer => Buffer.concat([Buffer.from([0x0a, body.length]), body]);
    const principal = Buffer.concat([padded((4 << 3) | 2, 6), padded(id.length, 7), Buffer.from(id)]); // Peer.principal (4)
    const request = field1(field1(principal)); // CheckRequest.attributes(1).source(1)
    const decoded = decodeCheckRequest(request);
    expect(decoded).not.toBe(UNDECODABLE_REQUEST);
    expect(toCheckInput(decoded as RawCheckRequest).principal).toBe(id);
    // protobufjs skips the padded bytes past the fifth and loses its place (why the differential test never pads)
    expect(protoLoader(request)?.attributes?.source?.principal).not.toBe(id);
  });

  it('never throws on damaged reference requests, and whenever both decode they agree (property)', () => {
    const names = fc.constantFrom(...FIXTURE_NAMES);
    const damaged = fc.oneof(
      names.chain((n) =>
        fc.array(fc.tuple(fc.nat({ max: fixture(n).length - 1 }), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 6 }).map((flips) => {
          const b = Buffer.from(fixture(n));
          for (const [i, bit] of flips) b[i] = (b[i] as number) ^ (1 << bit);
          return b;
        }),
      ),
      names.chain((n) => fc.nat({ max: fixture(n).length }).map((cut) => fixture(n).subarray(0, cut))),
      names.chain((n) =>
        fc.tuple(fc.nat({ max: fixture(n).length }), fc.uint8Array({ minLength: 1, maxLength: 12 })).map(([i, junk]) =>
          Buffer.concat([fixture(n).subarray(0, i), Buffer.from(junk), fixture(n).subarray(i)]),
        ),
      ),
      fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u)),
    );
    let bothDecoded = 0;
    fc.assert(
      fc.property(damaged, (bytes) => {
        const ours = decodeCheckRequest(bytes);
        const theirs = protoLoader(bytes);
        if (ours === UNDECODABLE_REQUEST || theirs === undefined) return;
        bothDecoded++;
        expect(projection(ours)).toEqual(projection(theirs));
        expect(checkInputOf(ours)).toEqual(checkInputOf(theirs));
      }),
      { numRuns: 2000 },
    );
    expect(bothDecoded).toBeGreaterThan(100); // the comparison really ran
  });

  const full = (): Buffer => fixture('http-mtls-spiffe-full');

  it('a message cut anywhere inside a field is undecodable', () => {
    for (const keep of [1, 2, 10, 100, full().length - 5, full().length - 1]) {
      expect(decodeCheckRequest(full().subarray(0, keep))).toBe(UNDECODABLE_REQUEST);
    }
  });

  // bytes of a CheckRequest built by hand: tag = field << 3 | wire type
  const len = (field: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([(field << 3) | 2, body.length]), body]);
  const withSource = (peerBytes: Buffer): Buffer => len(1, len(1, peerBytes));

  it('a field it reads with another wire type is undecodable (principal sent as a varint)', () => {
    expect(decodeCheckRequest(withSource(Buffer.from([(4 << 3) | 0, 5])))).toBe(UNDECODABLE_REQUEST);
  });

  it('a declared field it skips, with another wire type than declared, is undecodable (protobufjs loses its place there)', () => {
    // Peer.service (2) is a string; sent as a varint
    expect(decodeCheckRequest(withSource(Buffer.from([(2 << 3) | 0, 5])))).toBe(UNDECODABLE_REQUEST);
    // HttpRequest.size (9) is an int64 varint; sent length-delimited
    expect(decodeCheckRequest(len(1, len(4, len(2, len(9, Buffer.from('x'))))))).toBe(UNDECODABLE_REQUEST);
    // undeclared field numbers are skipped by their wire type, as protobuf says
    expect(decodeCheckRequest(withSource(Buffer.from([(9 << 3) | 0, 5, (10 << 3) | 5, 1, 2, 3, 4])))).toEqual({ attributes: { source: {} } });
  });

  it('groups and the reserved wire types are undecodable, even in fields it skips', () => {
    for (const wt of [3, 4, 6, 7]) expect(decodeCheckRequest(withSource(Buffer.from([(9 << 3) | wt, 0])))).toBe(UNDECODABLE_REQUEST);
  });

  it('a varint longer than 10 bytes, and a length past its message, are undecodable', () => {
    expect(decodeCheckRequest(withSource(Buffer.from([(9 << 3) | 0, ...new Array<number>(11).fill(0xff)])))).toBe(UNDECODABLE_REQUEST);
    const inner = Buffer.from([(4 << 3) | 2, 3, 0x61]); // principal claims 3 bytes, has 1
    expect(decodeCheckRequest(withSource(inner))).toBe(UNDECODABLE_REQUEST);
  });

  it('skips what it does not read without looking inside: a metadata_context nested deeper than protobufjs decodes', () => {
    const deep = deepMetadataMessage(150); // CheckRequest{attributes{metadata_context}}
    // a second `attributes` replaces the first (protobufjs replaces a repeated singular message, it does not merge)
    const principal = len(1, len(1, len(4, Buffer.from('spiffe://example.org/a'))));
    expect(protoLoader(deep)).toBeUndefined();
    expect(decodeCheckRequest(deep)).toEqual({ attributes: {} });
    expect(decodeCheckRequest(Buffer.concat([deep, principal]))).toEqual({ attributes: { source: { principal: 'spiffe://example.org/a' } } });
  });

  it('keeps a `__proto__` header as an ordinary header (null-prototype maps)', () => {
    const entry = Buffer.concat([len(1, Buffer.from('__proto__')), len(2, Buffer.from('x'))]);
    const http = len(3, entry);
    const bytes = len(1, len(4, len(2, http)));
    const ours = decodeCheckRequest(bytes);
    const headers = ours.attributes?.request?.http?.headers as Record<string, string>;
    expect(Object.getPrototypeOf(headers)).toBeNull();
    expect(Object.keys(headers)).toEqual(['__proto__']);
    expect(headers['__proto__']).toBe('x');
    expect(checkInputOf(ours)).toMatchObject({ headers: [['__proto__', 'x']] });
  });

  it('the empty message decodes to no attributes (denied malformed_request by the pipeline)', () => {
    expect(decodeCheckRequest(Buffer.alloc(0))).toEqual({});
    expect(checkInputOf(decodeCheckRequest(Buffer.alloc(0)))).toEqual({ deny: 'malformed_request', message: 'CheckRequest has no attributes' });
  });
});

