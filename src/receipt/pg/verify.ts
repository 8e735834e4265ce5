/**
 * Verification of the central PostgreSQL store (SPEC §6; `chio receipt verify --pg-url-env VAR`):
 * every chain independently, in seq order, with the same checks as a receipt file
 * (../verify.ts `ReceiptChainVerifier`: canonical text, batch proof and signature, seq and
 * prevHash continuity, one chain id). A chain pruned centrally (`chio db prune`) or shipped from a
 * local log that no longer held its start begins at `chio_chains.first_seq`: its first receipt must
 * have that seq and name `first_prev_hash` (set exactly when first_seq > 1), and no row of the
 * chain may lie below first_seq (a prune deletes them in the transaction that moves it; the query
 * API never serves them, so they would otherwise escape verification). A row's seq column must be
 * its receipt's. A chain may end inside a signing batch: the rest is not shipped yet.
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
function columnsFailure(stored: StoredColumns, storedSeq: number, jcs: string, chain: string, line: number): VerifyFailure | null {
  const row = receiptRow(jcs, chain);
  // the row's seq too: the range checks (startFailure), the head and the query order read it
  if (storedSeq !== row.seq) {
    return {
      line,
      id: row.id,
      seq: row.seq,
      code: 'receipt_malformed',
      message: `the stored column seq (${storedSeq}) does not describe the signed receipt (${row.seq}): the row was altered`,
    };
  }
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

/** A failure of the chain's place in chio_chains itself (no receipt is at fault): line 0. */
function chainFailure(message: string): VerifyFailure {
  return { line: 0, id: null, seq: null, code: 'receipt_chain_broken', message };
}

/**
 * Where chio_chains says the chain starts must agree with the rows: none below first_seq (a prune
 * deletes them in the transaction that moves it), and first_prev_hash set exactly when first_seq
 * is above 1 (a prune records the hash of the last receipt it deleted; a chain shipped from a
 * pruned local log, its first receipt's prevHash; a chain from seq 1 has none). Null when they agree.
 */
async function startFailure(store: PgReceiptStore, info: ChainInfo): Promise<VerifyFailure | null> {
  const below = await store.heldBelow(info.chain, info.firstSeq);
  if (below.rows > 0 && below.lowest !== null) {
    const range = below.lowest.seq === below.highestSeq ? `seq ${below.lowest.seq}` : `seq ${below.lowest.seq} to ${String(below.highestSeq)}`;
    return {
      line: 1,
      id: below.lowest.id,
      seq: below.lowest.seq,
      code: 'receipt_chain_broken',
      message: `chio_chains starts chain ${info.chain} at first_seq ${info.firstSeq}, but the store holds ${below.rows} receipt(s) below it (${range}): rows below first_seq were pruned and must not be held (chio_chains was altered, or pruned rows were put back)`,
    };
  }
  if (info.firstSeq > 1 && info.firstPrevHash === null) {
    return chainFailure(
      `chio_chains starts chain ${info.chain} at first_seq ${info.firstSeq} with no first_prev_hash: only a chain starting at seq 1 has none, so nothing links its first receipt to the receipts before it (chio_chains was altered)`,
    );
  }
  if (info.firstSeq === 1 && info.firstPrevHash !== null) {
    return chainFailure(
      `chio_chains gives chain ${info.chain} first_prev_hash ${info.firstPrevHash}, but the chain starts at seq 1, whose receipt names no prevHash (chio_chains was altered)`,
    );
  }
  return null;
}

async function verifyChain(store: PgReceiptStore, keys: VerificationKeys, info: ChainInfo): Promise<ChainReport> {
  const start = await startFailure(store, info);
  if (start !== null) return { chain: info.chain, ok: false, receipts: 0, firstSeq: info.firstSeq, headSeq: null, firstFailure: start };
  // from here first_prev_hash is non-null whenever first_seq > 1: the first receipt must name it
  // (and must have seq first_seq: the verifier checks both)
  const verifier = new ReceiptChainVerifier(keys, info.firstSeq > 1 ? { after: { seq: info.firstSeq - 1, hash: info.firstPrevHash } } : {});
  let failure: VerifyFailure | null = null;
  for await (const record of store.iterateChain(info.chain, info.firstSeq)) {
    failure = verifier.line(Buffer.from(record.jcs, 'utf8'));
    // the columns the query API filters on must describe the signed text: an edited verdict or time
    // would change what a query answers while every signature still verifies
    failure ??= columnsFailure(record.columns, record.seq, record.jcs, info.chain, verifier.receipts);
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
