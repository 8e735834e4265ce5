/**
 * The gRPC listener: `envoy.service.auth.v3.Authorization/Check` (Envoy's official protos) and
 * `grpc.health.v1.Health`. A thin adapter: it hands the decoded request to the pipeline, which
 * never rejects; a last-resort guard still turns anything unexpected into a deny, never an RPC error.
 */
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import {
  AUTHORIZATION_SERVICE,
  GRPC_PERMISSION_DENIED,
  loadAuthProtos,
  type CheckResponseMessage,
  type RawCheckRequest,
} from '../check/envoy.js';
import { decodeCheckRequest } from '../check/request-wire.js';
import { encodeCheckResponse } from '../check/response-wire.js';

export interface CheckHandler {
  check(request: RawCheckRequest): Promise<CheckResponseMessage>;
}

export interface GrpcServerOptions {
  readonly address: string;
  readonly handler: CheckHandler;
  readonly credentials?: grpc.ServerCredentials;
  /**
   * With TLS: who may call Check. A refused caller gets an RPC error (PERMISSION_DENIED), not a
   * decision: it is not a mesh request being authorized but a stranger at our door.
   */
  readonly callers?: { check(peer: { raw?: Buffer; fingerprint256?: string } | undefined): string | null };
  readonly onCallerRefused?: (reason: string) => void;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection (limits.max_concurrent_streams) */
  readonly maxConcurrentStreams?: number;
}

export interface RunningGrpcServer {
  readonly server: grpc.Server;
  readonly port: number;
  readonly health: HealthImplementation;
  setServing(serving: boolean): void;
  /** Stops accepting calls; resolves when in-flight calls have finished (or force after deadlineMs). */
  shutdown(deadlineMs: number): Promise<void>;
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

  const server = new grpc.Server({
    'grpc.max_receive_message_length': 4 * 1024 * 1024,
    'grpc.keepalive_permit_without_calls': 1,
    ...(options.maxConcurrentStreams === undefined ? {} : { 'grpc.max_concurrent_streams': options.maxConcurrentStreams }),
  });
  server.addService(withWireCodecs(service as grpc.ServiceDefinition), {
    Check: (call: grpc.ServerUnaryCall<RawCheckRequest, CheckResponseMessage>, callback: grpc.sendUnaryData<CheckResponseMessage>) => {
      if (options.callers) {
        let refused: string | null;
        try {
          refused = options.callers.check(call.getAuthContext()?.sslPeerCertificate);
        } catch {
          refused = 'the caller certificate could not be read';
        }
        if (refused !== null) {
          options.onCallerRefused?.(refused);
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

  const health = new HealthImplementation({ '': 'NOT_SERVING', [AUTHORIZATION_SERVICE]: 'NOT_SERVING' });
  health.addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.address, options.credentials ?? grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });

  const setServing = (serving: boolean): void => {
    const s = serving ? 'SERVING' : 'NOT_SERVING';
    health.setStatus('', s);
    health.setStatus(AUTHORIZATION_SERVICE, s);
  };

  return {
    server,
    port,
    health,
    setServing,
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
