/**
 * TLS on the Check listener: only the mesh's Envoys may ask (SPEC §2, issue "Runs in a real mesh").
 *
 * The listener's certificate, key and client CA come from files (re-read on change) or from the
 * SPIFFE Workload API of the local SPIRE agent (`FetchX509SVID`: the service's own X509-SVID,
 * its key and the bundle; rotation without restart). Both feed one grpc-js CertificateProvider,
 * so a rotated SVID applies to new connections at once. Client certificates are verified by TLS
 * against the CA; the caller's SPIFFE ID (its X509-SVID URI SAN) must then be on the
 * `allowed_callers` list: an exact ID, or `spiffe://td/path/*` for everything under a path.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { z } from 'zod';
import { ChioError, DenyError, describe } from '../errors.js';
import { FileWatch, statKeyOf } from '../file-watch.js';
import { pathHasSegmentPrefix, SpiffeId, TrustDomain, validatePath } from '../spiffe/id.js';
import { splitDerCertificates } from '../spiffe/bundle.js';
import { WorkloadApiStream } from '../spiffe/workload-api.js';
import { parseSvidLeaf } from '../spiffe/x509-svid.js';

type CertificateProvider = grpc.experimental.CertificateProvider;
type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

export interface TlsMaterial {
  /** PEM chain, leaf first */
  readonly certificate: Buffer;
  /** PEM PKCS#8 key */
  readonly privateKey: Buffer;
  /** PEM roots that client certificates must chain to */
  readonly caCertificate: Buffer;
}

/** A CertificateProvider whose material is pushed to it (by a file watcher or the Workload API). */
export class PushedCertificateProvider implements CertificateProvider {
  private material: TlsMaterial | null = null;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly materialListeners = new Set<(material: TlsMaterial) => void>();

  update(material: TlsMaterial): void {
    this.material = material;
    for (const l of this.materialListeners) l(material);
    for (const l of this.caListeners) l({ caCertificate: material.caCertificate });
    for (const l of this.identityListeners) l({ certificate: material.certificate, privateKey: material.privateKey });
  }

  get current(): TlsMaterial | null {
    return this.material;
  }

  /** Every later update, whole (the native transport's `setSecureContext`); returns the unsubscribe. */
  onUpdate(listener: (material: TlsMaterial) => void): () => void {
    this.materialListeners.add(listener);
    return () => this.materialListeners.delete(listener);
  }

  // A new listener hears the current material on the next microtask, not synchronously: grpc-js
  // subscribes to the provider before it registers the watcher that applies the update.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    queueMicrotask(() => {
      if (this.material && this.caListeners.has(listener)) listener({ caCertificate: this.material.caCertificate });
    });
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => {
      const m = this.material;
      if (m && this.identityListeners.has(listener)) listener({ certificate: m.certificate, privateKey: m.privateKey });
    });
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}

/** Reads and checks the three files: the key must match the leaf, every PEM must parse. */
export function readTlsFiles(files: { certFile: string; keyFile: string; clientCaFile: string }): TlsMaterial {
  const read = (file: string, what: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ChioError('config_invalid', `listen.grpc_tls: cannot read ${what} ${file}: ${describe(err)}`);
    }
  };
  const certificate = read(files.certFile, 'cert_file');
  const privateKey = read(files.keyFile, 'key_file');
  const caCertificate = read(files.clientCaFile, 'client_ca_file');
  checkMaterial({ certificate, privateKey, caCertificate }, 'listen.grpc_tls', files);
  checkOneTrustDomain(caCertificate, files.clientCaFile);
  return { certificate, privateKey, caCertificate };
}

/**
 * The client CAs must be one trust domain's (SPEC §2.1: roots are never pooled): node's handshake
 * accepts a chain to ANY of them, and `allowed_callers` then compares the leaf's URI SAN only, so a CA
 * of partner.example could vouch for a caller named spiffe://example.org/... A CA's trust domain is
 * its SPIFFE URI SAN (X509-SVID §3.2); CAs without one are not told apart (the file is the operator's).
 */
function checkOneTrustDomain(caPem: Buffer, file: string): void {
  const domains = new Set<string>();
  for (const block of caPem.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []) {
    const san = new X509Certificate(block).subjectAltName ?? '';
    for (const m of san.matchAll(/URI:spiffe:\/\/([^/,\s]+)/g)) domains.add((m[1] as string).toLowerCase());
  }
  if (domains.size > 1) {
    throw new ChioError(
      'config_invalid',
      `listen.grpc_tls: client_ca_file ${file} holds CAs of ${domains.size} trust domains (${[...domains].sort().join(', ')}): a CA of one would vouch for callers named in another; give the callers' trust domain's CAs only`,
    );
  }
}

/** Each part of the material readable and the key the certificate's; the message names the file when there is one. */
function checkMaterial(m: TlsMaterial, what: string, files?: { certFile: string; keyFile: string; clientCaFile: string }): void {
  const named = (setting: string, file: string | undefined): string => (file === undefined ? `${what}: ${setting}` : `${what}: ${setting} ${file}`);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(m.certificate);
  } catch (err) {
    throw new ChioError('config_invalid', `${named('cert_file', files?.certFile)}: not a PEM X.509 certificate (${describe(err)})`);
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(m.privateKey);
  } catch (err) {
    throw new ChioError('config_invalid', `${named('key_file', files?.keyFile)}: not an unencrypted PEM private key (${describe(err)})`);
  }
  if (!leaf.checkPrivateKey(key)) throw new ChioError('config_invalid', `${named('key_file', files?.keyFile)}: the key does not belong to the certificate`);
  try {
    new X509Certificate(m.caCertificate);
  } catch (err) {
    throw new ChioError('config_invalid', `${named('client_ca_file', files?.clientCaFile)}: not PEM X.509 certificates (${describe(err)})`);
  }
}

function pem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n');
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`;
}

const x509SvidResponse = z.object({
  svids: z
    .array(
      z.object({
        spiffe_id: z.string(),
        x509_svid: z.instanceof(Uint8Array),
        x509_svid_key: z.instanceof(Uint8Array),
        bundle: z.instanceof(Uint8Array),
      }),
    )
    .min(1),
  federated_bundles: z.record(z.string(), z.instanceof(Uint8Array)).optional(),
});

/** FetchX509SVID message → TLS material (the first SVID is the default one; SPIFFE Workload API §5.2.1). */
export function materialFromX509SvidResponse(message: unknown): { spiffeId: string; material: TlsMaterial } {
  const parsed = x509SvidResponse.safeParse(message);
  if (!parsed.success) throw new TypeError('malformed FetchX509SVID message');
  const svid = parsed.data.svids[0] as (typeof parsed.data.svids)[number];
  const chain = splitDerCertificates(Buffer.from(svid.x509_svid));
  // callers are authenticated against the agent's own trust domain only: with the federated bundles
  // pooled in, a partner CA could issue a certificate named spiffe://<our td>/... and pass allowed_callers
  const roots = splitDerCertificates(Buffer.from(svid.bundle));
  const material: TlsMaterial = {
    certificate: Buffer.from(chain.map((c) => pem('CERTIFICATE', c)).join('')),
    privateKey: Buffer.from(pem('PRIVATE KEY', svid.x509_svid_key)),
    caCertificate: Buffer.from(roots.map((c) => pem('CERTIFICATE', c)).join('')),
  };
  checkMaterial(material, `FetchX509SVID ${svid.spiffe_id}`);
  return { spiffeId: svid.spiffe_id, material };
}

export interface TlsLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface RunningTlsSource {
  readonly provider: PushedCertificateProvider;
  close(): void;
}

/** Files, watched: a bad new file keeps the last good material. */
export function startFileTls(files: { certFile: string; keyFile: string; clientCaFile: string }, log: TlsLogger, pollIntervalMs?: number): RunningTlsSource {
  const provider = new PushedCertificateProvider();
  const watched = [files.certFile, files.keyFile, files.clientCaFile];
  const seen = statKeyOf(watched); // before the read: a rotation during it is still noticed
  provider.update(readTlsFiles(files));
  const watch = new FileWatch(
    watched,
    () => {
      try {
        provider.update(readTlsFiles(files));
        log.info({}, 'Check listener TLS certificate reloaded');
      } catch (err) {
        log.error({ err: describe(err) }, 'Check listener TLS files unreadable; keeping the previous certificate');
      }
    },
    pollIntervalMs === undefined ? { seen } : { pollIntervalMs, seen },
  );
  return { provider, close: () => watch.close() };
}

/** The service's own X509-SVID from the SPIRE agent; resolves once the first SVID arrived. */
export async function startWorkloadApiTls(
  address: string,
  log: TlsLogger,
  options: { startupTimeoutMs?: number; initialBackoffMs?: number } = {},
): Promise<RunningTlsSource> {
  const provider = new PushedCertificateProvider();
  let first: (() => void) | undefined;
  const arrived = new Promise<void>((resolve) => {
    first = resolve;
  });
  const stream = new WorkloadApiStream(
    'FetchX509SVID',
    { address, ...(options.initialBackoffMs === undefined ? {} : { initialBackoffMs: options.initialBackoffMs }) },
    (message) => {
      try {
        const { spiffeId, material } = materialFromX509SvidResponse(message);
        provider.update(material);
        log.info({ spiffeId }, 'Check listener SVID from the SPIFFE Workload API');
        first?.();
      } catch (err) {
        log.error({ err: describe(err) }, 'FetchX509SVID update refused; keeping the previous SVID');
      }
    },
    (reason) => log.warn({ reason }, 'SPIFFE Workload API X509-SVID stream lost; reconnecting (the current SVID stays)'),
  );
  stream.open();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, options.startupTimeoutMs ?? 10_000);
  });
  await Promise.race([arrived, timeout]);
  clearTimeout(timer);
  if (provider.current === null) {
    stream.close();
    throw new ChioError('config_invalid', `listen.grpc_tls.workload_api: no X509-SVID from ${address}`);
  }
  return { provider, close: () => stream.close() };
}

export function serverCredentials(provider: PushedCertificateProvider, requireClientCertificate: boolean): grpc.ServerCredentials {
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, requireClientCertificate);
}

/** Who may call Check: exact SPIFFE IDs, or `spiffe://td/prefix/*` (segment-aware). */
export class CallerAllowList {
  private readonly exact = new Set<string>();
  private readonly prefixes: Array<{ trustDomain: string; path: string }> = [];
  private readonly seen = new Map<string, string | null>();

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      if (entry.endsWith('/*')) {
        const base = entry.slice(0, -2);
        const id = base.includes('/', 'spiffe://'.length) ? SpiffeId.parse(base) : null;
        const td = id ? id.trustDomain : TrustDomain.parse(base).name;
        const p = id ? id.path : '';
        validatePath(p);
        this.prefixes.push({ trustDomain: td, path: p });
      } else {
        this.exact.add(SpiffeId.parse(entry).uri);
      }
    }
  }

  /** null when the caller may ask; else why not. */
  check(peer: { raw?: Buffer; fingerprint256?: string } | undefined): string | null {
    if (!peer?.raw || peer.raw.length === 0) return 'the caller presented no client certificate';
    const key = peer.fingerprint256 ?? peer.raw.toString('base64');
    let id = this.seen.get(key);
    if (id === undefined) {
      try {
        id = parseSvidLeaf(peer.raw).spiffeId.uri;
      } catch (err) {
        id = null;
        if (!(err instanceof DenyError)) throw err;
      }
      if (this.seen.size >= 4096) this.seen.clear();
      this.seen.set(key, id);
    }
    if (id === null) return 'the caller certificate is not an X509-SVID';
    if (this.allows(SpiffeId.parse(id))) return null;
    return `caller ${id} is not in listen.grpc_tls.allowed_callers`;
  }

  private allows(id: SpiffeId): boolean {
    if (this.exact.has(id.uri)) return true;
    return this.prefixes.some((p) => p.trustDomain === id.trustDomain && pathHasSegmentPrefix(id.path, p.path));
  }
}

/** chio.yaml `listen.grpc_tls`. */
export const grpcTlsConfigSchema = z
  .strictObject({
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
    client_ca_file: z.string().min(1).optional(),
    workload_api: z
      .string()
      .regex(/^unix:\/\/\/./, 'expected unix:///<absolute path of the SPIRE agent socket>')
      .optional(),
    require_client_certificate: z.boolean().default(true),
    allowed_callers: z
      .array(z.string().min(1))
      .default([])
      .superRefine((entries, ctx) => {
        entries.forEach((entry, i) => {
          try {
            new CallerAllowList([entry]);
          } catch (err) {
            ctx.addIssue({ code: 'custom', path: [i], message: describe(err) });
          }
        });
      }),
  })
  .superRefine((t, ctx) => {
    const files = [t.cert_file, t.key_file, t.client_ca_file].filter((f) => f !== undefined).length;
    if (t.workload_api !== undefined && files > 0) {
      ctx.addIssue({ code: 'custom', path: ['workload_api'], message: 'use workload_api or cert_file/key_file/client_ca_file, not both' });
    } else if (t.workload_api === undefined && files !== 3) {
      ctx.addIssue({ code: 'custom', path: [], message: 'set cert_file, key_file and client_ca_file, or workload_api' });
    }
    if (t.allowed_callers.length > 0 && !t.require_client_certificate) {
      ctx.addIssue({ code: 'custom', path: ['allowed_callers'], message: 'allowed_callers needs require_client_certificate: true' });
    }
  });

export type GrpcTlsConfig = z.infer<typeof grpcTlsConfigSchema>;

export function resolveGrpcTlsPaths(t: GrpcTlsConfig | undefined, r: (p: string) => string): GrpcTlsConfig | undefined {
  if (t === undefined) return undefined;
  const opt = (p: string | undefined): string | undefined => (p === undefined ? undefined : r(p));
  return { ...t, cert_file: opt(t.cert_file), key_file: opt(t.key_file), client_ca_file: opt(t.client_ca_file) };
}

export interface CheckListenerTls {
  /** the listener's certificate, key and client CA, current and updated */
  readonly provider: PushedCertificateProvider;
  readonly requireClientCertificate: boolean;
  readonly callers: CallerAllowList | undefined;
  close(): void;
}

/** The Check listener's TLS from `listen.grpc_tls` (null: plaintext, for a sidecar-local listener). */
export async function startCheckListenerTls(cfg: GrpcTlsConfig | undefined, log: TlsLogger): Promise<CheckListenerTls | null> {
  if (cfg === undefined) return null;
  const source =
    cfg.workload_api !== undefined
      ? await startWorkloadApiTls(cfg.workload_api, log)
      : startFileTls({ certFile: cfg.cert_file ?? '', keyFile: cfg.key_file ?? '', clientCaFile: cfg.client_ca_file ?? '' }, log);
  return {
    provider: source.provider,
    requireClientCertificate: cfg.require_client_certificate,
    callers: cfg.allowed_callers.length > 0 ? new CallerAllowList(cfg.allowed_callers) : undefined,
    close: () => source.close(),
  };
}
