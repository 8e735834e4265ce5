/**
 * `chio` command dispatcher (SPEC §10). One module per command group under src/cli/.
 */
import { ChioError } from '../errors.js';
import { EXIT_USAGE, processIO, type CliIO, type Command } from './io.js';

export const GROUPS: Readonly<Record<string, { summary: string; load: () => Promise<Command> }>> = {
  serve: { summary: 'run the ext_authz service', load: async () => (await import('./serve.js')).run },
  demo: { summary: 'send demo CheckRequests to a running service', load: async () => (await import('./demo.js')).run },
  policy: { summary: 'check a policy file', load: async () => (await import('./policy.js')).run },
  keys: { summary: 'generate Ed25519 seeds, print public keys', load: async () => (await import('./keys.js')).run },
  receipt: { summary: 'show and verify decision receipts', load: async () => (await import('./receipt.js')).run },
  capability: { summary: 'issue, inspect and verify workload-bound capabilities', load: async () => (await import('./capability.js')).run },
  svid: { summary: 'verify X.509-SVID chains and JWT-SVIDs against trust bundles', load: async () => (await import('./svid.js')).run },
  db: { summary: 'migrate and inspect the central PostgreSQL store of several replicas', load: async () => (await import('./db.js')).run },
};

function usage(): string {
  const lines = ['usage: chio <command> [options]', '', 'commands:'];
  for (const [name, g] of Object.entries(GROUPS)) lines.push(`  ${name.padEnd(12)} ${g.summary}`);
  lines.push('', 'Run `chio <command> --help` for the options of a command.');
  return lines.join('\n') + '\n';
}

export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(usage());
    return name === undefined ? EXIT_USAGE : 0;
  }
  const group = GROUPS[name];
  if (!group) {
    io.stderr(`chio: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return EXIT_USAGE;
  }
  const command = await group.load();
  try {
    return await command(rest, io);
  } catch (err) {
    if (err instanceof ChioError) {
      io.stderr(`chio ${name}: ${err.code}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
}
