/**
 * The composition root: config → keys → policy → sinks → chain → pipeline → servers.
 * Everything else takes its dependencies as arguments; only this file wires them.
 */
import { readFileSync, statSync } from 'node:fs';
import { ChioError, describe } from './errors.js';
import type { Config } from './config/load.js';
import { federationStateDir } from './config/trust.js';
import { CheckPipeline, type Logger } from './check/pipeline.js';
import { IdentityResolver } from './identity/resolve.js';
import { loadOrCreateSeedFile, publicJwk, type SigningKey } from './keys.js';
import { Metrics } from './metrics.js';
import { loadPolicyFile } from './policy/load.js';
import type { CompiledPolicy } from './policy/types.js';
import { ReceiptHealth } from './receipt/health.js';
import { ReceiptChain } from './receipt/receipt.js';
import { checkpointResponse } from './receipt/checkpoint.js';
import { startAuditTrail, withSegments, type AuditTrail } from './receipt/retention.js';
import { createReceiptSinks, openSinksOnOneChain } from './receipt/sinks/reconcile.js';
import type { ReceiptSink } from './receipt/sinks/sink.js';
import { followTheLog, FollowingStore } from './receipt/sinks/follower.js';
import { SqliteSink } from './receipt/sinks/sqlite.js';
import { verificationKeys } from './receipt/verify.js';
import { receiptRoutes } from './server/routes/receipts.js';
import { ReceiptWriter } from './receipt/writer.js';
import { json, startAdminServer, type RunningAdminServer, type Route } from './server/admin.js';
import { startGrpcServer, type RunningGrpcServer } from './server/grpc.js';
import { startCheckListenerTls } from './server/tls.js';
import { FileWatch, statKeyOf } from './file-watch.js';
import { BundleSet, type BundleSource } from './spiffe/bundle.js';
import { createBundleSources } from './spiffe/bundle-sources.js';
import { SvidCache } from './spiffe/x509-svid.js';
import { startCapabilities } from './capability/service.js';
import type { RevocationList } from './capability/revocations.js';
import { InFlightLimit, limitInFlight } from './limits.js';
import { HeapGovernor, acquireProcessHeapGovernor, growingPercentSetByUser, type HeapGovernorDeps } from './memory.js';
import { openCentralReceipts, startSharedRevocations } from './receipt/pg/service.js';

export { CAPABILITY_HEADER_DEFAULT } from './capability/config.js';

export interface ServiceOptions {
  readonly log: Logger;
  readonly clock?: () => number;
  /** registers process default metrics (off in tests that start many services) */
  readonly defaultMetrics?: boolean;
  /** where `admin.token_env` is read (default process.env) */
  readonly env?: NodeJS.ProcessEnv;
  /** false: no admin HTTP listener (a `chio serve --workers N` worker: the primary serves it, src/server/workers.ts) */
  readonly adminListener?: boolean;
  /**
   * how `limits.heap` is applied (src/memory.ts). Default: the process's one governor over its own
   * event loop and V8, shared by every service of the process. Given deps: a governor of this
   * service's own (tests). null: not at all.
   */
  readonly heap?: HeapGovernorDeps | null;
  /**
   * Called with the revocation list once the file is read, before the Check listener opens: a
   * `chio serve --workers` worker puts the primary's revocations in force there first
   * (src/server/workers.ts), so it never decides a Check without them. Throwing fails the start.
   */
  readonly onRevocations?: (revocations: RevocationList) => void;
}

export interface RunningService {
  readonly grpcPort: number;
  /** which gRPC server answers on grpcPort (listen.grpc_transport) */
  readonly grpcTransport: 'native' | 'grpc-js';
  /** 0 when started with `adminListener: false` */
  readonly adminPort: number;
  readonly key: SigningKey;
  readonly metrics: Metrics;
  policy(): CompiledPolicy;
  /** Re-reads the policy file; a bad file keeps the last good policy (and throws its error). */
  reloadPolicy(): CompiledPolicy;
  /** Why decisions cannot be recorded now (on_failure deny, a sink failing: ./receipt/health.ts), else null: what `/readyz` tells. */
  receiptsFailing(): string | null;
  /** Health NOT_SERVING, in-flight calls finish, receipts flushed, listeners closed. */
  close(deadlineMs?: number): Promise<void>;
}

export async function startService(config: Config, options: ServiceOptions): Promise<RunningService> {
  const { log } = options;
  const clock = options.clock ?? Date.now;
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics ?? true });

  // the policy first: a start that fails on a bad policy leaves no new signing key behind
  const policySeen = statKeyOf([config.policy]); // before the read: an edit during start-up is still noticed
  let policy = loadPolicyFile(config.policy);
  metrics.policyReloads.inc({ result: 'ok' });
  const { key, created } = loadOrCreateSeedFile(config.keys.receipt_signing_seed);
  if (created) log.info({ path: config.keys.receipt_signing_seed, kid: key.kid }, 'created a new receipt signing key');
  const readToken = adminTokenReader(config.admin, options.env ?? process.env);
  warnOpenTokenFile(config.admin.token_file, log);
  // several replicas, one PostgreSQL (README): shared revocations; receipts shipped there and queried there
  const sharedRevocations = await startSharedRevocations(config.revocations, options.env ?? process.env, log);
  // a worker (onRevocations set) has the primary's list: a revocations file that does not parse must not keep it down
  const fromPrimary = options.onRevocations !== undefined;
  const capabilities = startCapabilities({ config: config.capabilities, log, clock, policy: () => policy, shared: sharedRevocations, revocationsFromPrimary: fromPrimary });
  try {
    options.onRevocations?.(capabilities.revocations);
  } catch (err) {
    await capabilities.close();
    throw err;
  }
  const central = await openCentralReceipts(config.receipts.postgres, options.env ?? process.env, log, metrics).catch(async (err: unknown) => {
    await capabilities.close();
    throw err;
  });

  // JSONL sinks rotate into segments at checkpoints (receipts.retention); see ./receipt/retention.ts
  const sinks: ReceiptSink[] = withSegments(createReceiptSinks(config.receipts.sinks, log), {
    segmentMaxBytes: config.receipts.retention?.segment_max_bytes ?? null,
    onTornTail: (info) => log.warn({ ...info }, 'receipt file had a torn last line (crash mid-write); quarantined it'),
    onRotationError: (err) => log.error({ err: describe(err) }, 'cannot rotate the receipt file into a segment; writing on'),
  });
  const head = await openSinksOnOneChain(sinks, { keys: verificationKeys([key]), log });
  // a monotonic clock: a wall clock stepped back held a replica not ready for the size of the step (review)
  const receiptHealth = new ReceiptHealth(() => performance.now());
  // on_failure deny and no sink writing: every answer is a deny receipt_unavailable
  const receiptsFailing = (): string | null => (config.receipts.on_failure === 'deny' ? receiptHealth.failing() : null);
  // with a JSONL file (where a receipt becomes durable), SQLite stores follow it off the answer path
  const sinkError = (sink: string, err: unknown): void => {
    receiptHealth.failed(sink, describe(err));
    metrics.receiptSinkErrors.inc({ sink });
    log.error({ sink, err: describe(err) }, 'receipt sink write failed');
  };
  // error counters exist at 0 from the start, so the first error shows in increase()/rate()
  for (const sink of sinks) metrics.receiptSinkErrors.inc({ sink: sink.name }, 0);
  metrics.policyReloads.inc({ result: 'error' }, 0);
  const { primaries, followers, stores } = followTheLog(sinks, { onError: sinkError });
  let audit: AuditTrail;
  try {
    audit = await startAuditTrail({
      config: config.receipts,
      sinks: central === null ? stores : central.guardRetention(stores), // never prunes what is not shipped yet
      head,
      key,
      clock,
      log,
      flush: () => writer.flush(),
    });
  } catch (err) {
    await Promise.allSettled(sinks.map((s) => s.close()));
    await central?.close(0);
    await capabilities.close();
    throw err;
  }
  const receiptStore = stores.find((s): s is SqliteSink | FollowingStore => s instanceof SqliteSink || s instanceof FollowingStore) ?? null;
  const chain = new ReceiptChain({ key, clock, head });
  const shipper = central?.startShippingFrom(stores, chain.chainId, head?.seq ?? 0) ?? null;
  const writer = new ReceiptWriter(primaries, {
    followers,
    head,
    durability: config.receipts.durability,
    onWritten: (n) => metrics.receiptsWritten.inc(n),
    onSinkError: sinkError,
    onRewind: (head) => chain.reset(head),
    onCommitted: (batch, durable) => {
      receiptHealth.committed();
      audit.committed(batch, durable);
      shipper?.committed(batch);
    },
  });

  let trust: RunningTrust;
  try {
    trust = await startTrust(config, metrics, log);
  } catch (err) {
    await writer.close();
    await audit.close();
    await central?.close(0);
    await capabilities.close();
    throw err;
  }
  const sourcesUsed = new Set(config.identity.sources);
  if (sourcesUsed.has('xfcc') && !sourcesUsed.has('certificate') && !sourcesUsed.has('principal')) {
    log.warn(
      { sources: config.identity.sources },
      'identity.sources has xfcc without certificate or principal: nothing Envoy authenticated corroborates the XFCC element, ' +
        'and Envoy does not escape the SAN values it writes there (SECURITY.md "XFCC only behind a sanitizing proxy")',
    );
  }
  const svidCache = new SvidCache(config.identity.svid_cache_size);
  metrics.sources.svidCacheEntries = () => svidCache.size;
  const jwtSvid = config.identity.jwt_svid;
  const identity = new IdentityResolver({
    sources: config.identity.sources,
    svidCache,
    clock,
    bundles: trust.bundles,
    requireKnownTrustDomain: config.identity.require_known_trust_domain,
    jwtSvid: jwtSvid && { header: jwtSvid.header, audiences: jwtSvid.audiences, leewaySeconds: jwtSvid.leeway_seconds },
    trustedVerifiers: () => policy.trustedVerifiers,
    jwtCacheSize: config.identity.svid_cache_size,
  });

  // overload: at most limits.max_in_flight Checks admitted at once; more are shed (src/limits.ts)
  const inFlight = new InFlightLimit(config.limits.max_in_flight);
  metrics.sources.checksInFlight = () => inFlight.inFlight;
  const pipeline = new CheckPipeline({
    policy: () => policy,
    identity,
    chain,
    writer,
    onReceiptFailure: config.receipts.on_failure,
    metrics,
    log,
    capabilityHeader: capabilities.header,
    capabilities: capabilities.stage,
    clock,
    trustDomainLabel: trustDomainLabeler(() => policy),
  });

  /** What was started before the listeners, closed when one of them fails to start (else the process lingers). */
  const closeStarted = async (): Promise<void> => {
    await writer.close();
    await audit.close();
    await central?.close(0);
    await trust.close();
    await capabilities.close();
  };
  let tls: Awaited<ReturnType<typeof startCheckListenerTls>> | undefined;
  let grpcServer: RunningGrpcServer;
  try {
    tls = await startCheckListenerTls(config.listen.grpc_tls, log);
    grpcServer = await startGrpcServer({
      address: config.listen.grpc,
      handler: limitInFlight(pipeline, inFlight),
      transport: config.listen.grpc_transport,
      maxConcurrentStreams: config.limits.max_concurrent_streams,
      requestReadTimeoutMs: config.limits.request_read_timeout_ms,
      maxBufferedRequestBytes: config.limits.max_buffered_request_bytes,
      ...(tls ? { tls, callers: tls.callers } : {}),
      onRpcError: (code) => metrics.grpcErrors.inc({ code }),
      onCallerRefused: (reason) => {
        metrics.checkCallersRefused.inc();
        log.warn({ reason }, 'Check call refused: caller not allowed');
      },
    });
  } catch (err) {
    tls?.close();
    await closeStarted();
    throw listenFailure(err, 'listen.grpc', config.listen.grpc);
  }
  let ready = false;

  /** Re-reads the policy; a bad file keeps the last good policy. `onlyIfChanged`: skip an identical file. */
  const reloadPolicy = (onlyIfChanged = false): CompiledPolicy => {
    try {
      const next = loadPolicyFile(config.policy);
      if (onlyIfChanged && next.hash === policy.hash) return policy;
      policy = next;
      metrics.policyReloads.inc({ result: 'ok' });
      log.info({ hash: policy.hash }, 'policy reloaded');
      return policy;
    } catch (err) {
      metrics.policyReloads.inc({ result: 'error' });
      log.error({ err: describe(err) }, 'policy reload failed; keeping the last good policy');
      throw err;
    }
  };
  const policyWatch = new FileWatch(
    [config.policy],
    () => {
      try {
        reloadPolicy(true);
      } catch {
        /* logged and counted by reloadPolicy */
      }
    },
    { seen: policySeen },
  );
  const routes: Route[] = [
    {
      method: 'GET',
      path: '/metrics',
      auth: false,
      handler: async () => {
        return { status: 200, headers: { 'content-type': metrics.registry.contentType }, body: await metrics.registry.metrics() };
      },
    },
    { method: 'GET', path: '/healthz', auth: false, handler: () => json(200, { status: 'ok' }) },
    {
      method: 'GET',
      path: '/readyz',
      auth: false,
      handler: () => {
        if (!ready) return json(503, { status: 'not ready' });
        const failing = receiptsFailing();
        return failing === null ? json(200, { status: 'ready', policyHash: policy.hash }) : json(503, { status: 'not ready', reason: failing });
      },
    },
    { method: 'GET', path: '/v1/keys', auth: false, handler: () => json(200, { keys: [publicJwk(key)] }) },
    ...capabilities.routes,
    ...receiptRoutes(receiptStore, central?.store ?? null),
    { method: 'GET', path: '/v1/checkpoints/latest', auth: false, handler: () => checkpointResponse(audit.latest()) },
  ];
  let admin: RunningAdminServer | null = null;
  try {
    if (options.adminListener !== false) admin = await startAdminServer({
      address: config.listen.admin,
      routes,
      token: readToken,
      onError: (err) => log.error({ err: describe(err) }, 'admin request failed'),
    });
  } catch (err) {
    policyWatch.close();
    tls?.close();
    grpcServer.forceShutdown();
    await closeStarted();
    throw listenFailure(err, 'listen.admin', config.listen.admin);
  }

  // limits.heap: lean while there is CPU to spare (src/memory.ts); a --heap-growing-percent on node's command line wins
  const heap = startHeapGovernor(config.limits.heap, options.heap, log);
  metrics.sources.heapLean = () => (heap?.governor.lean ? 1 : 0);

  grpcServer.setServing(true);
  ready = true;

  let closing: Promise<void> | undefined;
  // gRPC health tells what /readyz tells: NOT_SERVING while receipts cannot be written (on_failure
  // deny turns every allow into receipt_unavailable), so gRPC probes and Envoy's health checks move away
  const healthTimer = setInterval(() => {
    if (closing === undefined) grpcServer.setServing(receiptsFailing() === null);
  }, HEALTH_REFRESH_MS);
  healthTimer.unref();
  return {
    grpcPort: grpcServer.port,
    grpcTransport: grpcServer.transport,
    adminPort: admin?.port ?? 0,
    key,
    metrics,
    policy: () => policy,
    reloadPolicy: () => reloadPolicy(),
    receiptsFailing,
    close: (deadlineMs = config.shutdown.deadline_seconds * 1000) =>
      (closing ??= (async () => {
        ready = false;
        clearInterval(healthTimer);
        policyWatch.close();
        // Health NOT_SERVING first; keep answering while load balancers and Envoys move away.
        grpcServer.setServing(false);
        if (config.shutdown.drain_seconds > 0) await new Promise((r) => setTimeout(r, config.shutdown.drain_seconds * 1000));
        await grpcServer.shutdown(deadlineMs);
        heap?.release();
        tls?.close();
        await writer.close();
    await audit.close();
        await central?.close(); // ships what it can within 2 s; the rest after the next start
        await admin?.close();
        await trust.close();
        await capabilities.close();
      })()),
  };
}

/** The heap governor of this service (src/memory.ts): the process's shared one, its own (injected deps), or none. */
function startHeapGovernor(mode: Config['limits']['heap'], deps: HeapGovernorDeps | null | undefined, log: Logger): { governor: HeapGovernor; release(): void } | null {
  if (deps === null) return null;
  if (deps !== undefined) {
    const governor = new HeapGovernor(mode, deps).start();
    return { governor, release: () => governor.stop() };
  }
  if (growingPercentSetByUser()) {
    if (mode !== 'throughput') log.warn({ limitsHeap: mode }, 'limits.heap ignored: node was started with --heap-growing-percent');
    return null;
  }
  const lease = acquireProcessHeapGovernor(mode);
  if (lease.mode !== mode) log.warn({ limitsHeap: mode, inForce: lease.mode }, 'limits.heap: another service of this process set the heap mode first');
  return lease;
}

interface RunningTrust {
  readonly bundles: BundleSet;
  close(): Promise<void>;
}

/**
 * Trust bundles (SPEC §2.1 `trust.bundles`): one source per entry, started (a bad bundle file
 * fails the start), their refreshes, expiries and Workload API connections in the metrics.
 */
async function startTrust(config: Config, metrics: Metrics, log: Logger): Promise<RunningTrust> {
  const bundles = new BundleSet();
  bundles.onChange(({ trustDomain, bundle }) => {
    const expiry = bundle?.x509FirstExpiry ?? null;
    if (expiry === null) metrics.bundleExpiry.remove({ trust_domain: trustDomain });
    else metrics.bundleExpiry.set({ trust_domain: trustDomain }, Math.floor(expiry / 1000));
  });
  const sources: BundleSource[] = createBundleSources(
    config.trust,
    bundles,
    { log, refreshed: (source, result) => metrics.bundleRefreshes.inc({ source, result }) },
    {
      onWorkloadApiConnected: (source, connected) => metrics.workloadApiConnected.set({ source }, connected ? 1 : 0),
      // beside the signing key: a self-serving https_spiffe endpoint's latest bundle authenticates it after a restart
      stateDir: federationStateDir(config.keys.receipt_signing_seed),
    },
  );
  const close = async (): Promise<void> => {
    await Promise.all(sources.map((s) => s.close()));
  };
  try {
    await Promise.all(sources.map((s) => s.start()));
  } catch (err) {
    await close();
    throw err;
  }
  return { bundles, close };
}

/** Trust-domain metric labels: a domain the policy names, else `other` (bounded cardinality). */
function trustDomainLabeler(current: () => CompiledPolicy): (td: string) => string {
  const known = new WeakMap<CompiledPolicy, ReadonlySet<string>>();
  return (td) => {
    const p = current();
    let set = known.get(p);
    if (!set) {
      const s = new Set<string>();
      for (const rule of p.rules.values()) {
        for (const req of [rule.requireWorkloadIdentity, rule.preferWorkloadIdentity]) {
          if (req?.trustDomain) s.add(req.trustDomain);
        }
      }
      set = s;
      known.set(p, set);
    }
    return set.has(td) ? td : 'other';
  };
}

/** How often gRPC health is brought in line with the receipts' state. */
const HEALTH_REFRESH_MS = 500;

/** A listener that cannot bind, as one line with a stable code (`chio serve` exits 2), not a stack. */
export function listenFailure(err: unknown, key: string, address: string): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const why: Record<string, string> = {
    EADDRINUSE: 'the address is already in use',
    EACCES: 'permission denied',
    EADDRNOTAVAIL: 'no such local address',
    ENOTFOUND: 'the host name does not resolve',
    EAI_AGAIN: 'the host name cannot be resolved now',
    EAI_FAIL: 'the host name does not resolve',
  };
  if (typeof code !== 'string' || why[code] === undefined) return err;
  return new ChioError('io_error', `${key}: cannot listen on ${address}: ${why[code]} (${code})`, { cause: err });
}

/**
 * A warning when the admin token file is readable by every user of the host. Not refused, unlike a
 * signing seed: a Kubernetes Secret volume is group-readable under fsGroup whatever its defaultMode,
 * and the token is re-read on use, so a copy made at start (as for the seed) would defeat rotation.
 */
export function warnOpenTokenFile(file: string | undefined, log: Logger): void {
  if (file === undefined) return;
  try {
    const mode = statSync(file).mode & 0o777;
    if ((mode & 0o007) !== 0) {
      log.warn({ path: file, mode: `0${mode.toString(8)}` }, 'admin.token_file is readable by every user of this host; chmod o-rwx it');
    }
  } catch (err) {
    // a missing token file is the admin API closed (401) until it appears (it is re-read on use): say so once
    const code = (err as NodeJS.ErrnoException).code;
    log.warn({ path: file, err: code ?? describe(err) }, 'admin.token_file cannot be read: every /v1 request is answered 401 until it can');
  }
}

/** The admin token: from its file on each use (rotation without restart), or once from `admin.token_env`; never logged. */
export function adminTokenReader(admin: Config['admin'], env: NodeJS.ProcessEnv): () => string | null {
  if (admin.token_env !== undefined) {
    // read once: the environment does not change; unset is a start error, not a silently closed API
    const value = env[admin.token_env]?.trim() ?? '';
    if (value === '') throw new ChioError('config_invalid', `admin.token_env names ${admin.token_env}, which is not set or empty`);
    return () => value;
  }
  const file = admin.token_file;
  if (file === undefined) return () => null;
  return () => {
    try {
      const t = readFileSync(file, 'utf8').trim();
      return t === '' ? null : t;
    } catch {
      return null;
    }
  };
}
