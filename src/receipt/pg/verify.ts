/**
 * Verification of the central PostgreSQL store (SPEC §6; `chio receipt verify --pg-url-env VAR`):
 * every chain independently, in seq order, with the same checks as a receipt file
 * (../verify.ts `ReceiptChainVerifier`: canonical text, batch proof and signature, seq and
 * prevHash continuity, one chain id). A chain pruned centrally (`chio db prune`) or shipped from a
 * local log that no longer held its start begins at `chio_chains.first_seq`: its first receipt must
 * name `first_prev_hash`. A chain may end inside a signing batch: the rest is not shipped yet.
 */
import { ReceiptChainVerifier, type VerificationKeys, type VerifyFailure } from '../verify.js';
import { receiptRow, STORED_COLUMNS } from './receipt-row.js';
import type { ChainInfo, PgReceiptStore, StoredColumns } from './store.js';

export interface ChainReport {
  readonly chain: string;
  readonly ok: boolean;
  /** receipts verified (before the first failure) */
  readonly receipts: number;
  readonly firstSeq: number;
  /** the last verified receipt's seq (null when none) */
  readonly headSeq: number | null;
  /** `line` counts receipts of this chain from its first held one */
  readonly firstFailure: VerifyFailure | null;
}

/** Verifies every chain of the store (or only `only`); chains in chain-id order. */
/** Why a row's stored columns do not describe its text, or null. */
function columnsFailure(stored: StoredColumns, jcs: string, chain: string, line: number): VerifyFailure | null {
  const row = receiptRow(jcs, chain);
  for (const [column, value] of STORED_COLUMNS) {
    const expected = value(row);
    if (stored[column] !== expected) {
      return {
        line,
        id: row.id,
        seq: row.seq,
        code: 'receipt_malformed',
        message: `the stored column ${column} (${JSON.stringify(stored[column])}) does not describe the signed receipt (${JSON.stringify(expected)}): the row was altered`,
      };
    }
  }
  return null;
}

export async function verifyCentralStore(store: PgReceiptStore, keys: VerificationKeys, only?: string): Promise<ChainReport[]> {
  const chains = (await store.chains()).filter((c) => only === undefined || c.chain === only);
  const reports: ChainReport[] = [];
  for (const info of chains) reports.push(await verifyChain(store, keys, info));
  return reports;
}

async function verifyChain(store: PgReceiptStore, keys: VerificationKeys, info: ChainInfo): Promise<ChainReport> {
  const verifier = new ReceiptChainVerifier(keys, info.firstSeq > 1 ? { after: { seq: info.firstSeq - 1, hash: info.firstPrevHash } } : {});
  let failure: VerifyFailure | null = null;
  for await (const record of store.iterateChain(info.chain, info.firstSeq)) {
    failure = verifier.line(Buffer.from(record.jcs, 'utf8'));
    // the columns the query API filters on must describe the signed text: an edited verdict or time
    // would change what a query answers while every signature still verifies
    failure ??= columnsFailure(record.columns, record.jcs, info.chain, verifier.receipts);
    if (failure !== null) break;
  }
  if (failure === null && verifier.chain !== null && verifier.chain !== info.chain) {
    failure = {
      line: verifier.receipts,
      id: null,
      seq: verifier.head?.seq ?? null,
      code: 'receipt_chain_broken',
      message: `the receipts name chain ${verifier.chain}, but the store holds them under chain ${info.chain}`,
    };
  }
  return { chain: info.chain, ok: failure === null, receipts: verifier.receipts, firstSeq: info.firstSeq, headSeq: verifier.head?.seq ?? null, firstFailure: failure };
}
