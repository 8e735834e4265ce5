import { appendFileSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChioError } from '../../../src/errors.js';
import { keyFromSeed } from '../../../src/keys.js';
import { ReceiptChain, type ChainHead, type ReceiptDraft, type SealedReceipt } from '../../../src/receipt/receipt.js';
import { JsonlSink, type TornTailInfo } from '../../../src/receipt/sinks/jsonl.js';
import { verificationKeys, verifyReceiptFile } from '../../../src/receipt/verify.js';
import { ReceiptWriter } from '../../../src/receipt/writer.js';

const KEY = keyFromSeed(Buffer.alloc(32, 5));
const KEYS = verificationKeys([KEY]);
const T0 = Date.UTC(2026, 10, 25, 21, 30, 0, 123);
const DRAFT: ReceiptDraft = {
  verdict: 'allow',
  rule: 'r',
  tool: 't',
  capabilityId: null,
  reasons: [],
  request: { id: 'req', method: 'GET', host: 'h', path: '/p', source: '10.0.0.1:1' },
  runtimeAttestation: { tier: 'none', verifier: null, workloadIdentity: null },
  workloadIdentityMatch: null,
  runtimeAssuranceMatch: null,
  policyHash: null,
};

function receiptFile(): string {
  return join(mkdtempSync(join(tmpdir(), 'chio-jsonl-')), 'data', 'receipts.jsonl');
}

function seal(chain: ReceiptChain, n: number): SealedReceipt[] {
  return Array.from({ length: n }, () => chain.seal(DRAFT));
}

async function writeChain(file: string, counts: number[], head: ChainHead | null = null): Promise<ReceiptChain> {
  const chain = new ReceiptChain({ key: KEY, clock: () => T0, head });
  const sink = new JsonlSink(file);
  expect(await sink.open()).toEqual(head);
  for (const n of counts) await sink.write(seal(chain, n), true);
  await sink.close();
  return chain;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('JsonlSink', () => {
  it('creates the folder (0700) and file (0600) and stores one JCS text + newline per receipt', async () => {
    const file = receiptFile();
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    const sink = new JsonlSink(file);
    expect(await sink.open()).toBeNull();
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(file, '..')).mode & 0o777).toBe(0o700);
    const batch = seal(chain, 3);
    await sink.write(batch, true);
    await sink.close();
    expect(readFileSync(file, 'utf8')).toBe(batch.map((s) => `${s.jcs}\n`).join(''));
  });

  it('on restart returns the head from the last line, and the continued chain verifies', async () => {
    const file = receiptFile();
    const chain = await writeChain(file, [2, 3]);
    const resumed = await writeChain(file, [4], chain.head);
    expect(resumed.head?.seq).toBe(9);
    const result = await verifyReceiptFile(file, KEYS);
    expect(result).toEqual({ ok: true, receipts: 9, head: { seq: 9, hash: resumed.head?.hash }, chain: resumed.chainId, firstFailure: null });
  });

  it('finds the head of a file larger than its scan chunk without reading it forwards', async () => {
    const file = receiptFile();
    const chain = await writeChain(file, [150, 150]);
    expect(statSync(file).size).toBeGreaterThan(3 * 64 * 1024);
    const sink = new JsonlSink(file);
    expect(await sink.open()).toEqual(chain.head);
    await sink.close();
  });

  it('quarantines a torn last line, truncates to the last complete receipt and continues the chain', async () => {
    const file = receiptFile();
    const chain = await writeChain(file, [3]);
    const intact = readFileSync(file);
    const torn = chain.seal(DRAFT).jcs.slice(0, 200); // seq 4 cut short by a crash
    appendFileSync(file, torn);

    const reports: TornTailInfo[] = [];
    const sink = new JsonlSink(file, { onTornTail: (info) => reports.push(info), clock: () => T0 + 1000 });
    const head = await sink.open();
    const quarantinedTo = `${file}.torn-2026-11-25T21:30:01.123Z`;
    expect(reports).toEqual([{ path: file, quarantinedTo, bytes: 200 }]);
    expect(readFileSync(quarantinedTo, 'utf8')).toBe(torn);
    expect(statSync(quarantinedTo).mode & 0o777).toBe(0o600);
    expect(readFileSync(file).equals(intact)).toBe(true);
    expect(head?.seq).toBe(3);

    const resumed = new ReceiptChain({ key: KEY, clock: () => T0, head });
    await sink.write(seal(resumed, 2), true);
    await sink.close();
    expect((await verifyReceiptFile(file, KEYS)).receipts).toBe(5);
  });

  it('treats a complete last line that is not JSON (zero-filled by a crash) as torn too', async () => {
    const file = receiptFile();
    const chain = await writeChain(file, [2]);
    appendFileSync(file, Buffer.concat([Buffer.alloc(300), Buffer.from('\n'), Buffer.alloc(70 * 1024)]));
    const reports: TornTailInfo[] = [];
    const sink = new JsonlSink(file, { onTornTail: (info) => reports.push(info), clock: () => T0 });
    expect(await sink.open()).toEqual(chain.head);
    await sink.close();
    expect(reports).toEqual([{ path: file, quarantinedTo: `${file}.torn-2026-11-25T21:30:00.123Z`, bytes: 301 + 70 * 1024 }]);
    expect((await verifyReceiptFile(file, KEYS)).ok).toBe(true);
  });

  it('names a second quarantine of the same millisecond with a suffix', async () => {
    const file = receiptFile();
    await writeChain(file, [1]);
    for (const _ of [1, 2]) {
      appendFileSync(file, '{"torn');
      const sink = new JsonlSink(file, { clock: () => T0 });
      await sink.open();
      await sink.close();
    }
    expect(readdirSync(join(file, '..')).sort()).toEqual([
      'receipts.jsonl',
      'receipts.jsonl.lock',
      'receipts.jsonl.torn-2026-11-25T21:30:00.123Z',
      'receipts.jsonl.torn-2026-11-25T21:30:00.123Z-1',
    ]);
  });

  it('refuses a file whose only line is other text (a sink path naming another file), and leaves it untouched', async () => {
    const file = receiptFile();
    await writeChain(file, [1]);
    writeFileSync(file, 'hello: world\n');
    const err = await new JsonlSink(file).open().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChioError);
    expect((err as ChioError).message).toBe(`${file}: its only line is not a receipt: not a receipt file (refusing to move it aside)`);
    expect(readFileSync(file, 'utf8')).toBe('hello: world\n');
    // what a crash leaves of a first receipt is still torn: a receipt's start, or zero-filled blocks
    for (const torn of ['{"batch":{"ind\n', '\u0000\u0000\u0000\n']) {
      writeFileSync(file, torn);
      const sink = new JsonlSink(file, { clock: () => T0 });
      expect(await sink.open()).toBeNull();
      await sink.close();
      expect(readFileSync(file, 'utf8')).toBe('');
    }
  });

  it('one writer per file: a second sink on it is refused while the first is open (<file>.lock), and opens after it closed', async () => {
    const file = receiptFile();
    const first = new JsonlSink(file);
    await first.open();
    const err = await new JsonlSink(file).open().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChioError);
    expect((err as ChioError).code).toBe('io_error');
    expect((err as ChioError).message).toBe(
      `receipt file ${file} is being written by another process (it holds ${file}.lock): one process, one chain; give each chio its own receipts.sinks paths (--workers gives each worker its own)`,
    );
    await first.close();
    const second = new JsonlSink(file);
    expect(await second.open()).toBeNull();
    await second.close();
  });

  it('refuses to continue a file whose last lines are not receipts, and leaves it untouched', async () => {
    const file = receiptFile();
    await writeChain(file, [1]);
    writeFileSync(file, 'not json\nnot json either\n');
    const sink = new JsonlSink(file);
    const err = await sink.open().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChioError);
    expect((err as ChioError).code).toBe('receipt_malformed');
    expect((err as ChioError).message).toBe(
      `${file}: neither of the last two lines is a receipt; refusing to continue the chain (inspect it with \`chio receipt verify\`)`,
    );
    expect(readFileSync(file, 'utf8')).toBe('not json\nnot json either\n');

    writeFileSync(file, '{"hello":"world"}\n');
    const err2 = await new JsonlSink(file).open().catch((e: unknown) => e);
    expect((err2 as ChioError).message).toBe(`${file}: the last line is JSON but not a receipt (no valid seq)`);
  });

  it('fdatasyncs only durable writes, and truncates a batch whose write or sync failed', async () => {
    const file = receiptFile();
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    const sink = new JsonlSink(file);
    await sink.open();
    const probe = await open(file, 'r');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const datasync = vi.spyOn(proto, 'datasync');

    await sink.write(seal(chain, 2), true);
    expect(datasync).toHaveBeenCalledTimes(1);
    await sink.write(seal(chain, 1), false);
    expect(datasync).toHaveBeenCalledTimes(1);
    const good = readFileSync(file);
    const durable = chain.head;

    datasync.mockRejectedValueOnce(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    const lost = seal(chain, 2);
    await expect(sink.write(lost, true)).rejects.toThrow('EIO: i/o error, fdatasync');
    expect(readFileSync(file).equals(good)).toBe(true);

    chain.reset(durable);
    await sink.write(seal(chain, 1), true);
    await sink.close();
    expect(await verifyReceiptFile(file, KEYS)).toMatchObject({ ok: true, receipts: 4 });
  });

  it('refuses a write before open or while another is in flight (programmer errors)', async () => {
    const file = receiptFile();
    const sink = new JsonlSink(file);
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head: null });
    await expect(sink.write(seal(chain, 1), true)).rejects.toThrow(TypeError);
    await sink.open();
    const first = sink.write(seal(chain, 1), true);
    await expect(sink.write(seal(chain, 1), true)).rejects.toThrow(`JsonlSink ${file}: a write is already in flight`);
    await first;
    await sink.close();
  });
});

describe('JsonlSink with ReceiptWriter (strict)', () => {
  it('makes 64 concurrent receipts durable with a couple of fdatasyncs, and the file verifies', async () => {
    const file = receiptFile();
    const sink = new JsonlSink(file);
    const head = await sink.open();
    const chain = new ReceiptChain({ key: KEY, clock: () => T0, head });
    const writer = new ReceiptWriter([sink], { durability: 'strict', head, onRewind: (h) => chain.reset(h) });
    const probe = await open(file, 'r');
    const datasync = vi.spyOn(Object.getPrototypeOf(probe) as { datasync: () => Promise<void> }, 'datasync');
    await probe.close();

    const first = writer.submit(chain.next(DRAFT)); // in flight while the others arrive
    await new Promise<void>((r) => setImmediate(r));
    const rest = Array.from({ length: 63 }, () => writer.submit(chain.next(DRAFT)));
    await Promise.all([first, ...rest]);
    expect(datasync).toHaveBeenCalledTimes(2);
    expect({ ...writer.durableHead, chain: chain.chainId }).toEqual(chain.head);
    await writer.close();
    expect(await verifyReceiptFile(file, KEYS)).toMatchObject({ ok: true, receipts: 64 });
  });
});
