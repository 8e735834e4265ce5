/**
 * The retention runner (src/receipt/retention.ts `Retention`): pruning at most every check_every,
 * and a wall clock that stepped back (a correction after a jump ahead) does not hold it off.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { keyFromSeed } from '../../src/keys.js';
import { signCheckpoint } from '../../src/receipt/checkpoint.js';
import { Retention } from '../../src/receipt/retention.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

it('runs at most every check_every, and again at once after the clock stepped back past the last run', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-retention-'));
  const checkpointsPath = path.join(dir, 'checkpoints.jsonl');
  const T = Date.parse('2026-12-01T00:00:00Z');
  writeFileSync(checkpointsPath, `${signCheckpoint({ treeSize: 3, root: Buffer.alloc(32, 1), previous: null, timestamp: T - 40 * DAY }, keyFromSeed(Buffer.alloc(32, 7))).jcs}\n`);
  let runs = 0;
  const target = {
    pruneThrough: async () => 0,
    prunableThrough: async () => {
      runs++;
      return 0;
    },
  };
  let now = T;
  const quiet = (): void => undefined;
  const retention = new Retention({
    config: { max_age: 30 * DAY, segment_max_bytes: 1, check_every: HOUR },
    checkpointsPath,
    source: { iterateBySeq: async function* () {} },
    targets: [target],
    clock: () => now,
    log: { info: quiet, warn: quiet, error: quiet },
  });
  const checkpointAt = async (t: number): Promise<void> => {
    now = t;
    retention.afterCheckpoint();
    await retention.close();
  };
  await checkpointAt(T);
  await checkpointAt(T + 10 * 60_000); // within check_every: no run
  expect(runs).toBe(1);
  await checkpointAt(T + HOUR);
  expect(runs).toBe(2);
  await checkpointAt(T + 365 * DAY); // the clock jumps a year ahead for one checkpoint
  expect(runs).toBe(3);
  await checkpointAt(T + 2 * HOUR); // corrected: behind the last run, which must not hold pruning off for a year
  expect(runs).toBe(4);
  await checkpointAt(T + 2 * HOUR + 60_000);
  expect(runs).toBe(4);
  await checkpointAt(T + 3 * HOUR);
  expect(runs).toBe(5);
});
