/**
 * Time and memory bounds for parsers fed hostile input (SPEC §9: every malformed thing gets a
 * clear answer, and nothing it carries may cost unbounded time or memory).
 *
 * `measure` runs a synchronous parse after a full GC and reports how long it took and how much
 * the V8 heap grew (garbage included: a parser that allocates gigabytes shows, whether or not it
 * keeps them). `--expose-gc` is switched on at runtime (v8.setFlagsFromString), so no test runner
 * flag is needed.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

export interface Measured {
  /** what `fn` threw (undefined when it returned) */
  readonly error: unknown;
  readonly ms: number;
  /** bytes the V8 heap grew while `fn` ran */
  readonly heapGrowth: number;
}

export function measure(fn: () => unknown): Measured {
  gc();
  const before = process.memoryUsage().heapUsed;
  const started = performance.now();
  let error: unknown;
  try {
    fn();
  } catch (err) {
    error = err;
  }
  const ms = performance.now() - started;
  const heapGrowth = process.memoryUsage().heapUsed - before;
  return { error, ms, heapGrowth };
}

export const MiB = 1024 * 1024;
