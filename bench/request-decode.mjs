// Micro-benchmark of decoding a CheckRequest (SPEC §3): proto-loader's deserializer (protobufjs
// decode + toObject, what the null server and grpc-js's default path run) against chio's own
// decoder (src/check/request-wire.ts: only the fields the Check path reads). Each call gets a
// fresh copy of the bytes, as grpc-js hands every message its own buffer.
//
//   npm run build && node bench/request-decode.mjs [FIXTURE]   (MS=1000 RUNS=7 by default;
//   FIXTURE: a name in test/fixtures/envoy/check-requests, default http-mtls-spiffe-full)
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AUTHORIZATION_SERVICE, loadAuthProtos, toCheckInput } from '../dist/check/envoy.js';
import { decodeCheckRequest } from '../dist/check/request-wire.js';
import { bench, MS, RUNS } from './lib/micro.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const name = process.argv[2] ?? 'http-mtls-spiffe-full';
const bytes = readFileSync(path.join(ROOT, 'test', 'fixtures', 'envoy', 'check-requests', `${name}.pb`));
const protoLoader = loadAuthProtos()[AUTHORIZATION_SERVICE].Check.requestDeserialize;


// both must describe the same request before either is timed
const a = JSON.stringify([...toCheckInput(protoLoader(bytes)).headers]);
const b = JSON.stringify([...toCheckInput(decodeCheckRequest(bytes)).headers]);
if (a !== b) throw new Error(`the decoders disagree on ${name}`);

console.log(`${name}.pb: ${bytes.length} bytes; node ${process.version}; MS=${MS} RUNS=${RUNS}`);
const slow = bench('proto-loader requestDeserialize (decode + toObject)', () => protoLoader(Buffer.from(bytes)));
const fast = bench('decodeCheckRequest (src/check/request-wire.ts)', () => decodeCheckRequest(Buffer.from(bytes)));
bench('Buffer.from(bytes) alone (in both numbers above)', () => Buffer.from(bytes));
console.log(`ratio: ${(slow / fast).toFixed(2)}×`);
