/**
 * `chio receipt export` and the bundle side of `chio receipt verify` (SPEC §6, §10): offline export
 * bundles of the receipt log with RFC 6962 inclusion and consistency proofs against signed
 * checkpoints (../receipt/export.ts, ../receipt/bundle-verify.ts), and the checkpoint anchor for
 * verifying a receipt file that does not start at seq 1 (after retention or rotation).
 *
 * Exit codes: 0 success; 1 a check failed (a bundle or log that does not verify); 2 bad usage or
 * bad input (missing file, no or bad key, not a bundle).
 */
import { existsSync, readFileSync } from 'node:fs';
import { open, readdir, realpath, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { PACKAGE_ROOT } from '../config/load.js';
import { ChioError, describe } from '../errors.js';
import { makeFolder } from '../folders.js';
import { loadSeedFile, parsePublicKey, type PublicKeyInfo } from '../keys.js';
import { formatBundleFailure, scanCheckpointLog, verifyBundle, type BundleVerifyResult, type CheckpointLogFacts } from '../receipt/bundle-verify.js';
import { checkpointStatePaths, hashRef, linesBackwards, readFrontierFile, type CheckpointLogFailure } from '../receipt/checkpoint.js';
import { exportBundle, type BundleManifest } from '../receipt/export.js';
import { MerkleFrontier } from '../receipt/merkle.js';
import { parseRfc3339 } from '../receipt/query.js';
import { chainHashOf, receiptLeafOf } from '../receipt/receipt.js';
import { JsonlReceiptFiles, firstLine, listSegments, receiptSeqOf } from '../receipt/retention.js';
import { readReceiptLines, verifyReceiptFile, type ChainStart, type VerificationKeys, type VerifyResult } from '../receipt/verify.js';
import { usageError } from './args.js';
import { EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';
import { keysOfJwksFile } from './receipt.js';

const DEFAULT_RECEIPTS = './chio-data/receipts.jsonl';
const CHECKPOINTS_FILE = 'checkpoints.jsonl';

export const EXPORT_HELP = `usage: chio receipt export --since RFC3339 --until RFC3339 --out DIR [--file FILE]
                          [--checkpoints FILE] [--seed FILE | --public-key KEY | --jwks FILE]… [--json]

Writes an offline bundle of the receipts stamped in [--since, --until) to DIR (new or empty):
receipts.jsonl (their exact lines), proofs.jsonl (an RFC 6962 inclusion proof of each against a
signed checkpoint), checkpoints.jsonl (the checkpoints from the first needed to the latest),
consistency.jsonl (a consistency proof between each successive pair), keys.json (JWKS),
manifest.json, and bounds.jsonl + bounds-proofs.jsonl (the receipts just before and after the
range, which prove it whole). \`chio receipt verify DIR\` checks it offline.
Receipts after the latest checkpoint cannot be proven yet: they are left out and reported.
  --file FILE          the live receipt file; its rotated segments beside it are read too
                       (default ${DEFAULT_RECEIPTS})
  --checkpoints FILE   the checkpoint log (default ${CHECKPOINTS_FILE} beside --file; checkpoints-wN.jsonl for a worker's receipts-wN.jsonl)
  --seed FILE, --public-key KEY, --jwks FILE
                       the signing key(s) (default: kernel.seed beside --file)
  --json               print the manifest as JSON
Exit status: 0 exported, 1 the log does not match its checkpoints, 2 bad usage or unreadable input.
`;

const EXPORT_OPTIONS = {
  since: { type: 'string' },
  until: { type: 'string' },
  out: { type: 'string' },
  file: { type: 'string' },
  checkpoints: { type: 'string' },
  seed: { type: 'string', multiple: true },
  'public-key': { type: 'string', multiple: true },
  jwks: { type: 'string', multiple: true },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Codes that mean "the log did not check out" (exit 1) rather than bad input (exit 2). */
const CHECK_CODES: ReadonlySet<string> = new Set(['receipt_chain_broken', 'receipt_bad_signature', 'receipt_malformed', 'receipt_torn_tail']);

export const exportCommand: Command = async (args, io) => {
  let values;
  try {
    ({ values } = parseArgs({ args, options: EXPORT_OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    return usageError(io, 'receipt export', describe(err), EXPORT_HELP);
  }
  if (values.help) {
    io.stdout(EXPORT_HELP);
    return EXIT_OK;
  }
  const missing = (['since', 'until', 'out'] as const).filter((name) => values[name] === undefined);
  if (missing.length > 0) return usageError(io, 'receipt export', `missing ${missing.map((m) => `--${m}`).join(', ')}`, EXPORT_HELP);
  const since = parseRfc3339(values.since as string);
  const until = parseRfc3339(values.until as string);
  if (since === null) return usageError(io, 'receipt export', `--since ${JSON.stringify(values.since)} is not an RFC 3339 date-time`, EXPORT_HELP);
  if (until === null) return usageError(io, 'receipt export', `--until ${JSON.stringify(values.until)} is not an RFC 3339 date-time`, EXPORT_HELP);
  if (since >= until) return usageError(io, 'receipt export', '--since must be before --until', EXPORT_HELP);
  const file = path.resolve(io.cwd, values.file ?? DEFAULT_RECEIPTS);
  // beside the file, per worker as `chio receipt verify FILE` looks for it (checkpoints-w2.jsonl for receipts-w2.jsonl)
  const checkpointsPath = path.resolve(io.cwd, values.checkpoints ?? path.join(path.dirname(file), defaultCheckpointsFile(file)));
  const outDir = path.resolve(io.cwd, values.out as string);

  let manifest: BundleManifest;
  try {
    const keys = exportKeys(values, file, io.cwd);
    if (keys.length === 0) {
      return usageError(io, 'receipt export', `no signing key: pass --seed FILE, --public-key KEY or --jwks FILE (no kernel.seed beside ${values.file ?? DEFAULT_RECEIPTS})`, EXPORT_HELP);
    }
    if (!existsSync(file)) throw new ChioError('file_not_found', `receipt file ${file} does not exist`);
    makeFolder(outDir); // one level at a time (./folders.ts); exportBundle then finds it and checks it is empty
    const options = { source: new JsonlReceiptFiles(file), checkpointsPath, outDir, since, until, keys, now: io.now(), tool: toolInfo() };
    manifest = await exportRacingRetention(options, checkpointsPath);
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    io.stderr(`chio receipt export: ${err.code}: ${err.message}\n`);
    return CHECK_CODES.has(err.code) ? EXIT_CHECK_FAILED : EXIT_USAGE;
  }
  io.stdout(values.json ? `${JSON.stringify(manifest)}\n` : exportReport(values.out as string, manifest, { since, until }));
  return EXIT_OK;
};

/** Attempts at an export that retention keeps overtaking. */
const EXPORT_ATTEMPTS = 3;

/**
 * `exportBundle`, again (into the emptied folder) when it failed because retention pruned while it
 * read: a segment deleted under the reader looks like receipts missing from the chain (or the live
 * file gone in the middle of a rotation). That is told apart from real damage by the retention
 * anchor, which moved meanwhile; real damage fails the same way every time and is reported.
 */
async function exportRacingRetention(options: Parameters<typeof exportBundle>[0], checkpointsPath: string): Promise<BundleManifest> {
  const anchorSize = async (): Promise<number> => (await readFrontierFile(checkpointStatePaths(checkpointsPath).anchor).catch(() => null))?.size ?? 0;
  for (let attempt = 1; ; attempt++) {
    const before = await anchorSize();
    try {
      return await exportBundle(options);
    } catch (err) {
      const raced = err instanceof ChioError && (err.code === 'receipt_chain_broken' || err.code === 'file_not_found') && (await anchorSize()) !== before;
      if (!raced || attempt >= EXPORT_ATTEMPTS) throw err;
      // the folder was empty when this export began (exportBundle refuses any other): empty it again
      for (const entry of await readdir(options.outDir)) await rm(path.join(options.outDir, entry), { recursive: true, force: true });
    }
  }
}

function exportKeys(
  values: { seed?: string[]; 'public-key'?: string[]; jwks?: string[] },
  receiptsFile: string,
  cwd: string,
): PublicKeyInfo[] {
  const seeds = values.seed ?? [];
  const publicKeys = values['public-key'] ?? [];
  const jwks = values.jwks ?? [];
  if (seeds.length + publicKeys.length + jwks.length === 0) {
    const beside = seedBeside(receiptsFile);
    return beside === null ? [] : [loadSeedFile(beside)];
  }
  const keys = [
    ...seeds.map((f) => loadSeedFile(path.resolve(cwd, f))),
    ...publicKeys.map((text) => parsePublicKey(text)),
    ...jwks.flatMap((f) => keysOfJwksFile(path.resolve(cwd, f))),
  ];
  return [...new Map(keys.map((k) => [k.kid, k])).values()];
}

/**
 * The signing seed beside a receipt file (`kernel.seed` in its folder, where the embedded config and
 * `chio serve --workers N` keep it: the workers' receipts-wN.jsonl sit beside the one seed they share),
 * or null when there is none: the default key of `chio receipt export` and `chio receipt verify`.
 */
export function seedBeside(receiptsFile: string): string | null {
  const beside = path.join(path.dirname(receiptsFile), 'kernel.seed');
  return existsSync(beside) ? beside : null;
}

function exportReport(out: string, m: BundleManifest, asked: { readonly since: number; readonly until: number }): string {
  const lines: string[] = [];
  const r = m.receipts;
  lines.push(
    r.count === 0
      ? `${out}: no checkpointed receipt is stamped in [${m.range.since}, ${m.range.until})`
      : `${out}: exported ${r.count} receipt(s), seq ${r.firstSeq} to ${r.lastSeq}, proven against ${m.checkpoints.count} checkpoint(s) (treeSize ${m.checkpoints.firstTreeSize} to ${m.checkpoints.latestTreeSize})`,
  );
  // the range a bundle can prove whole (src/receipt/export.ts provableRange)
  if (Date.parse(m.range.since) !== asked.since) lines.push(`the range starts at ${m.range.since}: retention pruned the receipts before (the bundle proves none of the range is among them)`);
  if (Date.parse(m.range.until) !== asked.until) {
    // that receipt proves the range's end, so it is exported as its bound, not in the range
    lines.push(`the range ends at ${m.range.until}, the stamp of the last checkpointed receipt, exported as its bound`);
  } else if (r.count > 0 && m.receipts.lastSeq !== null && m.checkpoints.latestTreeSize !== null && m.receipts.lastSeq >= m.checkpoints.latestTreeSize) {
    // the range could not end before the last checkpointed receipt: no receipt after it proves its end yet
    lines.push(`the end of this range cannot be proven yet (no checkpointed receipt after it): chio receipt verify needs --open-ends, or export again after the next checkpoint`);
  }
  const n = m.notYetCheckpointed;
  if (n.count > 0) {
    lines.push(`${n.count} receipt(s) of the range (seq ${n.firstSeq} to ${n.lastSeq}) are not yet checkpointed and were left out: export again after the next checkpoint`);
  }
  lines.push(`verify it with: chio receipt verify ${out}`);
  return `${lines.join('\n')}\n`;
}

const packageJson = z.object({ name: z.string(), version: z.string() });

function toolInfo(): { name: string; version: string } {
  try {
    return packageJson.parse(JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')));
  } catch {
    return { name: 'chio-authz', version: 'unknown' };
  }
}

// ---- chio receipt verify DIR ----

/** `chio receipt verify DIR`: text or JSON report; exit 0 / 1, or 2 for a folder that is not a bundle. */
export async function verifyBundleCommand(
  dir: string,
  shown: string,
  keys: VerificationKeys | null,
  options: { readonly json: boolean; readonly openEnds: boolean },
  io: CliIO,
): Promise<number> {
  const { json } = options;
  let result: BundleVerifyResult;
  try {
    result = await verifyBundle(dir, keys, { openEnds: options.openEnds });
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    io.stderr(`chio receipt verify: ${err.code}: ${err.message}\n`);
    return EXIT_USAGE;
  }
  io.stdout(json ? `${JSON.stringify(result)}\n` : bundleReport(shown, result));
  return result.ok ? EXIT_OK : EXIT_CHECK_FAILED;
}

function bundleReport(shown: string, r: BundleVerifyResult): string {
  const keys =
    r.keys === 'given'
      ? `keys: ${r.kids.join(', ')}`
      : `keys: the bundle's own keys.json (${r.kids.join(', ')}), not pinned: compare with your trusted key or pass --public-key`;
  if (r.firstFailure !== null) {
    return `${shown}: FAILED\n${formatBundleFailure(r.firstFailure)}\n(${r.receipts} receipt(s) before it verified; ${keys})\n`;
  }
  const receipts =
    r.receipts === 0
      ? 'the bundle holds no receipts'
      : `${r.receipts} receipt(s) verified, seq ${r.firstSeq} to ${r.lastSeq}${r.chain === null ? '' : ` of chain ${r.chain}`}, each included in a signed checkpoint`;
  const checkpoints =
    r.checkpoints === 0 ? '' : `; ${r.checkpoints} checkpoint(s) up to treeSize ${r.latestTreeSize}, linked and consistent (${r.consistencyProofs} consistency proof(s))`;
  return `${shown}: OK: ${receipts}${checkpoints}\n${r.complete === null ? '' : `${rangeReport(r.complete, r.firstSeq, r.lastSeq)}\n`}${keys}\n`;
}

const RANGE_ENDS = {
  start: {
    chain: 'it starts the chain (seq 1)',
    bound: 'the receipt before it is signed, chained and stamped before since',
    checkpoint: '',
    pruned: 'the receipts before it were pruned by retention at the signed checkpoint before its first',
    open: 'its start is NOT proven (--open-ends)',
  },
  end: {
    chain: '',
    bound: 'the receipt after it is signed, chained and stamped at or after until',
    checkpoint: 'it ends at the latest checkpoint',
    pruned: '',
    open: 'its end is NOT proven (--open-ends)',
  },
} as const;

function rangeReport(c: NonNullable<BundleVerifyResult['complete']>, firstSeq: number | null, lastSeq: number | null): string {
  const what = firstSeq === null ? 'the range is empty' : `range seq ${firstSeq} to ${String(lastSeq)}`;
  return `${what}: ${RANGE_ENDS.start[c.start]}; ${RANGE_ENDS.end[c.end]}`;
}

// ---- chio receipt verify FILE that does not start at seq 1 ----

export interface FileAnchor {
  /** where the file's chain starts; undefined: at seq 1 */
  readonly after: ChainStart | undefined;
  /** a line for the report, or null */
  readonly note: string | null;
  /** the checkpoint log failed its own check: report it, exit 1 */
  readonly failure: string | null;
  /** a live file's checkpoint log, read once here, for {@link missingAtEnd}; null: not a live file, or no log */
  readonly end: { readonly log: string; readonly facts: CheckpointLogFacts } | null;
  /**
   * The Merkle frontier of the receipts before the file (empty when it starts at seq 1; else the
   * retention anchor's with the rotated segments' receipts after it), so the file's receipts can be
   * held to the latest checkpoint's root; null when not known (--from-checkpoint, no anchor).
   */
  readonly startFrontier: MerkleFrontier | null;
}

/** checkpoints.jsonl beside the file; for a worker's chain of `chio serve --workers N` (receipts-w2.jsonl), checkpoints-w2.jsonl. */
function defaultCheckpointsFile(file: string): string {
  const worker = /-w([1-9][0-9]*)\.jsonl$/.exec(path.basename(file));
  return worker ? `checkpoints-w${worker[1]}.jsonl` : CHECKPOINTS_FILE;
}

/**
 * Where `file` may start: a first receipt with seq > 1 is accepted when a signed checkpoint
 * covers the receipts before it (`--checkpoints FILE`, default checkpoints.jsonl beside the file)
 * and they are accounted for ({@link missingBefore}), or when `--from-checkpoint` says so; its
 * prevHash cannot be checked then. The checkpoint log is read once, here, for the start and for
 * the end of a live file.
 */
export async function anchorForFile(
  file: string,
  options: { readonly checkpoints: string | undefined; readonly fromCheckpoint: boolean },
  keys: VerificationKeys,
): Promise<FileAnchor> {
  const none: FileAnchor = { after: undefined, note: null, failure: null, end: null, startFrontier: null };
  let first: Buffer | null;
  try {
    first = await firstLine(file);
  } catch {
    return none; // the verifier reports an unreadable file
  }
  const firstSeq = first === null ? 1 : receiptSeqOf(first);
  if (firstSeq === null) return none;
  const log = options.checkpoints ?? path.join(path.dirname(file), defaultCheckpointsFile(file));
  const live = await isLiveFile(file);
  const after = { seq: firstSeq - 1, hash: null };
  const unanchored = (): FileAnchor =>
    firstSeq > 1 && options.fromCheckpoint ? { ...none, after, note: `the file starts at seq ${firstSeq} (--from-checkpoint); the first receipt's prevHash is not checked` } : none;
  if ((firstSeq === 1 && !live) || (options.checkpoints === undefined && !existsSync(log))) return unanchored();
  const anchorPath = checkpointStatePaths(log).anchor;
  // read before the scan (which is asked for the root of its size); a read error counts where it did
  // before the scan was shared: only once the file is anchored
  let retentionError: unknown = null;
  const retention =
    firstSeq > 1
      ? await readFrontierFile(anchorPath).catch((err: unknown) => {
          retentionError = err;
          return null;
        })
      : null;
  const facts = await scanCheckpointLog(log, keys, { cover: firstSeq, rootOfSize: retention?.size ?? 0 });
  const end = live ? { log, facts } : null;
  if (firstSeq === 1) return { ...none, end, startFrontier: new MerkleFrontier() };
  const anchor = facts.covering; // the read stops at a failure: a covering checkpoint is before any
  if (anchor === null) {
    return facts.failure === null ? { ...unanchored(), end } : { ...none, failure: logFailure(log, facts.failure) };
  }
  if (retentionError !== null) throw retentionError;
  const accounted = await missingBefore(file, firstSeq, { log, anchorPath, retention, facts });
  if (typeof accounted === 'string') return { ...none, failure: accounted };
  const covered = `the receipts before seq ${firstSeq} are covered by the signed checkpoint of treeSize ${anchor.signed.checkpoint.treeSize} (${log} line ${anchor.line})`;
  const startFrontier = accounted.frontier;
  if (accounted.hash !== null) {
    return { after: { seq: firstSeq - 1, hash: accounted.hash }, note: `${covered}; the first receipt's prevHash is checked against the last receipt of ${accounted.segment}`, failure: null, end, startFrontier };
  }
  return { after, note: `${covered}; the first receipt's prevHash is not checked`, failure: null, end, startFrontier };
}

/** What a name shaped like a rotated segment's (`<name>-<first>-<last><ext>`) says: its live file and range; null for any other name. */
function segmentNameOf(file: string): { readonly live: string; readonly first: number; readonly last: number } | null {
  const { dir, name, ext } = path.parse(file);
  const m = /^(.+)-([1-9][0-9]*)-([1-9][0-9]*)$/.exec(name);
  return m ? { live: path.join(dir, `${m[1] as string}${ext}`), first: Number(m[2]), last: Number(m[3]) } : null;
}

/** The live file of a rotated segment; any other file is its own. */
function livePathOf(file: string): string {
  return segmentNameOf(file)?.live ?? file;
}

/**
 * Whether a file is a live receipt file (whose end must reach the latest checkpoint) rather than a
 * rotated segment. A name shaped like a segment's is not enough (`receipts-2026-11.jsonl` is a live
 * file with a date in its name, and a live file renamed so must not escape the end check): a
 * segment holds exactly the seqs its name says, and its live file exists beside it.
 */
async function isLiveFile(file: string): Promise<boolean> {
  const named = segmentNameOf(file);
  // a segment is followed by the live file (recreated at every rotation), which carries the log's end
  // check: without it, this file is where the log ends, whatever its name says
  if (named === null || !existsSync(named.live)) return true;
  const held = await segmentEnds(file);
  return !(held !== null && held.first === named.first && held.last === named.last);
}

/**
 * A checkpoint covering the receipts before a file's first says they existed, not where they went.
 * They must be accounted for: pruned by retention (which records the Merkle frontier it pruned
 * through in the anchor file beside the checkpoint log; retention prunes whole segments, which end
 * at checkpoints, so that frontier must have a signed checkpoint's root) or held by the rotated
 * segments beside the file. A segment counts only when it holds the range its name says (its first
 * and last receipts have those seqs: an empty or cut file named like a segment accounts for
 * nothing), and only one that ends before the file. Otherwise they were deleted: the failure names
 * the missing seq range. When a segment ends right before the file, its last receipt's chain hash
 * is returned, so the file's first prevHash is checked against it.
 */
async function missingBefore(
  file: string,
  firstSeq: number,
  where: { readonly log: string; readonly anchorPath: string; readonly retention: MerkleFrontier | null; readonly facts: CheckpointLogFacts },
): Promise<string | { hash: string | null; segment: string | null; frontier: MerkleFrontier | null }> {
  const { anchorPath, retention, facts } = where;
  const pruned = retention?.size ?? 0;
  if (retention !== null && pruned > 0) {
    const signed = facts.failure ?? facts.rootAtSize;
    if (signed === null || typeof signed !== 'string' || signed !== hashRef(retention.root())) {
      const why =
        signed === null
          ? `no signed checkpoint of treeSize ${pruned} is in ${where.log}`
          : typeof signed === 'string'
            ? `its root is not the signed root of the checkpoint of treeSize ${pruned}`
            : `${where.log} line ${signed.line}: ${signed.code}: ${signed.message}`;
      return `receipt_chain_broken: the retention anchor ${anchorPath} (pruned through seq ${pruned}) is not one retention wrote: ${why}`;
    }
  }
  let covered = pruned;
  let link: { hash: string | null; segment: string | null } = { hash: null, segment: null };
  let bad = '';
  const used: string[] = [];
  for (const segment of await listSegments(livePathOf(file))) {
    if (covered >= firstSeq - 1 || segment.first > covered + 1) break;
    if (segment.last >= firstSeq || path.resolve(segment.path) === path.resolve(file)) break;
    const held = await segmentEnds(segment.path);
    if (held === null || held.first !== segment.first || held.last !== segment.last) {
      const holds = held === null ? 'no receipt' : `seq ${String(held.first)} to ${String(held.last)}`;
      bad = `; ${segment.path} is named for seq ${segment.first} to ${segment.last} but holds ${holds}`;
      break;
    }
    if (segment.last > covered) {
      covered = segment.last;
      link = { hash: held.lastHash, segment: segment.path };
      used.push(segment.path);
    }
  }
  if (covered >= firstSeq - 1) {
    if (covered !== firstSeq - 1) return { hash: null, segment: null, frontier: null };
    const frontier = await frontierThrough(retention?.clone() ?? new MerkleFrontier(), used, firstSeq - 1);
    return typeof frontier === 'string' ? frontier : { ...link, frontier };
  }
  const why = pruned > 0 ? `retention pruned through seq ${pruned} (${anchorPath})` : `no retention anchor (${anchorPath}) says they were pruned`;
  return `receipt_chain_broken: the receipts seq ${covered + 1} to ${firstSeq - 1} are missing: the file starts at seq ${firstSeq}, ${why}, and no segment beside it holds them${bad} (--from-checkpoint accepts such a file)`;
}

/**
 * The Merkle frontier through seq `through`: `start` (the retention anchor's, or empty) with the
 * leaves of the segments' receipts appended in order, so the live file can be held to the latest
 * checkpoint's root (its content, not only the segment names and ends, counts: segments cut from
 * another chain's file skipped the check: a review). A failure when the segments do not hold every
 * receipt in order.
 */
async function frontierThrough(start: MerkleFrontier, segments: readonly string[], through: number): Promise<MerkleFrontier | string> {
  const frontier = start;
  const broken = (segment: string, why: string): string => `receipt_chain_broken: ${segment}: ${why}: the receipts before the file are not whole`;
  for (const segment of segments) {
    for await (const piece of readReceiptLines(segment)) {
      if (piece.kind !== 'line') return broken(segment, piece.kind === 'torn' ? 'it ends with a torn line' : 'a line is too long to be a receipt');
      const seq = receiptSeqOf(piece.bytes);
      if (seq === null) return broken(segment, 'a line is not a receipt');
      if (seq <= frontier.size) continue;
      if (seq !== frontier.size + 1) return broken(segment, `receipt seq ${frontier.size + 1} is missing (found seq ${seq})`);
      try {
        frontier.append(receiptLeafOf(piece.bytes));
      } catch (err) {
        return broken(segment, `receipt seq ${seq}: ${describe(err)}`);
      }
    }
  }
  return frontier.size === through ? frontier : `receipt_chain_broken: the segments before the file end at seq ${frontier.size}, not ${through}`;
}

/** The seqs of a segment's first and last complete lines and the last one's chain hash; null when it holds no receipt. */
async function segmentEnds(file: string): Promise<{ first: number | null; last: number | null; lastHash: string | null } | null> {
  let fh: FileHandle | null = null;
  try {
    const first = await firstLine(file);
    if (first === null) return null;
    fh = await open(file, 'r');
    const { size } = await fh.stat();
    for await (const { bytes } of linesBackwards(fh, size)) {
      let lastHash: string | null = null;
      try {
        lastHash = chainHashOf(bytes);
      } catch {
        // not a receipt: its seq is shown as unknown
      }
      return { first: receiptSeqOf(first), last: receiptSeqOf(bytes), lastHash };
    }
    return null;
  } catch {
    return null;
  } finally {
    await fh?.close();
  }
}

function logFailure(log: string, f: CheckpointLogFailure): string {
  return `${log} line ${f.line}${f.treeSize === null ? '' : ` (treeSize ${f.treeSize})`}: ${f.code}: ${f.message}`;
}

/**
 * Where a live file must end: the latest signed checkpoint of the log beside it (or
 * `--checkpoints`) covers the receipts up to its treeSize, so the log — the live file, or its
 * newest segment when the live file was just rotated — must reach it; receipts cut from the end
 * otherwise verify as a shorter chain. A segment's end is the next file's start: not checked here.
 * Null when the end is accounted for (or there is no checkpoint log); else the failure.
 */
/**
 * `chio receipt verify FILE` without the output: the receipts before the file accounted for (its
 * anchor), the chain verified, and its end held to the latest checkpoint. `failure` is a checkpoint
 * or retention failure (then `result` is null when it came before the chain was read).
 */
export async function verifyAnchoredFile(
  file: string,
  options: { readonly checkpoints: string | undefined; readonly fromCheckpoint: boolean },
  keys: VerificationKeys,
): Promise<{ anchor: FileAnchor; result: VerifyResult | null; failure: string | null }> {
  // a symlink is read where it points: the checkpoint log and segments are beside the real file
  // (beside the link, none was found, and a cut file verified OK: CLI review)
  file = await realpath(file).catch(() => file);
  const anchor = await anchorForFile(file, options, keys);
  if (anchor.failure !== null) return { anchor, result: null, failure: anchor.failure };
  const roots = rootAtLatestCheckpoint(anchor);
  const result = await verifyReceiptFile(file, keys, { after: anchor.after, ...(roots === null ? {} : { onLeaf: roots.onLeaf }) });
  const end = result.ok ? ((await missingAtEnd(file, anchor, result.head?.seq ?? null)) ?? roots?.mismatch() ?? null) : null;
  return { anchor, result, failure: end };
}

/**
 * The file's receipts held to the latest checkpoint's root, not only its size: the checkpoints
 * beside a file describe ITS log (a file replaced by another chain signed with the same key, e.g.
 * another worker's, reached the same treeSize and verified: a review's finding). Null when the
 * root cannot be computed here (no checkpoint, or the receipts before the file are not known).
 */
function rootAtLatestCheckpoint(anchor: FileAnchor): { onLeaf: (seq: number, leaf: Buffer) => void; mismatch: () => string | null } | null {
  const latest = anchor.end?.facts.latest ?? null;
  const frontier = anchor.startFrontier;
  if (latest === null || frontier === null || anchor.end === null) return null;
  const { treeSize, rootHash } = latest.signed.checkpoint;
  if (treeSize <= frontier.size) return null;
  const log = anchor.end.log;
  let reached: string | null = null;
  return {
    onLeaf: (_seq, leaf) => {
      if (frontier.size >= treeSize) return;
      frontier.append(leaf);
      if (frontier.size === treeSize) reached = `sha256:${frontier.root().toString('hex')}`;
    },
    mismatch: () =>
      reached === null || reached === rootHash
        ? null
        : `receipt_chain_broken: the receipts through seq ${treeSize} hash to the Merkle root ${reached}, not to ${rootHash} of the signed checkpoint of treeSize ${treeSize} (${log} line ${latest.line}): the checkpoints beside the file are not of its log (receipts replaced, or another chain's file)`,
  };
}

export async function missingAtEnd(file: string, anchor: FileAnchor, lastSeq: number | null): Promise<string | null> {
  if (anchor.end === null) return null;
  const { log, facts } = anchor.end;
  if (facts.failure !== null) return logFailure(log, facts.failure);
  const latest = facts.latest;
  if (latest === null) return null;
  const treeSize = latest.signed.checkpoint.treeSize;
  const end = lastSeq ?? (await listSegments(file)).at(-1)?.last ?? 0;
  if (treeSize <= end) return null;
  return `receipt_chain_broken: the receipts seq ${end + 1} to ${treeSize} are missing: the signed checkpoint of treeSize ${treeSize} (${log} line ${latest.line}) covers them, but the log ends at seq ${end}`;
}
