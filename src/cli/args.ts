/**
 * Shared pieces of the command modules: subcommand dispatch and usage errors (SPEC §10: exit 2).
 */
import { EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

/** Runs `args[0]` from `subcommands`; no subcommand or `help` prints the group's help. */
export function dispatch(group: string, help: string, subcommands: Readonly<Record<string, Command>>): Command {
  return async (args, io) => {
    const [name, ...rest] = args;
    if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
      io.stdout(help);
      return name === undefined ? EXIT_USAGE : EXIT_OK;
    }
    const sub = Object.prototype.hasOwnProperty.call(subcommands, name) ? subcommands[name] : undefined;
    if (!sub) {
      io.stderr(`chio ${group}: unknown subcommand ${JSON.stringify(name)}\n\n${help}`);
      return EXIT_USAGE;
    }
    return sub(rest, io);
  };
}

/** Prints `chio <command>: <message>` and the command's help to stderr; returns exit code 2. */
export function usageError(io: CliIO, command: string, message: string, help: string): number {
  io.stderr(`chio ${command}: ${message}\n\n${help}`);
  return EXIT_USAGE;
}
