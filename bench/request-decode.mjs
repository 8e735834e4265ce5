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

const MS = Number(process.env.MS ?? 1000);
const RUNS = Number(process.env.RUNS ?? 7);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const name = process.argv[2] ?? 'http-mtls-spiffe-full';
const bytes = readFileSync(path.join(ROOT, 'test', 'fixtures', 'envoy', 'check-requests', `${name}.pb`));
const protoLoader = loadAuthProtos()[AUTHORIZATION_SERVICE].Check.requestDeserialize;

/** Runs `fn` for MS ms, RUNS times; prints and returns the median µs per call. */
function bench(label, fn) {
  for (let i = 0; i < 5000; i++) fn(); // warm-up (JIT)
  const perCall = [];
  for (let r = 0; r < RUNS; r++) {
    let n = 0;
    const start = process.hrtime.bigint();
    const end = start + BigInt(MS) * 1_000_000n;
    let now = start;
    while (now < end) {
      for (let i = 0; i < 100; i++) fn();
      n += 100;
      now = process.hrtime.bigint();
    }
    perCall.push(Number(now - start) / 1000 / n);
  }
  perCall.sort((a, b) => a - b);
  const median = perCall[Math.floor(perCall.length / 2)];
  console.log(`${label.padEnd(52)} ${median.toFixed(2).padStart(7)} µs/op  (min ${perCall[0].toFixed(2)}, max ${perCall[perCall.length - 1].toFixed(2)})`);
  return median;
}

// both must describe the same request before either is timed
const a = JSON.stringify([...toCheckInput(protoLoader(bytes)).headers]);
const b = JSON.stringify([...toCheckInput(decodeCheckRequest(bytes)).headers]);
if (a !== b) throw new Error(`the decoders disagree on ${name}`);

console.log(`${name}.pb: ${bytes.length} bytes; node ${process.version}; MS=${MS} RUNS=${RUNS}`);
const slow = bench('proto-loader requestDeserialize (decode + toObject)', () => protoLoader(Buffer.from(bytes)));
const fast = bench('decodeCheckRequest (src/check/request-wire.ts)', () => decodeCheckRequest(Buffer.from(bytes)));
bench('Buffer.from(bytes) alone (in both numbers above)', () => Buffer.from(bytes));
console.log(`ratio: ${(slow / fast).toFixed(2)}×`);
