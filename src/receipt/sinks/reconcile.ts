/**
 * The configured receipt sinks (SPEC §2.1 `receipts.sinks`), opened on ONE chain (SPEC §6).
 *
 * Sinks can disagree at startup: a crash between the sinks' commits of one batch, a store file
 * that was deleted (or added to an existing deployment), a sink restored from a backup. When one
 * sink is behind another, it is backfilled from the longest one, each receipt checked on the way
 * (canonical JCS text, Ed25519 signature by a known key, seq and prevHash continuing the chain the
 * lagging sink holds). When that is impossible — two different chains, a gap, a bad receipt, a
 * source that cannot be read from — startup fails with a message naming the sinks and the receipt.
 * An empty SQLite store (deleted to be rebuilt: it is an index of the log) is filled from the first
 * receipt the log still holds: after retention pruned the start of the chain that is not seq 1, and
 * the receipts before it are accounted for by the retention anchor, which `chio receipt verify`
 * checks (not this). An empty JSONL file is not rebuilt from a store that does not start at seq 1.
 */
import type { Logger } from '../../check/pipeline.js';
import { ChioError, describe } from '../../errors.js';
import { receiptFacts, sealedOf, type ChainHead, type SealedReceipt } from '../receipt.js';
import { isReceiptSource } from '../checkpoint.js';
import { JsonlReceiptFiles } from '../retention.js';
import type { ReceiptRecord } from '../store.js';
import { ReceiptChainVerifier, type VerificationKeys } from '../verify.js';
import { JsonlSink } from './jsonl.js';
import type { ReceiptSink } from './sink.js';
import { SqliteSink } from './sqlite.js';

export type SinkConfig = { readonly type: 'jsonl'; readonly path: string } | { readonly type: 'sqlite'; readonly path: string };

/** Receipts copied per write while backfilling. */
const BACKFILL_BATCH = 500;

/** One sink per config entry (not opened). */
export function createReceiptSinks(configs: readonly SinkConfig[], log: Logger): ReceiptSink[] {
  return configs.map((c) =>
    c.type === 'sqlite'
      ? new SqliteSink(c.path)
      : new JsonlSink(c.path, {
          onTornTail: (info) => log.warn({ ...info }, 'receipt file had a torn last line (crash mid-write); quarantined it'),
        }),
  );
}

export interface OpenSinksOptions {
  /** keys a backfilled receipt may be signed with */
  readonly keys: VerificationKeys;
  readonly log: Logger;
}

/**
 * Opens every sink and brings them to one head (backfilling the ones behind); returns that head.
 * On failure every sink opened so far is closed and the ChioError says why.
 */
export async function openSinksOnOneChain(sinks: readonly ReceiptSink[], options: OpenSinksOptions): Promise<ChainHead | null> {
  const opened: ReceiptSink[] = [];
  try {
    const heads: Array<ChainHead | null> = [];
    for (const sink of sinks) {
      heads.push(await sink.open());
      opened.push(sink);
    }
    return await reconcile(sinks, heads, options);
  } catch (err) {
    await Promise.allSettled(opened.map((s) => s.close()));
    throw err;
  }
}

function sameHead(a: ChainHead | null, b: ChainHead | null): boolean {
  return a?.seq === b?.seq && a?.hash === b?.hash;
}

function label(sink: ReceiptSink): string {
  return sink instanceof JsonlSink || sink instanceof SqliteSink ? `${sink.name} ${sink.path}` : sink.name;
}

function showHead(head: ChainHead | null): string {
  return head === null ? 'empty' : `at seq ${head.seq} (${head.hash})`;
}

async function reconcile(sinks: readonly ReceiptSink[], heads: ReadonlyArray<ChainHead | null>, options: OpenSinksOptions): Promise<ChainHead | null> {
  let leader = 0;
  heads.forEach((h, i) => {
    if ((h?.seq ?? 0) > (heads[leader]?.seq ?? 0)) leader = i;
  });
  const source = sinks[leader] as ReceiptSink;
  const target = heads[leader] ?? null;
  for (let i = 0; i < sinks.length; i++) {
    const sink = sinks[i] as ReceiptSink;
    const from = heads[i] ?? null;
    if (sameHead(from, target)) continue;
    const copied = await backfill(sink, from, source, target, options.keys);
    options.log.warn(
      { sink: label(sink), from: from?.seq ?? 0, to: target?.seq ?? 0, receipts: copied, source: label(source) },
      'receipt sink was behind the others; backfilled it from the longest one',
    );
  }
  return target;
}

/** Copies the receipts after `from` from `source` into `sink`, checking each; returns how many. */
async function backfill(
  sink: ReceiptSink,
  from: ChainHead | null,
  source: ReceiptSink,
  target: ChainHead | null,
  keys: VerificationKeys,
): Promise<number> {
  const cannot = (why: string): ChioError =>
    new ChioError(
      'receipt_chain_broken',
      `receipt sinks hold different chains: ${label(sink)} is ${showHead(from)}, ${label(source)} is ${showHead(target)}; ${why}. ` +
        'Move the sink that is wrong aside (it is kept as evidence) and start again, or point both at one chain.',
    );
  if (from !== null && target !== null && from.seq === target.seq) throw cannot('same length, different receipts');
  let base = from;
  let check: ((text: string) => SealedReceipt) | null = from === null ? null : continuationCheck(from, keys);
  let batch: SealedReceipt[] = [];
  let copied = 0;
  for await (const text of receiptsAfter(source, from?.seq ?? 0, cannot)) {
    if (check === null) {
      // an empty store: from the log's first receipt, which retention may have moved past seq 1
      if (sink instanceof SqliteSink) {
        const first = receiptFacts(text);
        if (first.seq > 1 && first.prevHash !== null) {
          base = { seq: first.seq - 1, hash: first.prevHash };
          sink.startAfter(base);
        }
      }
      check = continuationCheck(base, keys);
    }
    let sealed: SealedReceipt;
    try {
      sealed = check(text);
    } catch (err) {
      throw cannot(describe(err));
    }
    batch.push(sealed);
    if (batch.length >= BACKFILL_BATCH) {
      await sink.write(batch, true);
      copied += batch.length;
      batch = [];
    }
  }
  await sink.write(batch, true);
  copied += batch.length;
  if ((base?.seq ?? 0) + copied !== target?.seq) throw cannot(`only ${copied} receipt(s) after seq ${base?.seq ?? 0} could be read from ${label(source)}`);
  return copied;
}

/**
 * A checker of receipt texts that must continue the chain at `from`, with the checks of `chio
 * receipt verify` (./verify.ts, v1 and v2): canonical JCS, signature (v2: the batch signature and
 * the receipt's inclusion proof) by a known key, seq and prevHash in order. Throws an Error naming
 * the receipt and the fault.
 */
export function continuationCheck(from: ChainHead | null, keys: VerificationKeys): (text: string) => SealedReceipt {
  const verifier = new ReceiptChainVerifier(keys, from === null ? {} : { after: { seq: from.seq, hash: from.hash } });
  return (text) => {
    const failure = verifier.line(Buffer.from(text, 'utf8'));
    if (failure !== null) {
      const at = verifier.head?.seq ?? from?.seq ?? 0;
      throw new Error(`receipt ${failure.id ?? '?'} (seq ${String(failure.seq ?? '?')}) cannot continue the chain at seq ${at}: ${failure.code}: ${failure.message}`);
    }
    return sealedOf(text);
  };
}

/** The texts of the receipts with seq > afterSeq, in order, from a sink that can be read back. */
async function* receiptsAfter(source: ReceiptSink, afterSeq: number, cannot: (why: string) => ChioError): AsyncIterable<string> {
  let records: AsyncIterable<ReceiptRecord>;
  if (isReceiptSource(source)) records = source.iterateBySeq(afterSeq + 1); // the SQLite store, JSONL with segments
  else if (source instanceof JsonlSink) records = new JsonlReceiptFiles(source.path).iterateBySeq(afterSeq + 1);
  else throw cannot(`a ${source.name} sink cannot be read back`);
  for await (const r of records) yield r.jcs;
}
