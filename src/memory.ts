/**
 * Heap governor (issue "Performance at scale", memory): keeps the process's resident memory near
 * its live data while there is CPU to spare, and gets out of the way when the process is busy.
 *
 * Why: V8 lets the old generation grow to up to ~4× what survived the last full GC before it runs
 * the next one (its heap-growing factor, chosen from how fast GC is compared with the program). At a
 * steady 1,000 Check/s that is a saw-tooth of ~125 → ~235 MiB RSS with ~35 MiB live (BENCHMARKS.md,
 * "Soak"): nothing leaks, but the peak is what a pod's memory limit must allow for. A fixed, smaller
 * factor (V8's `--heap-growing-percent`) keeps the peak near the live size, at the price of more
 * full GCs: measured here (09:00 UTC, chio pinned to one core), `--heap-growing-percent=50` held RSS
 * at 128–140 MiB for 90 s at 1,000/s (default: 122 → 168 MiB and rising), but cost ~20% of the
 * closed-loop saturation throughput (4,833 / 5,222 vs 5,967 / 6,560 Check/s, alternating runs).
 *
 * So the choice depends on load, and V8 reads that flag each time it sizes the heap after a full GC
 * (heap-controller: a percent > 0 replaces the dynamic factor; 0 restores it), which lets it change
 * while the process runs. `auto` (the default) watches the event loop's utilization over each
 * interval: below `LEAN_BELOW` the process has CPU to spare and runs lean; above `THROUGHPUT_ABOVE`
 * it is close to saturation and V8 sizes the heap itself (peak throughput, higher peaks of RSS);
 * in between it keeps its mode (hysteresis, so it does not flap). `lean` and `throughput` fix the
 * mode. A `--heap-growing-percent` on node's command line wins: the governor then does nothing
 * (NODE_OPTIONS does not accept that flag: node refuses to start).
 *
 * Node documents `v8.setFlagsFromString` after start-up as "use with care"; this flag is a plain
 * number V8 reads when it computes the next heap limit, and nothing else.
 */
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import v8 from 'node:v8';

export type HeapMode = 'auto' | 'lean' | 'throughput';

/** The heap-growing percent of lean mode: the old generation may grow 50% past its live size. */
export const LEAN_GROWING_PERCENT = 50;
/** auto: event-loop utilization below which the process runs lean, above which it runs for throughput */
export const LEAN_BELOW = 0.5;
export const THROUGHPUT_ABOVE = 0.75;
const DEFAULT_INTERVAL_MS = 2000;
const FLAG = '--heap-growing-percent';

export interface HeapGovernorDeps {
  /** the utilization of the event loop since the previous call (0..1) */
  readonly utilization: () => number;
  /** sets V8's heap-growing percent (0: V8's own dynamic factor) */
  readonly setGrowingPercent: (percent: number) => void;
  readonly setInterval: (fn: () => void, ms: number) => { unref?: () => void };
  readonly clearInterval: (handle: { unref?: () => void }) => void;
}

/** The event loop's utilization since the previous call (perf_hooks). */
export function eventLoopUtilizationSampler(): () => number {
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const delta = performance.eventLoopUtilization(now, last);
    last = now;
    return delta.utilization;
  };
}

/** True when node was started with its own `--heap-growing-percent` (NODE_OPTIONS cannot carry it). */
export function growingPercentSetByUser(execArgv: readonly string[] = process.execArgv): boolean {
  return execArgv.some((arg) => arg.replace(/_/g, '-').startsWith(FLAG));
}

/** The process's own event loop and V8. */
export function nodeHeapDeps(): HeapGovernorDeps {
  return {
    utilization: eventLoopUtilizationSampler(),
    setGrowingPercent: (percent) => v8.setFlagsFromString(`${FLAG}=${percent}`),
    setInterval: (fn, ms) => setInterval(fn, ms),
    clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout),
  };
}

export class HeapGovernor {
  readonly #deps: HeapGovernorDeps;
  readonly #mode: HeapMode;
  #lean: boolean | null = null;
  #timer: { unref?: () => void } | null = null;

  constructor(mode: HeapMode, deps: HeapGovernorDeps) {
    this.#mode = mode;
    this.#deps = deps;
  }

  /** Whether the heap is sized lean now (null before start, and when the mode is `throughput`). */
  get lean(): boolean | null {
    return this.#lean;
  }

  /** Applies the mode; `auto` then re-decides every `intervalMs`. */
  start(intervalMs = DEFAULT_INTERVAL_MS): this {
    if (this.#mode === 'throughput' || this.#timer !== null) return this;
    this.#apply(this.#mode === 'lean' || this.#mode === 'auto');
    if (this.#mode === 'auto') {
      this.#timer = this.#deps.setInterval(() => this.tick(), intervalMs);
      this.#timer.unref?.();
    }
    return this;
  }

  /** One decision of `auto` mode while started (the interval calls it; exposed for tests). */
  tick(): void {
    if (this.#mode !== 'auto' || this.#timer === null) return;
    const u = this.#deps.utilization();
    if (u > THROUGHPUT_ABOVE) this.#apply(false);
    else if (u < LEAN_BELOW) this.#apply(true);
  }

  /** Stops re-deciding and hands the heap back to V8's own sizing. */
  stop(): void {
    if (this.#timer !== null) this.#deps.clearInterval(this.#timer);
    this.#timer = null;
    if (this.#lean) this.#deps.setGrowingPercent(0);
    this.#lean = null;
  }

  #apply(lean: boolean): void {
    if (this.#lean === lean) return;
    this.#lean = lean;
    this.#deps.setGrowingPercent(lean ? LEAN_GROWING_PERCENT : 0);
  }
}

/**
 * The process's governor, shared: the flag is one per process, so every service started in it (tests
 * start several) holds a reference to one governor, and the last release hands the heap back to V8.
 * The first acquirer's mode applies; a later one asking for another mode is told so (returned
 * `mode`), not obeyed.
 */
let shared: { governor: HeapGovernor; mode: HeapMode; refs: number } | null = null;

export interface HeapLease {
  /** the mode in force (the first acquirer's) */
  readonly mode: HeapMode;
  readonly governor: HeapGovernor;
  release(): void;
}

export function acquireProcessHeapGovernor(mode: HeapMode, deps: () => HeapGovernorDeps = nodeHeapDeps): HeapLease {
  shared ??= { governor: new HeapGovernor(mode, deps()).start(), mode, refs: 0 };
  const current = shared;
  current.refs++;
  let released = false;
  return {
    mode: current.mode,
    governor: current.governor,
    release: () => {
      if (released) return;
      released = true;
      current.refs--;
      if (current.refs === 0 && shared === current) {
        current.governor.stop();
        shared = null;
      }
    },
  };
}
