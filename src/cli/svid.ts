/**
 * `chio svid verify` and `chio svid verify-jwt` (SPEC §10): offline verification of X.509-SVID
 * chains (X509-SVID §5, src/spiffe/chain.ts) and JWT-SVIDs (JWT-SVID §4, src/spiffe/jwt-svid.ts)
 * against trust bundles given per trust domain, the same code the service runs.
 *
 * Output: one JSON line per input, `{input, valid, spiffeId, trustDomain, error: {code, message}|null}`.
 * Exit codes: 0 every input valid; 1 some input invalid; 2 bad usage or an unreadable input or
 * bundle file.
 */
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ChioError, deny, describe, DenyError } from '../errors.js';
import {
  BundleSet,
  parseJwks,
  pemCertificates,
  splitDerCertificates,
  type BundleContent,
  type TrustBundle,
} from '../spiffe/bundle.js';
import { parseRfc3339 } from '../receipt/query.js';
import { parseBundleFile } from '../spiffe/bundle-sources.js';
import { verifySvid } from '../spiffe/chain.js';
import { TrustDomain } from '../spiffe/id.js';
import { MAX_LEEWAY_SECONDS, verifyJwtSvid } from '../spiffe/jwt-svid.js';
import { parseSvidLeaf } from '../spiffe/x509-svid.js';
import { dispatch, usageError } from './args.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const GROUP_HELP = `usage: chio svid <subcommand> [options]

subcommands:
  verify       verify X.509-SVID chains (PEM or DER files, leaf first)
  verify-jwt   verify JWT-SVIDs

Run \`chio svid <subcommand> --help\` for details.
`;

const VERIFY_HELP = `usage: chio svid verify [--bundle TD=FILE]... [--at RFC3339] [--json] CHAIN...

Checks each CHAIN (a PEM or DER file, leaf first, then intermediates) against the X509-SVID
rules, the validity of the leaf and, with --bundle, the chain to a root of the bundle of the
leaf's OWN trust domain (bundles are never pooled).
  --bundle TD=FILE   trust bundle of trust domain TD: PEM roots or a SPIFFE bundle JSON (repeatable)
  --at RFC3339       decide at this time instead of now (e.g. 2026-12-01T00:00:00Z)
  --json             JSON lines (the default and only output)
Output: one JSON line per CHAIN: {"input","valid","spiffeId","trustDomain","error":{"code","message"}|null}
Exit status: 0 all valid, 1 some invalid, 2 bad usage or an unreadable file.
`;

const VERIFY_JWT_HELP = `usage: chio svid verify-jwt --bundle TD=JWKS... --audience AUD... [--leeway SECONDS] [--at RFC3339] [--json] TOKEN...

Verifies each JWT-SVID: alg from RS/ES/PS 256/384/512, kid in the JWT bundle of the sub's trust
domain, aud containing one of the audiences exactly, exp not past (beyond the leeway).
  --bundle TD=JWKS    JWT bundle of trust domain TD: a JWKS or SPIFFE bundle JSON (repeatable, required)
  --audience AUD      an accepted audience (repeatable, required)
  --leeway SECONDS    clock skew tolerated on exp/nbf, 0..${MAX_LEEWAY_SECONDS} (default 30)
  --at RFC3339        decide at this time instead of now
  --json              JSON lines (the default and only output)
TOKEN is a JWT-SVID itself (reported as "argument N", the Nth TOKEN: a token is never printed),
@FILE for a file of tokens, one per line, or - for standard input (either keeps tokens out of the
process list). A FILE that exists and is not a JWT is read as @FILE is. An input holding several
tokens is reported as INPUT:LINE.
Output: one JSON line per token: {"input","valid","spiffeId","trustDomain","error":{"code","message"}|null}
Exit status: 0 all valid, 1 some invalid, 2 bad usage or an unreadable file.
`;

const COMMON_OPTIONS = {
  bundle: { type: 'string', multiple: true },
  at: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const JWT_OPTIONS = {
  ...COMMON_OPTIONS,
  audience: { type: 'string', multiple: true },
  leeway: { type: 'string' },
} as const;

interface Line {
  readonly input: string;
  readonly valid: boolean;
  readonly spiffeId: string | null;
  readonly trustDomain: string | null;
  readonly error: { readonly code: string; readonly message: string } | null;
}

/** A usage problem: printed with the help, exit 2. */
class Usage extends Error {}

/** An unreadable input or bundle: printed, exit 2. */
class Unreadable extends Error {}

function decisionTime(at: string | undefined, io: CliIO): number {
  if (at === undefined) return io.now();
  // strict, as the receipt query's since/until: Date.parse rolls 2027-02-30 into March and takes hour 24
  const ms = parseRfc3339(at);
  if (ms === null) throw new Usage(`--at ${at.length <= 40 ? JSON.stringify(at) : shownArgument(at)} is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)`);
  return ms;
}

async function readInput(file: string, io: CliIO, shown: string = isJwtShaped(file) ? shownArgument(file) : file): Promise<Buffer> {
  try {
    return await readFile(path.resolve(io.cwd, file));
  } catch (err) {
    throw new Unreadable(`cannot read ${shown}: ${(err as NodeJS.ErrnoException).code ?? describe(err)}`);
  }
}

/** `--bundle TD=FILE` values → a bundle lookup (null when none were given). */
async function bundleLookup(
  specs: readonly string[] | undefined,
  parse: (text: string, trustDomain: string, what: string) => BundleContent,
  io: CliIO,
): Promise<((td: string) => TrustBundle | undefined) | null> {
  if (specs === undefined || specs.length === 0) return null;
  const contents: BundleContent[] = [];
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    if (eq <= 0 || eq === spec.length - 1) throw new Usage(`--bundle ${shownArgument(spec)}: expected TD=FILE`);
    const td = trustDomainOf(spec.slice(0, eq));
    if (contents.some((c) => c.trustDomain === td)) throw new Usage(`--bundle: trust domain ${td} given twice (bundles are per trust domain)`);
    const file = spec.slice(eq + 1);
    const text = (await readInput(file, io)).toString('utf8');
    try {
      contents.push(parse(text, td, file));
    } catch (err) {
      if (err instanceof ChioError) throw new Unreadable(err.message);
      throw err;
    }
  }
  const set = new BundleSet();
  set.replace(set.addSource({ source: 'cli', verifier: 'cli' }), contents);
  return (td) => set.get(td);
}

function trustDomainOf(text: string): string {
  try {
    return TrustDomain.parse(text).name;
  } catch (err) {
    if (err instanceof DenyError) throw new Usage(`--bundle: ${err.message}`);
    throw err;
  }
}

function failure(input: string, err: unknown, spiffeId: string | null = null, trustDomain: string | null = null): Line {
  if (!(err instanceof DenyError)) throw err;
  return { input, valid: false, spiffeId, trustDomain, error: { code: err.code, message: err.message } };
}

/** The certificates of a chain file, leaf first: PEM blocks, else concatenated DER. */
function chainCertificates(bytes: Buffer): Buffer[] {
  const text = bytes.toString('latin1');
  const ders = text.includes('-----BEGIN') ? pemCertificates(text) : splitDerCertificates(bytes);
  if (ders.length === 0) throw deny('malformed_certificate', 'no certificate in the file');
  return ders;
}

async function verifyChains(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: COMMON_OPTIONS, allowPositionals: true, strict: true });
  if (values.help) {
    io.stdout(VERIFY_HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) throw new Usage('missing CHAIN');
  const now = decisionTime(values.at, io);
  const bundleFor = await bundleLookup(values.bundle, (text, td, what) => parseBundleFile(text, 'auto', td, what), io);
  return report(io, positionals, async (input) => [await verifyChainFile(input, bundleFor, now, io)]);
}

async function verifyChainFile(input: string, bundleFor: ((td: string) => TrustBundle | undefined) | null, now: number, io: CliIO): Promise<Line> {
  const bytes = await readInput(input, io);
  let ders: Buffer[];
  try {
    ders = chainCertificates(bytes);
  } catch (err) {
    return failure(input, err);
  }
  let claimed: { id: string; td: string } | null = null;
  try {
    const leaf = parseSvidLeaf(ders[0] as Buffer);
    claimed = { id: leaf.spiffeId.uri, td: leaf.spiffeId.trustDomain };
    verifySvid(ders, bundleFor, now);
    return { input, valid: true, spiffeId: claimed.id, trustDomain: claimed.td, error: null };
  } catch (err) {
    return failure(input, err, claimed?.id ?? null, claimed?.td ?? null);
  }
}

async function verifyTokens(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: JWT_OPTIONS, allowPositionals: true, strict: true });
  if (values.help) {
    io.stdout(VERIFY_JWT_HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) throw new Usage('missing TOKEN');
  const audiences = values.audience ?? [];
  if (audiences.length === 0 || audiences.some((a) => a === '')) throw new Usage('--audience AUD is required');
  const leeway = values.leeway === undefined ? 30 : Number(values.leeway);
  if (!Number.isInteger(leeway) || leeway < 0 || leeway > MAX_LEEWAY_SECONDS) {
    throw new Usage(`--leeway must be an integer 0..${MAX_LEEWAY_SECONDS}`);
  }
  const now = decisionTime(values.at, io);
  const bundleFor = await bundleLookup(values.bundle, (text, td, what) => parseJwks(text, td, what), io);
  if (bundleFor === null) throw new Usage('--bundle TD=JWKS is required');
  if (positionals.filter((p) => p === '-').length > 1) throw new Usage('- (standard input) given more than once');
  const options = { audiences, leewaySeconds: leeway };
  return report(io, positionals, async (input, index) => {
    const { label: shown, text } = await tokenInput(input, index, io);
    const tokens = text
      .split(/\r?\n/)
      .map((line, i) => ({ token: line.trim(), line: i + 1 }))
      .filter((t) => t.token !== '');
    if (tokens.length === 0) throw new Unreadable(`${shown}: no token`);
    return tokens.map(({ token, line }) => {
      const label = tokens.length === 1 ? shown : `${shown}:${line}`;
      try {
        const svid = verifyJwtSvid(token, bundleFor, options, now);
        return { input: label, valid: true, spiffeId: svid.spiffeId.uri, trustDomain: svid.spiffeId.trustDomain, error: null };
      } catch (err) {
        return failure(label, err);
      }
    });
  });
}

/**
 * A TOKEN argument: `-` (standard input), `@FILE`, a JWT itself, or (as before @FILE existed) a plain
 * FILE that is not JWT-shaped. `label` names it in the output and in errors: a token given on the
 * command line is `argument N`, never its text (a whole bearer token was printed in
 * `cannot read <token>: ENAMETOOLONG`: QA finding).
 */
async function tokenInput(arg: string, index: number, io: CliIO): Promise<{ label: string; text: string }> {
  if (arg === '-') return { label: '-', text: await io.readStdin() };
  if (arg.startsWith('@')) return { label: arg, text: (await readInput(arg.slice(1), io, arg)).toString('utf8') };
  if (isJwtShaped(arg)) return { label: `argument ${index + 1}`, text: arg };
  if (isFile(path.resolve(io.cwd, arg))) return { label: arg, text: (await readInput(arg, io)).toString('utf8') };
  throw new Unreadable(`argument ${index + 1} (${shownArgument(arg)}): not a JWT-SVID, @FILE, - or an existing file`);
}

const BASE64URL_PART = /^[A-Za-z0-9_-]+$/;

/**
 * A JWS compact serialization: three base64url parts (the signature may be empty: `alg: none` is
 * refused by the verifier, with its code), the first a JSON object. The header test keeps a file
 * named like `tokens.v1.txt` a file.
 */
function isJwtShaped(text: string): boolean {
  const parts = text.split('.');
  if (parts.length !== 3) return false;
  const [header, payload, signature] = parts as [string, string, string];
  if (!BASE64URL_PART.test(header) || !BASE64URL_PART.test(payload) || !(signature === '' || BASE64URL_PART.test(signature))) return false;
  return Buffer.from(header, 'base64url').toString('utf8').trimStart().startsWith('{');
}

function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false; // ENAMETOOLONG for a long token among them
  }
}

/**
 * At most 12 characters of an argument that could be a token (a base64 signature may hold `/`, so a
 * `/` proves nothing): every message about an argument or option value goes through this.
 */
function shownArgument(arg: string): string {
  if (arg.length <= 12) return JSON.stringify(arg);
  return `${JSON.stringify(arg.slice(0, 12)).slice(0, -1)}…"`;
}

/** Runs `check` per input, prints the lines; an unreadable input is reported and makes it exit 2. */
async function report(io: CliIO, inputs: readonly string[], check: (input: string, index: number) => Promise<Line[]>): Promise<number> {
  let unreadable = false;
  let invalid = false;
  for (const [index, input] of inputs.entries()) {
    try {
      for (const line of await check(input, index)) {
        invalid ||= !line.valid;
        io.stdout(`${JSON.stringify(line)}\n`);
      }
    } catch (err) {
      if (!(err instanceof Unreadable)) throw err;
      unreadable = true;
      io.stderr(`chio svid: ${err.message}\n`);
    }
  }
  return unreadable ? EXIT_USAGE : invalid ? EXIT_CHECK_FAILED : EXIT_OK;
}

function subcommand(name: string, help: string, body: (args: string[], io: CliIO) => Promise<number>): Command {
  return async (args, io) => {
    try {
      return await body(args, io);
    } catch (err) {
      if (err instanceof Usage || (err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS'))) {
        return usageError(io, `svid ${name}`, err.message, help);
      }
      if (err instanceof Unreadable) {
        io.stderr(`chio svid ${name}: ${err.message}\n`);
        return EXIT_USAGE;
      }
      throw err;
    }
  };
}

export const run: Command = dispatch('svid', GROUP_HELP, {
  verify: subcommand('verify', VERIFY_HELP, verifyChains),
  'verify-jwt': subcommand('verify-jwt', VERIFY_JWT_HELP, verifyTokens),
});
