/**
 * Fail-closed review of the Check request path (SPEC §1 "fails closed", §3, §4, §6, §9): inputs the
 * existing suites did not reach, each asserted with its exact verdict, reason code, message and
 * receipt. Pipelines are the in-process harness of test/hardening (fixture PKI bundle for
 * example.org, injected clock FIXED_NOW, fixed signing key, in-memory sink).
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { toCheckInput, UNDECODABLE_REQUEST, type RawCheckRequest } from '../../src/check/envoy.js';
import { decodeCheckRequest } from '../../src/check/request-wire.js';
import { MAX_RECEIPT_TEXT } from '../../src/check/pipeline.js';
import { DenyError } from '../../src/errors.js';
import { IdentityResolver } from '../../src/identity/resolve.js';
import { parseSvidLeaf, SvidCache } from '../../src/spiffe/x509-svid.js';
import { readAnswer, type Answer } from '../hardening/support/answers.js';
import { MemorySink, startHarness, verifyReceiptLines, type Harness } from '../hardening/support/pipeline.js';
import { DEMO_POLICY } from '../hardening/support/policies.js';
import { fixtureRequest, type FixtureRequest } from '../helpers/service.js';
import { createRootCa, issueSvid, rawExtension, TEST_NOW, type IssuedSvid, type TestCa } from '../helpers/test-ca.js';
import { bundleSetOf, contentOf } from '../spiffe/trust-helpers.js';

const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';

let harness: Harness;
let sink: MemorySink;

beforeAll(async () => {
  sink = new MemorySink();
  harness = await startHarness({ policyText: DEMO_POLICY, sink });
});

interface Receipt {
  id: string;
  verdict: string;
  reasons: Array<{ code: string; message: string }>;
  request: { id: string | null; method: string | null; host: string | null; path: string | null; source: string | null };
  runtimeAttestation: { workloadIdentity: { uri: string } | null };
}

/** One Check through the harness: its answer and its receipt (found by the answer's receipt id). */
async function decide(raw: RawCheckRequest): Promise<{ answer: Answer; receipt: Receipt }> {
  const answer = readAnswer(await harness.pipeline.check(raw));
  const line = sink.lines.find((l) => l.includes(`"id":"${answer.receiptId ?? 'none'}"`));
  if (line === undefined) throw new Error(`no receipt ${String(answer.receiptId)}`);
  const receipt = JSON.parse(line) as Receipt;
  expect(receipt.id).toBe(answer.receiptId);
  expect(receipt.verdict).toBe(answer.verdict);
  expect(receipt.reasons[0]?.code ?? null).toBe(answer.reason);
  return { answer, receipt };
}

function fullRequest(): FixtureRequest {
  return fixtureRequest('http-mtls-spiffe-full');
}

function http(req: FixtureRequest): NonNullable<NonNullable<FixtureRequest['attributes']['request']>['http']> {
  const h = req.attributes.request?.http;
  if (!h) throw new Error('fixture without http');
  return h;
}

// ---------------------------------------------------------------------------------------------
// CheckRequest wire format (src/check/request-wire.ts)

/** protobuf varint bytes of `value` (a bigint), padded with 0x80 continuation bytes to `minBytes`. */
function varint(value: bigint, minBytes = 1): number[] {
  const out: number[] = [];
  let v = value;
  do {
    out.push(Number(v & 0x7fn));
    v >>= 7n;
  } while (v > 0n);
  while (out.length < minBytes) out.push(0);
  return out.map((b, i) => (i < out.length - 1 ? b | 0x80 : b));
}

const len = (field: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([(field << 3) | 2, ...varint(BigInt(body.length))]), body]);
/** CheckRequest{attributes{source{<peer bytes>}}} */
const withPeer = (peer: Buffer): Buffer => len(1, len(1, peer));
/** Peer.principal (4) with its length written as `lengthValue` in `minBytes` varint bytes. */
const principalField = (text: string, lengthValue: bigint, minBytes = 1): Buffer =>
  Buffer.concat([Buffer.from([(4 << 3) | 2, ...varint(lengthValue, minBytes)]), Buffer.from(text)]);

describe('wire: lengths and tags beyond 32 bits, field number 0', () => {
  const P = 'spiffe://example.org/ns/default/sa/frontend';

  it('a length of 2^32 + n is undecodable, not read as n (protobufjs drops the high bits); a padded n still decodes', async () => {
    const truncated = withPeer(principalField(P, 2n ** 32n + BigInt(P.length)));
    expect(decodeCheckRequest(truncated)).toBe(UNDECODABLE_REQUEST);
    expect(decodeCheckRequest(withPeer(principalField(P, 2n ** 35n + BigInt(P.length), 10)))).toBe(UNDECODABLE_REQUEST);
    // the same length, non-minimally encoded (legal protobuf): read as written
    expect(decodeCheckRequest(withPeer(principalField(P, BigInt(P.length), 10)))).toEqual({ attributes: { source: { principal: P } } });

    const { answer, receipt } = await decide(decodeCheckRequest(truncated));
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'malformed_request', httpStatus: 403 });
    expect(receipt.reasons).toEqual([{ code: 'malformed_request', message: 'CheckRequest is not a decodable protobuf message' }]);
  });

  it('a tag of 2^32 or more is undecodable, not read as its low 32 bits', () => {
    // tag 0x0a (field 1, LEN) with bit 32 set in the fifth byte
    const attributes = withPeer(principalField(P, BigInt(P.length))); // CheckRequest{attributes{source{principal}}}
    const bad = Buffer.concat([Buffer.from([0x8a, 0x80, 0x80, 0x80, 0x10]), attributes.subarray(1)]);
    expect(decodeCheckRequest(bad)).toBe(UNDECODABLE_REQUEST);
    const padded = Buffer.concat([Buffer.from([0x8a, 0x80, 0x80, 0x80, 0x00]), attributes.subarray(1)]);
    expect(decodeCheckRequest(padded)).toEqual({ attributes: { source: { principal: P } } });
  });

  it('field number 0 (in a message or a map entry) is undecodable', () => {
    const principal = principalField(P, BigInt(P.length));
    expect(decodeCheckRequest(withPeer(Buffer.concat([Buffer.from([0x00, 0x01]), principal])))).toBe(UNDECODABLE_REQUEST);
    expect(decodeCheckRequest(Buffer.concat([Buffer.from([0x02, 0x00]), withPeer(principal)]))).toBe(UNDECODABLE_REQUEST);
    const entry = Buffer.concat([len(1, Buffer.from('k')), Buffer.from([0x05, 1, 2, 3, 4]), len(2, Buffer.from('v'))]);
    expect(decodeCheckRequest(len(1, len(10, entry)))).toBe(UNDECODABLE_REQUEST);
  });

  it('any length value with a bit at 32 or above is undecodable; the low bits alone, however padded, decode (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.bigInt({ min: 1n, max: 2n ** 38n - 1n }), fc.integer({ min: 1, max: 10 }), (text, high, pad) => {
        const n = BigInt(Buffer.byteLength(text));
        expect(decodeCheckRequest(withPeer(principalField(text, (high << 32n) + n)))).toBe(UNDECODABLE_REQUEST);
        expect(decodeCheckRequest(withPeer(principalField(text, n, pad)))).toEqual({ attributes: { source: { principal: text } } });
      }),
      { numRuns: 300 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// headers (src/check/envoy.ts)

describe('headers: the 512-header limit counts lower-cased names', () => {
  const headerMap = (extra: Array<{ key: string; value: string }>): FixtureRequest => {
    const req = fullRequest();
    const list = Object.entries(http(req).headers ?? {}).map(([key, value]) => ({ key, value }));
    delete http(req).headers;
    for (let i = list.length; list.length < 511; i++) list.push({ key: `x-filler-${i}`, value: 'v' });
    http(req).header_map = { headers: [...list, ...extra] };
    return req;
  };

  it('the 512th name repeated in another case is joined, not refused as a 513th distinct header', async () => {
    const req = headerMap([
      { key: 'x-extra', value: 'one' },
      { key: 'X-Extra', value: 'two' },
    ]);
    const input = toCheckInput(req);
    expect(input.headers.size).toBe(512);
    expect(input.headers.get('x-extra')).toBe('one,two');
    const { answer, receipt } = await decide(req);
    expect(answer).toMatchObject({ verdict: 'allow', reason: null, workloadId: FRONTEND });
    expect(receipt.reasons).toEqual([]);
  });

  it('a real 513th distinct name is still malformed_request with a receipt', async () => {
    const { answer, receipt } = await decide(headerMap([
      { key: 'x-extra', value: 'one' },
      { key: 'X-Other', value: 'two' },
    ]));
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'malformed_request' });
    expect(receipt.reasons).toEqual([{ code: 'malformed_request', message: 'more than 512 distinct headers' }]);
  });
});

// ---------------------------------------------------------------------------------------------
// X.509-SVID basicConstraints (src/spiffe/x509-svid.ts)

describe('X.509-SVID: a basicConstraints that is not SEQUENCE { cA BOOLEAN, pathLen INTEGER } is malformed', () => {
  let root: TestCa;
  const bc = (hex: string) => rawExtension('2.5.29.19', true, Buffer.from(hex, 'hex'));
  const leafWith = (hex: string): Promise<IssuedSvid> => issueSvid(root, { uris: [FRONTEND], ca: null, extensions: [bc(hex)] });
  const denial = (fn: () => unknown): DenyError => {
    try {
      fn();
    } catch (err) {
      if (err instanceof DenyError) return err;
      throw err;
    }
    throw new Error('expected a DenyError');
  };

  beforeAll(async () => {
    root = await createRootCa({ trustDomain: 'example.org' });
  });

  it.each([
    ['cA TRUE after the pathLenConstraint', '3006020100' + '0101ff', 'BOOLEAN'],
    ['an OCTET STRING where cA belongs', '30030401ff', 'OCTET STRING'],
    ['a third element', '30090101ff020100020100', 'INTEGER'],
  ])('%s → malformed_certificate (it was read as cA=false: a CA accepted as a leaf)', async (_name, hex, what) => {
    const leaf = await leafWith(hex);
    const err = denial(() => parseSvidLeaf(leaf.der));
    expect(err.code).toBe('malformed_certificate');
    expect(err.message).toMatch(new RegExp(`^certificate: invalid DER: unexpected ${what} in BasicConstraints \\(at byte \\d+\\)$`));
  });

  it('well-formed values keep their meaning: explicit cA FALSE is a leaf, cA TRUE with a pathLen is svid_is_ca', async () => {
    expect(parseSvidLeaf((await leafWith('3003010100')).der).spiffeId.uri).toBe(FRONTEND);
    const caLeaf = await leafWith('30060101ff020100');
    expect(denial(() => parseSvidLeaf(caLeaf.der)).code).toBe('svid_is_ca');
  });

  it('through the identity stage: no identity, malformed_certificate — with or without a bundle for the trust domain', async () => {
    const leaf = await leafWith('3006020100' + '0101ff');
    const input = { ...toCheckInput(fullRequest()), certificate: leaf.envoyEncoded, principal: null };
    for (const bundles of [undefined, bundleSetOf(contentOf('example.org', [root])).set]) {
      const resolver = new IdentityResolver({ sources: ['certificate'], svidCache: new SvidCache(10), clock: () => TEST_NOW, bundles });
      const out = resolver.resolve(input);
      // before the fix: without a bundle an Envoy-attested identity, with one untrusted_svid
      expect(out.identity).toBeNull();
      expect(out.error?.code).toBe('malformed_certificate');
    }
  });

  it('through the pipeline: deny malformed_certificate with a receipt naming no workload', async () => {
    const leaf = await leafWith('3006020100' + '0101ff');
    const req = fullRequest();
    if (req.attributes.source) req.attributes.source.certificate = leaf.envoyEncoded;
    const { answer, receipt } = await decide(req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'malformed_certificate', httpStatus: 403 });
    expect(receipt.reasons[0]?.message).toMatch(/^certificate: invalid DER: unexpected BOOLEAN in BasicConstraints \(at byte \d+\)$/);
    expect(receipt.runtimeAttestation.workloadIdentity).toBeNull();
  });
});

describe('X.509-SVID: a critical extension chio does not process is rejected (RFC 5280 §4.2)', () => {
  let root: TestCa;
  const MESSAGE = 'certificate has a critical extension chio does not process (1.2.3.4); RFC 5280 §4.2 requires rejecting it';
  const leafWith = (oid: string, critical: boolean): Promise<IssuedSvid> =>
    issueSvid(root, { uris: [FRONTEND], extensions: [rawExtension(oid, critical, Buffer.from('0500', 'hex'))] });

  beforeAll(async () => {
    root = await createRootCa({ trustDomain: 'example.org' });
  });

  it('an unknown critical extension → malformed_certificate naming its OID; the same extension non-critical is ignored', async () => {
    const critical = await leafWith('1.2.3.4', true);
    expect(() => parseSvidLeaf(critical.der)).toThrow(expect.objectContaining({ code: 'malformed_certificate', message: MESSAGE }));
    expect(parseSvidLeaf((await leafWith('1.2.3.4', false)).der).spiffeId.uri).toBe(FRONTEND);
  });

  it('a critical certificatePolicies does not narrow what the SVID proves here: accepted', async () => {
    const leaf = await issueSvid(root, { uris: [FRONTEND], extensions: [rawExtension('2.5.29.32', true, Buffer.from('3006300406022a03', 'hex'))] });
    expect(parseSvidLeaf(leaf.der).spiffeId.uri).toBe(FRONTEND);
  });

  it('through the identity stage with a bundle the chain verifies against: still malformed_certificate', async () => {
    const leaf = await leafWith('1.2.3.4', true);
    const input = { ...toCheckInput(fullRequest()), certificate: leaf.envoyEncoded, principal: null };
    const resolver = new IdentityResolver({ sources: ['certificate'], svidCache: new SvidCache(10), clock: () => TEST_NOW, bundles: bundleSetOf(contentOf('example.org', [root])).set });
    const out = resolver.resolve(input);
    expect(out.identity).toBeNull();
    expect(out.error).toMatchObject({ code: 'malformed_certificate', message: MESSAGE });
  });
});

describe('identity: a principal or XFCC URI that names a bare trust domain is no workload', () => {
  it('source.principal spiffe://example.org (no certificate) → malformed_spiffe_id', async () => {
    const req = fullRequest();
    if (req.attributes.source) {
      req.attributes.source.principal = 'spiffe://example.org';
      delete req.attributes.source.certificate;
    }
    const { answer, receipt } = await decide(req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'malformed_spiffe_id' });
    expect(receipt.reasons[0]?.message).toBe('source.principal "spiffe://example.org" names a trust domain, not a workload (an X509-SVID\'s SPIFFE ID has a path)');
  });

  it('an XFCC element URI=spiffe://example.org (no Cert) → malformed_spiffe_id', async () => {
    const req = fullRequest();
    if (req.attributes.source) {
      delete req.attributes.source.principal;
      delete req.attributes.source.certificate;
    }
    (http(req).headers as Record<string, string>)['x-forwarded-client-cert'] = 'By=spiffe://example.org/ns/default/sa/backend;URI=spiffe://example.org';
    const { answer, receipt } = await decide(req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'malformed_spiffe_id' });
    expect(receipt.reasons[0]?.message).toBe('x-forwarded-client-cert URI "spiffe://example.org" names a trust domain, not a workload (an X509-SVID\'s SPIFFE ID has a path)');
  });
});

// ---------------------------------------------------------------------------------------------
// receipts of clipped request text (src/check/pipeline.ts, src/check/envoy.ts)

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('receipts: clipped request text never ends in half a surrogate pair (JCS strings are I-JSON)', () => {
  it('a path with an emoji where the cut falls: the receipt holds the path as matched, the emoji percent-encoded', async () => {
    const req = fullRequest();
    const prefix = '/api/v1/orders/' + 'a'.repeat(MAX_RECEIPT_TEXT - 1 - '/api/v1/orders/'.length);
    http(req).path = `${prefix}\u{1F600}tail`;
    const { answer, receipt } = await decide(req);
    expect(answer.verdict).toBe('allow');
    expect(receipt.request.path).toBe(`${prefix}%…`);
    expect(LONE_SURROGATE.test(receipt.request.path ?? '')).toBe(false);
    expect(verifyReceiptLines(sink.lines, harness.key).failure).toBeNull();
  });

  it('an x-request-id whose 128-character cut falls inside an emoji', async () => {
    const req = fullRequest();
    const id = 'r'.repeat(127) + '\u{1F600}';
    (http(req).headers as Record<string, string>)['x-request-id'] = id;
    expect(toCheckInput(req).requestId).toBe('r'.repeat(127));
    const { receipt } = await decide(req);
    expect(receipt.request.id).toBe('r'.repeat(127));
  });
});

// ---------------------------------------------------------------------------------------------
// JWT-SVID header that is a Bearer credential but not exactly one token (src/identity/resolve.ts)

describe('identity: a malformed Bearer credential', () => {
  // Two `authorization: Bearer …` headers (joined `,` by Envoy / readHeaders) or a Bearer value with
  // two tokens made bearerToken() return null, and the presented credential was silently ignored
  // (an allow by the certificate). SPEC §4: a presented credential that fails validation is a deny.
  it('one garbage Bearer token next to the certificate is jwt_svid_invalid', async () => {
    const req = fullRequest();
    (http(req).headers as Record<string, string>)['authorization'] = 'Bearer a.b.c';
    const { answer } = await decide(req);
    expect(answer).toMatchObject({ verdict: 'deny', reason: 'jwt_svid_invalid' });
  });

  it.each(['Bearer a.b.c,Bearer d.e.f', 'Bearer a.b.c d.e.f', 'Bearer', 'Basic dXNlcjpwYXNz, Bearer a.b.c', ' bearer'])(
    '%j next to the certificate is a deny, not an allow',
    async (value) => {
      const req = fullRequest();
      (http(req).headers as Record<string, string>)['authorization'] = value;
      const { answer, receipt } = await decide(req);
      expect(answer).toMatchObject({ verdict: 'deny', reason: 'jwt_svid_invalid' });
      expect(receipt.reasons[0]?.message).toBe('JWT-SVID header is not one Bearer token (RFC 6750 §2.1)');
    },
  );

  it.each(['Basic dXNlcjpwYXNz', 'Bearerish a.b.c', 'Token abc'])('%j (not the Bearer scheme) is no JWT-SVID: the certificate decides', async (value) => {
    const req = fullRequest();
    (http(req).headers as Record<string, string>)['authorization'] = value;
    const { answer } = await decide(req);
    expect(answer.verdict).toBe('allow');
  });
});
