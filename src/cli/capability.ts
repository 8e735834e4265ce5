/**
 * `chio capability issue|inspect|verify` (SPEC §7, §10): issue a capability offline with an
 * authority seed (the same contract as `POST /v1/capabilities/issue`, src/capability/issue.ts),
 * decode one, and verify one against authority public keys the way Check does
 * (src/capability/verify.ts).
 *
 * Exit codes: issue 0 issued, 2 bad usage or refused (nothing issued); inspect 0 decoded, 2 bad
 * usage or not a capability; verify 0 valid, 1 invalid (the deny code is printed), 2 bad usage.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { isTier, TIERS, type Tier } from '../attestation/tier.js';
import { issueCapability, MAX_CAPABILITY_TTL_SECONDS } from '../capability/issue.js';
import { parseRevocations } from '../capability/revocations.js';
import { decodeCapability, type ParsedCapability } from '../capability/token.js';
import { checkTier, checkTool, checkWindow, checkWorkload, CapabilityVerifier, type CapabilityFailure } from '../capability/verify.js';
import { ChioError, describe, DenyError } from '../errors.js';
import { CREDENTIAL_KINDS, type CredentialKind } from '../identity/identity.js';
import { loadSeedFile, parsePublicKey, type PublicKeyInfo } from '../keys.js';
import { loadPolicyFile } from '../policy/load.js';
import { parseRfc3339 } from '../receipt/query.js';
import { SpiffeId } from '../spiffe/id.js';
import { dispatch, usageError } from './args.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const GROUP_HELP = `usage: chio capability <subcommand> [options]

subcommands:
  issue     sign a capability with an authority seed and print its token
  inspect   decode a token (no verification)
  verify    verify a token against authority public keys, as Check does

Run \`chio capability <subcommand> --help\` for details.
`;

const ISSUE_HELP = `usage: chio capability issue --authority-seed FILE --subject SUBJECT --tool TOOL [--tool TOOL]...
                             --ttl DURATION [--runtime-attestation-file FILE] [--policy FILE] [--json]

Signs a chio.capability.v1 token granting the tools to the subject and prints the header value
(base64url) for x-chio-capability.
  --authority-seed FILE            Ed25519 seed of the authority (mode 0600; \`chio keys generate\`)
  --subject SUBJECT                who the capability is for (free text, at most 256 characters)
  --tool TOOL                      a tool of the policy (repeatable)
  --ttl DURATION                   lifetime: 300s, 5m, 1h, 1d or plain seconds (at most ${MAX_CAPABILITY_TTL_SECONDS / 86400} days)
  --runtime-attestation-file FILE  a chio.runtime-attestation.v1 JSON document: binds the capability to its
                                   workload and stamps the tier it reaches
  --policy FILE                    the policy whose tools, trusted_verifiers and runtime_assurance.tiers
                                   ceilings apply (without it: no ceilings, evidence reaches at most attested)
  --json                           print {"token","capability"}
Exit status: 0 issued, 2 bad usage or issuance refused (the message names the field; nothing issued).
`;

const INSPECT_HELP = `usage: chio capability inspect TOKEN [--at RFC3339] [--json]

Decodes a capability token and prints its members, validity window and workload binding. Nothing
is verified: use \`chio capability verify\` for that.
  TOKEN          the header value, @FILE to read it from a file, or - for standard input
  --at RFC3339   describe the window relative to this time instead of now
  --json         print {"capability","window","binding","verified":false}
Exit status: 0 decoded, 2 bad usage or not a capability token.
`;

const VERIFY_HELP = `usage: chio capability verify TOKEN --authority-pub KEY [--authority-pub KEY]... [--workload SPIFFE-ID]
                              [--credential-kind KIND] [--tier TIER] [--tool TOOL] [--revocations FILE]
                              [--at RFC3339] [--json]

Verifies a token as Check does: strict format, a trusted issuer, the Ed25519 signature, the time
window (30 s skew), and what you ask for on top.
  TOKEN                  the header value, @FILE to read it from a file, or - for standard input
  --authority-pub KEY    a trusted authority key: 64 hex, 43 base64url or a JWK (\`chio keys public\`); repeatable
  --workload SPIFFE-ID   the presenting workload: must be exactly the bound workload
  --credential-kind KIND how it is presented (uri, x509_svid, jwt_svid); default: as bound
  --tier TIER            its runtime-assurance tier (none, basic, attested, verified); checked against the stamp
  --tool TOOL            the tool requested: must be in the capability's scope
  --revocations FILE     a revocation list file: the capability must not be on it
  --at RFC3339           decide at this time instead of now
  --json                 print {"valid","code","message","capability","unchecked"}
A constraint of the token that no flag checks (its workload without --workload, its stamped tier
without --tier) is listed as "not checked" ("unchecked": its constraints members, with --json): a
valid token is valid only for what was checked.
Exit status: 0 valid, 1 invalid (with its code, e.g. capability_expired), 2 bad usage.
`;

const ISSUE_OPTIONS = {
  'authority-seed': { type: 'string' },
  subject: { type: 'string' },
  tool: { type: 'string', multiple: true },
  ttl: { type: 'string' },
  'runtime-attestation-file': { type: 'string' },
  policy: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const INSPECT_OPTIONS = {
  at: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const VERIFY_OPTIONS = {
  'authority-pub': { type: 'string', multiple: true },
  workload: { type: 'string' },
  'credential-kind': { type: 'string' },
  tier: { type: 'string' },
  tool: { type: 'string' },
  revocations: { type: 'string' },
  at: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const TTL = /^(\d{1,9})(s|m|h|d)?$/;
const TTL_UNIT_SECONDS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86400 };

/** A usage problem: printed with the subcommand's help, exit 2. */
class Usage extends Error {}

export const run: Command = dispatch('capability', GROUP_HELP, {
  issue: async (a, io) => guarded(io, 'issue', ISSUE_HELP, async () => issue(a, io)),
  inspect: async (a, io) => guarded(io, 'inspect', INSPECT_HELP, () => inspect(a, io)),
  verify: async (a, io) => guarded(io, 'verify', VERIFY_HELP, () => verify(a, io)),
});

/** Usage errors → help + exit 2; ChioErrors (bad files, refusals) → `code: message` + exit 2. */
async function guarded(io: CliIO, sub: string, help: string, action: () => Promise<number>): Promise<number> {
  try {
    return await action();
  } catch (err) {
    if (err instanceof Usage) return usageError(io, `capability ${sub}`, err.message, help);
    if (err instanceof ChioError) {
      io.stderr(`chio capability ${sub}: ${err.code}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
}

/** Runs parseArgs; its complaints are usage errors. */
function parsed<T>(run: () => T): T {
  try {
    return run();
  } catch (err) {
    throw new Usage(describe(err));
  }
}

function issue(args: string[], io: CliIO): number {
  const { values } = parsed(() => parseArgs({ args, options: ISSUE_OPTIONS, strict: true, allowPositionals: false }));
  if (values.help) return help(io, ISSUE_HELP);
  const seed = required(values['authority-seed'], '--authority-seed FILE');
  const subject = required(values.subject, '--subject SUBJECT');
  const tools = values.tool ?? [];
  if (tools.length === 0) throw new Usage('missing --tool TOOL (at least one)');
  const ttlSeconds = parseTtl(required(values.ttl, '--ttl DURATION'));
  const attestationFile = values['runtime-attestation-file'];
  const authority = loadSeedFile(path.resolve(io.cwd, seed));
  const policy = values.policy === undefined ? null : loadPolicyFile(path.resolve(io.cwd, values.policy));
  const body = {
    subject,
    tools,
    ttlSeconds,
    ...(attestationFile === undefined ? {} : { runtimeAttestation: readAttestation(path.resolve(io.cwd, attestationFile)) }),
  };
  const issued = issueCapability(body, { authority, policy, now: io.now() });
  io.stdout(values.json ? `${JSON.stringify({ token: issued.token, capability: issued.capability })}\n` : `${issued.token}\n`);
  return EXIT_OK;
}

async function inspect(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parsed(() => parseArgs({ args, options: INSPECT_OPTIONS, strict: true, allowPositionals: true }));
  if (values.help) return help(io, INSPECT_HELP);
  const token = decodeCapability(await tokenArgument(positionals, io));
  const now = decisionTime(values.at, io);
  const c = token.capability;
  const window = {
    issuedAt: c.issuedAt,
    expiresAt: c.expiresAt,
    ttlSeconds: (token.expiresAtMs - token.issuedAtMs) / 1000,
    at: new Date(now).toISOString(),
    status: now < token.issuedAtMs ? 'not yet valid' : now >= token.expiresAtMs ? 'expired' : 'within window',
  };
  const binding = {
    workloadIdentity: c.constraints.workloadIdentity ?? null,
    minimumRuntimeAssuranceTier: c.constraints.minimumRuntimeAssuranceTier ?? null,
  };
  if (values.json) {
    io.stdout(`${JSON.stringify({ capability: c, window, binding, verified: false })}\n`);
    return EXIT_OK;
  }
  const w = binding.workloadIdentity;
  io.stdout(
    [
      `capability ${c.id} (not verified)`,
      `  issuer     ${c.issuer}`,
      `  subject    ${JSON.stringify(c.subject)}`,
      `  tools      ${c.tools.join(', ')}`,
      `  window     ${c.issuedAt} .. ${c.expiresAt} (${window.ttlSeconds}s; ${window.status} at ${window.at})`,
      `  workload   ${w === null ? 'not bound (any workload)' : `${w.uri} (${w.credentialKind} or stronger)`}`,
      `  min. tier  ${binding.minimumRuntimeAssuranceTier ?? 'none stamped'}`,
      '',
    ].join('\n'),
  );
  return EXIT_OK;
}

async function verify(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parsed(() => parseArgs({ args, options: VERIFY_OPTIONS, strict: true, allowPositionals: true }));
  if (values.help) return help(io, VERIFY_HELP);
  const header = await tokenArgument(positionals, io);
  const keys = values['authority-pub'] ?? [];
  if (keys.length === 0) throw new Usage('missing --authority-pub KEY (at least one)');
  const authorities: PublicKeyInfo[] = keys.map((k) => parsePublicKey(k));
  const now = decisionTime(values.at, io);
  const workload = values.workload === undefined ? null : parseWorkload(values.workload);
  const kind = values['credential-kind'] === undefined ? null : parseKind(values['credential-kind']);
  const tier = values.tier === undefined ? null : parseTier(values.tier);
  const revoked = values.revocations === undefined ? null : readRevocations(path.resolve(io.cwd, values.revocations));

  const auth = new CapabilityVerifier({ authorities, cacheSize: 1 }).authenticate(header);
  const token = auth.token;
  const failure: CapabilityFailure | null = !auth.ok
    ? auth.failure
    : (checkWindow(auth.token, now) ??
      (revoked?.has(auth.token.capability.id) ? { code: 'capability_revoked', message: `capability ${auth.token.capability.id} is revoked` } : null) ??
      (values.tool === undefined ? null : checkTool(auth.token, values.tool)) ??
      checkPresented(auth.token, workload, kind, tier));
  report(io, values.json === true, token, failure, token === null ? [] : uncheckedConstraints(token, workload, tier));
  return failure === null ? EXIT_OK : EXIT_CHECK_FAILED;
}

/** A constraint of the token that the command line gave nothing to check against. */
interface Unchecked {
  /** the member of `constraints` */
  readonly constraint: 'workloadIdentity' | 'minimumRuntimeAssuranceTier';
  /** for people: what it asks, and the flag that checks it */
  readonly text: string;
}

/**
 * The token's constraints left unchecked: a bound token verified without --workload, or a stamped
 * tier without --tier, printed `valid` and nothing else, as if any workload at any tier could use it
 * (QA finding). Still exit 0 (what was checked passed), but said. A stamped `none` asks nothing.
 */
function uncheckedConstraints(token: ParsedCapability, workload: SpiffeId | null, tier: Tier | null): Unchecked[] {
  const { workloadIdentity, minimumRuntimeAssuranceTier } = token.capability.constraints;
  const out: Unchecked[] = [];
  if (workloadIdentity !== undefined && workload === null) {
    out.push({ constraint: 'workloadIdentity', text: `bound to ${workloadIdentity.uri} (pass --workload)` });
  }
  if (minimumRuntimeAssuranceTier !== undefined && minimumRuntimeAssuranceTier !== 'none' && tier === null) {
    out.push({ constraint: 'minimumRuntimeAssuranceTier', text: `minimum tier ${minimumRuntimeAssuranceTier} (pass --tier)` });
  }
  return out;
}

/** Binding and tier, for what the command line says is presented (what it does not say is not checked). */
function checkPresented(token: ParsedCapability, workload: SpiffeId | null, kind: CredentialKind | null, tier: Tier | null): CapabilityFailure | null {
  const boundKind = token.capability.constraints.workloadIdentity?.credentialKind ?? 'x509_svid';
  const workloadFailure =
    workload === null
      ? null
      : checkWorkload(token, { scheme: 'spiffe', credentialKind: kind ?? boundKind, uri: workload.uri, trustDomain: workload.trustDomain, path: workload.path });
  return workloadFailure ?? (tier === null ? null : checkTier(token, tier));
}

function report(io: CliIO, json: boolean, token: ParsedCapability | null, failure: CapabilityFailure | null, unchecked: readonly Unchecked[]): void {
  const c = token?.capability ?? null;
  if (json) {
    const body = { valid: failure === null, code: failure?.code ?? null, message: failure?.message ?? null, capability: c, unchecked: unchecked.map((u) => u.constraint) };
    io.stdout(`${JSON.stringify(body)}\n`);
  } else if (failure === null && c !== null) {
    io.stdout(`valid: ${c.id} grants ${c.tools.join(', ')} to ${JSON.stringify(c.subject)} until ${c.expiresAt}\n`);
    if (unchecked.length > 0) io.stdout(`not checked: ${unchecked.map((u) => u.text).join('; ')}\n`);
  } else if (failure !== null) {
    io.stdout(`invalid: ${failure.code}: ${failure.message}\n`);
  }
}

function help(io: CliIO, text: string): number {
  io.stdout(text);
  return EXIT_OK;
}

function required(value: string | undefined, what: string): string {
  if (value === undefined || value === '') throw new Usage(`missing ${what}`);
  return value;
}

/** `300`, `300s`, `5m`, `1h`, `1d` → seconds; the upper bound is the issuance contract's (ttlSeconds). */
export function parseTtl(text: string): number {
  const m = TTL.exec(text);
  if (m === null) throw new Usage(`--ttl ${JSON.stringify(text)} is not a duration (e.g. 300s, 5m, 1h)`);
  return Number(m[1]) * (TTL_UNIT_SECONDS[m[2] ?? 's'] ?? 1);
}

/** TOKEN: the header value, `@FILE`, or `-` for standard input (keeps the token out of the process list). */
async function tokenArgument(positionals: string[], io: CliIO): Promise<string> {
  if (positionals.length !== 1) throw new Usage(positionals.length === 0 ? 'missing TOKEN' : 'expected exactly one TOKEN');
  const arg = positionals[0] as string;
  if (arg === '-') return (await io.readStdin()).trim();
  if (!arg.startsWith('@')) return arg.trim();
  const file = path.resolve(io.cwd, arg.slice(1));
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new ChioError('io_error', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? describe(err)}`);
  }
}

function readAttestation(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ChioError(code === 'ENOENT' ? 'file_not_found' : 'io_error', `cannot read runtime attestation ${file}: ${code ?? describe(err)}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ChioError('issuance_refused', `runtimeAttestation: ${file} is not JSON (${describe(err)})`, { field: 'runtimeAttestation' });
  }
}

function readRevocations(file: string): ReadonlySet<string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ChioError('io_error', `cannot read revocation list ${file}: ${(err as NodeJS.ErrnoException).code ?? describe(err)}`);
  }
  return new Set(parseRevocations(text, file).keys());
}

function decisionTime(at: string | undefined, io: CliIO): number {
  if (at === undefined) return io.now();
  // strict, as the receipt query's since/until: Date.parse rolls 2027-02-30 into March and takes hour 24
  const ms = parseRfc3339(at);
  if (ms === null) throw new Usage(`--at ${JSON.stringify(at)} is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)`);
  return ms;
}

function parseWorkload(text: string): SpiffeId {
  try {
    return SpiffeId.parse(text);
  } catch (err) {
    if (err instanceof DenyError) throw new Usage(`--workload: ${err.message}`);
    throw err;
  }
}

function parseKind(text: string): CredentialKind {
  const kind = CREDENTIAL_KINDS.find((k) => k === text);
  if (kind === undefined) throw new Usage(`--credential-kind ${JSON.stringify(text)}: expected one of ${CREDENTIAL_KINDS.join(', ')}`);
  return kind;
}

function parseTier(text: string): Tier {
  if (!isTier(text)) throw new Usage(`--tier ${JSON.stringify(text)}: expected one of ${TIERS.join(', ')}`);
  return text;
}
