/**
 * Verification of capability tokens (SPEC §7 "At Check"), in two parts:
 *
 * 1. {@link CapabilityVerifier.authenticate}: strict decoding, issuer lookup among the trusted
 *    authority keys (chio.yaml `capabilities.authorities`, by RFC 7638 kid) and the Ed25519
 *    signature. The verdict only depends on the header string and the (fixed) key set, so
 *    verified tokens are cached by header string in a bounded LRU: a repeated token costs one
 *    Map lookup, not an Ed25519 verify (~160 µs). Failures are not cached (only a forger or a
 *    broken client produces them, and caching them would let junk evict good entries).
 * 2. {@link checkGrant}: everything that depends on the request and the moment, run on every
 *    request: time window (30 s skew), revocation, tool in scope, workload binding, tier.
 *
 * Order, first failure wins (each its own deny code):
 *   capability_malformed → capability_unknown_issuer → capability_bad_signature →
 *   capability_not_yet_valid → capability_expired → capability_revoked →
 *   capability_tool_not_in_scope → capability_workload_mismatch (the presented SPIFFE ID is not
 *   EXACTLY the bound uri, or no identity was presented) → capability_credential_kind_weaker
 *   (same ID, weaker credential: uri < jwt_svid < x509_svid) → capability_tier_insufficient.
 */
import { tierSatisfies, type Tier } from '../attestation/tier.js';
import { DenyError, type DenyCode } from '../errors.js';
import { credentialKindStrength, type WorkloadIdentity } from '../identity/identity.js';
import type { PublicKeyInfo } from '../keys.js';
import { decodeCapability, signatureValid, type ParsedCapability } from './token.js';

/** Clock skew tolerated on both ends of the validity window. */
export const CAPABILITY_SKEW_MS = 30_000;
export const DEFAULT_CAPABILITY_CACHE_SIZE = 10_000;

export interface CapabilityFailure {
  readonly code: DenyCode;
  readonly message: string;
}

export type Authentication =
  | { readonly ok: true; readonly token: ParsedCapability }
  /** `token` is set when the header decoded but the issuer or signature failed */
  | { readonly ok: false; readonly token: ParsedCapability | null; readonly failure: CapabilityFailure };

export interface CapabilityVerifierOptions {
  /** the trusted authority public keys */
  readonly authorities: readonly PublicKeyInfo[];
  /** bound of the verified-token cache (default 10 000) */
  readonly cacheSize?: number;
}

export class CapabilityVerifier {
  private readonly keys: ReadonlyMap<string, PublicKeyInfo>;
  private readonly verified = new Map<string, ParsedCapability>();
  private readonly maxEntries: number;

  constructor(options: CapabilityVerifierOptions) {
    this.keys = new Map(options.authorities.map((k) => [k.kid, k]));
    this.maxEntries = options.cacheSize ?? DEFAULT_CAPABILITY_CACHE_SIZE;
    if (!Number.isSafeInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new TypeError(`CapabilityVerifier cacheSize must be a positive integer, got ${this.maxEntries}`);
    }
  }

  get cacheEntries(): number {
    return this.verified.size;
  }

  /** Decoding, issuer and signature of a header value; cached for verified tokens. Never throws a DenyError. */
  authenticate(header: string): Authentication {
    const hit = this.verified.get(header);
    if (hit !== undefined) {
      this.verified.delete(header);
      this.verified.set(header, hit);
      return { ok: true, token: hit };
    }
    let token: ParsedCapability;
    try {
      token = decodeCapability(header);
    } catch (err) {
      if (!(err instanceof DenyError)) throw err;
      return { ok: false, token: null, failure: { code: err.code, message: err.message } };
    }
    const key = this.keys.get(token.capability.issuer);
    if (key === undefined) {
      return fail(token, 'capability_unknown_issuer', `capability issuer ${token.capability.issuer} is not a trusted authority key`);
    }
    if (!signatureValid(token.capability, key.publicKey)) {
      return fail(token, 'capability_bad_signature', `capability signature does not verify with the key of issuer ${token.capability.issuer}`);
    }
    this.remember(header, token);
    return { ok: true, token };
  }

  /** The id of a decodable token, without checking issuer or signature (a cached token costs a Map lookup). */
  idOf(header: string): string | null {
    const hit = this.verified.get(header);
    if (hit !== undefined) return hit.capability.id;
    try {
      return decodeCapability(header).capability.id;
    } catch (err) {
      if (err instanceof DenyError) return null;
      throw err;
    }
  }

  private remember(header: string, token: ParsedCapability): void {
    this.verified.set(header, token);
    if (this.verified.size > this.maxEntries) {
      const oldest = this.verified.keys().next();
      if (oldest.done !== true) this.verified.delete(oldest.value);
    }
  }
}

/** What one request presents, and the moment it is decided at. */
export interface GrantContext {
  readonly now: number;
  /** the tool the policy resolved for the request; null when it maps to no tool */
  readonly tool: string | null;
  readonly identity: WorkloadIdentity | null;
  readonly tier: Tier;
  readonly isRevoked: (id: string) => boolean;
}

/** The per-request checks of an authenticated token; null when it grants this request. */
export function checkGrant(token: ParsedCapability, ctx: GrantContext): CapabilityFailure | null {
  return (
    checkWindow(token, ctx.now) ??
    checkRevoked(token, ctx) ??
    checkTool(token, ctx.tool) ??
    checkWorkload(token, ctx.identity) ??
    checkTier(token, ctx.tier)
  );
}

export function checkWindow(token: ParsedCapability, now: number): CapabilityFailure | null {
  const c = token.capability;
  // Written so that every comparison must hold to grant: a decision time that is not a number
  // (NaN) fails them all and denies, where `now + skew < issuedAt` alone would be false and pass.
  if (!(now + CAPABILITY_SKEW_MS >= token.issuedAtMs)) {
    return { code: 'capability_not_yet_valid', message: `capability ${c.id} is not valid before ${c.issuedAt}` };
  }
  if (!(now - CAPABILITY_SKEW_MS < token.expiresAtMs)) {
    return { code: 'capability_expired', message: `capability ${c.id} expired at ${c.expiresAt}` };
  }
  return null;
}

function checkRevoked(token: ParsedCapability, ctx: GrantContext): CapabilityFailure | null {
  const id = token.capability.id;
  return ctx.isRevoked(id) ? { code: 'capability_revoked', message: `capability ${id} is revoked` } : null;
}

export function checkTool(token: ParsedCapability, tool: string | null): CapabilityFailure | null {
  const c = token.capability;
  if (tool === null) {
    return { code: 'capability_tool_not_in_scope', message: `the request maps to no tool; capability ${c.id} grants only named tools` };
  }
  return c.tools.includes(tool)
    ? null
    : { code: 'capability_tool_not_in_scope', message: `tool ${JSON.stringify(tool)} is not in the scope of capability ${c.id}` };
}

/** Workload binding: the presented SPIFFE ID exactly the bound uri, then a credential at least as strong. */
export function checkWorkload(token: ParsedCapability, identity: WorkloadIdentity | null): CapabilityFailure | null {
  const { id, constraints } = token.capability;
  const bound = constraints.workloadIdentity;
  if (bound === undefined) return null;
  if (identity === null) {
    return { code: 'capability_workload_mismatch', message: `capability ${id} is bound to ${bound.uri} and no workload identity was presented` };
  }
  if (identity.uri !== bound.uri) {
    return { code: 'capability_workload_mismatch', message: `capability ${id} is bound to ${bound.uri}, not to ${identity.uri}` };
  }
  if (credentialKindStrength(identity.credentialKind) < credentialKindStrength(bound.credentialKind)) {
    return {
      code: 'capability_credential_kind_weaker',
      message: `capability ${id} is bound to a ${bound.credentialKind} credential; ${identity.credentialKind} is weaker`,
    };
  }
  return null;
}

/** The presented tier at or above the stamped `minimumRuntimeAssuranceTier`. */
export function checkTier(token: ParsedCapability, tier: Tier): CapabilityFailure | null {
  const { id, constraints } = token.capability;
  const minimum = constraints.minimumRuntimeAssuranceTier;
  if (minimum === undefined || tierSatisfies(tier, minimum)) return null;
  return { code: 'capability_tier_insufficient', message: `capability ${id} needs runtime assurance tier ${minimum}; the request has ${tier}` };
}

function fail(token: ParsedCapability, code: DenyCode, message: string): Authentication {
  return { ok: false, token, failure: { code, message } };
}
