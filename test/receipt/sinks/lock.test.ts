/**
 * WriterLock (src/receipt/sinks/lock.ts): one writer per receipt file across processes, released by
 * the kernel when the holder dies however it dies. The other process runs the built module (dist/).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
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

describe('the lock across a rotation and through symlinks', () => {
  it('a rotation keeps the lock (closed file, same lock, no acquire between the two files); close releases it', async () => {
    const { SegmentedJsonlSink } = await import('../../../src/receipt/retention.js');
    const { keyFromSeed } = await import('../../../src/keys.js');
    const { ReceiptChain } = await import('../../../src/receipt/receipt.js');
    const { vi } = await import('vitest');
    const file = join(mkdtempSync(join(tmpdir(), 'chio-lock-')), 'receipts.jsonl');
    const chain = new ReceiptChain({ key: keyFromSeed(Buffer.alloc(32, 7)), clock: () => Date.UTC(2026, 10, 26), head: null });
    const draft = {
      verdict: 'allow', rule: 'r', tool: 't', capabilityId: null, reasons: [],
      request: { id: 'q', method: 'GET', host: 'h', path: '/p', source: '10.0.0.1:1' },
      runtimeAttestation: { tier: 'none', verifier: null, workloadIdentity: null },
      workloadIdentityMatch: null, runtimeAssuranceMatch: null, policyHash: null,
    } as const;
    const sink = new SegmentedJsonlSink(file, { segmentMaxBytes: 1 });
    await sink.open();
    const acquire = vi.spyOn(WriterLock, 'acquire');
    try {
      await sink.write([chain.seal(draft), chain.seal(draft)], true);
      sink.rotateAt(2);
      await sink.write([chain.seal(draft)], true); // rotates: the live file becomes a segment, a new live file opens
      expect(readdirSync(dirname(file))).toContain('receipts-1-2.jsonl');
      expect(acquire).not.toHaveBeenCalled();
      acquire.mockRestore();
      expect(() => WriterLock.acquire(file)).toThrow(ChioError);
    } finally {
      acquire.mockRestore();
      await sink.close();
    }
    WriterLock.acquire(file).release();
  });

  it('a sink path that is a symlink to another sink file takes the same lock', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chio-lock-'));
    const real = join(dir, 'a.jsonl');
    writeFileSync(real, '');
    const link = join(dir, 'b.jsonl');
    symlinkSync(real, link);
    const lock = WriterLock.acquire(real);
    try {
      expect(() => WriterLock.acquire(link)).toThrow(/is being written by another process \(it holds .*a\.jsonl\.lock\)/);
    } finally {
      lock.release();
    }
  });
});
