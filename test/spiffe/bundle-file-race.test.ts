/**
 * A trust bundle file written in two steps where the second lands right after chio read the first
 * (node:fs mocked so the timing is exact): the second step must still be loaded. The file's stat is
 * taken before each read (src/file-watch.ts), so the write after the read is a change still to see.
 * Reported by the bundle-sources review of 2026-11-26 (was: stat after the read, second step lost).
 */
import { appendFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { BundleSet } from '../../src/spiffe/bundle.js';
import { FileBundleSource } from '../../src/spiffe/bundle-sources.js';
import { createRootCa, type TestCa } from '../helpers/test-ca.js';

/** When set, runs once right after node:fs readFileSync read `file`. */
const race: { file: string | null; afterRead: (() => void) | null } = { file: null, afterRead: null };

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const readFileSync = ((file: Parameters<typeof fs.readFileSync>[0], ...rest: unknown[]) => {
    const out = (fs.readFileSync as (...a: unknown[]) => unknown)(file, ...rest);
    if (race.file !== null && file === race.file && race.afterRead !== null) {
      const then = race.afterRead;
      race.afterRead = null;
      then();
    }
    return out;
  }) as typeof fs.readFileSync;
  return { ...fs, default: { ...fs, readFileSync }, readFileSync };
});

let rootA: TestCa;
let rootA2: TestCa;
let rootA3: TestCa;
beforeAll(async () => {
  rootA = await createRootCa({ trustDomain: 'a.test', name: 'Root A' });
  rootA2 = await createRootCa({ trustDomain: 'a.test', name: 'Root A2' });
  rootA3 = await createRootCa({ trustDomain: 'a.test', name: 'Root A3' });
});

const quiet = (): void => undefined;

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

describe('FileBundleSource: a write that lands just after a read', () => {
  it('is loaded at the next look (both roots of the file end up in the bundle)', async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'chio-bundle-race-')), 'a.pem');
    writeFileSync(file, rootA.pem);
    const set = new BundleSet();
    const refreshes: string[] = [];
    const source = new FileBundleSource(
      set,
      { label: 'pem#0', verifier: 'https://spire.test', trustDomain: 'a.test', file, format: 'pem', pollIntervalMs: 50, debounceMs: 10 },
      { log: { error: quiet, warn: quiet, info: quiet }, refreshed: (_source, result) => void refreshes.push(result) },
    );
    await source.start();
    try {
      race.file = file;
      race.afterRead = () => appendFileSync(file, rootA3.pem); // the rest of the write, right after chio read
      writeFileSync(file, rootA2.pem); // the first part: a complete PEM on its own
      const roots = (): string[] => (set.get('a.test')?.x509Authorities ?? []).map((c) => c.x509.subject.split('\n')[0] ?? '');
      expect(await until(() => roots().length === 2, 3000)).toBe(true);
      expect(roots()).toEqual(['CN=Root A2', 'CN=Root A3']);
      expect(refreshes).toEqual(['ok', 'ok']);
    } finally {
      race.file = null;
      await source.close();
    }
  });
});
