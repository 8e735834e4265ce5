/**
 * A grpc-js client for envoy.service.auth.v3.Authorization, on the same official protos: used by
 * `chio demo`, the integration tests and the benchmark (it is what Envoy speaks).
 */
import * as grpc from '@grpc/grpc-js';
import { loadAuthProtos, type CheckResponseMessage, type RawCheckRequest } from './envoy.js';

export interface CheckClient {
  check(request: RawCheckRequest, deadlineMs?: number): Promise<CheckResponseMessage>;
  close(): void;
}

type UnaryFn = (
  req: RawCheckRequest,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: CheckResponseMessage) => void,
) => void;

export function createCheckClient(
  target: string,
  credentials = grpc.credentials.createInsecure(),
  channelOptions: grpc.ChannelOptions = {},
): CheckClient {
  const pkg = grpc.loadPackageDefinition(loadAuthProtos()) as unknown as {
    envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } };
  };
  const Ctor = pkg.envoy.service.auth.v3.Authorization;
  const client = new Ctor(target, credentials, channelOptions) as unknown as grpc.Client & { Check: UnaryFn };
  return {
    check: (request, deadlineMs = 5000) =>
      new Promise((resolve, reject) => {
        client.Check(request, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) =>
          err || !res ? reject(err ?? new Error('empty response')) : resolve(res),
        );
      }),
    close: () => client.close(),
  };
}
