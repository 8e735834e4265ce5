/**
 * Offline verification of a receipt JSONL file (SPEC §6, §10 `chio receipt verify`; format:
 * README "Receipts", /work/notes/receipt-v2.md).
 *
 * Each line must be a receipt written as exactly its RFC 8785 (JCS) text:
 * - `chio.receipt.v2`: its body's Merkle leaf (SHA-256(0x00 ‖ JCS without `batch`/`signature`))
 *   leads through its audit path `batch.proof` to `batch.root`, and the Ed25519 (RFC 8032) batch
 *   signature over the batch statement (./batch.ts) verifies with a known key — so each receipt
 *   verifies alone (`verifyReceiptText`). A batch's signature is checked once, not per receipt.
 * - `chio.receipt.v1`: an Ed25519 signature over the JCS bytes without `signature`.
 * In a chain, each receipt follows the line before it: `seq` + 1 and `prevHash` = the previous
 * receipt's chain hash (v2: its leaf; v1: SHA-256 of its line); one `chain` id throughout the v2
 * part; no v1 after v2; the receipts of a batch consecutive and complete (a file does not end inside
 * a batch: `finish()`). The first bad line is reported precisely; a deleted, altered, reordered or
 * inserted receipt shows.
 */
import { createReadStream } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { TIERS } from '../attestation/tier.js';
import { ChioError, describe, type OperationCode } from '../errors.js';
import { CREDENTIAL_KINDS } from '../identity/identity.js';
import { verifyEd25519, type PublicKeyInfo } from '../keys.js';
import { batchStatementText } from './batch.js';
import { jcs } from './canonical.js';
import { leafHash, rootFromInclusionProof } from './merkle.js';
import {
  CHAIN_ID_PATTERN,
  RECEIPT_HASH_PATTERN,
  RECEIPT_ID_PATTERN,
  RECEIPT_SCHEMA,
  RECEIPT_SCHEMA_V1,
  bodyLeaf,
  bodyTextOf,
  receiptHash,
  receiptTexts,
  type ChainHead,
} from './receipt.js';

export type VerifyFailureCode = Extract<
  OperationCode,
  'receipt_malformed' | 'receipt_bad_signature' | 'receipt_chain_broken' | 'receipt_torn_tail'
>;

export interface VerifyFailure {
  /** 1-based line number in the file */
  readonly line: number;
  /** the receipt's id and seq when the line shows them, else null */
  readonly id: string | null;
  readonly seq: number | null;
  readonly code: VerifyFailureCode;
  readonly message: string;
}

export interface VerifyResult {
  readonly ok: boolean;
  /** receipts verified before the first failure (all of them when ok) */
  readonly receipts: number;
  /** the last verified receipt */
  readonly head: ChainHead | null;
  /** the chain id of the v2 receipts (null when there are none) */
  readonly chain: string | null;
  readonly firstFailure: VerifyFailure | null;
}

/**
 * Where a file starts when it does not start the chain: its receipts before were pruned or rotated
 * out under a checkpoint. The first receipt must have seq `seq + 1` and, when `hash` is known,
 * prevHash `hash`; with `hash: null` its prevHash cannot be checked. It may be any leaf of its
 * batch (the batch's first receipts are in the part before).
 */
export interface ChainStart {
  readonly seq: number;
  readonly hash: string | null;
}

export interface ChainVerifyOptions {
  readonly after?: ChainStart;
  /** each receipt that verified, in order, with its Merkle leaf (the checkpoints' leaf: RFC 6962 of its body, or of a v1 line) */
  readonly onLeaf?: (seq: number, leaf: Buffer) => void;
}

/** Public keys by kid (the receipts' `kernelKey`). */
export type VerificationKeys = ReadonlyMap<string, KeyObject>;

/** A line longer than this is not a receipt (receipts are ~1–2 KB). */
export const MAX_RECEIPT_LINE_BYTES = 1024 * 1024;

export function verificationKeys(keys: Iterable<PublicKeyInfo>): Map<string, KeyObject> {
  const map = new Map<string, KeyObject>();
  for (const k of keys) map.set(k.kid, k.publicKey);
  return map;
}

const nullableString = z.string().nullable();
const matchMode = z.enum(['require', 'prefer']);
const tier = z.enum(TIERS);
const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lower-case hex digits');
/** The members v1 and v2 share. */
const commonMembers = {
  id: z.string().regex(RECEIPT_ID_PATTERN, 'expected rct-<ULID>'),
  seq: z.int().min(1),
  timestamp: z
    .string()
    .regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/, 'expected an ISO 8601 UTC time with milliseconds')
    .refine((t) => !Number.isNaN(Date.parse(t)) && new Date(t).toISOString() === t, 'not a valid date'),
  verdict: z.enum(['allow', 'deny']),
  rule: nullableString,
  tool: nullableString,
  capabilityId: nullableString,
  reasons: z.array(z.strictObject({ code: z.string().regex(/^[a-z][a-z0-9_]*$/, 'expected a reason code'), message: z.string() })),
  request: z.strictObject({ id: nullableString, method: nullableString, host: nullableString, path: nullableString, source: nullableString }),
  runtimeAttestation: z.strictObject({
    tier,
    verifier: nullableString,
    workloadIdentity: z
      .strictObject({
        scheme: z.literal('spiffe'),
        credentialKind: z.enum(CREDENTIAL_KINDS),
        uri: z.string(),
        trustDomain: z.string(),
        path: z.string(),
      })
      .nullable(),
  }),
  workloadIdentityMatch: z.strictObject({ mode: matchMode, matched: z.boolean() }).nullable(),
  runtimeAssuranceMatch: z.strictObject({ mode: matchMode, tier, matched: z.boolean() }).nullable(),
  policyHash: nullableString,
  prevHash: z.string().regex(RECEIPT_HASH_PATTERN, 'expected sha256:<64 hex>').nullable(),
  kernelKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'expected a JWK thumbprint (43 base64url characters)'),
  signature: z.string().regex(/^ed25519:[A-Za-z0-9_-]{86}$/, 'expected ed25519:<86 base64url characters>'),
};
const receiptV1Schema = z.strictObject({ schema: z.literal(RECEIPT_SCHEMA_V1), ...commonMembers });
const receiptV2Schema = z.strictObject({
  schema: z.literal(RECEIPT_SCHEMA),
  ...commonMembers,
  chain: z.string().regex(CHAIN_ID_PATTERN, 'expected chn-<ULID>'),
  batch: z
    .strictObject({
      index: z.int().min(0),
      // 2^63 leaves at most: a longer path cannot belong to any batch
      proof: z.array(hex64).max(63),
      root: z.string().regex(RECEIPT_HASH_PATTERN, 'expected sha256:<64 hex>'),
      size: z.int().min(1),
    })
    .refine((b) => b.index < b.size, 'batch.index must be below batch.size'),
});
type ParsedV1 = z.infer<typeof receiptV1Schema>;
type ParsedV2 = z.infer<typeof receiptV2Schema>;

class LineFailure extends Error {
  constructor(
    readonly code: VerifyFailureCode,
    message: string,
  ) {
    super(message);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A receipt that verified alone: what the chain checks need. */
type Checked =
  | { readonly version: 1; readonly receipt: ParsedV1; readonly hash: string }
  | { readonly version: 2; readonly receipt: ParsedV2; readonly hash: string };

/** The last batch signature that verified: the next receipts of the batch need not verify it again. */
interface VerifiedSignature {
  readonly statement: string;
  readonly signature: string;
  readonly kernelKey: string;
}

/**
 * Verifies one receipt line alone (v1 or v2; no chain rules): canonical JCS, schema, and for v2
 * body → leaf → audit path → batch root → batch signature; for v1 the receipt's own signature.
 * Throws LineFailure. `cache` remembers the last verified batch signature.
 */
function checkAlone(bytes: Uint8Array, keys: VerificationKeys, cache: { last: VerifiedSignature | null }): Checked {
  const text = decodeLine(bytes);
  const value = parseJson(text);
  const schema = (value as { schema?: unknown } | null)?.schema;
  if (schema === RECEIPT_SCHEMA_V1) {
    const receipt = parseWith(receiptV1Schema, value, RECEIPT_SCHEMA_V1);
    const { unsigned, signed } = receiptTexts(receipt, receipt.signature);
    if (signed !== text) throw notCanonical();
    verifySignature(keys, receipt.kernelKey, receipt.signature, unsigned);
    return { version: 1, receipt, hash: receiptHash(bytes) };
  }
  const receipt = parseWith(receiptV2Schema, value, RECEIPT_SCHEMA);
  if (jcs(receipt) !== text) throw notCanonical();
  const leaf = bodyLeaf(bodyTextOf(receipt));
  const { index, size, proof, root } = receipt.batch;
  const firstSeq = receipt.seq - index;
  if (firstSeq < 1) throw new LineFailure('receipt_malformed', `batch.index ${index} is larger than seq ${receipt.seq} − 1: no batch starts before seq 1`);
  const reached = rootFromInclusionProof(leaf, index, size, proof.map((h) => Buffer.from(h, 'hex')));
  if (reached === null) {
    throw new LineFailure('receipt_bad_signature', `batch.proof has ${proof.length} hash(es): not an audit path for leaf ${index} of a batch of ${size}`);
  }
  const reachedRef = `sha256:${reached.toString('hex')}`;
  if (reachedRef !== root) {
    throw new LineFailure(
      'receipt_bad_signature',
      `the receipt is not in its signed batch: its body's audit path leads to ${reachedRef}, not to batch.root ${root} (the receipt was altered)`,
    );
  }
  const statement = batchStatementText({ chain: receipt.chain, firstSeq, kernelKey: receipt.kernelKey, root, size });
  const last = cache.last;
  if (last === null || last.statement !== statement || last.signature !== receipt.signature || last.kernelKey !== receipt.kernelKey) {
    verifySignature(keys, receipt.kernelKey, receipt.signature, statement, `over batch seq ${firstSeq}–${firstSeq + size - 1}`);
    cache.last = { statement, signature: receipt.signature, kernelKey: receipt.kernelKey };
  }
  return { version: 2, receipt, hash: `sha256:${leaf.toString('hex')}` };
}

function notCanonical(): LineFailure {
  return new LineFailure('receipt_malformed', "the line is not the receipt's canonical JSON (RFC 8785 JCS) text");
}

function verifySignature(keys: VerificationKeys, kernelKey: string, signatureRef: string, signed: string, what = ''): void {
  const key = keys.get(kernelKey);
  if (key === undefined) {
    const known = [...keys.keys()].join(', ');
    throw new LineFailure(
      'receipt_bad_signature',
      `signed by key ${kernelKey}, which is unknown: not among the ${keys.size} public key(s) given (${known})`,
    );
  }
  const encoded = signatureRef.slice('ed25519:'.length);
  const signature = Buffer.from(encoded, 'base64url');
  if (signature.length !== 64 || signature.toString('base64url') !== encoded) {
    throw new LineFailure('receipt_bad_signature', 'the signature is not a canonical base64url Ed25519 signature');
  }
  if (!verifyEd25519(key, Buffer.from(signed, 'utf8'), signature)) {
    throw new LineFailure('receipt_bad_signature', `the Ed25519 signature${what === '' ? '' : ` ${what}`} does not verify with key ${kernelKey}`);
  }
}

export type ReceiptCheck =
  | { readonly ok: true; readonly seq: number; readonly id: string; readonly chain: string | null; readonly hash: string }
  | { readonly ok: false; readonly id: string | null; readonly seq: number | null; readonly code: VerifyFailureCode; readonly message: string };

/**
 * Verifies ONE receipt line alone, without the lines around it (v2: body → leaf → proof → root →
 * batch signature; v1: its signature): for a receipt fetched by id from a store or a shipper.
 */
export function verifyReceiptText(text: string | Uint8Array, keys: VerificationKeys): ReceiptCheck {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  try {
    const checked = checkAlone(bytes, keys, { last: null });
    const r = checked.receipt;
    return { ok: true, seq: r.seq, id: r.id, chain: checked.version === 2 ? checked.receipt.chain : null, hash: checked.hash };
  } catch (err) {
    if (!(err instanceof LineFailure)) throw err;
    const shown = shownIdentity(safeParse(bytes));
    return { ok: false, ...shown, code: err.code, message: err.message };
  }
}

function safeParse(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(utf8.decode(bytes));
  } catch {
    return null;
  }
}

/** The batch position of the last v2 receipt. */
interface BatchPosition {
  readonly root: string;
  readonly size: number;
  readonly index: number;
  readonly signature: string;
}

/**
 * Verifies the receipts of one chain one line at a time, in file order. Feed every complete line
 * (without its `\n`) to `line()`, then bytes after the last newline, if any, to `tornTail()`, and
 * call `finish()` at the end of a whole chain (not of a range cut out of one).
 */
export class ReceiptChainVerifier {
  readonly #keys: VerificationKeys;
  readonly #after: ChainStart | null;
  readonly #signatures: { last: VerifiedSignature | null } = { last: null };
  #lineNo = 0;
  #receipts = 0;
  #prev: ChainHead | null = null;
  /** the chain id of the v2 receipts so far */
  #chain: string | null = null;
  /** the last receipt's batch (null: none yet, or a v1 receipt) */
  #batch: BatchPosition | null = null;
  #last: { line: number; id: string; seq: number } | null = null;

  readonly #onLeaf: ((seq: number, leaf: Buffer) => void) | null;

  constructor(keys: VerificationKeys, options: ChainVerifyOptions = {}) {
    this.#keys = keys;
    this.#after = options.after ?? null;
    this.#onLeaf = options.onLeaf ?? null;
  }

  get receipts(): number {
    return this.#receipts;
  }

  get head(): ChainHead | null {
    return this.#prev;
  }

  /** The chain id of the v2 receipts verified so far (null when none). */
  get chain(): string | null {
    return this.#chain;
  }

  /** Checks the next complete line; returns its failure, or null when the receipt is good. */
  line(bytes: Uint8Array): VerifyFailure | null {
    this.#lineNo++;
    let shown: { id: string | null; seq: number | null } = { id: null, seq: null };
    try {
      shown = shownIdentity(safeParse(bytes));
      const checked = checkAlone(bytes, this.#keys, this.#signatures);
      this.#checkChain(checked.receipt);
      if (checked.version === 2) this.#checkBatchOrder(checked.receipt);
      else if (this.#chain !== null) {
        throw new LineFailure('receipt_chain_broken', `a ${RECEIPT_SCHEMA_V1} receipt after ${RECEIPT_SCHEMA} receipts (chain ${this.#chain}): receipts are never written in the old format after the new one`);
      }
      this.#prev = { seq: checked.receipt.seq, hash: checked.hash };
      this.#last = { line: this.#lineNo, id: checked.receipt.id, seq: checked.receipt.seq };
      this.#receipts++;
      // v2: the chain hash is the leaf; v1: the leaf is of the whole line
      this.#onLeaf?.(checked.receipt.seq, checked.version === 2 ? Buffer.from(checked.hash.slice(7), 'hex') : leafHash(bytes));
      return null;
    } catch (err) {
      if (!(err instanceof LineFailure)) throw err;
      return { line: this.#lineNo, id: shown.id, seq: shown.seq, code: err.code, message: err.message };
    }
  }

  /** The file ends with `bytes` and no newline: a write cut short. */
  tornTail(bytes: Uint8Array): VerifyFailure {
    this.#lineNo++;
    const expected = (this.#prev?.seq ?? 0) + 1;
    return {
      line: this.#lineNo,
      id: null,
      seq: null,
      code: 'receipt_torn_tail',
      message: `the file ends with ${bytes.length} bytes and no newline (a write cut short, expected receipt seq ${expected}); \`chio serve\` moves such a tail to <file>.torn-<timestamp> when it opens the file`,
    };
  }

  /** A line over MAX_RECEIPT_LINE_BYTES: reported without reading it whole. */
  lineTooLong(): VerifyFailure {
    this.#lineNo++;
    return {
      line: this.#lineNo,
      id: null,
      seq: null,
      code: 'receipt_malformed',
      message: `the line is longer than ${MAX_RECEIPT_LINE_BYTES} bytes: not a receipt`,
    };
  }

  /**
   * The end of a whole chain: it must not end inside a batch (the receipts after the last one of
   * an incomplete batch were deleted, or a crash cut the batch's write short). Null when it is fine.
   */
  finish(): VerifyFailure | null {
    const b = this.#batch;
    const last = this.#last;
    if (b === null || last === null || b.index + 1 === b.size) return null;
    const from = last.seq + 1;
    const to = last.seq + b.size - 1 - b.index;
    return {
      line: last.line,
      id: last.id,
      seq: last.seq,
      code: 'receipt_chain_broken',
      message: `the file ends inside a batch: this receipt is leaf ${b.index} of a batch of ${b.size}, so receipt${from === to ? ` seq ${from} is` : `s seq ${from}–${to} are`} missing after it (deleted, or a crash cut the batch's write short)`,
    };
  }

  #checkChain(receipt: { seq: number; prevHash: string | null }): void {
    const prev = this.#prev;
    if (prev === null && this.#after !== null) {
      const { seq, hash } = this.#after;
      if (receipt.seq !== seq + 1) {
        throw new LineFailure('receipt_chain_broken', `the first receipt has seq ${receipt.seq}; expected seq ${seq + 1} (the receipts through seq ${seq} are not in this file)`);
      }
      if (hash !== null && receipt.prevHash !== hash) {
        throw new LineFailure('receipt_chain_broken', `prevHash ${String(receipt.prevHash)} does not match receipt seq ${seq}'s hash ${hash}`);
      }
      return;
    }
    if (prev === null) {
      if (receipt.seq !== 1) {
        throw new LineFailure(
          'receipt_chain_broken',
          `the first receipt has seq ${receipt.seq}; a chain starts at seq 1 (the receipts before it are missing)`,
        );
      }
      if (receipt.prevHash !== null) {
        throw new LineFailure('receipt_chain_broken', `the first receipt has prevHash ${receipt.prevHash}; a chain starts with prevHash null`);
      }
      return;
    }
    if (receipt.seq !== prev.seq + 1) {
      throw new LineFailure(
        'receipt_chain_broken',
        `seq ${receipt.seq} does not follow the previous receipt (seq ${prev.seq}): expected seq ${prev.seq + 1}`,
      );
    }
    if (receipt.prevHash !== prev.hash) {
      throw new LineFailure(
        'receipt_chain_broken',
        `prevHash ${String(receipt.prevHash)} does not match the previous receipt (seq ${prev.seq}) hash ${prev.hash}`,
      );
    }
  }

  /** One chain id; a batch's receipts consecutive; a new batch starts at leaf 0 (after a whole batch, or one a crash cut short). */
  #checkBatchOrder(receipt: ParsedV2): void {
    if (this.#chain !== null && receipt.chain !== this.#chain) {
      throw new LineFailure('receipt_chain_broken', `chain ${receipt.chain} is not the chain of the receipts before it (${this.#chain}): two chains are mixed in one file`);
    }
    const b = receipt.batch;
    const prev = this.#batch;
    const first = this.#prev === null;
    if (prev !== null && prev.index + 1 < prev.size && b.index === prev.index + 1) {
      if (b.root !== prev.root || b.size !== prev.size || receipt.signature !== prev.signature) {
        throw new LineFailure('receipt_chain_broken', `leaf ${b.index} of a batch follows leaf ${prev.index} of another batch (root ${prev.root}): receipts of different batches are mixed`);
      }
    } else if (b.index !== 0 && !(first && this.#after !== null)) {
      const why = prev === null ? 'no batch precedes it' : prev.index + 1 === prev.size ? 'the batch before it ended' : `the receipt before it is leaf ${prev.index} of another batch`;
      throw new LineFailure('receipt_chain_broken', `the receipt is leaf ${b.index} of its batch, but ${why}: the batch's leaves before it are missing`);
    }
    this.#chain = receipt.chain;
    this.#batch = { root: b.root, size: b.size, index: b.index, signature: receipt.signature };
  }
}

function decodeLine(bytes: Uint8Array): string {
  if (bytes.length === 0) throw new LineFailure('receipt_malformed', 'empty line');
  try {
    return utf8.decode(bytes);
  } catch {
    throw new LineFailure('receipt_malformed', 'the line is not valid UTF-8');
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new LineFailure('receipt_malformed', `not valid JSON: ${describe(err)}`);
  }
}

/** id and seq of a line for the report, when they are there and of the right type. */
function shownIdentity(value: unknown): { id: string | null; seq: number | null } {
  if (typeof value !== 'object' || value === null) return { id: null, seq: null };
  const { id, seq } = value as { id?: unknown; seq?: unknown };
  return { id: typeof id === 'string' ? id : null, seq: typeof seq === 'number' ? seq : null };
}

function parseWith<T>(schema: z.ZodType<T>, value: unknown, name: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue && issue.path.length > 0 ? `field ${issue.path.join('.')}` : 'receipt';
  throw new LineFailure('receipt_malformed', `not a ${name} receipt: ${where}: ${issue?.message ?? 'invalid'}`);
}

/** Verifies a receipt JSONL file (one whole chain, or its part after `after`), streaming it. Throws ChioError for a file that cannot be read. */
export async function verifyReceiptFile(path: string, keys: VerificationKeys, options: ChainVerifyOptions = {}): Promise<VerifyResult> {
  const verifier = new ReceiptChainVerifier(keys, options);
  for await (const piece of readReceiptLines(path)) {
    const failure =
      piece.kind === 'line'
        ? verifier.line(piece.bytes)
        : piece.kind === 'torn'
          ? verifier.tornTail(piece.bytes)
          : verifier.lineTooLong();
    if (failure) return result(verifier, failure);
  }
  return result(verifier, verifier.finish());
}

/** `line 17 (rct-…, seq 17): receipt_chain_broken: …` */
export function formatFailure(f: VerifyFailure): string {
  const shown = f.id === null && f.seq === null ? '' : ` (${f.id ?? 'no id'}, seq ${f.seq ?? '?'})`;
  return `line ${f.line}${shown}: ${f.code}: ${f.message}`;
}

function result(verifier: ReceiptChainVerifier, failure: VerifyFailure | null): VerifyResult {
  return { ok: failure === null, receipts: verifier.receipts, head: verifier.head, chain: verifier.chain, firstFailure: failure };
}

export type ReceiptLine =
  /** a complete line, without its `\n` */
  | { readonly kind: 'line'; readonly bytes: Buffer }
  /** bytes after the last newline (always last) */
  | { readonly kind: 'torn'; readonly bytes: Buffer }
  /** a line over MAX_RECEIPT_LINE_BYTES (always last: reading stops there) */
  | { readonly kind: 'too-long' };

/** Streams the lines of a receipt JSONL file (from byte `start`, a line start). Throws ChioError file_not_found / io_error. */
export async function* readReceiptLines(path: string, start = 0): AsyncGenerator<ReceiptLine> {
  try {
    yield* splitLines(createReadStream(path, { highWaterMark: 1024 * 1024, start }) as AsyncIterable<Buffer>);
  } catch (err) {
    if (err instanceof ChioError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ChioError('file_not_found', `receipt file ${path} does not exist`, { cause: err });
    throw new ChioError('io_error', `cannot read receipt file ${path}: ${describe(err)}`, { cause: err });
  }
}

async function* splitLines(chunks: AsyncIterable<Buffer>): AsyncGenerator<ReceiptLine> {
  let carry: Buffer[] = [];
  let carried = 0;
  for await (const chunk of chunks) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      if (carried + end - start > MAX_RECEIPT_LINE_BYTES) {
        yield { kind: 'too-long' };
        return;
      }
      if (nl < 0) {
        if (start < chunk.length) {
          carry.push(chunk.subarray(start));
          carried += chunk.length - start;
        }
        break;
      }
      const piece = chunk.subarray(start, nl);
      yield { kind: 'line', bytes: carried === 0 ? piece : Buffer.concat([...carry, piece]) };
      carry = [];
      carried = 0;
      start = nl + 1;
    }
  }
  if (carried > 0) yield { kind: 'torn', bytes: Buffer.concat(carry) };
}
