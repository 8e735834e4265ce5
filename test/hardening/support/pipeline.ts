/**
 * The Check pipeline (src/check/pipeline.ts, SPEC §1) wired in-process the way src/main.ts wires
 * it, with test seams: an injected clock, a fixed signing key, every identity source enabled
 * (certificate, principal, XFCC, JWT-SVID) against the fixture PKI's bundle, a trusted capability
 * authority, and a receipt sink the test owns (in memory by default, or a real JSONL file, or a
 * wrapper that fails on demand). What the fuzzers and fault tests drive when the gRPC transport is
 * not the point: no sockets, so tens of thousands of decisions take seconds.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../../src/check/pipeline.js';
import { CheckPipeline } from '../../../src/check/pipeline.js';
import { issueCapability } from '../../../src/capability/issue.js';
import { CapabilityVerifier } from '../../../src/capability/verify.js';
import { describe as describeError } from '../../../src/errors.js';
import { IdentityResolver, type IdentitySource } from '../../../src/identity/resolve.js';
import { keyFromSeed, type SigningKey } from '../../../src/keys.js';
import { Metrics } from '../../../src/metrics.js';
import { compilePolicy } from '../../../src/policy/load.js';
import type { CompiledPolicy } from '../../../src/policy/types.js';
import { ReceiptChain, type ChainHead, type SealedReceipt } from '../../../src/receipt/receipt.js';
import type { ReceiptSink } from '../../../src/receipt/sinks/sink.js';
import { ReceiptChainVerifier, verificationKeys, type VerifyFailure } from '../../../src/receipt/verify.js';
import { ReceiptWriter } from '../../../src/receipt/writer.js';
import { BundleSet, parsePemBundle } from '../../../src/spiffe/bundle.js';
import { SvidCache } from '../../../src/spiffe/x509-svid.js';
import { attestation } from '../../capability/helpers.js';
import { FIXED_NOW, FIXTURES, recordingLogger, type LogEntry } from '../../helpers/service.js';

/** The fixture PKI's root of spiffe://example.org (test/fixtures/envoy/pki/ca.pem). */
export const FIXTURE_CA_PEM = readFileSync(path.join(FIXTURES, 'envoy', 'pki', 'ca.pem'), 'utf8');
/** The receipt signing key of every harness (seed = 32 × 0x07). */
export const HARNESS_SIGNING_SEED = Buffer.alloc(32, 7);
/** The capability authority every harness trusts (seed = 32 × 0x0a). */
export const HARNESS_AUTHORITY_SEED = Buffer.alloc(32, 10);
/** The audience JWT-SVIDs must name. */
export const JWT_AUDIENCE = 'chio';

/** Receipts kept in memory, in seq order; `rewind` drops the tail like a file sink truncates it. */
export class MemorySink implements ReceiptSink {
  readonly name = 'memory';
  readonly lines: string[] = [];
  private readonly seqs: number[] = [];

  async open(): Promise<ChainHead | null> {
    return null;
  }

  async write(batch: readonly SealedReceipt[]): Promise<void> {
    for (const s of batch) {
      this.lines.push(s.jcs);
      this.seqs.push(s.receipt.seq);
    }
  }

  async rewind(head: ChainHead | null): Promise<void> {
    const keep = head === null ? 0 : this.seqs.findIndex((seq) => seq === head.seq) + 1;
    this.lines.length = keep;
    this.seqs.length = keep;
  }

  async close(): Promise<void> {}
}

/** An errno-style error, as node:fs rejects with. */
export function errnoError(code: 'ENOSPC' | 'EROFS' | 'EIO', syscall = 'write'): NodeJS.ErrnoException {
  const messages = { ENOSPC: 'no space left on device', EROFS: 'read-only file system', EIO: 'i/o error' } as const;
  const err: NodeJS.ErrnoException = new Error(`${code}: ${messages[code]}, ${syscall}`);
  err.code = code;
  err.syscall = syscall;
  return err;
}

/** Wraps a sink; while `failure` is set every write rejects with it (a full or read-only disk). */
export class FailingSink implements ReceiptSink {
  failure: NodeJS.ErrnoException | null = null;
  writesRefused = 0;

  constructor(readonly inner: ReceiptSink) {}

  get name(): string {
    return this.inner.name;
  }

  open(): Promise<ChainHead | null> {
    return this.inner.open();
  }

  async write(batch: readonly SealedReceipt[], durable: boolean): Promise<void> {
    if (this.failure !== null) {
      this.writesRefused++;
      throw this.failure;
    }
    await this.inner.write(batch, durable);
  }

  rewind(head: ChainHead | null): Promise<void> {
    return this.inner.rewind(head);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface HarnessOptions {
  readonly policyText: string;
  /** default: a fresh MemorySink */
  readonly sink?: ReceiptSink;
  /** default: FIXED_NOW */
  readonly clock?: () => number;
  /** default: all four */
  readonly sources?: readonly IdentitySource[];
  readonly onReceiptFailure?: 'deny' | 'allow';
  readonly durability?: 'strict' | 'relaxed';
}

export interface Harness {
  readonly pipeline: CheckPipeline;
  readonly metrics: Metrics;
  readonly log: Logger & { entries: LogEntry[] };
  readonly policy: CompiledPolicy;
  readonly key: SigningKey;
  readonly authority: SigningKey;
  readonly sink: ReceiptSink;
  readonly writer: ReceiptWriter;
}

/** A pipeline wired like src/main.ts (same metric and log hooks), on a sink the caller controls. */
export async function startHarness(options: HarnessOptions): Promise<Harness> {
  const clock = options.clock ?? (() => FIXED_NOW);
  const key = keyFromSeed(HARNESS_SIGNING_SEED);
  const authority = keyFromSeed(HARNESS_AUTHORITY_SEED);
  const policy = compilePolicy(options.policyText, 'policy.yaml');
  const metrics = new Metrics({ defaultMetrics: false });
  const log = recordingLogger();
  const sink = options.sink ?? new MemorySink();
  const head = await sink.open();
  const chain = new ReceiptChain({ key, clock, head });
  const writer = new ReceiptWriter([sink], {
    head,
    durability: options.durability ?? 'strict',
    onWritten: (n) => metrics.receiptsWritten.inc(n),
    onSinkError: (name, err) => {
      metrics.receiptSinkErrors.inc({ sink: name });
      log.error({ sink: name, err: describeError(err) }, 'receipt sink write failed');
    },
    onRewind: (h) => chain.reset(h),
  });
  const bundles = new BundleSet();
  const index = bundles.addSource({ source: 'pem#0', verifier: 'https://spire.test' }, ['example.org']);
  bundles.replace(index, [parsePemBundle(FIXTURE_CA_PEM, 'example.org', 'ca.pem')]);
  const identity = new IdentityResolver({
    sources: options.sources ?? ['certificate', 'principal', 'xfcc', 'jwt_svid'],
    svidCache: new SvidCache(1000),
    clock,
    bundles,
    jwtSvid: { header: 'authorization', audiences: [JWT_AUDIENCE], leewaySeconds: 0 },
    trustedVerifiers: () => policy.trustedVerifiers,
  });
  const pipeline = new CheckPipeline({
    policy: () => policy,
    identity,
    chain,
    writer,
    onReceiptFailure: options.onReceiptFailure ?? 'deny',
    metrics,
    log,
    capabilityHeader: 'x-chio-capability',
    capabilities: { verifier: new CapabilityVerifier({ authorities: [authority] }), isRevoked: () => false },
    clock,
    trustDomainLabel: (td) => (td === 'example.org' ? td : 'other'),
  });
  return { pipeline, metrics, log, policy, key, authority, sink, writer };
}

/** Verifies receipt lines (JCS texts, in order) as `chio receipt verify` does: signatures and chain. */
export function verifyReceiptLines(lines: readonly string[], key: SigningKey): { receipts: number; failure: VerifyFailure | null } {
  const verifier = new ReceiptChainVerifier(verificationKeys([key]));
  for (const line of lines) {
    const failure = verifier.line(Buffer.from(line, 'utf8'));
    if (failure !== null) return { receipts: verifier.receipts, failure };
  }
  return { receipts: verifier.receipts, failure: null };
}

/**
 * Valid capability tokens of `authority` at `now`: unbound, bound to the fixture frontend
 * workload, bound to the backend (a token stolen from another workload).
 */
export function capabilityTokens(authority: SigningKey, now: number): string[] {
  const issue = (body: Record<string, unknown>): string => issueCapability(body, { authority, policy: null, now }).token;
  return [
    issue({ subject: 'fuzz', tools: ['list_orders'], ttlSeconds: 3600 }),
    issue({ subject: 'fuzz', tools: ['list_orders', 'create_order'], ttlSeconds: 3600, runtimeAttestation: attestation(now) }),
    issue({ subject: 'fuzz', tools: ['list_orders'], ttlSeconds: 3600, runtimeAttestation: attestation(now, 'spiffe://example.org/ns/default/sa/backend') }),
  ];
}
