import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AUTHORIZATION_SERVICE, header, loadAuthProtos, structOf, type CheckResponseMessage } from '../../src/check/envoy.js';
import { allowResponse, denyResponse, type ResponseFacts } from '../../src/check/respond.js';
import { encodeCheckResponse } from '../../src/check/response-wire.js';

const check = loadAuthProtos()[AUTHORIZATION_SERVICE] as unknown as {
  Check: { responseSerialize: (m: CheckResponseMessage) => Buffer; responseDeserialize: (b: Buffer) => unknown };
};
const protobufjs = (m: CheckResponseMessage): Buffer => check.Check.responseSerialize(m);
const decode = (b: Buffer): unknown => check.Check.responseDeserialize(b);

// well-formed strings (a lone surrogate has no UTF-8 form: protobufjs and Buffer write it differently)
const text = fc.string({ unit: 'grapheme', maxLength: 40 });
const facts: fc.Arbitrary<ResponseFacts> = fc.record({
  verdict: fc.constantFrom('allow' as const, 'deny' as const),
  receiptId: fc.option(fc.constant('rct-01M8AR3XPXKANWST0Y0Z54H4YS'), { nil: null }),
  rule: fc.option(text, { nil: null }),
  tool: fc.option(text, { nil: null }),
  tier: fc.constantFrom('none', 'basic', 'attested', 'verified'),
  workloadId: fc.option(text, { nil: null }),
  reason: fc.option(fc.constantFrom('tool_blocked', 'identity_required', 'overloaded'), { nil: null }),
  httpStatus: fc.constantFrom(401 as const, 403 as const, 503 as const, null),
});
const headerNames = fc.array(fc.string({ unit: fc.constantFrom('x', '-', 'c', 'h', 'i', 'o', 'é'), maxLength: 12 }).map((s) => `x-chio-${s}`), { maxLength: 6 });

describe('encodeCheckResponse', () => {
  it('writes exactly the bytes protobufjs writes for every allow and deny the pipeline builds (property)', () => {
    fc.assert(
      fc.property(facts, headerNames, (f, names) => {
        const input = { headers: new Map(names.map((n) => [n, 'v'])) } as never;
        for (const msg of [allowResponse(f, input, 'x-chio-capability'), denyResponse(f)]) {
          const ours = encodeCheckResponse(msg);
          expect(ours).not.toBeNull();
          expect(ours!.equals(protobufjs(msg))).toBe(true);
          expect(decode(ours!)).toEqual(decode(protobufjs(msg)));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('decodes with the official protos to the message it was given', () => {
    const msg: CheckResponseMessage = {
      status: { code: 0 },
      ok_response: {
        headers: [header('x-chio-receipt-id', 'rct-01M8AR3XPXKANWST0Y0Z54H4YS'), header('x-chio-workload-id', 'spiffe://example.org/ns/default/sa/frontend')],
        headers_to_remove: ['x-chio-capability', 'x-chio-verdict'],
      },
      dynamic_metadata: structOf({ receiptId: 'rct-01M8AR3XPXKANWST0Y0Z54H4YS', rule: null, verdict: 'allow' }),
    };
    expect(decode(encodeCheckResponse(msg)!)).toEqual({
      status: { code: 0 },
      ok_response: {
        headers: [
          { header: { key: 'x-chio-receipt-id', value: 'rct-01M8AR3XPXKANWST0Y0Z54H4YS' }, append: { value: false } },
          { header: { key: 'x-chio-workload-id', value: 'spiffe://example.org/ns/default/sa/frontend' }, append: { value: false } },
        ],
        headers_to_remove: ['x-chio-capability', 'x-chio-verdict'],
      },
      http_response: 'ok_response',
      dynamic_metadata: {
        fields: { receiptId: { stringValue: 'rct-01M8AR3XPXKANWST0Y0Z54H4YS', kind: 'stringValue' }, rule: { nullValue: 'NULL_VALUE', kind: 'nullValue' }, verdict: { stringValue: 'allow', kind: 'stringValue' } },
      },
    });
  });

  it('handles long strings (multi-byte length varints) and a status message', () => {
    const long = 'é'.repeat(70_000);
    const msg: CheckResponseMessage = {
      status: { code: 7, message: long },
      denied_response: { status: { code: 403 }, headers: [header('content-type', 'application/json')], body: long },
      dynamic_metadata: structOf({ reason: long }),
    };
    expect(encodeCheckResponse(msg)!.equals(protobufjs(msg))).toBe(true);
  });

  it('leaves any other shape to protobufjs (null)', () => {
    const base: CheckResponseMessage = { status: { code: 0 } };
    expect(encodeCheckResponse(base)!.equals(protobufjs(base))).toBe(true);
    const odd = [
      { ...base, extra: 1 },
      { status: { code: -1 } },
      { status: { code: 0, message: 5 } },
      { status: { code: 7 }, denied_response: { status: { code: 'Forbidden' }, headers: [], body: '' } },
      { status: { code: 0 }, ok_response: { headers: [{ header: { key: 'k', value: 'v' } }], headers_to_remove: [] } },
      { status: { code: 0 }, dynamic_metadata: { fields: { a: { numberValue: 1 } } } },
      { status: { code: 0 }, ok_response: { headers: [], headers_to_remove: [] }, denied_response: { status: { code: 403 }, headers: [], body: '' } },
      // members this encoder does not write: protobufjs must, or they would be dropped silently
      { status: { code: 7, details: [] } },
      { status: { code: 0 }, ok_response: { headers: [], headers_to_remove: [], response_headers_to_add: [] } },
      { status: { code: 7 }, denied_response: { status: { code: 403 }, headers: [{ header: { key: 'k', value: 'v', raw_value: Buffer.from('x') }, append: { value: false } }], body: '' } },
      { status: { code: 0 }, ok_response: { headers: [{ header: { key: 'k', value: 'v' }, append: { value: false }, keep_empty_value: true }], headers_to_remove: [] } },
    ];
    for (const msg of odd) expect(encodeCheckResponse(msg as unknown as CheckResponseMessage)).toBeNull();
  });
});
