/**
 * The timing loop of the in-process micro-benchmarks (bench/identity-resolve.mjs,
 * receipt-seal.mjs, request-decode.mjs): a JIT warm-up, then RUNS runs of MS milliseconds each,
 * calls in blocks of 100 between clock reads; the median µs per call is printed and returned.
 * MS and RUNS come from the environment (defaults 1000 and 7).
 */
export const MS = Number(process.env.MS ?? 1000);
export const RUNS = Number(process.env.RUNS ?? 7);

/**
 * @param {string} name
 * @param {() => unknown} fn
 * @param {{warmup?: number, width?: number, digits?: number, opsPerSecond?: boolean}} [o]
 * @returns {number} median µs per call
 */
export function bench(name, fn, o = {}) {
  const digits = o.digits ?? 2;
  for (let i = 0; i < (o.warmup ?? 2000); i++) fn(); // warm-up (JIT)
  const perCall = [];
  for (let r = 0; r < RUNS; r++) {
    let n = 0;
    const start = process.hrtime.bigint();
    const end = start + BigInt(MS) * 1_000_000n;
    let now = start;
    while (now < end) {
      for (let i = 0; i < 100; i++) fn();
      n += 100;
      now = process.hrtime.bigint();
    }
    perCall.push(Number(now - start) / 1000 / n);
  }
  perCall.sort((a, b) => a - b);
  const median = /** @type {number} */ (perCall[Math.floor(perCall.length / 2)]);
  const min = /** @type {number} */ (perCall[0]);
  const max = /** @type {number} */ (perCall[perCall.length - 1]);
  const ops = o.opsPerSecond ? `${(1e6 / median).toFixed(0)} ops/s; ` : '';
  console.log(`${name.padEnd(o.width ?? 58)} ${median.toFixed(digits).padStart(7)} µs/op  (${ops}min ${min.toFixed(digits)}, max ${max.toFixed(digits)})`);
  return median;
}
