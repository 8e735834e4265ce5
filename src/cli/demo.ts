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
import { verifyAnchoredFile } from './receipt-export.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type Command } from './io.js';

const HELP = `usage: chio demo [--target HOST:PORT] [--admin HOST:PORT] [--receipts FILE]

Sends a few real CheckRequests (mTLS SPIFFE workload, expired SVID, no identity, spoofed and
conflicting identities, …) to a running chio-authz and prints each verdict and its receipt.
  --target HOST:PORT   the Check listener (default 127.0.0.1:9191)
  --admin HOST:PORT    the admin listener, for the receipt key (default 127.0.0.1:9192)
  --receipts FILE      where the service writes receipts (default ./chio-data/receipts.jsonl,
                       the embedded config's file)
Start the service first: npm start
Exit status: 0 every request answered and the receipt chain verified offline; 1 the service not
reachable, or the chain FAILED or could not be verified (no receipts file, no key from --admin);
2 bad usage.
`;

interface DemoCase {
  name: string;
  request: RawCheckRequest;
}

export const run: Command = async (args, io) => {
  let values: { target?: string; admin?: string; receipts?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        target: { type: 'string' },
        admin: { type: 'string' },
        receipts: { type: 'string' },
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
  const target = values.target ?? '127.0.0.1:9191';
  const receiptsFile = path.resolve(io.cwd, values.receipts ?? 'chio-data/receipts.jsonl');
  const cases = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'demo', 'requests.json'), 'utf8')) as DemoCase[];
  const client = createCheckClient(target);
  const ids: string[] = [];
  io.stdout(`${'VERDICT'.padEnd(7)} ${'DETAIL'.padEnd(46)} ${'RECEIPT'.padEnd(30)} CASE\n`);
  try {
    for (const c of cases) {
      let res: CheckResponseMessage;
      try {
        res = await client.check(c.request, 3000);
      } catch (err) {
        io.stderr(`chio demo: cannot reach chio-authz at ${target} (${describe(err)}). Start it with: npm start\n`);
        return EXIT_CHECK_FAILED;
      }
      const line = summarize(res);
      io.stdout(`${line.verdict.padEnd(7)} ${line.detail.padEnd(46)} ${(line.receiptId ?? '-').padEnd(30)} ${c.name}\n`);
      if (line.receiptId) ids.push(line.receiptId);
    }
  } finally {
    client.close();
  }
  io.stdout(`\nreceipts: ${receiptsFile}\n`);
  const admin = values.admin ?? '127.0.0.1:9192';
  const keysUrl = `http://${admin}/v1/keys`;
  if (!existsSync(receiptsFile)) {
    // a demo whose receipts cannot be checked has not shown what it is for: not a success
    io.stderr(`chio demo: could not verify the chain: no receipts file ${receiptsFile} (the service writes them where its config says; see --receipts)\n`);
    return EXIT_CHECK_FAILED;
  }
  const first = findReceipt(receiptsFile, ids[0]);
  if (first) io.stdout(`\nthe receipt of the first decision:\n${JSON.stringify(first, null, 2)}\n`);

  // Verify the whole chain offline with the key the service publishes at /v1/keys.
  let code = EXIT_OK;
  let keys: VerificationKeys | null = null;
  try {
    keys = await fetchKeys(keysUrl);
  } catch (err) {
    io.stderr(`chio demo: could not verify the chain: cannot fetch ${keysUrl}: ${describe((err as { cause?: unknown }).cause ?? err)}\n`);
    code = EXIT_CHECK_FAILED;
  }
  if (keys !== null) {
    try {
      // as `chio receipt verify` does: a file that starts after seq 1 (retention, rotation) is anchored by the checkpoints
      const { result, failure } = await verifyAnchoredFile(receiptsFile, { checkpoints: undefined, fromCheckpoint: false }, keys);
      if (failure === null && result?.ok === true) {
        io.stdout(`\nchain verified offline: ${result.receipts} receipt(s), every signature and prevHash link checks out\n`);
      } else {
        io.stderr(`chio demo: chain verification FAILED: ${failure ?? (result?.firstFailure ? formatFailure(result.firstFailure) : 'unknown')}\n`);
        code = EXIT_CHECK_FAILED;
      }
    } catch (err) {
      io.stderr(`chio demo: could not verify the chain: ${describe(err)}\n`);
      code = EXIT_CHECK_FAILED;
    }
  }
  io.stdout(`verify it yourself: ${verifyCommand(receiptsFile, keysUrl, io.cwd)}\n`);
  return code;
};

/** The receipt keys the service publishes (GET /v1/keys); throws with the reason when it cannot. */
async function fetchKeys(url: string): Promise<VerificationKeys> {
  const res = await fetch(url);
  const body = (await res.json().catch(() => null)) as { keys?: unknown } | null;
  if (!res.ok || !Array.isArray(body?.keys)) throw new Error(`answered HTTP ${res.status} without a key set`);
  return verificationKeys(body.keys.map((k) => publicKeyFromJwk(k)));
}

/**
 * The `chio receipt verify` command for this receipts file. The service's seed is known only when it
 * sits beside the file (the embedded config's chio-data/kernel.seed); otherwise the published keys
 * are saved for --jwks.
 */
function verifyCommand(receiptsFile: string, keysUrl: string, cwd: string): string {
  const seed = path.join(path.dirname(receiptsFile), 'kernel.seed');
  const verify = `npx chio receipt verify ${shellPath(receiptsFile, cwd)}`;
  return existsSync(seed) ? `${verify} --seed ${shellPath(seed, cwd)}` : `curl -s ${keysUrl} > keys.json && ${verify} --jwks keys.json`;
}

/** A path as typed from `cwd` (relative when under it), quoted for a POSIX shell when it has to be. */
function shellPath(file: string, cwd: string): string {
  const relative = path.relative(cwd, file);
  const text = relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : file;
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

function findReceipt(file: string, id: string | undefined): unknown {
  if (id === undefined) return undefined;
  for (const text of readFileSync(file, 'utf8').split('\n')) {
    if (text.includes(`"id":"${id}"`)) return JSON.parse(text) as unknown;
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
