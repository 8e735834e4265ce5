/**
 * A fake SPIRE agent for tests: a grpc-js server on a unix socket in a temp folder, serving
 * `FetchX509Bundles`, `FetchJWTBundles` and `FetchX509SVID` from proto/workload.proto (the same proto the client
 * uses), rejecting calls without the `workload.spiffe.io: true` metadata like SPIRE does
 * (SPIFFE Workload Endpoint §4). Bundles are pushed to every open stream with `setBundles`;
 * `stop()` / `start()` make the agent go away and come back on the same socket path.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { SECURITY_HEADER, workloadApiDefinition } from '../../src/spiffe/workload-api.js';
import type { TestCa } from './test-ca.js';

export interface AgentBundles {
  /** trust domain → X.509 roots (sent as concatenated DER, keyed by `spiffe://<td>`) */
  readonly x509: ReadonlyMap<string, readonly TestCa[]>;
  /** trust domain → JWKS document text */
  readonly jwt: ReadonlyMap<string, string>;
}

/** The workload's own X509-SVID as FetchX509SVID delivers it. */
export interface AgentSvid {
  readonly spiffeId: string;
  /** DER chain, leaf first, concatenated */
  readonly chainDer: Buffer;
  /** PKCS#8 DER */
  readonly keyPkcs8Der: Buffer;
  /** DER roots of the SVID's trust domain, concatenated */
  readonly bundleDer: Buffer;
}

type StreamCall = grpc.ServerWritableStream<unknown, unknown>;

export class FakeWorkloadApiAgent {
  readonly dir: string;
  readonly socketPath: string;
  /** calls that arrived without the security header */
  rejectedCalls = 0;
  /** calls accepted, per method */
  readonly accepted = { x509: 0, jwt: 0, svid: 0 };
  private server: grpc.Server | undefined;
  private readonly open = { x509: new Set<StreamCall>(), jwt: new Set<StreamCall>(), svid: new Set<StreamCall>() };
  private bundles: AgentBundles = { x509: new Map(), jwt: new Map() };
  private svid: AgentSvid | null = null;
  private refusal: grpc.status | null = null;

  constructor() {
    this.dir = mkdtempSync(path.join(tmpdir(), 'chio-agent-'));
    this.socketPath = path.join(this.dir, 'agent.sock');
  }

  /** `unix:///…/agent.sock` */
  get address(): string {
    return `unix://${this.socketPath}`;
  }

  get openStreams(): number {
    return this.open.x509.size + this.open.jwt.size;
  }

  async start(): Promise<void> {
    rmSync(this.socketPath, { force: true });
    const server = new grpc.Server();
    const service = (workloadApiDefinition()['SpiffeWorkloadAPI'] as grpc.ServiceClientConstructor).service;
    const unimplemented = (_call: unknown, callback?: grpc.sendUnaryData<unknown>) =>
      callback?.({ code: grpc.status.UNIMPLEMENTED, details: 'not in the fake agent' }, null);
    server.addService(service, {
      FetchX509Bundles: (call: StreamCall) => this.stream('x509', call),
      FetchJWTBundles: (call: StreamCall) => this.stream('jwt', call),
      FetchX509SVID: (call: StreamCall) => this.stream('svid', call),
      FetchJWTSVID: unimplemented,
      ValidateJWTSVID: unimplemented,
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(this.address, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.server = server;
  }

  /** The agent goes away: every stream is cut, the socket closes. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.open.x509.clear();
    this.open.jwt.clear();
    this.open.svid.clear();
    server?.forceShutdown();
  }

  /** Sets the complete bundle set and pushes it to every open stream. */
  setBundles(bundles: AgentBundles): void {
    this.bundles = bundles;
    for (const call of this.open.x509) call.write(this.x509Message());
    for (const call of this.open.jwt) call.write(this.jwtMessage());
  }

  /**
   * From now on every bundle stream ends at once with `code` (e.g. PERMISSION_DENIED: the workload is
   * no longer entitled), the open ones included; null serves again (reconnecting clients get bundles).
   */
  refuse(code: grpc.status | null): void {
    this.refusal = code;
    if (code === null) return;
    for (const kind of ['x509', 'jwt'] as const) {
      for (const call of this.open[kind]) fail(call, code, 'refused by the fake agent');
      this.open[kind].clear();
    }
  }

  /** Sends one raw message on every open stream of `kind` (a malformed or empty message). */
  push(kind: 'x509' | 'jwt', message: object): void {
    for (const call of this.open[kind]) call.write(message);
  }

  /** Sets the workload's own X509-SVID (FetchX509SVID) and pushes it to every open stream. */
  setSvid(svid: AgentSvid): void {
    this.svid = svid;
    for (const call of this.open.svid) call.write(this.svidMessage(svid));
  }

  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private stream(kind: 'x509' | 'jwt' | 'svid', call: StreamCall): void {
    if (call.metadata.get(SECURITY_HEADER)[0] !== 'true') {
      this.rejectedCalls++;
      fail(call, grpc.status.INVALID_ARGUMENT, 'security header missing from request');
      return;
    }
    if (this.refusal !== null && kind !== 'svid') {
      fail(call, this.refusal, 'refused by the fake agent');
      return;
    }
    this.accepted[kind]++;
    this.open[kind].add(call);
    call.on('cancelled', () => this.open[kind].delete(call));
    if (kind === 'svid') {
      // SPIRE sends nothing until the workload has an SVID
      if (this.svid) call.write(this.svidMessage(this.svid));
      return;
    }
    call.write(kind === 'x509' ? this.x509Message() : this.jwtMessage());
  }

  private svidMessage(svid: AgentSvid): object {
    return {
      svids: [{ spiffe_id: svid.spiffeId, x509_svid: svid.chainDer, x509_svid_key: svid.keyPkcs8Der, bundle: svid.bundleDer, hint: '' }],
      crl: [],
      federated_bundles: {},
    };
  }

  private x509Message(): { crl: Buffer[]; bundles: Record<string, Buffer> } {
    const bundles: Record<string, Buffer> = {};
    for (const [td, roots] of this.bundles.x509) bundles[`spiffe://${td}`] = Buffer.concat(roots.map((r) => r.der));
    return { crl: [], bundles };
  }

  private jwtMessage(): { bundles: Record<string, Buffer> } {
    const bundles: Record<string, Buffer> = {};
    for (const [td, jwks] of this.bundles.jwt) bundles[`spiffe://${td}`] = Buffer.from(jwks, 'utf8');
    return { bundles };
  }
}

/** Ends a server stream with a gRPC status (grpc-js: an `error` event on the call). */
function fail(call: StreamCall, code: grpc.status, details: string): void {
  call.emit('error', { code, details, metadata: new grpc.Metadata() } satisfies Partial<grpc.StatusObject>);
}
