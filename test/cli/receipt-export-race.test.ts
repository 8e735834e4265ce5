/**
 * `chio receipt export` while retention prunes (src/cli/receipt-export.ts): a segment deleted under
 * the reader looks like receipts missing from the chain. When the retention anchor moved meanwhile
 * the export runs again into the emptied folder; when it did not (real damage) it fails at once.
 * exportBundle is mocked to fail as such a race makes it fail (its own behaviour is in
 * test/receipt/export.test.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { checkpointStatePaths, writeFrontierFile } from '../../src/receipt/checkpoint.js';
import { MerkleFrontier } from '../../src/receipt/merkle.js';
import { capture, fakeIO } from '../helpers/cli-io.js';

const calls: Array<{ outDirEntries: string[] }> = [];
let behaviour: (outDir: string, call: number) => Promise<unknown> = async () => ({});

vi.mock('../../src/receipt/export.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/receipt/export.js')>();
  return {
    ...real,
    exportBundle: async (o: { outDir: string }) => {
      calls.push({ outDirEntries: existsSync(o.outDir) ? readdirSync(o.outDir) : [] });
      return behaviour(o.outDir, calls.length);
    },
  };
});

const { exportCommand } = await import('../../src/cli/receipt-export.js');

function setup(): { dir: string; args: string[]; anchor: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-export-race-'));
  writeFileSync(path.join(dir, 'receipts.jsonl'), '');
  writeFileSync(path.join(dir, 'kernel.seed'), `${'07'.repeat(32)}\n`, { mode: 0o600 });
  const args = ['--since', '2026-01-01T00:00:00Z', '--until', '2027-01-01T00:00:00Z', '--out', 'bundle', '--file', 'receipts.jsonl', '--json'];
  return { dir, args, anchor: checkpointStatePaths(path.join(dir, 'checkpoints.jsonl')).anchor };
}

const frontierOf = (size: number): MerkleFrontier => {
  const f = new MerkleFrontier();
  for (let i = 0; i < size; i++) f.append(Buffer.alloc(32, i));
  return f;
};

beforeEach(() => {
  calls.length = 0;
});

describe('chio receipt export racing retention', () => {
  it('runs again, into the emptied folder, when the retention anchor moved while it read', async () => {
    const { dir, args, anchor } = setup();
    await writeFrontierFile(anchor, frontierOf(3));
    behaviour = async (outDir, call) => {
      if (call === 1) {
        mkdirSync(outDir, { recursive: true });
        writeFileSync(path.join(outDir, 'receipts.jsonl'), 'partial\n');
        await writeFrontierFile(anchor, frontierOf(6)); // retention pruned through 6 meanwhile
        throw new ChioError('receipt_chain_broken', 'receipt seq 4 is missing from the receipts (found seq 7); run chio receipt verify');
      }
      return { exported: true };
    };
    const r = await capture(exportCommand, args, fakeIO(dir));
    expect(r).toEqual({ code: 0, out: '{"exported":true}\n', err: '' });
    expect(calls).toEqual([{ outDirEntries: [] }, { outDirEntries: [] }]);
  });

  it('fails at once, naming the missing receipt, when the anchor did not move (the receipts are gone, not pruned)', async () => {
    const { dir, args } = setup();
    behaviour = async () => {
      throw new ChioError('receipt_chain_broken', 'receipt seq 4 is missing from the receipts (found seq 7); run chio receipt verify');
    };
    const r = await capture(exportCommand, args, fakeIO(dir));
    expect(r).toEqual({ code: 1, out: '', err: 'chio receipt export: receipt_chain_broken: receipt seq 4 is missing from the receipts (found seq 7); run chio receipt verify\n' });
    expect(calls).toHaveLength(1);
  });
});
