/**
 * Reading the service's own measurements from `GET /metrics` (Prometheus text exposition format
 * 0.0.4, https://prometheus.io/docs/instrumenting/exposition_formats/): parse samples, take the
 * delta of a histogram between two scrapes, and estimate quantiles exactly like PromQL
 * `histogram_quantile` (linear interpolation inside the bucket that holds the rank;
 * https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile).
 */

/** @typedef {{name: string, labels: Record<string, string>, value: number}} Sample */
/** @typedef {{le: number, count: number}} Bucket  cumulative count of observations ≤ le */
/** @typedef {{buckets: Bucket[], sum: number, count: number}} Histogram */

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/**
 * Every sample of the exposition text, in order. Comment and blank lines are skipped.
 * Throws TypeError on a line that is not a sample (the harness must not measure from garbage).
 * @param {string} text
 * @returns {Sample[]}
 */
export function parsePrometheusText(text) {
  /** @type {Sample[]} */
  const out = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = /** @type {string} */ (lines[i]).trim();
    if (line === '' || line.startsWith('#')) continue;
    out.push(parseSampleLine(line, i + 1));
  }
  return out;
}

/**
 * @param {string} line
 * @param {number} lineNo
 * @returns {Sample}
 */
function parseSampleLine(line, lineNo) {
  const bad = (why) => new TypeError(`metrics line ${lineNo}: ${why}: ${JSON.stringify(line.slice(0, 120))}`);
  const nameMatch = NAME_RE.exec(line);
  if (!nameMatch) throw bad('no metric name');
  const name = nameMatch[0];
  let pos = name.length;
  /** @type {Record<string, string>} */
  const labels = {};
  if (line[pos] === '{') {
    pos++;
    for (;;) {
      while (line[pos] === ' ') pos++;
      if (line[pos] === '}') {
        pos++;
        break;
      }
      const ln = LABEL_NAME_RE.exec(line.slice(pos));
      if (!ln) throw bad('bad label name');
      pos += ln[0].length;
      if (line[pos] !== '=' || line[pos + 1] !== '"') throw bad('expected ="');
      pos += 2;
      let value = '';
      for (;;) {
        const ch = line[pos];
        if (ch === undefined) throw bad('unterminated label value');
        pos++;
        if (ch === '"') break;
        if (ch === '\\') {
          const esc = line[pos++];
          value += esc === 'n' ? '\n' : esc === '\\' ? '\\' : esc === '"' ? '"' : `\\${esc ?? ''}`;
        } else {
          value += ch;
        }
      }
      labels[ln[0]] = value;
      while (line[pos] === ' ') pos++;
      if (line[pos] === ',') pos++;
      else if (line[pos] !== '}') throw bad('expected , or }');
    }
  }
  const rest = line.slice(pos).trim().split(/\s+/);
  const value = parseValue(rest[0]);
  if (rest[0] === undefined || (Number.isNaN(value) && rest[0].toLowerCase() !== 'nan')) throw bad('bad value');
  return { name, labels, value };
}

/** @param {string | undefined} s */
function parseValue(s) {
  if (s === undefined || s === '') return NaN;
  // The format says +Inf/-Inf/NaN; prom-client writes `Nan`, Go clients `+Inf`: accept any case.
  switch (s.toLowerCase()) {
    case '+inf':
    case 'inf':
      return Infinity;
    case '-inf':
      return -Infinity;
    case 'nan':
      return NaN;
    default:
      return Number(s);
  }
}

/**
 * @param {Record<string, string>} labels
 * @param {Record<string, string>} filter
 */
function matches(labels, filter) {
  for (const k of Object.keys(filter)) if (labels[k] !== filter[k]) return false;
  return true;
}

/**
 * The histogram `name` (its `_bucket`, `_sum`, `_count` series), summed over every label set that
 * matches `filter` (like `sum by (le)`). Null when the histogram is absent.
 * @param {readonly Sample[]} samples
 * @param {string} name
 * @param {Record<string, string>} [filter]
 * @returns {Histogram | null}
 */
export function histogramOf(samples, name, filter = {}) {
  /** @type {Map<number, number>} */
  const byLe = new Map();
  let sum = 0;
  let count = 0;
  let seen = false;
  for (const s of samples) {
    if (!matches(s.labels, filter)) continue;
    if (s.name === `${name}_bucket`) {
      const le = parseValue(s.labels['le']);
      if (Number.isNaN(le)) throw new TypeError(`${name}_bucket without a numeric le label`);
      byLe.set(le, (byLe.get(le) ?? 0) + s.value);
      seen = true;
    } else if (s.name === `${name}_sum`) {
      sum += s.value;
    } else if (s.name === `${name}_count`) {
      count += s.value;
    }
  }
  if (!seen) return null;
  const buckets = [...byLe.entries()].map(([le, c]) => ({ le, count: c })).sort((a, b) => a.le - b.le);
  return { buckets, sum, count };
}

/**
 * Sum of a counter (or gauge) over the label sets that match `filter`; 0 when absent.
 * @param {readonly Sample[]} samples
 * @param {string} name
 * @param {Record<string, string>} [filter]
 */
export function counterSum(samples, name, filter = {}) {
  let total = 0;
  for (const s of samples) if (s.name === name && matches(s.labels, filter)) total += s.value;
  return total;
}

/**
 * after − before, bucket by bucket (both from the same process: counters only grow).
 * @param {Histogram | null} before  null = the histogram did not exist yet (all zero)
 * @param {Histogram} after
 * @returns {Histogram}
 */
export function histogramDelta(before, after) {
  const prev = new Map((before?.buckets ?? []).map((b) => [b.le, b.count]));
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (prev.get(b.le) ?? 0) })),
    sum: after.sum - (before?.sum ?? 0),
    count: after.count - (before?.count ?? 0),
  };
}

/**
 * PromQL `histogram_quantile(q, …)` on one histogram, plus the bucket the rank fell in so a reader
 * sees the resolution. Rules as in Prometheus: the rank is q·(count of the +Inf bucket); linear
 * interpolation between the bucket's lower bound (the previous `le`, or 0 for the first bucket)
 * and its `le`; a rank in the +Inf bucket returns the largest finite `le`. NaN without observations.
 * @param {number} q
 * @param {Histogram} h
 * @returns {{value: number, lower: number, upper: number}}
 */
export function histogramQuantile(q, h) {
  if (!(q >= 0 && q <= 1)) throw new TypeError(`quantile ${q} is not in [0, 1]`);
  const buckets = h.buckets;
  const last = buckets[buckets.length - 1];
  if (!last || last.le !== Infinity) throw new TypeError('histogram has no +Inf bucket');
  const total = last.count;
  if (!(total > 0)) return { value: NaN, lower: NaN, upper: NaN };
  const rank = q * total;
  let i = 0;
  while (i < buckets.length - 1 && /** @type {Bucket} */ (buckets[i]).count < rank) i++;
  const b = /** @type {Bucket} */ (buckets[i]);
  const prev = i > 0 ? /** @type {Bucket} */ (buckets[i - 1]) : null;
  if (b.le === Infinity) {
    const top = prev ? prev.le : NaN;
    return { value: top, lower: top, upper: Infinity };
  }
  const lower = prev ? prev.le : b.le > 0 ? 0 : b.le;
  const below = prev ? prev.count : 0;
  const inBucket = b.count - below;
  const value = inBucket > 0 ? lower + ((b.le - lower) * (rank - below)) / inBucket : b.le;
  return { value, lower, upper: b.le };
}

/**
 * Fraction of observations at or below `le`, exact when `le` is a bucket boundary (then a target
 * like "p50 ≤ 100 µs" is decided without interpolation: it holds iff this fraction ≥ 0.5).
 * Null when `le` is not a boundary of the histogram.
 * @param {Histogram} h
 * @param {number} le
 */
export function fractionAtOrBelow(h, le) {
  const total = h.buckets[h.buckets.length - 1]?.count ?? 0;
  const b = h.buckets.find((x) => x.le === le);
  if (!b || !(total > 0)) return null;
  return b.count / total;
}
