#!/usr/bin/env node
/**
 * Closed-loop load generator for a unary gRPC method on raw node:http2 that cycles through MANY
 * request bodies (h2load sends one body file; the SVID-churn section needs 100,000 distinct
 * certificates). `--connections` HTTP/2 connections each keep `--streams` requests in flight; each
 * answer sends the next body of the file, in order, wrapping around.
 *
 *   node bench/closedloop.mjs --url http://127.0.0.1:9191 --bodies FILE [--path /pkg.Svc/Method]
 *        [--connections 4] [--streams 16] [--duration 10] [--warmup 2]
 *
 * FILE holds framed gRPC requests back to back (5-byte prefix + message, each). Every answer must
 * be HTTP 200 with grpc-status 0 and, for the Envoy Check method, a CheckResponse with status.code
 * 0 (an allow). Stdout is JSON lines like bench/openloop.mjs: `{"phase":"measure"}` when the warm-up
 * ends, `{"phase":"drain"}` when the measured window ends, then `{"result":{…}}` with the achieved
 * `rate` (answers/s in the window) and latencies in ms (send to answer). Exit 0 when it ran, 2 on
 * bad arguments or no connection.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ANSWERED_OUTCOMES, answerOutcome, CHECK_PATH, measuredAnswered, splitFrames } from './lib/grpc-wire.mjs';
import { closeSession, connect, unaryCall } from './lib/h2-unary.mjs';
import { summarize } from './lib/stats.mjs';

const USAGE = 'usage: node bench/closedloop.mjs --url http://HOST:PORT --bodies FILE [--path P] [--connections N] [--streams N] [--duration S] [--warmup S]';

/**
 * @param {string} msg
 * @returns {never}
 */
function fail(msg) {
  process.stderr.write(`closedloop: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        bodies: { type: 'string' },
        path: { type: 'string', default: CHECK_PATH },
        connections: { type: 'string', default: '4' },
        streams: { type: 'string', default: '16' },
        duration: { type: 'string', default: '10' },
        warmup: { type: 'string', default: '2' },
      },
      strict: true,
    }));
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
  const num = (name, min) => {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < min) fail(`--${name} must be a number ≥ ${min}`);
    return v;
  };
  if (!values.url || !values.bodies) fail('--url and --bodies are required');
  return {
    url: values.url,
    bodies: values.bodies,
    path: values.path,
    connections: Math.floor(num('connections', 1)),
    streams: Math.floor(num('streams', 1)),
    durationS: num('duration', 0.1),
    warmupS: num('warmup', 0),
  };
}

async function main() {
  const opt = options();
  let frames;
  try {
    frames = splitFrames(readFileSync(opt.bodies));
  } catch (err) {
    fail(`${opt.bodies}: ${err instanceof Error ? err.message : String(err)}`);
  }
  let sessions;
  try {
    sessions = await Promise.all(Array.from({ length: opt.connections }, () => connect(opt.url)));
  } catch (err) {
    fail(`cannot connect to ${opt.url}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

  const t0 = performance.now();
  const measureFrom = t0 + opt.warmupS * 1000;
  const measureUntil = measureFrom + opt.durationS * 1000;
  /** @type {number[]} */
  const latencyMs = [];
  const counts = { ok: 0, httpErrors: 0, grpcErrors: 0, denied: 0, malformed: 0, streamErrors: 0 };
  let firstError = null;
  let next = 0;
  let warmupAnswered = 0;
  let phase = 'warmup';

  /** One stream slot: sends, waits, records, sends the next, until the window ends. */
  const slot = async (session) => {
    for (;;) {
      const sentAt = performance.now();
      if (sentAt >= measureUntil) return;
      if (phase === 'warmup' && sentAt >= measureFrom) {
        phase = 'measure';
        emit({ phase: 'measure' });
      }
      const frame = frames[next++ % frames.length];
      let outcome;
      try {
        outcome = answerOutcome(await unaryCall(session, opt.path, frame), opt.path);
      } catch (err) {
        outcome = ['streamErrors', err instanceof Error ? err.message : String(err)];
      }
      const doneAt = performance.now();
      if (sentAt < measureFrom || doneAt > measureUntil) {
        if (ANSWERED_OUTCOMES.has(outcome[0])) warmupAnswered++; // outside the window: not measured
        continue;
      }
      latencyMs.push(doneAt - sentAt);
      counts[outcome[0]]++;
      if (outcome[1] !== null && firstError === null) firstError = outcome[1];
    }
  };
  let drained = false;
  const drain = () => {
    if (drained) return;
    drained = true;
    emit({ phase: 'drain' });
  };
  const endTimer = setTimeout(drain, Math.max(0, measureUntil - performance.now()));
  await Promise.all(sessions.flatMap((s) => Array.from({ length: opt.streams }, () => slot(s))));
  clearTimeout(endTimer);
  drain();
  await Promise.all(sessions.map(closeSession));

  const answered = measuredAnswered(counts);
  emit({
    result: {
      rate: answered / opt.durationS,
      durationS: opt.durationS,
      warmupS: opt.warmupS,
      connections: opt.connections,
      streams: opt.streams,
      bodies: frames.length,
      sent: next,
      answered,
      ...counts,
      unanswered: 0,
      failures: counts.httpErrors + counts.grpcErrors + counts.denied + counts.malformed + counts.streamErrors,
      firstError,
      latencyMs: summarize(Float64Array.from(latencyMs)),
      warmupAnswered,
    },
  });
}

main().catch((err) => {
  process.stderr.write(`closedloop: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
