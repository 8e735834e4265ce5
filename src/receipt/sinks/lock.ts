/**
 * One writer per receipt file (README "Receipts": one process, one chain). Two `chio serve`
 * processes appending to one log interleave two chains in it (`receipt_chain_broken` at the first
 * foreign line) and neither notices; the second must refuse to start instead.
 *
 * The lock is an exclusive SQLite lock on `<file>.lock` (better-sqlite3 is already a dependency):
 * `locking_mode = EXCLUSIVE` keeps the lock of the first write transaction until the connection
 * closes, and the kernel drops it when the process dies, however it dies, so a crash never leaves a
 * stale lock behind (a pid file would: a restarted pod has another hostname and often the same
 * pid). SQLite tracks its locks per file within a process too, so a second sink on the same file in
 * one process is refused alike. The lock is named after the file's real path (symlinks followed). The
 * `.lock` file stays on disk; it holds nothing. Keep the
 * WriterLock referenced while writing: a collected connection is closed, and its lock with it.
 */
import { realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { ChioError, describe } from '../../errors.js';

export class WriterLock {
  private constructor(
    readonly path: string,
    private db: BetterSqlite3.Database | null,
  ) {}

  /** Takes the lock of `file` (`<file>.lock`, created if missing), or throws ChioError('io_error') when another writer holds it. */
  static acquire(file: string): WriterLock {
    const path = `${realFile(file)}.lock`;
    let db: BetterSqlite3.Database | null = null;
    try {
      db = new BetterSqlite3(path, { timeout: 0 });
      db.pragma('journal_mode = MEMORY');
      db.pragma('locking_mode = EXCLUSIVE');
      // the first write takes the EXCLUSIVE lock, which locking_mode keeps after the commit
      db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER); DELETE FROM holder;');
      db.prepare('INSERT INTO holder (pid) VALUES (?)').run(process.pid);
      return new WriterLock(path, db);
    } catch (err) {
      db?.close();
      const busy = (err as { code?: unknown }).code === 'SQLITE_BUSY';
      throw new ChioError(
        'io_error',
        busy
          ? `receipt file ${file} is being written by another process (it holds ${path}): one process, one chain; give each chio its own receipts.sinks paths (--workers gives each worker its own)`
          : `cannot lock receipt file ${file} (${path}): ${describe(err)}`,
        { cause: err },
      );
    }
  }

  /** Releases the lock (idempotent). */
  release(): void {
    const db = this.db;
    this.db = null;
    db?.close();
  }
}

/**
 * The file a path names, through symlinks (of the file or of its folders): a sink configured as
 * `b/receipts.jsonl`, a symlink to `a/receipts.jsonl`, must take the lock of `a/receipts.jsonl`. A
 * file not created yet is named in its folder's real path. (Hard links are not followed: two names
 * of one inode in different folders take different locks.)
 */
function realFile(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    try {
      return join(realpathSync(dirname(file)), basename(file));
    } catch {
      return file;
    }
  }
}
