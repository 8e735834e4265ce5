/**
 * `chio receipt verify FILE` and `chio receipt show --receipt-id rct-…` (SPEC §6, §10): offline
 * verification of a receipt JSONL file (every signature and the hash chain, the first bad receipt
 * reported precisely) and printing one receipt. `chio receipt list` is ./receipt-list.ts.
 *
 * Exit codes: 0 success; 1 verification failed / receipt not found; 2 bad usage or bad input
 * (missing file, no or bad public key).
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ChioError, describe } from '../errors.js';
import { loadSeedFile, parsePublicKey, publicKeyFromJwk, type PublicKeyInfo } from '../keys.js';
import { CHAIN_ID_PATTERN, RECEIPT_ID_PATTERN } from '../receipt/receipt.js';
import { formatFailure, readReceiptLines, verificationKeys, type VerifyResult } from '../receipt/verify.js';
import { dispatch, usageError } from './args.js';
import type { FileAnchor } from './receipt-export.js';
import { findStoredReceipt, listReceipts } from './receipt-list.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const DEFAULT_RECEIPTS = './chio-data/receipts.jsonl';

const GROUP_HELP = `usage: chio receipt <subcommand> [options]

subcommands:
  verify FILE|DIR [--public-key KEY]… [--jwks FILE]… [--seed FILE]… [--json]
                              check every signature and the hash chain of a receipt file,
                              or every proof of an export bundle (DIR)
  export --since T --until T --out DIR [--file FILE] [--seed FILE]…
                              write an offline bundle with Merkle proofs against checkpoints
  show --receipt-id rct-… [--file FILE | --store FILE] [--json]
                              print one receipt
  list [filters] [--all] [--store FILE | --control-url URL] [--json]
                              list receipts from the SQLite store or a running service

Run \`chio receipt <subcommand> --help\` for details.
`;

const VERIFY_HELP = `usage: chio receipt verify FILE [FILE…] [--public-key KEY]… [--jwks FILE]… [--seed FILE]… [--json]
                          [--checkpoints FILE] [--from-checkpoint]
       chio receipt verify DIR [--public-key KEY]… [--jwks FILE]… [--seed FILE]… [--json] [--open-ends]
       chio receipt verify --pg-url-env VAR [--chain ID] [--public-key KEY]… [--jwks FILE]… [--seed FILE]… [--json]

Verifies a receipt JSONL file offline: each line must be a receipt in its canonical JCS form,
signed (Ed25519) by one of the given keys — chio.receipt.v2: its body's leaf leads through its
batch's Merkle proof to the batch root the batch signature covers; chio.receipt.v1: a signature
per receipt — and chained to the line before it (seq + 1, prevHash = the previous receipt's hash),
with whole batches (the file must not end inside one). Reports the first bad line and why.
Several FILEs (e.g. the per-worker chains of \`chio serve --workers N\`: receipts-w1.jsonl,
receipts-w2.jsonl, …) are verified one by one, each as its own chain; the exit status is the worst.
Public keys (each may be given several times):
  --public-key KEY   64 hex characters or 43 base64url characters (\`chio keys public\`)
  --jwks FILE        the JSON served by GET /v1/keys ({"keys":[{kty,crv,x,kid}]})
  --seed FILE        a seed file (its public key is used)
  (none)             kernel.seed beside FILE when it is there, as \`chio receipt export\` does; said
                     on stderr and in --json ("keySource") as not pinned: a key kept next to the log
                     proves only that the log is consistent with it (pass --public-key to pin it)
  --json             print {"ok","receipts","firstFailure"} as JSON
A file that does not start at seq 1 (older receipts pruned by retention or rotated into segments)
is accepted when a signed checkpoint covers the receipts before it and they are accounted for
(pruned through the retention anchor beside the checkpoint log, or in segments beside FILE); a
live FILE must also reach the latest checkpoint of that log (receipts cut from its end show):
  --checkpoints FILE the checkpoint log (default checkpoints.jsonl beside FILE)
  --from-checkpoint  accept the start without a checkpoint log (its prevHash is not checked)
DIR is a bundle from \`chio receipt export\`: every checkpoint's signature and link, the consistency
proofs between them, every receipt's signature and chain, and each receipt's inclusion proof
against a signed checkpoint are checked, and that the range is whole: the receipts just outside it
(bounds.jsonl) are signed, included, chained to its ends and stamped outside it, or the range
starts at seq 1 / right after retention pruned (retention-checkpoint.jsonl) / ends at the latest
checkpoint. Without key options the bundle's keys.json is used
(and reported as not pinned).
  --open-ends        accept a range whose start or end is not proven (e.g. a start pruned by retention)
--pg-url-env VAR verifies the central PostgreSQL store instead (URL in the environment variable
VAR): every replica's chain independently, in seq order (--chain ID: only that one). A chain may
end inside a signing batch there (the rest is not shipped yet).
Exit status: 0 all receipts verify, 1 a receipt fails, 2 bad usage or unreadable input.
`;

const SHOW_HELP = `usage: chio receipt show --receipt-id rct-… [--file FILE | --store FILE] [--json]

Prints the receipt with that id as indented JSON.
  --receipt-id ID   the receipt id (rct-<ULID>)
  --file FILE       the receipt JSONL file (default ${DEFAULT_RECEIPTS})
  --store FILE      a SQLite receipt store (receipts.sinks type sqlite) instead of a JSONL file
  --json            one line, no indentation (for scripts: the receipt's canonical JSON)
Exit status: 0 printed, 1 no such receipt (receipt_not_found), 2 bad usage or unreadable file.
`;

const VERIFY_OPTIONS = {
  checkpoints: { type: 'string' },
  'from-checkpoint': { type: 'boolean' },
  'open-ends': { type: 'boolean' },
  'pg-url-env': { type: 'string' },
  chain: { type: 'string' },
  'public-key': { type: 'string', multiple: true },
  jwks: { type: 'string', multiple: true },
  seed: { type: 'string', multiple: true },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const SHOW_OPTIONS = {
  'receipt-id': { type: 'string' },
  file: { type: 'string' },
  store: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const jwksSchema = z.object({ keys: z.array(z.unknown()) });

export const run: Command = dispatch('receipt', GROUP_HELP, {
  verify: async (a, io) => verify(a, io),
  show: async (a, io) => show(a, io),
  list: async (a, io) => listReceipts(a, io),
  export: async (a, io) => (await import('./receipt-export.js')).exportCommand(a, io),
});

/**
 * `chio receipt verify FILE FILE…`: several chains, e.g. the per-worker files of
 * `chio serve --workers N` (receipts-w1.jsonl, receipts-w2.jsonl, …). Each file is its own chain,
 * verified alone with the same keys; one report per file; the exit status is the worst.
 */
async function verifyEach(args: string[], io: CliIO): Promise<number> {
  const { tokens } = parseArgs({ args, options: VERIFY_OPTIONS, strict: true, allowPositionals: true, tokens: true });
  const files = tokens.filter((t) => t.kind === 'positional').map((t) => t.index);
  if (tokens.some((t) => t.kind === 'option' && t.name === 'checkpoints')) {
    return usageError(io, 'receipt verify', '--checkpoints names the log of one file: give it with one FILE', VERIFY_HELP);
  }
  const options = args.filter((_, i) => !files.includes(i));
  let worst = EXIT_OK;
  for (const i of files) worst = Math.max(worst, await verify([args[i] as string, ...options], io));
  return worst;
}

async function verify(args: string[], io: CliIO): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: VERIFY_OPTIONS, strict: true, allowPositionals: true });
  } catch (err) {
    return usageError(io, 'receipt verify', describe(err), VERIFY_HELP);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout(VERIFY_HELP);
    return EXIT_OK;
  }
  const [file, ...extra] = positionals;
  if (extra.length > 0 && values['pg-url-env'] === undefined) return verifyEach(args, io);
  if (values['pg-url-env'] !== undefined) return verifyPg(values['pg-url-env'], values, positionals, io);
  if (values.chain !== undefined) return usageError(io, 'receipt verify', '--chain goes with --pg-url-env', VERIFY_HELP);
  if (file === undefined) return usageError(io, 'receipt verify', 'missing FILE', VERIFY_HELP);
  if (extra.length > 0) return usageError(io, 'receipt verify', `unexpected argument ${JSON.stringify(extra[0])}`, VERIFY_HELP);
  const publicKeys = values['public-key'] ?? [];
  const jwksFiles = values.jwks ?? [];
  const seedFiles = values.seed ?? [];
  const target = path.resolve(io.cwd, file);
  const bundle = isDirectory(target);
  const audit = await import('./receipt-export.js');
  // no key given for a file: the seed beside it, as `chio receipt export` defaults (a bundle has its keys.json)
  const fileWithoutKey = publicKeys.length + jwksFiles.length + seedFiles.length === 0 && !bundle;
  const besideSeed = fileWithoutKey ? audit.seedBeside(target) : null;
  if (fileWithoutKey && besideSeed === null) {
    return usageError(
      io,
      'receipt verify',
      'no public key to verify with: pass --public-key HEX|BASE64URL (from `chio keys public`), --jwks FILE (the JSON of GET /v1/keys) or --seed FILE',
      VERIFY_HELP,
    );
  }
  let result: VerifyResult;
  let anchor: FileAnchor;
  let keySource: UnpinnedKey | null = null;
  try {
    const keys = besideSeed === null ? keysOf(values, io) : verificationKeys([loadSeedFile(besideSeed)]);
    if (besideSeed !== null) keySource = unpinnedKey(io, file, besideSeed, keys);
    if (bundle) return await audit.verifyBundleCommand(target, file, keys.size === 0 ? null : keys, { json: values.json === true, openEnds: values['open-ends'] === true }, io);
    const checkpoints = values.checkpoints === undefined ? undefined : path.resolve(io.cwd, values.checkpoints);
    const verified = await audit.verifyAnchoredFile(target, { checkpoints, fromCheckpoint: values['from-checkpoint'] === true }, keys);
    if (verified.failure !== null) {
      const receipts = verified.result?.receipts ?? 0;
      const json = { ok: false, receipts, checkpointFailure: verified.failure, ...(keySource === null ? {} : { keySource }) };
      io.stdout(values.json ? `${JSON.stringify(json)}\n` : `${file}: FAILED\n${verified.failure}\n`);
      return EXIT_CHECK_FAILED;
    }
    anchor = verified.anchor;
    result = verified.result as VerifyResult;
  } catch (err) {
    return inputError(io, 'verify', err);
  }
  const json = { ...jsonReport(result, anchor), ...(keySource === null ? {} : { keySource }) };
  io.stdout(values.json ? `${JSON.stringify(json)}\n` : textReport(file, result, anchor));
  return result.ok ? EXIT_OK : EXIT_CHECK_FAILED;
}

/** Where the key came from when none was given (`--json`: `keySource`). */
interface UnpinnedKey {
  readonly seed: string;
  readonly kids: string[];
  readonly pinned: false;
}

/**
 * The seed beside the log is the default key, and says so on stderr: whoever could rewrite the log
 * could rewrite that seed too, so verifying with it proves the log consistent, not who signed it.
 */
function unpinnedKey(io: CliIO, file: string, seed: string, keys: ReturnType<typeof verificationKeys>): UnpinnedKey {
  const kids = [...keys.keys()];
  const shown = path.join(path.dirname(file), path.basename(seed));
  io.stderr(
    `chio receipt verify: ${file}: no key given: using ${shown} beside it (key ${kids.join(', ')}), not pinned: ` +
      'a key stored next to the log proves only that the log is consistent with it; pass --public-key (from `chio keys public`) to pin the key\n',
  );
  return { seed, kids, pinned: false };
}

type VerifyValues = ReturnType<typeof parseArgs<{ args: string[]; options: typeof VERIFY_OPTIONS; strict: true; allowPositionals: true }>>['values'];

/** The keys of --public-key, --jwks and --seed. Throws ChioError for an unreadable or bad key. */
function keysOf(values: VerifyValues, io: CliIO): ReturnType<typeof verificationKeys> {
  return verificationKeys([
    ...(values['public-key'] ?? []).map((text) => parsePublicKey(text)),
    ...(values.jwks ?? []).flatMap((f) => keysOfJwksFile(path.resolve(io.cwd, f))),
    ...(values.seed ?? []).map((f) => loadSeedFile(path.resolve(io.cwd, f))),
  ]);
}

/** `chio receipt verify --pg-url-env VAR`: every chain of the central PostgreSQL store (./db.ts). */
async function verifyPg(urlEnv: string, values: VerifyValues, positionals: readonly string[], io: CliIO): Promise<number> {
  if (positionals.length > 0) return usageError(io, 'receipt verify', 'give FILE|DIR or --pg-url-env, not both', VERIFY_HELP);
  if (values.checkpoints !== undefined || values['from-checkpoint'] === true) {
    return usageError(io, 'receipt verify', '--checkpoints and --from-checkpoint are for files, not --pg-url-env', VERIFY_HELP);
  }
  if (values.chain !== undefined && !CHAIN_ID_PATTERN.test(values.chain)) {
    return usageError(io, 'receipt verify', `--chain ${JSON.stringify(values.chain)} is not a chain id (chn- and a ULID, as \`chio db status\` lists them)`, VERIFY_HELP);
  }
  let keys: ReturnType<typeof verificationKeys>;
  try {
    keys = keysOf(values, io);
  } catch (err) {
    return inputError(io, 'verify', err);
  }
  if (keys.size === 0) return usageError(io, 'receipt verify', 'no public key to verify with: pass --public-key, --jwks FILE (GET /v1/keys of every replica) or --seed FILE', VERIFY_HELP);
  const db = await import('./db.js');
  return db.verifyCentral(urlEnv, keys, { json: values.json === true, ...(values.chain === undefined ? {} : { chain: values.chain }) }, io);
}

async function show(args: string[], io: CliIO): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: SHOW_OPTIONS, strict: true, allowPositionals: false });
  } catch (err) {
    return usageError(io, 'receipt show', describe(err), SHOW_HELP);
  }
  const { values } = parsed;
  if (values.help) {
    io.stdout(SHOW_HELP);
    return EXIT_OK;
  }
  const id = values['receipt-id'];
  if (id === undefined) return usageError(io, 'receipt show', 'missing --receipt-id rct-…', SHOW_HELP);
  if (!RECEIPT_ID_PATTERN.test(id)) return usageError(io, 'receipt show', `--receipt-id ${JSON.stringify(id)} is not rct-<ULID>`, SHOW_HELP);
  if (values.file !== undefined && values.store !== undefined) return usageError(io, 'receipt show', 'give --file or --store, not both', SHOW_HELP);
  const file = values.store ?? values.file ?? DEFAULT_RECEIPTS;
  let receipt: unknown;
  try {
    receipt = values.store !== undefined ? await findStoredReceipt(path.resolve(io.cwd, values.store), id) : await findReceipt(path.resolve(io.cwd, file), id);
  } catch (err) {
    return inputError(io, 'show', err);
  }
  if (receipt === undefined) {
    io.stderr(`chio receipt show: receipt_not_found: no receipt ${id} in ${file}\n`);
    return EXIT_CHECK_FAILED;
  }
  io.stdout(`${values.json === true ? JSON.stringify(receipt) : JSON.stringify(receipt, null, 2)}\n`);
  return EXIT_OK;
}

/** The receipt whose top-level `id` is `id` (a request id may carry the same text, so each candidate is parsed). */
async function findReceipt(file: string, id: string): Promise<unknown> {
  const needle = Buffer.from(`"${id}"`, 'utf8');
  for await (const piece of readReceiptLines(file)) {
    if (piece.kind !== 'line' || !piece.bytes.includes(needle)) continue;
    let value: unknown;
    try {
      value = JSON.parse(piece.bytes.toString('utf8'));
    } catch {
      continue; // not a receipt; `chio receipt verify` reports such lines
    }
    if (typeof value === 'object' && value !== null && (value as { id?: unknown }).id === id) return value;
  }
  return undefined;
}

export function keysOfJwksFile(file: string): PublicKeyInfo[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new ChioError(missing ? 'file_not_found' : 'io_error', `cannot read JWKS file ${file}: ${describe(err)}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ChioError('key_invalid', `JWKS file ${file} is not valid JSON: ${describe(err)}`);
  }
  const parsed = jwksSchema.safeParse(value);
  if (!parsed.success) throw new ChioError('key_invalid', `JWKS file ${file} is not {"keys":[…]}`);
  return parsed.data.keys.map((jwk, i) => {
    try {
      return publicKeyFromJwk(jwk);
    } catch (err) {
      if (!(err instanceof ChioError)) throw err;
      throw new ChioError('key_invalid', `JWKS file ${file}, keys[${i}]: ${err.message}`);
    }
  });
}

function jsonReport(result: VerifyResult, anchor: FileAnchor): { ok: boolean; receipts: number; firstFailure: VerifyResult['firstFailure'] } {
  const anchored = anchor.after === undefined ? {} : { startsAfterSeq: anchor.after.seq, anchor: anchor.note };
  return { ok: result.ok, receipts: result.receipts, firstFailure: result.firstFailure, ...anchored };
}

function textReport(file: string, result: VerifyResult, anchor: FileAnchor): string {
  const note = anchor.note === null ? '' : `(${anchor.note})\n`;
  if (result.firstFailure !== null) {
    return `${file}: FAILED\n${formatFailure(result.firstFailure)}\n(${result.receipts} receipt(s) before it verified)\n${note}`;
  }
  if (result.head === null) return `${file}: OK: the file holds no receipts\n`;
  const first = (anchor.after?.seq ?? 0) + 1;
  return `${file}: OK: ${result.receipts} receipt(s) verified, seq ${first} to ${result.head.seq}, head ${result.head.hash}\n${note}`;
}

function isDirectory(target: string): boolean {
  try {
    return statSync(target).isDirectory();
  } catch {
    return false;
  }
}

/** A ChioError reading keys or files is bad input (exit 2); anything else is a bug and propagates. */
function inputError(io: CliIO, subcommand: string, err: unknown): number {
  if (!(err instanceof ChioError)) throw err;
  io.stderr(`chio receipt ${subcommand}: ${err.code}: ${err.message}\n`);
  return EXIT_USAGE;
}

