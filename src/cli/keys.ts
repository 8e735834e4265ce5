/**
 * `chio keys generate --out FILE` and `chio keys public [--seed FILE] [--json]` (SPEC §6, §10):
 * Ed25519 receipt-signing seeds and their public keys (hex, or the JWK that GET /v1/keys serves).
 *
 * Exit codes: 0 success; 2 bad usage or bad input (unreadable, malformed or too open seed file,
 * refusing to overwrite).
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ChioError, describe } from '../errors.js';
import { generateSeedFile, loadSeedFile, publicJwk, type SigningKey } from '../keys.js';
import { dispatch, usageError } from './args.js';
import { EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const DEFAULT_SEED = './chio-data/kernel.seed';

const GROUP_HELP = `usage: chio keys <subcommand> [options]

subcommands:
  generate --out FILE         write a new Ed25519 seed (mode 0600) and print its public key
  public [--seed FILE]        print the public key of a seed

Run \`chio keys <subcommand> --help\` for details.
`;

const GENERATE_HELP = `usage: chio keys generate --out FILE [--json]

Writes a new random Ed25519 seed (64 hex characters) to FILE with mode 0600, creating missing
folders (0700). Refuses to overwrite an existing file. Prints the public key (hex) and its key id
(the RFC 7638 thumbprint receipts carry as kernelKey).
  --out FILE   where to write the seed
  --json       print {"seed", "publicKey", "kid", "jwk"} as JSON
Exit status: 0 written, 2 bad usage or the file cannot be written.
`;

const PUBLIC_HELP = `usage: chio keys public [--seed FILE] [--json]

Prints the Ed25519 public key of a seed file as 64 hex characters.
  --seed FILE   the seed file (default ${DEFAULT_SEED}); must not be readable by group or others
  --json        print the public JWK {"kty","crv","x","kid"} (as GET /v1/keys serves it)
Exit status: 0 printed, 2 bad usage or a missing, malformed or too open seed file.
`;

const GENERATE_OPTIONS = {
  out: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const PUBLIC_OPTIONS = {
  seed: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const run: Command = dispatch('keys', GROUP_HELP, { generate: async (a, io) => generate(a, io), public: async (a, io) => printPublic(a, io) });

function generate(args: string[], io: CliIO): number {
  let values;
  try {
    ({ values } = parseArgs({ args, options: GENERATE_OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    return usageError(io, 'keys generate', describe(err), GENERATE_HELP);
  }
  if (values.help) {
    io.stdout(GENERATE_HELP);
    return EXIT_OK;
  }
  if (values.out === undefined) return usageError(io, 'keys generate', 'missing --out FILE', GENERATE_HELP);
  const file = path.resolve(io.cwd, values.out);
  return withKeyErrors(io, 'generate', () => {
    const key = generateSeedFile(file);
    if (values.json) {
      io.stdout(`${JSON.stringify({ seed: file, publicKey: key.publicKeyRaw.toString('hex'), kid: key.kid, jwk: publicJwk(key) })}\n`);
    } else {
      io.stdout(`wrote a new Ed25519 seed to ${file} (mode 0600)\npublic key: ${key.publicKeyRaw.toString('hex')}\nkid: ${key.kid}\n`);
    }
  });
}

function printPublic(args: string[], io: CliIO): number {
  let values;
  try {
    ({ values } = parseArgs({ args, options: PUBLIC_OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    return usageError(io, 'keys public', describe(err), PUBLIC_HELP);
  }
  if (values.help) {
    io.stdout(PUBLIC_HELP);
    return EXIT_OK;
  }
  const file = path.resolve(io.cwd, values.seed ?? DEFAULT_SEED);
  return withKeyErrors(io, 'public', () => {
    const key: SigningKey = loadSeedFile(file);
    io.stdout(values.json ? `${JSON.stringify(publicJwk(key))}\n` : `${key.publicKeyRaw.toString('hex')}\n`);
  });
}

/** Runs a key operation; a ChioError (bad file, bad permissions, refusing to overwrite) is bad input: exit 2. */
function withKeyErrors(io: CliIO, subcommand: string, action: () => void): number {
  try {
    action();
    return EXIT_OK;
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    io.stderr(`chio keys ${subcommand}: ${err.code}: ${err.message}\n`);
    return EXIT_USAGE;
  }
}

