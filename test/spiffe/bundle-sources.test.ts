/**
 * File and federation bundle sources (src/spiffe/bundle-sources.ts): rotation picked up without
 * a restart, bad updates keep the last good bundle, the federation endpoint over HTTPS with a
 * test CA.
 */
import { KeyObject } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ChioError } from '../../src/errors.js';
import { BundleSet, type SourceHooks } from '../../src/spiffe/bundle.js';
import { FederationBundleSource, FileBundleSource } from '../../src/spiffe/bundle-sources.js';
import { createIntermediateCa, createRootCa, issueSvid, type TestCa } from '../helpers/test-ca.js';
import { ecKeyPair, spiffeBundleJson } from './trust-helpers.js';

let rootA: TestCa;
let rootA2: TestCa;
let interA: TestCa;
let webCa: TestCa;
let otherWebCa: TestCa;
let tlsKey: string;
let tlsCert: string;

beforeAll(async () => {
  rootA = await createRootCa({ trustDomain: 'a.test', name: 'Root A' });
  rootA2 = await createRootCa({ trustDomain: 'a.test', name: 'Root A2' });
  interA = await createIntermediateCa(rootA);
  webCa = await createRootCa({ name: 'Test Web CA', uri: null });
  otherWebCa = await createRootCa({ name: 'Other Web CA', uri: null });
  const server = await issueSvid(webCa, { uris: [], dns: ['localhost'] });
  tlsCert = server.pem;
  tlsKey = KeyObject.from(server.keys.privateKey).export({ format: 'pem', type: 'pkcs8' }).toString();
});

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function recordingHooks(): SourceHooks & { refreshes: string[]; messages: string[] } {
  const refreshes: string[] = [];
  const messages: string[] = [];
  const log = (_o: object, m: string) => void messages.push(m);
  return { refreshes, messages, log: { error: log, warn: log, info: log }, refreshed: (s, r) => void refreshes.push(`${s}:${r}`) };
}

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'chio-bundles-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Atomic replace, as operators and ConfigMaps do. */
function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

describe('FileBundleSource', () => {
  it('loads a PEM bundle and picks up a rotated file without a restart', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'a.pem');
    writeFileSync(file, rootA.pem);
    const set = new BundleSet();
    const hooks = recordingHooks();
    const source = new FileBundleSource(set, { label: 'pem#0', verifier: 'https://spire.test', trustDomain: 'a.test', file, format: 'pem', pollIntervalMs: 50, debounceMs: 10 }, hooks);
    cleanups.push(() => source.close());
    expect(set.isPending('a.test')).toBe(true);
    await source.start();
    const first = set.get('a.test');
    expect(first?.x509Authorities[0]?.x509.subject).toBe(rootA.cert.subject);
    expect(first?.verifier).toBe('https://spire.test');
    expect(first?.source).toBe('pem#0');

    replaceFile(file, rootA.pem + rootA2.pem);
    await until(() => set.get('a.test')?.x509Authorities.length === 2, 'rotation');
    expect(set.get('a.test')?.generation).not.toBe(first?.generation);
    expect(hooks.refreshes).toEqual(['pem#0:ok']);
    expect(hooks.messages).toContain('trust bundle reloaded');
  });

  it('keeps the last good bundle when the new file is bad, and recovers', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'a.pem');
    writeFileSync(file, rootA.pem);
    const set = new BundleSet();
    const hooks = recordingHooks();
    const source = new FileBundleSource(set, { label: 'pem#3', verifier: 'v', trustDomain: 'a.test', file, format: 'pem', pollIntervalMs: 50, debounceMs: 10 }, hooks);
    cleanups.push(() => source.close());
    await source.start();
    const good = set.get('a.test');

    replaceFile(file, 'not a certificate\n');
    await until(() => hooks.refreshes.includes('pem#3:error'), 'refresh error');
    expect(set.get('a.test')).toBe(good);
    expect(hooks.messages).toContain('trust bundle reload failed; keeping the last good bundle');

    replaceFile(file, rootA2.pem);
    await until(() => set.get('a.test')?.x509Authorities[0]?.x509.subject === rootA2.cert.subject, 'recovery');
    expect(hooks.refreshes.at(-1)).toBe('pem#3:ok');
  });

  it('loads a SPIFFE bundle JSON file with configured intermediates and JWT keys', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'a.json');
    const inter = path.join(dir, 'inter.pem');
    const jwt = ecKeyPair('k1');
    writeFileSync(file, spiffeBundleJson([rootA], [{ kid: 'k1', key: jwt.publicKey }], { spiffe_sequence: 7, spiffe_refresh_hint: 60 }));
    writeFileSync(inter, interA.pem);
    const set = new BundleSet();
    const source = new FileBundleSource(set, { label: 'spiffe_bundle#1', verifier: 'v', trustDomain: 'a.test', file, format: 'spiffe_bundle', intermediatesFile: inter });
    cleanups.push(() => source.close());
    await source.start();
    const bundle = set.get('a.test');
    expect(bundle?.x509Authorities).toHaveLength(1);
    expect(bundle?.intermediates[0]?.x509.subject).toBe(interA.cert.subject);
    expect([...(bundle?.jwtAuthorities.keys() ?? [])]).toEqual(['k1']);
    expect(bundle?.sequence).toBe(7);
  });

  it('fails the start on a missing or bad file', async () => {
    const dir = tempDir();
    const missing = new FileBundleSource(new BundleSet(), { label: 'pem#0', verifier: 'v', trustDomain: 'a.test', file: path.join(dir, 'nope.pem'), format: 'pem' });
    const err = await missing.start().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ChioError);
    expect((err as ChioError).code).toBe('file_not_found');
    expect((err as ChioError).message).toBe(`trust bundle pem#0 (a.test): cannot read ${path.join(dir, 'nope.pem')}: ENOENT`);

    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, '{"keys": 3}');
    const source = new FileBundleSource(new BundleSet(), { label: 'spiffe_bundle#0', verifier: 'v', trustDomain: 'a.test', file: bad, format: 'spiffe_bundle' });
    const err2 = await source.start().then(() => null, (e: unknown) => e);
    expect((err2 as ChioError).code).toBe('config_invalid');
    expect((err2 as ChioError).message).toBe(
      `trust bundle spiffe_bundle#0 (a.test): ${bad}: not a SPIFFE bundle: keys: Invalid input: expected array, received number`,
    );
  });
});

interface Endpoint {
  url: string;
  status: number;
  body: string;
  hits: number;
}

async function bundleEndpoint(body: string): Promise<Endpoint> {
  const endpoint: Endpoint = { url: '', status: 200, body, hits: 0 };
  const server: Server = createServer({ key: tlsKey, cert: tlsCert }, (_req, res) => {
    endpoint.hits++;
    res.writeHead(endpoint.status, { 'content-type': 'application/json' });
    res.end(endpoint.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  endpoint.url = `https://localhost:${(server.address() as AddressInfo).port}/bundle`;
  return endpoint;
}

function caFile(ca: TestCa): string {
  const file = path.join(tempDir(), 'web-ca.pem');
  writeFileSync(file, ca.pem);
  return file;
}

describe('FederationBundleSource (https_web)', () => {
  it('fetches the bundle over HTTPS with a private web CA and polls at the bounded refresh hint', async () => {
    const endpoint = await bundleEndpoint(spiffeBundleJson([rootA], [], { spiffe_sequence: 1, spiffe_refresh_hint: 0 }));
    const set = new BundleSet();
    const hooks = recordingHooks();
    const source = new FederationBundleSource(
      set,
      { label: 'federation#0', verifier: 'https://a.test/bundle', trustDomain: 'a.test', url: endpoint.url, caFile: caFile(webCa), minRefreshMs: 30, maxRefreshMs: 60 },
      hooks,
    );
    cleanups.push(() => source.close());
    expect(set.isPending('a.test')).toBe(true);
    await source.start();
    expect(set.get('a.test')?.verifier).toBe('https://a.test/bundle');
    expect(set.get('a.test')?.x509Authorities[0]?.x509.subject).toBe(rootA.cert.subject);

    endpoint.body = spiffeBundleJson([rootA2], [], { spiffe_sequence: 2, spiffe_refresh_hint: 0 });
    await until(() => set.get('a.test')?.x509Authorities[0]?.x509.subject === rootA2.cert.subject, 'update');

    endpoint.body = spiffeBundleJson([rootA], [], { spiffe_sequence: 1 }); // rollback
    const hitsBefore = endpoint.hits;
    await until(() => endpoint.hits >= hitsBefore + 2, 'polls');
    expect(set.get('a.test')?.x509Authorities[0]?.x509.subject).toBe(rootA2.cert.subject);
    expect(hooks.refreshes).toContain('federation#0:error');
    expect(hooks.messages).toContain('federation bundle fetch failed; keeping the last good bundle');

    endpoint.status = 500;
    const errorsBefore = hooks.refreshes.filter((r) => r.endsWith(':error')).length;
    await until(() => hooks.refreshes.filter((r) => r.endsWith(':error')).length > errorsBefore, 'HTTP 500 counted');
    expect(set.get('a.test')?.x509Authorities[0]?.x509.subject).toBe(rootA2.cert.subject);
  });

  it('refuses an endpoint whose certificate the configured web CA did not issue', async () => {
    const endpoint = await bundleEndpoint(spiffeBundleJson([rootA]));
    const set = new BundleSet();
    const hooks = recordingHooks();
    const source = new FederationBundleSource(
      set,
      { label: 'federation#1', verifier: 'v', trustDomain: 'a.test', url: endpoint.url, caFile: caFile(otherWebCa), minRefreshMs: 10_000 },
      hooks,
    );
    cleanups.push(() => source.close());
    await source.start();
    expect(hooks.refreshes).toEqual(['federation#1:error']);
    expect(set.get('a.test')).toBeUndefined();
    expect(set.isPending('a.test')).toBe(true);
  });

  it('an endpoint that trickles its answer is cut at the deadline of the whole exchange; start() does not hang', async () => {
    const server: Server = createServer({ key: tlsKey, cert: tlsCert }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const drip = setInterval(() => res.write(' '), 50); // never idle for timeoutMs, never done
      res.on('close', () => clearInterval(drip));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }));
    const url = `https://localhost:${(server.address() as AddressInfo).port}/bundle`;
    const hooks = recordingHooks();
    const source = new FederationBundleSource(
      new BundleSet(),
      { label: 'federation#2', verifier: 'v', trustDomain: 'a.test', url, caFile: caFile(webCa), timeoutMs: 400, minRefreshMs: 60_000 },
      hooks,
    );
    cleanups.push(() => source.close());
    const started = Date.now();
    await source.start();
    expect(Date.now() - started).toBeLessThan(3000);
    expect(hooks.refreshes).toEqual(['federation#2:error']);
    expect(hooks.messages).toEqual(['federation bundle fetch failed; keeping the last good bundle']);
  });

  it('follows redirects to https bundle endpoint URLs (same trust), at most 3, and never one to http or with userinfo', async () => {
    const body = spiffeBundleJson([rootA]);
    let redirects: Record<string, string> = {};
    const hits: string[] = [];
    const server: Server = createServer({ key: tlsKey, cert: tlsCert }, (req, res) => {
      hits.push(req.url ?? '');
      const to = redirects[req.url ?? ''];
      if (to !== undefined) {
        res.writeHead(302, { location: to });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const base = `https://localhost:${(server.address() as AddressInfo).port}`;
    const fetchWith = async (map: Record<string, string>): Promise<{ set: BundleSet; hooks: ReturnType<typeof recordingHooks> }> => {
      redirects = map;
      hits.length = 0;
      const set = new BundleSet();
      const hooks = recordingHooks();
      const source = new FederationBundleSource(set, { label: 'federation#3', verifier: 'v', trustDomain: 'a.test', url: `${base}/bundle`, caFile: caFile(webCa), minRefreshMs: 60_000 }, hooks);
      cleanups.push(() => source.close());
      await source.start();
      return { set, hooks };
    };

    const moved = await fetchWith({ '/bundle': '/cdn/bundle', '/cdn/bundle': `${base}/cdn/v2/bundle` });
    expect(moved.set.get('a.test')?.x509Authorities).toHaveLength(1);
    expect(hits).toEqual(['/bundle', '/cdn/bundle', '/cdn/v2/bundle']);

    const loop = await fetchWith({ '/bundle': '/a', '/a': '/b', '/b': '/c', '/c': '/d' });
    expect(loop.set.get('a.test')).toBeUndefined();
    expect(loop.hooks.refreshes).toEqual(['federation#3:error']);
    expect(hits).toEqual(['/bundle', '/a', '/b', '/c']);

    const plain = await fetchWith({ '/bundle': 'http://localhost/bundle' });
    expect(plain.set.get('a.test')).toBeUndefined();
    const userinfo = await fetchWith({ '/bundle': `https://user:pw@localhost:${(server.address() as AddressInfo).port}/x` });
    expect(userinfo.set.get('a.test')).toBeUndefined();
    expect(hits).toEqual(['/bundle']);
  });

  it('only takes https URLs', () => {
    expect(() => new FederationBundleSource(new BundleSet(), { label: 'f', verifier: 'v', trustDomain: 'a.test', url: 'http://a.test/bundle' })).toThrow(TypeError);
  });
});
