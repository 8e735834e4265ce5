import { createHash } from 'node:crypto';
import * as ed from '@noble/ed25519';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import canonicalizeModule from 'canonicalize';
import fc from 'fast-check';
import { decodeTime } from 'ulid';
import { describe, expect, it } from 'vitest';
import { TIERS } from '../../src/attestation/tier.js';
import { DENY_CODES } from '../../src/errors.js';
import { CREDENTIAL_KINDS } from '../../src/identity/identity.js';
import { keyFromSeed } from '../../src/keys.js';
import {
  RECEIPT_ID_PATTERN,
  ReceiptChain,
  receiptTexts,
  type Receipt,
  type ReceiptDraft,
} from '../../src/receipt/receipt.js';

ed.hashes.sha512 = sha512;
// the package itself, as the oracle (CommonJS: the default import is the function at run time)
const canonicalize = canonicalizeModule as unknown as (value: unknown) => string;

const SEED = Buffer.alloc(32, 7);
const KEY = keyFromSeed(SEED);
const T0 = Date.UTC(2026, 10, 25, 21, 30, 0, 123);

const DRAFT: ReceiptDraft = {
  verdict: 'allow',
  rule: 'payments_write',
  tool: 'transfer_funds',
  capabilityId: null,
  reasons: [],
  request: { id: 'req-1', method: 'POST', host: 'payments.prod.svc.cluster.local', path: '/v1/transfers', source: '10.0.0.7:51234' },
  runtimeAttestation: {
    tier: 'attested',
    verifier: 'envoy',
    workloadIdentity: {
      scheme: 'spiffe',
      credentialKind: 'x509_svid',
      uri: 'spiffe://prod.chio/payments/worker',
      trustDomain: 'prod.chio',
      path: '/payments/worker',
    },
  },
  workloadIdentityMatch: { mode: 'require', matched: true },
  runtimeAssuranceMatch: { mode: 'require', tier: 'attested', matched: true },
  policyHash: `sha256:${'ab'.repeat(32)}`,
};

function fixedIds(): () => string {
  let n = 0;
  return () => `rct-01JD${String(++n).padStart(22, '0')}`;
}

const text = fc.string({ unit: 'binary', maxLength: 12 });
const nullableText = fc.option(text, { nil: null });
const drafts: fc.Arbitrary<ReceiptDraft> = fc.record({
  verdict: fc.constantFrom('allow' as const, 'deny' as const),
  rule: nullableText,
  tool: nullableText,
  capabilityId: nullableText,
  reasons: fc.array(fc.record({ code: fc.constantFrom(...DENY_CODES), message: text }), { maxLength: 3 }),
  request: fc.record({ id: nullableText, method: nullableText, host: nullableText, path: nullableText, source: nullableText }),
  runtimeAttestation: fc.record({
    tier: fc.constantFrom(...TIERS),
    verifier: nullableText,
    workloadIdentity: fc.option(
      fc.record({
        scheme: fc.constant('spiffe' as const),
        credentialKind: fc.constantFrom(...CREDENTIAL_KINDS),
        uri: text,
        trustDomain: text,
        path: text,
      }),
      { nil: null },
    ),
  }),
  workloadIdentityMatch: fc.option(fc.record({ mode: fc.constantFrom('require' as const, 'prefer' as const), matched: fc.boolean() }), {
    nil: null,
  }),
  runtimeAssuranceMatch: fc.option(
    fc.record({ mode: fc.constantFrom('require' as const, 'prefer' as const), tier: fc.constantFrom(...TIERS), matched: fc.boolean() }),
    { nil: null },
  ),
  policyHash: nullableText,
});

function withoutSignature(receipt: Receipt): Omit<Receipt, 'signature'> {
  const { signature, ...rest } = receipt;
  void signature;
  return rest;
}

describe('ReceiptChain.seal', () => {
  it('assembles exactly the JCS texts of the whole receipt (property, random drafts and heads)', () => {
    fc.assert(
      fc.property(
        drafts,
        fc.option(fc.record({ seq: fc.integer({ min: 1, max: 2 ** 40 }), hash: fc.uint8Array({ minLength: 32, maxLength: 32 }) })),
        fc.integer({ min: 0, max: 253402300799999 }),
        (draft, head, now) => {
          const chain = new ReceiptChain({
            key: KEY,
            clock: () => now,
            head: head === null ? null : { seq: head.seq, hash: `sha256:${Buffer.from(head.hash).toString('hex')}` },
          });
          const sealed = chain.seal(draft);
          expect(sealed.jcs).toBe(canonicalize(sealed.receipt));
          expect(JSON.parse(sealed.jcs)).toEqual(sealed.receipt);
          const unsigned = canonicalize(withoutSignature(sealed.receipt));
          expect(receiptTexts(sealed.receipt, sealed.receipt.signature)).toEqual({ unsigned, signed: sealed.jcs });
          expect(sealed.hash).toBe(`sha256:${Buffer.from(sha256(Buffer.from(sealed.jcs, 'utf8'))).toString('hex')}`);
          const signature = Buffer.from(sealed.receipt.signature.slice('ed25519:'.length), 'base64url');
          expect(ed.verify(signature, Buffer.from(unsigned, 'utf8'), KEY.publicKeyRaw)).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('produces the exact SPEC §6 receipt, signed byte-identically to @noble/ed25519', () => {
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null, newId: fixedIds() });
    const { receipt, jcs, hash } = chain.seal(DRAFT);
    const unsigned =
      '{"capabilityId":null,"id":"rct-01JD0000000000000000000001","kernelKey":"' +
      KEY.kid +
      '","policyHash":"sha256:' +
      'ab'.repeat(32) +
      '","prevHash":null,"reasons":[],"request":{"host":"payments.prod.svc.cluster.local","id":"req-1","method":"POST","path":"/v1/transfers","source":"10.0.0.7:51234"},' +
      '"rule":"payments_write","runtimeAssuranceMatch":{"matched":true,"mode":"require","tier":"attested"},' +
      '"runtimeAttestation":{"tier":"attested","verifier":"envoy","workloadIdentity":{"credentialKind":"x509_svid","path":"/payments/worker","scheme":"spiffe","trustDomain":"prod.chio","uri":"spiffe://prod.chio/payments/worker"}},' +
      '"schema":"chio.receipt.v1","seq":1,"timestamp":"2026-11-25T21:30:00.123Z","tool":"transfer_funds","verdict":"allow","workloadIdentityMatch":{"matched":true,"mode":"require"}}';
    const nobleSignature = Buffer.from(ed.sign(Buffer.from(unsigned, 'utf8'), SEED)).toString('base64url');
    expect(receipt.signature).toBe(`ed25519:${nobleSignature}`);
    expect(jcs).toBe(unsigned.replace(',"timestamp"', `,"signature":"ed25519:${nobleSignature}","timestamp"`));
    expect(hash).toBe(`sha256:${createHash('sha256').update(jcs).digest('hex')}`);
    expect(receipt.seq).toBe(1);
    expect(receipt.prevHash).toBeNull();
  });

  it('chains: seq + 1 and prevHash = sha256 of the previous full JCS', () => {
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    const first = chain.seal(DRAFT);
    const second = chain.seal({ ...DRAFT, verdict: 'deny', reasons: [{ code: 'tool_blocked', message: 'blocked' }] });
    expect(second.receipt.seq).toBe(2);
    expect(second.receipt.prevHash).toBe(first.hash);
    expect(chain.head).toEqual({ seq: 2, hash: second.hash });
  });

  it('continues from a given head and rewinds with reset()', () => {
    const head = { seq: 41, hash: `sha256:${'cd'.repeat(32)}` };
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head });
    const r42 = chain.seal(DRAFT);
    expect(r42.receipt.seq).toBe(42);
    expect(r42.receipt.prevHash).toBe(head.hash);
    chain.seal(DRAFT);
    chain.reset({ seq: 42, hash: r42.hash });
    const again = chain.seal(DRAFT);
    expect(again.receipt.seq).toBe(43);
    expect(again.receipt.prevHash).toBe(r42.hash);
    chain.reset(null);
    expect(chain.seal(DRAFT).receipt).toMatchObject({ seq: 1, prevHash: null });
    expect(() => chain.reset({ seq: 0, hash: head.hash })).toThrow(TypeError);
    expect(() => chain.reset({ seq: 3, hash: 'sha256:xyz' })).toThrow(TypeError);
  });

  it('gives rct-<ULID> ids from the injected clock that sort in seq order, even when the clock steps back', () => {
    const times = [T0, T0, T0 - 5000, T0 + 1];
    let i = 0;
    const chain = new ReceiptChain({ key: KEY, clock: () => times[i++] ?? T0, head: null });
    const ids = times.map(() => chain.seal(DRAFT).receipt.id);
    for (const id of ids) expect(id).toMatch(RECEIPT_ID_PATTERN);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(decodeTime(ids[0]!.slice(4))).toBe(T0);
    expect(decodeTime(ids[3]!.slice(4))).toBe(T0 + 1);
  });

  it('copies only the receipt members out of the draft (nothing else the caller carries leaks)', () => {
    const leaky = {
      ...DRAFT,
      status: 403,
      request: { ...DRAFT.request, headers: { authorization: 'Bearer secret' } },
      runtimeAttestation: { ...DRAFT.runtimeAttestation, evidence: 'raw-cert' },
    } as ReceiptDraft;
    const { receipt, jcs } = new ReceiptChain({ key: KEY, clock: () => T0, head: null }).seal(leaky);
    expect(jcs).not.toContain('secret');
    expect(jcs).not.toContain('raw-cert');
    expect(jcs).not.toContain('status');
    expect(Object.keys(receipt).sort()).toEqual(
      [
        'capabilityId', 'id', 'kernelKey', 'policyHash', 'prevHash', 'reasons', 'request', 'rule', 'runtimeAssuranceMatch',
        'runtimeAttestation', 'schema', 'seq', 'signature', 'timestamp', 'tool', 'verdict', 'workloadIdentityMatch',
      ],
    );
  });

  it('does not advance the head when sealing fails', () => {
    const chain = new ReceiptChain({ key: KEY, clock: () => Number.NaN, head: null });
    expect(() => chain.seal(DRAFT)).toThrow(RangeError);
    expect(chain.head).toBeNull();
  });
});
