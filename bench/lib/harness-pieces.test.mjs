/**
 * Unit tests of the pure pieces of the benchmark harness (parsers, statistics, formatting).
 * Not part of `npm test` (vitest.config.ts includes test/** only); run with
 *
 *   npx vitest run --root bench
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { Histogram, Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { checkResponseStatusCode, frameMessage, unframeMessage } from './grpc-wire.mjs';
import { h2loadArgs, parseH2loadLog, parseH2loadSummary } from './h2load.mjs';
import { counterSum, fractionAtOrBelow, histogramDelta, histogramOf, histogramQuantile, parsePrometheusText } from './prom.mjs';
import { checkStatus, formatCell, formatCheck, formatTable } from './report.mjs';
import { ratioNoise } from './section-saturation.mjs';
import { SECTIONS, selectSections } from './sections.mjs';
import { chioReadyLine, nullReadyLine, writeChioConfig } from './servers.mjs';
import { median, medianRange, percentileSorted, summarize } from './stats.mjs';
import { parseConfig } from '../../src/config/load.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixture = (name) => readFileSync(path.join(REPO, 'test/fixtures/envoy', name));
/** q in [0, 1] spread evenly (fc.double favours tiny values, which would test only the first bucket) */
const quantile = fc.integer({ min: 0, max: 1000 }).map((i) => i / 1000);

describe('stats', () => {
  it('takes nearest-rank percentiles', () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentileSorted(sorted, 0.5)).toBe(5);
    expect(percentileSorted(sorted, 0.9)).toBe(9);
    expect(percentileSorted(sorted, 0.99)).toBe(10);
    expect(percentileSorted(sorted, 0)).toBe(1);
    expect(percentileSorted([], 0.5)).toBeNaN();
    expect(() => percentileSorted(sorted, 1.5)).toThrow(new TypeError('percentile 1.5 is not in [0, 1]'));
  });

  it('summarizes unsorted samples without changing them', () => {
    const samples = [30, 10, 20, 40];
    const s = summarize(samples);
    expect(s).toEqual({ n: 4, p50: 20, p90: 40, p99: 40, p999: 40, max: 40, mean: 25 });
    expect(samples).toEqual([30, 10, 20, 40]);
  });

  it('gives the median and range over repetitions', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(medianRange([5000, 4000, NaN, 6000])).toEqual({ median: 5000, min: 4000, max: 6000, runs: 3 });
  });

  it('percentiles are samples and grow with q (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 1e6 }), { minLength: 1, maxLength: 200 }), quantile, quantile, (xs, a, b) => {
        const sorted = Float64Array.from(xs).sort();
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        expect(xs).toContain(percentileSorted(sorted, lo));
        expect(percentileSorted(sorted, lo)).toBeLessThanOrEqual(percentileSorted(sorted, hi));
      }),
    );
  });
});

describe('prometheus text', () => {
  async function exposition(observations, extra = () => {}) {
    const registry = new Registry();
    const h = new Histogram({ name: 'chio_check_duration_seconds', help: 'h', buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001], registers: [registry] });
    for (const o of observations) h.observe(o);
    extra(registry);
    return registry.metrics();
  }

  it('reads prom-client output, with escaped label values and prom-client\'s `Nan`', async () => {
    const text = await exposition([0.00007, 0.0002, 0.0002, 0.003], (registry) => {
      const g = new Gauge({ name: 'weird', help: 'g', labelNames: ['l'], registers: [registry] });
      g.set({ l: 'a"b\\c\nd' }, 1);
      new Gauge({ name: 'lag', help: 'g', registers: [registry] }).set(NaN);
    });
    const samples = parsePrometheusText(text);
    expect(samples.find((s) => s.name === 'weird')).toEqual({ name: 'weird', labels: { l: 'a"b\\c\nd' }, value: 1 });
    expect(samples.find((s) => s.name === 'lag')?.value).toBeNaN();
    const h = histogramOf(samples, 'chio_check_duration_seconds');
    expect(h?.count).toBe(4);
    expect(h?.buckets.map((b) => [b.le, b.count])).toEqual([
      [0.00005, 0],
      [0.0001, 1],
      [0.00025, 3],
      [0.0005, 3],
      [0.001, 3],
      [Infinity, 4],
    ]);
  });

  it('rejects a line that is not a sample', () => {
    expect(() => parsePrometheusText('ok 1\nbroken{a="x" 1\n')).toThrow(new TypeError('metrics line 2: expected , or }: "broken{a=\\"x\\" 1"'));
    expect(() => parsePrometheusText('novalue\n')).toThrow(new TypeError('metrics line 1: bad value: "novalue"'));
  });

  it('sums counters over matching label sets', () => {
    const samples = parsePrometheusText('a{verdict="allow",rule="x"} 3\na{verdict="deny",rule="x"} 2\na{verdict="allow",rule="y"} 4\nb 9\n');
    expect(counterSum(samples, 'a')).toBe(9);
    expect(counterSum(samples, 'a', { verdict: 'allow' })).toBe(7);
    expect(counterSum(samples, 'missing')).toBe(0);
  });

  it('interpolates quantiles like PromQL histogram_quantile over a delta', () => {
    const before = { buckets: [{ le: 0.1, count: 10 }, { le: 0.2, count: 10 }, { le: 0.4, count: 20 }, { le: Infinity, count: 20 }], sum: 3, count: 20 };
    const after = { buckets: [{ le: 0.1, count: 30 }, { le: 0.2, count: 50 }, { le: 0.4, count: 80 }, { le: Infinity, count: 90 }], sum: 20, count: 90 };
    const d = histogramDelta(before, after);
    expect(d).toEqual({ buckets: [{ le: 0.1, count: 20 }, { le: 0.2, count: 40 }, { le: 0.4, count: 60 }, { le: Infinity, count: 70 }], sum: 17, count: 70 });
    // rank 35 lies in (0.1, 0.2]: 0.1 + 0.1 * (35 - 20) / 20
    expect(histogramQuantile(0.5, d).value).toBeCloseTo(0.175, 12);
    expect(histogramQuantile(0.5, d)).toMatchObject({ lower: 0.1, upper: 0.2 });
    // rank 10 in the first bucket interpolates from 0
    expect(histogramQuantile(10 / 70, d).value).toBeCloseTo(0.05, 12);
    // rank in +Inf: the largest finite bound, as Prometheus does
    expect(histogramQuantile(0.99, d)).toEqual({ value: 0.4, lower: 0.4, upper: Infinity });
    expect(fractionAtOrBelow(d, 0.2)).toBeCloseTo(40 / 70, 12);
    expect(fractionAtOrBelow(d, 0.3)).toBeNull();
    expect(histogramQuantile(0.5, { buckets: [{ le: Infinity, count: 0 }], sum: 0, count: 0 }).value).toBeNaN();
  });

  it('quantile estimates stay in the bucket that holds the rank (property)', () => {
    const les = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, Infinity];
    fc.assert(
      fc.property(fc.array(fc.nat(1000), { minLength: les.length, maxLength: les.length }), quantile, (perBucket, q) => {
        let acc = 0;
        const h = { buckets: les.map((le, i) => ({ le, count: (acc += perBucket[i] ?? 0) })), sum: 0, count: acc };
        const r = histogramQuantile(q, h);
        if (acc === 0) return expect(r.value).toBeNaN();
        expect(r.value).toBeGreaterThanOrEqual(r.lower);
        expect(r.value).toBeLessThanOrEqual(Number.isFinite(r.upper) ? r.upper : r.lower);
        const f = fractionAtOrBelow(h, r.lower);
        if (r.lower > 0 && f !== null && Number.isFinite(r.upper)) expect(f).toBeLessThanOrEqual(q + 1e-12);
      }),
    );
  });
});

describe('h2load', () => {
  const SUMMARY = `finished in 3.99s, 20642.67 req/s, 877.07KB/s
requests: 61928 total, 61928 started, 61928 done, 61928 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 61896 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.57MB (2694357) total, 335.13KB (343168) headers (space savings 96.40%), 601.95KB (616392) data
`;

  it('parses the summary', () => {
    expect(parseH2loadSummary(SUMMARY)).toEqual({
      reqPerSec: 20642.67,
      total: 61928,
      started: 61928,
      done: 61928,
      succeeded: 61928,
      failed: 0,
      errored: 0,
      timeout: 0,
      status2xx: 61896,
      statusOther: 0,
    });
    expect(() => parseH2loadSummary('connect error\n')).toThrow(TypeError);
  });

  it('reads the log file: status 0 (headers seen in warm-up) counts, non-2xx is flagged', () => {
    const { durationsUs, non2xx } = parseH2loadLog('1795650733656238\t0\t18458\n1795650733656300\t200\t512\n1795650733656400\t503\t90\n');
    expect([...durationsUs]).toEqual([18458, 512, 90]);
    expect(non2xx).toBe(1);
    expect(() => parseH2loadLog('garbage\n')).toThrow(new TypeError('h2load log line is not "start\\tstatus\\tduration": "garbage"'));
  });

  it('builds the gRPC command line', () => {
    expect(h2loadArgs({ url: 'http://h:1/p', bodyFile: 'b', clients: 4, streams: 16, durationS: 10, warmupS: 2, logFile: 'l' })).toEqual([
      '-c', '4', '-m', '16', '-D', '10', '--warm-up-time', '2', '--log-file', 'l',
      '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', 'b', 'http://h:1/p',
    ]);
    expect(h2loadArgs({ url: 'u', bodyFile: 'b', clients: 1, streams: 1, requests: 100 })).toEqual(['-c', '1', '-m', '1', '-n', '100', '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', 'b', 'u']);
    expect(() => h2loadArgs({ url: 'u', bodyFile: 'b', clients: 1, streams: 1 })).toThrow(new TypeError('h2load: give exactly one of durationS and requests'));
  });
});

describe('gRPC wire', () => {
  it('frames and unframes one message', () => {
    const msg = Buffer.from([1, 2, 3]);
    const frame = frameMessage(msg);
    expect([...frame]).toEqual([0, 0, 0, 0, 3, 1, 2, 3]);
    expect([...unframeMessage(frame)]).toEqual([1, 2, 3]);
    expect(() => unframeMessage(Buffer.from([1, 0, 0, 0, 0]))).toThrow(new TypeError('gRPC message is compressed (flag 1); the bench sends no grpc-accept-encoding'));
    expect(() => unframeMessage(Buffer.from([0, 0, 0, 0, 9, 1]))).toThrow(new TypeError('gRPC body is 6 bytes, its prefix says 14'));
  });

  it.each([
    ['allow-minimal', 0],
    ['allow-headers-metadata', 0],
    ['deny-403', 7],
    ['deny-default-403', 7],
    ['deny-401-no-identity', 16],
    ['error-response', 14],
  ])('reads status.code of the Envoy fixture %s', (name, code) => {
    expect(checkResponseStatusCode(fixture(`check-responses/${name}.pb`))).toBe(code);
  });

  it('reads status.code among any other fields (property)', () => {
    const varint = (n) => {
      const out = [];
      while (n > 127) {
        out.push((n & 0x7f) | 0x80);
        n >>>= 7;
      }
      out.push(n);
      return out;
    };
    const lenField = (field, bytes) => [...varint(field * 8 + 2), ...varint(bytes.length), ...bytes];
    const other = fc.record({ field: fc.integer({ min: 2, max: 20 }), bytes: fc.uint8Array({ maxLength: 40 }) });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 16 }), fc.array(other, { maxLength: 4 }), fc.array(other, { maxLength: 4 }), (code, pre, post) => {
        const status = code === 0 ? [] : [0x08, ...varint(code)];
        const msg = Uint8Array.from([...pre.flatMap((o) => lenField(o.field, [...o.bytes])), ...lenField(1, status), ...post.flatMap((o) => lenField(o.field, [...o.bytes]))]);
        expect(checkResponseStatusCode(msg)).toBe(code);
      }),
    );
    expect(checkResponseStatusCode(new Uint8Array())).toBe(0);
    expect(() => checkResponseStatusCode(Uint8Array.from([0x0a, 0x05, 0x08]))).toThrow(new TypeError('length-delimited field runs past the message'));
  });
});

describe('servers', () => {
  it('writes a chio.yaml the service accepts (strict schema)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'chio-bench-test-'));
    try {
      const files = writeChioConfig(dir, { policy: path.join(REPO, 'demo/policy.yaml'), durability: 'relaxed' });
      const config = parseConfig(files.yaml, files.configFile, dir);
      expect(config.listen).toEqual({ grpc: '127.0.0.1:0', admin: '127.0.0.1:0', grpc_transport: 'native' });
      expect(config.receipts).toMatchObject({ sinks: [{ type: 'jsonl', path: files.receiptsFile }], durability: 'relaxed', on_failure: 'deny' });
      expect(config.keys.receipt_signing_seed).toBe(files.seedFile);
      expect(config.policy).toBe(path.join(REPO, 'demo/policy.yaml'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('finds the bound addresses in the ready lines', () => {
    expect(chioReadyLine('{"level":30,"msg":"chio-authz ready","grpc":"127.0.0.1:35661","admin":"127.0.0.1:39107"}')).toEqual({ grpc: '127.0.0.1:35661', admin: '127.0.0.1:39107', workerPids: [] });
    // chio serve --workers N: the primary names its workers (their CPU and RSS are the server's)
    expect(chioReadyLine('{"msg":"chio-authz ready","grpc":"127.0.0.1:1","admin":"127.0.0.1:2","workers":2,"workerPids":[11,12]}')).toEqual({ grpc: '127.0.0.1:1', admin: '127.0.0.1:2', workerPids: [11, 12] });
    expect(chioReadyLine('{"level":30,"msg":"created a new receipt signing key"}')).toBeUndefined();
    expect(chioReadyLine('chio-authz ready')).toBeUndefined();
    expect(nullReadyLine('{"ready":true,"grpc":"127.0.0.1:45225","pid":1}')).toEqual({ grpc: '127.0.0.1:45225' });
    expect(nullReadyLine('{"answered":3}')).toBeUndefined();
  });
});

describe('report and sections', () => {
  it('formats cells and aligns tables', () => {
    expect(formatCell(6075.4, 'int')).toBe('6,075');
    expect(formatCell(0.4567, 'ms')).toBe('0.46');
    expect(formatCell(23.17, 'ms')).toBe('23.2');
    expect(formatCell(0.374, 'frac')).toBe('37.4%');
    expect(formatCell([4000, 6000], 'range')).toBe('4,000–6,000');
    expect(formatCell(NaN, 'int')).toBe('–');
    expect(formatTable({ title: 't', columns: [['a', 'name'], ['b', 'req/s', 'int']], rows: [{ a: 'chio', b: 7054 }, { a: 'null', b: 25043 }] })).toBe(
      ['  t', '  name   req/s', '  ----  ------', '  chio   7,054', '  null  25,043'].join('\n'),
    );
  });

  it('reports a noisy performance verdict as INCONCLUSIVE', () => {
    const c = { name: 'ratio', target: '≥ 0.50', value: '0.796', pass: true };
    expect(checkStatus(c)).toBe('PASS');
    expect(checkStatus({ ...c, pass: false })).toBe('FAIL');
    expect(formatCheck({ ...c, inconclusive: 'most null runs were NOISY' })).toBe('  [INCONCLUSIVE] ratio: 0.796 (target ≥ 0.50; measured PASS, but most null runs were NOISY)');
  });

  it('keeps a noisy ratio verdict only when the CPU-normalized ratio agrees', () => {
    const quiet = [{ name: 'chio', runs: [{ noisy: false }, { noisy: true }, { noisy: false }] }, { name: 'null', runs: [{ noisy: false }] }];
    const noisyNull = [{ name: 'chio', runs: [{ noisy: false }] }, { name: 'null', runs: [{ noisy: true }, { noisy: true }, { noisy: false }] }];
    expect(ratioNoise(quiet, 0.8, 0.25)).toBeUndefined();
    expect(ratioNoise(noisyNull, 0.3, 0.31)).toBeUndefined();
    expect(ratioNoise(noisyNull, 0.796, 0.25)).toBe('most null runs were NOISY and the CPU-normalized ratio 0.250 says the opposite');
  });

  it('selects the default sections, or exactly the named ones', () => {
    expect(selectSections([]).map((s) => s.name)).toEqual(['saturation', 'openloop', 'policy-size', 'svid-churn', 'workers', 'overload', 'sweep']);
    expect(selectSections(['openloop-relaxed', 'saturation']).map((s) => s.name)).toEqual(['saturation', 'openloop-relaxed']);
    expect(() => selectSections(['nope'])).toThrow(new TypeError(`unknown section(s) nope; known: ${SECTIONS.map((s) => s.name).join(', ')}`));
  });
});
