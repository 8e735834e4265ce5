/**
 * The SPIFFE Workload API bundle source (src/spiffe/workload-api.ts) against the fake agent
 * (test/helpers/workload-api-server.ts): bundles per trust domain, rotation mid-stream,
 * redaction, refused updates, the agent going away and coming back.
 */
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet } from '../../src/spiffe/bundle.js';
import { SECURITY_HEADER, WorkloadApiBundleSource, workloadApiDefinition } from '../../src/spiffe/workload-api.js';
import { verifySvid, X509ChainVerifier } from '../../src/spiffe/chain.js';
import { parseSvidLeaf } from '../../src/spiffe/x509-svid.js';
import { createRootCa, issueSvid, TEST_NOW, type TestCa } from '../helpers/test-ca.js';
import { FakeWorkloadApiAgent } from '../helpers/workload-api-server.js';
import { ecKeyPair, spiffeBundleJson } from './trust-helpers.js';

let rootA: TestCa;
let rootA2: TestCa;
let rootB: TestCa;
const jwtA = ecKeyPair('a-jwt-1');

beforeAll(async () => {
  rootA = await createRootCa({ trustDomain: 'a.test', name: 'Root A' });
  rootA2 = await createRootCa({ trustDomain: 'a.test', name: 'Root A2' });
  rootB = await createRootCa({ trustDomain: 'b.test', name: 'Root B' });
});

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** What chio's chain verifier (the Check path's, with pending trust domains) makes of a leaf: 'verified' or 'no_bundle', or it throws the deny. */
function verifySvidThroughSet(set: BundleSet, der: Buffer): string {
  const leaf = parseSvidLeaf(der);
  return new X509ChainVerifier(set).verify(leaf, '', () => [], TEST_NOW).kind;
}

async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Harness {
  agent: FakeWorkloadApiAgent;
  set: BundleSet;
  source: WorkloadApiBundleSource;
  connected: boolean[];
  refreshes: string[];
  logs: string[];
}

const SHARED_VERIFIER_WARNING =
  "the Workload API delivers several trust domains and this source has no trust_domain: its verifier name vouches for the federated ones too (set trust_domain to the agent's own)";

async function harness(extra: { ownTrustDomain?: string } = {}): Promise<Harness> {
  const agent = new FakeWorkloadApiAgent();
  agent.setBundles({ x509: new Map([['a.test', [rootA]], ['b.test', [rootB]]]), jwt: new Map([['a.test', spiffeBundleJson([], [{ kid: jwtA.kid, key: jwtA.publicKey }])]]) });
  await agent.start();
  const set = new BundleSet();
  const connected: boolean[] = [];
  const refreshes: string[] = [];
  const logs: string[] = [];
  const log = (msg: string) => void logs.push(msg);
  const source = new WorkloadApiBundleSource(
    set,
    { label: 'workload_api#0', verifier: 'https://spire.test', address: agent.address, initialBackoffMs: 20, maxBackoffMs: 100, onConnected: (c) => void connected.push(c), ...extra },
    { log: { error: (_o, m) => log(m), warn: (_o, m) => log(m), info: (_o, m) => log(m) }, refreshed: (s, r) => void refreshes.push(`${s}:${r}`) },
  );
  cleanups.push(async () => {
    await source.close();
    await agent.close();
  });
  await source.start();
  return { agent, set, source, connected, refreshes, logs };
}

describe('WorkloadApiBundleSource', () => {
  it('loads the X.509 and JWT bundles of the agent’s own and federated trust domains, with the security header', async () => {
    const h = await harness();
    expect(h.source.isConnected).toBe(true);
    expect(h.connected).toEqual([false, true]);
    expect(h.agent.accepted).toEqual({ x509: 1, jwt: 1, svid: 0 });
    expect(h.agent.rejectedCalls).toBe(0);
    const a = h.set.get('a.test');
    expect(a?.verifier).toBe('https://spire.test');
    expect(a?.source).toBe('workload_api#0');
    expect(a?.x509Authorities.map((c) => c.x509.subject)).toEqual([rootA.cert.subject]);
    expect([...(a?.jwtAuthorities.keys() ?? [])]).toEqual(['a-jwt-1']);
    expect(h.set.get('b.test')?.x509Authorities).toHaveLength(1);
    expect(h.set.get('b.test')?.jwtAuthorities.size).toBe(0);
    expect(h.refreshes.every((r) => r === 'workload_api#0:ok')).toBe(true);
  });

  it('the fake agent refuses a call without the workload.spiffe.io header', async () => {
    const h = await harness();
    const Client = workloadApiDefinition()['SpiffeWorkloadAPI'] as grpc.ServiceClientConstructor;
    const client = new Client(h.agent.address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      FetchX509Bundles: (req: object, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>;
    };
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.FetchX509Bundles({}, new grpc.Metadata());
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      call.on('status', resolve);
    });
    client.close();
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toBe('security header missing from request');
    expect(h.agent.rejectedCalls).toBe(1);
    expect(SECURITY_HEADER).toBe('workload.spiffe.io');
  });

  it('applies a rotation pushed mid-stream, and withdraws a trust domain the agent stops sending', async () => {
    const h = await harness();
    const before = h.set.get('a.test')?.generation;
    h.agent.setBundles({ x509: new Map([['a.test', [rootA, rootA2]]]), jwt: new Map([['a.test', spiffeBundleJson([])]]) });
    await until(() => h.set.get('a.test')?.x509Authorities.length === 2 && h.set.get('a.test')?.jwtAuthorities.size === 0, 'rotation');
    expect(h.set.get('a.test')?.generation).not.toBe(before);
    await until(() => h.set.get('b.test') === undefined, 'b.test withdrawn');
    expect(h.set.trustDomains()).toEqual(['a.test']);
  });

  it('an SVID of a trust domain the agent withdrew is untrusted, not "no bundle" (Envoy\'s word alone would admit it)', async () => {
    const h = await harness();
    const partner = await issueSvid(rootB, { uris: ['spiffe://b.test/partner'] });
    expect(verifySvidThroughSet(h.set, partner.der)).toBe('verified');
    h.agent.setBundles({ x509: new Map([['a.test', [rootA]]]), jwt: new Map([['a.test', spiffeBundleJson([])]]) });
    await until(() => h.set.get('b.test') === undefined, 'b.test withdrawn');
    const rogue = await createRootCa({ trustDomain: 'b.test', name: 'Rogue B' });
    const forged = await issueSvid(rogue, { uris: ['spiffe://b.test/partner'] });
    expect(() => verifySvidThroughSet(h.set, forged.der)).toThrow(
      expect.objectContaining({ code: 'untrusted_svid', message: 'the trust bundle of b.test was withdrawn by its source' }),
    );
  });

  it('with its own trust_domain, its verifier vouches for that trust domain only; a federated one is verified by spiffe://<td>', async () => {
    const h = await harness({ ownTrustDomain: 'a.test' });
    expect(h.set.get('a.test')?.verifier).toBe('https://spire.test');
    expect(h.set.get('b.test')?.verifier).toBe('spiffe://b.test');
    expect(h.logs).not.toContain(SHARED_VERIFIER_WARNING);
  });

  it('without trust_domain, one verifier for every trust domain, and a warning once several are delivered', async () => {
    const h = await harness();
    expect(h.set.get('b.test')?.verifier).toBe('https://spire.test');
    expect(h.logs.filter((l) => l === SHARED_VERIFIER_WARNING)).toHaveLength(1);
  });

  it('warns once when the agent does not deliver the configured trust_domain (a wrong one)', async () => {
    const h = await harness({ ownTrustDomain: 'c.test' });
    expect(h.set.get('a.test')?.verifier).toBe('spiffe://a.test');
    expect(h.logs.filter((l) => l.startsWith("the Workload API does not deliver this source's trust_domain"))).toHaveLength(1);
  });

  it('its own trust_domain is pending until the agent delivers it', () => {
    const set = new BundleSet();
    const source = new WorkloadApiBundleSource(set, { label: 'workload_api#0', verifier: 'v', address: 'unix:///nonexistent/agent.sock', ownTrustDomain: 'a.test' });
    expect(set.pendingReason('a.test')).toBe('the trust bundle of a.test is configured but not loaded yet');
    source.received('x509', { crl: [], bundles: { 'spiffe://a.test': rootA.der } });
    expect(set.isPending('a.test')).toBe(false);
  });

  it('refuses a message that does not parse and keeps the previous bundles', async () => {
    const h = await harness();
    const good = h.set.get('a.test');
    h.agent.setBundles({ x509: new Map([['a.test', [rootA]], ['Bad_TD', [rootB]]]), jwt: new Map([['a.test', spiffeBundleJson([], [{ kid: jwtA.kid, key: jwtA.publicKey }])]]) });
    await until(() => h.refreshes.includes('workload_api#0:error'), 'refused update');
    expect(h.set.get('a.test')).toBe(good);
    expect(h.logs).toContain('Workload API bundle update refused; keeping the previous bundles');
  });

  it('PERMISSION_DENIED withdraws the authorities (Workload API §5.2.2: cease using them), the trust domains staying known, until the agent serves again', async () => {
    const h = await harness();
    expect(h.set.trustDomains()).toEqual(['a.test', 'b.test']);
    const svid = await issueSvid(rootA, { uris: ['spiffe://a.test/w'] });
    expect(verifySvid([svid.der], (td) => h.set.get(td), TEST_NOW).chain).not.toBeNull();
    h.agent.refuse(grpc.status.PERMISSION_DENIED);
    const empty = (td: string): boolean => h.set.get(td)?.x509Authorities.length === 0 && h.set.get(td)?.jwtAuthorities.size === 0;
    await until(() => empty('a.test') && empty('b.test'), 'authorities withdrawn');
    expect(h.set.trustDomains()).toEqual(['a.test', 'b.test']); // never "no bundle configured", which Envoy's word alone would then pass
    expect(() => verifySvid([svid.der], (td) => h.set.get(td), TEST_NOW)).toThrow(
      expect.objectContaining({ code: 'untrusted_svid', message: 'the trust bundle of a.test has no X.509 authorities' }),
    );
    expect(h.source.isConnected).toBe(false);
    expect(h.logs).toContain('SPIFFE Workload API denied the stream (PERMISSION_DENIED); its bundles are withdrawn until it delivers again');
    expect(h.refreshes).toContain('workload_api#0:error');
    h.agent.refuse(null);
    await until(() => h.source.isConnected && h.set.get('a.test')?.x509Authorities.length === 1, 'bundles again');
    expect([...(h.set.get('a.test')?.jwtAuthorities.keys() ?? [])]).toEqual(['a-jwt-1']);
  });

  it('a stream that merely fails (UNAVAILABLE) keeps the bundles in force', async () => {
    const h = await harness();
    const bundle = h.set.get('a.test');
    h.agent.refuse(grpc.status.UNAVAILABLE);
    await until(() => !h.source.isConnected, 'disconnect');
    await new Promise((r) => setTimeout(r, 100));
    expect(h.set.get('a.test')).toBe(bundle);
  });

  it('refuses a message with no bundle, or naming a trust domain twice, and keeps the previous set', async () => {
    const h = await harness();
    const good = h.set.get('a.test');
    h.agent.push('x509', { crl: [], bundles: {} });
    await until(() => h.refreshes.includes('workload_api#0:error'), 'refused empty');
    h.agent.push('x509', { crl: [], bundles: { 'spiffe://a.test': rootA.der, 'a.test': rootB.der } });
    await until(() => h.refreshes.filter((r) => r === 'workload_api#0:error').length === 2, 'refused duplicate');
    expect(h.set.get('a.test')).toBe(good);
    expect(h.set.get('b.test')?.x509Authorities).toHaveLength(1);
  });

  it('is not connected while the agent sends only messages it refuses', async () => {
    const agent = new FakeWorkloadApiAgent();
    agent.setBundles({ x509: new Map(), jwt: new Map([['a.test', spiffeBundleJson([])]]) }); // an empty X.509 map: refused
    await agent.start();
    const set = new BundleSet();
    const connected: boolean[] = [];
    const source = new WorkloadApiBundleSource(set, {
      label: 'workload_api#0',
      verifier: 'https://spire.test',
      address: agent.address,
      startupTimeoutMs: 300,
      onConnected: (c) => void connected.push(c),
    });
    cleanups.push(async () => {
      await source.close();
      await agent.close();
    });
    await source.start();
    expect([source.isConnected, connected, set.trustDomains()]).toEqual([false, [false], []]);
  });

  it('keeps the bundles while the agent is away and reconnects when it comes back', async () => {
    const h = await harness();
    const bundle = h.set.get('a.test');
    await h.agent.stop();
    await until(() => !h.source.isConnected, 'disconnect');
    expect(h.connected).toEqual([false, true, false]);
    expect(h.set.get('a.test')).toBe(bundle);
    await new Promise((r) => setTimeout(r, 150)); // a few failed reconnect attempts
    expect(h.set.get('a.test')).toBe(bundle);

    h.agent.setBundles({ x509: new Map([['a.test', [rootA2]]]), jwt: new Map([['a.test', spiffeBundleJson([])]]) });
    await h.agent.start();
    await until(() => h.source.isConnected, 'reconnect');
    expect(h.connected).toEqual([false, true, false, true]);
    expect(h.agent.accepted.x509).toBeGreaterThanOrEqual(2);
    await until(() => h.set.get('a.test')?.x509Authorities[0]?.x509.subject === rootA2.cert.subject, 'bundles after reconnect');
    expect(h.logs).toContain('SPIFFE Workload API stream lost; reconnecting (bundles stay in force)');
  });

  it('start() gives up waiting after the startup timeout when no agent listens', async () => {
    const set = new BundleSet();
    const states: boolean[] = [];
    const source = new WorkloadApiBundleSource(set, {
      label: 'workload_api#1',
      verifier: 'v',
      address: 'unix:///nonexistent/chio-test/agent.sock',
      startupTimeoutMs: 100,
      initialBackoffMs: 20,
      maxBackoffMs: 50,
      onConnected: (c) => void states.push(c),
    });
    cleanups.push(() => source.close());
    const started = Date.now();
    await source.start();
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(source.isConnected).toBe(false);
    expect(states).toEqual([false]);
    expect(set.trustDomains()).toEqual([]);
    // serving without the agent's bundles: any SVID is untrusted until it delivers, never "no bundle"
    const rogue = await createRootCa({ trustDomain: 'a.test', name: 'Rogue A' });
    const forged = await issueSvid(rogue, { uris: ['spiffe://a.test/w'] });
    expect(() => verifySvidThroughSet(set, forged.der)).toThrow(
      expect.objectContaining({
        code: 'untrusted_svid',
        message: 'no trust bundle yet: bundle source workload_api#1 has not delivered, and the bundle of a.test may come from it',
      }),
    );
  });

  it('publishes nothing before the X.509 stream delivered (a JWT-only bundle would make X.509-SVIDs untrusted)', () => {
    const set = new BundleSet();
    const source = new WorkloadApiBundleSource(set, { label: 'workload_api#0', verifier: 'v', address: 'unix:///nonexistent/agent.sock' });
    const jwks = Buffer.from(spiffeBundleJson([], [{ kid: jwtA.kid, key: jwtA.publicKey }]));
    source.received('jwt', { bundles: { 'spiffe://a.test': jwks } });
    expect(set.get('a.test')).toBeUndefined();
    source.received('x509', { crl: [], bundles: { 'spiffe://a.test': rootA.der, 'b.test': rootB.der } });
    expect(set.get('a.test')?.x509Authorities).toHaveLength(1);
    expect([...(set.get('a.test')?.jwtAuthorities.keys() ?? [])]).toEqual(['a-jwt-1']);
    expect(set.get('b.test')?.jwtAuthorities.size).toBe(0);
  });

  it('rejects an address that is not unix:///absolute', () => {
    expect(() => new WorkloadApiBundleSource(new BundleSet(), { label: 'x', verifier: 'v', address: 'tcp://127.0.0.1:1' })).toThrow(TypeError);
  });
});
