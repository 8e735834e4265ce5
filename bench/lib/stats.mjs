/**
 * Summary statistics for the benchmark harness (bench/README.md): nearest-rank percentiles of
 * latency samples, and median with min–max over repetitions (the reporting rule of
 * /work/shared/notes/performance.md §2: every number a median of ≥3 runs with its range).
 */

/**
 * Nearest-rank percentile (the smallest sample with at least q·n samples at or below it) of an
 * ascending-sorted array. q in [0, 1]. NaN for no samples.
 * @param {ArrayLike<number>} sorted
 * @param {number} q
 */
export function percentileSorted(sorted, q) {
  if (!(q >= 0 && q <= 1)) throw new TypeError(`percentile ${q} is not in [0, 1]`);
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * n));
  return /** @type {number} */ (sorted[rank - 1]);
}

/**
 * p50/p90/p99/p99.9/max/mean of the samples (any order; the input is not modified).
 * @param {ArrayLike<number>} samples
 * @returns {{n: number, p50: number, p90: number, p99: number, p999: number, max: number, mean: number}}
 */
export function summarize(samples) {
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const n = sorted.length;
  return {
    n,
    p50: percentileSorted(sorted, 0.5),
    p90: percentileSorted(sorted, 0.9),
    p99: percentileSorted(sorted, 0.99),
    p999: percentileSorted(sorted, 0.999),
    max: n === 0 ? NaN : /** @type {number} */ (sorted[n - 1]),
    mean: n === 0 ? NaN : sum / n,
  };
}

/**
 * Median (the mean of the two middle values for an even count) of finite numbers.
 * @param {readonly number[]} values
 */
export function median(values) {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return NaN;
  const mid = Math.floor(n / 2);
  return n % 2 === 1 ? /** @type {number} */ (sorted[mid]) : (/** @type {number} */ (sorted[mid - 1]) + /** @type {number} */ (sorted[mid])) / 2;
}

/**
 * Median with min and max over repetitions.
 * @param {readonly number[]} values
 * @returns {{median: number, min: number, max: number, runs: number}}
 */
export function medianRange(values) {
  const finite = values.filter(Number.isFinite);
  return {
    median: median(finite),
    min: finite.length ? Math.min(...finite) : NaN,
    max: finite.length ? Math.max(...finite) : NaN,
    runs: finite.length,
  };
}
