/**
 * The Check listener with TLS: client certificates required, only allowed callers' SPIFFE IDs may
 * ask, and the service's own SVID from the SPIFFE Workload API rotates without a restart.
 */
import { webcrypto, X509Certificate } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCheckClient } from '../../src/check/client.js';
import type { RawCheckRequest } from '../../src/check/envoy.js';
import { CallerAllowList, materialFromX509SvidResponse, readTlsFiles } from '../../src/server/tls.js';
import { ChioError } from '../../src/errors.js';
import { createRootCa, issueSvid, type IssuedSvid, type TestCa } from '../helpers/test-ca.js';
import { fixtureRequest, startTestService, type TestService } from '../helpers/service.js';
import { FakeWorkloadApiAgent } from '../helpers/workload-api-server.js';

const SERVER_ID = 'spiffe://example.org/ns/chio/sa/chio-authz';
const SERVER_NAME = 'chio-authz.chio-system.svc';
const ENVOY_ID = 'spiffe://example.org/ns/istio-system/sa/ingress';
const ROGUE_ID = 'spiffe://example.org/ns/default/sa/rogue';

let root: TestCa;
let server: IssuedSvid;
let envoy: IssuedSvid;
let rogue: IssuedSvid;

async function keyPem(svid: IssuedSvid): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', svid.keys.privateKey));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PRIVATE KEY-----\n`.replace('\n\n', '\n');
}

async function keyDer(svid: IssuedSvid): Promise<Buffer> {
  return Buffer.from(await webcrypto.subtle.exportKey('pkcs8', svid.keys.privateKey));
}

/** Both gRPC transports (listen.grpc_transport) serve TLS the same way. */
const TRANSPORTS = ['native', 'grpc-js'] as const;

function tlsConfig(extra: string, transport: (typeof TRANSPORTS)[number]): (dir: string) => string {
  return () =>
    [
      'schema: chio.config.v1',
      'listen:',
      '  grpc: 127.0.0.1:0',
      '  admin: 127.0.0.1:0',
      `  grpc_transport: ${transport}`,
      '  grpc_tls:',
      extra,
      'policy: ./policy.yaml',
      'keys: { receipt_signing_seed: ./data/kernel.seed }',
      'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl } ] }',
      '',
    ].join('\n');
}

async function clientFor(svc: TestService, who: IssuedSvid | null) {
  const credentials =
    who === null
      ? grpc.credentials.createSsl(Buffer.from(root.pem))
      : grpc.credentials.createSsl(Buffer.from(root.pem), Buffer.from(await keyPem(who)), Buffer.from(who.pem));
  return createCheckClient(`127.0.0.1:${svc.service.grpcPort}`, credentials, { 'grpc.ssl_target_name_override': SERVER_NAME });
}

const request = (): RawCheckRequest => fixtureRequest('http-mtls-spiffe-full');

beforeAll(async () => {
  root = await createRootCa({ trustDomain: 'example.org' });
  server = await issueSvid(root, { uris: [SERVER_ID], dns: [SERVER_NAME] });
  envoy = await issueSvid(root, { uris: [ENVOY_ID] });
  rogue = await issueSvid(root, { uris: [ROGUE_ID] });
});

describe.each(TRANSPORTS)('Check listener with TLS from files (%s transport)', (transport) => {
  let svc: TestService;

  beforeAll(async () => {
    svc = await startTestService({
      configText: (dir) => {
        writeFileSync(path.join(dir, 'server.pem'), server.pem);
        writeFileSync(path.join(dir, 'ca.pem'), root.pem);
        return tlsConfig(
          [
            '    cert_file: ./server.pem',
            '    key_file: ./server.key',
            '    client_ca_file: ./ca.pem',
            `    allowed_callers: [${ENVOY_ID}, spiffe://example.org/ns/mesh/*]`,
          ].join('\n'),
          transport,
        )(dir);
      },
      beforeStart: async (dir) => writeFileSync(path.join(dir, 'server.key'), await keyPem(server)),
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('answers an allowed caller', async () => {
    const client = await clientFor(svc, envoy);
    try {
      const res = await client.check(request());
      expect(res.status.code).toBe(0);
    } finally {
      client.close();
    }
  });

  it('refuses a caller whose SPIFFE ID is not allowed, with an RPC error and a metric', async () => {
    const client = await clientFor(svc, rogue);
    try {
      await expect(client.check(request())).rejects.toMatchObject({
        code: grpc.status.PERMISSION_DENIED,
        details: `caller ${ROGUE_ID} is not in listen.grpc_tls.allowed_callers`,
      });
    } finally {
      client.close();
    }
    const text = await (await fetch(`${svc.adminUrl}/metrics`)).text();
    expect(text).toContain('chio_check_callers_refused_total 1');
  });

  it('refuses a caller without a client certificate at the TLS handshake', async () => {
    const client = await clientFor(svc, null);
    try {
      await expect(client.check(request(), 2000)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    } finally {
      client.close();
    }
  });
});

describe('CallerAllowList', () => {
  it('matches exact IDs and segment-aware prefixes only', async () => {
    const list = new CallerAllowList([ENVOY_ID, 'spiffe://example.org/ns/mesh/*']);
    const meshEnvoy = await issueSvid(root, { uris: ['spiffe://example.org/ns/mesh/sa/gw'] });
    const meshX = await issueSvid(root, { uris: ['spiffe://example.org/ns/meshX/sa/gw'] });
    expect(list.check({ raw: envoy.der })).toBeNull();
    expect(list.check({ raw: meshEnvoy.der })).toBeNull();
    expect(list.check({ raw: meshX.der })).toBe('caller spiffe://example.org/ns/meshX/sa/gw is not in listen.grpc_tls.allowed_callers');
    expect(list.check(undefined)).toBe('the caller presented no client certificate');
  });

  it('rejects malformed entries', () => {
    expect(() => new CallerAllowList(['spiffe://Example.org/x'])).toThrow(/malformed|upper-case/i);
  });
});

describe.each(TRANSPORTS)('Check listener with the SVID from the SPIFFE Workload API (%s transport)', (transport) => {
  let agent: FakeWorkloadApiAgent;
  let svc: TestService;

  beforeAll(async () => {
    agent = new FakeWorkloadApiAgent();
    await agent.start();
    agent.setSvid({ spiffeId: SERVER_ID, chainDer: server.der, keyPkcs8Der: await keyDer(server), bundleDer: root.der });
    svc = await startTestService({
      configText: tlsConfig([`    workload_api: ${agent.address}`, `    allowed_callers: [${ENVOY_ID}]`].join('\n'), transport),
    });
  });
  afterAll(async () => {
    await svc?.close();
    await agent?.close();
  });

  function serverSerial(): Promise<string> {
    return new Promise(async (resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port: svc.service.grpcPort,
        servername: SERVER_NAME,
        ca: root.pem,
        cert: envoy.pem,
        key: await keyPem(envoy),
        ALPNProtocols: ['h2'],
      });
      socket.once('secureConnect', () => {
        const serial = socket.getPeerX509Certificate()?.serialNumber ?? '';
        socket.destroy();
        resolve(serial);
      });
      socket.once('error', reject);
    });
  }

  it('serves with the agent SVID, answers allowed callers, and rotates without a restart', async () => {
    expect(await serverSerial()).toBe(new X509Certificate(server.pem).serialNumber);
    const client = await clientFor(svc, envoy);
    try {
      expect((await client.check(request())).status.code).toBe(0);
    } finally {
      client.close();
    }
    const rotated = await issueSvid(root, { uris: [SERVER_ID], dns: [SERVER_NAME] });
    agent.setSvid({ spiffeId: SERVER_ID, chainDer: rotated.der, keyPkcs8Der: await keyDer(rotated), bundleDer: root.der });
    const want = new X509Certificate(rotated.pem).serialNumber;
    const deadline = Date.now() + 5000;
    let seen = '';
    while (Date.now() < deadline && (seen = await serverSerial()) !== want) await new Promise((r) => setTimeout(r, 50));
    expect(seen).toBe(want);
    const again = await clientFor(svc, envoy);
    try {
      expect((await again.check(request())).status.code).toBe(0);
    } finally {
      again.close();
    }
  });
});

describe('client CAs are one trust domain\'s (a partner CA must not vouch for a caller named in ours)', () => {
  it('workload_api: the federated bundles are not client CAs, only the agent\'s own bundle is', async () => {
    const partner = await createRootCa({ trustDomain: 'partner.example' });
    const { material } = materialFromX509SvidResponse({
      svids: [{ spiffe_id: SERVER_ID, x509_svid: server.der, x509_svid_key: await keyDer(server), bundle: root.der }],
      federated_bundles: { 'spiffe://partner.example': partner.der },
    });
    const cas = material.caCertificate.toString('utf8').match(/-----BEGIN CERTIFICATE-----/g) ?? [];
    expect(cas).toHaveLength(1);
    expect(new X509Certificate(material.caCertificate).fingerprint256).toBe(new X509Certificate(root.pem).fingerprint256);
  });

  it('files: a client_ca_file holding CAs of two trust domains is a config error naming both', async () => {
    const partner = await createRootCa({ trustDomain: 'partner.example' });
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-tls-ca-'));
    writeFileSync(path.join(dir, 'server.pem'), server.pem);
    writeFileSync(path.join(dir, 'server.key'), await keyPem(server));
    writeFileSync(path.join(dir, 'ca.pem'), root.pem + partner.pem);
    const files = { certFile: path.join(dir, 'server.pem'), keyFile: path.join(dir, 'server.key'), clientCaFile: path.join(dir, 'ca.pem') };
    expect(() => readTlsFiles(files)).toThrow(
      new ChioError(
        'config_invalid',
        `listen.grpc_tls: client_ca_file ${files.clientCaFile} holds CAs of 2 trust domains (example.org, partner.example): a CA of one would vouch for callers named in another; give the callers' trust domain's CAs only`,
      ),
    );
    writeFileSync(path.join(dir, 'ca.pem'), root.pem);
    expect(readTlsFiles(files).caCertificate.toString('utf8')).toBe(root.pem);
  });

  it('each TLS file that cannot be used is named with its setting', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-tls-files-'));
    const files = { certFile: path.join(dir, 'server.pem'), keyFile: path.join(dir, 'server.key'), clientCaFile: path.join(dir, 'ca.pem') };
    writeFileSync(files.certFile, server.pem);
    writeFileSync(files.keyFile, await keyPem(envoy));
    writeFileSync(files.clientCaFile, 'garbage\n');
    expect(() => readTlsFiles(files)).toThrow(`listen.grpc_tls: key_file ${files.keyFile}: the key does not belong to the certificate`);
    writeFileSync(files.keyFile, 'not a key\n');
    expect(() => readTlsFiles(files)).toThrow(new RegExp(`^listen\\.grpc_tls: key_file ${files.keyFile.replace(/[.]/g, '\\.')}: not an unencrypted PEM private key \\(`));
    writeFileSync(files.keyFile, await keyPem(server));
    expect(() => readTlsFiles(files)).toThrow(new RegExp(`^listen\\.grpc_tls: client_ca_file ${files.clientCaFile.replace(/[.]/g, '\\.')}: not PEM X\\.509 certificates \\(`));
  });
});
