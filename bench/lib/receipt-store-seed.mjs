/**
 * A large SQLite receipt store for the query benchmark (bench/receipts.mjs): `count` chained
 * receipts over `days` days from `workloads` workloads in two trust domains, with varied verdicts,
 * rules, tools and tiers. The receipts are real JCS texts chained by prevHash (the store checks
 * seq and prevHash), but not signed (a fixed dummy signature): signing 1M receipts would take
 * minutes and queries never look at signatures. Uses the built dist/.
 */
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * The shape of the 1,000,000-receipt store both query benchmarks use (bench/receipts.mjs: the
 * embedded SQLite store; bench/postgres.mjs: the central PostgreSQL store), so their latencies
 * compare, and the target both check (the receipt store issue: p99 ≤ 50 ms).
 */
export const STORE_RECEIPTS = 1_000_000;
export const STORE_DAYS = 30;
export const STORE_WORKLOADS = 200;
export const STORE_START = Date.UTC(2026, 9, 26);
export const DAY_MS = 86_400_000;
export const QUERY_P99_TARGET_MS = 50;

/**
 * @param {{repoRoot: string, file: string, count: number, days: number, workloads: number, start: number, log?: (m: string) => void}} o
 * @returns {Promise<{file: string, seconds: number, workloads: string[], start: number, end: number}>}
 */
export async function seedReceiptStore(o) {
  const dist = (p) => pathToFileURL(path.join(o.repoRoot, 'dist', p)).href;
  const { receiptTexts, sealedOf } = await import(dist('receipt/receipt.js'));
  const { SqliteReceiptStore } = await import(dist('receipt/store.js'));
  for (const suffix of ['', '-wal', '-shm']) rmSync(`${o.file}${suffix}`, { force: true });
  const t0 = Date.now();
  const uris = workloadUris(o.workloads);
  const spanMs = o.days * 86_400_000;
  const store = SqliteReceiptStore.open(o.file, { writable: true });
  const signature = `ed25519:${'A'.repeat(86)}`;
  const rules = ['payments_write', 'orders', 'ledger_read', 'admin', 'reports'];
  const tools = ['transfer_funds', 'list_orders', 'reconcile_ledger', 'get_balance', 'export_report', 'create_order', 'cancel_order', 'refund', 'audit_read', 'health'];
  const tiers = ['none', 'basic', 'attested', 'verified'];
  let prevHash = null;
  let rnd = 42;
  const random = () => ((rnd = (rnd * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const BATCH = 10_000;
  for (let done = 0; done < o.count; ) {
    const batch = [];
    for (let n = 0; n < BATCH && done < o.count; n++, done++) {
      const seq = done + 1;
      const uri = uris[Math.floor(random() * uris.length)];
      const [, td, p] = /** @type {RegExpExecArray} */ (/^spiffe:\/\/([^/]+)(\/.*)$/.exec(uri));
      const allow = random() < 0.8;
      const receipt = {
        schema: 'chio.receipt.v1',
        id: `rct-${String(seq).padStart(26, '0')}`,
        seq,
        timestamp: new Date(o.start + Math.floor((done / o.count) * spanMs)).toISOString(),
        verdict: allow ? 'allow' : 'deny',
        rule: rules[seq % rules.length],
        tool: tools[Math.floor(random() * tools.length)],
        capabilityId: seq % 50 === 0 ? `cap-${String(seq).padStart(26, '0')}` : null,
        reasons: allow ? [] : [{ code: 'tool_not_allowed', message: 'the tool is not on the allow list and the rule default is block' }],
        request: { id: `0f8e4c2a-${String(seq).padStart(12, '0')}`, method: 'POST', host: 'payments.prod.svc.cluster.local', path: '/v1/transfers', source: '10.0.0.7:51234' },
        runtimeAttestation: { tier: tiers[seq % tiers.length], verifier: 'envoy', workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri, trustDomain: td, path: p } },
        workloadIdentityMatch: { mode: 'require', matched: allow },
        runtimeAssuranceMatch: null,
        policyHash: `sha256:${'ab'.repeat(32)}`,
        prevHash,
        kernelKey: 'K'.repeat(43),
      };
      const sealed = sealedOf(receiptTexts(receipt, signature).signed); // its hash, and the columns the store indexes, from the text
      batch.push(sealed);
      prevHash = sealed.hash;
    }
    await store.append(batch, false);
    if (o.log && done % 200_000 === 0) o.log(`    seeded ${done.toLocaleString('en-US')} receipts (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  store.close();
  if (!existsSync(o.file)) throw new Error(`seeding did not create ${o.file}`);
  return { file: o.file, seconds: (Date.now() - t0) / 1000, workloads: uris, start: o.start, end: o.start + spanMs };
}

/** `n` workload SPIFFE IDs in two trust domains. @param {number} n */
export function workloadUris(n) {
  return Array.from({ length: n }, (_, i) => `spiffe://${i % 4 === 3 ? 'staging.chio' : 'prod.chio'}/ns/team-${i % 10}/sa/svc-${i}`);
}
