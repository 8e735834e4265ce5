#!/usr/bin/env node
/**
 * Fixed-rate (open-loop) load generator for a unary gRPC method on raw node:http2, for latency at
 * a given rate (/work/shared/notes/performance.md §1.9, §5.4: h2load `--rps` bursts every 10 ms,
 * so it is not used for this). Request i is scheduled at t0 + i/rate; a 1 ms timer sends every
 * request that is due, and latency is measured from the SCHEDULED time, not the send time, so a
 * stalled client or server cannot hide its queueing (no coordinated omission).
 *
 *   node bench/openloop.mjs --url http://127.0.0.1:9191 --body FILE [--path /pkg.Svc/Method]
 *        [--rate 1000] [--duration 10] [--warmup 2] [--connections 1] [--drain-timeout 5]
 *
 * FILE is a framed gRPC request (5-byte prefix + message). Every answer must be HTTP 200 with
 * grpc-status 0; for the Envoy Check method a CheckResponse whose status.code is not 0 (a deny)
 * counts as a failure too. Stdout is JSON lines: `{"phase":"measure"}` when the first measured
 * request is sent, `{"phase":"drain"}` when the last one is, then `{"result":{…}}`
 * (latencies in ms over the requests scheduled in the measured window). Exit 0 when it ran
 * (failures are in the result), 2 on bad arguments or no connection.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ANSWERED_OUTCOMES, answerOutcome, CHECK_PATH, measuredAnswered, unframeMessage } from './lib/grpc-wire.mjs';
import { closeSession, connect, unaryCall } from './lib/h2-unary.mjs';
import { summarize } from './lib/stats.mjs';

const USAGE = 'usage: node bench/openloop.mjs --url http://HOST:PORT --body FILE [--path P] [--rate N] [--duration S] [--warmup S] [--connections N] [--drain-timeout S]';

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        body: { type: 'string' },
        path: { type: 'string', default: CHECK_PATH },
        rate: { type: 'string', default: '1000' },
        duration: { type: 'string', default: '10' },
        warmup: { type: 'string', default: '2' },
        connections: { type: 'string', default: '1' },
        'drain-timeout': { type: 'string', default: '5' },
      },
      strict: true,
    }));
  } catch (err) {
    fail(`${err instanceof Error ? err.message : String(err)}`);
  }
  const num = (name, min) => {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < min) fail(`--${name} must be a number ≥ ${min}`);
    return v;
  };
  if (!values.url || !values.body) fail('--url and --body are required');
  return {
    url: values.url,
    body: values.body,
    path: values.path,
    rate: num('rate', 1),
    durationS: num('duration', 0.1),
    warmupS: num('warmup', 0),
    connections: Math.floor(num('connections', 1)),
    drainTimeoutS: num('drain-timeout', 0.1),
  };
}

/**
 * @param {string} msg
 * @returns {never}
 */
function fail(msg) {
  process.stderr.write(`openloop: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

/** @param {object} obj */
function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const opt = options();
  const frame = readFileSync(opt.body);
  unframeMessage(frame); // a body that is not one framed message is a usage error, found now
  let sessions;
  try {
    sessions = await Promise.all(Array.from({ length: opt.connections }, () => connect(opt.url)));
  } catch (err) {
    fail(`cannot connect to ${opt.url}: ${err instanceof Error ? err.message : String(err)}`);
  }

  const intervalMs = 1000 / opt.rate;
  const warmCount = Math.round(opt.warmupS * opt.rate);
  const total = warmCount + Math.round(opt.durationS * opt.rate);
  const latencyMs = new Float64Array(total).fill(NaN);
  const counts = { ok: 0, httpErrors: 0, grpcErrors: 0, denied: 0, malformed: 0, streamErrors: 0 };
  /** @type {Record<string, number>} */
  const grpcStatusCounts = {};
  let firstError = null;
  let maxSendLagMs = 0;
  let completed = 0;
  let sent = 0;

  let warmAnswered = 0;
  const record = (i, scheduled, outcome, detail) => {
    latencyMs[i] = performance.now() - scheduled;
    completed++;
    if (i < warmCount) {
      if (ANSWERED_OUTCOMES.has(outcome)) warmAnswered++;
      return;
    }
    counts[outcome]++;
    if (outcome !== 'ok' && firstError === null) firstError = detail;
  };

  const send = (i, scheduled) => {
    const session = sessions[i % sessions.length];
    unaryCall(session, opt.path, frame).then(
      (ans) => {
        const [outcome, detail] = answerOutcome(ans, opt.path);
        if (outcome === 'grpcErrors' && i >= warmCount) grpcStatusCounts[String(ans.grpcStatus)] = (grpcStatusCounts[String(ans.grpcStatus)] ?? 0) + 1;
        record(i, scheduled, outcome, detail);
      },
      (err) => record(i, scheduled, 'streamErrors', err instanceof Error ? err.message : String(err)),
    );
  };

  const t0 = performance.now() + 5;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor((now - t0) / intervalMs) + 1);
      while (sent < due) {
        const i = sent++;
        const scheduled = t0 + i * intervalMs;
        if (i === warmCount) emit({ phase: 'measure' });
        if (i >= warmCount) maxSendLagMs = Math.max(maxSendLagMs, now - scheduled);
        send(i, scheduled);
      }
      if (sent >= total) {
        emit({ phase: 'drain' });
        resolve(undefined);
      } else {
        setTimeout(tick, 1);
      }
    };
    setTimeout(tick, Math.max(0, t0 - performance.now()));
  });

  const drainDeadline = performance.now() + opt.drainTimeoutS * 1000;
  while (completed < total && performance.now() < drainDeadline) await new Promise((r) => setTimeout(r, 5));
  const measured = latencyMs.subarray(warmCount).filter((v) => !Number.isNaN(v));
  const unanswered = total - warmCount - measured.length;
  await Promise.all(sessions.map((s) => (completed < total ? (s.destroy(), Promise.resolve()) : closeSession(s))));

  const lat = summarize(measured);
  emit({
    result: {
      rate: opt.rate,
      durationS: opt.durationS,
      warmupS: opt.warmupS,
      connections: opt.connections,
      scheduled: total - warmCount,
      answered: measuredAnswered(counts),
      ...counts,
      unanswered,
      failures: counts.httpErrors + counts.grpcErrors + counts.denied + counts.malformed + counts.streamErrors + unanswered,
      grpcStatusCounts,
      firstError,
      maxSendLagMs,
      latencyMs: lat,
      warmupAnswered: warmAnswered,
    },
  });
}

main().catch((err) => {
  process.stderr.write(`openloop: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
