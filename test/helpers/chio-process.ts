/**
 * `chio serve` as a child process (bin/chio.js: `npm run build` first), for the tests of
 * `--workers`: its JSON log lines as they come, its exit, the `chio-authz ready` line, and a
 * `waitFor` for conditions polled from outside.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

export const CHIO = path.resolve(import.meta.dirname, '..', '..', 'bin', 'chio.js');

export interface ServeExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
}

export interface ServeProcess<Ready> {
  dir: string;
  child: ChildProcess;
  exit: Promise<ServeExit>;
  /** every log line (JSON) so far, the workers' too (they share the primary's stdout) */
  logs: Array<Record<string, unknown>>;
  /** the `chio-authz ready` line; rejects when the process exits first */
  ready: Promise<Ready>;
}

/** `chio serve ARGS` in `dir` (env: this process's plus `env`). */
export function spawnServe<Ready>(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): ServeProcess<Ready> {
  const started = Date.now();
  const child = spawn(process.execPath, [CHIO, 'serve', ...args], { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  const exit = new Promise<ServeExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, ms: Date.now() - started })));
  const ready = new Promise<Ready>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const obj = JSON.parse(line) as Record<string, unknown>;
        logs.push(obj);
        if (obj['msg'] === 'chio-authz ready') resolve(obj as unknown as Ready);
      } catch {
        /* not JSON */
      }
    });
    void exit.then((e) => reject(new Error(`exited before ready: ${JSON.stringify(e)}`)));
  });
  ready.catch(() => undefined);
  return { dir, child, exit, logs, ready };
}

/** Polls `probe` every 50 ms until it gives a value; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `process.kill(pid, signal)`, quiet when the process is gone. */
export function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone */
  }
}

/** Kills the service and every worker it announced (SIGKILL) and removes its folder: a test's cleanup. */
export function killServe(r: ServeProcess<unknown>): void {
  if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  for (const line of r.logs) {
    const pids = line['workerPids'];
    if (Array.isArray(pids)) for (const pid of pids) signalQuietly(pid as number, 'SIGKILL');
  }
  rmSync(r.dir, { recursive: true, force: true });
}
