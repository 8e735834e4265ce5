/**
 * `chio demo`: sends the CheckRequests of demo/requests.json (built from the reference Envoy
 * fixtures) to a running service and prints each outcome and its receipt.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { PACKAGE_ROOT } from '../config/load.js';
import { createCheckClient } from '../check/client.js';
import type { CheckResponseMessage, RawCheckRequest } from '../check/envoy.js';
import { describe } from '../errors.js';
import { publicKeyFromJwk } from '../keys.js';
import { formatFailure, verificationKeys, type VerificationKeys } from '../receipt/verify.js';
import { workerFile } from '../server/workers.js';
import { verifyAnchoredFile } from './receipt-export.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const HELP = `usage: chio demo [--target HOST:PORT] [--admin HOST:PORT] [--receipts FILE] [--json]

Sends a few real CheckRequests (mTLS SPIFFE workload, expired SVID, no identity, spoofed and
conflicting identities, …) to a running chio-authz and prints each verdict and its receipt.
  --target HOST:PORT   the Check listener (default 127.0.0.1:9191)
  --admin HOST:PORT    the admin listener, for the receipt key (default 127.0.0.1:9192)
  --receipts FILE      where the service writes receipts (default ./chio-data/receipts.jsonl,
                       the embedded config's file). A service run with --workers N writes one chain
                       per worker beside it (receipts-w1.jsonl, …): when FILE is not there but
                       those are, each of them is verified
  --json               print one JSON object: {"target","decisions","receipts","verification","verifyCommand"}
Start the service first: npm start
Exit status: 0 every request answered and the receipt chain(s) verified offline; 1 the service not
reachable, or a chain FAILED or could not be verified (no receipts file, no key from --admin);
2 bad usage.
`;

/** The most workers `chio serve --workers` runs (src/cli/serve.ts): the worker files looked for. */
const MAX_WORKERS = 64;

interface DemoCase {
  name: string;
  request: RawCheckRequest;
}

interface Decision {
  readonly case: string;
  /** allow or deny, as receipts spell it */
  readonly verdict: string;
  readonly detail: string;
  readonly receiptId: string | null;
}

/** One chain's offline verification. */
interface ChainReport {
  readonly file: string;
  readonly ok: boolean;
  readonly receipts: number;
  readonly failure: string | null;
}

interface Verification {
  readonly ok: boolean;
  readonly chains: ChainReport[];
  /** why the chains could not be verified at all (no receipts file, no key), else null */
  readonly error: string | null;
}

/** Where human output and --json part ways: the table and notes go through here. */
interface Printer {
  text(line: string): void;
}

export const run: Command = async (args, io) => {
  let values: { target?: string; admin?: string; receipts?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        target: { type: 'string' },
        admin: { type: 'string' },
        receipts: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    io.stderr(`chio demo: ${describe(err)}\n${HELP}`);
    return EXIT_USAGE;
  }
  if (values.help) {
    io.stdout(HELP);
    return EXIT_OK;
  }
  const json = values.json === true;
  const out: Printer = { text: (line) => (json ? undefined : io.stdout(line)) };
  const target = values.target ?? '127.0.0.1:9191';
  const receiptsFile = path.resolve(io.cwd, values.receipts ?? 'chio-data/receipts.jsonl');
  const decisions = await sendCases(target, out, io);
  if (decisions === null) return EXIT_CHECK_FAILED;

  out.text(`\nreceipts: ${receiptsFile}\n`);
  const keysUrl = `http://${values.admin ?? '127.0.0.1:9192'}/v1/keys`;
  const firstId = decisions.find((d) => d.receiptId)?.receiptId ?? undefined;
  const files = receiptFiles(receiptsFile, firstId);
  let verification: Verification;
  let verifyCommand: string | null = null;
  if (files === null) {
    // a demo whose receipts cannot be checked has not shown what it is for: not a success
    verification = fail(
      io,
      existsSync(receiptsFile)
        ? `${receiptsFile} does not hold the receipts of this run (an older log? the service writes them where its config says; see --receipts)`
        : `no receipts file ${receiptsFile} (the service writes them where its config says; see --receipts)`,
    );
  } else {
    if (files.length > 1 || files[0] !== receiptsFile) {
      out.text(`  not there, but the chains of ${files.length} worker(s) (chio serve --workers) are beside it: ${files.map((f) => path.basename(f)).join(', ')}; verifying each\n`);
    }
    const first = findReceipt(files, firstId);
    if (first) out.text(`\nthe receipt of the first decision:\n${JSON.stringify(first, null, 2)}\n`);
    verification = await verifyChains(files, receiptsFile, keysUrl, out, io);
    verifyCommand = verifyCommandOf(files, keysUrl, io.cwd);
    out.text(`verify it yourself: ${verifyCommand}\n`);
  }
  if (json) {
    const receipts = { file: receiptsFile, files: files ?? [], workers: files !== null && files[0] !== receiptsFile };
    io.stdout(`${JSON.stringify({ target, decisions, receipts, verification, verifyCommand })}\n`);
  }
  return verification.ok ? EXIT_OK : EXIT_CHECK_FAILED;
};

/** Sends every demo case and prints its line; null (after saying why) when the service cannot be reached. */
async function sendCases(target: string, out: Printer, io: CliIO): Promise<Decision[] | null> {
  const cases = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'demo', 'requests.json'), 'utf8')) as DemoCase[];
  const client = createCheckClient(target);
  const decisions: Decision[] = [];
  out.text(`${'VERDICT'.padEnd(7)} ${'DETAIL'.padEnd(46)} ${'RECEIPT'.padEnd(30)} CASE\n`);
  try {
    for (const c of cases) {
      let res: CheckResponseMessage;
      try {
        res = await client.check(c.request, 3000);
      } catch (err) {
        io.stderr(`chio demo: cannot reach chio-authz at ${target} (${describe(err)}). Start it with: npm start\n`);
        return null;
      }
      const line = summarize(res);
      out.text(`${line.verdict.padEnd(7)} ${line.detail.padEnd(46)} ${(line.receiptId ?? '-').padEnd(30)} ${c.name}\n`);
      decisions.push({ case: c.name, verdict: line.verdict.toLowerCase(), detail: line.detail, receiptId: line.receiptId });
    }
  } finally {
    client.close();
  }
  return decisions;
}

/**
 * The receipt files to verify: `file`, or else the worker chains beside it that `chio serve
 * --workers N` writes instead (named by src/server/workers.ts), whichever holds the receipt of this
 * run's first decision (`id`): a log left by an earlier single-process run verified "OK" while this
 * run's receipts were all in receipts-w1.jsonl. null when none does (or none is there).
 */
function receiptFiles(file: string, id: string | undefined): string[] | null {
  const single = existsSync(file) ? [file] : [];
  const workers: string[] = [];
  for (let i = 1; i <= MAX_WORKERS; i++) {
    const worker = workerFile(file, i);
    if (existsSync(worker)) workers.push(worker);
  }
  for (const files of [single, workers]) {
    if (files.length > 0 && (id === undefined || findReceipt(files, id) !== undefined)) return files;
  }
  return null;
}

/** A verification that could not be done: said on stderr, and reported. */
function fail(io: CliIO, why: string): Verification {
  io.stderr(`chio demo: could not verify the chain: ${why}\n`);
  return { ok: false, chains: [], error: why };
}

/** Verifies every chain offline with the key the service publishes at /v1/keys. */
async function verifyChains(files: readonly string[], given: string, keysUrl: string, out: Printer, io: CliIO): Promise<Verification> {
  let keys: VerificationKeys;
  try {
    keys = await fetchKeys(keysUrl);
  } catch (err) {
    return fail(io, `cannot fetch ${keysUrl}: ${describe((err as { cause?: unknown }).cause ?? err)}`);
  }
  const chains: ChainReport[] = [];
  for (const file of files) {
    // the worker's file is named in what is said about it; the one file given, as before, is not
    const name = file === given ? '' : `${path.basename(file)}: `;
    try {
      const chain = await verifyChain(file, keys);
      chains.push(chain);
      if (chain.ok) out.text(`\nchain verified offline: ${name}${chain.receipts} receipt(s), every signature and prevHash link checks out\n`);
      else io.stderr(`chio demo: chain verification FAILED: ${name}${chain.failure ?? 'unknown'}\n`);
    } catch (err) {
      return { ...fail(io, `${name}${describe(err)}`), chains };
    }
  }
  return { ok: chains.every((c) => c.ok), chains, error: null };
}

/** As `chio receipt verify` does: a file that starts after seq 1 (retention, rotation) is anchored by the checkpoints. */
async function verifyChain(file: string, keys: VerificationKeys): Promise<ChainReport> {
  const { result, failure } = await verifyAnchoredFile(file, { checkpoints: undefined, fromCheckpoint: false }, keys);
  const receipts = result?.receipts ?? 0;
  if (failure === null && result?.ok === true) return { file, ok: true, receipts, failure: null };
  return { file, ok: false, receipts, failure: failure ?? (result?.firstFailure ? formatFailure(result.firstFailure) : 'unknown') };
}

/** The receipt keys the service publishes (GET /v1/keys); throws with the reason when it cannot. */
async function fetchKeys(url: string): Promise<VerificationKeys> {
  const res = await fetch(url);
  const body = (await res.json().catch(() => null)) as { keys?: unknown } | null;
  if (!res.ok || !Array.isArray(body?.keys)) throw new Error(`answered HTTP ${res.status} without a key set`);
  return verificationKeys(body.keys.map((k) => publicKeyFromJwk(k)));
}

/**
 * The `chio receipt verify` command for these receipt files. The service's seed is known only when it
 * sits beside them (the embedded config's chio-data/kernel.seed); otherwise the published keys are
 * saved for --jwks.
 */
function verifyCommandOf(files: readonly string[], keysUrl: string, cwd: string): string {
  const seed = path.join(path.dirname(files[0] as string), 'kernel.seed');
  const verify = `npx chio receipt verify ${files.map((f) => shellPath(f, cwd)).join(' ')}`;
  return existsSync(seed) ? `${verify} --seed ${shellPath(seed, cwd)}` : `curl -s ${keysUrl} > keys.json && ${verify} --jwks keys.json`;
}

/** A path as typed from `cwd` (relative when under it), quoted for a POSIX shell when it has to be. */
function shellPath(file: string, cwd: string): string {
  const relative = path.relative(cwd, file);
  const text = relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : file;
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The receipt with this id in any of the files (a worker's chain holds it). */
function findReceipt(files: readonly string[], id: string | undefined): unknown {
  if (id === undefined) return undefined;
  for (const file of files) {
    for (const text of readFileSync(file, 'utf8').split('\n')) {
      if (text.includes(`"id":"${id}"`)) return JSON.parse(text) as unknown;
    }
  }
  return undefined;
}

function summarize(res: CheckResponseMessage): { verdict: string; detail: string; receiptId: string | null } {
  const headers = res.ok_response?.headers ?? res.denied_response?.headers ?? [];
  const get = (k: string): string | null => headers.find((h) => h.header.key === k)?.header.value ?? null;
  const receiptId = get('x-chio-receipt-id');
  if (res.status.code === 0) {
    return { verdict: 'ALLOW', detail: `as ${get('x-chio-workload-id') ?? '(no identity)'}`, receiptId };
  }
  const status = String(res.denied_response?.status.code ?? 403);
  return { verdict: 'DENY', detail: `${status} ${res.status.message ?? ''}`, receiptId };
}
