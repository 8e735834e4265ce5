/**
 * The `capabilities:` section of chio.yaml (SPEC §2.1, §7):
 *
 * ```yaml
 * capabilities:
 *   header: x-chio-capability                  # where Check reads the token; always stripped before upstream
 *   authorities: [ { public_key: <hex Ed25519 public key> } ]   # trusted issuers
 *   authority_seed: ./secrets/authority.seed   # enables POST /v1/capabilities/issue (mode 0600)
 *   revocations_file: ./data/revocations.jsonl # watched; POST /v1/revocations appends to it
 * ```
 *
 * The issuing authority's own key (`authority_seed`) is trusted at Check as well. Relative paths
 * resolve against the config folder ({@link resolveCapabilityPaths}, called by src/config/load.ts).
 */
import { z } from 'zod';
import { ChioError } from '../errors.js';
import { parsePublicKey } from '../keys.js';

export const CAPABILITY_HEADER_DEFAULT = 'x-chio-capability';

/** Headers the service sets itself on an allow: the token cannot travel in them. */
const RESERVED_HEADERS = ['x-chio-receipt-id', 'x-chio-workload-id'];

const nonEmpty = z.string().min(1);

const header = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]*$/, 'expected a lower-case HTTP header name (Envoy lower-cases header names)')
  .max(128)
  .refine((h) => !RESERVED_HEADERS.includes(h), `must not be one of the headers chio sets (${RESERVED_HEADERS.join(', ')})`);

const publicKey = z.string().superRefine((value, ctx) => {
  try {
    parsePublicKey(value);
  } catch (err) {
    if (!(err instanceof ChioError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message });
  }
});

export const capabilitiesConfigSchema = z
  .strictObject({
    header: header.default(CAPABILITY_HEADER_DEFAULT),
    authorities: z.array(z.strictObject({ public_key: publicKey })).max(64).default([]),
    authority_seed: nonEmpty.optional(),
    revocations_file: nonEmpty.optional(),
  })
  .prefault({});

export type CapabilitiesConfig = z.infer<typeof capabilitiesConfigSchema>;

/** Relative paths of `capabilities` resolved with `resolve` (the config folder). */
export function resolveCapabilityPaths(c: CapabilitiesConfig, resolve: (p: string) => string): CapabilitiesConfig {
  return {
    ...c,
    authority_seed: c.authority_seed === undefined ? undefined : resolve(c.authority_seed),
    revocations_file: c.revocations_file === undefined ? undefined : resolve(c.revocations_file),
  };
}

