/**
 * Receipts for the store tests: a deterministic chain whose drafts vary by index (workloads, trust
 * domains, verdicts, rules, tools, tiers, capabilities, times), and temp folders.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Tier } from '../../src/attestation/tier.js';
import { keyFromSeed } from '../../src/keys.js';
import { ReceiptChain, type ChainHead, type ReceiptDraft, type SealedReceipt } from '../../src/receipt/receipt.js';

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

/** `count` receipts continuing `head`; receipt i is stamped T0 + i minutes. */
export function sealedReceipts(count: number, head: ChainHead | null = null, startIndex = head?.seq ?? 0): SealedReceipt[] {
  let i = startIndex;
  const chain = new ReceiptChain({ key: KEY, clock: () => T0 + i * 60_000, head });
  const out: SealedReceipt[] = [];
  for (let n = 0; n < count; n++, i++) out.push(chain.seal(variedDraft(i)));
  return out;
}
