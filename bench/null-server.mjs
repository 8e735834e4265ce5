#!/usr/bin/env node
/**
 * The baseline for `npm run bench`: a grpc-js server for `envoy.service.auth.v3.Authorization/Check`
 * (Envoy ext_authz v3, SPEC §3) on the same official Envoy protos and proto-loader options as
 * chio-authz (dist/check/envoy.js `loadAuthProtos`). It decodes every CheckRequest (grpc-js
 * deserializes before the handler runs) and answers OK (`status.code = 0`) without deciding
 * anything: what is left is the cost of grpc-js + HTTP/2 + protobuf decode, the floor under chio.
 *
 *   node bench/null-server.mjs [--address 127.0.0.1:0] [--transport grpc-js|native]
 *
 * `--transport native` serves the same service and handler on chio's own transport
 * (dist/server/native-grpc.js, node:http2), with the same proto-loader decoding: the floor under chio
 * with its own transport, to tell transport cost from product cost. The default is grpc-js, the
 * baseline the benchmark targets are stated against.
 *
 * Prints one JSON line `{"ready":true,"grpc":"127.0.0.1:PORT","pid":N}` on stdout when listening;
 * on SIGTERM/SIGINT prints `{"answered":N,"malformed":M}` (calls answered; requests that decoded to
 * no attributes) and exits 0. Needs `npm run build` (for dist/check/envoy.js).
 */
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { AUTHORIZATION_SERVICE, loadAuthProtos } from '../dist/check/envoy.js';

const { values } = parseArgs({
  options: { address: { type: 'string', default: '127.0.0.1:0' }, transport: { type: 'string', default: 'grpc-js' } },
});
if (values.transport !== 'grpc-js' && values.transport !== 'native') {
  process.stderr.write(`null-server: --transport must be grpc-js or native, got ${values.transport}\n`);
  process.exit(2);
}

const OK_RESPONSE = Object.freeze({ status: Object.freeze({ code: 0 }) });

let answered = 0;
let malformed = 0;

const service = loadAuthProtos()[AUTHORIZATION_SERVICE];
if (!service || !('Check' in service)) throw new TypeError(`${AUTHORIZATION_SERVICE} not found in the Envoy protos`);

const server =
  values.transport === 'native'
    ? new (await import('../dist/server/native-grpc.js')).NativeGrpcServer({ maxReceiveMessageLength: 4 * 1024 * 1024 })
    : new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
server.addService(service, {
  Check(call, callback) {
    // Touch the decoded message so the work cannot be skipped; count what a real server would reject.
    if (!call.request || typeof call.request.attributes !== 'object') malformed++;
    answered++;
    callback(null, OK_RESPONSE);
  },
});

function ready(err, port) {
  if (err) {
    process.stderr.write(`null-server: cannot bind ${values.address}: ${err.message}\n`);
    process.exit(2);
  }
  const host = values.address.slice(0, values.address.lastIndexOf(':'));
  process.stdout.write(JSON.stringify({ ready: true, grpc: `${host}:${port}`, pid: process.pid, transport: values.transport }) + '\n');
}
if (values.transport === 'native') server.listen(values.address).then((port) => ready(null, port), (err) => ready(err, 0));
else server.bindAsync(values.address, grpc.ServerCredentials.createInsecure(), ready);

function stop() {
  server.tryShutdown(() => {
    process.stdout.write(JSON.stringify({ answered, malformed }) + '\n', () => process.exit(0));
  });
  setTimeout(() => {
    server.forceShutdown();
  }, 2000).unref();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
