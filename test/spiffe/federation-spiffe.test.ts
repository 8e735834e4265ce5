/**
 * The federation source with profile https_spiffe (src/spiffe/bundle-sources.ts; SPIFFE Federation
 * §5.2.2): the endpoint's certificate must be an X509-SVID of the configured endpoint SPIFFE ID that
 * chains to the bundle of that ID's trust domain. Self-serving: the bootstrap bundle authenticates
 * the first fetch, the latest fetched bundle every later one (so the foreign trust domain can
 * rotate its roots). Not self-serving: the bundle chio holds for the endpoint's trust domain.
 * Host names play no part: the test endpoint's certificate has no DNS name at all.
 */
import { KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, type SourceHooks } from '../../src/spiffe/bundle.js';
import { FederationBundleSource } from '../../src/spiffe/bundle-sources.js';
import { createIntermediateCa, createRootCa, issueSvid, type IssuedSvid, type TestCa } from '../helpers/test-ca.js';
import { contentOf, spiffeBundleJson } from './trust-helpers.js';

const SERVER_ID = 'spiffe://a.test/spire/server';

let rootA: TestCa;
let rootA2: TestCa;
let interA: TestCa;
let rootB: TestCa;
let outsider: TestCa;

beforeAll(async () => {
  rootA = await createRootCa({ trustDomain: 'a.test', name: 'Root A' });
  rootA2 = await createRootCa({ trustDomain: 'a.test', name: 'Root A2' });
  interA = await createIntermediateCa(rootA, { name: 'Inter A' });
  rootB = await createRootCa({ trustDomain: 'b.test', name: 'Root B' });
  outsider = await createRootCa({ trustDomain: 'a.test', name: 'Outsider' });
});

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Endpoint {
  url: string;
  body: string;
  hits: number;
  /** the X509-SVID (with its issuer chain) the server presents */
  present(svid: IssuedSvid): void;
}

function tlsOf(svid: IssuedSvid): { key: string; cert: string } {
  return { key: KeyObject.from(svid.keys.privateKey).export({ format: 'pem', type: 'pkcs8' }).toString(), cert: svid.chainPem };
}

async function spiffeEndpoint(svid: IssuedSvid, body: string): Promise<Endpoint> {
  const server: Server = createServer(tlsOf(svid), (_req, res) => {
    endpoint.hits++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(endpoint.body);
  });
  const endpoint: Endpoint = {
    url: '',
    body,
    hits: 0,
    present: (next) => server.setSecureContext(tlsOf(next)),
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  endpoint.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/bundle`;
  return endpoint;
}

function recordingHooks(): SourceHooks & { refreshes: string[]; errors: string[] } {
  const refreshes: string[] = [];
  const errors: string[] = [];
  return {
    refreshes,
    errors,
    log: { error: (o, m) => void errors.push(`${m}: ${(o as { err?: string }).err ?? ''}`), warn: () => undefined, info: () => undefined },
    refreshed: (source, result) => void refreshes.push(`${source}:${result}`),
  };
}

function bootstrapFile(...roots: TestCa[]): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'chio-fed-')), 'a.test.pem');
  writeFileSync(file, roots.map((r) => r.pem).join(''));
  return file;
}

function source(set: BundleSet, url: string, hooks: SourceHooks, spiffe: { endpointId: string; bootstrapFile?: string; stateFile?: string }, trustDomain = 'a.test'): FederationBundleSource {
  const s = new FederationBundleSource(set, { label: 'federation#0', verifier: 'https://spire.a.test', trustDomain, url, spiffe, minRefreshMs: 40, maxRefreshMs: 40 }, hooks);
  cleanups.push(() => s.close());
  return s;
}

const subjects = (set: BundleSet, td = 'a.test'): string[] => (set.get(td)?.x509Authorities ?? []).map((c) => c.x509.subject.split('\n')[0] ?? '');

async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('FederationBundleSource, profile https_spiffe', () => {
  it('self-serving: the bootstrap bundle authenticates the first fetch, the latest fetched bundle the next (a root rotation goes through)', async () => {
    const serverSvid = await issueSvid(interA, { uris: [SERVER_ID] }); // presents its intermediate too
    const endpoint = await spiffeEndpoint(serverSvid, spiffeBundleJson([rootA, rootA2], [], { spiffe_sequence: 1 }));
    const set = new BundleSet();
    const hooks = recordingHooks();
    await source(set, endpoint.url, hooks, { endpointId: SERVER_ID, bootstrapFile: bootstrapFile(rootA) }).start();
    expect(hooks.errors).toEqual([]);
    expect(subjects(set)).toEqual(['CN=Root A', 'CN=Root A2']);

    // the foreign trust domain moves to Root A2 only: the bootstrap file (Root A) no longer knows the endpoint's issuer
    endpoint.present(await issueSvid(rootA2, { uris: [SERVER_ID] }));
    endpoint.body = spiffeBundleJson([rootA2], [], { spiffe_sequence: 2 });
    await until(() => subjects(set).length === 1, 'the rotated bundle');
    expect(subjects(set)).toEqual(['CN=Root A2']);
    const hitsAfterRotation = endpoint.hits;
    await until(() => endpoint.hits >= hitsAfterRotation + 2, 'two more polls');
    expect(hooks.refreshes.every((r) => r === 'federation#0:ok')).toBe(true);
  });

  it('self-serving, across a restart: the bundle the last run fetched (kept beside the key) authenticates after the endpoint rotated past the bootstrap file, and its sequence still refuses a rollback', async () => {
    const endpoint = await spiffeEndpoint(await issueSvid(rootA, { uris: [SERVER_ID] }), spiffeBundleJson([rootA, rootA2], [], { spiffe_sequence: 1 }));
    const bootstrap = bootstrapFile(rootA);
    const stateFile = path.join(mkdtempSync(path.join(tmpdir(), 'chio-fed-state-')), 'federation-a.test.json');
    const first = source(new BundleSet(), endpoint.url, recordingHooks(), { endpointId: SERVER_ID, bootstrapFile: bootstrap, stateFile });
    await first.start();
    await first.close();
    expect(readFileSync(stateFile, 'utf8')).toBe(endpoint.body);

    // while chio is down the peer moves to Root A2 only; the bootstrap file still holds Root A alone
    endpoint.present(await issueSvid(rootA2, { uris: [SERVER_ID] }));
    endpoint.body = spiffeBundleJson([rootA2], [], { spiffe_sequence: 2 });
    const set = new BundleSet();
    const hooks = recordingHooks();
    await source(set, endpoint.url, hooks, { endpointId: SERVER_ID, bootstrapFile: bootstrap, stateFile }).start();
    expect(hooks.errors).toEqual([]);
    expect(subjects(set)).toEqual(['CN=Root A2']);
    // without the kept bundle the same start fails
    const lost = recordingHooks();
    await source(new BundleSet(), endpoint.url, lost, { endpointId: SERVER_ID, bootstrapFile: bootstrap }).start();
    expect(lost.refreshes).toEqual(['federation#0:error']);

    // a rollback to the sequence before the kept one is refused after a restart too
    endpoint.body = spiffeBundleJson([rootA2], [], { spiffe_sequence: 1 });
    const rolled = recordingHooks();
    await source(new BundleSet(), endpoint.url, rolled, { endpointId: SERVER_ID, bootstrapFile: bootstrap, stateFile }).start();
    expect(rolled.errors).toEqual(['federation bundle fetch failed; keeping the last good bundle: bundle spiffe_sequence 1 is lower than the held 2 (rollback refused)']);
  });

  it('an endpoint presenting another SPIFFE ID, or an SVID the bundle does not vouch for, is refused and nothing is loaded', async () => {
    const wrongId = await spiffeEndpoint(await issueSvid(rootA, { uris: ['spiffe://a.test/impostor'] }), spiffeBundleJson([rootA]));
    const set = new BundleSet();
    const hooks = recordingHooks();
    await source(set, wrongId.url, hooks, { endpointId: SERVER_ID, bootstrapFile: bootstrapFile(rootA) }).start();
    expect(set.get('a.test')).toBeUndefined();
    expect(hooks.refreshes).toEqual(['federation#0:error']);
    expect(hooks.errors).toEqual([
      'federation bundle fetch failed; keeping the last good bundle: the bundle endpoint presented an X509-SVID for spiffe://a.test/impostor, not spiffe://a.test/spire/server',
    ]);

    const untrusted = await spiffeEndpoint(await issueSvid(outsider, { uris: [SERVER_ID] }), spiffeBundleJson([rootA]));
    const set2 = new BundleSet();
    const hooks2 = recordingHooks();
    await source(set2, untrusted.url, hooks2, { endpointId: SERVER_ID, bootstrapFile: bootstrapFile(rootA) }).start();
    expect(set2.get('a.test')).toBeUndefined();
    expect(hooks2.refreshes).toEqual(['federation#0:error']);
    expect(hooks2.errors).toEqual(['federation bundle fetch failed; keeping the last good bundle: unable to verify the first certificate']); // OpenSSL, against the bundle's roots
  });

  it('a leaf that is not an X509-SVID (a CA certificate with the endpoint ID) is refused by chio even though OpenSSL accepts the chain', async () => {
    const caAsServer = await issueSvid(rootA, { uris: [SERVER_ID], ca: true, keyUsage: ['digitalSignature', 'keyCertSign'] });
    const endpoint = await spiffeEndpoint(caAsServer, spiffeBundleJson([rootA]));
    const set = new BundleSet();
    const hooks = recordingHooks();
    await source(set, endpoint.url, hooks, { endpointId: SERVER_ID, bootstrapFile: bootstrapFile(rootA) }).start();
    expect(set.get('a.test')).toBeUndefined();
    expect(hooks.errors).toEqual([
      'federation bundle fetch failed; keeping the last good bundle: the bundle endpoint\'s certificate is not a valid X509-SVID of a.test: certificate is a CA (basicConstraints cA=true); an X509-SVID leaf has cA=false',
    ]);
  });

  it('not self-serving: the endpoint of another trust domain is authenticated with the bundle chio holds for it', async () => {
    const bServer = 'spiffe://b.test/bundle-server';
    const endpoint = await spiffeEndpoint(await issueSvid(rootB, { uris: [bServer] }), spiffeBundleJson([rootA]));
    const set = new BundleSet();
    const other = set.addSource({ source: 'pem#0', verifier: 'https://spire.b.test' }, ['b.test']);
    const hooks = recordingHooks();
    const fed = source(set, endpoint.url, hooks, { endpointId: bServer });
    await fed.start();
    expect(hooks.errors).toEqual(['federation bundle fetch failed; keeping the last good bundle: no trust bundle of b.test to authenticate the bundle endpoint spiffe://b.test/bundle-server']);
    expect(set.get('a.test')).toBeUndefined();

    set.replace(other, [contentOf('b.test', [rootB])]);
    await until(() => subjects(set).length === 1, 'a.test through b.test');
    expect(subjects(set)).toEqual(['CN=Root A']);
  });
});
