/**
 * WriterLock (src/receipt/sinks/lock.ts): one writer per receipt file across processes, released by
 * the kernel when the holder dies however it dies. The other process runs the built module (dist/).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ChioError } from '../../../src/errors.js';
import { WriterLock } from '../../../src/receipt/sinks/lock.js';
import { SqliteSink } from '../../../src/receipt/sinks/sqlite.js';

const BUILT_LOCK = resolve(__dirname, '../../../dist/receipt/sinks/lock.js');
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

/** Another process that takes the lock of `file`, says "locked", and holds it until killed. */
async function holder(file: string): Promise<ChildProcess> {
  const code = `import(${JSON.stringify(BUILT_LOCK)}).then(({ WriterLock }) => { globalThis.held = WriterLock.acquire(${JSON.stringify(file)}); console.log('locked'); setInterval(() => {}, 1000); });`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await new Promise<void>((ok, fail) => {
    child.stdout?.on('data', (d: Buffer) => (d.toString().includes('locked') ? ok() : undefined));
    child.once('exit', (c) => fail(new Error(`holder exited with ${c}`)));
  });
  return child;
}

describe('WriterLock across processes', () => {
  it('refuses while another process holds the lock; takes it once that process was killed (SIGKILL)', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'chio-lock-')), 'receipts.jsonl');
    const child = await holder(file);
    let err: unknown;
    try {
      WriterLock.acquire(file).release();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ChioError);
    expect((err as ChioError).code).toBe('io_error');
    expect((err as ChioError).message).toMatch(/^receipt file .*receipts\.jsonl is being written by another process \(it holds .*receipts\.jsonl\.lock\)/);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const lock = WriterLock.acquire(file);
    lock.release();
    lock.release(); // idempotent
  });
});

describe('SqliteSink takes the lock of its store', () => {
  it('a second store on the same file is refused while the first is open', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'chio-lock-')), 'receipts.db');
    const first = new SqliteSink(file);
    await first.open();
    try {
      const err = await new SqliteSink(file).open().catch((e: unknown) => e);
      expect((err as ChioError).message).toBe(
        `receipt file ${file} is being written by another process (it holds ${file}.lock): one process, one chain; give each chio its own receipts.sinks paths (--workers gives each worker its own)`,
      );
    } finally {
      await first.close();
    }
    const again = new SqliteSink(file);
    expect(await again.open()).toBeNull();
    await again.close();
  });
});
