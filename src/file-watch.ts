/**
 * Noticing that files changed, for hot reload (policy, trust bundles, revocation lists).
 *
 * `fs.watch` on each file's folder (which also sees editors' rename-over-writes and Kubernetes
 * ConfigMap symlink swaps), coalesced by a short debounce, plus a periodic stat check as the
 * fallback where watch events do not arrive (network filesystems, some containers). The callback
 * runs when the (inode, size, mtime) of any file differs from the last look; it decides itself
 * whether the content really changed.
 *
 * The look a read is compared against must be taken BEFORE the read: a write that lands between a
 * read and a later look would otherwise be taken as seen and never loaded. So a caller that reads
 * the files before watching them passes `seen` (a {@link statKeyOf} taken before its read), and one
 * that re-reads them calls `markSeen()` before reading.
 */
import { statSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

export interface FileWatchOptions {
  /** stat fallback period (default 5 s) */
  readonly pollIntervalMs?: number;
  /** how long watch events are coalesced (default 100 ms) */
  readonly debounceMs?: number;
  /** false: stat checks only (e.g. on filesystems without change events) */
  readonly useFsWatch?: boolean;
  /** a folder could not be watched; the stat fallback still works */
  readonly onWatchError?: (dir: string, err: unknown) => void;
  /** the look the caller's first read corresponds to ({@link statKeyOf} before it read); default: now */
  readonly seen?: string;
}

/** The (inode, size, mtime) of each file, as one comparable string ('missing' for a file that is not there). */
export function statKeyOf(files: readonly string[]): string {
  return files
    .map((f) => {
      try {
        const s = statSync(f);
        return `${s.ino}:${s.size}:${s.mtimeMs}`;
      } catch {
        return 'missing';
      }
    })
    .join('|');
}

export class FileWatch {
  private readonly watchers: FSWatcher[] = [];
  private readonly poll: NodeJS.Timeout;
  private debounce: NodeJS.Timeout | undefined;
  /** when the first event of the burst being waited out came (null: none pending) */
  private burstStart: number | null = null;
  private last: string;
  /** a changed look waiting to be seen again unchanged before the callback runs (null: none) */
  private settling: string | null = null;
  private settlingSince = 0;
  private settle: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly files: readonly string[],
    private readonly onChange: () => void,
    private readonly options: FileWatchOptions = {},
  ) {
    this.last = options.seen ?? statKeyOf(files);
    const dirs = options.useFsWatch === false ? [] : new Set(files.map((f) => path.dirname(f)));
    for (const dir of dirs) {
      try {
        const w = watch(dir, { persistent: false }, () => this.schedule());
        w.on('error', (err) => options.onWatchError?.(dir, err));
        this.watchers.push(w);
      } catch (err) {
        options.onWatchError?.(dir, err);
      }
    }
    this.poll = setInterval(() => this.check(), options.pollIntervalMs ?? 5000);
    this.poll.unref();
  }

  /** Call BEFORE reading the files yourself, so the next look compares against what you read. */
  markSeen(): void {
    this.last = statKeyOf(this.files);
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers) w.close();
    clearInterval(this.poll);
    clearTimeout(this.debounce);
    clearTimeout(this.settle);
  }

  /**
   * The settle look, on a timer of its own: re-arming the debounce's (a poll landing while one was
   * pending) left burstStart set, and every later change event was then ignored until the next poll.
   */
  private lookAgainIn(ms: number): void {
    clearTimeout(this.settle);
    this.settle = setTimeout(() => this.check(), Math.ceil(ms));
    this.settle.unref();
  }

  private schedule(): void {
    if (this.closed) return;
    const delay = this.options.debounceMs ?? 100;
    const now = Date.now();
    // a burst of events is waited out, but not for longer than 4 delays: other files in the folder
    // (the receipt log beside the revocation file, written on every Check) kept postponing the look,
    // so an edit waited for the 5 s poll under load (a review)
    if (this.burstStart === null) this.burstStart = now;
    else if (now - this.burstStart >= 4 * delay) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.burstStart = null;
      this.check();
    }, delay);
    this.debounce.unref();
  }

  private check(): void {
    if (this.closed) return;
    const now = statKeyOf(this.files);
    if (now === this.last) {
      this.settling = null;
      return;
    }
    // a changed file is read once it looks the same twice, a debounce apart: a file written in place
    // (not renamed over) is not read half-written while its writer is still at it (a truncated policy
    // can parse as a more permissive one). A writer that pauses longer than that is not seen: replace
    // files by renaming a complete one over them (editors, Kubernetes ConfigMaps do).
    const delay = this.options.debounceMs ?? 100;
    if (now !== this.settling) {
      this.settling = now;
      this.settlingSince = performance.now();
      this.lookAgainIn(delay);
      return;
    }
    // the same look, but maybe sooner than a debounce after it was first seen (a change event's look
    // right after the settle timer's): only a look that held for a whole debounce counts
    const waited = performance.now() - this.settlingSince;
    if (waited < delay) {
      this.lookAgainIn(delay - waited);
      return;
    }
    this.settling = null;
    this.last = now;
    this.onChange();
  }
}
