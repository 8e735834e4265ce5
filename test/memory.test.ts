import { describe, expect, it } from 'vitest';
import { HeapGovernor, LEAN_GROWING_PERCENT, growingPercentSetByUser, nodeHeapDeps, type HeapGovernorDeps } from '../src/memory.js';

/** A governor whose event-loop utilization is scripted and whose flag writes are recorded. */
function scripted(utilizations: number[]) {
  const set: number[] = [];
  const timers: Array<{ fn: () => void; ms: number; cleared: boolean; unrefed: boolean }> = [];
  const deps: HeapGovernorDeps = {
    utilization: () => {
      const u = utilizations.shift();
      if (u === undefined) throw new Error('no utilization scripted');
      return u;
    },
    setGrowingPercent: (p) => set.push(p),
    setInterval: (fn, ms) => {
      const t = { fn, ms, cleared: false, unrefed: false };
      timers.push(t);
      return { unref: () => void (t.unrefed = true) };
    },
    clearInterval: () => {
      for (const t of timers) t.cleared = true;
    },
  };
  return { deps, set, timers };
}

describe('HeapGovernor', () => {
  it('auto starts lean, goes to V8 sizing above 0.75 utilization, back to lean below 0.5, and holds in between', () => {
    const s = scripted([0.2, 0.8, 0.6, 0.74, 0.3, 0.5, 0.76, 0.49]);
    const g = new HeapGovernor('auto', s.deps).start(1000);
    expect(s.set).toEqual([LEAN_GROWING_PERCENT]);
    expect(g.lean).toBe(true);
    expect(s.timers).toHaveLength(1);
    expect(s.timers[0]).toMatchObject({ ms: 1000, unrefed: true });
    const steps: Array<boolean | null> = [];
    for (let i = 0; i < 8; i++) {
      g.tick();
      steps.push(g.lean);
    }
    // 0.2 lean (no write), 0.8 → throughput, 0.6 / 0.74 hold, 0.3 → lean, 0.5 hold, 0.76 → throughput, 0.49 → lean
    expect(steps).toEqual([true, false, false, false, true, true, false, true]);
    expect(s.set).toEqual([50, 0, 50, 0, 50]);
  });

  it('stop() clears the interval and hands the heap back to V8 (percent 0) when it was lean', () => {
    const s = scripted([]);
    const g = new HeapGovernor('auto', s.deps).start();
    g.stop();
    expect(s.timers[0]?.cleared).toBe(true);
    expect(s.set).toEqual([50, 0]);
    expect(g.lean).toBeNull();
    g.stop();
    expect(s.set).toEqual([50, 0]);
  });

  it('lean is lean from the start and never samples; throughput never touches V8', () => {
    const lean = scripted([]);
    expect(new HeapGovernor('lean', lean.deps).start().lean).toBe(true);
    expect(lean.set).toEqual([50]);
    expect(lean.timers).toHaveLength(0);
    const throughput = scripted([]);
    const g = new HeapGovernor('throughput', throughput.deps).start();
    expect(g.lean).toBeNull();
    g.stop();
    expect(throughput.set).toEqual([]);
    expect(throughput.timers).toHaveLength(0);
  });

  it('start() twice installs one interval', () => {
    const s = scripted([]);
    new HeapGovernor('auto', s.deps).start().start();
    expect(s.timers).toHaveLength(1);
    expect(s.set).toEqual([50]);
  });
});

describe('growingPercentSetByUser', () => {
  it("sees the flag on node's command line, in either spelling", () => {
    expect(growingPercentSetByUser(['--heap-growing-percent=30'])).toBe(true);
    expect(growingPercentSetByUser(['--single-threaded-gc', '--heap_growing_percent=30'])).toBe(true);
    expect(growingPercentSetByUser(['--single-threaded-gc', '--max-semi-space-size=4'])).toBe(false);
    expect(growingPercentSetByUser([])).toBe(false);
  });
});

describe('nodeHeapDeps', () => {
  it('V8 accepts the flag at run time and the sampler reports a utilization between 0 and 1', () => {
    const deps = nodeHeapDeps();
    expect(() => deps.setGrowingPercent(LEAN_GROWING_PERCENT)).not.toThrow();
    expect(() => deps.setGrowingPercent(0)).not.toThrow();
    const u = deps.utilization();
    expect(u).toBeGreaterThanOrEqual(0);
    expect(u).toBeLessThanOrEqual(1);
  });
});
