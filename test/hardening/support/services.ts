/**
 * The real service (src/main.ts via test/helpers/service.ts startTestService) configured for
 * hostile-input tests: every identity source on (certificate, principal, XFCC, JWT-SVID), the
 * fixture PKI's bundle for example.org, the harness's capability authority trusted; plus readers
 * for its receipt file and /metrics.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { keyFromSeed } from '../../../src/keys.js';
import { FIXTURES, startTestService, type TestService, type TestServiceOptions } from '../../helpers/service.js';
import { HARNESS_AUTHORITY_SEED, JWT_AUDIENCE } from './pipeline.js';

const CA_PEM = path.join(FIXTURES, 'envoy', 'pki', 'ca.pem');

/** chio.yaml lines: all identity sources, the example.org bundle, the harness authority. */
export function hostileInputConfig(extra = ''): string {
  const authority = keyFromSeed(HARNESS_AUTHORITY_SEED).publicKeyRaw.toString('hex');
  return [
    `identity: { sources: [certificate, principal, xfcc, jwt_svid], jwt_svid: { header: authorization, audiences: [${JWT_AUDIENCE}] } }`,
    'trust:',
    '  bundles:',
    `    - { trust_domain: example.org, pem: ${JSON.stringify(CA_PEM)}, verifier: https://spire.test }`,
    `capabilities: { authorities: [ { public_key: ${authority} } ] }`,
    extra,
  ].join('\n');
}

export function startHostileInputService(policy: string, options: Omit<TestServiceOptions, 'policy'> = {}): Promise<TestService> {
  return startTestService({ ...options, policy, configExtra: hostileInputConfig(options.configExtra) });
}

/** The receipt file's complete lines (the file is JCS text, one receipt per line). */
export function receiptLines(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const lines = text.split('\n');
  lines.pop(); // after the last newline: '' (or a torn tail, which is no receipt)
  return lines;
}

/** The Prometheus text of the admin listener's /metrics. */
export async function scrape(svc: Pick<TestService, 'adminUrl'>): Promise<string> {
  const res = await fetch(`${svc.adminUrl}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/**
 * The sum of the series of `name` in Prometheus text whose labels include `labels` (all of them
 * when `labels` is empty); 0 when there is none (a counter never incremented has no series).
 */
export function metricValue(text: string, name: string, labels: Readonly<Record<string, string>> = {}): number {
  const wanted = Object.entries(labels);
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (wanted.every(([k, v]) => have.get(k) === v)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum ?? 0;
}
