import type { CliIO } from '../../src/cli/io.js';

/** A CliIO that records stdout and stderr, for calling command modules directly. */
export function fakeIO(cwd: string, env: NodeJS.ProcessEnv = {}, now = () => 0, stdin = ''): CliIO & { out: string; err: string } {
  const io = {
    out: '',
    err: '',
    stdout: (t: string) => void (io.out += t),
    stderr: (t: string) => void (io.err += t),
    env,
    cwd,
    now,
    readStdin: async () => stdin,
  };
  return io;
}

/** What a command returned and printed. */
export interface CliRun {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** Runs a command module's `run` (or `main`) with `io` and returns its exit code and what it printed. */
export async function capture(command: (args: string[], io: CliIO) => Promise<number>, args: string[], io: ReturnType<typeof fakeIO>): Promise<CliRun> {
  const code = await command(args, io);
  return { code, out: io.out, err: io.err };
}
