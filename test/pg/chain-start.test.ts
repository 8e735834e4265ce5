/**
 * Where a chain starts in the central store (chio_chains.first_seq / first_prev_hash) must agree
 * with its rows: `chio receipt verify --pg-url-env` fails a chain whose start was moved past rows
 * still held, or that has lost the hash linking it to what was pruned, and the query API and
 * get-by-id never serve a row below its chain's first_seq. A chain pruned with `chio_prune_chain`
 * still verifies. Needs PostgreSQL (support/pg.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { insertReceipts, registerChain } from '../../src/receipt/pg/insert.js';
import { migrate } from '../../src/receipt/pg/migrate.js';
import { sealedRow } from '../../src/receipt/pg/receipt-row.js';
import { PgReceiptStore } from '../../src/receipt/pg/store.js';
import { verifyCentralStore } from '../../src/receipt/pg/verify.js';
import type { SealedReceipt } from '../../src/receipt/receipt.js';
import { verificationKeys } from '../../src/receipt/verify.js';
import { fakeIO } from '../helpers/cli-io.js';
import { CHAIN, KEY, sealedReceipts, tempDir } from '../receipt/helpers.js';
import { createTestSchema, SKIP_PG, type TestSchema } from './support/pg.js';

const KEYS = verificationKeys([KEY]);

describe.skipIf(SKIP_PG)("the central store: a chain's start (chio_chains) against its rows", () => {
  let schema: TestSchema;
  let store: PgReceiptStore;
  let sealed: SealedReceipt[];

  beforeEach(async () => {
    schema = await createTestSchema();
    await migrate(schema.admin);
    store = new PgReceiptStore(schema.admin);
    sealed = sealedReceipts(16, null, 0, 4); // seq 1..16, signed in batches of 4
    await registerChain(schema.admin, CHAIN, 1, null);
    await insertReceipts(schema.admin, CHAIN, sealed.map((s) => sealedRow(s, CHAIN)));
  });
  afterEach(async () => {
    await schema.drop();
  });

  const at = (seq: number): SealedReceipt => sealed[seq - 1] as SealedReceipt;
  const hashOf = (seq: number): string => sealedRow(at(seq), CHAIN).hash;
  const setStart = (firstSeq: number, firstPrevHash: string | null) =>
    schema.admin.query('UPDATE chio_chains SET first_seq = $2, first_prev_hash = $3 WHERE chain = $1', [CHAIN, firstSeq, firstPrevHash]);
  const seqsOf = (texts: readonly string[]): number[] => texts.map((t) => (JSON.parse(t) as { seq: number }).seq);
  const all = async (): Promise<number[]> => seqsOf((await store.query(store.parse([['limit', '500']]))).receipts);

  it('first_seq moved past every row (17 on rows 1..16, no first_prev_hash): verify FAILS naming the rows below it; the CLI exits 1', async () => {
    await setStart(17, null);
    const [report] = await verifyCentralStore(store, KEYS);
    expect(report).toEqual({
      chain: CHAIN,
      ok: false,
      receipts: 0,
      firstSeq: 17,
      headSeq: null,
      firstFailure: {
        line: 1,
        id: at(1).id,
        seq: 1,
        code: 'receipt_chain_broken',
        message: `chio_chains starts chain ${CHAIN} at first_seq 17, but the store holds 16 receipt(s) below it (seq 1 to 16): rows below first_seq were pruned and must not be held (chio_chains was altered, or pruned rows were put back)`,
      },
    });
    const { main } = await import('../../src/cli/index.js');
    const io = fakeIO(tempDir('chio-pg-start-'), { PG: schema.url });
    expect(await main(['receipt', 'verify', '--pg-url-env', 'PG', '--public-key', KEY.publicKeyRaw.toString('hex')], io)).toBe(1);
    expect(io.out).toBe(
      `${schema.url}: FAILED\nchain ${CHAIN}: FAILED\n  line 1 (${at(1).id}, seq 1): receipt_chain_broken: chio_chains starts chain ${CHAIN} at first_seq 17, but the store holds 16 receipt(s) below it (seq 1 to 16): rows below first_seq were pruned and must not be held (chio_chains was altered, or pruned rows were put back)\n  (0 receipt(s) before it verified)\n`,
    );
    // chio db status says it does not add up (it showed "16 receipt(s), seq 17 to 16")
    const status = fakeIO(tempDir('chio-pg-start-'), { PG: schema.url });
    expect(await main(['db', 'status', '--url-env', 'PG'], status)).toBe(0);
    expect(status.out).toContain(`chain ${CHAIN}: 16 receipt(s), seq 17 to 16 — its rows do not match chio_chains (first_seq 17): run chio receipt verify --pg-url-env\n`);
  });

  it('first_seq moved up with a plausible first_prev_hash while the rows below stay: verify FAILS; query and get serve none of them', async () => {
    // an edited receipt below the moved start: what the review saw the query API still serve
    await schema.admin.query(`UPDATE chio_receipts SET jcs = replace(jcs, '"seq":2', '"seq":2 ') WHERE chain = $1 AND seq = 2`, [CHAIN]);
    await setStart(9, hashOf(8));
    const [report] = await verifyCentralStore(store, KEYS);
    expect(report?.ok).toBe(false);
    expect(report?.firstFailure).toEqual({
      line: 1,
      id: at(1).id,
      seq: 1,
      code: 'receipt_chain_broken',
      message: `chio_chains starts chain ${CHAIN} at first_seq 9, but the store holds 8 receipt(s) below it (seq 1 to 8): rows below first_seq were pruned and must not be held (chio_chains was altered, or pruned rows were put back)`,
    });
    expect(await all()).toEqual([9, 10, 11, 12, 13, 14, 15, 16]);
    const denies = sealed.filter((s) => s.jcs.includes('"verdict":"deny"')).map((s) => s.seq);
    expect(denies.some((seq) => seq < 9) && denies.some((seq) => seq >= 9)).toBe(true);
    expect(seqsOf((await store.query(store.parse([['verdict', 'deny'], ['limit', '500']]))).receipts)).toEqual(denies.filter((seq) => seq >= 9));
    expect(await store.get(at(2).id)).toBeNull();
    expect(await store.get(at(8).id)).toBeNull();
    expect(await store.get(at(9).id)).toBe(at(9).jcs);
  });

  it('a prefix deleted with first_seq moved but no first_prev_hash: verify FAILS (only a chain from seq 1 starts without one)', async () => {
    await schema.admin.query('DELETE FROM chio_receipts WHERE chain = $1 AND seq <= 8', [CHAIN]);
    await setStart(9, null);
    const [report] = await verifyCentralStore(store, KEYS);
    expect(report).toEqual({
      chain: CHAIN,
      ok: false,
      receipts: 0,
      firstSeq: 9,
      headSeq: null,
      firstFailure: {
        line: 0,
        id: null,
        seq: null,
        code: 'receipt_chain_broken',
        message: `chio_chains starts chain ${CHAIN} at first_seq 9 with no first_prev_hash: only a chain starting at seq 1 has none, so nothing links its first receipt to the receipts before it (chio_chains was altered)`,
      },
    });
  });

  it('a first_prev_hash on a chain that starts at seq 1: verify FAILS', async () => {
    await setStart(1, hashOf(3));
    const [report] = await verifyCentralStore(store, KEYS);
    expect(report?.firstFailure).toEqual({
      line: 0,
      id: null,
      seq: null,
      code: 'receipt_chain_broken',
      message: `chio_chains gives chain ${CHAIN} first_prev_hash ${hashOf(3)}, but the chain starts at seq 1, whose receipt names no prevHash (chio_chains was altered)`,
    });
  });

  it("the first row not at first_seq, or not naming first_prev_hash: verify FAILS at it (the chain verifier's own checks)", async () => {
    await schema.admin.query('DELETE FROM chio_receipts WHERE chain = $1 AND seq <= 8', [CHAIN]);
    await setStart(8, hashOf(7)); // seq 8 is not held: the rows start at 9
    expect((await verifyCentralStore(store, KEYS))[0]?.firstFailure).toEqual({
      line: 1,
      id: at(9).id,
      seq: 9,
      code: 'receipt_chain_broken',
      message: 'the first receipt has seq 9; expected seq 8 (the receipts through seq 7 are not in this file)',
    });
    await setStart(9, hashOf(7)); // seq 9 names seq 8's hash, not seq 7's
    expect((await verifyCentralStore(store, KEYS))[0]?.firstFailure).toEqual({
      line: 1,
      id: at(9).id,
      seq: 9,
      code: 'receipt_chain_broken',
      message: `prevHash ${hashOf(8)} does not match receipt seq 8's hash ${hashOf(7)}`,
    });
  });

  it("a row's seq column moved off its receipt's seq: verify FAILS naming the receipt", async () => {
    await schema.admin.query('UPDATE chio_receipts SET seq = 100 WHERE chain = $1 AND seq = 16', [CHAIN]);
    expect((await verifyCentralStore(store, KEYS))[0]?.firstFailure).toEqual({
      line: 16,
      id: at(16).id,
      seq: 16,
      code: 'receipt_malformed',
      message: 'the stored column seq (100) does not describe the signed receipt (16): the row was altered',
    });
  });

  it('a chain pruned with chio_prune_chain still verifies, and the query API serves what remains', async () => {
    await schema.admin.query('SELECT chio_prune_chain($1, 8)', [CHAIN]);
    expect(await store.chains()).toEqual([{ chain: CHAIN, firstSeq: 9, firstPrevHash: hashOf(8), receipts: 8, headSeq: 16 }]);
    expect(await verifyCentralStore(store, KEYS)).toEqual([{ chain: CHAIN, ok: true, receipts: 8, firstSeq: 9, headSeq: 16, firstFailure: null }]);
    expect(await all()).toEqual([9, 10, 11, 12, 13, 14, 15, 16]);
    await schema.admin.query('SELECT chio_prune_chain($1, 1000)', [CHAIN]); // keeps the newest
    expect(await verifyCentralStore(store, KEYS)).toEqual([{ chain: CHAIN, ok: true, receipts: 1, firstSeq: 16, headSeq: 16, firstFailure: null }]);
  });

  it('a chain registered past seq 1 with nothing shipped yet (the first insert still to come) verifies as empty', async () => {
    const other = 'chn-01JD0000000000000000000001';
    await registerChain(schema.admin, other, 17, hashOf(16));
    expect(await verifyCentralStore(store, KEYS, other)).toEqual([{ chain: other, ok: true, receipts: 0, firstSeq: 17, headSeq: null, firstFailure: null }]);
  });
});
