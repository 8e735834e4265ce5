/**
 * Batch signing of receipts (SPEC §6; format: README "Receipts", /work/notes/receipt-v2.md §1–§3):
 * ONE Ed25519 signature per group-commit batch, over the RFC 6962 Merkle tree head of the batch's
 * receipt leaves, the way transparency logs sign tree heads (RFC 6962 §3.5, RFC 9162 §4.10). Each
 * receipt carries `batch: {index, proof, root, size}` — its RFC 6962 §2.1.1 audit path — and the
 * batch signature, so each one still verifies alone: body → leaf → proof → root → signature.
 *
 * What is signed is not the bare root but the JCS text of a batch statement
 * `{chain, firstSeq, kernelKey, root, schema: "chio.receipt-batch.v1", size}`: the signature cannot
 * be moved to another chain, position or key, and cannot be mistaken for a v1 receipt or a
 * checkpoint signature (different schemas).
 *
 * Cost per batch of n: n − 1 node hashes, ~2n hex encodings (each tree node's hex is made once and
 * shared by the proofs that name it) and one signature (~30–60 µs) — instead of n signatures.
 */
import type { SigningKey } from '../keys.js';
import { nodeHash, splitPoint } from './merkle.js';
import { receiptColumnsOf, type AnyReceipt, type PendingReceipt, type ReceiptColumns, type SealedReceipt } from './receipt.js';

export const BATCH_STATEMENT_SCHEMA = 'chio.receipt-batch.v1';

/** A sealed receipt: its final text and what the sinks need; the receipt object is parsed lazily (only tests and tools look at it). */
export class Sealed implements SealedReceipt {
  #receipt: AnyReceipt | undefined;
  #columns: ReceiptColumns | null;

  constructor(
    readonly id: string,
    readonly seq: number,
    readonly prevHash: string | null,
    readonly jcs: string,
    readonly hash: string,
    readonly leaf: Buffer,
    /** null: parsed from `jcs` on first use */
    columns: ReceiptColumns | null,
  ) {
    this.#columns = columns;
  }

  get receipt(): AnyReceipt {
    this.#receipt ??= JSON.parse(this.jcs) as AnyReceipt;
    return this.#receipt;
  }

  get columns(): ReceiptColumns {
    this.#columns ??= receiptColumnsOf(this.receipt);
    return this.#columns;
  }
}

export interface BatchStatement {
  readonly chain: string;
  /** seq of the batch's first receipt (= seq − batch.index of any of them) */
  readonly firstSeq: number;
  readonly kernelKey: string;
  /** `sha256:<hex>` */
  readonly root: string;
  readonly size: number;
}

/** The JCS text of a batch statement: the bytes the batch signature covers. */
export function batchStatementText(s: BatchStatement): string {
  return `{"chain":${JSON.stringify(s.chain)},"firstSeq":${s.firstSeq},"kernelKey":${JSON.stringify(s.kernelKey)},"root":${JSON.stringify(s.root)},"schema":"${BATCH_STATEMENT_SCHEMA}","size":${s.size}}`;
}

interface Node {
  readonly hash: Buffer;
  hex: string | null;
}

function hexOf(node: Node): string {
  node.hex ??= node.hash.toString('hex');
  return node.hex;
}

/**
 * MTH(D[lo:hi]) (RFC 6962 §2.1), appending to each leaf's audit path the sibling met at every
 * split. The recursion returns bottom-up, so each path comes out bottom-up: the order RFC 9162
 * §2.1.3.2 verifies in (and merkle.ts `inclusionProof` returns).
 */
function buildTree(leaves: readonly Buffer[], lo: number, hi: number, paths: string[][]): Node {
  if (hi - lo === 1) return { hash: leaves[lo] as Buffer, hex: null };
  const k = splitPoint(hi - lo);
  const left = buildTree(leaves, lo, lo + k, paths);
  const right = buildTree(leaves, lo + k, hi, paths);
  const rightHex = hexOf(right);
  const leftHex = hexOf(left);
  for (let i = lo; i < lo + k; i++) (paths[i] as string[]).push(rightHex);
  for (let i = lo + k; i < hi; i++) (paths[i] as string[]).push(leftHex);
  return { hash: nodeHash(left.hash, right.hash), hex: null };
}

function proofText(path: readonly string[]): string {
  return path.length === 0 ? '[]' : `["${path.join('","')}"]`;
}

/** Consecutive receipts of one chain, each chaining from the one before. */
function checkBatch(batch: readonly PendingReceipt[]): void {
  for (let i = 1; i < batch.length; i++) {
    const prev = batch[i - 1] as PendingReceipt;
    const p = batch[i] as PendingReceipt;
    if (p.chain !== prev.chain || p.seq !== prev.seq + 1 || p.prevHash !== prev.hash) {
      throw new TypeError(`receipt seq ${p.seq} does not follow seq ${prev.seq} in its batch`);
    }
  }
}

/**
 * Signs a batch of pending receipts (consecutive, in seq order, one chain) with ONE signature and
 * returns their final lines. Throws TypeError for an empty or broken batch; a signing failure
 * propagates (the writer then discards the batch and rewinds the chain).
 */
export function sealBatch(batch: readonly PendingReceipt[], key: SigningKey): SealedReceipt[] {
  const first = batch[0];
  if (first === undefined) throw new TypeError('sealBatch: an empty batch');
  checkBatch(batch);
  const size = batch.length;
  const leaves = batch.map((p) => p.leaf);
  const paths: string[][] = batch.map(() => []);
  const rootNode = buildTree(leaves, 0, size, paths);
  const root = `sha256:${hexOf(rootNode)}`;
  const statement = batchStatementText({ chain: first.chain, firstSeq: first.seq, kernelKey: key.kid, root, size });
  const signature = `ed25519:${key.sign(Buffer.from(statement, 'utf8')).toString('base64url')}`;
  const rootAndSize = `],"root":"${root}","size":${size}},`;
  const signatureMember = `,"signature":"${signature}"`;
  const out: SealedReceipt[] = new Array<SealedReceipt>(size);
  for (let i = 0; i < size; i++) {
    const p = batch[i] as PendingReceipt;
    const proof = proofText(paths[i] as string[]);
    // {"batch":{"index":i,"proof":[…],"root":…,"size":n}, + body through seq + signature + body from timestamp
    const line = `{"batch":{"index":${i},"proof":${proof.slice(0, -1)}${rootAndSize}${p.bodyHead.slice(1)}${signatureMember}${p.bodyTail}`;
    out[i] = new Sealed(p.id, p.seq, p.prevHash, line, p.hash, p.leaf, p.columns);
  }
  return out;
}
