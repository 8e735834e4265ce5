/**
 * The Prometheus registry (src/metrics.ts) as a scrape sees it: error counters that exist at 0 from
 * the start (the first error must show in increase()), and gauges aggregated over `--workers` the
 * way their meaning asks (an age is the oldest, not a sum).
 */
import { AggregatorRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../src/metrics.js';
import { startTestService, type TestService } from './helpers/service.js';

describe('error counters at start', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService();
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('chio_receipt_sink_errors_total{sink} of every configured sink and chio_policy_reloads_total{result="error"} are 0, not absent', async () => {
    const text = await (await fetch(`${svc.adminUrl}/metrics`)).text();
    expect(text).toContain('chio_receipt_sink_errors_total{sink="jsonl"} 0\n');
    expect(text).toContain('chio_policy_reloads_total{result="error"} 0\n');
    expect(text).toContain('chio_policy_reloads_total{result="ok"} 1\n');
  });
});

describe('aggregation over workers', () => {
  it('chio_receipt_shipping_lag_seconds is the largest lag of any worker; the receipts behind are summed', async () => {
    const a = new Metrics({ defaultMetrics: false });
    const b = new Metrics({ defaultMetrics: false });
    a.receiptShippingLagSeconds.set({ sink: 'postgres' }, 30);
    b.receiptShippingLagSeconds.set({ sink: 'postgres' }, 12);
    a.receiptShippingLag.set({ sink: 'postgres' }, 5);
    b.receiptShippingLag.set({ sink: 'postgres' }, 7);
    const text = await AggregatorRegistry.aggregate([await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()]).metrics();
    expect(text).toContain('chio_receipt_shipping_lag_seconds{sink="postgres"} 30\n');
    expect(text).toContain('chio_receipt_shipping_lag_receipts{sink="postgres"} 12\n');
  });
});
