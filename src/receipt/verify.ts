/**
 * Offline verification of a receipt JSONL file (SPEC §6, §10 `chio receipt verify`).
 *
 * Each line must be a `chio.receipt.v1` receipt written as exactly its RFC 8785 (JCS) text, with
 * an Ed25519 signature (RFC 8032) by a known key over the JCS bytes without `signature`, and must
 * chain from the line before it (`seq` + 1, `prevHash` = SHA-256 of the previous line). The first
 * bad line is reported precisely; a deleted, altered, reordered or inserted receipt shows.
 */
import { createReadStream } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { TIERS } from '../attestation/tier.js';
import { ChioError, describe, type OperationCode } from '../errors.js';
import { CREDENTIAL_KINDS } from '../identity/identity.js';
import { verifyEd25519, type PublicKeyInfo } from '../keys.js';
import {
  RECEIPT_HASH_PATTERN,
  RECEIPT_ID_PATTERN,
  RECEIPT_SCHEMA,
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
  readonly firstFailure: VerifyFailure | null;
}

/**
 * Where a file starts when it does not start the chain: its receipts before were pruned or rotated
 * out under a checkpoint. The first receipt must have seq `seq + 1` and, when `hash` is known,
 * prevHash `hash`; with `hash: null` its prevHash cannot be checked.
 */
export interface ChainStart {
  readonly seq: number;
  readonly hash: string | null;
}

export interface ChainVerifyOptions {
  readonly after?: ChainStart;
}

/** Public keys by kid (the receipts' `kernelKey`). */
export type VerificationKeys = ReadonlyMap<string, KeyObject>;

/** A line longer than this is not a receipt (receipts are ~1 KB). */
export const MAX_RECEIPT_LINE_BYTES = 1024 * 1024;

export function verificationKeys(keys: Iterable<PublicKeyInfo>): Map<string, KeyObject> {
  const map = new Map<string, KeyObject>();
  for (const k of keys) map.set(k.kid, k.publicKey);
  return map;
}

const nullableString = z.string().nullable();
const matchMode = z.enum(['require', 'prefer']);
const tier = z.enum(TIERS);
const receiptSchema = z.strictObject({
  schema: z.literal(RECEIPT_SCHEMA),
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
});
type ParsedReceipt = z.infer<typeof receiptSchema>;

class LineFailure extends Error {
  constructor(
    readonly code: VerifyFailureCode,
    message: string,
  ) {
    super(message);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Verifies receipts one line at a time, in file order. Feed every complete line (without its
 * `\n`) to `line()`, then bytes after the last newline, if any, to `tornTail()`.
 */
export class ReceiptChainVerifier {
  readonly #keys: VerificationKeys;
  readonly #after: ChainStart | null;
  #lineNo = 0;
  #receipts = 0;
  #prev: ChainHead | null = null;

  constructor(keys: VerificationKeys, options: ChainVerifyOptions = {}) {
    this.#keys = keys;
    this.#after = options.after ?? null;
  }

  get receipts(): number {
    return this.#receipts;
  }

  get head(): ChainHead | null {
    return this.#prev;
  }

  /** Checks the next complete line; returns its failure, or null when the receipt is good. */
  line(bytes: Uint8Array): VerifyFailure | null {
    this.#lineNo++;
    let shown: { id: string | null; seq: number | null } = { id: null, seq: null };
    try {
      const text = decodeLine(bytes);
      const value = parseJson(text);
      shown = shownIdentity(value);
      const receipt = parseReceipt(value);
      const unsigned = checkCanonical(receipt, text);
      this.#checkSignature(receipt, unsigned);
      this.#checkChain(receipt);
      this.#prev = { seq: receipt.seq, hash: receiptHash(bytes) };
      this.#receipts++;
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

  #checkSignature(receipt: ParsedReceipt, unsigned: string): void {
    const key = this.#keys.get(receipt.kernelKey);
    if (key === undefined) {
      const known = [...this.#keys.keys()].join(', ');
      throw new LineFailure(
        'receipt_bad_signature',
        `signed by key ${receipt.kernelKey}, which is unknown: not among the ${this.#keys.size} public key(s) given (${known})`,
      );
    }
    const encoded = receipt.signature.slice('ed25519:'.length);
    const signature = Buffer.from(encoded, 'base64url');
    if (signature.length !== 64 || signature.toString('base64url') !== encoded) {
      throw new LineFailure('receipt_bad_signature', 'the signature is not a canonical base64url Ed25519 signature');
    }
    if (!verifyEd25519(key, Buffer.from(unsigned, 'utf8'), signature)) {
      throw new LineFailure('receipt_bad_signature', `the Ed25519 signature does not verify with key ${receipt.kernelKey}`);
    }
  }

  #checkChain(receipt: ParsedReceipt): void {
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

function parseReceipt(value: unknown): ParsedReceipt {
  const parsed = receiptSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue && issue.path.length > 0 ? `field ${issue.path.join('.')}` : 'receipt';
  throw new LineFailure('receipt_malformed', `not a ${RECEIPT_SCHEMA} receipt: ${where}: ${issue?.message ?? 'invalid'}`);
}

/** The line must be exactly the receipt's JCS text; returns the JCS text without `signature`. */
function checkCanonical(receipt: ParsedReceipt, text: string): string {
  const { unsigned, signed } = receiptTexts(receipt, receipt.signature);
  if (signed !== text) {
    throw new LineFailure('receipt_malformed', "the line is not the receipt's canonical JSON (RFC 8785 JCS) text");
  }
  return unsigned;
}

/** Verifies a receipt JSONL file, streaming it (files can be large). Throws ChioError for a file that cannot be read. */
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
  return result(verifier, null);
}

/** `line 17 (rct-…, seq 17): receipt_chain_broken: …` */
export function formatFailure(f: VerifyFailure): string {
  const shown = f.id === null && f.seq === null ? '' : ` (${f.id ?? 'no id'}, seq ${f.seq ?? '?'})`;
  return `line ${f.line}${shown}: ${f.code}: ${f.message}`;
}

function result(verifier: ReceiptChainVerifier, failure: VerifyFailure | null): VerifyResult {
  return { ok: failure === null, receipts: verifier.receipts, head: verifier.head, firstFailure: failure };
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
