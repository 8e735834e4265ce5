/**
 * `chio policy check FILE [--json]` (SPEC §10): loads and compiles a policy file (SPEC §5) exactly
 * as the service does and reports the result.
 *
 * Exit codes: 0 valid; 1 invalid (the located `file:line:col: yaml.path: message` error);
 * 2 bad usage, or a file that is missing or cannot be read (a folder, no permission).
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ChioError, describe } from '../errors.js';
import { loadPolicyFile } from '../policy/load.js';
import { usageError } from './args.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const HELP = `usage: chio policy check FILE [--json]

Validates a policy file (schema chio.policy.v1) and compiles it as the service would.
  FILE     the policy YAML
  --json   print one JSON object instead of text
Exit status: 0 valid, 1 invalid (the error names file:line:col and the YAML path),
2 bad usage or missing file.
`;

const OPTIONS = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

export const run: Command = async (args, io) => {
  let parsed;
  try {
    parsed = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    return usageError(io, 'policy', describe(err), HELP);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout(HELP);
    return EXIT_OK;
  }
  const [subcommand, file, ...extra] = positionals;
  if (subcommand !== 'check') {
    return usageError(io, 'policy', subcommand === undefined ? 'missing subcommand' : `unknown subcommand ${JSON.stringify(subcommand)}`, HELP);
  }
  if (file === undefined) return usageError(io, 'policy', 'missing FILE', HELP);
  if (extra.length > 0) return usageError(io, 'policy', `unexpected argument ${JSON.stringify(extra[0])}`, HELP);
  return check(file, values.json === true, io);
};

function check(file: string, json: boolean, io: CliIO): number {
  try {
    const policy = loadPolicyFile(path.resolve(io.cwd, file), file);
    const rules = policy.rules.size;
    const tools = policy.toolNames.size;
    io.stdout(
      json
        ? `${JSON.stringify({ ok: true, file, rules, tools, hash: policy.hash })}\n`
        : `ok: ${file}: ${rules} rules, ${tools} tools, policy hash ${policy.hash}\n`,
    );
    return EXIT_OK;
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    if (json) io.stdout(`${JSON.stringify({ ok: false, file, error: err.toJSON() })}\n`);
    else io.stderr(`${err.message}\n`);
    return err.code === 'file_not_found' || err.code === 'io_error' ? EXIT_USAGE : EXIT_CHECK_FAILED;
  }
}

