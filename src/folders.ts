/**
 * Creating the folder of a file chio writes (a signing seed, an export bundle), one level at a time
 * from the nearest folder that exists. Not `mkdirSync(dir, { recursive: true })`: under /proc, mkdir answers ENOENT for a folder
 * whose parent exists, and Node's recursive mkdir retries the parent forever at 100% CPU
 * (`chio keys generate --out /proc/nope/x.seed` hung: QA finding). Here the first error ends it.
 */
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { ChioError } from './errors.js';

/** Creates `dir` and its missing parents (mode 0700, as the service creates its data folders). Throws ChioError io_error. */
export function makeFolder(dir: string, mode = 0o700): void {
  const target = path.resolve(dir);
  for (const level of missingLevels(target)) {
    try {
      mkdirSync(level, { mode });
    } catch (err) {
      // another process made it meanwhile: fine, if it is a folder
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && kindOf(level) === 'folder') continue;
      throw new ChioError('io_error', `cannot create folder ${level}: ${errnoText(err)}`, { cause: err });
    }
  }
}

/** Creates the folder of `file` (see {@link makeFolder}). */
export function makeFolderOf(file: string, mode = 0o700): void {
  makeFolder(path.dirname(path.resolve(file)), mode);
}

/** The folders to create, outermost first; throws when the nearest existing ancestor is not a folder. */
function missingLevels(target: string): string[] {
  const missing: string[] = [];
  for (let at = target; ; at = path.dirname(at)) {
    const kind = kindOf(at);
    if (kind === 'folder') return missing;
    if (kind === 'other') throw new ChioError('io_error', `cannot create folder ${target}: ${at} exists and is not a folder`);
    if (path.dirname(at) === at) return missing; // the root itself is missing: mkdir reports it
    missing.unshift(at);
  }
}

function kindOf(at: string): 'folder' | 'other' | 'missing' {
  try {
    return statSync(at).isDirectory() ? 'folder' : 'other';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOTDIR: a level above is a file, found as `other` one step up
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw new ChioError('io_error', `cannot create folder ${at}: ${errnoText(err)}`, { cause: err });
  }
}

function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ?? (err instanceof Error ? err.message : String(err));
}
