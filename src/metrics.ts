/**
 * Every metric name and label set (SPEC §8), on prom-client with a registry of our own.
 *
 * Label values are bounded: reasons are the fixed codes of errors.ts, rules and tools come
 * from the loaded policy, and a trust domain is reported only when the policy or config knows
 * it (`other` otherwise). Never a SPIFFE ID or a path.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const METRIC_NAMES = {
  admissions: 'chio_admissions_total',
  checkDuration: 'chio_check_duration_seconds',
  receiptCommitDuration: 'chio_receipt_commit_duration_seconds',
  decisionDuration: 'chio_check_decision_duration_seconds',
  receiptsWritten: 'chio_receipts_written_total',
  receiptSinkErrors: 'chio_receipt_sink_errors_total',
  policyReloads: 'chio_policy_reloads_total',
  bundleExpiry: 'chio_trust_bundle_expiry_timestamp_seconds',
  bundleRefreshes: 'chio_trust_bundle_refreshes_total',
  workloadApiConnected: 'chio_workload_api_connected',
  svidCacheEntries: 'chio_svid_cache_entries',
  checkCallersRefused: 'chio_check_callers_refused_total',
  grpcErrors: 'chio_grpc_errors_total',
  checksInFlight: 'chio_checks_in_flight',
  heapLean: 'chio_heap_lean',
  receiptShippingLag: 'chio_receipt_shipping_lag_receipts',
  receiptShippingLagSeconds: 'chio_receipt_shipping_lag_seconds',
  receiptsShipped: 'chio_receipts_shipped_total',
} as const;

/** Seconds; fine around the 100 µs handler target and the ~0.1–1 ms fsync of a group commit. */
const LATENCY_BUCKETS = [
  0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
  0.25, 1,
];

export interface AdmissionLabels {
  verdict: 'allow' | 'deny';
  rule: string;
  reason: string;
  trust_domain: string;
  credential_kind: string;
  tier: string;
}

export class Metrics {
  readonly registry: Registry;
  readonly admissions: Counter<keyof AdmissionLabels>;
  readonly checkDuration: Histogram;
  readonly receiptCommitDuration: Histogram;
  readonly decisionDuration: Histogram;
  readonly receiptsWritten: Counter;
  readonly receiptSinkErrors: Counter<'sink'>;
  readonly policyReloads: Counter<'result'>;
  readonly bundleExpiry: Gauge<'trust_domain'>;
  readonly bundleRefreshes: Counter<'source' | 'result'>;
  readonly workloadApiConnected: Gauge<'source'>;
  readonly svidCacheEntries: Gauge;
  readonly checkCallersRefused: Counter;
  readonly grpcErrors: Counter;
  readonly checksInFlight: Gauge;
  readonly heapLean: Gauge;
  /** Read at each scrape; the composition root (src/main.ts) points them at the live objects. */
  readonly sources = { svidCacheEntries: (): number => 0, checksInFlight: (): number => 0, heapLean: (): number => 0 };
  readonly receiptShippingLag: Gauge<'sink'>;
  readonly receiptShippingLagSeconds: Gauge<'sink'>;
  readonly receiptsShipped: Counter<'sink'>;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registry = new Registry();
    this.registry = registry;
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
    this.admissions = new Counter({
      name: METRIC_NAMES.admissions,
      help: 'Check decisions by verdict, rule, reason code, trust domain, credential kind and runtime-assurance tier.',
      labelNames: ['verdict', 'rule', 'reason', 'trust_domain', 'credential_kind', 'tier'],
      registers: [registry],
    });
    this.checkDuration = new Histogram({
      name: METRIC_NAMES.checkDuration,
      help: 'Time from a Check call arriving to its answer, receipt commit included.',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    this.receiptCommitDuration = new Histogram({
      name: METRIC_NAMES.receiptCommitDuration,
      help: 'Time a decision waited for its receipt to be durable (group commit).',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    this.decisionDuration = new Histogram({
      name: METRIC_NAMES.decisionDuration,
      help: 'Time from a Check call arriving to its receipt body fixed: the decision itself, without the batch signing and durability wait.',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    this.receiptsWritten = new Counter({
      name: METRIC_NAMES.receiptsWritten,
      help: 'Receipts made durable in every sink.',
      registers: [registry],
    });
    this.receiptSinkErrors = new Counter({
      name: METRIC_NAMES.receiptSinkErrors,
      help: 'Failed receipt writes by sink.',
      labelNames: ['sink'],
      registers: [registry],
    });
    this.policyReloads = new Counter({
      name: METRIC_NAMES.policyReloads,
      help: 'Policy loads by result (ok, error).',
      labelNames: ['result'],
      registers: [registry],
    });
    this.bundleExpiry = new Gauge({
      aggregator: 'min', // chio serve --workers N: every worker holds the same bundles (src/server/workers.ts)
      name: METRIC_NAMES.bundleExpiry,
      help: 'Earliest notAfter (unix seconds) of the X.509 roots in the trust bundle of each trust domain.',
      labelNames: ['trust_domain'],
      registers: [registry],
    });
    this.bundleRefreshes = new Counter({
      name: METRIC_NAMES.bundleRefreshes,
      help: 'Trust bundle refresh attempts by source (`<kind>#<index>` of trust.bundles) and result (ok, error).',
      labelNames: ['source', 'result'],
      registers: [registry],
    });
    this.workloadApiConnected = new Gauge({
      aggregator: 'min', // connected only when every worker is
      name: METRIC_NAMES.workloadApiConnected,
      help: 'Whether the SPIFFE Workload API streams of a source are delivering bundles (1) or reconnecting (0).',
      labelNames: ['source'],
      registers: [registry],
    });
    this.checkCallersRefused = new Counter({
      name: METRIC_NAMES.checkCallersRefused,
      help: 'Check calls refused before any decision: the TLS caller is not in listen.grpc_tls.allowed_callers.',
      registers: [registry],
    });
    this.grpcErrors = new Counter({
      name: METRIC_NAMES.grpcErrors,
      help: 'Calls on the gRPC listener answered with an RPC error instead of a message (no decision, no receipt: Envoy applies its failure mode), by gRPC status name, or HTTP_405 / HTTP_415 for clients not speaking gRPC. Native transport only.',
      labelNames: ['code'],
      registers: [registry],
    });
    this.receiptShippingLag = new Gauge({
      name: METRIC_NAMES.receiptShippingLag,
      help: 'Receipts committed to the local log and not yet in the central store, by sink (postgres).',
      labelNames: ['sink'],
      registers: [registry],
    });
    this.receiptShippingLagSeconds = new Gauge({
      aggregator: 'max', // --workers: an age, the oldest lag of any worker (a sum of ages means nothing)
      name: METRIC_NAMES.receiptShippingLagSeconds,
      help: 'Age in seconds of the oldest committed receipt not yet in the central store (0 when caught up), by sink.',
      labelNames: ['sink'],
      registers: [registry],
    });
    this.receiptsShipped = new Counter({
      name: METRIC_NAMES.receiptsShipped,
      help: 'Receipts shipped to the central store, by sink (a failed batch counts in chio_receipt_sink_errors_total{sink}).',
      labelNames: ['sink'],
      registers: [registry],
    });
    /** A gauge set at each scrape from `this.sources[source]` (read then, so main.ts may repoint it later). */
    const sourced = (name: string, help: string, source: keyof Metrics['sources'], aggregator?: 'min'): Gauge => {
      const sources = this.sources;
      return new Gauge({
        name,
        help,
        registers: [registry],
        ...(aggregator ? { aggregator } : {}),
        collect() {
          this.set(sources[source]());
        },
      });
    };
    this.svidCacheEntries = sourced(METRIC_NAMES.svidCacheEntries, 'Parsed peer certificates held in the SVID cache.', 'svidCacheEntries');
    this.checksInFlight = sourced(
      METRIC_NAMES.checksInFlight,
      'Checks admitted and not answered yet, counted from the arrival of the whole request; at limits.max_in_flight more are shed (deny overloaded).',
      'checksInFlight',
    );
    this.heapLean = sourced(
      METRIC_NAMES.heapLean,
      'limits.heap: 1 while the heap is sized lean (spare CPU), 0 while V8 sizes it (near saturation, limits.heap throughput, or a --heap-growing-percent on the command line) (src/memory.ts).',
      'heapLean',
      'min', // --workers: lean only when every worker is (the primary sums gauges by default)
    );
  }

  countAdmission(labels: AdmissionLabels): void {
    this.admissions.inc(labels);
  }
}
