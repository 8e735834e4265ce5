/**
 * Output of `npm run bench` (bench/README.md): readable fixed-width tables on stdout, and the
 * whole result as JSON in `.bench/results-<timestamp>.json` (gitignored).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NOISY_PCT } from './harness.mjs';

/**
 * One cell as text.
 * @param {unknown} v
 * @param {string | undefined} format
 * @returns {string}
 */
export function formatCell(v, format) {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'number' && !Number.isFinite(v)) return '–';
  switch (format) {
    case 'int':
      return Math.round(/** @type {number} */ (v)).toLocaleString('en-US');
    case 'ms': {
      const n = /** @type {number} */ (v);
      return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
    }
    case 'pct':
      return `${/** @type {number} */ (v).toFixed(0)}`;
    case 'frac':
      return `${(/** @type {number} */ (v) * 100).toFixed(1)}%`;
    case 'range': {
      const [a, b] = /** @type {[number, number]} */ (v);
      return `${formatCell(a, 'int')}–${formatCell(b, 'int')}`;
    }
    default:
      return String(v);
  }
}

/**
 * @param {import('./sections.mjs').Table} t
 * @returns {string}
 */
export function formatTable(t) {
  const header = t.columns.map((c) => c[1]);
  const body = t.rows.map((r) => t.columns.map(([key, , fmt]) => formatCell(r[key], fmt)));
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] ?? '').length)));
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [`  ${t.title}`, `  ${line(header)}`, `  ${widths.map((w) => '-'.repeat(w)).join('  ')}`, ...body.map((r) => `  ${line(r)}`)].join('\n');
}

/**
 * PASS, FAIL or INCONCLUSIVE (a performance check measured in noisy runs).
 * @param {import('./sections.mjs').Check} c
 */
export function checkStatus(c) {
  return c.inconclusive ? 'INCONCLUSIVE' : c.pass ? 'PASS' : 'FAIL';
}

/** @param {import('./sections.mjs').Check} c */
export function formatCheck(c) {
  const why = c.inconclusive ? `; measured ${c.pass ? 'PASS' : 'FAIL'}, but ${c.inconclusive}` : '';
  return `  [${checkStatus(c)}] ${c.name}: ${c.value} (target ${c.target}${why})`;
}

/**
 * The servers started during the run: peak RSS and, for chio, the receipt check.
 * @param {any[]} reports
 * @returns {import('./sections.mjs').Table}
 */
export function serversTable(reports) {
  return {
    title: 'servers started (peak RSS = max of sampled VmRSS and VmHWM; receipts = lines of the jsonl sink)',
    columns: [
      ['section', 'section'],
      ['label', 'server'],
      ['peakRssMiB', 'peak RSS MiB', 'ms'],
      ['exit', 'exit'],
      ['receipts', 'receipts', 'int'],
      ['decisions', 'decisions', 'int'],
      ['answered', 'client answers'],
      ['verify', 'receipt verify'],
    ],
    rows: reports.map((r) => ({
      section: r.section,
      label: r.label,
      peakRssMiB: r.peakRssMiB,
      exit: r.exit,
      receipts: r.receipts?.lines ?? null,
      decisions: r.receipts ? r.receipts.decisions.total : r.nullStats?.answered ?? null,
      answered: `${r.answeredIsLowerBound ? '≥ ' : ''}${r.answered.toLocaleString('en-US')}`,
      verify: r.receipts ? (r.receipts.verify.ok ? `OK (${r.receipts.verify.seconds.toFixed(1)} s)` : `FAILED: ${r.receipts.verify.output.split('\n')[0]}`) : '–',
    })),
  };
}

/**
 * The checks every chio instance gets: receipts = decisions, no denies, verify passes.
 * @param {any[]} reports
 * @returns {import('./sections.mjs').Check[]}
 */
export function receiptChecks(reports) {
  return reports
    .filter((r) => r.receipts)
    .flatMap((r) => {
      const x = r.receipts;
      const d = x.decisions;
      return [
        {
          name: `[${r.section}] receipts written = decisions answered`,
          target: `lines = server decisions, receipts_written_total ${r.durability === 'relaxed' ? '≤ lines (relaxed: the last batch is written on close)' : '= lines'}, lines ${x.answeredIsLowerBound ? '≥' : '='} answers the clients counted, ${x.denyExpected ? 'denies expected (load shedding)' : '0 denies'}`,
          value: `${x.lines} lines, ${d.total} decisions (${d.allow} allow, ${d.deny} deny), ${d.receiptsWritten} written, clients counted ${x.answeredByClients}`,
          pass: x.countOk && (d.deny === 0 || x.denyExpected === true),
        },
        {
          name: `[${r.section}] chio receipt verify`,
          target: 'exit 0',
          value: `exit ${x.verify.exitCode}: ${x.verify.output.split('\n')[0]?.replace(/^.*?: /, '')}`,
          pass: x.verify.ok,
        },
      ];
    });
}

/**
 * @param {string} dir
 * @param {Date} when
 * @param {unknown} results
 */
export function writeResultsJson(dir, when, results) {
  mkdirSync(dir, { recursive: true });
  const stamp = when.toISOString().replace(/[:.]/g, '-');
  const file = path.join(dir, `results-${stamp}.json`);
  // JSON has no Infinity: a histogram's +Inf bucket bound is written as the string "+Inf".
  const replacer = (_key, v) => (v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : v);
  writeFileSync(file, JSON.stringify(results, replacer, 2) + '\n');
  return file;
}

/**
 * A note when some measured runs shared the machine with other programs or lost time to steal.
 * @param {{noisy: boolean}[]} runs
 */
export function noiseNotes(runs) {
  const noisy = runs.filter((r) => r.noisy).length;
  if (noisy === 0) return [];
  return [
    `${noisy} of ${runs.length} run(s) marked NOISY: other programs or steal used more than ${NOISY_PCT}% of the machine during the run, so their numbers are pessimistic. Rerun on a quiet machine to compare.`,
  ];
}
