/**
 * `chio demo` (src/cli/demo.ts) against a real service: the exit status follows the offline chain
 * verification, and the printed `chio receipt verify` command fits the receipts file given.
 */
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/demo.js';
import { generateSeedFile, publicJwk } from '../../src/keys.js';
import { capture, type CliRun, fakeIO } from '../helpers/cli-io.js';
import { startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
let target: string;
let admin: string;
/** an admin stand-in that publishes a key the service never signed with */
let wrongKeys: Server;
let wrongAdmin: string;
let otherKid: string;

beforeAll(async () => {
  svc = await startTestService();
  target = `127.0.0.1:${svc.service.grpcPort}`;
  admin = `127.0.0.1:${svc.service.adminPort}`;
  const other = generateSeedFile(path.join(svc.dir, 'other.seed'));
  otherKid = other.kid;
  wrongKeys = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk(other)] }));
  });
  await new Promise<void>((resolve) => wrongKeys.listen(0, '127.0.0.1', resolve));
  wrongAdmin = `127.0.0.1:${(wrongKeys.address() as AddressInfo).port}`;
  // the same receipts seen from a folder without the seed beside them
  mkdirSync(path.join(svc.dir, 'elsewhere'));
  symlinkSync(svc.receiptsFile, path.join(svc.dir, 'elsewhere', 'receipts.jsonl'));
});
afterAll(async () => {
  await new Promise<void>((resolve) => (wrongKeys ? wrongKeys.close(() => resolve()) : resolve()));
  await svc?.close();
});

/** A loopback port nothing listens on (fetch refuses to try well-known ones such as 1). */
async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

function demo(args: string[]): Promise<CliRun> {
  return capture(run, ['--target', target, ...args], fakeIO(svc.dir));
}

describe('chio demo', () => {
  it('chain verified: exit 0; the verify command names the seed beside the receipts file', async () => {
    const r = await demo(['--admin', admin, '--receipts', 'data/receipts.jsonl']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\nchain verified offline: \d+ receipt\(s\), every signature and prevHash link checks out\n/);
    expect(r.out.endsWith('verify it yourself: npx chio receipt verify data/receipts.jsonl --seed data/kernel.seed\n')).toBe(true);
  });

  it('chain verification FAILED (the published key did not sign the receipts): exit 1 with the reason', async () => {
    const first = svc.receipts()[0] as { id: string; kernelKey: string };
    const r = await demo(['--admin', wrongAdmin, '--receipts', 'data/receipts.jsonl']);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `chio demo: chain verification FAILED: line 1 (${first.id}, seq 1): receipt_bad_signature: signed by key ${first.kernelKey}, which is unknown: not among the 1 public key(s) given (${otherKid})\n`,
    );
    expect(r.out).not.toContain('chain verified offline');
  });

  it('the key cannot be fetched: exit 1, could not verify, with the reason', async () => {
    const closed = await closedPort();
    const r = await demo(['--admin', `127.0.0.1:${closed}`, '--receipts', 'data/receipts.jsonl']);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`chio demo: could not verify the chain: cannot fetch http://127.0.0.1:${closed}/v1/keys: connect ECONNREFUSED 127.0.0.1:${closed}\n`);
    expect(r.out).not.toContain('chain verified offline');
  });

  it('no receipts file where --receipts says: exit 1, could not verify', async () => {
    const r = await demo(['--admin', admin, '--receipts', 'nowhere/receipts.jsonl']);
    expect(r.code).toBe(1);
    expect(r.err).toBe(
      `chio demo: could not verify the chain: no receipts file ${path.join(svc.dir, 'nowhere', 'receipts.jsonl')} (the service writes them where its config says; see --receipts)\n`,
    );
  });

  it('--receipts in a folder without the seed: the verify command fetches the published keys (--jwks)', async () => {
    const r = await demo(['--admin', admin, '--receipts', 'elsewhere/receipts.jsonl']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('--seed');
    expect(
      r.out.endsWith(`verify it yourself: curl -s http://${admin}/v1/keys > keys.json && npx chio receipt verify elsewhere/receipts.jsonl --jwks keys.json\n`),
    ).toBe(true);
  });
});

describe('chio demo against chio serve --workers N', () => {
  // the workers write receipts-w1.jsonl, receipts-w2.jsonl … beside the configured file, which does
  // not exist: the demo said `no receipts file` and exited 1 (QA finding)
  beforeAll(() => {
    // two worker chains as src/server/workers.ts names them; here both are the one service's chain
    mkdirSync(path.join(svc.dir, 'workers'));
    symlinkSync(svc.receiptsFile, path.join(svc.dir, 'workers', 'receipts-w1.jsonl'));
    symlinkSync(svc.receiptsFile, path.join(svc.dir, 'workers', 'receipts-w2.jsonl'));
  });

  it('the file given is not there but the workers\' are: each chain verified, and it says so', async () => {
    const r = await demo(['--admin', admin, '--receipts', 'workers/receipts.jsonl']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain(
      `\nreceipts: ${path.join(svc.dir, 'workers', 'receipts.jsonl')}\n  not there, but the chains of 2 worker(s) (chio serve --workers) are beside it: receipts-w1.jsonl, receipts-w2.jsonl; verifying each\n`,
    );
    expect(r.out).toMatch(/\nchain verified offline: receipts-w1\.jsonl: \d+ receipt\(s\), every signature and prevHash link checks out\n/);
    expect(r.out).toMatch(/\nchain verified offline: receipts-w2\.jsonl: \d+ receipt\(s\), every signature and prevHash link checks out\n/);
    expect(r.out).toContain('\nthe receipt of the first decision:\n');
    expect(r.out.endsWith(`verify it yourself: curl -s http://${admin}/v1/keys > keys.json && npx chio receipt verify workers/receipts-w1.jsonl workers/receipts-w2.jsonl --jwks keys.json\n`)).toBe(true);
  });

  it('a single-process log left from an earlier run beside the workers\' chains: the chains holding this run are verified, not the stale log', async () => {
    mkdirSync(path.join(svc.dir, 'stale'));
    writeFileSync(path.join(svc.dir, 'stale', 'receipts.jsonl'), `${readFileSync(svc.receiptsFile, 'utf8').split('\n')[0]}\n`);
    symlinkSync(svc.receiptsFile, path.join(svc.dir, 'stale', 'receipts-w1.jsonl'));
    const r = await demo(['--admin', admin, '--receipts', 'stale/receipts.jsonl']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\nchain verified offline: receipts-w1\.jsonl: \d+ receipt\(s\)/);
    // no file holds this run's receipts: exit 1, saying so
    mkdirSync(path.join(svc.dir, 'old'));
    writeFileSync(path.join(svc.dir, 'old', 'receipts.jsonl'), `${readFileSync(svc.receiptsFile, 'utf8').split('\n')[0]}\n`);
    const old = await demo(['--admin', admin, '--receipts', 'old/receipts.jsonl']);
    expect(old.code).toBe(1);
    expect(old.err).toBe(
      `chio demo: could not verify the chain: ${path.join(svc.dir, 'old', 'receipts.jsonl')} does not hold the receipts of this run (an older log? the service writes them where its config says; see --receipts)\n`,
    );
  });

  it('a worker chain that fails: exit 1 naming its file', async () => {
    mkdirSync(path.join(svc.dir, 'broken'));
    symlinkSync(svc.receiptsFile, path.join(svc.dir, 'broken', 'receipts-w1.jsonl'));
    const lines = readFileSync(svc.receiptsFile, 'utf8').split('\n');
    writeFileSync(path.join(svc.dir, 'broken', 'receipts-w2.jsonl'), [...lines.slice(0, 1), ...lines.slice(2)].join('\n'));
    const r = await demo(['--admin', admin, '--receipts', 'broken/receipts.jsonl']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^chio demo: chain verification FAILED: receipts-w2\.jsonl: line 2 \(rct-[0-9A-Z]+, seq 3\): receipt_chain_broken: /);
    expect(r.out).toMatch(/chain verified offline: receipts-w1\.jsonl: /);
  });

  it('--json: one object with the decisions and each chain\'s verification', async () => {
    const r = await demo(['--admin', admin, '--receipts', 'workers/receipts.jsonl', '--json']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out.split('\n')).toHaveLength(2); // one line
    const report = JSON.parse(r.out) as {
      target: string;
      decisions: Array<{ case: string; verdict: string; detail: string; receiptId: string | null }>;
      receipts: unknown;
      verification: { ok: boolean; chains: Array<{ file: string; ok: boolean; receipts: number; failure: string | null }>; error: string | null };
      verifyCommand: string;
    };
    expect(report.target).toBe(target);
    expect(report.decisions.length).toBeGreaterThan(3);
    expect(report.decisions[0]).toMatchObject({ case: 'frontend lists orders over mTLS', verdict: 'allow', receiptId: expect.stringMatching(/^rct-/) });
    expect(new Set(report.decisions.map((d) => d.verdict))).toEqual(new Set(['allow', 'deny']));
    const files = ['receipts-w1.jsonl', 'receipts-w2.jsonl'].map((f) => path.join(svc.dir, 'workers', f));
    expect(report.receipts).toEqual({ file: path.join(svc.dir, 'workers', 'receipts.jsonl'), files, workers: true });
    expect(report.verification).toMatchObject({ ok: true, error: null, chains: files.map((file) => ({ file, ok: true, failure: null })) });
    expect(report.verifyCommand).toContain('npx chio receipt verify workers/receipts-w1.jsonl workers/receipts-w2.jsonl');
    const none = await demo(['--admin', admin, '--receipts', 'nowhere/receipts.jsonl', '--json']);
    expect(none.code).toBe(1);
    expect(JSON.parse(none.out)).toMatchObject({ receipts: { files: [], workers: false }, verification: { ok: false, chains: [], error: expect.stringMatching(/^no receipts file /) }, verifyCommand: null });
  });
});
