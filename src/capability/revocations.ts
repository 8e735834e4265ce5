/**
 * The capability revocation list (SPEC §7 "not revoked"; chio.yaml
 * `capabilities.revocations_file`; `POST /v1/revocations`).
 *
 * File format, one revocation a line (UTF-8):
 * ```
 * # comments and blank lines are ignored
 * cap-01JD0000000000000000000000                                       ← a bare id
 * {"id":"cap-01JD…","reason":"key leaked","revokedAt":"2026-12-01T00:00:00.000Z"}   ← what the API appends
 * ```
 * The file is watched (src/file-watch.ts: fs.watch on its folder, plus a periodic stat as a
 * fallback) and re-read on change: revocations apply without a restart. A file that fails to parse keeps the last good list
 * (and is reported); at start it is an error. A missing file is an empty list (the API creates it),
 * but a file that goes missing while revocations are in force keeps them (reported): deleting or
 * moving the file never lifts a revocation.
 * `revoke()` appends one JSON line (O_APPEND, fsync) and applies it at once; appends are serialized.
 * `apply()` puts revocations recorded by another process (`chio serve --workers`: the primary) in
 * force without writing the file; they stay exactly as one `revoke()` made here would.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { appendFile, mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ChioError, describe } from '../errors.js';
import type { Logger } from '../check/pipeline.js';
import { FileWatch } from '../file-watch.js';
import { CAPABILITY_ID_PATTERN } from './token.js';

export interface Revocation {
  readonly id: string;
  readonly reason: string | null;
  readonly revokedAt: string | null;
}

/** Longest `reason` accepted. */
export const MAX_REASON_LENGTH = 512;
/** Largest revocation file read (16 MiB, ~100k revocations). */
const MAX_FILE_BYTES = 16 * 1024 * 1024;
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

const capabilityId = z.string().regex(CAPABILITY_ID_PATTERN, 'expected cap-<ULID>');
const reason = z
  .string()
  .max(MAX_REASON_LENGTH, `at most ${MAX_REASON_LENGTH} characters`)
  .refine((s) => !CONTROL_CHARS.test(s), 'must not contain control characters');

/** A line of the file in JSON form. */
const revocationLine = z.strictObject({
  id: capabilityId,
  reason: reason.nullable().optional(),
  revokedAt: z.string().max(64).nullable().optional(),
});

/** The body of `POST /v1/revocations`. */
export const revokeRequestSchema = z.strictObject({ id: capabilityId, reason: reason.optional() });

/** Parses a revocation file's text; throws ChioError('config_invalid') naming `file:line`. */
export function parseRevocations(text: string, file: string): Map<string, Revocation> {
  const out = new Map<string, Revocation>();
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const entry = parseLine(line, `${file}:${i + 1}`);
    if (!out.has(entry.id)) out.set(entry.id, entry);
  });
  return out;
}

function parseLine(line: string, where: string): Revocation {
  if (!line.startsWith('{')) {
    if (!CAPABILITY_ID_PATTERN.test(line)) throw new ChioError('config_invalid', `${where}: expected a capability id (cap-<ULID>) or a JSON object`);
    return { id: line, reason: null, revokedAt: null };
  }
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new ChioError('config_invalid', `${where}: not valid JSON (${describe(err)})`);
  }
  const parsed = revocationLine.safeParse(value);
  if (!parsed.success) throw new ChioError('config_invalid', `${where}: ${firstIssue(parsed.error)}`);
  return revocationOf(parsed.data);
}

function revocationOf(line: z.infer<typeof revocationLine>): Revocation {
  return { id: line.id, reason: line.reason ?? null, revokedAt: line.revokedAt ?? null };
}

/**
 * `r` as a Revocation: its id must be one (ChioError('bad_request') naming entry `i` otherwise); a
 * reason or time the file format would refuse is dropped, never the revocation (a PostgreSQL row
 * written by other means may hold a reason with a newline: refusing it made every POST a 503).
 */
function checkedRevocation(r: unknown, i: number): Revocation {
  const parsed = revocationLine.safeParse(r);
  if (parsed.success) return revocationOf(parsed.data);
  const id = revocationLine.shape.id.safeParse((r as { id?: unknown } | null)?.id);
  if (!id.success) throw new ChioError('bad_request', `revocation ${i}: ${firstIssue(parsed.error)}`);
  return { id: id.data, reason: null, revokedAt: null };
}

function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  const at = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
  return `${at}${issue?.message ?? 'invalid'}`;
}

export interface RevocationListOptions {
  readonly log: Logger;
  /** stat fallback period (default 5 s) */
  readonly pollIntervalMs?: number;
  /** how long watch events are coalesced before a re-read (default 50 ms) */
  readonly debounceMs?: number;
  /** false: stat checks only (default true) */
  readonly useFsWatch?: boolean;
  /**
   * true: a file that does not parse at open is logged and the list starts empty (the watch reads it
   * once it is mended). Only for a list that gets its revocations from elsewhere too: a
   * `chio serve --workers` worker, which holds the primary's list before it serves.
   */
  readonly startDespiteBadFile?: boolean;
}

export class RevocationList {
  private revoked = new Map<string, Revocation>();
  private watch: FileWatch | undefined;
  private appends: Promise<unknown> = Promise.resolve();
  private closed = false;

  /** `file` null: an in-memory list nobody can append to (no revocations_file configured). */
  private constructor(
    readonly file: string | null,
    private readonly options: RevocationListOptions,
  ) {}

  /** Reads the file (a bad file throws) and starts watching it. */
  static open(file: string | null, options: RevocationListOptions): RevocationList {
    const list = new RevocationList(file, options);
    if (file === null) return list;
    list.startWatching(file);
    try {
      list.reload();
    } catch (err) {
      if (options.startDespiteBadFile === true) {
        options.log.error({ file, err: describe(err) }, 'revocation file does not parse; starting with the revocations the primary holds');
        return list;
      }
      list.watch?.close();
      throw err;
    }
    return list;
  }

  has(id: string): boolean {
    return this.revoked.has(id);
  }

  get size(): number {
    return this.revoked.size;
  }

  list(): Revocation[] {
    return [...this.revoked.values()];
  }

  /** Re-reads the file; returns whether the list changed. Throws ChioError on a bad file (the old list stays). */
  reload(): boolean {
    if (this.file === null) return false;
    this.watch?.markSeen();
    const text = readIfExists(this.file);
    if (text === null && this.revoked.size > 0) {
      // A file that vanished (deleted, moved away, an editor's rename-then-write) must not lift every
      // revocation: only an edit of the file does. Missing at start, or with nothing revoked, is empty.
      throw new ChioError('io_error', `revocation file ${this.file} is missing; keeping the last ${this.revoked.size} revocation(s)`);
    }
    if (text === '' && this.revoked.size > 0) {
      // emptied: a write in place caught between its truncate and its first line, as likely as an edit
      throw new ChioError(
        'io_error',
        `revocation file ${this.file} is empty; keeping the last ${this.revoked.size} revocation(s) (a write in progress? to lift them all, leave a # comment line)`,
      );
    }
    const next = text === null ? new Map<string, Revocation>() : parseRevocations(text, this.file);
    const changed = next.size !== this.revoked.size || [...next.keys()].some((id) => !this.revoked.has(id));
    this.revoked = next;
    return changed;
  }

  /**
   * Puts revocations another process recorded in force here, without writing the file (`chio serve
   * --workers`: the primary appended them and sends them to each worker, src/server/workers.ts).
   * They stay as if `revoke()` had made them here: a re-read that fails or finds the file missing
   * keeps them, a successful one keeps the ids the file still holds; only an edit of the file that
   * removes a line lifts one. An id already revoked keeps its entry. Throws ChioError('bad_request')
   * naming the first entry that is not a revocation, and then applies none of them. Returns how many
   * were new.
   */
  apply(revocations: readonly Revocation[]): number {
    // all checked before any is applied: the primary is told yes or no for the whole message
    const checked = revocations.map((r, i) => checkedRevocation(r, i));
    let added = 0;
    for (const r of checked) {
      if (this.revoked.has(r.id)) continue;
      this.revoked.set(r.id, r);
      added++;
    }
    return added;
  }

  /**
   * Appends a revocation to the file (fsync) and applies it at once. An id already revoked is
   * not appended again (`created: false`). Throws ChioError('not_found') without a file (the
   * endpoint is not enabled, as capability issuance without an authority seed).
   */
  revoke(id: string, reason: string | null, now: number): Promise<{ revocation: Revocation; created: boolean }> {
    const run = async (): Promise<{ revocation: Revocation; created: boolean }> => {
      const file = this.file;
      if (file === null) {
        throw new ChioError('not_found', 'revocation is not enabled: set capabilities.revocations_file in chio.yaml (a revocation must survive a restart)');
      }
      const existing = this.revoked.get(id);
      if (existing !== undefined) return { revocation: existing, created: false };
      const revocation: Revocation = { id, reason, revokedAt: new Date(now).toISOString() };
      // the file went missing while revocations are in force (they were kept, see reload): write them
      // back with the new one, or the next re-read would find only the new one and lift the others
      const kept = this.revoked.size > 0 && !existsSync(file) ? [...this.revoked.values()].map((r) => JSON.stringify(r)) : [];
      await appendLine(file, [...kept, JSON.stringify(revocation)].join('\n'));
      this.revoked.set(id, revocation);
      return { revocation, created: true };
    };
    const result = this.appends.then(run, run);
    this.appends = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    await this.appends;
  }

  private startWatching(file: string): void {
    const { log, pollIntervalMs, debounceMs, useFsWatch } = this.options;
    this.watch = new FileWatch([file], () => this.refresh(), {
      pollIntervalMs: pollIntervalMs ?? 5000,
      debounceMs: debounceMs ?? 50,
      useFsWatch: useFsWatch ?? true,
      onWatchError: (dir, err) => log.warn({ dir, err: describe(err) }, 'cannot watch the revocations folder; relying on periodic checks'),
    });
  }

  private refresh(): void {
    if (this.closed) return;
    try {
      if (this.reload()) this.options.log.info({ file: this.file, revocations: this.revoked.size }, 'capability revocations reloaded');
    } catch (err) {
      this.options.log.error({ file: this.file, err: describe(err) }, 'revocation file reload failed; keeping the last good list');
    }
  }
}

function readIfExists(file: string): string | null {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ChioError('io_error', `cannot read revocation file ${file}: ${describe(err)}`);
  }
  try {
    const size = fstatSync(fd).size;
    if (size > MAX_FILE_BYTES) throw new ChioError('config_invalid', `revocation file ${file} is larger than ${MAX_FILE_BYTES} bytes`);
    const buf = Buffer.alloc(size);
    let at = 0;
    while (at < size) {
      const n = readSync(fd, buf, at, size - at, at);
      if (n === 0) break;
      at += n;
    }
    return buf.subarray(0, at).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Appends `line` (after a newline if the file does not end with one) and fsyncs; creates the file 0600. */
async function appendLine(file: string, line: string): Promise<void> {
  try {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const handle = await open(file, 'a+', 0o600);
    try {
      const { size } = await handle.stat();
      let prefix = '';
      if (size > 0) {
        const last = Buffer.alloc(1);
        await handle.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) prefix = '\n';
      }
      await appendFile(handle, `${prefix}${line}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw new ChioError('io_error', `cannot append to revocation file ${file}: ${describe(err)}`, { cause: err });
  }
}
