/**
 * `chio receipt export` and `chio receipt verify DIR | FILE` (anchored at a checkpoint) through the
 * command dispatcher, on a log written by the real service.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/receipt.js';
import { keyFromSeed, loadSeedFile } from '../../src/keys.js';
import { jcs } from '../../src/receipt/canonical.js';
import { writeFrontierFile } from '../../src/receipt/checkpoint.js';
import { MerkleFrontier } from '../../src/receipt/merkle.js';
import { chainHashOf, receiptLeafOf } from '../../src/receipt/receipt.js';
import { verificationKeys, verifyReceiptText } from '../../src/receipt/verify.js';
import { capture, type CliRun, fakeIO } from '../helpers/cli-io.js';
import { fixtureRequest, startTestService, type TestService } from '../helpers/service.js';

const START = Date.parse('2026-12-01T00:00:00Z');
const MINUTE = 60_000;
const at = (minutes: number): string => new Date(START + minutes * MINUTE).toISOString();
const PACKAGE = JSON.parse(readFileSync(path.resolve(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { name: string; version: string };

let svc: TestService;
let cwd: string;
let kid: string;
let lines: string[];
const clock = { now: START };

beforeAll(async () => {
  svc = await startTestService({
    clock: () => clock.now,
    configText: () =>
      [
        'schema: chio.config.v1',
        'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
        'policy: ./policy.yaml',
        'keys: { receipt_signing_seed: ./data/kernel.seed }',
        'receipts:',
        '  sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ]',
        '  checkpoints: { every_receipts: 3, every_seconds: 3600 }',
        '',
      ].join('\n'),
  });
  for (let i = 0; i < 10; i++) {
    clock.now += MINUTE;
    await svc.client.check(fixtureRequest(i % 2 === 0 ? 'http-mtls-spiffe-full' : 'http-plaintext-no-identity'));
  }
  await svc.service.close(); // checkpoints 3, 6, 9 and 10; the files stay
  cwd = svc.dir;
  kid = svc.service.key.kid;
  lines = readFileSync(svc.receiptsFile, 'utf8').split('\n').filter((l) => l !== '');
});
afterAll(async () => {
  await svc?.close();
});

const idOf = (seq: number): string => (JSON.parse(lines[seq - 1]!) as { id: string }).id;
const chainOf = (): string => (JSON.parse(lines[0]!) as { chain: string }).chain;
const RANGE = ['--since', at(3), '--until', at(9), '--file', 'data/receipts.jsonl'];

function exportTo(out: string, extra: string[] = []): Promise<CliRun> {
  return capture(run, ['export', ...RANGE, '--out', out, ...extra], fakeIO(cwd, {}, () => clock.now));
}

function verify(args: string[]): Promise<CliRun> {
  return capture(run, ['verify', ...args], fakeIO(cwd));
}

describe('chio receipt export', () => {
  it('writes the bundle with the key beside the receipt file and says how to verify it', async () => {
    expect(await exportTo('bundle')).toEqual({
      code: 0,
      out: 'bundle: exported 6 receipt(s), seq 3 to 8, proven against 4 checkpoint(s) (treeSize 3 to 10)\nverify it with: chio receipt verify bundle\n',
      err: '',
    });
  });

  it('--json prints the manifest, with the tool name and version', async () => {
    const r = await exportTo('bundle-json', ['--json', '--seed', 'data/kernel.seed']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({
      schema: 'chio.receipt-bundle.v1',
      tool: { name: PACKAGE.name, version: PACKAGE.version },
      createdAt: at(10),
      range: { since: at(3), until: at(9) },
      receipts: { count: 6, firstSeq: 3, lastSeq: 8, firstId: idOf(3), lastId: idOf(8) },
      checkpoints: { count: 4, firstTreeSize: 3, latestTreeSize: 10 },
      notYetCheckpointed: { count: 0, firstSeq: null, lastSeq: null },
    });
  });

  /** The log as it was at treeSize 6 (checkpoints 3 and 6; receipts 7–10 not checkpointed), in `name`/; the stamp of receipt 6. */
  function youngLog(name: string): { r6: { timestamp: string } } {
    const log = path.join(cwd, name);
    mkdirSync(log);
    cpSync(path.join(cwd, 'data', 'receipts.jsonl'), path.join(log, 'receipts.jsonl'));
    cpSync(path.join(cwd, 'data', 'kernel.seed'), path.join(log, 'kernel.seed'));
    const checkpoints = readFileSync(path.join(cwd, 'data', 'checkpoints.jsonl'), 'utf8').split('\n');
    writeFileSync(path.join(log, 'checkpoints.jsonl'), `${checkpoints.slice(0, 2).join('\n')}\n`);
    return { r6: JSON.parse(readFileSync(path.join(log, 'receipts.jsonl'), 'utf8').split('\n')[5]!) as { timestamp: string } };
  }

  it('reports receipts that are not checkpointed yet', async () => {
    const { r6 } = youngLog('young');
    const io = fakeIO(cwd, {}, () => clock.now);
    expect(await run(['export', '--since', at(0), '--until', at(60), '--file', 'young/receipts.jsonl', '--out', 'young-bundle'], io)).toBe(0);
    expect(io.out).toBe(
      'young-bundle: exported 5 receipt(s), seq 1 to 5, proven against 2 checkpoint(s) (treeSize 3 to 6)\n' +
        `the range ends at ${r6.timestamp}, the stamp of the last checkpointed receipt, exported as its bound\n` +
        '4 receipt(s) of the range (seq 7 to 10) are not yet checkpointed and were left out: export again after the next checkpoint\n' +
        'verify it with: chio receipt verify young-bundle\n',
    );
  });

  it('says when the end of the range cannot be proven yet (it starts at the last checkpointed receipt)', async () => {
    const { r6 } = youngLog('young2');
    const io = fakeIO(cwd, {}, () => clock.now);
    expect(await run(['export', '--since', r6.timestamp, '--until', at(60), '--file', 'young2/receipts.jsonl', '--out', 'young2-bundle'], io)).toBe(0);
    expect(io.out).toContain('the end of this range cannot be proven yet (no checkpointed receipt after it): chio receipt verify needs --open-ends, or export again after the next checkpoint\n');
  });

  it("a worker's receipts-wN.jsonl is exported with its checkpoints-wN.jsonl by default, as verify reads it", async () => {
    const log = path.join(cwd, 'worker');
    mkdirSync(log);
    cpSync(path.join(cwd, 'data', 'receipts.jsonl'), path.join(log, 'receipts-w2.jsonl'));
    cpSync(path.join(cwd, 'data', 'checkpoints.jsonl'), path.join(log, 'checkpoints-w2.jsonl'));
    cpSync(path.join(cwd, 'data', 'kernel.seed'), path.join(log, 'kernel.seed'));
    const io = fakeIO(cwd, {}, () => clock.now);
    expect(await run(['export', '--since', at(0), '--until', at(60), '--file', 'worker/receipts-w2.jsonl', '--out', 'worker-bundle'], io)).toBe(0);
    expect(io.out).toMatch(/^worker-bundle: exported \d+ receipt\(s\)/);
  });

  it('bad usage and bad input exit 2 with the reason', async () => {
    const cases: Array<[string[], string]> = [
      [['export', '--out', 'x'], 'chio receipt export: missing --since, --until\n'],
      [['export', '--since', 'yesterday', '--until', at(1), '--out', 'x'], 'chio receipt export: --since "yesterday" is not an RFC 3339 date-time\n'],
      [['export', '--since', at(2), '--until', at(1), '--out', 'x'], 'chio receipt export: --since must be before --until\n'],
      [['export', '--bogus'], "chio receipt export: Unknown option '--bogus'"],
    ];
    for (const [args, first] of cases) {
      const io = fakeIO(cwd);
      expect(await run(args, io)).toBe(2);
      expect(io.err.startsWith(first)).toBe(true);
      expect(io.err).toContain('usage: chio receipt export');
    }
    const notEmpty = await exportTo('data');
    expect(notEmpty).toEqual({ code: 2, out: '', err: `chio receipt export: usage: ${path.join(cwd, 'data')} is not empty: export into a new or empty folder\n` });
    const missingIO = fakeIO(cwd);
    expect(await run(['export', ...RANGE.slice(0, 4), '--file', 'nope/receipts.jsonl', '--seed', 'data/kernel.seed', '--out', 'm'], missingIO)).toBe(2);
    expect(missingIO.err).toBe(`chio receipt export: file_not_found: receipt file ${path.join(cwd, 'nope', 'receipts.jsonl')} does not exist\n`);
    const noKeyIO = fakeIO(cwd);
    expect(await run(['export', ...RANGE.slice(0, 4), '--file', 'pruned-nokey/receipts.jsonl', '--out', 'n'], noKeyIO)).toBe(2);
    expect(noKeyIO.err.startsWith('chio receipt export: no signing key: pass --seed FILE, --public-key KEY or --jwks FILE (no kernel.seed beside pruned-nokey/receipts.jsonl)\n')).toBe(true);
    const other = keyFromSeed(Buffer.alloc(32, 1));
    const wrongKey = await exportTo('wrong-key', ['--public-key', other.publicKeyRaw.toString('hex')]);
    expect(wrongKey.code).toBe(2);
    expect(wrongKey.err).toBe(
      `chio receipt export: key_invalid: ${path.join(cwd, 'data', 'checkpoints.jsonl')} line 1: checkpoint of treeSize 3: signed by key ${kid}, which is unknown: not among the 1 public key(s) given: pass its key\n`,
    );
  });
});

describe('chio receipt export --out: its folders', () => {
  // Node's recursive mkdir loops forever under /proc (as `chio keys generate --out /proc/nope/x.seed`
  // did: QA finding): the folder is made one level at a time, and the first error ends it
  it.skipIf(!existsSync('/proc/self'))('a folder that cannot be made (under /proc): exit 2 io_error at once (bin/chio.js; needs npm run build)', () => {
    const chio = path.resolve(import.meta.dirname, '..', '..', 'bin', 'chio.js');
    const r = spawnSync(process.execPath, [chio, 'receipt', 'export', ...RANGE, '--out', '/proc/nope/bundle'], { cwd, encoding: 'utf8', timeout: 10_000 });
    expect(r.signal).toBeNull(); // not killed by the timeout
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 2, stderr: 'chio receipt export: io_error: cannot create folder /proc/nope: ENOENT\n' });
  }, 15_000);

  it('missing folders are made (0700 each)', async () => {
    expect((await exportTo('deep/er/bundle')).code).toBe(0);
    expect(existsSync(path.join(cwd, 'deep', 'er', 'bundle', 'manifest.json'))).toBe(true);
    for (const dir of ['deep', 'deep/er', 'deep/er/bundle']) expect(statSync(path.join(cwd, dir)).mode & 0o777, dir).toBe(0o700);
  });
});

describe('chio receipt verify DIR', () => {
  beforeAll(async () => {
    expect((await exportTo('verify-me')).code).toBe(0);
  });

  it('exits 0 and says what was proven, with the bundle keys (not pinned) or pinned ones', async () => {
    const summary =
      `verify-me: OK: 6 receipt(s) verified, seq 3 to 8 of chain ${chainOf()}, each included in a signed checkpoint; 4 checkpoint(s) up to treeSize 10, linked and consistent (3 consistency proof(s))\n` +
      'range seq 3 to 8: the receipt before it is signed, chained and stamped before since; the receipt after it is signed, chained and stamped at or after until\n';
    expect(await verify(['verify-me'])).toEqual({
      code: 0,
      out: `${summary}keys: the bundle's own keys.json (${kid}), not pinned: compare with your trusted key or pass --public-key\n`,
      err: '',
    });
    expect(await verify(['verify-me', '--seed', 'data/kernel.seed'])).toEqual({ code: 0, out: `${summary}keys: ${kid}\n`, err: '' });
    const json = await verify(['verify-me', '--json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out)).toEqual({
      ok: true,
      receipts: 6,
      firstSeq: 3,
      lastSeq: 8,
      checkpoints: 4,
      latestTreeSize: 10,
      consistencyProofs: 3,
      chain: chainOf(),
      complete: { start: 'bound', end: 'bound' },
      keys: 'bundle',
      kids: [kid],
      firstFailure: null,
    });
  });

  it('exits 1 naming the altered receipt (text and --json)', async () => {
    cpSync(path.join(cwd, 'verify-me'), path.join(cwd, 'altered'), { recursive: true });
    const file = path.join(cwd, 'altered', 'receipts.jsonl');
    const l = readFileSync(file, 'utf8').split('\n').filter((x) => x !== '');
    l[3] = jcs({ ...(JSON.parse(l[3]!) as object), tool: 'admin' });
    writeFileSync(file, l.map((x) => `${x}\n`).join(''));
    const alone = verifyReceiptText(l[3]!, verificationKeys([loadSeedFile(path.join(cwd, 'data', 'kernel.seed'))]));
    const message = alone.ok ? '' : alone.message;
    expect(message).toMatch(/^the receipt is not in its signed batch: its body's audit path leads to sha256:[0-9a-f]{64}, not to batch\.root sha256:[0-9a-f]{64} \(the receipt was altered\)$/);
    expect(await verify(['altered', '--seed', 'data/kernel.seed'])).toEqual({
      code: 1,
      out: `altered: FAILED\nreceipts.jsonl line 4 (${idOf(6)}, seq 6): receipt_bad_signature: ${message}\n(3 receipt(s) before it verified; keys: ${kid})\n`,
      err: '',
    });
    const json = await verify(['altered', '--json']);
    expect(json.code).toBe(1);
    expect((JSON.parse(json.out) as { firstFailure: unknown }).firstFailure).toEqual({
      file: 'receipts.jsonl',
      line: 4,
      id: idOf(6),
      seq: 6,
      code: 'receipt_bad_signature',
      message,
    });
  });

  it('a folder that is not a bundle is exit 2', async () => {
    mkdirSync(path.join(cwd, 'empty'));
    expect(await verify(['empty'])).toEqual({
      code: 2,
      out: '',
      err: `chio receipt verify: file_not_found: ${path.join(cwd, 'empty')} is not a receipt bundle: it has no manifest.json (make one with chio receipt export)\n`,
    });
  });
});

describe('chio receipt verify FILE that does not start at seq 1', () => {
  /** the retention anchor: the Merkle frontier through `seq`, as retention writes it when it prunes */
  async function anchorThrough(folder: string, seq: number): Promise<void> {
    const frontier = new MerkleFrontier();
    for (const l of lines.slice(0, seq)) frontier.append(receiptLeafOf(l));
    await writeFrontierFile(path.join(cwd, folder, 'checkpoints.anchor.json'), frontier);
  }
  /** receipts from..10 in `folder`, with the checkpoint log beside them when `withLog` */
  function tail(folder: string, withLog: boolean, from = 4): string {
    mkdirSync(path.join(cwd, folder));
    writeFileSync(path.join(cwd, folder, 'receipts.jsonl'), lines.slice(from - 1).map((l) => `${l}\n`).join(''));
    if (withLog) cpSync(path.join(cwd, 'data', 'checkpoints.jsonl'), path.join(cwd, folder, 'checkpoints.jsonl'));
    return `${folder}/receipts.jsonl`;
  }
  const head = (): string => chainHashOf(lines[9]!);

  it('is anchored at the checkpoint log beside it (retention pruned through seq 3)', async () => {
    const file = tail('pruned', true);
    await anchorThrough('pruned', 3);
    expect(await verify([file, '--seed', 'data/kernel.seed'])).toEqual({
      code: 0,
      out:
        `${file}: OK: 7 receipt(s) verified, seq 4 to 10, head ${head()}\n` +
        `(the receipts before seq 4 are covered by the signed checkpoint of treeSize 3 (${path.join(cwd, 'pruned', 'checkpoints.jsonl')} line 1); the first receipt's prevHash is not checked)\n`,
      err: '',
    });
  });

  it('without a checkpoint log fails as before, unless --from-checkpoint or --checkpoints FILE', async () => {
    const file = tail('alone', false);
    const plain = await verify([file, '--seed', 'data/kernel.seed']);
    expect(plain.code).toBe(1);
    expect(plain.out).toBe(
      `${file}: FAILED\nline 1 (${idOf(4)}, seq 4): receipt_chain_broken: the first receipt has seq 4; a chain starts at seq 1 (the receipts before it are missing)\n(0 receipt(s) before it verified)\n`,
    );
    const trusted = await verify([file, '--seed', 'data/kernel.seed', '--from-checkpoint']);
    expect(trusted).toEqual({
      code: 0,
      out: `${file}: OK: 7 receipt(s) verified, seq 4 to 10, head ${head()}\n(the file starts at seq 4 (--from-checkpoint); the first receipt's prevHash is not checked)\n`,
      err: '',
    });
    mkdirSync(path.join(cwd, 'logs'));
    cpSync(path.join(cwd, 'data', 'checkpoints.jsonl'), path.join(cwd, 'logs', 'checkpoints.jsonl'));
    await anchorThrough('logs', 3);
    const explicit = await verify([file, '--seed', 'data/kernel.seed', '--checkpoints', 'logs/checkpoints.jsonl', '--json']);
    expect(explicit.code).toBe(0);
    expect(JSON.parse(explicit.out)).toMatchObject({ ok: true, receipts: 7, firstFailure: null, startsAfterSeq: 3 });
  });

  it('the leading receipts deleted from a pruned file are caught: the anchor says where pruning stopped', async () => {
    const file = tail('cut', true, 6);
    await anchorThrough('cut', 3);
    const anchorPath = path.join(cwd, 'cut', 'checkpoints.anchor.json');
    expect(await verify([file, '--seed', 'data/kernel.seed'])).toEqual({
      code: 1,
      out: `${file}: FAILED\nreceipt_chain_broken: the receipts seq 4 to 5 are missing: the file starts at seq 6, retention pruned through seq 3 (${anchorPath}), and no segment beside it holds them (--from-checkpoint accepts such a file)\n`,
      err: '',
    });
  });

  it('a retention anchor retention did not write (wrong hashes, or not at a checkpoint) accounts for nothing', async () => {
    const forged = tail('forged', true);
    const anchorPath = path.join(cwd, 'forged', 'checkpoints.anchor.json');
    const other = new MerkleFrontier();
    for (const l of lines.slice(1, 4)) other.append(receiptLeafOf(l)); // three leaves, not receipts 1..3
    await writeFrontierFile(anchorPath, other);
    expect(await verify([forged, '--seed', 'data/kernel.seed'])).toEqual({
      code: 1,
      out: `${forged}: FAILED\nreceipt_chain_broken: the retention anchor ${anchorPath} (pruned through seq 3) is not one retention wrote: its root is not the signed root of the checkpoint of treeSize 3\n`,
      err: '',
    });
    const between = tail('between', true, 5);
    const betweenAnchor = path.join(cwd, 'between', 'checkpoints.anchor.json');
    await anchorThrough('between', 4);
    expect(await verify([between, '--seed', 'data/kernel.seed'])).toEqual({
      code: 1,
      out: `${between}: FAILED\nreceipt_chain_broken: the retention anchor ${betweenAnchor} (pruned through seq 4) is not one retention wrote: no signed checkpoint of treeSize 4 is in ${path.join(cwd, 'between', 'checkpoints.jsonl')}\n`,
      err: '',
    });
  });

  it('without an anchor the receipts before the file must be in rotated segments beside it', async () => {
    const file = tail('rotated', true);
    const anchorPath = path.join(cwd, 'rotated', 'checkpoints.anchor.json');
    const missing = await verify([file, '--seed', 'data/kernel.seed']);
    expect(missing.code).toBe(1);
    expect(missing.out).toBe(
      `${file}: FAILED\nreceipt_chain_broken: the receipts seq 1 to 3 are missing: the file starts at seq 4, no retention anchor (${anchorPath}) says they were pruned, and no segment beside it holds them (--from-checkpoint accepts such a file)\n`,
    );
    writeFileSync(path.join(cwd, 'rotated', 'receipts-1-3.jsonl'), lines.slice(0, 3).map((l) => `${l}\n`).join(''));
    expect((await verify([file, '--seed', 'data/kernel.seed'])).code).toBe(0);
  });

  it('a tampered checkpoint log is a failed check', async () => {
    const file = tail('bad-log', true);
    const log = path.join(cwd, 'bad-log', 'checkpoints.jsonl');
    const l = readFileSync(log, 'utf8').split('\n').filter((x) => x !== '');
    l[0] = jcs({ ...(JSON.parse(l[0]!) as object), treeSize: 4 });
    writeFileSync(log, l.map((x) => `${x}\n`).join(''));
    expect(await verify([file, '--seed', 'data/kernel.seed'])).toEqual({
      code: 1,
      out: `${file}: FAILED\n${log} line 1 (treeSize 4): receipt_bad_signature: the Ed25519 signature does not verify with key ${kid}\n`,
      err: '',
    });
  });
});
