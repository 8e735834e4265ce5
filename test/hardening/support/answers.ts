/**
 * The invariants every CheckResponse must satisfy (SPEC §3), whatever the request was:
 *
 * - allow: `status.code` 0, an `ok_response` only, the headers it sets are exactly chio's own
 *   (`x-chio-receipt-id`, `x-chio-workload-id`) with `append: false`, the capability header and
 *   every client-sent `x-chio-*` header it does not overwrite are in `headers_to_remove`;
 * - deny: `status.code` 7 with `status.message` = the reason, a `denied_response` only, HTTP 401
 *   or 403, a JSON body of exactly `{verdict, reason, receiptId}` (never an echo of the request),
 *   the reason one of errors.ts DENY_CODES.
 *
 * Works on both shapes: the pipeline's own message (HTTP status a number) and what a grpc-js
 * client decodes with proto-loader (enums as names: `Forbidden`, `Unauthorized`).
 */
import type { CheckResponseMessage, RawCheckRequest } from '../../../src/check/envoy.js';
import { isDenyCode } from '../../../src/errors.js';
import { RECEIPT_ID_PATTERN } from '../../../src/receipt/receipt.js';

export const RECEIPT_HEADER = 'x-chio-receipt-id';
export const WORKLOAD_HEADER = 'x-chio-workload-id';
export const CAPABILITY_HEADER = 'x-chio-capability';

export interface Answer {
  readonly verdict: 'allow' | 'deny';
  readonly reason: string | null;
  readonly receiptId: string | null;
  readonly workloadId: string | null;
  readonly httpStatus: 401 | 403 | null;
  readonly headersToRemove: readonly string[];
}

const HTTP_STATUS: Readonly<Record<string, 401 | 403>> = { '401': 401, '403': 403, Unauthorized: 401, Forbidden: 403 };

class AnswerViolation extends Error {
  constructor(message: string, res: unknown) {
    super(`${message}; response: ${JSON.stringify(res).slice(0, 600)}`);
    this.name = 'AnswerViolation';
  }
}

function headerList(list: unknown, res: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (!Array.isArray(list)) throw new AnswerViolation('headers is not a list', res);
  for (const h of list as Array<{ header?: { key?: unknown; value?: unknown }; append?: { value?: unknown } }>) {
    const key = h.header?.key;
    const value = h.header?.value;
    if (typeof key !== 'string' || typeof value !== 'string') throw new AnswerViolation('a header without key or value', res);
    if (h.append?.value !== false) throw new AnswerViolation(`header ${key} is not set with an explicit append: false`, res);
    if (out.has(key)) throw new AnswerViolation(`header ${key} set twice`, res);
    out.set(key, value);
  }
  return out;
}

function receiptIdOf(headers: Map<string, string>, res: unknown): string | null {
  const id = headers.get(RECEIPT_HEADER) ?? null;
  if (id !== null && !RECEIPT_ID_PATTERN.test(id)) throw new AnswerViolation(`receipt id ${id} is not rct-<ULID>`, res);
  return id;
}

/** Reads a CheckResponse, throwing an AnswerViolation for anything SPEC §3 does not allow. */
export function readAnswer(res: CheckResponseMessage): Answer {
  const code = res.status?.code;
  if (code === 0) return readAllow(res);
  if (code === 7) return readDeny(res);
  throw new AnswerViolation(`status.code ${String(code)} is neither OK (0) nor PERMISSION_DENIED (7)`, res);
}

function readAllow(res: CheckResponseMessage): Answer {
  const ok = res.ok_response;
  if (!ok || res.denied_response) throw new AnswerViolation('an allow must carry ok_response and no denied_response', res);
  const headers = headerList(ok.headers ?? [], res);
  for (const key of headers.keys()) {
    if (key !== RECEIPT_HEADER && key !== WORKLOAD_HEADER) throw new AnswerViolation(`an allow sets header ${key}`, res);
  }
  const remove = ok.headers_to_remove ?? [];
  if (!remove.includes(CAPABILITY_HEADER)) throw new AnswerViolation('the capability header is not removed', res);
  return {
    verdict: 'allow',
    reason: null,
    receiptId: receiptIdOf(headers, res),
    workloadId: headers.get(WORKLOAD_HEADER) ?? null,
    httpStatus: null,
    headersToRemove: remove,
  };
}

function readDeny(res: CheckResponseMessage): Answer {
  const denied = res.denied_response;
  if (!denied || res.ok_response) throw new AnswerViolation('a deny must carry denied_response and no ok_response', res);
  const httpStatus = HTTP_STATUS[String(denied.status?.code)];
  if (httpStatus === undefined) throw new AnswerViolation(`denied HTTP status ${String(denied.status?.code)} is neither 401 nor 403`, res);
  let body: unknown;
  try {
    body = JSON.parse(denied.body);
  } catch {
    throw new AnswerViolation('the deny body is not JSON', res);
  }
  const { verdict, reason, receiptId, ...extra } = body as { verdict?: unknown; reason?: unknown; receiptId?: unknown };
  if (Object.keys(extra).length > 0) throw new AnswerViolation(`the deny body has extra members ${Object.keys(extra).join(',')}`, res);
  if (verdict !== 'deny') throw new AnswerViolation('the deny body verdict is not "deny"', res);
  if (typeof reason !== 'string' || !isDenyCode(reason)) throw new AnswerViolation(`reason ${String(reason)} is not a deny code`, res);
  if (res.status.message !== reason) throw new AnswerViolation('status.message differs from the body reason', res);
  if ((reason === 'identity_required') !== (httpStatus === 401)) throw new AnswerViolation('401 is for identity_required only', res);
  const headers = headerList(denied.headers ?? [], res);
  for (const key of headers.keys()) {
    if (key !== RECEIPT_HEADER && key !== 'content-type') throw new AnswerViolation(`a deny sets header ${key}`, res);
  }
  const id = receiptIdOf(headers, res);
  if (receiptId !== id) throw new AnswerViolation('the body receiptId differs from the x-chio-receipt-id header', res);
  return { verdict: 'deny', reason, receiptId: id, workloadId: null, httpStatus, headersToRemove: [] };
}

/** Lower-cased names of every header the client sent (`headers` and `header_map`). */
export function clientHeaderNames(raw: RawCheckRequest | null | undefined): Set<string> {
  const names = new Set<string>();
  const http = raw?.attributes?.request?.http;
  if (!http || typeof http !== 'object') return names;
  if (http.headers && typeof http.headers === 'object') for (const k of Object.keys(http.headers)) names.add(k.toLowerCase());
  const list = http.header_map?.headers;
  if (Array.isArray(list)) for (const h of list) if (h && typeof h.key === 'string' && h.key !== '') names.add(h.key.toLowerCase());
  return names;
}

/**
 * An allow must strip every client-sent `x-chio-*` header it does not overwrite itself, and the
 * capability header. Returns the names that would reach the upstream unstripped (must be empty).
 */
export function unstrippedChioHeaders(answer: Answer, raw: RawCheckRequest | null | undefined): string[] {
  if (answer.verdict !== 'allow') return [];
  const overwritten = new Set([RECEIPT_HEADER, ...(answer.workloadId === null ? [] : [WORKLOAD_HEADER])]);
  const removed = new Set(answer.headersToRemove);
  return [...clientHeaderNames(raw)].filter(
    (name) => (name.startsWith('x-chio-') || name === CAPABILITY_HEADER) && !overwritten.has(name) && !removed.has(name),
  );
}
