/** ReceiptHealth (src/receipt/health.ts): failing after a failed write until a commit, for at most the hold. */
import { describe, expect, it } from 'vitest';
import { ReceiptHealth } from '../../src/receipt/health.js';

describe('ReceiptHealth', () => {
  it('fails from a failed write until a batch commits, or the hold passes without another failure', () => {
    let now = 1_000;
    const h = new ReceiptHealth(() => now, 10_000);
    expect(h.failing()).toBeNull();
    h.failed('jsonl', 'ENOSPC: no space left on device');
    expect(h.failing()).toBe('receipt sink jsonl cannot write: ENOSPC: no space left on device');
    now += 9_999;
    expect(h.failing()).not.toBeNull();
    now += 1;
    expect(h.failing()).toBeNull(); // traffic may come back and show whether it recovered
    h.failed('sqlite', 'disk I/O error');
    expect(h.failing()).toBe('receipt sink sqlite cannot write: disk I/O error');
    h.committed();
    expect(h.failing()).toBeNull();
  });
});
