import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileWatch, statKeyOf } from '../src/file-watch.js';

const dirs: string[] = [];
const watches: FileWatch[] = [];
afterEach(() => {
  for (const w of watches.splice(0)) w.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setup(): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-watch-'));
  dirs.push(dir);
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, 'a');
  return { dir, file };
}

function changes(file: string, options: ConstructorParameters<typeof FileWatch>[2]): { count: () => number; watch: FileWatch } {
  let n = 0;
  const watch = new FileWatch([file], () => void n++, options);
  watches.push(watch);
  return { count: () => n, watch };
}

const until = async (cond: () => boolean, ms = 3000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('FileWatch', () => {
  it('sees a rewrite through fs.watch', async () => {
    const { file } = setup();
    const c = changes(file, { pollIntervalMs: 60_000, debounceMs: 10 });
    writeFileSync(file, 'bb');
    await until(() => c.count() === 1);
  });

  it('sees a rewrite while another file in its folder is written all the time (it waits out a burst for 4 delays at most)', async () => {
    const { dir, file } = setup();
    const c = changes(file, { pollIntervalMs: 60_000, debounceMs: 50 });
    const busy = path.join(dir, 'receipts.jsonl');
    let writing = true;
    const noise = (async () => {
      for (let i = 0; writing; i++) {
        writeFileSync(busy, String(i)); // every 10 ms: the look used to be postponed for as long as this lasted
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    writeFileSync(file, 'bb');
    try {
      await until(() => c.count() === 1, 2000);
      expect(Date.now() - t0).toBeLessThan(1000);
    } finally {
      writing = false;
      await noise;
    }
  });

  it('a file written in place in pieces is reported once it looked the same twice a debounce apart, not between the pieces', async () => {
    const { file } = setup();
    const seen: string[] = [];
    const watch = new FileWatch([file], () => seen.push(readFileSync(file, 'utf8')), { pollIntervalMs: 60_000, debounceMs: 100 });
    watches.push(watch);
    // a writer that truncates and writes in pieces a little slower than the debounce (a shell redirect from a pipe)
    writeFileSync(file, 'rules:\n');
    for (const piece of ['  admin:\n', '    require_workload_identity: {}\n', '  rest: {}\n']) {
      await new Promise((r) => setTimeout(r, 130)); // past one debounce, well within two
      appendFileSync(file, piece);
    }
    await until(() => seen.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toEqual(['rules:\n  admin:\n    require_workload_identity: {}\n  rest: {}\n']);
  });

  it('a poll that lands while a change event is being waited out leaves later events working', async () => {
    const { file } = setup();
    const c = changes(file, { pollIntervalMs: 60_000, debounceMs: 50 });
    writeFileSync(file, 'first');
    await new Promise((r) => setTimeout(r, 10)); // the change event's debounce is pending
    (c.watch as unknown as { check(): void }).check(); // what the periodic poll does
    await until(() => c.count() === 1);
    await new Promise((r) => setTimeout(r, 300));
    writeFileSync(file, 'second, seen through its change event (the next poll is a minute away)');
    await until(() => c.count() === 2, 2000);
  });

  it('sees a rename-over (how editors and ConfigMaps replace files) with stat checks only', async () => {
    const { dir, file } = setup();
    const c = changes(file, { useFsWatch: false, pollIntervalMs: 20 });
    writeFileSync(path.join(dir, 'new'), 'a');
    renameSync(path.join(dir, 'new'), file);
    await until(() => c.count() === 1);
  });

  it('reports a deleted file once, and its return once', async () => {
    const { file } = setup();
    const c = changes(file, { useFsWatch: false, pollIntervalMs: 20 });
    rmSync(file);
    await until(() => c.count() === 1);
    await new Promise((r) => setTimeout(r, 80));
    expect(c.count()).toBe(1);
    writeFileSync(file, 'a');
    await until(() => c.count() === 2);
  });

  it('does not report what markSeen() already took in', async () => {
    const { file } = setup();
    const c = changes(file, { useFsWatch: false, pollIntervalMs: 20 });
    writeFileSync(file, 'ccc');
    c.watch.markSeen();
    await new Promise((r) => setTimeout(r, 100));
    expect(c.count()).toBe(0);
  });
});

describe('FileWatch: the look a read is compared against is taken before the read', () => {
  it('`seen` taken before a write that precedes the watch: the write is a change (a start-up read that raced an edit)', async () => {
    const { file } = setup();
    const seen = statKeyOf([file]);
    writeFileSync(file, 'a longer text'); // lands after the caller's read, before it starts watching
    const c = changes(file, { pollIntervalMs: 20, useFsWatch: false, seen });
    await until(() => c.count() === 1);
    // without `seen`, the watch starts from the file as it is now: the same write is not a change
    const { file: other } = setup();
    writeFileSync(other, 'a longer text');
    const d = changes(other, { pollIntervalMs: 20, useFsWatch: false });
    await new Promise((r) => setTimeout(r, 150));
    expect(d.count()).toBe(0);
  });

  it('statKeyOf: inode, size and mtime per file; "missing" for a file that is not there', () => {
    const { dir, file } = setup();
    const key = statKeyOf([file, path.join(dir, 'absent.yaml')]);
    expect(key).toMatch(/^\d+:1:[\d.]+\|missing$/);
  });
});
