import { spawnSync } from 'node:child_process';
import { AggregatorRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  HeapGovernor,
  LEAN_GROWING_PERCENT,
  acquireProcessHeapGovernor,
  growingPercentSetByUser,
  nodeHeapDeps,
  type HeapGovernorDeps,
} from '../src/memory.js';
import { Metrics } from '../src/metrics.js';

/** A governor whose event-loop utilization is scripted and whose flag writes are recorded. */
function scripted(utilizations: number[]) {
  const set: number[] = [];
  const timers: Array<{ fn: () => void; ms: number; cleared: boolean; unrefed: boolean; handle: { unref: () => void } }> = [];
  const deps: HeapGovernorDeps = {
    utilization: () => {
      const u = utilizations.shift();
      if (u === undefined) throw new Error('no utilization scripted');
      return u;
    },
    setGrowingPercent: (p) => set.push(p),
    setInterval: (fn, ms) => {
      const t = { fn, ms, cleared: false, unrefed: false, handle: { unref: () => void (t.unrefed = true) } };
      timers.push(t);
      return t.handle;
    },
    clearInterval: (handle) => {
      const t = timers.find((x) => x.handle === handle);
      if (t === undefined) throw new Error('clearInterval of a handle never returned');
      t.cleared = true;
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

  it('tick() decides only in auto mode while started', () => {
    const lean = scripted([0.9]);
    const g = new HeapGovernor('lean', lean.deps).start();
    g.tick();
    expect(g.lean).toBe(true);
    expect(lean.set).toEqual([50]);
    const auto = scripted([0.9]);
    const a = new HeapGovernor('auto', auto.deps);
    a.tick(); // not started
    a.start();
    a.stop();
    a.tick(); // stopped
    expect(auto.set).toEqual([50, 0]);
  });

  it('start() twice installs one interval', () => {
    const s = scripted([]);
    new HeapGovernor('auto', s.deps).start().start();
    expect(s.timers).toHaveLength(1);
    expect(s.set).toEqual([50]);
  });
});

describe('acquireProcessHeapGovernor', () => {
  it('one governor per process: shared by every service, the first mode applies, the last release hands the heap back to V8', () => {
    const s = scripted([]);
    let made = 0;
    const deps = () => {
      made++;
      return s.deps;
    };
    const a = acquireProcessHeapGovernor('auto', deps);
    const b = acquireProcessHeapGovernor('throughput', deps);
    expect(made).toBe(1);
    expect(b.governor).toBe(a.governor);
    expect(b.mode).toBe('auto');
    expect(a.governor.lean).toBe(true);
    a.release();
    a.release(); // a second release of one lease counts once
    expect(b.governor.lean).toBe(true);
    expect(s.set).toEqual([50]);
    b.release();
    expect(s.set).toEqual([50, 0]);
    expect(s.timers[0]?.cleared).toBe(true);
    const c = acquireProcessHeapGovernor('lean', deps); // a new one after the last release
    expect(made).toBe(2);
    expect(c.mode).toBe('lean');
    c.release();
    expect(s.set).toEqual([50, 0, 50, 0]);
  });
});

describe('chio_heap_lean with --workers', () => {
  it('the primary reads 1 only when every worker is lean (min, not the default sum)', async () => {
    const worker = async (lean: number) => {
      const m = new Metrics({ defaultMetrics: false });
      m.sources.heapLean = () => lean;
      return m.registry.getMetricsAsJSON();
    };
    const value = async (...leans: number[]) => {
      const registry = AggregatorRegistry.aggregate(await Promise.all(leans.map(worker)));
      const json = await registry.getMetricsAsJSON();
      return json.find((m) => m.name === 'chio_heap_lean')?.values[0]?.value;
    };
    expect(await value(1, 1)).toBe(1);
    expect(await value(1, 0)).toBe(0);
    expect(await value(0, 0)).toBe(0);
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
  it('the flag the governor sets is one this V8 knows (setFlagsFromString only warns about unknown ones)', () => {
    const options = spawnSync(process.execPath, ['--v8-options'], { encoding: 'utf8' });
    expect(options.status).toBe(0);
    expect(options.stdout).toMatch(/^\s*--heap-growing-percent \(/m);
  });

  it('V8 accepts the flag at run time and the sampler reports a utilization between 0 and 1', () => {
    const deps = nodeHeapDeps();
    expect(() => deps.setGrowingPercent(LEAN_GROWING_PERCENT)).not.toThrow();
    expect(() => deps.setGrowingPercent(0)).not.toThrow();
    const u = deps.utilization();
    expect(u).toBeGreaterThanOrEqual(0);
    expect(u).toBeLessThanOrEqual(1);
  });
});
