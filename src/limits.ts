/**
 * Load shedding (issue "Performance at scale", overload). Two bounds per process:
 *
 * - `limits.max_concurrent_streams`: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2) of
 *   every Check connection (default 100, the floor RFC 9113 recommends: a lower one makes clients
 *   that burst before they read our SETTINGS see refused streams). A client cannot open more
 *   streams on a connection; Envoy queues the rest in its connection pool (until its ext_authz
 *   `timeout`) or opens another connection. It bounds what a connection can park in this process
 *   before its Checks are even read, and keeps the process efficient: measured at 2× capacity over
 *   8 connections, 256 streams per connection answered 7.5k/s with a 253 ms mean latency, 64 per
 *   connection 9.3k/s with 54 ms, 32 per connection 10k/s with 25 ms.
 * - `limits.max_in_flight`: Checks admitted at once, from the moment grpc-js hands one to the
 *   pipeline until its answer is sent (its receipt durable, in strict mode). A Check that arrives
 *   while `max_in_flight` are admitted is not queued behind them: it is answered at once with a
 *   deny `overloaded` (HTTP 503) and a receipt, without identity, policy or capability work
 *   (src/check/pipeline.ts `shed`). The admitted queue, and so the latency of what is admitted,
 *   stay bounded, whatever backs up: the CPU, or the disk under a slow fdatasync.
 *
 * Why a deny with a receipt and not an RPC error (RESOURCE_EXHAUSTED): SPEC §1 fails closed. An
 * RPC error is what Envoy's `failure_mode_allow: true` turns into an ALLOW, so under overload a
 * misconfigured sidecar would open the gate exactly when we are flooded; a deny never does, whatever
 * Envoy's settings, and the receipt keeps "every decision has a receipt" true. 503 (not 403) tells
 * the caller and Envoy's retry policy (`retry_on: 5xx`) that it may try again.
 *
 * What shedding cannot do: make a shed Check free. It still costs the transport, the decode and its
 * receipt (the larger part of a Check; the decision itself is ~10 µs), so above capacity the answered
 * rate stays near capacity and the admitted share falls (BENCHMARKS.md, section `overload`). With
 * few connections the stream bound alone keeps the queue outside; shedding takes over when many
 * connections together open more than `max_in_flight`.
 *
 * Default 1024 (Envoy's default circuit-breaker `max_requests` per upstream cluster). The decision
 * itself is synchronous (~10 µs), so what the count holds is mostly Checks waiting for their batch's
 * fdatasync (strict durability) or for the event loop under CPU overload. It was 256 (~25 ms of
 * work at 10k/s); measured on a disk whose fdatasync has a ~16 ms p99 and 60+ ms stalls, 256 shed at
 * half capacity (the overload section's recovery phase: 326–1,428 of ~20,000 shed; the open-loop
 * sweep: 1,092 shed at 4,000/s with the CPU 81% busy). With 1024: 0 shed at half capacity in two
 * runs and 0 in the sweep up to 6,000/s; under 2× capacity the service still sheds (13–19%), with
 * the same peak RSS (~300–320 MiB) and 0 transport errors (BENCHMARKS.md, runs of 2026-11-26 09:53–09:57 UTC).
 * A time-based bound (shed when the oldest admitted Check has waited longer than a share of
 * Envoy's timeout) would follow the disk without a count to tune; not built.
 * Counting from the HTTP/2 stream's opening instead (a grpc-js server interceptor) was tried and
 * dropped: under flow control the admitted streams waited for their messages behind shed ones.
 */
import type { CheckResponseMessage, RawCheckRequest } from './check/envoy.js';
import type { CheckHandler } from './server/grpc.js';

/** A counter of admitted Checks with a fixed cap. */
export class InFlightLimit {
  #inFlight = 0;

  constructor(readonly max: number) {
    if (!Number.isSafeInteger(max) || max < 1) throw new TypeError(`InFlightLimit max must be a positive integer, got ${max}`);
  }

  /** Admitted Checks not answered yet. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Takes a slot; false when all `max` are taken. */
  tryEnter(): boolean {
    if (this.#inFlight >= this.max) return false;
    this.#inFlight++;
    return true;
  }

  leave(): void {
    if (this.#inFlight === 0) throw new TypeError('InFlightLimit.leave() without a matching tryEnter()');
    this.#inFlight--;
  }
}

/** What the limiter needs from the pipeline (src/check/pipeline.ts). */
export interface SheddableHandler extends CheckHandler {
  /** deny `overloaded` with a receipt, at once */
  shed(request: RawCheckRequest): Promise<CheckResponseMessage>;
}

/** `handler` behind `limit`: a Check that arrives while `limit.max` are admitted is shed, never queued. */
export function limitInFlight(handler: SheddableHandler, limit: InFlightLimit): CheckHandler {
  return {
    check(request) {
      if (!limit.tryEnter()) return handler.shed(request);
      let answer: Promise<CheckResponseMessage>;
      try {
        answer = handler.check(request);
      } catch (err) {
        limit.leave();
        throw err;
      }
      return answer.then(
        (res) => {
          limit.leave();
          return res;
        },
        (err: unknown) => {
          limit.leave();
          throw err;
        },
      );
    },
  };
}
