/**
 * Decision receipts (SPEC §6): one JSON object per decision, Ed25519 (RFC 8032) over the RFC 8785
 * (JCS) bytes without `signature`, hash-chained by `prevHash` over the previous receipt's full
 * JCS bytes. `kernelKey` is the RFC 7638 thumbprint of the signing key.
 *
 * `seal` is on the hot path of every Check: each top-level member is canonicalized once and the
 * two texts (without and with `signature`) are assembled from the sorted member strings, so the
 * JCS work is done once (a property test proves the result equals JCS of the whole object).
 */
import { createHash } from 'node:crypto';
import { monotonicFactory } from 'ulid';
import type { Tier } from '../attestation/tier.js';
import type { DenyCode } from '../errors.js';
import type { WorkloadIdentity } from '../identity/identity.js';
import type { SigningKey } from '../keys.js';
import type { MatchRecord, TierMatchRecord } from '../policy/evaluate.js';
import { jcs } from './canonical.js';

export const RECEIPT_SCHEMA = 'chio.receipt.v1';
/** `rct-` + a ULID (Crockford base32, 26 characters). */
export const RECEIPT_ID_PATTERN = /^rct-[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
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

/** What a decision contributes; the chain adds id, seq, timestamp, prevHash, kernelKey, signature. */
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

export interface Receipt extends ReceiptDraft {
  readonly schema: typeof RECEIPT_SCHEMA;
  readonly id: string;
  readonly seq: number;
  readonly timestamp: string;
  readonly prevHash: string | null;
  readonly kernelKey: string;
  readonly signature: string;
}

export interface ChainHead {
  readonly seq: number;
  /** `sha256:<hex>` of the last receipt's full JCS bytes */
  readonly hash: string;
}

export interface SealedReceipt {
  readonly receipt: Receipt;
  /** the receipt's full JCS text (signature included), no trailing newline */
  readonly jcs: string;
  /** `sha256:<hex>` of `jcs` */
  readonly hash: string;
}

export interface ReceiptChainOptions {
  readonly key: SigningKey;
  readonly clock: () => number;
  /** the chain continues from here; null starts a new chain at seq 1 */
  readonly head: ChainHead | null;
  /** injectable for tests; default `rct-` + ULID */
  readonly newId?: () => string;
}

/** Every member of a receipt, in JCS order (UTF-16 code unit order, as Array#sort compares). */
const MEMBERS = (
  [
    'schema', 'id', 'seq', 'timestamp', 'verdict', 'rule', 'tool', 'capabilityId', 'reasons', 'request',
    'runtimeAttestation', 'workloadIdentityMatch', 'runtimeAssuranceMatch', 'policyHash', 'prevHash',
    'kernelKey', 'signature',
  ] as const satisfies ReadonlyArray<keyof Receipt>
).slice().sort();
type UnsignedMember = Exclude<keyof Receipt, 'signature'>;
/** Every member of a receipt but `signature`, of any type (a parsed, already validated receipt fits too). */
export type UnsignedReceiptMembers = { readonly [K in UnsignedMember]: unknown };
// Compile-time proof that MEMBERS names every member of Receipt.
const allMembersListed: [Exclude<keyof Receipt, (typeof MEMBERS)[number]>] extends [never] ? true : never = true;
void allMembersListed;

const SIGNATURE_INDEX = MEMBERS.indexOf('signature');
if (SIGNATURE_INDEX < 1) throw new TypeError('receipt members: `signature` must not sort first');
/** Members sorting before `signature`, each with its `"name":` prefix (the first without a comma). */
const BEFORE_SIGNATURE = MEMBERS.slice(0, SIGNATURE_INDEX).map((name, i) => ({
  name: name as UnsignedMember,
  prefix: `${i === 0 ? '' : ','}${JSON.stringify(name)}:`,
}));
const AFTER_SIGNATURE = MEMBERS.slice(SIGNATURE_INDEX + 1).map((name) => ({
  name: name as UnsignedMember,
  prefix: `,${JSON.stringify(name)}:`,
}));
const SIGNATURE_PREFIX = ',"signature":';

/** `sha256:` + lower-case hex SHA-256 of a receipt's JCS text or bytes (its chain hash). */
export function receiptHash(jcsText: string | Uint8Array): string {
  return `sha256:${createHash('sha256').update(jcsText).digest('hex')}`;
}

/** The JCS texts of a receipt without and with its signature, from one canonicalization per member. */
export function receiptTexts(receipt: UnsignedReceiptMembers, signature: string): { unsigned: string; signed: string } {
  const [head, tail] = unsignedParts(receipt);
  return { unsigned: head + tail, signed: head + SIGNATURE_PREFIX + JSON.stringify(signature) + tail };
}

/** `{…members before "signature"` and `,…members after it}`: joined they are the unsigned JCS text. */
function unsignedParts(receipt: UnsignedReceiptMembers): [string, string] {
  let head = '{';
  for (const m of BEFORE_SIGNATURE) head += m.prefix + memberText(receipt, m.name);
  let tail = '';
  for (const m of AFTER_SIGNATURE) tail += m.prefix + memberText(receipt, m.name);
  return [head, `${tail}}`];
}

function memberText(receipt: UnsignedReceiptMembers, name: UnsignedMember): string {
  const value: unknown = receipt[name];
  if (value === undefined) throw new TypeError(`receipt member ${name} is undefined`);
  return jcs(value);
}

function checkHead(head: ChainHead | null): ChainHead | null {
  if (head === null) return null;
  if (!Number.isSafeInteger(head.seq) || head.seq < 1 || !RECEIPT_HASH_PATTERN.test(head.hash)) {
    throw new TypeError(`not a chain head: ${JSON.stringify(head)}`);
  }
  return { seq: head.seq, hash: head.hash };
}

/** Copies exactly the receipt's members out of a draft, so nothing else the caller's objects carry can leak into a receipt. */
function draftMembers(d: ReceiptDraft): ReceiptDraft {
  const ra = d.runtimeAttestation;
  const wi = ra.workloadIdentity;
  const r = d.request;
  const wim = d.workloadIdentityMatch;
  const ram = d.runtimeAssuranceMatch;
  return {
    verdict: d.verdict,
    rule: d.rule,
    tool: d.tool,
    capabilityId: d.capabilityId,
    reasons: d.reasons.map((x) => ({ code: x.code, message: x.message })),
    request: { id: r.id, method: r.method, host: r.host, path: r.path, source: r.source },
    runtimeAttestation: {
      tier: ra.tier,
      verifier: ra.verifier,
      workloadIdentity:
        wi === null
          ? null
          : { scheme: wi.scheme, credentialKind: wi.credentialKind, uri: wi.uri, trustDomain: wi.trustDomain, path: wi.path },
    },
    workloadIdentityMatch: wim === null ? null : { mode: wim.mode, matched: wim.matched },
    runtimeAssuranceMatch: ram === null ? null : { mode: ram.mode, tier: ram.tier, matched: ram.matched },
    policyHash: d.policyHash,
  };
}

export class ReceiptChain {
  readonly #key: SigningKey;
  readonly #clock: () => number;
  readonly #newId: (now: number) => string;
  #head: ChainHead | null;

  constructor(options: ReceiptChainOptions) {
    this.#key = options.key;
    this.#clock = options.clock;
    this.#head = checkHead(options.head);
    const custom = options.newId;
    if (custom) {
      this.#newId = () => custom();
    } else {
      const ulid = monotonicFactory();
      this.#newId = (now) => `rct-${ulid(now)}`;
    }
  }

  /** Synchronously assigns id/seq/timestamp/prevHash, signs and advances the head. */
  seal(draft: ReceiptDraft): SealedReceipt {
    const now = this.#clock();
    const prev = this.#head;
    const receipt: { -readonly [K in keyof Receipt]: Receipt[K] } = {
      schema: RECEIPT_SCHEMA,
      id: this.#newId(now),
      seq: prev === null ? 1 : prev.seq + 1,
      timestamp: new Date(now).toISOString(),
      ...draftMembers(draft),
      prevHash: prev === null ? null : prev.hash,
      kernelKey: this.#key.kid,
      signature: '',
    };
    const [head, tail] = unsignedParts(receipt);
    const signature = `ed25519:${this.#key.sign(Buffer.from(head + tail, 'utf8')).toString('base64url')}`;
    receipt.signature = signature;
    const text = head + SIGNATURE_PREFIX + JSON.stringify(signature) + tail;
    const hash = receiptHash(text);
    this.#head = { seq: receipt.seq, hash };
    return { receipt, jcs: text, hash };
  }

  get head(): ChainHead | null {
    return this.#head;
  }

  /** Rewinds to a durable head after a failed write (the lost receipts were never acknowledged). */
  reset(head: ChainHead | null): void {
    this.#head = checkHead(head);
  }
}
