/**
 * Every file chio writes is its own (SPEC §2.1 config; README "Configuration"): a receipt sink, the
 * checkpoint log, the signing seed, the revocation list must not be another of them, nor a file
 * the config names for anything else (the policy, a bundle, a TLS key, the admin token…).
 *
 * Why: the schema compared the sinks' paths as written, so `./r.jsonl` and `r.jsonl` were two
 * sinks (every receipt written twice into one file: the chain broken at seq 2), a jsonl and a
 * sqlite sink on one file overwrote each other, and a jsonl sink on the signing seed renamed the
 * seed away as a torn log and wrote receipts into it (found by a review). Paths are compared
 * resolved, through symlinks where they exist.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { ChioError } from '../errors.js';

/** A file the service writes, named by its config key. */
export interface WrittenFile {
  readonly role: string;
  readonly path: string;
  /** its path is one of the config's named paths (false: a default derived from another, as the checkpoint log's) */
  readonly named: boolean;
}

/** `file` with symlinks resolved as far as it exists (a file not created yet: its folder). */
export function canonicalPath(file: string): string {
  const abs = path.resolve(file);
  try {
    return realpathSync.native(abs);
  } catch {
    const dir = path.dirname(abs);
    return dir === abs ? abs : path.join(canonicalPath(dir), path.basename(abs));
  }
}

/**
 * Throws `config_invalid` when two written files are one, or when a written file is also named by
 * the config for another purpose. `named` is every path the config names, written ones included.
 */
export function checkWrittenFiles(written: readonly WrittenFile[], named: readonly string[]): void {
  const canonical = written.map((w) => ({ ...w, path: canonicalPath(w.path) }));
  const roleOf = new Map<string, string>();
  for (const w of canonical) {
    const p = w.path;
    const other = roleOf.get(p);
    if (other !== undefined) throw new ChioError('config_invalid', `${other} and ${w.role} name the same file ${p}: each file chio writes must be its own`);
    roleOf.set(p, w.role);
  }
  const times = new Map<string, number>();
  for (const n of named) {
    const p = canonicalPath(n);
    if (roleOf.has(p)) times.set(p, (times.get(p) ?? 0) + 1);
  }
  for (const w of canonical) {
    const p = w.path;
    if ((times.get(p) ?? 0) > (w.named ? 1 : 0)) {
      throw new ChioError(
        'config_invalid',
        `${w.role} (${p}) is also named for another purpose (the policy, a key, a bundle, a TLS or token file): each file chio writes must be its own`,
      );
    }
  }
}
