/**
 * Seeds and run counts of the hardening fuzzers (fast-check, https://fast-check.dev/docs/tutorials/
 * quick-start/read-test-reports/: a failure report names its `seed` and `path`).
 *
 * Deterministic by default: every property runs from {@link DEFAULT_FUZZ_SEED}, printed when it
 * starts, so a CI failure replays locally. Environment:
 * - `CHIO_FUZZ_SEED=<integer>` replays that seed; `CHIO_FUZZ_SEED=random` draws a fresh one (printed);
 * - `CHIO_FUZZ_PATH=<path>` (with the seed) replays only the failing case fast-check reported;
 * - `CHIO_FUZZ_SCALE=<n>` multiplies every run count (e.g. 10 for a longer local hunt).
 */
import type * as fc from 'fast-check';

/** The seed CI runs with. */
export const DEFAULT_FUZZ_SEED = 20261201;

function parseSeed(raw: string | undefined): number {
  if (raw === undefined || raw === '') return DEFAULT_FUZZ_SEED;
  if (raw === 'random') return (Math.random() * 0x7fffffff) | 0;
  if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
    throw new TypeError(`CHIO_FUZZ_SEED must be an integer or "random", got ${JSON.stringify(raw)}`);
  }
  return Number(raw) | 0;
}

function parseScale(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new TypeError(`CHIO_FUZZ_SCALE must be a positive number, got ${JSON.stringify(raw)}`);
  return n;
}

/** The seed of this run (one per process, so every property of a file shares it). */
export const FUZZ_SEED = parseSeed(process.env['CHIO_FUZZ_SEED']);
const FUZZ_PATH = process.env['CHIO_FUZZ_PATH'] || undefined;
const FUZZ_SCALE = parseScale(process.env['CHIO_FUZZ_SCALE']);

/**
 * fast-check parameters for one property: the run's seed (printed with how to replay it) and
 * `numRuns` scaled by CHIO_FUZZ_SCALE.
 */
export function fuzzParameters<T>(name: string, numRuns: number): fc.Parameters<T> {
  const runs = Math.max(1, Math.round(numRuns * FUZZ_SCALE));
  const replay = `CHIO_FUZZ_SEED=${FUZZ_SEED}${FUZZ_PATH === undefined ? '' : ` CHIO_FUZZ_PATH=${FUZZ_PATH}`}`;
  console.info(`[fuzz] ${name}: seed ${FUZZ_SEED}, ${runs} runs (replay: ${replay} npm run test:hardening)`);
  return FUZZ_PATH === undefined ? { seed: FUZZ_SEED, numRuns: runs } : { seed: FUZZ_SEED, numRuns: runs, path: FUZZ_PATH };
}

/** A test timeout for a fuzzing test that takes about `ms` at scale 1, with room for slow machines. */
export function fuzzTimeout(ms: number): number {
  return Math.ceil(ms * FUZZ_SCALE);
}
