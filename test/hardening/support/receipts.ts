/**
 * Receipts against answers (SPEC §6): every answered Check has exactly one receipt, found by the
 * `x-chio-receipt-id` it answered with, whose verdict and reason are the answer's, which holds no
 * secret and stays small whatever the request carried.
 */
import type { Answer } from './answers.js';

/** The members of a receipt these checks read. */
export interface ReceiptRecord {
  readonly id: string;
  readonly seq: number;
  readonly verdict: 'allow' | 'deny';
  readonly rule: string | null;
  readonly tool: string | null;
  readonly capabilityId: string | null;
  readonly policyHash: string | null;
  readonly reasons: ReadonlyArray<{ code: string; message: string }>;
  readonly timestamp: string;
  readonly runtimeAttestation: { tier: string; verifier: string | null; workloadIdentity: { uri: string; credentialKind: string } | null };
  readonly request: Record<string, string | null>;
}

/** A receipt line is ~1 KB; no request may make one larger than this. */
export const MAX_RECEIPT_LINE_BYTES = 16 * 1024;

export interface IndexedReceipt {
  readonly record: ReceiptRecord;
  readonly line: string;
}

/** Receipts by id, growing with a sink's lines; throws on a duplicate id (two receipts for one decision). */
export class ReceiptIndex {
  private readonly byId = new Map<string, IndexedReceipt>();
  private read = 0;

  /** Indexes the lines added since the last call. */
  update(lines: readonly string[]): this {
    for (; this.read < lines.length; this.read++) {
      const line = lines[this.read] as string;
      const record = JSON.parse(line) as ReceiptRecord;
      if (this.byId.has(record.id)) throw new Error(`receipt ${record.id} appears twice`);
      this.byId.set(record.id, { record, line });
    }
    return this;
  }

  get(id: string | null): IndexedReceipt | undefined {
    return id === null ? undefined : this.byId.get(id);
  }

  get size(): number {
    return this.byId.size;
  }
}

/** Receipts by id; throws on a duplicate id. */
export function indexReceipts(lines: readonly string[]): ReceiptIndex {
  return new ReceiptIndex().update(lines);
}

/** The problems of `receipt` as the record of `answer`; empty when it is. */
export function receiptMismatches(answer: Answer, entry: IndexedReceipt | undefined): string[] {
  if (entry === undefined) return [`no receipt ${String(answer.receiptId)}`];
  const { record, line } = entry;
  const problems: string[] = [];
  if (record.verdict !== answer.verdict) problems.push(`receipt verdict ${record.verdict}, answer ${answer.verdict}`);
  if ((record.reasons[0]?.code ?? null) !== answer.reason) problems.push(`receipt reason ${String(record.reasons[0]?.code)}, answer ${String(answer.reason)}`);
  const bytes = Buffer.byteLength(line, 'utf8');
  if (bytes > MAX_RECEIPT_LINE_BYTES) problems.push(`receipt is ${bytes} bytes`);
  if (answer.verdict === 'allow' && record.runtimeAttestation.workloadIdentity?.uri !== answer.workloadId) {
    problems.push(`x-chio-workload-id ${String(answer.workloadId)} is not the receipt's identity ${String(record.runtimeAttestation.workloadIdentity?.uri)}`);
  }
  return problems;
}
