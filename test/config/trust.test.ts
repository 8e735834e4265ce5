/**
 * chio.yaml `trust:` and the JWT-SVID keys of `identity:` (src/config/trust.ts via
 * src/config/load.ts): located errors, defaults, path resolution.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';

const BASE = [
  'schema: chio.config.v1',
  'policy: ./policy.yaml',
  'keys: { receipt_signing_seed: ./kernel.seed }',
];

function load(...lines: string[]) {
  return parseConfig([...BASE, ...lines, ''].join('\n'), '/etc/chio/chio.yaml', '/etc/chio');
}

function errorOf(...lines: string[]): string {
  try {
    load(...lines);
  } catch (err) {
    if (err instanceof ChioError) {
      expect(err.code).toBe('config_invalid');
      return err.message;
    }
    throw err;
  }
  throw new Error('expected a config error');
}

describe('trust.bundles', () => {
  it('accepts every kind of source and resolves relative paths against the config folder', () => {
    const config = load(
      'trust:',
      '  bundles:',
      '    - { trust_domain: example.org, pem: ./bundles/example.org.pem, verifier: https://spire.prod.internal, intermediates: inter.pem }',
      '    - { spiffe_bundle: /abs/partner.json, trust_domain: partner.example, verifier: https://partner.example/bundle }',
      '    - { workload_api: unix:///run/spire/sockets/agent.sock, verifier: https://spire.prod.internal }',
      '    - { trust_domain: other.example, federation: { url: https://other.example/bundle, ca_file: ./web-ca.pem }, verifier: https://other.example }',
    );
    expect(config.trust.file_poll_interval_seconds).toBe(5);
    expect(config.trust.bundles).toMatchObject([
      { trust_domain: 'example.org', pem: '/etc/chio/bundles/example.org.pem', intermediates: '/etc/chio/inter.pem', verifier: 'https://spire.prod.internal' },
      { trust_domain: 'partner.example', spiffe_bundle: '/abs/partner.json' },
      { workload_api: 'unix:///run/spire/sockets/agent.sock' },
      { trust_domain: 'other.example', federation: { url: 'https://other.example/bundle', profile: 'https_web', ca_file: '/etc/chio/web-ca.pem' } },
    ]);
  });

  it('defaults to no bundles', () => {
    expect(load().trust).toEqual({ bundles: [], file_poll_interval_seconds: 5 });
  });

  it('rejects entries with none or two kinds, with the YAML location', () => {
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: a.test, verifier: v }')).toBe(
      '/etc/chio/chio.yaml:6:7: trust.bundles[0]: a bundle source needs exactly one of pem, spiffe_bundle, workload_api, federation',
    );
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: a.test, pem: a.pem, spiffe_bundle: a.json, verifier: v }')).toBe(
      '/etc/chio/chio.yaml:6:7: trust.bundles[0]: a bundle source needs exactly one of pem, spiffe_bundle, workload_api, federation (found pem, spiffe_bundle)',
    );
  });

  it('requires trust_domain for file and federation sources; for workload_api it is optional (the agent\'s own)', () => {
    expect(errorOf('trust:', '  bundles:', '    - { pem: a.pem, verifier: v }')).toBe(
      '/etc/chio/chio.yaml:6:7: trust.bundles[0].trust_domain: a pem source needs trust_domain (bundles are per trust domain)',
    );
    expect(load('trust:', '  bundles:', '    - { workload_api: unix:///a.sock, trust_domain: a.test, verifier: v }').trust.bundles[0]).toMatchObject({ trust_domain: 'a.test', workload_api: 'unix:///a.sock' });
    expect(load('trust:', '  bundles:', '    - { workload_api: unix:///a.sock, verifier: v }').trust.bundles[0]?.trust_domain).toBeUndefined();
  });

  it('refuses two sources for one trust domain (never pooled)', () => {
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: a.test, pem: a.pem, verifier: v }', '    - { trust_domain: a.test, spiffe_bundle: a.json, verifier: w }')).toBe(
      '/etc/chio/chio.yaml:7:9: trust.bundles[1].trust_domain: trust domain a.test already has a bundle source (trust.bundles[0]); bundles are per trust domain, never pooled',
    );
  });

  it('validates names, URLs, sockets and unknown keys', () => {
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: Example.org, pem: a.pem, verifier: v }')).toMatch(
      /trust\.bundles\[0\]\.trust_domain: trust domain "Example\.org": contains an upper-case letter "E" at index 0/,
    );
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: a.test, federation: { url: http://a.test/b }, verifier: v }')).toMatch(
      /trust\.bundles\[0\]\.federation\.url: expected an https:\/\/ URL of a SPIFFE bundle endpoint$/,
    );
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: a.test, federation: { url: "https://user:secret@a.test/b" }, verifier: v }')).toMatch(
      /trust\.bundles\[0\]\.federation\.url: must not contain userinfo \(user:password@\)$/,
    );
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: a.test, federation: { url: https://a.test/b, profile: https_cert }, verifier: v }')).toMatch(
      /federation\.profile: unsupported profile "https_cert": "https_web" or "https_spiffe"$/,
    );
    expect(errorOf('trust:', '  bundles:', '    - { workload_api: /run/agent.sock, verifier: v }')).toMatch(/workload_api: expected unix:\/\/\/<absolute socket path>$/);
    expect(errorOf('trust:', '  bundles:', '    - { workload_api: unix:///a.sock, verifier: v, intermediates: i.pem }')).toMatch(
      /trust\.bundles\[0\]\.intermediates: intermediates are only for pem and spiffe_bundle sources$/,
    );
    expect(errorOf('trust:', '  bundles:', '    - { trust_domain: a.test, pem: a.pem }')).toMatch(/trust\.bundles\[0\]\.verifier: /);
    expect(errorOf('trust:', '  bundle: []')).toMatch(/trust\.bundle: unknown key "bundle"$/);
  });
});

describe('trust: federation profile https_spiffe', () => {
  const entry = (federation: string, td = 'a.test'): string[] => ['trust:', '  bundles:', `    - { trust_domain: ${td}, federation: ${federation}, verifier: v }`];

  it('self-serving with a bootstrap bundle, and not self-serving without one; paths resolve against the config folder', () => {
    const self = load(...entry('{ url: https://spire.a.test/b, profile: https_spiffe, endpoint_spiffe_id: spiffe://a.test/spire/server, endpoint_bundle: ./a.json }'));
    expect(self.trust.bundles[0]?.federation).toEqual({
      url: 'https://spire.a.test/b',
      profile: 'https_spiffe',
      endpoint_spiffe_id: 'spiffe://a.test/spire/server',
      endpoint_bundle: '/etc/chio/a.json',
      ca_file: undefined,
    });
    const other = load(...entry('{ url: https://hub.b.test/a, profile: https_spiffe, endpoint_spiffe_id: spiffe://b.test/bundle-server }'));
    expect(other.trust.bundles[0]?.federation?.endpoint_bundle).toBeUndefined();
  });

  it('refuses what cannot authenticate the endpoint, naming the key', () => {
    expect(errorOf(...entry('{ url: https://x/b, profile: https_spiffe }'))).toMatch(
      /federation\.endpoint_spiffe_id: profile https_spiffe needs the SPIFFE ID of the bundle endpoint server$/,
    );
    expect(errorOf(...entry('{ url: https://x/b, profile: https_spiffe, endpoint_spiffe_id: spiffe://a.test/s }'))).toMatch(
      /federation\.endpoint_bundle: the endpoint is self-serving \(its SPIFFE ID is in a\.test\): endpoint_bundle must hold a bundle of a\.test to authenticate the first fetch$/,
    );
    expect(errorOf(...entry('{ url: https://x/b, profile: https_spiffe, endpoint_spiffe_id: spiffe://b.test/s, endpoint_bundle: b.json }'))).toMatch(
      /federation\.endpoint_bundle: the endpoint's SPIFFE ID is not in a\.test: it is authenticated with the bundle chio holds for its trust domain \(another trust\.bundles entry\), not endpoint_bundle$/,
    );
    expect(errorOf(...entry('{ url: https://x/b, profile: https_spiffe, endpoint_spiffe_id: spiffe://a.test }'))).toMatch(
      /federation\.endpoint_spiffe_id: the endpoint presents an X509-SVID, whose SPIFFE ID has a path$/,
    );
    expect(errorOf(...entry('{ url: https://x/b, profile: https_spiffe, endpoint_spiffe_id: spiffe://a.test/s, endpoint_bundle: a.json, ca_file: ca.pem }'))).toMatch(
      /federation\.ca_file: ca_file is for profile https_web \(https_spiffe trusts the endpoint trust domain bundle\)$/,
    );
    expect(errorOf(...entry('{ url: https://x/b, endpoint_spiffe_id: spiffe://a.test/s }'))).toMatch(/federation\.endpoint_spiffe_id: endpoint_spiffe_id is for profile https_spiffe$/);
  });
});

describe('identity: xfcc and jwt_svid', () => {
  it('accepts the new sources with JWT-SVID settings and defaults', () => {
    const config = load('identity:', '  sources: [certificate, principal, xfcc, jwt_svid]', '  jwt_svid: { audiences: [chio] }');
    expect(config.identity.sources).toEqual(['certificate', 'principal', 'xfcc', 'jwt_svid']);
    expect(config.identity.jwt_svid).toEqual({ header: 'authorization', audiences: ['chio'], leeway_seconds: 30 });
  });

  it('the jwt_svid source needs its audiences; leeway at most 300', () => {
    expect(errorOf('identity:', '  sources: [jwt_svid]')).toBe(
      '/etc/chio/chio.yaml:4:1: identity.jwt_svid: the jwt_svid source needs identity.jwt_svid with at least one audience',
    );
    expect(errorOf('identity:', '  sources: [jwt_svid]', '  jwt_svid: { audiences: [] }')).toMatch(/identity\.jwt_svid\.audiences: /);
    expect(errorOf('identity:', '  sources: [jwt_svid]', '  jwt_svid: { audiences: [chio], leeway_seconds: 301 }')).toMatch(/identity\.jwt_svid\.leeway_seconds: /);
    expect(errorOf('identity:', '  jwt_svid: { audiences: [chio], header: Authorization }')).toMatch(/identity\.jwt_svid\.header: expected a lower-case HTTP header name$/);
  });
});
