/**
 * The `trust:` section and the JWT-SVID keys of `identity:` in chio.yaml (SPEC §2.1, §4).
 *
 * ```yaml
 * identity:
 *   sources: [certificate, principal, xfcc, jwt_svid]
 *   jwt_svid: { header: authorization, audiences: [chio], leeway_seconds: 30 }
 * trust:
 *   bundles:                                   # per trust domain, never pooled
 *     - { trust_domain: example.org, pem: ./bundles/example.org.pem, verifier: https://spire.prod.internal,
 *         intermediates: ./bundles/example.org-intermediates.pem }
 *     - { trust_domain: partner.example, spiffe_bundle: ./bundles/partner.json, verifier: https://partner.example/bundle }
 *     - { workload_api: unix:///run/spire/sockets/agent.sock, verifier: https://spire.prod.internal }
 *     - { trust_domain: other.example, federation: { url: https://other.example/bundle, profile: https_web,
 *         ca_file: ./web-ca.pem }, verifier: https://other.example/bundle }
 *     - { trust_domain: peer.example, federation: { url: https://spire.peer.example:8443, profile: https_spiffe,
 *         endpoint_spiffe_id: spiffe://peer.example/spire/server, endpoint_bundle: ./peer.example.json },
 *         verifier: https://spire.peer.example }
 *   file_poll_interval_seconds: 5              # stat fallback of the file watchers
 * ```
 *
 * Each entry has exactly one of `pem`, `spiffe_bundle`, `workload_api`, `federation`; every
 * kind but `workload_api` names its trust domain (the agent names its own). Two entries naming
 * the same trust domain are an error. Relative paths resolve against the config folder
 * ({@link resolveTrustPaths}, called by ./load.ts).
 */
import path from 'node:path';
import { z } from 'zod';
import { DenyError } from '../errors.js';
import { SpiffeId, TrustDomain } from '../spiffe/id.js';
import { MAX_LEEWAY_SECONDS } from '../spiffe/jwt-svid.js';

const nonEmpty = z.string().min(1);

const trustDomain = z.string().superRefine((value, ctx) => {
  try {
    TrustDomain.parse(value);
  } catch (err) {
    if (!(err instanceof DenyError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message });
  }
});

const verifier = z.string().min(1).max(512);

const spiffeIdWithPath = z.string().superRefine((value, ctx) => {
  try {
    if (SpiffeId.parse(value).path === '') ctx.addIssue({ code: 'custom', message: 'the endpoint presents an X509-SVID, whose SPIFFE ID has a path' });
  } catch (err) {
    if (!(err instanceof DenyError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message });
  }
});

/**
 * SPIFFE Federation §5.2: `https_web` authenticates the endpoint with web PKI (`ca_file`: a private
 * web CA); `https_spiffe` by the endpoint's X509-SVID, which must be `endpoint_spiffe_id` and chain
 * to the bundle of that ID's trust domain: for a self-serving endpoint (its ID in the trust domain
 * fetched) `endpoint_bundle` bootstraps the first fetch, then the latest fetched bundle is used; for
 * another endpoint, the bundle chio holds for its trust domain (another trust.bundles entry).
 */
const federationSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^https:\/\/[^\s]+$/, 'expected an https:// URL of a SPIFFE bundle endpoint')
      .refine((s) => URL.canParse(s), 'not a valid URL')
      // SPIFFE Federation §5.2.1.1: the endpoint URL MUST NOT carry userinfo (it would also be logged with every fetch)
      .refine((s) => !URL.canParse(s) || (new URL(s).username === '' && new URL(s).password === ''), 'must not contain userinfo (user:password@)'),
    profile: z
      .enum(['https_web', 'https_spiffe'], { error: (issue) => `unsupported profile ${JSON.stringify(issue.input)}: "https_web" or "https_spiffe"` })
      .default('https_web'),
    ca_file: nonEmpty.optional(),
    endpoint_spiffe_id: spiffeIdWithPath.optional(),
    endpoint_bundle: nonEmpty.optional(),
  })
  .superRefine((f, ctx) => {
    if (f.profile === 'https_web') {
      for (const key of ['endpoint_spiffe_id', 'endpoint_bundle'] as const) {
        if (f[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `${key} is for profile https_spiffe` });
      }
      return;
    }
    if (f.ca_file !== undefined) ctx.addIssue({ code: 'custom', path: ['ca_file'], message: 'ca_file is for profile https_web (https_spiffe trusts the endpoint trust domain bundle)' });
    if (f.endpoint_spiffe_id === undefined) ctx.addIssue({ code: 'custom', path: ['endpoint_spiffe_id'], message: 'profile https_spiffe needs the SPIFFE ID of the bundle endpoint server' });
  });

export const BUNDLE_KINDS = ['pem', 'spiffe_bundle', 'workload_api', 'federation'] as const;
export type BundleKind = (typeof BUNDLE_KINDS)[number];

const bundleEntrySchema = z
  .strictObject({
    trust_domain: trustDomain.optional(),
    verifier,
    pem: nonEmpty.optional(),
    spiffe_bundle: nonEmpty.optional(),
    workload_api: z.string().regex(/^unix:\/\/\/.+$/, 'expected unix:///<absolute socket path>').optional(),
    federation: federationSchema.optional(),
    intermediates: nonEmpty.optional(),
  })
  .superRefine((entry, ctx) => {
    const kinds = BUNDLE_KINDS.filter((k) => entry[k] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: `a bundle source needs exactly one of ${BUNDLE_KINDS.join(', ')}${kinds.length > 1 ? ` (found ${kinds.join(', ')})` : ''}`,
      });
      return;
    }
    const kind = kinds[0] as BundleKind;
    // workload_api: trust_domain is optional, the agent's own (its verifier vouches for that one only)
    if (kind !== 'workload_api' && entry.trust_domain === undefined) {
      ctx.addIssue({ code: 'custom', path: ['trust_domain'], message: `a ${kind} source needs trust_domain (bundles are per trust domain)` });
    }
    const f = entry.federation;
    if (f?.profile === 'https_spiffe' && f.endpoint_spiffe_id !== undefined && entry.trust_domain !== undefined) {
      const selfServing = SpiffeId.parse(f.endpoint_spiffe_id).trustDomain === entry.trust_domain;
      if (selfServing && f.endpoint_bundle === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['federation', 'endpoint_bundle'],
          message: `the endpoint is self-serving (its SPIFFE ID is in ${entry.trust_domain}): endpoint_bundle must hold a bundle of ${entry.trust_domain} to authenticate the first fetch`,
        });
      }
      if (!selfServing && f.endpoint_bundle !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['federation', 'endpoint_bundle'],
          message: `the endpoint's SPIFFE ID is not in ${entry.trust_domain}: it is authenticated with the bundle chio holds for its trust domain (another trust.bundles entry), not endpoint_bundle`,
        });
      }
    }
    if (entry.intermediates !== undefined && kind !== 'pem' && kind !== 'spiffe_bundle') {
      ctx.addIssue({ code: 'custom', path: ['intermediates'], message: 'intermediates are only for pem and spiffe_bundle sources' });
    }
  });

export type TrustBundleEntry = z.infer<typeof bundleEntrySchema>;

export const trustSchema = z
  .strictObject({
    bundles: z.array(bundleEntrySchema).max(256).default([]),
    file_poll_interval_seconds: z.number().int().min(1).max(3600).default(5),
  })
  .superRefine((trust, ctx) => {
    const seen = new Map<string, number>();
    trust.bundles.forEach((entry, i) => {
      const td = entry.trust_domain;
      if (td === undefined) return;
      const first = seen.get(td);
      if (first !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['bundles', i, 'trust_domain'],
          message: `trust domain ${td} already has a bundle source (trust.bundles[${first}]); bundles are per trust domain, never pooled`,
        });
      } else seen.set(td, i);
    });
  })
  .prefault({});

export type TrustConfig = z.infer<typeof trustSchema>;

/** `identity.jwt_svid` */
export const jwtSvidConfigSchema = z.strictObject({
  header: z
    .string()
    .regex(/^[a-z0-9-]+$/, 'expected a lower-case HTTP header name')
    .default('authorization'),
  audiences: z.array(nonEmpty).min(1),
  leeway_seconds: z.number().int().min(0).max(MAX_LEEWAY_SECONDS).default(30),
});

export type JwtSvidConfig = z.infer<typeof jwtSvidConfigSchema>;

/** For `identity`'s superRefine: the jwt_svid source needs its audiences configured. */
export function requireJwtSvidConfig(identity: { sources: readonly string[]; jwt_svid?: JwtSvidConfig | undefined }, ctx: z.RefinementCtx): void {
  if (identity.sources.includes('jwt_svid') && identity.jwt_svid === undefined) {
    ctx.addIssue({ code: 'custom', path: ['jwt_svid'], message: 'the jwt_svid source needs identity.jwt_svid with at least one audience' });
  }
}

/** The kind of a validated entry. */
export function bundleKind(entry: TrustBundleEntry): BundleKind {
  const kind = BUNDLE_KINDS.find((k) => entry[k] !== undefined);
  if (kind === undefined) throw new TypeError('bundle entry without a kind');
  return kind;
}

/** Where federation sources keep state: beside the receipt signing seed (the service's own folder of secrets). */
export function federationStateDir(receiptSigningSeed: string): string {
  return path.dirname(receiptSigningSeed);
}

/**
 * Where an `https_spiffe` federation source keeps the latest bundle it fetched (in `stateDir`,
 * {@link federationStateDir}): read by the source, and listed among the files chio writes (./files.ts).
 */
export function federationStateFile(stateDir: string, trustDomain: string): string {
  return path.join(stateDir, `federation-${trustDomain}.json`);
}

/** The `https_spiffe` federation entries that keep a state file: their trust domains. */
export function statefulFederations(trust: TrustConfig): string[] {
  return trust.bundles.flatMap((b) => (b.federation?.profile === 'https_spiffe' && b.trust_domain !== undefined ? [b.trust_domain] : []));
}

/** Relative file paths of `trust` resolved with `resolve` (the config folder). */
export function resolveTrustPaths(trust: TrustConfig, resolve: (p: string) => string): TrustConfig {
  const opt = (p: string | undefined): string | undefined => (p === undefined ? undefined : resolve(p));
  return {
    ...trust,
    bundles: trust.bundles.map((b) => ({
      ...b,
      pem: opt(b.pem),
      spiffe_bundle: opt(b.spiffe_bundle),
      intermediates: opt(b.intermediates),
      federation: b.federation === undefined ? undefined : { ...b.federation, ca_file: opt(b.federation.ca_file), endpoint_bundle: opt(b.federation.endpoint_bundle) },
    })),
  };
}
