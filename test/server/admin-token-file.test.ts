/**
 * admin.token_file readable by every user of the host: a warning at start (src/main.ts
 * warnOpenTokenFile), not a refusal (a Kubernetes Secret volume is group-readable under fsGroup).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { warnOpenTokenFile } from '../../src/main.js';
import { recordingLogger } from '../helpers/service.js';

const dir = mkdtempSync(path.join(tmpdir(), 'chio-token-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function warningsFor(mode: number | null): unknown[] {
  const file = path.join(dir, `admin-${String(mode)}.token`);
  if (mode !== null) {
    writeFileSync(file, 'secret\n');
    chmodSync(file, mode);
  }
  const log = recordingLogger();
  warnOpenTokenFile(file, log);
  return log.entries.map((e) => ({ level: e.level, msg: e.msg, obj: e.obj }));
}

describe('warnOpenTokenFile', () => {
  it('warns when others may read the token file, naming its mode', () => {
    const file = path.join(dir, 'admin-420.token');
    expect(warningsFor(0o644)).toEqual([
      { level: 'warn', msg: 'admin.token_file is readable by every user of this host; chmod o-rwx it', obj: { path: file, mode: '0644' } },
    ]);
  });

  it('warns once at start when the token file cannot be read (every /v1 request is 401 until it can)', () => {
    const file = path.join(dir, 'admin-null.token');
    expect(warningsFor(null)).toEqual([
      { level: 'warn', msg: 'admin.token_file cannot be read: every /v1 request is answered 401 until it can', obj: { path: file, err: 'ENOENT' } },
    ]);
  });

  it('is quiet for owner- or group-readable files, or no token file', () => {
    expect(warningsFor(0o600)).toEqual([]);
    expect(warningsFor(0o640)).toEqual([]);
    const log = recordingLogger();
    warnOpenTokenFile(undefined, log);
    expect(log.entries).toEqual([]);
  });
});
