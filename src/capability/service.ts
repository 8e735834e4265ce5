/**
 * Capabilities inside the running service (SPEC §7, §2 admin `/v1/...` API): the verifier and
 * revocation list the Check path's capability stage uses, and the admin routes (all Bearer-token
 * protected, compared in constant time by src/server/admin.ts):
 *
 * - `POST /v1/capabilities/issue` `{subject, tools, ttlSeconds, runtimeAttestation?}` → 201
 *   `{token, capability}`; 400 `{error: {code: issuance_refused, message, field}}`; 404 when no
 *   `capabilities.authority_seed` is configured. Issued under the policy in force.
 * - `POST /v1/revocations` `{id, reason?}` → 201 `{revocation}` (appended to
 *   `capabilities.revocations_file`, applied at once), 200 when already revoked, 404 without a file (not enabled).
 *   Under `--workers`, 503 `{error: {code: io_error, message}, revocation}` when a worker did not
 *   confirm it applied the revocation (it is recorded: see `afterRevoke`).
 *   With shared revocations (`revocations: {type: postgres}`) it is recorded in PostgreSQL instead
 *   and every replica enforces it within seconds (src/receipt/pg/revocations.ts).
 * - `GET /v1/revocations` → 200 `{revocations: [...]}`.
 *
 * Tokens and seeds are never logged; issuance logs the id, subject, tools, tier and bound workload.
 */
import type { z } from 'zod';
import type { Logger } from '../check/pipeline.js';
import { ChioError, describe } from '../errors.js';
import { loadSeedFile, parsePublicKey, type PublicKeyInfo, type SigningKey } from '../keys.js';
import type { CompiledPolicy } from '../policy/types.js';
import { json, type AdminRequest, type AdminResponse, type Route } from '../server/admin.js';
import type { CapabilitiesConfig } from './config.js';
import { issueCapability, zodFault } from './issue.js';
import { RevocationList, revokeRequestSchema, type Revocation } from './revocations.js';
import type { CapabilityStageDeps } from './stage.js';
import { CapabilityVerifier } from './verify.js';

export interface CapabilityServiceOptions {
  readonly config: CapabilitiesConfig;
  readonly log: Logger;
  readonly clock: () => number;
  /** the policy in force (issuance applies its tools, trusted verifiers and tier ceilings) */
  readonly policy: () => CompiledPolicy;
  /** stat fallback of the revocation file watcher (default 5 s) */
  readonly revocationPollMs?: number;
  /** a `--workers` worker: start even if the revocations file does not parse (RevocationListOptions.startDespiteBadFile) */
  readonly revocationsFromPrimary?: boolean;
  /**
   * Revocations shared by every replica (chio.yaml `revocations: {type: postgres}`,
   * src/receipt/pg/revocations.ts): enforced beside the file's, and `POST /v1/revocations` records there.
   */
  readonly shared?: SharedRevocations | null;
  /**
   * Awaited after a revocation is recorded (or found already recorded: a retry), before it is
   * answered: `--workers`' primary sends it to every worker (they check the Checks), so a 201 means
   * it is in force everywhere. Throws ChioError when not every worker confirmed: the POST answers
   * 503 with its message, since the revocation is recorded but may not be in force everywhere yet.
   */
  readonly afterRevoke?: (revocation: Revocation) => Promise<void>;
}

/** A revocation list other replicas share; closed with the capabilities. */
export type SharedRevocations = Pick<RevocationList, 'has' | 'list' | 'revoke' | 'close'>;

export interface RunningCapabilities {
  readonly header: string;
  readonly stage: CapabilityStageDeps;
  readonly verifier: CapabilityVerifier;
  readonly revocations: RevocationList;
  /** the issuing authority (capabilities.authority_seed), null when issuance is off */
  readonly authority: SigningKey | null;
  readonly routes: readonly Route[];
  close(): Promise<void>;
}

/** Loads the authority seed and trusted keys, reads the revocation file and starts watching it. Throws ChioError on bad input. */
export function startCapabilities(options: CapabilityServiceOptions): RunningCapabilities {
  const { config, log } = options;
  const authority = config.authority_seed === undefined ? null : loadSeedFile(config.authority_seed);
  const verifier = new CapabilityVerifier({ authorities: trustedKeys(config, authority) });
  const revocations = RevocationList.open(config.revocations_file ?? null, {
    log,
    ...(options.revocationPollMs === undefined ? {} : { pollIntervalMs: options.revocationPollMs }),
    startDespiteBadFile: options.revocationsFromPrimary === true,
  });
  const shared = options.shared ?? null;
  if (authority !== null) log.info({ kid: authority.kid }, 'capability issuance enabled');
  return {
    header: config.header,
    stage: { verifier, isRevoked: (id) => revocations.has(id) || (shared?.has(id) ?? false) },
    verifier,
    revocations,
    authority,
    routes: [
      { method: 'POST', path: '/v1/capabilities/issue', auth: true, handler: (req) => issue(req, authority, options) },
      { method: 'POST', path: '/v1/revocations', auth: true, handler: (req) => revoke(req, shared ?? revocations, options) },
      {
        method: 'GET',
        path: '/v1/revocations',
        auth: true,
        handler: () => json(200, { revocations: [...revocations.list(), ...(shared?.list() ?? []).filter((r) => !revocations.has(r.id))] }),
      },
    ],
    close: async () => {
      await revocations.close();
      await shared?.close();
    },
  };
}

/** `capabilities.authorities`, plus the issuing authority's own key; one entry per kid. */
function trustedKeys(config: CapabilitiesConfig, authority: SigningKey | null): PublicKeyInfo[] {
  const keys = new Map<string, PublicKeyInfo>();
  for (const a of config.authorities) {
    const key = parsePublicKey(a.public_key);
    keys.set(key.kid, key);
  }
  if (authority !== null) keys.set(authority.kid, authority);
  return [...keys.values()];
}

async function issue(req: AdminRequest, authority: SigningKey | null, options: CapabilityServiceOptions): Promise<AdminResponse> {
  if (authority === null) {
    throw new ChioError('not_found', 'capability issuance is not enabled: set capabilities.authority_seed in chio.yaml');
  }
  const body = await jsonBody(req);
  const issued = issueCapability(body, { authority, policy: options.policy(), now: options.clock() });
  const c = issued.capability;
  options.log.info(
    { capabilityId: c.id, subject: c.subject, tools: c.tools, expiresAt: c.expiresAt, tier: issued.attestation?.tier ?? null, workload: c.constraints.workloadIdentity?.uri ?? null, expiryCappedBy: issued.expiryCappedBy },
    'capability issued',
  );
  return json(201, { token: issued.token, capability: c });
}

async function revoke(req: AdminRequest, revocations: Pick<RevocationList, 'revoke'>, options: CapabilityServiceOptions): Promise<AdminResponse> {
  const parsed = revokeRequestSchema.safeParse(await jsonBody(req));
  if (!parsed.success) throw badRequest(parsed.error);
  let recorded: { revocation: Revocation; created: boolean };
  try {
    recorded = await revocations.revoke(parsed.data.id, parsed.data.reason ?? null, options.clock());
  } catch (err) {
    if (!(err instanceof ChioError) || err.code !== 'io_error') throw err;
    options.log.error({ err: describe(err) }, 'revocation could not be recorded');
    return json(500, { error: { code: err.code, message: 'the revocation could not be recorded; it is NOT in effect' } });
  }
  const { revocation, created } = recorded;
  if (created) options.log.info({ capabilityId: revocation.id, reason: revocation.reason }, 'capability revoked');
  try {
    await options.afterRevoke?.(revocation);
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    // recorded, but not confirmed in force everywhere: never a 201 (a caller would stop worrying);
    // not the 500 above either (it is recorded, and a retry of the POST asks the workers again)
    return json(503, { error: err.toJSON(), revocation });
  }
  return json(created ? 201 : 200, { revocation });
}

/** The request body as JSON; ChioError('bad_request') otherwise. */
async function jsonBody(req: AdminRequest): Promise<unknown> {
  const raw = await req.body();
  let text: string;
  try {
    // not Buffer#toString: it would turn bytes that are not UTF-8 into U+FFFD inside a subject or reason
    text = STRICT_UTF8.decode(raw);
  } catch {
    throw new ChioError('bad_request', 'the request body is not valid UTF-8');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ChioError('bad_request', `the request body is not JSON: ${describe(err)}`);
  }
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function badRequest(error: z.ZodError): ChioError {
  const { field, message } = zodFault(error);
  return new ChioError('bad_request', `${field}: ${message}`, { field });
}
