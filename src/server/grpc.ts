/**
 * The gRPC listener: `envoy.service.auth.v3.Authorization/Check` (Envoy's official protos) and
 * `grpc.health.v1.Health`. A thin adapter: it hands the decoded request to the pipeline, which
 * never rejects; a last-resort guard still turns anything unexpected into a deny, never an RPC error.
 *
 * Two transports serve the same service definitions and handlers (`listen.grpc_transport`):
 * `native` (the default: ./native-grpc.ts, node:http2 with gRPC framing of our own, ~2× grpc-js's
 * calls per CPU second) and `grpc-js` (grpc-js's own server).
 */
import * as grpc from '@grpc/grpc-js';
import {
  AUTHORIZATION_SERVICE,
  GRPC_PERMISSION_DENIED,
  loadAuthProtos,
  type CheckResponseMessage,
  type RawCheckRequest,
} from '../check/envoy.js';
import { decodeCheckRequest } from '../check/request-wire.js';
import { encodeCheckResponse } from '../check/response-wire.js';
import { HealthService, type HealthServer } from './health.js';
import { NativeGrpcServer, type NativeAuthContext } from './native-grpc.js';
import { serverCredentials, type PushedCertificateProvider, type TlsMaterial } from './tls.js';

export type GrpcTransport = 'native' | 'grpc-js';

export interface CheckHandler {
  check(request: RawCheckRequest): Promise<CheckResponseMessage>;
}

export interface GrpcServerOptions {
  readonly address: string;
  readonly handler: CheckHandler;
  /** default `native` */
  readonly transport?: GrpcTransport;
  /** TLS from this provider (rotations apply to new connections); plaintext without */
  readonly tls?: { readonly provider: PushedCertificateProvider; readonly requireClientCertificate: boolean };
  /**
   * With TLS: who may call Check. A refused caller gets an RPC error (PERMISSION_DENIED), not a
   * decision: it is not a mesh request being authorized but a stranger at our door.
   */
  readonly callers?: { check(peer: { raw?: Buffer; fingerprint256?: string } | undefined): string | null };
  readonly onCallerRefused?: (reason: string) => void;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection (limits.max_concurrent_streams) */
  readonly maxConcurrentStreams?: number;
  /** a call answered with an RPC error, by status name (native transport only: ./native-grpc.ts `onError`) */
  readonly onRpcError?: (code: string) => void;
  /** native transport only: how long a request may take to arrive whole (limits.request_read_timeout_ms) */
  readonly requestReadTimeoutMs?: number;
  /** native transport only: bytes all requests still arriving may hold (limits.max_buffered_request_bytes) */
  readonly maxBufferedRequestBytes?: number;
}

export interface RunningGrpcServer {
  readonly transport: GrpcTransport;
  readonly port: number;
  setServing(serving: boolean): void;
  /** Stops accepting calls; resolves when in-flight calls have finished (or force after deadlineMs). */
  shutdown(deadlineMs: number): Promise<void>;
  /** Drops every connection now. */
  forceShutdown(): void;
}

/** What both transports offer: grpc-js's service registration and shutdown. */
interface ServerCore {
  addService(service: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): void;
  tryShutdown(done: () => void): void;
  forceShutdown(): void;
}

const LAST_RESORT: CheckResponseMessage = {
  status: { code: GRPC_PERMISSION_DENIED, message: 'internal_error' },
  denied_response: {
    status: { code: 403 },
    headers: [{ header: { key: 'content-type', value: 'application/json' }, append: { value: false } }],
    body: JSON.stringify({ verdict: 'deny', reason: 'internal_error', receiptId: null }),
  },
};

/**
 * The service with our own CheckRequest decoder (../check/request-wire.ts: only the fields the
 * Check path reads, ~4× cheaper than proto-loader's) and response encoder. The decoder never
 * throws: bytes it cannot decode (malformed protobuf) reach the handler as UNDECODABLE_REQUEST,
 * which the pipeline denies (`malformed_request`) with a receipt. A throwing deserializer would
 * make grpc-js answer INTERNAL: an RPC error, which Envoy's `failure_mode_allow` turns into an
 * allow. (Not `null`: grpc-js reads a null message as "no request message", an RPC error again.)
 */
function withWireCodecs(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const check = service['Check'];
  if (!check) return service;
  // Answers are encoded by hand (../check/response-wire.ts: ~1 µs instead of proto-loader's 8–9 µs per
  // Check); a response of any other shape still goes through proto-loader.
  const serialize = check.responseSerialize as (msg: CheckResponseMessage) => Buffer;
  const responseSerialize = (msg: CheckResponseMessage): Buffer => encodeCheckResponse(msg) ?? serialize(msg);
  return { ...service, Check: { ...check, requestDeserialize: decodeCheckRequest, responseSerialize } };
}

export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const def = loadAuthProtos();
  const service = def[AUTHORIZATION_SERVICE];
  if (!service || !('Check' in service)) throw new TypeError(`${AUTHORIZATION_SERVICE} not found in the Envoy protos`);

  const transport = options.transport ?? 'native';
  const bound = transport === 'native' ? nativeServer(options) : grpcJsServer(options);
  const refuseInHandler = transport === 'native' ? null : callerRefusal(options);
  const server = bound.server;
  server.addService(withWireCodecs(service as grpc.ServiceDefinition), {
    Check: (call: grpc.ServerUnaryCall<RawCheckRequest, CheckResponseMessage>, callback: grpc.sendUnaryData<CheckResponseMessage>) => {
      // the native transport asked at stream open (admitCall); grpc-js hands us the whole call first
      if (refuseInHandler !== null) {
        const refused = refuseInHandler(call.getAuthContext()?.sslPeerCertificate);
        if (refused !== null) {
          callback({ code: grpc.status.PERMISSION_DENIED, details: refused });
          return;
        }
      }
      let answered = false;
      const send = (res: CheckResponseMessage): void => {
        if (answered) return;
        answered = true;
        callback(null, res);
      };
      try {
        options.handler.check(call.request).then(send, () => send(LAST_RESORT));
      } catch {
        send(LAST_RESORT);
      }
    },
  });

  const health = new HealthService({ '': 'NOT_SERVING', [AUTHORIZATION_SERVICE]: 'NOT_SERVING' });
  // it only calls server.addService(), which both transports have
  health.addToServer(server as unknown as HealthServer);

  const port = await bound.bind();

  const setServing = (serving: boolean): void => {
    const s = serving ? 'SERVING' : 'NOT_SERVING';
    health.setStatus('', s);
    health.setStatus(AUTHORIZATION_SERVICE, s);
  };

  return {
    transport,
    port,
    setServing,
    forceShutdown: () => server.forceShutdown(),
    shutdown: (deadlineMs) =>
      new Promise<void>((resolve) => {
        setServing(false);
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, deadlineMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

interface BindableServer {
  readonly server: ServerCore;
  bind(): Promise<number>;
}

const MAX_RECEIVE_MESSAGE_LENGTH = 4 * 1024 * 1024;
const CHECK_PATH = `/${AUTHORIZATION_SERVICE}/Check`;

/**
 * `allowed_callers` as one function: why a peer may not call Check (counted and logged by
 * `onCallerRefused`), or null; null itself when no callers are configured.
 */
function callerRefusal(options: GrpcServerOptions): ((peer: { raw?: Buffer; fingerprint256?: string } | undefined) => string | null) | null {
  const callers = options.callers;
  if (callers === undefined) return null;
  return (peer) => {
    let refused: string | null;
    try {
      refused = callers.check(peer);
    } catch {
      refused = 'the caller certificate could not be read';
    }
    if (refused !== null) options.onCallerRefused?.(refused);
    return refused;
  };
}

/** node:tls's secure-context fields of the listener's material */
const secureContextOf = (m: TlsMaterial): { key: Buffer; cert: Buffer; ca: Buffer } => ({ key: m.privateKey, cert: m.certificate, ca: m.caCertificate });

function nativeServer(options: GrpcServerOptions): BindableServer {
  const material = options.tls?.provider.current;
  if (options.tls && !material) throw new TypeError('startGrpcServer(): the TLS provider has no material yet');
  const refuse = callerRefusal(options);
  const server = new NativeGrpcServer({
    maxReceiveMessageLength: MAX_RECEIVE_MESSAGE_LENGTH,
    ...(options.onRpcError ? { onError: options.onRpcError } : {}),
    ...(options.requestReadTimeoutMs === undefined ? {} : { requestReadTimeoutMs: options.requestReadTimeoutMs }),
    ...(options.maxBufferedRequestBytes === undefined ? {} : { maxBufferedRequestBytes: options.maxBufferedRequestBytes }),
    // allowed_callers before the request is read: a refused peer holds no request buffer
    ...(refuse === null
      ? {}
      : {
          admitCall: (path: string, peer: NativeAuthContext) => {
            if (path !== CHECK_PATH) return null;
            const refused = refuse(peer.sslPeerCertificate);
            return refused === null ? null : { code: grpc.status.PERMISSION_DENIED, details: refused };
          },
        }),
    ...(options.maxConcurrentStreams === undefined ? {} : { maxConcurrentStreams: options.maxConcurrentStreams }),
    ...(options.tls && material
      ? { tls: { ...secureContextOf(material), requireClientCertificate: options.tls.requireClientCertificate } }
      : {}),
  });
  let unsubscribe = (): void => {};
  if (options.tls) {
    unsubscribe = options.tls.provider.onUpdate((m) => server.setSecureContext(secureContextOf(m)));
  }
  const core: ServerCore = {
    addService: (service, implementation) => server.addService(service, implementation),
    tryShutdown: (done) => {
      unsubscribe();
      server.tryShutdown(done);
    },
    forceShutdown: () => {
      unsubscribe();
      server.forceShutdown();
    },
  };
  return { server: core, bind: () => server.listen(options.address) };
}

function grpcJsServer(options: GrpcServerOptions): BindableServer {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_LENGTH,
    'grpc.keepalive_permit_without_calls': 1,
    ...(options.maxConcurrentStreams === undefined ? {} : { 'grpc.max_concurrent_streams': options.maxConcurrentStreams }),
  });
  const credentials = options.tls ? serverCredentials(options.tls.provider, options.tls.requireClientCertificate) : grpc.ServerCredentials.createInsecure();
  return {
    server,
    bind: () => new Promise<number>((resolve, reject) => server.bindAsync(options.address, credentials, (err, p) => (err ? reject(err) : resolve(p)))),
  };
}
