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
