/**
 * Processes for the benchmark harness: spawn pinned to a CPU (`taskset -c N`, util-linux; it
 * execs the command, so the child's pid is the measured process), wait for a line, stop, and read
 * Linux /proc (proc(5)): VmRSS/VmHWM from /proc/PID/status, utime+stime from /proc/PID/stat, and the
 * machine's CPU time split (steal included) from /proc/stat, to tell measured work from noise.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

/** Clock ticks per second of /proc times (`getconf CLK_TCK`; 100 on Linux unless told otherwise). */
export const CLK_TCK = (() => {
  try {
    const v = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(v) && v > 0 ? v : 100;
  } catch {
    return 100;
  }
})();

/**
 * True when `cmd` runs (`cmd --version` or the given probe args exit 0).
 * @param {string} cmd
 * @param {string[]} [args]
 */
export function hasCommand(cmd, args = ['--version']) {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * A child process pinned to `cpu` (null: not pinned), with its stdout lines fed to `onLine` and
 * the last 64 KB of stderr kept for error messages.
 * @param {{cpu: number | null, command: string, args: string[], cwd?: string, env?: NodeJS.ProcessEnv,
 *          onLine?: (line: string) => void}} o
 */
export function spawnPinned(o) {
  const [cmd, args] = o.cpu === null ? [o.command, o.args] : ['taskset', ['-c', String(o.cpu), o.command, ...o.args]];
  const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-65536);
  });
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => resolve({ code: null, signal: null, error: err }));
  });
  const rl = createInterface({ input: child.stdout });
  /** @type {((line: string) => void)[]} */
  const listeners = o.onLine ? [o.onLine] : [];
  rl.on('line', (line) => {
    for (const l of listeners) l(line);
  });
  return {
    child,
    /** @type {Promise<{code: number | null, signal: string | null, error?: Error}>} */
    exited,
    stderr: () => stderr,
    /** @param {(line: string) => void} l */
    onLine: (l) => listeners.push(l),
    /**
     * Resolves with the first stdout line for which `pick` returns a non-undefined value.
     * @template T
     * @param {(line: string) => T | undefined} pick
     * @param {number} timeoutMs
     * @returns {Promise<T>}
     */
    waitFor(pick, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`)), timeoutMs);
        listeners.push((line) => {
          const v = pick(line);
          if (v !== undefined) {
            clearTimeout(timer);
            resolve(v);
          }
        });
        exited.then(({ code, signal, error }) => {
          clearTimeout(timer);
          reject(new Error(`exited (code ${code}, signal ${signal}${error ? `, ${error.message}` : ''}) before it was ready; stderr: ${stderr.slice(-2000)}`));
        });
      });
    },
  };
}

/**
 * Sends `signal`, waits up to `graceMs` for the exit, then SIGKILLs. Resolves with the exit.
 * @param {ReturnType<typeof spawnPinned>} p
 * @param {NodeJS.Signals} [signal]
 * @param {number} [graceMs]
 */
export async function stopProcess(p, signal = 'SIGTERM', graceMs = 10_000) {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return p.exited;
  p.child.kill(signal);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  const res = await p.exited;
  clearTimeout(timer);
  return res;
}

/**
 * Resident memory of a live process in KiB: current (VmRSS) and the kernel's peak (VmHWM).
 * Null when the process is gone.
 * @param {number} pid
 */
export function readMemory(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kb = (key) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : NaN;
  };
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

/**
 * CPU seconds (user + system) a process has used, or null when it is gone.
 * @param {number} pid
 */
export function processCpuSeconds(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/**
 * Machine-wide CPU seconds from the `cpu` line of /proc/stat: busy (user+nice+system+irq+softirq),
 * idle (idle+iowait), steal (time the hypervisor ran someone else while we wanted the CPU).
 */
export function machineCpuSeconds() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const at = (i) => v[i] ?? 0;
  return {
    busy: (at(0) + at(1) + at(2) + at(5) + at(6)) / CLK_TCK,
    idle: (at(3) + at(4)) / CLK_TCK,
    steal: at(7) / CLK_TCK,
  };
}

/**
 * Samples a process's RSS every `everyMs` until stop(); peak = max(sampled VmRSS, last VmHWM).
 * @param {number} pid
 * @param {number} everyMs
 */
export function rssSampler(pid, everyMs = 200) {
  let peakRssKb = 0;
  let hwmKb = 0;
  let lastRssKb = 0;
  const sample = () => {
    const m = readMemory(pid);
    if (!m) return;
    lastRssKb = m.rssKb;
    peakRssKb = Math.max(peakRssKb, m.rssKb);
    hwmKb = Math.max(hwmKb, m.hwmKb);
  };
  sample();
  const timer = setInterval(sample, everyMs);
  timer.unref();
  return {
    /** take a last sample (call before the process exits) and stop */
    stop() {
      sample();
      clearInterval(timer);
      return this.read();
    },
    read: () => ({ peakRssKb, hwmKb, lastRssKb }),
  };
}

/**
 * Measures a window: CPU used by the given pids and by the whole machine, and steal. The pids are
 * polled every 100 ms so a process that exits inside the window (h2load) still counts up to its
 * last poll. `end()` returns percentages of ONE CPU for the pids (100 = a full core) and, for the
 * machine, busy/steal as % of all CPUs; `otherBusyPct` = machine busy − the pids (anything else
 * running on the box during the window: a source of noise to report).
 * @param {number[]} pids
 */
export function cpuWindow(pids) {
  const t0 = process.hrtime.bigint();
  const m0 = machineCpuSeconds();
  const first = pids.map(processCpuSeconds);
  const last = [...first];
  const poll = () => {
    pids.forEach((pid, i) => {
      const v = processCpuSeconds(pid);
      if (v !== null) last[i] = v;
    });
  };
  const timer = setInterval(poll, 100);
  timer.unref();
  return {
    end() {
      poll();
      clearInterval(timer);
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const m1 = machineCpuSeconds();
      const used = pids.map((_, i) => {
        const a = first[i];
        const b = last[i];
        return a === null || a === undefined || b === null || b === undefined ? NaN : b - a;
      });
      const total = m1.busy - m0.busy + (m1.idle - m0.idle) + (m1.steal - m0.steal);
      const ownSeconds = used.reduce((s, u) => s + (Number.isFinite(u) ? u : 0), 0);
      return {
        wallS: wall,
        pidCpuPct: used.map((u) => (100 * u) / wall),
        stealPct: total > 0 ? (100 * (m1.steal - m0.steal)) / total : NaN,
        machineBusyPct: total > 0 ? (100 * (m1.busy - m0.busy)) / total : NaN,
        otherBusyPct: total > 0 ? (100 * Math.max(0, m1.busy - m0.busy - ownSeconds)) / total : NaN,
      };
    },
  };
}
