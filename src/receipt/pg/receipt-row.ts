/**
 * A receipt as a row of the central store (SPEC §6; the format is README "Receipts"): the indexed
 * columns the query API filters on, taken from the receipt's own JCS text (the same columns as the
 * SQLite store, ../sinks/sqlite-worker.ts), plus its chain, seq, prevHash and chain hash (v2: the
 * hex of its Merkle leaf over the body; v1: SHA-256 of the line) for shipping.
 */
import { z } from 'zod';
import { ChioError } from '../../errors.js';
import { receiptColumnsOf, receiptFacts, type ReceiptColumns, type SealedReceipt } from '../receipt.js';

export interface ReceiptRow extends ReceiptColumns {
  readonly chain: string;
  readonly seq: number;
  readonly id: string;
  /** what this receipt names as the previous one (null for a chain's first) */
  readonly prevHash: string | null;
  /** what the next receipt names as prevHash */
  readonly hash: string;
  readonly jcs: string;
}

/** A column of chio_receipts filled from a row, besides chain, seq and jcs. */
export type StoredColumn = 'id' | 'time_ms' | 'verdict' | 'rule' | 'tool' | 'capability_id' | 'workload_uri' | 'trust_domain' | 'workload_path' | 'tier' | 'hash';

/**
 * Those columns with the row member each holds, in the table's (and ./insert.ts INSERT_SQL's)
 * order: what an insert writes and what `chio receipt verify --pg-url-env` checks a stored row against.
 */
export const STORED_COLUMNS: ReadonlyArray<readonly [StoredColumn, (r: ReceiptRow) => string | number | null]> = [
  ['id', (r) => r.id],
  ['time_ms', (r) => r.timeMs],
  ['verdict', (r) => r.verdict],
  ['rule', (r) => r.rule],
  ['tool', (r) => r.tool],
  ['capability_id', (r) => r.capabilityId],
  ['workload_uri', (r) => r.workloadUri],
  ['trust_domain', (r) => r.trustDomain],
  ['workload_path', (r) => r.workloadPath],
  ['tier', (r) => r.tier],
  ['hash', (r) => r.hash],
];

/** The members the row needs; everything else of the receipt is kept only in `jcs`. */
const indexed = z.object({
  seq: z.int().min(1),
  id: z.string().min(1).max(64),
  timestamp: z.string().refine((t) => !Number.isNaN(Date.parse(t)), 'not a time'),
  verdict: z.string(),
  rule: z.string().nullable(),
  tool: z.string().nullable(),
  capabilityId: z.string().nullable(),
  prevHash: z.string().nullable(),
  runtimeAttestation: z.object({
    tier: z.string(),
    workloadIdentity: z.object({ uri: z.string(), trustDomain: z.string(), path: z.string() }).nullable(),
  }),
  chain: z.string().optional(),
});

type Indexed = z.infer<typeof indexed>;

/**
 * The row of a receipt text (chio.receipt.v2, or v1). `chain` is the local chain's id: a v2
 * receipt must carry it; a v1 receipt (written before the upgrade, continued by the v2 chain)
 * carries none and is stored under it. Throws ChioError receipt_malformed for a text that is not
 * a receipt, receipt_chain_broken for a receipt of another chain.
 */
export function receiptRow(jcs: string, chain: string): ReceiptRow {
  let value: unknown;
  try {
    value = JSON.parse(jcs);
  } catch {
    throw new ChioError('receipt_malformed', 'a receipt to ship is not JSON');
  }
  const parsed = indexed.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ChioError('receipt_malformed', `a receipt to ship lacks ${issue?.path.join('.') ?? 'a member'}: ${issue?.message ?? 'invalid'}`);
  }
  return rowOf(parsed.data, receiptColumnsOf(parsed.data), jcs, receiptFacts(jcs).hash, chain);
}

/** The row of a receipt this process sealed (its columns came with it; the chain id is read from the receipt). */
export function sealedRow(sealed: SealedReceipt, chain: string): ReceiptRow {
  return rowOf(sealed.receipt as unknown as Indexed, sealed.columns, sealed.jcs, sealed.hash, chain);
}

function rowOf(r: Indexed, columns: ReceiptColumns, jcs: string, hash: string, chain: string): ReceiptRow {
  if (r.chain !== undefined && r.chain !== chain) {
    throw new ChioError('receipt_chain_broken', `receipt ${r.id} (seq ${r.seq}) belongs to chain ${r.chain}, not ${chain}`);
  }
  return { chain, seq: r.seq, id: r.id, ...columns, prevHash: r.prevHash, hash, jcs };
}
