/**
 * The capability token, `chio.capability.v1` (SPEC §7, §2 names): its exact shape, its signature
 * and its wire form.
 *
 * ```json
 * {"schema":"chio.capability.v1","id":"cap-<ULID>","issuer":"<RFC 7638 kid of the authority key>",
 *  "subject":"…","tools":["…"],"issuedAt":"2026-12-01T00:00:00.000Z","expiresAt":"…",
 *  "constraints":{"minimumRuntimeAssuranceTier":"verified","workloadIdentity":{…}},
 *  "signature":"ed25519:<base64url>"}
 * ```
 *
 * - `signature` = `ed25519:` + base64url (no padding) of the Ed25519 (RFC 8032) signature over the
 *   RFC 8785 (JCS) bytes of the token without `signature`.
 * - Header value (`x-chio-capability`) = base64url (no padding) of the JCS bytes of the whole token.
 * - Decoding is strict, so that ANY single-byte change of a header value makes it invalid: the
 *   base64url must be canonical, the bytes valid UTF-8, the JSON exactly its own JCS form (no
 *   whitespace, duplicate keys, escapes or reordering), every member of the exact schema below
 *   (unknown keys rejected), and the signature canonical base64url of 64 bytes. Then either the
 *   signed bytes changed (the signature fails) or the signature changed (it fails too).
 *
 * Signing and verifying use node:crypto (src/keys.ts), never @noble on the service's path.
 */
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { TIERS, type Tier } from '../attestation/tier.js';
import { deny, describe } from '../errors.js';
import { CREDENTIAL_KINDS, type WorkloadIdentity } from '../identity/identity.js';
import { verifyEd25519, type SigningKey } from '../keys.js';
import { NAME_PATTERN } from '../policy/schema.js';
import { jcs } from '../receipt/canonical.js';
import { SpiffeId } from '../spiffe/id.js';

export const CAPABILITY_SCHEMA = 'chio.capability.v1';
/** `cap-` + a ULID (Crockford base32, 26 characters, first at most 7). */
export const CAPABILITY_ID_PATTERN = /^cap-[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
/** The longest header value accepted (8 KiB); longer is `capability_malformed` before any decoding. */
export const MAX_CAPABILITY_HEADER_LENGTH = 8 * 1024;
/** Most tools one capability may grant. */
export const MAX_CAPABILITY_TOOLS = 64;
/** Longest subject. */
export const MAX_SUBJECT_LENGTH = 256;

/** RFC 3339 UTC with exactly three fraction digits, as `Date#toISOString` writes it. */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
/** RFC 7638 thumbprint: base64url of a SHA-256 digest (32 bytes → 43 characters, canonical). */
const KID = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
/** 64 signature bytes → 86 base64url characters; the last carries 2 bits (canonical: low 4 bits zero). */
const SIGNATURE = /^ed25519:[A-Za-z0-9_-]{85}[AQgw]$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

export interface CapabilityConstraints {
  /** the tier the presenting workload must have at least (SPEC §5 order) */
  readonly minimumRuntimeAssuranceTier?: Tier;
  /** the one workload that may present the capability (its SPIFFE ID exactly, a credential at least this strong) */
  readonly workloadIdentity?: WorkloadIdentity;
}

/** A token without its signature: exactly what is signed. */
export interface UnsignedCapability {
  readonly schema: typeof CAPABILITY_SCHEMA;
  readonly id: string;
  readonly issuer: string;
  readonly subject: string;
  readonly tools: readonly string[];
  readonly issuedAt: string;
  readonly expiresAt: string;
  readonly constraints: CapabilityConstraints;
}

export interface Capability extends UnsignedCapability {
  readonly signature: string;
}

/** A strictly parsed token, with its times as numbers. */
export interface ParsedCapability {
  readonly capability: Capability;
  /** ms since the epoch */
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
}

const timestamp = z
  .string()
  .regex(TIMESTAMP, 'expected an RFC 3339 UTC time with milliseconds, e.g. 2026-12-01T00:00:00.000Z')
  .refine((s) => {
    const ms = Date.parse(s);
    return Number.isFinite(ms) && new Date(ms).toISOString() === s;
  }, 'not a real calendar time');

/** The bound workload: a valid SPIFFE ID whose trust domain and path fields agree with it. */
export const boundWorkloadSchema = z
  .strictObject({
    scheme: z.literal('spiffe'),
    credentialKind: z.enum(CREDENTIAL_KINDS),
    uri: z.string().max(2048),
    trustDomain: z.string(),
    path: z.string(),
  })
  .superRefine((w, ctx) => {
    const fault = workloadIdentityFault(w);
    if (fault !== null) ctx.addIssue({ code: 'custom', path: [fault.field], message: fault.message });
  });

export const subjectSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(MAX_SUBJECT_LENGTH, `at most ${MAX_SUBJECT_LENGTH} characters`)
  .refine((s) => !CONTROL_CHARS.test(s), 'must not contain control characters');

export const toolNameSchema = z.string().regex(NAME_PATTERN, `a tool name must match ${NAME_PATTERN.source}`);

const capabilitySchema = z
  .strictObject({
    schema: z.literal(CAPABILITY_SCHEMA),
    id: z.string().regex(CAPABILITY_ID_PATTERN),
    issuer: z.string().regex(KID),
    subject: subjectSchema,
    tools: z
      .array(toolNameSchema)
      .min(1)
      .max(MAX_CAPABILITY_TOOLS)
      .refine((t) => new Set(t).size === t.length, 'tools must not repeat'),
    issuedAt: timestamp,
    expiresAt: timestamp,
    constraints: z.strictObject({
      minimumRuntimeAssuranceTier: z.enum(TIERS).optional(),
      workloadIdentity: boundWorkloadSchema.optional(),
    }),
    signature: z.string().regex(SIGNATURE),
  })
  .refine((c) => Date.parse(c.expiresAt) > Date.parse(c.issuedAt), { path: ['expiresAt'], message: 'must be after issuedAt' });

/**
 * The fault of a workload identity whose SPIFFE ID is malformed or whose `trustDomain` / `path`
 * disagree with its `uri`; null when it is consistent.
 */
export function workloadIdentityFault(w: { uri: string; trustDomain: string; path: string }): { field: 'uri' | 'trustDomain' | 'path'; message: string } | null {
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(w.uri);
  } catch (err) {
    return { field: 'uri', message: describe(err) };
  }
  if (w.trustDomain !== id.trustDomain) {
    return { field: 'trustDomain', message: `${JSON.stringify(w.trustDomain)} disagrees with the trust domain ${JSON.stringify(id.trustDomain)} of uri` };
  }
  if (w.path !== id.path) {
    return { field: 'path', message: `${JSON.stringify(w.path)} disagrees with the path ${JSON.stringify(id.path)} of uri` };
  }
  return null;
}

/** Signs a token: the Ed25519 signature over the JCS bytes of `unsigned`. */
export function signCapability(unsigned: UnsignedCapability, authority: SigningKey): Capability {
  if (unsigned.issuer !== authority.kid) throw new TypeError('signCapability: issuer must be the kid of the signing key');
  const signature = `ed25519:${authority.sign(Buffer.from(jcs(unsigned), 'utf8')).toString('base64url')}`;
  return { ...unsigned, signature };
}

/** The header value of a token: base64url (no padding) of the JCS bytes of the whole token. */
export function encodeCapability(capability: Capability): string {
  return Buffer.from(jcs(capability), 'utf8').toString('base64url');
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Strict decoding of a header value (no signature check). Throws
 * `deny('capability_malformed', …)` naming the first fault.
 */
export function decodeCapability(header: string): ParsedCapability {
  if (header.length === 0) throw malformed('the header is empty');
  if (header.length > MAX_CAPABILITY_HEADER_LENGTH) {
    throw malformed(`the header is ${header.length} characters long; the maximum is ${MAX_CAPABILITY_HEADER_LENGTH}`);
  }
  if (!BASE64URL.test(header)) throw malformed('the header is not base64url (A-Z a-z 0-9 - _, no padding)');
  const bytes = Buffer.from(header, 'base64url');
  if (bytes.toString('base64url') !== header) throw malformed('the header is not canonical base64url');
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    throw malformed('the decoded header is not UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformed('the decoded header is not JSON');
  }
  const parsed = capabilitySchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    throw malformed(`${where}${issue?.message ?? 'invalid'}`);
  }
  if (jcs(parsed.data) !== text) throw malformed('the token is not in its canonical (RFC 8785 JCS) form');
  const capability = parsed.data as Capability;
  return { capability, issuedAtMs: Date.parse(capability.issuedAt), expiresAtMs: Date.parse(capability.expiresAt) };
}

/** The token without its signature, member by member (what the signature covers). */
export function unsignedOf(capability: Capability): UnsignedCapability {
  const { signature: _signature, ...unsigned } = capability;
  return unsigned;
}

/** True when `signature` is a valid Ed25519 signature of `publicKey` over the token's unsigned JCS bytes. */
export function signatureValid(capability: Capability, publicKey: KeyObject): boolean {
  const raw = Buffer.from(capability.signature.slice('ed25519:'.length), 'base64url');
  return verifyEd25519(publicKey, Buffer.from(jcs(unsignedOf(capability)), 'utf8'), raw);
}

function malformed(message: string) {
  return deny('capability_malformed', `capability: ${message}`);
}
