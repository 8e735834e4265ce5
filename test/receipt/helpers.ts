/**
 * Receipts for the store tests: a deterministic chain whose drafts vary by index (workloads, trust
 * domains, verdicts, rules, tools, tiers, capabilities, times), and temp folders.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Tier } from '../../src/attestation/tier.js';
import { keyFromSeed } from '../../src/keys.js';
import { ReceiptChain, receiptHash, receiptTexts, type ChainHead, type PendingReceipt, type ReceiptDraft, type SealedReceipt } from '../../src/receipt/receipt.js';

export const KEY = keyFromSeed(Buffer.alloc(32, 7));
/** 2026-11-24T00:00:00Z */
export const T0 = Date.UTC(2026, 10, 24);

export function tempDir(prefix = 'chio-store-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export const WORKLOADS = [
  { trustDomain: 'prod.chio', path: '/payments/worker' },
  { trustDomain: 'prod.chio', path: '/payments/worker/shard-1' },
  { trustDomain: 'prod.chio', path: '/payments/workerX' },
  { trustDomain: 'prod.chio', path: '/payments/my_worker' },
  { trustDomain: 'prod.chio', path: '/payments/myXworker' },
  { trustDomain: 'prod.chio', path: '/Payments/Worker' },
  { trustDomain: 'staging.chio', path: '/payments/worker' },
  null,
] as const;
const TIERS_CYCLE: readonly Tier[] = ['none', 'basic', 'attested', 'verified'];
const RULES = ['payments_write', 'orders', null] as const;
const TOOLS = ['transfer_funds', 'list_orders', 'reconcile_ledger', null] as const;

/** The draft of receipt number i (0-based): every field a query filters on varies with i. */
export function variedDraft(i: number): ReceiptDraft {
  const w = WORKLOADS[i % WORKLOADS.length] ?? null;
  const allow = i % 3 !== 0;
  return {
    verdict: allow ? 'allow' : 'deny',
    rule: RULES[i % RULES.length] ?? null,
    tool: TOOLS[i % TOOLS.length] ?? null,
    capabilityId: i % 5 === 0 ? `cap-${String(i).padStart(26, '0')}` : null,
    reasons: allow ? [] : [{ code: 'tool_not_allowed', message: 'the tool is not on the allow list' }],
    request: { id: `req-${i}`, method: 'POST', host: 'payments.prod.svc.cluster.local', path: '/v1/transfers', source: '10.0.0.7:51234' },
    runtimeAttestation: {
      tier: w === null ? 'none' : (TIERS_CYCLE[i % TIERS_CYCLE.length] ?? 'none'),
      verifier: w === null ? null : 'envoy',
      workloadIdentity:
        w === null
          ? null
          : { scheme: 'spiffe', credentialKind: 'x509_svid', uri: `spiffe://${w.trustDomain}${w.path}`, trustDomain: w.trustDomain, path: w.path },
    },
    workloadIdentityMatch: null,
    runtimeAssuranceMatch: null,
    policyHash: `sha256:${'ab'.repeat(32)}`,
  };
}

/** The chain id of the receipts these helpers make (fixed, so continued chains stay one chain). */
export const CHAIN = 'chn-01JD0000000000000000000000';

/**
 * `count` receipts continuing `head`; receipt i is stamped T0 + i minutes. Each is sealed alone (a
 * batch of one) unless `batchSize` groups them: then batches of `batchSize` (the last may be shorter).
 */
export function sealedReceipts(count: number, head: ChainHead | null = null, startIndex = head?.seq ?? 0, batchSize = 1): SealedReceipt[] {
  let i = startIndex;
  const chain = new ReceiptChain({ key: KEY, clock: () => T0 + i * 60_000, head, chainId: head?.chain ?? CHAIN });
  const out: SealedReceipt[] = [];
  while (out.length < count) {
    const batch = [];
    for (let n = 0; n < batchSize && out.length + n < count; n++, i++) batch.push(chain.next(variedDraft(i)));
    out.push(...chain.sealBatch(batch));
  }
  return out;
}

/** `count` pending receipts (bodies fixed, not signed: what the pipeline submits to a ReceiptWriter) continuing `head`. */
export function pendingReceipts(count: number, head: ChainHead | null = null, startIndex = head?.seq ?? 0): PendingReceipt[] {
  let i = startIndex;
  const chain = new ReceiptChain({ key: KEY, clock: () => T0 + i * 60_000, head, chainId: head?.chain ?? CHAIN });
  const out: PendingReceipt[] = [];
  for (let n = 0; n < count; n++, i++) out.push(chain.next(variedDraft(i)));
  return out;
}

/**
 * `count` receipts of the first format (`chio.receipt.v1`, one Ed25519 signature per receipt,
 * prevHash = SHA-256 of the previous line), as the service wrote them before v2: their lines.
 */
export function v1Lines(count: number, prevHash: string | null = null, firstSeq = 1): string[] {
  const lines: string[] = [];
  let prev = prevHash;
  for (let n = 0; n < count; n++) {
    const seq = firstSeq + n;
    const unsigned = {
      schema: 'chio.receipt.v1',
      id: `rct-01JC${String(seq).padStart(22, '0')}`,
      seq,
      timestamp: new Date(T0 + seq * 60_000).toISOString(),
      ...variedDraft(seq - 1),
      prevHash: prev,
      kernelKey: KEY.kid,
    };
    const texts = receiptTexts(unsigned, '');
    const signature = `ed25519:${KEY.sign(Buffer.from(texts.unsigned, 'utf8')).toString('base64url')}`;
    const line = receiptTexts(unsigned, signature).signed;
    lines.push(line);
    prev = receiptHash(line);
  }
  return lines;
}
