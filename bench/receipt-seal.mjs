// Micro-benchmark of ReceiptChain.seal (SPEC §6; performance.md §3.4): build → JCS → Ed25519 sign
// (node:crypto) → JCS with signature → sha256, per decision. Also times the parts for comparison.
//
//   npm run build && node bench/receipt-seal.mjs          (MS=1000 RUNS=7 by default)
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { keyFromSeed } from '../dist/keys.js';
import { ReceiptChain } from '../dist/receipt/receipt.js';
import { bench, MS, RUNS } from './lib/micro.mjs';


const draft = {
  verdict: 'allow',
  rule: 'payments_write',
  tool: 'transfer_funds',
  capabilityId: null,
  reasons: [],
  request: { id: 'a3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d', method: 'POST', host: 'payments.prod.svc.cluster.local', path: '/v1/transfers', source: '10.0.0.7:51234' },
  runtimeAttestation: {
    tier: 'attested',
    verifier: 'envoy',
    workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri: 'spiffe://prod.chio/payments/worker', trustDomain: 'prod.chio', path: '/payments/worker' },
  },
  workloadIdentityMatch: { mode: 'require', matched: true },
  runtimeAssuranceMatch: { mode: 'require', tier: 'attested', matched: true },
  policyHash: `sha256:${'ab'.repeat(32)}`,
};

const key = keyFromSeed(Buffer.alloc(32, 1));
const chain = new ReceiptChain({ key, clock: Date.now, head: null });


/** this script's original output format */
const SEAL = { width: 44, digits: 1, opsPerSecond: true };

const sample = chain.seal(draft);
console.log(`receipt: ${Buffer.byteLength(sample.jcs)} bytes of JCS; node ${process.version}; MS=${MS} RUNS=${RUNS}`);
const bytes = Buffer.from(sample.jcs);
bench('node:crypto Ed25519 sign alone', () => key.sign(bytes), SEAL);
bench('canonicalize(whole receipt) alone', () => canonicalize(sample.receipt), SEAL);
bench('sha256 of the JCS alone', () => createHash('sha256').update(sample.jcs).digest('hex'), SEAL);
bench('ReceiptChain.seal (build+JCS+sign+JCS+hash)', () => chain.seal(draft), SEAL);
