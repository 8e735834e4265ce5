/**
 * Decision → Envoy CheckResponse (SPEC §3).
 *
 * Allow: status OK; `x-chio-receipt-id` and `x-chio-workload-id` set with explicit
 * `append: {value: false}` (so a client-sent value is replaced, not appended to); every other
 * client-sent `x-chio-*` header and the capability header removed; dynamic metadata.
 * Deny: PERMISSION_DENIED, HTTP 403 (401 for `identity_required`), `x-chio-receipt-id`, a JSON body
 * with the reason code. The request is never echoed back.
 */
import type { CheckInput } from './request.js';
import {
  GRPC_OK,
  GRPC_PERMISSION_DENIED,
  header,
  structOf,
  type CheckResponseMessage,
  type HeaderValueOption,
} from './envoy.js';

export const RECEIPT_HEADER = 'x-chio-receipt-id';
export const WORKLOAD_HEADER = 'x-chio-workload-id';
const OWN_PREFIX = 'x-chio-';

export interface ResponseFacts {
  readonly verdict: 'allow' | 'deny';
  readonly receiptId: string | null;
  readonly rule: string | null;
  readonly tool: string | null;
  readonly tier: string;
  readonly workloadId: string | null;
  readonly reason: string | null;
  readonly httpStatus: 401 | 403 | 503 | null;
}

export function allowResponse(facts: ResponseFacts, input: CheckInput | null, capabilityHeader: string): CheckResponseMessage {
  const headers: HeaderValueOption[] = [];
  if (facts.receiptId !== null) headers.push(header(RECEIPT_HEADER, facts.receiptId));
  if (facts.workloadId !== null) headers.push(header(WORKLOAD_HEADER, facts.workloadId));
  return {
    status: { code: GRPC_OK },
    ok_response: { headers, headers_to_remove: headersToRemove(input, capabilityHeader, headers) },
    dynamic_metadata: metadata(facts),
  };
}

export function denyResponse(facts: ResponseFacts): CheckResponseMessage {
  const body = JSON.stringify({ verdict: 'deny', reason: facts.reason, receiptId: facts.receiptId });
  const headers = [header('content-type', 'application/json')];
  if (facts.receiptId !== null) headers.push(header(RECEIPT_HEADER, facts.receiptId));
  return {
    status: { code: GRPC_PERMISSION_DENIED, message: facts.reason ?? 'denied' },
    denied_response: { status: { code: facts.httpStatus ?? 403 }, headers, body },
    dynamic_metadata: metadata(facts),
  };
}

/**
 * The capability header, and every client-sent `x-chio-*` header we do not overwrite ourselves
 * (an overwrite with `append: false` already replaces the client's value): none of them may
 * reach the upstream. `x-chio-receipt-id` / `x-chio-workload-id` are always removed when we
 * do not set them.
 */
function headersToRemove(input: CheckInput | null, capabilityHeader: string, setting: readonly HeaderValueOption[]): string[] {
  // A handful of names: arrays and `includes` instead of two Sets and a spread per Check (same order, no duplicates).
  const overwritten = (name: string): boolean => setting.some((h) => h.header.key === name);
  const out = [capabilityHeader];
  const add = (name: string): void => {
    if (!overwritten(name) && !out.includes(name)) out.push(name);
  };
  add(RECEIPT_HEADER);
  add(WORKLOAD_HEADER);
  if (input) {
    for (const name of input.headers.keys()) if (name.startsWith(OWN_PREFIX)) add(name);
  }
  return out;
}

function metadata(f: ResponseFacts): CheckResponseMessage['dynamic_metadata'] {
  const fields: Record<string, string | null> = {
    receiptId: f.receiptId,
    verdict: f.verdict,
    rule: f.rule,
    tool: f.tool,
    tier: f.tier,
    workloadId: f.workloadId,
  };
  if (f.verdict === 'deny') fields['reason'] = f.reason;
  return structOf(fields);
}
