/**
 * Decision receipts (SPEC §6; the exact format is /work/notes/receipt-v2.md and README "Receipts").
 *
 * `chio.receipt.v2`: one JSON object per decision, written as its RFC 8785 (JCS) text. Its **body**
 * (every member but `batch` and `signature`) is fixed when the decision is made: `ReceiptChain.next`
 * assigns id, seq, timestamp, chain and prevHash synchronously, in decision order. The Merkle
 * **leaf** of a receipt is the RFC 6962 leaf hash SHA-256(0x00 ‖ JCS(body)); `prevHash` names the
 * previous receipt's leaf, so the hash chain runs over bodies, never over final bytes (those depend
 * on the batch root, which depends on every receipt of the batch). Signing happens once per
 * group-commit batch (./batch.ts): one Ed25519 signature over the batch's Merkle root, and each
 * receipt carries its inclusion proof `batch: {index, proof, root, size}` — so every receipt still
 * verifies alone (./verify.ts).
 *
 * `chio.receipt.v1` receipts (Ed25519 per receipt over JCS without `signature`, prevHash = SHA-256 of
 * the previous full line) are still read and verified: files written before the upgrade, and files
 * whose v1 receipts are followed by v2 ones (the first v2 receipt names the last v1 one's hash).
 *
 * Hot path: the body text is assembled by hand from a fixed member order (JCS sorts members; ours
 * are fixed), with JSON.stringify for strings, which is exactly JCS's string form. A property test
 * proves the result equals `canonicalize` of the whole object. Saves ~10 µs per Check against
 * canonicalizing each member and joining (profile: `unsignedParts` 6.6 µs + JCS 5.8 µs).
 */
import { createHash, hash as oneShotHash } from 'node:crypto';
import type { Tier } from '../attestation/tier.js';
import { ChioError } from '../errors.js';
import type { DenyCode } from '../errors.js';
import type { WorkloadIdentity } from '../identity/identity.js';
import type { SigningKey } from '../keys.js';
import type { MatchRecord, TierMatchRecord } from '../policy/evaluate.js';
import { Sealed, sealBatch } from './batch.js';
import { jcs } from './canonical.js';
import { leafHash } from './merkle.js';
import { MonotonicUlid } from './ulid.js';

export const RECEIPT_SCHEMA = 'chio.receipt.v2';
export const RECEIPT_SCHEMA_V1 = 'chio.receipt.v1';
/** `rct-` + a ULID (Crockford base32, 26 characters). */
export const RECEIPT_ID_PATTERN = /^rct-[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
/** `chn-` + a ULID: the id of a receipt chain (one per process or worker). */
export const CHAIN_ID_PATTERN = /^chn-[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
/** `sha256:` + 64 lower-case hex digits. */
export const RECEIPT_HASH_PATTERN = /^sha256:[0-9a-f]{64}$/;

export interface ReceiptRequest {
  readonly id: string | null;
  readonly method: string | null;
  readonly host: string | null;
  readonly path: string | null;
  readonly source: string | null;
}

export interface RuntimeAttestationRecord {
  readonly tier: Tier;
  /** `envoy` when Envoy authenticated the peer; a bundle source's verifier name when we verified it; null for none */
  readonly verifier: string | null;
  readonly workloadIdentity: WorkloadIdentity | null;
}

/** What a decision contributes; the chain adds schema, chain, id, seq, timestamp, prevHash, kernelKey; the batch adds batch and signature. */
export interface ReceiptDraft {
  readonly verdict: 'allow' | 'deny';
  readonly rule: string | null;
  readonly tool: string | null;
  readonly capabilityId: string | null;
  readonly reasons: ReadonlyArray<{ readonly code: DenyCode; readonly message: string }>;
  readonly request: ReceiptRequest;
  readonly runtimeAttestation: RuntimeAttestationRecord;
  readonly workloadIdentityMatch: MatchRecord | null;
  readonly runtimeAssuranceMatch: TierMatchRecord | null;
  readonly policyHash: string | null;
}

/** Where a receipt sits in its group-commit batch, and the proof that it is there. */
export interface ReceiptBatch {
  /** 0-based leaf index in the batch */
  readonly index: number;
  /** RFC 6962 audit path of the leaf, bottom-up, lower-case hex */
  readonly proof: readonly string[];
  /** `sha256:<hex>` of the batch's Merkle tree head: what the signature covers */
  readonly root: string;
  /** receipts in the batch */
  readonly size: number;
}

/** The members the chain assigns. */
interface ChainedMembers {
  readonly id: string;
  readonly seq: number;
  readonly timestamp: string;
  /** the previous receipt's chain hash; null for seq 1 */
  readonly prevHash: string | null;
  readonly kernelKey: string;
}

/** A v2 receipt without `batch` and `signature`: what prevHash and the Merkle leaf cover. */
export interface ReceiptBody extends ReceiptDraft, ChainedMembers {
  readonly schema: typeof RECEIPT_SCHEMA;
  readonly chain: string;
}

export interface Receipt extends ReceiptBody {
  readonly batch: ReceiptBatch;
  /** `ed25519:<base64url>` over the batch statement (./batch.ts) */
  readonly signature: string;
}

/** A receipt of the first format (read and verified, never written any more). */
export interface ReceiptV1 extends ReceiptDraft, ChainedMembers {
  readonly schema: typeof RECEIPT_SCHEMA_V1;
  readonly signature: string;
}

export type AnyReceipt = Receipt | ReceiptV1;

export interface ChainHead {
  readonly seq: number;
  /** the chain hash of the last receipt: what the next receipt's prevHash must be */
  readonly hash: string;
  /** the chain id of the last receipt (absent when unknown or a v1 receipt) */
  readonly chain?: string;
}

/**
 * The members a receipt store indexes (./store.ts), taken from the draft the body text is made of,
 * so a store need not parse the text again. Equal to what `receiptColumnsOf` reads from the text.
 */
export interface ReceiptColumns {
  /** Date.parse(timestamp) */
  readonly timeMs: number;
  readonly verdict: string;
  readonly rule: string | null;
  readonly tool: string | null;
  readonly capabilityId: string | null;
  readonly workloadUri: string | null;
  readonly trustDomain: string | null;
  readonly workloadPath: string | null;
  readonly tier: string;
}

/** What the indexed columns are read from: a draft, a parsed receipt (either schema), or a row's members. */
export interface ColumnSource {
  readonly verdict: string;
  readonly rule: string | null;
  readonly tool: string | null;
  readonly capabilityId: string | null;
  readonly runtimeAttestation: {
    readonly tier: string;
    readonly workloadIdentity: { readonly uri: string; readonly trustDomain: string; readonly path: string } | null;
  };
}

/** The indexed members of a draft or a parsed receipt, with its time. */
function columnsOf(r: ColumnSource, timeMs: number): ReceiptColumns {
  const wi = r.runtimeAttestation.workloadIdentity;
  return {
    timeMs,
    verdict: r.verdict,
    rule: r.rule,
    tool: r.tool,
    capabilityId: r.capabilityId,
    workloadUri: wi?.uri ?? null,
    trustDomain: wi?.trustDomain ?? null,
    workloadPath: wi?.path ?? null,
    tier: r.runtimeAttestation.tier,
  };
}

/** The indexed members of a parsed receipt (either schema). */
export function receiptColumnsOf(r: ColumnSource & { readonly timestamp: string }): ReceiptColumns {
  return columnsOf(r, Date.parse(r.timestamp));
}

/** A receipt in its final form, as the sinks store it. */
export interface SealedReceipt {
  /** the receipt object (parsed from `jcs` on first use) */
  readonly receipt: AnyReceipt;
  readonly id: string;
  readonly seq: number;
  readonly prevHash: string | null;
  /** the receipt's full JCS text (one line of the JSONL file, without `\n`) */
  readonly jcs: string;
  /** its chain hash (`sha256:<hex>`): v2 the hex of `leaf`, v1 SHA-256 of `jcs` */
  readonly hash: string;
  /** its Merkle leaf hash (32 bytes): v2 over the body, v1 over the full line; the checkpoint leaf */
  readonly leaf: Buffer;
  /** what a store indexes (from the draft when sealed here, parsed from `jcs` otherwise) */
  readonly columns: ReceiptColumns;
}

export interface ReceiptChainOptions {
  readonly key: SigningKey;
  readonly clock: () => number;
  /** the chain continues from here; null starts a new chain at seq 1 */
  readonly head: ChainHead | null;
  /** the chain id; default: the head's, else a new random `chn-<ULID>` */
  readonly chainId?: string;
  /** injectable for tests; default `rct-` + a monotonic ULID */
  readonly newId?: () => string;
}

// ---- hashes ----

/** `sha256:` + lower-case hex SHA-256 of a text's UTF-8 bytes or of bytes. */
export function receiptHash(jcsText: string | Uint8Array): string {
  return `sha256:${createHash('sha256').update(jcsText).digest('hex')}`;
}

/** RFC 6962 leaf hash of a body text: SHA-256(0x00 ‖ UTF-8 bytes), in one call (≈0.5 µs less than an incremental hash). */
export function bodyLeaf(bodyText: string): Buffer {
  return oneShotHash('sha256', `\u0000${bodyText}`, 'buffer');
}

// ---- the body text (hand-assembled JCS) ----

/** Printable ASCII but `"` and `\`: JSON (and JCS) write such a string as it is, between quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A string member's JSON text: ~40 ns for a plain string instead of JSON.stringify's ~70–100 ns (≈1 µs per Check over ~25 members). */
function str(value: string, member: string): string {
  if (typeof value !== 'string') throw new TypeError(`receipt member ${member} must be a string, got ${typeof value}`);
  return PLAIN.test(value) ? `"${value}"` : JSON.stringify(value);
}

function nstr(value: string | null, member: string): string {
  return value === null ? 'null' : str(value, member);
}

function bool(value: boolean, member: string): string {
  if (typeof value !== 'boolean') throw new TypeError(`receipt member ${member} must be a boolean, got ${typeof value}`);
  return value ? 'true' : 'false';
}

function reasonsText(reasons: ReceiptDraft['reasons']): string {
  if (!Array.isArray(reasons)) throw new TypeError('receipt member reasons must be an array');
  if (reasons.length === 0) return '[]';
  let out = '[';
  for (let i = 0; i < reasons.length; i++) {
    const r = reasons[i] as ReceiptDraft['reasons'][number];
    out += `${i === 0 ? '' : ','}{"code":${str(r.code, 'reasons.code')},"message":${str(r.message, 'reasons.message')}}`;
  }
  return `${out}]`;
}

function requestText(r: ReceiptRequest): string {
  return `{"host":${nstr(r.host, 'request.host')},"id":${nstr(r.id, 'request.id')},"method":${nstr(r.method, 'request.method')},"path":${nstr(r.path, 'request.path')},"source":${nstr(r.source, 'request.source')}}`;
}

function attestationText(ra: RuntimeAttestationRecord): string {
  const wi = ra.workloadIdentity;
  const identity =
    wi === null
      ? 'null'
      : `{"credentialKind":${str(wi.credentialKind, 'workloadIdentity.credentialKind')},"path":${str(wi.path, 'workloadIdentity.path')},"scheme":${str(wi.scheme, 'workloadIdentity.scheme')},"trustDomain":${str(wi.trustDomain, 'workloadIdentity.trustDomain')},"uri":${str(wi.uri, 'workloadIdentity.uri')}}`;
  return `{"tier":${str(ra.tier, 'runtimeAttestation.tier')},"verifier":${nstr(ra.verifier, 'runtimeAttestation.verifier')},"workloadIdentity":${identity}}`;
}

function tierMatchText(m: TierMatchRecord | null): string {
  return m === null ? 'null' : `{"matched":${bool(m.matched, 'runtimeAssuranceMatch.matched')},"mode":${str(m.mode, 'runtimeAssuranceMatch.mode')},"tier":${str(m.tier, 'runtimeAssuranceMatch.tier')}}`;
}

function matchText(m: MatchRecord | null): string {
  return m === null ? 'null' : `{"matched":${bool(m.matched, 'workloadIdentityMatch.matched')},"mode":${str(m.mode, 'workloadIdentityMatch.mode')}}`;
}

export interface BodyMembers {
  readonly chain: string;
  readonly id: string;
  readonly seq: number;
  readonly timestamp: string;
  readonly prevHash: string | null;
  readonly kernelKey: string;
}

/**
 * The JCS text of a v2 body in two parts: through the `seq` member, and from `timestamp` on. A
 * final line puts `batch` before the first and `signature` between them (JCS member order).
 * Only the receipt's own members are read: nothing else a draft carries can reach a receipt.
 */
export function bodyTextParts(d: ReceiptDraft, c: BodyMembers): [head: string, tail: string] {
  if (!Number.isSafeInteger(c.seq) || c.seq < 1) throw new TypeError(`receipt seq must be a positive safe integer, got ${c.seq}`);
  const head =
    `{"capabilityId":${nstr(d.capabilityId, 'capabilityId')},"chain":${str(c.chain, 'chain')},"id":${str(c.id, 'id')}` +
    `,"kernelKey":${str(c.kernelKey, 'kernelKey')},"policyHash":${nstr(d.policyHash, 'policyHash')},"prevHash":${nstr(c.prevHash, 'prevHash')}` +
    `,"reasons":${reasonsText(d.reasons)},"request":${requestText(d.request)},"rule":${nstr(d.rule, 'rule')}` +
    `,"runtimeAssuranceMatch":${tierMatchText(d.runtimeAssuranceMatch)},"runtimeAttestation":${attestationText(d.runtimeAttestation)}` +
    `,"schema":"${RECEIPT_SCHEMA}","seq":${c.seq}`;
  const tail =
    `,"timestamp":${str(c.timestamp, 'timestamp')},"tool":${nstr(d.tool, 'tool')},"verdict":${str(d.verdict, 'verdict')}` +
    `,"workloadIdentityMatch":${matchText(d.workloadIdentityMatch)}}`;
  return [head, tail];
}

// ---- pending (body fixed, not yet signed) and sealed receipts ----

/** Seals a batch of pending receipts of one chain: ./batch.ts through the chain that made them. */
export interface BatchSealer {
  sealBatch(batch: readonly PendingReceipt[]): SealedReceipt[];
}

/**
 * A receipt whose body is fixed (id, seq, timestamp, prevHash, chain assigned) and whose leaf and
 * chain hash are computed, waiting for its batch to be signed. Made by `ReceiptChain.next`.
 */
export class PendingReceipt {
  constructor(
    /** the chain that made it, which signs its batch */
    readonly sealer: BatchSealer,
    readonly id: string,
    readonly seq: number,
    readonly prevHash: string | null,
    readonly chain: string,
    /** body JCS text through the `seq` member */
    readonly bodyHead: string,
    /** body JCS text from the `timestamp` member to the closing brace */
    readonly bodyTail: string,
    readonly leaf: Buffer,
    /** chain hash: `sha256:` + hex of `leaf` */
    readonly hash: string,
    /** what a store indexes */
    readonly columns: ReceiptColumns,
  ) {}

  get bodyText(): string {
    return this.bodyHead + this.bodyTail;
  }

  /** The body as an object (parsed from its text: for tests and tools, not the hot path). */
  get body(): ReceiptBody {
    return JSON.parse(this.bodyText) as ReceiptBody;
  }
}

// ---- reading receipt texts (sinks, stores, checkpoints, shippers) ----

/** What a receipt line tells without any cryptographic check. */
export interface ReceiptFacts {
  readonly schema: typeof RECEIPT_SCHEMA | typeof RECEIPT_SCHEMA_V1;
  readonly id: string;
  readonly seq: number;
  /** v2 only; null for v1 */
  readonly chain: string | null;
  readonly prevHash: string | null;
  /** the chain hash (what the next receipt's prevHash names) */
  readonly hash: string;
  /** the Merkle leaf (checkpoints, export proofs) */
  readonly leaf: Buffer;
}

function malformed(message: string): ChioError {
  return new ChioError('receipt_malformed', message);
}

/** The JCS text of a parsed v2 receipt's body (its members but `batch` and `signature`). */
export function bodyTextOf(receipt: object): string {
  const { batch, signature, ...body } = receipt as { batch?: unknown; signature?: unknown };
  void batch;
  void signature;
  return jcs(body);
}

/**
 * Facts of a receipt line (v1 or v2): seq, id, chain, prevHash, chain hash and Merkle leaf. Throws
 * ChioError('receipt_malformed') for text that is not a receipt of either schema. Nothing is
 * verified: ./verify.ts does that.
 */
export function receiptFacts(text: string | Uint8Array): ReceiptFacts {
  const line = typeof text === 'string' ? text : Buffer.from(text.buffer, text.byteOffset, text.byteLength).toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw malformed('not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('not a JSON object');
  const r = value as { schema?: unknown; id?: unknown; seq?: unknown; chain?: unknown; prevHash?: unknown };
  if (typeof r.seq !== 'number' || !Number.isSafeInteger(r.seq) || r.seq < 1) throw malformed('no valid seq');
  if (typeof r.id !== 'string') throw malformed(`receipt seq ${r.seq} has no id`);
  const prevHash = typeof r.prevHash === 'string' ? r.prevHash : null;
  if (r.schema === RECEIPT_SCHEMA) {
    if (typeof r.chain !== 'string') throw malformed(`receipt seq ${r.seq} has no chain id`);
    const leaf = bodyLeaf(bodyTextOf(value));
    return { schema: RECEIPT_SCHEMA, id: r.id, seq: r.seq, chain: r.chain, prevHash, hash: `sha256:${leaf.toString('hex')}`, leaf };
  }
  if (r.schema === RECEIPT_SCHEMA_V1) {
    const leaf = leafHash(line);
    return { schema: RECEIPT_SCHEMA_V1, id: r.id, seq: r.seq, chain: null, prevHash, hash: receiptHash(line), leaf };
  }
  throw malformed(`receipt seq ${r.seq} has schema ${JSON.stringify(r.schema)}, not ${RECEIPT_SCHEMA} or ${RECEIPT_SCHEMA_V1}`);
}

/** The chain head a receipt line names: its seq, chain hash and (v2) chain id. */
export function chainHeadOf(text: string | Uint8Array): ChainHead {
  const f = receiptFacts(text);
  return f.chain === null ? { seq: f.seq, hash: f.hash } : { seq: f.seq, hash: f.hash, chain: f.chain };
}

/** The chain hash of a receipt line (v2: its leaf; v1: SHA-256 of the line). */
export function chainHashOf(text: string | Uint8Array): string {
  return receiptFacts(text).hash;
}

/** The Merkle leaf of a receipt line: the checkpoint and export-proof leaf. */
export function receiptLeafOf(text: string | Uint8Array): Buffer {
  return receiptFacts(text).leaf;
}

/** A sealed receipt from its line (backfilling a sink from another, tools). */
export function sealedOf(text: string): SealedReceipt {
  const f = receiptFacts(text);
  return new Sealed(f.id, f.seq, f.prevHash, text, f.hash, f.leaf, null);
}

// ---- v1 (verification of old receipts) ----

/** Every member of a v1 receipt, in JCS order. */
const V1_MEMBERS = (
  [
    'schema', 'id', 'seq', 'timestamp', 'verdict', 'rule', 'tool', 'capabilityId', 'reasons', 'request',
    'runtimeAttestation', 'workloadIdentityMatch', 'runtimeAssuranceMatch', 'policyHash', 'prevHash',
    'kernelKey', 'signature',
  ] as const satisfies ReadonlyArray<keyof ReceiptV1>
).slice().sort();
type UnsignedV1Member = Exclude<keyof ReceiptV1, 'signature'>;
/** Every member of a v1 receipt but `signature`, of any type (a parsed, already validated receipt fits too). */
export type UnsignedReceiptMembers = { readonly [K in UnsignedV1Member]: unknown };
const V1_SIGNATURE_AT = V1_MEMBERS.indexOf('signature');

/**
 * The JCS texts of a v1 receipt without and with its signature (the v1 signing input and line).
 * Kept for verifying v1 files and for tools that make v1 fixtures.
 */
export function receiptTexts(receipt: UnsignedReceiptMembers, signature: string): { unsigned: string; signed: string } {
  let head = '{';
  let tail = '';
  V1_MEMBERS.forEach((name, i) => {
    if (name === 'signature') return;
    const value: unknown = receipt[name];
    if (value === undefined) throw new TypeError(`receipt member ${name} is undefined`);
    const text = `${i === 0 ? '' : ','}${JSON.stringify(name)}:${jcs(value)}`;
    if (i < V1_SIGNATURE_AT) head += text;
    else tail += text;
  });
  return { unsigned: `${head}${tail}}`, signed: `${head},"signature":${JSON.stringify(signature)}${tail}}` };
}

// ---- the chain ----

function checkHead(head: ChainHead | null): ChainHead | null {
  if (head === null) return null;
  if (!Number.isSafeInteger(head.seq) || head.seq < 1 || !RECEIPT_HASH_PATTERN.test(head.hash)) {
    throw new TypeError(`not a chain head: ${JSON.stringify(head)}`);
  }
  if (head.chain !== undefined && !CHAIN_ID_PATTERN.test(head.chain)) throw new TypeError(`not a chain id: ${JSON.stringify(head.chain)}`);
  return { seq: head.seq, hash: head.hash };
}

/** A new random chain id `chn-<ULID>` stamped with `now`. */
export function newChainId(now: number): string {
  return `chn-${new MonotonicUlid().next(now)}`;
}

/**
 * The sequencer and signer of one receipt chain. `next()` fixes a receipt's body synchronously
 * (decision order = chain order) and advances the head; the writer seals each group-commit batch
 * with `sealBatch()` (one signature per batch).
 */
export class ReceiptChain implements BatchSealer {
  readonly #key: SigningKey;
  readonly #clock: () => number;
  readonly #newId: (now: number) => string;
  readonly #chainId: string;
  #head: ChainHead | null;
  /** the last timestamp text and the millisecond it is for (one toISOString per millisecond) */
  #stampMs = Number.NaN;
  #stamp = '';
  /** Date.parse(#stamp): the store's time column */
  #stampTimeMs = Number.NaN;

  constructor(options: ReceiptChainOptions) {
    this.#key = options.key;
    this.#clock = options.clock;
    this.#head = checkHead(options.head);
    const chainId = options.chainId ?? options.head?.chain ?? newChainId(Math.max(0, Math.floor(Date.now())));
    if (!CHAIN_ID_PATTERN.test(chainId)) throw new TypeError(`not a chain id: ${JSON.stringify(chainId)}`);
    this.#chainId = chainId;
    const custom = options.newId;
    if (custom) {
      this.#newId = () => custom();
    } else {
      const ulid = new MonotonicUlid();
      this.#newId = (now) => `rct-${ulid.next(now)}`;
    }
  }

  get chainId(): string {
    return this.#chainId;
  }

  /** The last receipt made (with the chain id), or null before the first. */
  get head(): ChainHead | null {
    const h = this.#head;
    return h === null ? null : { seq: h.seq, hash: h.hash, chain: this.#chainId };
  }

  /**
   * Fixes the next receipt's body (id, seq, timestamp, prevHash) and advances the head. No
   * signing here: the writer signs its batch. Throws (and does not advance) for a clock value
   * that is not a time, or a draft member of the wrong type.
   */
  next(draft: ReceiptDraft): PendingReceipt {
    const now = this.#clock();
    const timestamp = this.#timestamp(now);
    const prev = this.#head;
    const seq = prev === null ? 1 : prev.seq + 1;
    const prevHash = prev === null ? null : prev.hash;
    const id = this.#newId(now);
    const [head, tail] = bodyTextParts(draft, { chain: this.#chainId, id, seq, timestamp, prevHash, kernelKey: this.#key.kid });
    const leaf = bodyLeaf(head + tail);
    const hash = `sha256:${leaf.toString('hex')}`;
    this.#head = { seq, hash };
    return new PendingReceipt(this, id, seq, prevHash, this.#chainId, head, tail, leaf, hash, columnsOf(draft, this.#stampTimeMs));
  }

  /** Signs a batch this chain made (consecutive, in order): one signature, one proof per receipt. */
  sealBatch(batch: readonly PendingReceipt[]): SealedReceipt[] {
    for (const p of batch) if (p.sealer !== this) throw new TypeError(`receipt seq ${p.seq} was not made by this chain`);
    return sealBatch(batch, this.#key);
  }

  /** `next` and seal it alone (a batch of one): for tools and tests; the service seals through the writer. */
  seal(draft: ReceiptDraft): SealedReceipt {
    const sealed = this.sealBatch([this.next(draft)])[0];
    if (sealed === undefined) throw new TypeError('sealBatch returned nothing');
    return sealed;
  }

  /** Rewinds to a durable head after a failed write (the lost receipts were never acknowledged). The chain id stays. */
  reset(head: ChainHead | null): void {
    this.#head = checkHead(head);
  }

  /** toISOString once per millisecond (it allocates a Date): ≈0.3 µs per Check. Throws RangeError for a non-time. */
  #timestamp(now: number): string {
    if (now !== this.#stampMs) {
      this.#stamp = new Date(now).toISOString();
      this.#stampTimeMs = Date.parse(this.#stamp);
      this.#stampMs = now;
    }
    return this.#stamp;
  }
}
