/**
 * h2load (nghttp2, https://nghttp2.org/documentation/h2load-howto.html) as the closed-loop load
 * generator: its command line for a unary gRPC call, its summary output, and its `--log-file`
 * (one line per request completed in the measured phase: start time µs, HTTP status, duration µs;
 * warm-up requests are not logged). Used for saturation only: `--rps` bursts every 10 ms
 * (/work/shared/notes/performance.md §1.9), fixed-rate latency is bench/openloop.mjs.
 */
import { readFileSync } from 'node:fs';

export const H2LOAD_MISSING_HINT = 'h2load not found: install it with `apt-get install -y nghttp2-client` (Debian/Ubuntu), then rerun `npm run bench`.';

/**
 * @typedef {{url: string, bodyFile: string, clients: number, streams: number,
 *   durationS?: number, warmupS?: number, requests?: number, logFile?: string, rps?: number}} H2loadSpec
 * Either `durationS` (timing-based, with optional `warmupS`) or `requests` (a fixed count).
 * `rps`: requests per second per client (h2load --rps: bursts every 10 ms, so only for offering an
 * aggregate load, e.g. overload; never for latency at a fixed rate).
 */

/**
 * @param {H2loadSpec} s
 * @returns {string[]}
 */
export function h2loadArgs(s) {
  if ((s.durationS === undefined) === (s.requests === undefined)) throw new TypeError('h2load: give exactly one of durationS and requests');
  const args = ['-c', String(s.clients), '-m', String(s.streams)];
  if (s.durationS !== undefined) {
    args.push('-D', String(s.durationS));
    if (s.warmupS) args.push('--warm-up-time', String(s.warmupS));
  } else {
    args.push('-n', String(s.requests));
  }
  if (s.logFile) args.push('--log-file', s.logFile);
  if (s.rps !== undefined) args.push('--rps', String(s.rps));
  args.push('-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', s.bodyFile, s.url);
  return args;
}

/**
 * @typedef {{reqPerSec: number, total: number, started: number, done: number, succeeded: number,
 *   failed: number, errored: number, timeout: number, status2xx: number, statusOther: number}} H2loadSummary
 */

/**
 * The numbers of h2load's summary. Throws TypeError when the output lacks them (h2load failed).
 * @param {string} text
 * @returns {H2loadSummary}
 */
export function parseH2loadSummary(text) {
  const fin = /^finished in [^,]+, ([\d.]+) req\/s/m.exec(text);
  const req = /^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m.exec(text);
  const codes = /^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/m.exec(text);
  if (!fin || !req || !codes) throw new TypeError(`h2load output has no summary:\n${text.slice(-1500)}`);
  const n = (m, i) => Number(m[i]);
  return {
    reqPerSec: n(fin, 1),
    total: n(req, 1),
    started: n(req, 2),
    done: n(req, 3),
    succeeded: n(req, 4),
    failed: n(req, 5),
    errored: n(req, 6),
    timeout: n(req, 7),
    status2xx: n(codes, 1),
    statusOther: n(codes, 2) + n(codes, 3) + n(codes, 4),
  };
}

/**
 * Durations (µs) from an h2load --log-file, and how many lines had a non-2xx status. Status 0
 * appears (observed with 1.52.0, a few dozen lines per run) for streams that straddle the end of
 * `--warm-up-time`: their status was seen before measuring began; they count as completed.
 * @param {string} text
 * @returns {{durationsUs: Float64Array, non2xx: number}}
 */
export function parseH2loadLog(text) {
  const lines = text.split('\n');
  const out = new Float64Array(lines.length);
  let n = 0;
  let non2xx = 0;
  for (const line of lines) {
    if (line === '') continue;
    const parts = line.split('\t');
    if (parts.length < 3) throw new TypeError(`h2load log line is not "start\\tstatus\\tduration": ${JSON.stringify(line)}`);
    const status = Number(parts[1]);
    const dur = Number(parts[2]);
    if (!Number.isFinite(dur)) throw new TypeError(`h2load log line has no duration: ${JSON.stringify(line)}`);
    if (status !== 0 && (status < 200 || status > 299)) non2xx++;
    out[n++] = dur;
  }
  return { durationsUs: out.slice(0, n), non2xx };
}

/** @param {string} file */
export function readH2loadLog(file) {
  return parseH2loadLog(readFileSync(file, 'utf8'));
}
