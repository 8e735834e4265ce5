/**
 * Bundle sources that feed a {@link BundleSet} (SPEC §2.1 `trust.bundles`, §4):
 * - {@link FileBundleSource}: a PEM file of roots, or a SPIFFE bundle JSON file (SPIFFE Trust
 *   Domain and Bundle §4), with optional configured intermediates; re-read on change (fs.watch
 *   on the folder, which also sees Kubernetes ConfigMap symlink swaps, plus a periodic stat
 *   fallback). A bad new file keeps the last good bundle, is logged and counted.
 * - {@link FederationBundleSource}: a SPIFFE federation bundle endpoint, profile `https_web`
 *   (SPIFFE Federation §5.2.1 Web PKI; `ca_file` replaces the public roots for a private web CA)
 *   or `https_spiffe` (§5.2.2: the endpoint's certificate must be an X509-SVID of the configured
 *   endpoint SPIFFE ID, verified by chio's own X509-SVID rules against the bundle of that ID's trust
 *   domain: for a self-serving endpoint the bootstrap `endpoint_bundle` until the first fetch, then
 *   the latest fetched bundle; otherwise the bundle chio holds for that trust domain), polled at its
 *   `spiffe_refresh_hint` bounded to [min, max]. A bundle with a lower `spiffe_sequence` than the
 *   one held is refused (no rollback). Redirects to valid endpoint URLs are followed (at most 3).
 * The SPIFFE Workload API source lives in ./workload-api.ts.
 *
 * Every source registers itself with the set in config order (the first source delivering a
 * trust domain wins) and reports refreshes through {@link SourceHooks} (metrics, logs).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { FileWatch, statKeyOf } from '../file-watch.js';
import { bundleKind, federationStateFile, type TrustConfig } from '../config/trust.js';
import { ChioError, describe } from '../errors.js';
import {
  MAX_BUNDLE_BYTES,
  looksLikeJson,
  parseCaCertificate,
  parsePemBundle,
  parseSpiffeBundle,
  pemCertificates,
  sealBundle,
  NO_HOOKS,
  type BundleContent,
  type TrustBundle,
  type BundleSet,
  type BundleSource,
  type SourceHooks,
} from './bundle.js';
import { verifySvid } from './chain.js';
import { SpiffeId } from './id.js';
import { WorkloadApiBundleSource } from './workload-api.js';

function readText(file: string, what: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ChioError(code === 'ENOENT' ? 'file_not_found' : 'io_error', `${what}: cannot read ${file}: ${code ?? describe(err)}`, { cause: err });
  }
  if (bytes.length > MAX_BUNDLE_BYTES) throw new ChioError('config_invalid', `${what}: ${file} is larger than ${MAX_BUNDLE_BYTES} bytes`);
  return bytes.toString('utf8');
}

/** Intermediates from a PEM file (the `intermediates:` key of a file source). */
export function readIntermediates(file: string, what: string): BundleContent['intermediates'] {
  const text = readText(file, what);
  try {
    return pemCertificates(text).map((der) => parseCaCertificate(der));
  } catch (err) {
    throw new ChioError('config_invalid', `${what}: ${file}: ${describe(err)}`, { cause: err });
  }
}

/** A bundle file's content: PEM roots, or SPIFFE bundle JSON (detected by content for `auto`). */
export function parseBundleFile(text: string, format: 'pem' | 'spiffe_bundle' | 'auto', trustDomain: string, what: string): BundleContent {
  const json = format === 'spiffe_bundle' || (format === 'auto' && looksLikeJson(text));
  return json ? parseSpiffeBundle(text, trustDomain, what) : parsePemBundle(text, trustDomain, what);
}

export interface FileBundleSourceOptions {
  readonly label: string;
  readonly verifier: string;
  readonly trustDomain: string;
  readonly file: string;
  readonly format: 'pem' | 'spiffe_bundle';
  readonly intermediatesFile?: string | undefined;
  /** stat fallback period (default 5 s) */
  readonly pollIntervalMs?: number;
  /** how long watch events are coalesced before a re-read (default 100 ms) */
  readonly debounceMs?: number;
}

/** A bundle file (PEM or SPIFFE bundle JSON) re-read on change without a restart. */
export class FileBundleSource implements BundleSource {
  readonly label: string;
  private readonly index: number;
  private lastDigest = '';
  private watch: FileWatch | undefined;
  private closed = false;

  constructor(
    private readonly set: BundleSet,
    private readonly options: FileBundleSourceOptions,
    private readonly hooks: SourceHooks = NO_HOOKS,
  ) {
    this.label = options.label;
    this.index = set.addSource({ source: options.label, verifier: options.verifier }, [options.trustDomain]);
  }

  private get files(): string[] {
    const { file, intermediatesFile } = this.options;
    return intermediatesFile === undefined ? [file] : [file, intermediatesFile];
  }

  async start(): Promise<void> {
    const seen = statKeyOf(this.files); // before the first read: a write during it is still noticed
    this.reload();
    this.watch = new FileWatch(this.files, () => this.refresh(), {
      seen,
      pollIntervalMs: this.options.pollIntervalMs,
      debounceMs: this.options.debounceMs,
      onWatchError: (dir, err) =>
        this.hooks.log.warn({ source: this.label, dir, err: describe(err) }, 'cannot watch bundle folder; relying on periodic checks'),
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
  }

  /** Re-reads now; returns whether the bundle changed. Throws on a bad file (the old bundle stays). */
  reload(): boolean {
    const what = `trust bundle ${this.label} (${this.options.trustDomain})`;
    this.watch?.markSeen(); // before reading: a write landing after the read is a change still to load
    const text = readText(this.options.file, what);
    const intermediatesText = this.options.intermediatesFile === undefined ? '' : readText(this.options.intermediatesFile, `${what} intermediates`);
    const digest = createHash('sha256').update(text).update('\0').update(intermediatesText).digest('hex');
    if (digest === this.lastDigest) return false;
    const content = parseBundleFile(text, this.options.format, this.options.trustDomain, `${what}: ${this.options.file}`);
    const intermediates =
      this.options.intermediatesFile === undefined ? [] : readIntermediates(this.options.intermediatesFile, `${what} intermediates`);
    this.set.replace(this.index, [{ ...content, intermediates }]);
    this.lastDigest = digest;
    return true;
  }

  private refresh(): void {
    if (this.closed) return;
    try {
      if (this.reload()) {
        this.hooks.refreshed(this.label, 'ok');
        this.hooks.log.info({ source: this.label, trustDomain: this.options.trustDomain }, 'trust bundle reloaded');
      }
    } catch (err) {
      this.hooks.refreshed(this.label, 'error');
      this.hooks.log.error({ source: this.label, err: describe(err) }, 'trust bundle reload failed; keeping the last good bundle');
    }
  }
}

export interface FederationBundleSourceOptions {
  readonly label: string;
  readonly verifier: string;
  readonly trustDomain: string;
  /** https:// URL of the bundle endpoint */
  readonly url: string;
  /** PEM roots of a private web CA; replaces the public roots */
  readonly caFile?: string | undefined;
  /** bounds of the refresh interval (defaults 30 s and 1 h) */
  readonly minRefreshMs?: number;
  readonly maxRefreshMs?: number;
  /** interval when the bundle has no refresh hint (default 5 min) */
  readonly defaultRefreshMs?: number;
  /** request timeout (default 10 s) */
  readonly timeoutMs?: number;
  /**
   * profile https_spiffe: the endpoint server's SPIFFE ID; for a self-serving endpoint, the bootstrap
   * bundle file, and where the latest fetched bundle is kept across restarts (`stateFile`)
   */
  readonly spiffe?: { readonly endpointId: string; readonly bootstrapFile?: string | undefined; readonly stateFile?: string | undefined } | undefined;
  /** ms since epoch, for the endpoint SVID's validity (default Date.now) */
  readonly clock?: () => number;
}

/** A SPIFFE federation bundle endpoint (`https_web`), polled at its refresh hint. */
export class FederationBundleSource implements BundleSource {
  readonly label: string;
  private readonly index: number;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private sequence: number | null = null;
  private digest = '';
  /** https_spiffe, self-serving: the latest bundle fetched, which authenticates the next fetch */
  private latest: BundleContent | null = null;
  /** https_spiffe, self-serving: the bundle kept by an earlier run (stateFile), until this run fetched one */
  private kept: BundleContent | null = null;
  /** https_spiffe: the endpoint server's SPIFFE ID, null for https_web */
  private readonly endpointId: SpiffeId | null;

  constructor(
    private readonly set: BundleSet,
    private readonly options: FederationBundleSourceOptions,
    private readonly hooks: SourceHooks = NO_HOOKS,
  ) {
    if (!options.url.startsWith('https://')) throw new TypeError(`federation url must be https://, got ${options.url}`);
    this.label = options.label;
    this.index = set.addSource({ source: options.label, verifier: options.verifier }, [options.trustDomain]);
    this.endpointId = options.spiffe === undefined ? null : SpiffeId.parse(options.spiffe.endpointId);
  }

  async start(): Promise<void> {
    this.readKept();
    await this.poll();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
  }

  /** The self-serving endpoint's bundle an earlier run kept: it authenticates (with the bootstrap) until a fetch succeeds, and its sequence still refuses a rollback. */
  private readKept(): void {
    const file = this.options.spiffe?.stateFile;
    if (file === undefined || !existsSync(file)) return;
    try {
      this.kept = parseSpiffeBundle(readText(file, `federation ${this.label} state`), this.options.trustDomain, `federation ${this.label} state: ${file}`);
      this.sequence = this.kept.sequence;
    } catch (err) {
      this.hooks.log.warn({ source: this.label, file, err: describe(err) }, 'kept federation bundle unreadable; authenticating with endpoint_bundle');
    }
  }

  /** Keeps the bundle just fetched for the next run (write and rename: never a half-written file). */
  private keep(body: string): void {
    const file = this.options.spiffe?.stateFile;
    if (file === undefined) return;
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, body, { mode: 0o600 });
      renameSync(tmp, file);
    } catch (err) {
      this.hooks.log.warn({ source: this.label, file, err: describe(err) }, 'cannot keep the federation bundle for the next start');
    }
  }

  /** One fetch; schedules the next. Never throws. */
  async poll(): Promise<void> {
    clearTimeout(this.timer);
    let next = this.options.minRefreshMs ?? 30_000;
    try {
      const { content, body } = await this.fetchOnce();
      this.apply(content);
      if (this.selfServing()) this.keep(body);
      this.hooks.refreshed(this.label, 'ok');
      next = this.nextInterval(content.refreshHintSeconds);
    } catch (err) {
      this.hooks.refreshed(this.label, 'error');
      this.hooks.log.error({ source: this.label, url: this.options.url, err: describe(err) }, 'federation bundle fetch failed; keeping the last good bundle');
    }
    if (!this.closed) {
      this.timer = setTimeout(() => void this.poll(), next);
      this.timer.unref();
    }
  }

  private nextInterval(hintSeconds: number | null): number {
    const min = this.options.minRefreshMs ?? 30_000;
    const max = this.options.maxRefreshMs ?? 3_600_000;
    const wanted = hintSeconds === null ? (this.options.defaultRefreshMs ?? 300_000) : hintSeconds * 1000;
    return Math.min(max, Math.max(min, wanted));
  }

  private apply(content: BundleContent): void {
    if (content.sequence !== null && this.sequence !== null && content.sequence < this.sequence) {
      throw new ChioError('config_invalid', `bundle spiffe_sequence ${content.sequence} is lower than the held ${this.sequence} (rollback refused)`);
    }
    const digest = createHash('sha256')
      .update(JSON.stringify([content.sequence, content.x509Authorities.map((a) => a.sha256), [...content.jwtAuthorities.keys()]]))
      .digest('hex');
    this.set.replace(this.index, [content]);
    this.latest = content;
    if (digest !== this.digest) this.hooks.log.info({ source: this.label, trustDomain: this.options.trustDomain, sequence: content.sequence }, 'federation bundle updated');
    this.digest = digest;
    this.sequence = content.sequence ?? this.sequence;
  }

  private selfServing(): boolean {
    return this.endpointId?.trustDomain === this.options.trustDomain;
  }

  private async fetchOnce(): Promise<{ content: BundleContent; body: string }> {
    const timeoutMs = this.options.timeoutMs ?? 10_000;
    let body: string;
    if (this.endpointId !== null) {
      const { ca, check } = this.spiffeAuthentication(this.endpointId, this.options.spiffe?.bootstrapFile);
      body = await httpsGet(this.options.url, ca, timeoutMs, check);
    } else {
      const ca = this.options.caFile === undefined ? undefined : readText(this.options.caFile, `federation ${this.label} ca_file`);
      body = await httpsGet(this.options.url, ca, timeoutMs);
    }
    return { content: parseSpiffeBundle(body, this.options.trustDomain, `federation bundle ${this.options.url}`), body };
  }

  /** The bundle that authenticates an https_spiffe endpoint now (Federation §5.2.2.4). */
  private endpointBundle(endpointId: SpiffeId, bootstrapFile: string | undefined): TrustBundle {
    const td = endpointId.trustDomain;
    if (td !== this.options.trustDomain) {
      const held = this.set.get(td);
      if (held === undefined) throw new ChioError('io_error', `no trust bundle of ${td} to authenticate the bundle endpoint ${endpointId.uri}`);
      return held;
    }
    let content = this.latest;
    if (content === null) {
      if (bootstrapFile === undefined) throw new TypeError(`federation ${this.label}: a self-serving https_spiffe endpoint needs a bootstrap bundle`);
      const what = `federation ${this.label} endpoint_bundle`;
      const bootstrap = parseBundleFile(readText(bootstrapFile, what), 'auto', td, `${what}: ${bootstrapFile}`);
      // until this run fetched one: the roots of the bundle an earlier run kept and of the bootstrap file
      const kept = this.kept?.x509Authorities ?? [];
      const roots = [...kept, ...bootstrap.x509Authorities.filter((a) => !kept.some((k) => k.sha256 === a.sha256))];
      content = { ...bootstrap, x509Authorities: roots };
    }
    return sealBundle(content, { source: this.label, verifier: this.options.verifier }, 0);
  }

  /** TLS trust for an https_spiffe fetch: the bundle's roots for OpenSSL, then chio's X509-SVID rules and the endpoint ID. */
  private spiffeAuthentication(endpointId: SpiffeId, bootstrapFile: string | undefined): { ca: string; check: ServerCheck } {
    const bundle = this.endpointBundle(endpointId, bootstrapFile);
    if (bundle.x509Authorities.length === 0) throw new ChioError('io_error', `the bundle of ${bundle.trustDomain} has no X.509 root to authenticate ${endpointId.uri}`);
    const ca = bundle.x509Authorities.map((a) => a.x509.toString()).join('\n');
    const now = this.options.clock ?? Date.now;
    const check: ServerCheck = (_host, cert) => {
      try {
        const { leaf } = verifySvid(presentedChain(cert), (td) => (td === bundle.trustDomain ? bundle : undefined), now());
        if (leaf.spiffeId.uri !== endpointId.uri) {
          return new Error(`the bundle endpoint presented an X509-SVID for ${leaf.spiffeId.uri}, not ${endpointId.uri}`);
        }
        return undefined;
      } catch (err) {
        return new Error(`the bundle endpoint's certificate is not a valid X509-SVID of ${bundle.trustDomain}: ${describe(err)}`);
      }
    };
    return { ca, check };
  }
}

/** node:tls `checkServerIdentity`: an Error refuses the server. */
type ServerCheck = (host: string, cert: PeerCertificate) => Error | undefined;

/** The certificates of a verified TLS peer, leaf first (node gives the chain through `issuerCertificate`). */
function presentedChain(cert: PeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  let at: PeerCertificate | undefined = cert;
  while (at !== undefined && out.length < 10) {
    out.push(at.raw);
    const next: PeerCertificate | undefined = (at as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
    if (next === undefined || next === at || next.raw.equals(at.raw)) break;
    at = next;
  }
  return out;
}

const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);
/** Redirects followed per fetch (SPIFFE Federation §5.2.1.4 / §5.2.2.4: clients SHOULD follow them). */
const MAX_REDIRECTS = 3;

/**
 * GET a bundle endpoint, following up to {@link MAX_REDIRECTS} redirects to valid endpoint URLs
 * (https, no userinfo), each hop with the same TLS trust (for https_spiffe: the same endpoint
 * SPIFFE ID). The redirect target is never kept: every poll starts at the configured URL.
 */
async function httpsGet(url: string, ca: string | undefined, timeoutMs: number, checkServerIdentity?: ServerCheck): Promise<string> {
  let at = url;
  for (let hops = 0; ; hops++) {
    const answer = await httpsGetOnce(at, ca, timeoutMs, checkServerIdentity);
    if ('body' in answer) return answer.body;
    if (hops >= MAX_REDIRECTS) throw new ChioError('io_error', `GET ${url}: more than ${MAX_REDIRECTS} redirects`);
    const next = URL.canParse(answer.location, at) ? new URL(answer.location, at) : null;
    if (next === null || next.protocol !== 'https:' || next.username !== '' || next.password !== '') {
      throw new ChioError('io_error', `GET ${at}: redirected to ${JSON.stringify(answer.location.slice(0, 200))}, which is not an https bundle endpoint URL without userinfo`);
    }
    at = next.href;
  }
}

/** One GET: 200 → its body, a redirect → its Location; bounded size and time (the whole exchange, not only each idle gap). */
function httpsGetOnce(url: string, ca: string | undefined, timeoutMs: number, checkServerIdentity?: ServerCheck): Promise<{ body: string } | { location: string }> {
  let deadline: NodeJS.Timeout | undefined;
  const fetched = new Promise<{ body: string } | { location: string }>((resolve, reject) => {
    const tls = { ...(ca === undefined ? {} : { ca }), ...(checkServerIdentity === undefined ? {} : { checkServerIdentity }) };
    // agent: false: a fresh connection per poll, so each one is authenticated with the trust of that poll (no pooled socket)
    const req = request(url, { method: 'GET', ...tls, agent: false, timeout: timeoutMs, headers: { accept: 'application/json' } }, (res) => {
      const location = res.headers.location;
      if (REDIRECT_STATUSES.has(res.statusCode ?? 0) && typeof location === 'string' && location !== '') {
        res.resume();
        resolve({ location });
        return;
      }
      if (res.statusCode !== 200) {
        res.resume();
        reject(new ChioError('io_error', `GET ${url}: HTTP ${res.statusCode ?? '?'}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BUNDLE_BYTES) {
          req.destroy(new ChioError('io_error', `GET ${url}: response larger than ${MAX_BUNDLE_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    // `timeout` fires only after timeoutMs of silence: a server trickling a byte at a time would hold
    // the fetch (and a start-up waiting for it) forever without this deadline on the whole exchange
    deadline = setTimeout(() => req.destroy(new ChioError('io_error', `GET ${url}: not complete within ${timeoutMs} ms`)), timeoutMs);
    req.on('timeout', () => req.destroy(new ChioError('io_error', `GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
  return fetched.finally(() => clearTimeout(deadline));
}

export interface CreateSourcesOptions {
  /** `chio_workload_api_connected{source}` */
  readonly onWorkloadApiConnected?: (source: string, connected: boolean) => void;
  /** where a self-serving https_spiffe source keeps its latest bundle (`federation-<trust domain>.json`); none: not kept */
  readonly stateDir?: string;
}

/**
 * One source per `trust.bundles` entry, in config order (so the first entry delivering a trust
 * domain wins), registered with `set`. Labels are `<kind>#<index>`: bounded metric labels.
 */
export function createBundleSources(trust: TrustConfig, set: BundleSet, hooks: SourceHooks, options: CreateSourcesOptions = {}): BundleSource[] {
  return trust.bundles.map((entry, i) => {
    const kind = bundleKind(entry);
    const label = `${kind}#${i}`;
    const trustDomain = entry.trust_domain ?? '';
    switch (kind) {
      case 'pem':
      case 'spiffe_bundle':
        return new FileBundleSource(
          set,
          {
            label,
            verifier: entry.verifier,
            trustDomain,
            file: (kind === 'pem' ? entry.pem : entry.spiffe_bundle) ?? '',
            format: kind,
            intermediatesFile: entry.intermediates,
            pollIntervalMs: trust.file_poll_interval_seconds * 1000,
          },
          hooks,
        );
      case 'federation':
        return new FederationBundleSource(
          set,
          {
            label,
            verifier: entry.verifier,
            trustDomain,
            url: entry.federation?.url ?? '',
            caFile: entry.federation?.ca_file,
            spiffe:
              entry.federation?.profile === 'https_spiffe' && entry.federation.endpoint_spiffe_id !== undefined
                ? {
                    endpointId: entry.federation.endpoint_spiffe_id,
                    bootstrapFile: entry.federation.endpoint_bundle,
                    stateFile: options.stateDir === undefined ? undefined : federationStateFile(options.stateDir, trustDomain),
                  }
                : undefined,
          },
          hooks,
        );
      case 'workload_api':
        return new WorkloadApiBundleSource(
          set,
          {
            label,
            verifier: entry.verifier,
            ...(entry.trust_domain === undefined ? {} : { ownTrustDomain: entry.trust_domain }),
            address: entry.workload_api ?? '',
            onConnected: (connected) => options.onWorkloadApiConnected?.(label, connected),
          },
          hooks,
        );
    }
  });
}
