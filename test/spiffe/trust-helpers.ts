/**
 * Test-only helpers for trust bundles: bundles and JWKS documents built from test CAs and keys.
 * Never imported from src/.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { BundleSet, parseCaCertificate, type BundleContent, type TrustBundle } from '../../src/spiffe/bundle.js';
import type { TestCa } from '../helpers/test-ca.js';

/** Bundle content of a trust domain from test CAs (roots) and optional configured intermediates. */
export function contentOf(
  trustDomain: string,
  roots: readonly TestCa[],
  opts: { intermediates?: readonly TestCa[]; jwt?: ReadonlyMap<string, KeyObject> } = {},
): BundleContent {
  return {
    trustDomain,
    x509Authorities: roots.map((r) => parseCaCertificate(r.der)),
    jwtAuthorities: opts.jwt ?? new Map(),
    intermediates: (opts.intermediates ?? []).map((r) => parseCaCertificate(r.der)),
    sequence: null,
    refreshHintSeconds: null,
  };
}

/** A BundleSet with one source (`test#0`, verifier `https://spire.test`) holding `contents`. */
export function bundleSetOf(...contents: BundleContent[]): { set: BundleSet; index: number } {
  const set = new BundleSet();
  const index = set.addSource({ source: 'test#0', verifier: 'https://spire.test' });
  set.replace(index, contents);
  return { set, index };
}

/** The bundle of `trustDomain` in a fresh one-source set. */
export function bundleOf(content: BundleContent): TrustBundle {
  const { set } = bundleSetOf(content);
  const bundle = set.get(content.trustDomain);
  if (bundle === undefined) throw new TypeError('no bundle');
  return bundle;
}

/** A SPIFFE bundle document (JWKS) for roots (x5c) and JWT keys. */
export function spiffeBundleJson(
  roots: readonly TestCa[],
  jwtKeys: ReadonlyArray<{ kid: string; key: KeyObject }> = [],
  extra: { spiffe_sequence?: number; spiffe_refresh_hint?: number } = {},
): string {
  return JSON.stringify({
    keys: [
      ...roots.map((r) => ({ ...r.cert.publicKey.export({ format: 'jwk' }), use: 'x509-svid', x5c: [r.der.toString('base64')] })),
      ...jwtKeys.map(({ kid, key }) => ({ ...(key.type === 'public' ? key : createPublicKey(key)).export({ format: 'jwk' }), use: 'jwt-svid', kid })),
    ],
    ...extra,
  });
}

export interface JwtKeyPair {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export function ecKeyPair(kid: string, namedCurve: 'P-256' | 'P-384' | 'P-521' = 'P-256'): JwtKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
  return { kid, privateKey, publicKey };
}

export function rsaKeyPair(kid: string, modulusLength = 2048): JwtKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength });
  return { kid, privateKey, publicKey };
}
