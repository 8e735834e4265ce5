/** A test gRPC service on raw bytes for the transport tests: Echo (unary) and Ticks (server streaming). */
import type * as grpc from '@grpc/grpc-js';

const id = (b: Buffer): Buffer => b;
const method = (path: string, responseStream: boolean, originalName: string): grpc.MethodDefinition<Buffer, Buffer> => ({
  path,
  requestStream: false,
  responseStream,
  requestSerialize: id,
  requestDeserialize: id,
  responseSerialize: id,
  responseDeserialize: id,
  originalName,
});

export const BYTES_SERVICE: grpc.ServiceDefinition = {
  Echo: method('/test.Bytes/Echo', false, 'echo'),
  Ticks: method('/test.Bytes/Ticks', true, 'ticks'),
};
