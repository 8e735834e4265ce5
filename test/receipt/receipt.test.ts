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
  CHAIN_ID_PATTERN,
  RECEIPT_ID_PATTERN,
  ReceiptChain,
  chainHeadOf,
  receiptFacts,
  receiptTexts,
  sealedOf,
  type ChainHead,
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

const CHAIN = 'chn-01JD0000000000000000000000';

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

/** The body object a draft should give, built independently of the hand-assembled text. */
function expectedBody(draft: ReceiptDraft, c: { chain: string; id: string; seq: number; timestamp: string; prevHash: string | null }) {
  return {
    schema: 'chio.receipt.v2',
    chain: c.chain,
    id: c.id,
    seq: c.seq,
    timestamp: c.timestamp,
    verdict: draft.verdict,
    rule: draft.rule,
    tool: draft.tool,
    capabilityId: draft.capabilityId,
    reasons: draft.reasons.map((r) => ({ code: r.code, message: r.message })),
    request: { ...draft.request },
    runtimeAttestation: { ...draft.runtimeAttestation },
    workloadIdentityMatch: draft.workloadIdentityMatch,
    runtimeAssuranceMatch: draft.runtimeAssuranceMatch,
    policyHash: draft.policyHash,
    prevHash: c.prevHash,
    kernelKey: KEY.kid,
  };
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
/** The RFC 6962 leaf hash, computed with @noble/hashes as the oracle. */
const leafOf = (text: string): string => hex(sha256(Buffer.concat([Buffer.from([0]), Buffer.from(text, 'utf8')])));

describe('ReceiptChain.next (the body, fixed at decision time)', () => {
  it('assembles exactly the JCS text of the body (property, random drafts, heads and times)', () => {
    fc.assert(
      fc.property(
        drafts,
        fc.option(fc.record({ seq: fc.integer({ min: 1, max: 2 ** 40 }), hash: fc.uint8Array({ minLength: 32, maxLength: 32 }) })),
        fc.integer({ min: 0, max: 253402300799999 }),
        (draft, head, now) => {
          const prevHash = head === null ? null : `sha256:${hex(head.hash)}`;
          const chain = new ReceiptChain({ key: KEY, clock: () => now, head: head === null ? null : { seq: head.seq, hash: prevHash as string }, chainId: CHAIN });
          const pending = chain.next(draft);
          const body = expectedBody(draft, { chain: CHAIN, id: pending.id, seq: (head?.seq ?? 0) + 1, timestamp: new Date(now).toISOString(), prevHash });
          expect(pending.bodyText).toBe(canonicalize(body));
          expect(pending.body).toEqual(body);
          expect(pending.leaf.toString('hex')).toBe(leafOf(pending.bodyText));
          expect(pending.hash).toBe(`sha256:${leafOf(pending.bodyText)}`);
          expect(chain.head).toEqual({ seq: body.seq, hash: pending.hash, chain: CHAIN });
        },
      ),
      { numRuns: 200 },
    );
  });

  it('seals a receipt whose line is the JCS of the whole receipt, signed (noble oracle) over the batch statement', () => {
    fc.assert(
      fc.property(drafts, fc.integer({ min: 0, max: 253402300799999 }), (draft, now) => {
        const sealed = new ReceiptChain({ key: KEY, clock: () => now, head: null, chainId: CHAIN }).seal(draft);
        const receipt = sealed.receipt as Receipt;
        expect(sealed.jcs).toBe(canonicalize(receipt));
        expect(receipt.batch).toEqual({ index: 0, proof: [], root: `sha256:${sealed.leaf.toString('hex')}`, size: 1 });
        const statement = canonicalize({ chain: CHAIN, firstSeq: 1, kernelKey: KEY.kid, root: receipt.batch.root, schema: 'chio.receipt-batch.v1', size: 1 });
        const signature = Buffer.from(receipt.signature.slice('ed25519:'.length), 'base64url');
        expect(ed.verify(signature, Buffer.from(statement, 'utf8'), KEY.publicKeyRaw)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('hands the store the indexed columns of the text it made, without parsing it (property)', () => {
    fc.assert(
      fc.property(drafts, fc.integer({ min: 0, max: 253402300799999 }), (draft, now) => {
        const sealed = new ReceiptChain({ key: KEY, clock: () => now, head: null, chainId: CHAIN }).seal(draft);
        const parsed = sealedOf(sealed.jcs); // columns parsed from the line
        expect(sealed.columns).toEqual(parsed.columns);
        expect(sealed.columns.timeMs).toBe(Date.parse(new Date(now).toISOString()));
        expect(sealed.columns.workloadUri).toBe(draft.runtimeAttestation.workloadIdentity?.uri ?? null);
      }),
      { numRuns: 150 },
    );
  });

  it('produces the exact receipt of README "Receipts", signed byte-identically to @noble/ed25519', () => {
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null, newId: fixedIds(), chainId: CHAIN });
    const sealed = chain.seal(DRAFT);
    const bodyHead =
      '{"capabilityId":null,"chain":"' + CHAIN + '","id":"rct-01JD0000000000000000000001","kernelKey":"' + KEY.kid +
      '","policyHash":"sha256:' + 'ab'.repeat(32) +
      '","prevHash":null,"reasons":[],"request":{"host":"payments.prod.svc.cluster.local","id":"req-1","method":"POST","path":"/v1/transfers","source":"10.0.0.7:51234"},' +
      '"rule":"payments_write","runtimeAssuranceMatch":{"matched":true,"mode":"require","tier":"attested"},' +
      '"runtimeAttestation":{"tier":"attested","verifier":"envoy","workloadIdentity":{"credentialKind":"x509_svid","path":"/payments/worker","scheme":"spiffe","trustDomain":"prod.chio","uri":"spiffe://prod.chio/payments/worker"}},' +
      '"schema":"chio.receipt.v2","seq":1';
    const bodyTail = ',"timestamp":"2026-11-25T21:30:00.123Z","tool":"transfer_funds","verdict":"allow","workloadIdentityMatch":{"matched":true,"mode":"require"}}';
    const leaf = leafOf(bodyHead + bodyTail);
    const statement = `{"chain":"${CHAIN}","firstSeq":1,"kernelKey":"${KEY.kid}","root":"sha256:${leaf}","schema":"chio.receipt-batch.v1","size":1}`;
    const nobleSignature = Buffer.from(ed.sign(Buffer.from(statement, 'utf8'), SEED)).toString('base64url');
    expect(sealed.jcs).toBe(
      `{"batch":{"index":0,"proof":[],"root":"sha256:${leaf}","size":1},${bodyHead.slice(1)},"signature":"ed25519:${nobleSignature}"${bodyTail}`,
    );
    expect(sealed.hash).toBe(`sha256:${leaf}`);
    expect(sealed.leaf.toString('hex')).toBe(leaf);
    expect(sealed).toMatchObject({ id: 'rct-01JD0000000000000000000001', seq: 1, prevHash: null });
  });

  it('chains: seq + 1 and prevHash = the previous receipt\'s leaf (over its body, not its final bytes)', () => {
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null, chainId: CHAIN });
    const first = chain.next(DRAFT);
    const second = chain.next({ ...DRAFT, verdict: 'deny', reasons: [{ code: 'tool_blocked', message: 'blocked' }] });
    expect(second.seq).toBe(2);
    expect(second.prevHash).toBe(`sha256:${leafOf(first.bodyText)}`);
    expect(second.body.prevHash).toBe(first.hash);
    expect(chain.head).toEqual({ seq: 2, hash: second.hash, chain: CHAIN });
    // sealing changes the final line, never the chain hash
    const [s1, s2] = chain.sealBatch([first, second]);
    expect(s1?.hash).toBe(first.hash);
    expect(s2?.receipt.prevHash).toBe(s1?.hash);
  });

  it('continues from a given head (and its chain id) and rewinds with reset(), keeping the chain id', () => {
    const head: ChainHead = { seq: 41, hash: `sha256:${'cd'.repeat(32)}`, chain: CHAIN };
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head });
    expect(chain.chainId).toBe(CHAIN);
    const r42 = chain.next(DRAFT);
    expect(r42.seq).toBe(42);
    expect(r42.prevHash).toBe(head.hash);
    chain.next(DRAFT);
    chain.reset({ seq: 42, hash: r42.hash });
    const again = chain.next(DRAFT);
    expect(again.seq).toBe(43);
    expect(again.prevHash).toBe(r42.hash);
    expect(again.chain).toBe(CHAIN);
    chain.reset(null);
    expect(chain.next(DRAFT).body).toMatchObject({ seq: 1, prevHash: null, chain: CHAIN });
    expect(() => chain.reset({ seq: 0, hash: head.hash })).toThrow(TypeError);
    expect(() => chain.reset({ seq: 3, hash: 'sha256:xyz' })).toThrow(TypeError);
    expect(() => chain.reset({ seq: 3, hash: head.hash, chain: 'chain-1' })).toThrow(TypeError);
  });

  it('starts a new random chain id (chn-<ULID> stamped now) for a new chain and after v1 receipts', () => {
    const a = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    const b = new ReceiptChain({ key: KEY, clock: () => T0, head: { seq: 7, hash: `sha256:${'ef'.repeat(32)}` } }); // a v1 head: no chain id
    for (const c of [a, b]) expect(c.chainId).toMatch(CHAIN_ID_PATTERN);
    expect(a.chainId).not.toBe(b.chainId);
    expect(Math.abs(decodeTime(a.chainId.slice(4)) - Date.now())).toBeLessThan(60_000);
    expect(() => new ReceiptChain({ key: KEY, clock: () => T0, head: null, chainId: 'chn-1' })).toThrow(new TypeError('not a chain id: "chn-1"'));
  });

  it('gives rct-<ULID> ids from the injected clock that sort in seq order, even when the clock steps back', () => {
    const times = [T0, T0, T0 - 5000, T0 + 1];
    let i = 0;
    const chain = new ReceiptChain({ key: KEY, clock: () => times[i++] ?? T0, head: null });
    const ids = times.map(() => chain.next(DRAFT).id);
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
        'batch', 'capabilityId', 'chain', 'id', 'kernelKey', 'policyHash', 'prevHash', 'reasons', 'request', 'rule', 'runtimeAssuranceMatch',
        'runtimeAttestation', 'schema', 'seq', 'signature', 'timestamp', 'tool', 'verdict', 'workloadIdentityMatch',
      ],
    );
  });

  it('refuses a draft member of the wrong type (TypeError), and does not advance the head when a body cannot be made', () => {
    const chain = new ReceiptChain({ key: KEY, clock: () => Number.NaN, head: null });
    expect(() => chain.next(DRAFT)).toThrow(RangeError);
    expect(chain.head).toBeNull();
    const ok = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    expect(() => ok.next({ ...DRAFT, rule: 42 } as unknown as ReceiptDraft)).toThrow(new TypeError('receipt member rule must be a string, got number'));
    expect(() => ok.next({ ...DRAFT, request: { ...DRAFT.request, host: undefined } } as unknown as ReceiptDraft)).toThrow(
      new TypeError('receipt member request.host must be a string, got undefined'),
    );
    expect(ok.head).toBeNull();
  });

  it('sealBatch refuses receipts of another chain or out of order', () => {
    const a = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    const b = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    const [p1, p2] = [a.next(DRAFT), a.next(DRAFT)];
    expect(() => b.sealBatch([p1])).toThrow(new TypeError('receipt seq 1 was not made by this chain'));
    expect(() => a.sealBatch([p2, p1])).toThrow(new TypeError('receipt seq 1 does not follow seq 2 in its batch'));
    expect(() => a.sealBatch([])).toThrow(new TypeError('sealBatch: an empty batch'));
  });
});

describe('receiptFacts (reading receipt lines of either version)', () => {
  it('gives seq, id, chain, chain hash and leaf of a v2 line, and the head with its chain id', () => {
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null, chainId: CHAIN });
    const [s1, s2] = chain.sealBatch([chain.next(DRAFT), chain.next(DRAFT)]);
    expect(receiptFacts(s2!.jcs)).toEqual({ schema: 'chio.receipt.v2', id: s2!.id, seq: 2, chain: CHAIN, prevHash: s1!.hash, hash: s2!.hash, leaf: s2!.leaf });
    expect(chainHeadOf(Buffer.from(s2!.jcs))).toEqual({ seq: 2, hash: s2!.hash, chain: CHAIN });
  });

  it('gives the v1 chain hash (SHA-256 of the line) and leaf (over the line) of a v1 line', () => {
    const line = v1Line(1, null);
    const facts = receiptFacts(line);
    expect(facts).toMatchObject({ schema: 'chio.receipt.v1', seq: 1, chain: null, prevHash: null, hash: `sha256:${createHash('sha256').update(line).digest('hex')}` });
    expect(facts.leaf.toString('hex')).toBe(leafOf(line));
    expect(chainHeadOf(line)).toEqual({ seq: 1, hash: facts.hash });
  });

  it('refuses what is not a receipt', () => {
    expect(() => receiptFacts('{"seq":')).toThrow('not valid JSON');
    expect(() => receiptFacts('[1]')).toThrow('not a JSON object');
    expect(() => receiptFacts('{"seq":0,"id":"x"}')).toThrow('no valid seq');
    expect(() => receiptFacts('{"seq":3,"id":"x","schema":"chio.receipt.v3"}')).toThrow(
      'receipt seq 3 has schema "chio.receipt.v3", not chio.receipt.v2 or chio.receipt.v1',
    );
    expect(() => receiptFacts('{"seq":3,"id":"x","schema":"chio.receipt.v2"}')).toThrow('receipt seq 3 has no chain id');
  });
});

describe('receiptTexts (v1, for verifying old files)', () => {
  it('gives the v1 signing input and line, signed byte-identically to @noble/ed25519', () => {
    const line = v1Line(1, null);
    const receipt = JSON.parse(line) as Record<string, unknown>;
    const { signature, ...unsigned } = receipt;
    expect(receiptTexts(receipt as never, signature as string)).toEqual({ unsigned: canonicalize(unsigned), signed: line });
    expect(() => receiptTexts({ ...unsigned, rule: undefined } as never, 'x')).toThrow(new TypeError('receipt member rule is undefined'));
  });
});

/** A v1 receipt line as the first format wrote it (signed with @noble/ed25519). */
function v1Line(seq: number, prevHash: string | null): string {
  const unsigned = {
    schema: 'chio.receipt.v1',
    id: `rct-01JD${String(seq).padStart(22, '0')}`,
    seq,
    timestamp: new Date(T0).toISOString(),
    ...DRAFT,
    prevHash,
    kernelKey: KEY.kid,
  };
  const signature = `ed25519:${Buffer.from(ed.sign(Buffer.from(canonicalize(unsigned), 'utf8'), SEED)).toString('base64url')}`;
  return canonicalize({ ...unsigned, signature });
}
