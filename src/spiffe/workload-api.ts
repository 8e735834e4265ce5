/**
 * A SPIFFE Workload API client that keeps a {@link BundleSet} current from a SPIRE agent
 * (SPEC §2.1 `trust.bundles[].workload_api`, §4; SPIFFE Workload API
 * https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_API.md §4.2 stream
 * responses, §4.4 redaction, §5.2.2 FetchX509Bundles, §6.2.2 FetchJWTBundles; SPIFFE Workload
 * Endpoint §4 the `workload.spiffe.io: true` security header).
 *
 * Two server streams on a unix socket, each on its own channel: `FetchX509Bundles` (bundles as
 * concatenated DER) and `FetchJWTBundles` (bundles as JWKS JSON), both keyed by trust domain ID,
 * for the agent's own trust domain and every federated one. Every message is the complete set:
 * a trust domain missing from a message is withdrawn. A message that does not parse is refused
 * whole (logged, counted) and the previous set stays.
 *
 * When a stream fails or ends, it is reopened after an exponential backoff with full jitter
 * (reset by the next message); bundles already received keep working meanwhile, except after
 * PERMISSION_DENIED: the agent no longer entitles us to them (§5.2.2, §6.2.2: "the client SHOULD
 * cease using" them), so that stream's bundles are withdrawn until it delivers again. A message
 * with no bundle (the agent's own trust domain is always in it) or naming a trust domain twice is
 * refused whole. `connected` reports 1 while both streams are delivering accepted messages.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { z } from 'zod';
import { describe } from '../errors.js';
import {
  NO_HOOKS,
  parseDerBundle,
  parseJwks,
  trustDomainName,
  type BundleContent,
  type BundleSet,
  type BundleSource,
  type SourceHooks,
} from './bundle.js';

/** proto/workload.proto, from src/spiffe or dist/spiffe alike. */
export const WORKLOAD_PROTO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'proto', 'workload.proto');

/** SPIFFE Workload Endpoint §4: every request carries this metadata. */
export const SECURITY_HEADER = 'workload.spiffe.io';

type StreamMethod = (request: object, metadata: grpc.Metadata) => grpc.ClientReadableStream<unknown>;

export type WorkloadApiStreamMethod = 'FetchX509Bundles' | 'FetchJWTBundles' | 'FetchX509SVID';

type WorkloadApiClient = grpc.Client & Record<WorkloadApiStreamMethod, StreamMethod>;

type WorkloadApiClientConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => WorkloadApiClient;

let loaded: grpc.GrpcObject | undefined;

/** The loaded proto (package-less, so `SpiffeWorkloadAPI` is top level); shared with test agents. */
export function workloadApiDefinition(): grpc.GrpcObject {
  loaded ??= grpc.loadPackageDefinition(
    loadSync(WORKLOAD_PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }),
  );
  return loaded;
}

function clientConstructor(): WorkloadApiClientConstructor {
  return workloadApiDefinition()['SpiffeWorkloadAPI'] as unknown as WorkloadApiClientConstructor;
}

const bundlesMessage = z.object({ bundles: z.record(z.string(), z.instanceof(Uint8Array)) });

export interface WorkloadApiSourceOptions extends WorkloadApiStreamOptions {
  readonly label: string;
  readonly verifier: string;
  /**
   * The agent's own trust domain (config `trust_domain`): `verifier` vouches for its SVIDs only; a
   * federated trust domain's bundle, which the agent delivers too, gets the verifier name
   * `spiffe://<trust domain>` (its workloads were attested by the partner's SPIRE, not ours). It is
   * also expected: pending until delivered. Without it `verifier` is stamped on every trust domain.
   */
  readonly ownTrustDomain?: string;
  /** how long `start()` waits for the first bundles (default 3 s) */
  readonly startupTimeoutMs?: number;
  /** connection state for the `chio_workload_api_connected` gauge */
  readonly onConnected?: (connected: boolean) => void;
}

type StreamKind = 'x509' | 'jwt';

const METHODS: Readonly<Record<StreamKind, 'FetchX509Bundles' | 'FetchJWTBundles'>> = {
  x509: 'FetchX509Bundles',
  jwt: 'FetchJWTBundles',
};

export interface WorkloadApiStreamOptions {
  /** `unix:///run/spire/sockets/agent.sock` */
  readonly address: string;
  /** first reconnect delay bound (default 250 ms) */
  readonly initialBackoffMs?: number;
  /** largest reconnect delay bound (default 30 s) */
  readonly maxBackoffMs?: number;
  /** jitter source, [0, 1) */
  readonly random?: () => number;
}

/**
 * One reconnecting Workload API server stream: every message goes to `onData`; when the stream
 * fails or ends, `onLost` is told and it is reopened after an exponential backoff with full jitter
 * (reset by the next message).
 */
export class WorkloadApiStream {
  up = false;
  private attempt = 0;
  private client: WorkloadApiClient | undefined;
  private call: grpc.ClientReadableStream<unknown> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly method: WorkloadApiStreamMethod,
    private readonly options: WorkloadApiStreamOptions,
    private readonly onData: (message: unknown) => void,
    private readonly onLost: (reason: string, code: grpc.status | null) => void,
  ) {}

  open(): void {
    if (this.closed) return;
    const Client = clientConstructor();
    this.client = new Client(this.options.address, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set(SECURITY_HEADER, 'true');
    const call = this.client[this.method]({}, metadata);
    this.call = call;
    let finished = false;
    const finish = (reason: string, code: grpc.status | null): void => {
      if (finished) return;
      finished = true;
      this.retry(reason, code);
    };
    call.on('data', (message: unknown) => {
      this.attempt = 0;
      this.onData(message);
    });
    call.on('error', (err: Error) => finish(describe(err), typeof (err as Partial<grpc.ServiceError>).code === 'number' ? (err as grpc.ServiceError).code : null));
    call.on('end', () => finish('stream ended', null));
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.call?.cancel();
    this.client?.close();
  }

  private retry(reason: string, code: grpc.status | null): void {
    this.call = undefined;
    this.client?.close();
    this.client = undefined;
    if (this.closed) return;
    this.onLost(reason, code);
    const initial = this.options.initialBackoffMs ?? 250;
    const max = this.options.maxBackoffMs ?? 30_000;
    const bound = Math.min(max, initial * 2 ** Math.min(this.attempt, 30));
    const delay = Math.floor((this.options.random ?? Math.random)() * bound);
    this.attempt++;
    this.timer = setTimeout(() => this.open(), delay);
    this.timer.unref();
  }
}

/** Bundles from the SPIFFE Workload API of a SPIRE agent, applied without restart. */
export class WorkloadApiBundleSource implements BundleSource {
  readonly label: string;
  private readonly index: number;
  private readonly streams: Record<StreamKind, WorkloadApiStream>;
  /** null until the X.509 stream delivered: JWT-only bundles are not published before it */
  private x509: Map<string, BundleContent> | null = null;
  private jwt = new Map<string, BundleContent>();
  private connected = false;
  private warnedShared = false;
  private firstData: (() => void) | undefined;

  constructor(
    private readonly set: BundleSet,
    private readonly options: WorkloadApiSourceOptions,
    private readonly hooks: SourceHooks = NO_HOOKS,
  ) {
    if (!/^unix:\/\/\/./.test(options.address)) throw new TypeError(`workload_api must be unix:///<absolute path>, got ${options.address}`);
    this.label = options.label;
    const own = options.ownTrustDomain;
    this.index = set.addSource(
      { source: options.label, verifier: options.verifier, ...(own === undefined ? {} : { verifierFor: (td: string) => (td === own ? options.verifier : federatedVerifier(td)) }) },
      own === undefined ? [] : [own],
    );
    // the agent names its trust domains: until it has, an SVID of any trust domain may be one of its
    set.expectAnyTrustDomain(this.index);
    const stream = (kind: StreamKind): WorkloadApiStream =>
      new WorkloadApiStream(METHODS[kind], options, (m) => this.received(kind, m), (reason, code) => this.lost(kind, reason, code));
    this.streams = { x509: stream('x509'), jwt: stream('jwt') };
  }

  /** Opens both streams; resolves once both delivered, or after the startup timeout. */
  async start(): Promise<void> {
    const ready = new Promise<void>((resolve) => {
      this.firstData = resolve;
    });
    this.options.onConnected?.(false);
    this.streams.x509.open();
    this.streams.jwt.open();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.startupTimeoutMs ?? 3000);
    });
    await Promise.race([ready, timeout]);
    clearTimeout(timer);
    if (!this.connected) this.hooks.log.warn({ source: this.label, address: this.options.address }, 'SPIFFE Workload API not delivering bundles yet; retrying in the background');
  }

  async close(): Promise<void> {
    this.streams.x509.close();
    this.streams.jwt.close();
  }

  get isConnected(): boolean {
    return this.connected;
  }

  /** A stream message: the complete bundle set of its kind. */
  received(kind: StreamKind, message: unknown): void {
    try {
      const next = this.parse(kind, message);
      if (kind === 'x509') this.x509 = next;
      else this.jwt = next;
      this.publish();
      this.streams[kind].up = true; // up once a message was accepted, not merely received
      this.hooks.refreshed(this.label, 'ok');
    } catch (err) {
      this.hooks.refreshed(this.label, 'error');
      this.hooks.log.error({ source: this.label, stream: METHODS[kind], err: describe(err) }, 'Workload API bundle update refused; keeping the previous bundles');
    }
    this.updateConnected();
  }

  /** A stream failed or ended; it will be reopened. */
  lost(kind: StreamKind, reason: string, code: grpc.status | null = null): void {
    const wasUp = this.streams[kind].up;
    this.streams[kind].up = false;
    if (code === grpc.status.PERMISSION_DENIED) {
      const held = kind === 'x509' ? (this.x509?.size ?? 0) : this.jwt.size;
      // the trust domains stay, with no authorities of this kind: an SVID of one is then untrusted, never
      // "no bundle configured" (which would let Envoy's word alone admit it)
      if (kind === 'x509' && this.x509 !== null) this.x509 = withoutAuthorities(this.x509);
      else if (kind === 'jwt') this.jwt = withoutAuthorities(this.jwt);
      this.publish();
      if (held > 0 || wasUp) {
        this.hooks.refreshed(this.label, 'error');
        this.hooks.log.error(
          { source: this.label, stream: METHODS[kind], reason },
          'SPIFFE Workload API denied the stream (PERMISSION_DENIED); its bundles are withdrawn until it delivers again',
        );
      }
    } else if (wasUp) {
      this.hooks.log.warn({ source: this.label, stream: METHODS[kind], reason }, 'SPIFFE Workload API stream lost; reconnecting (bundles stay in force)');
    }
    this.updateConnected();
  }

  private parse(kind: StreamKind, message: unknown): Map<string, BundleContent> {
    const parsed = bundlesMessage.safeParse(message);
    if (!parsed.success) throw new TypeError(`malformed ${METHODS[kind]} message`);
    const out = new Map<string, BundleContent>();
    const entries = Object.entries(parsed.data.bundles);
    // §5.2.2 / §6.2.2: the map holds at least the agent's own trust domain; an empty one is a default-valued message (§4.5)
    if (entries.length === 0) throw new TypeError(`${METHODS[kind]} message holds no bundle (it must hold at least the agent's own trust domain)`);
    for (const [key, bytes] of entries) {
      const td = trustDomainName(key, `${METHODS[kind]} bundle key`);
      if (out.has(td)) throw new TypeError(`${METHODS[kind]} message names trust domain ${td} twice`);
      const what = `${METHODS[kind]} bundle of ${td}`;
      out.set(td, kind === 'x509' ? parseDerBundle(bytes, td, what) : parseJwks(Buffer.from(bytes).toString('utf8'), td, what));
    }
    return out;
  }

  /**
   * Publishes the union of both streams' trust domains. Not before the X.509 stream delivered:
   * a bundle holding only JWT keys would make every X.509-SVID of its trust domain untrusted.
   */
  private publish(): void {
    const x509 = this.x509;
    if (x509 === null) return;
    const contents: BundleContent[] = [];
    for (const td of new Set([...x509.keys(), ...this.jwt.keys()])) {
      const x = x509.get(td);
      const j = this.jwt.get(td);
      contents.push({
        trustDomain: td,
        x509Authorities: x?.x509Authorities ?? [],
        jwtAuthorities: j?.jwtAuthorities ?? new Map(),
        intermediates: [],
        sequence: null,
        refreshHintSeconds: null,
      });
    }
    this.set.replace(this.index, contents);
    const own = this.options.ownTrustDomain;
    if (own !== undefined && !contents.some((c) => c.trustDomain === own) && !this.warnedShared) {
      this.warnedShared = true;
      this.hooks.log.warn(
        { source: this.label, trustDomain: own, delivered: contents.map((c) => c.trustDomain).sort() },
        "the Workload API does not deliver this source's trust_domain: is it the agent's own? (its SVIDs stay untrusted, the others are verified as federated)",
      );
    }
    if (own === undefined && contents.length > 1 && !this.warnedShared) {
      this.warnedShared = true;
      this.hooks.log.warn(
        { source: this.label, verifier: this.options.verifier, trustDomains: contents.map((c) => c.trustDomain).sort() },
        'the Workload API delivers several trust domains and this source has no trust_domain: its verifier name vouches for the federated ones too (set trust_domain to the agent\'s own)',
      );
    }
  }

  private updateConnected(): void {
    const now = this.streams.x509.up && this.streams.jwt.up;
    if (now === this.connected) return;
    this.connected = now;
    this.options.onConnected?.(now);
    if (now) {
      this.hooks.log.info({ source: this.label, address: this.options.address }, 'SPIFFE Workload API connected');
      this.firstData?.();
    }
  }
}

/** The verifier name of a federated trust domain's bundle delivered by the agent (see `ownTrustDomain`). */
export function federatedVerifier(trustDomain: string): string {
  return `spiffe://${trustDomain}`;
}

/** The same trust domains with no authorities: what a denied stream leaves (SVIDs of them are untrusted). */
function withoutAuthorities(held: ReadonlyMap<string, BundleContent>): Map<string, BundleContent> {
  const out = new Map<string, BundleContent>();
  for (const [td, content] of held) out.set(td, { ...content, x509Authorities: [], jwtAuthorities: new Map(), intermediates: [] });
  return out;
}
