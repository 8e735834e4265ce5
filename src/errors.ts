/**
 * The one vocabulary of failure in chio-authz.
 *
 * Every failure kind has a stable string `code`. The same code is the deny reason on the wire
 * (SPEC §3), the receipt reason (SPEC §6), the `reason` label of `chio_admissions_total`
 * (SPEC §8), the CLI's exit message and the HTTP API's `error.code`. Codes never change
 * meaning; new failure kinds get new codes.
 *
 * Programmer errors (a function called with the wrong kind of argument) are plain `TypeError`s
 * and never carry a code.
 */

/** Codes a Check decision can carry as its deny reason. Bounded: safe as a metric label. */
export const DENY_CODES = [
  // request shape
  'malformed_request', //          CheckRequest missing attributes, or a field of the wrong shape
  // presented identity (SPEC §4)
  'identity_required', //          the rule requires a workload identity and none was presented (HTTP 401)
  'malformed_certificate', //      source.certificate is not a URL-encoded PEM X.509 certificate
  'malformed_spiffe_id', //        a SPIFFE ID that breaks the SPIFFE-ID standard
  'principal_not_spiffe', //       source.principal is a DNS name or an RFC 2253 subject, not a SPIFFE ID
  'svid_no_uri_san', //            certificate has no SAN at all: not an X509-SVID
  'svid_dns_san_only', //          certificate has DNS SANs but no URI SAN: not an X509-SVID
  'svid_multiple_uri_sans', //     X509-SVID §4.1: exactly one URI SAN
  'svid_is_ca', //                 X509-SVID §4.1: a leaf must have CA=false
  'svid_key_usage', //             X509-SVID §4.3: keyCertSign/cRLSign set, or digitalSignature missing
  'svid_expired', //               notAfter is before the decision time
  'svid_not_yet_valid', //         notBefore is after the decision time
  'identity_conflict', //          certificate and principal (or other sources) name different IDs
  'untrusted_svid', //             chain does not verify against the bundle of the ID's trust domain
  'unknown_trust_domain', //       no bundle for the trust domain and require_known_trust_domain is set
  'bundle_expired', //             the only bundle for the trust domain has expired
  'malformed_xfcc', //             x-forwarded-client-cert could not be parsed
  'jwt_svid_invalid', //           JWT-SVID malformed, bad signature, bad claims
  'jwt_svid_expired', //           JWT-SVID exp in the past
  'jwt_svid_audience_mismatch', // aud does not contain the configured audience exactly
  'jwt_svid_alg_not_allowed', //   alg outside the allow-list (none, HS*, …)
  'jwt_svid_unknown_key', //       kid not in the JWT bundle of the sub's trust domain
  // policy (SPEC §5)
  'no_matching_rule', //           no rule governs the request and defaults.unmatched is deny
  'unknown_rule', //               context_extensions.chio_rule names no rule
  'rule_disabled', //              context_extensions.chio_rule names a disabled rule
  'tool_blocked', //               the tool is on the rule's block list
  'tool_not_allowed', //           the tool is not on the allow list and the rule's default is block
  'workload_trust_domain_mismatch', // require_workload_identity: wrong trust domain
  'workload_path_mismatch', //     require_workload_identity: path under none of the prefixes
  'workload_credential_kind_not_allowed', // require_workload_identity: credential kind not listed
  'workload_scheme_mismatch', //   require_workload_identity: scheme other than the required one
  'runtime_assurance_insufficient', // require_runtime_assurance_tier not met
  'ambiguous_path', //             read as another server may (%2F, %5C, \ as /; ;params dropped), another rule or tool
  // capabilities (SPEC §7)
  'capability_required',
  'capability_malformed',
  'capability_bad_signature',
  'capability_unknown_issuer',
  'capability_not_yet_valid',
  'capability_expired',
  'capability_tool_not_in_scope',
  'capability_revoked',
  'capability_workload_mismatch',
  'capability_credential_kind_weaker',
  'capability_tier_insufficient',
  // the service itself
  'receipt_unavailable', //        the receipt could not be made durable and on_failure is deny
  'overloaded', //                 shed under load
  'internal_error', //             anything unexpected; still a deny with a receipt
] as const;

export type DenyCode = (typeof DENY_CODES)[number];

/** Codes for failures outside a Check decision: configuration, files, CLI, API. */
export const OPERATION_CODES = [
  'usage', //                     bad command line
  'config_invalid', //            chio.yaml fails its schema or cannot be read
  'policy_invalid', //            policy YAML fails its schema or cannot be read
  'key_invalid', //               a seed/key file is malformed
  'key_permissions', //           a seed file readable by group or others
  'file_not_found',
  'io_error',
  'receipt_malformed', //         a receipt line is not valid JSON or misses fields
  'receipt_bad_signature', //     signature does not verify
  'receipt_chain_broken', //      prevHash or seq does not follow from the previous receipt
  'receipt_torn_tail', //         the last line of a JSONL file is incomplete (crash mid-write)
  'receipt_not_found',
  'unauthorized', //              admin API without a valid Bearer token
  'body_too_large',
  'bad_request',
  'not_found',
  'issuance_refused', //          capability issuance refused (conflict, ceiling, malformed input)
] as const;

export type OperationCode = (typeof OPERATION_CODES)[number];

export type ChioErrorCode = DenyCode | OperationCode;

const DENY_SET: ReadonlySet<string> = new Set(DENY_CODES);

export function isDenyCode(code: string): code is DenyCode {
  return DENY_SET.has(code);
}

export interface ChioErrorOptions {
  cause?: unknown;
  /** For input errors: the field, parameter or YAML path at fault. */
  field?: string;
}

/** The base class of every expected failure. `code` is stable; `message` is for people. */
export class ChioError<C extends ChioErrorCode = ChioErrorCode> extends Error {
  readonly code: C;
  readonly field: string | undefined;

  constructor(code: C, message: string, options: ChioErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ChioError';
    this.code = code;
    this.field = options.field;
  }

  toJSON(): { code: C; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

/** A failure on the Check path: always becomes a deny with this code. */
export class DenyError extends ChioError<DenyCode> {}

export function deny(code: DenyCode, message: string, options?: ChioErrorOptions): DenyError {
  return new DenyError(code, message, options);
}

/** A short, safe description of anything thrown (never a stack, never an object dump). */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
