/**
 * The registry of benchmark sections (bench/README.md "Adding a section"). A section is an async
 * function of the harness that returns tables, PASS/FAIL checks and notes; run.mjs runs the
 * default ones in this order (or those named by --only) and prints and saves what they return.
 */
import { openloopSection } from './section-openloop.mjs';
import { profileSection } from './section-profile.mjs';
import { saturationSection } from './section-saturation.mjs';
import { scriptSection } from './section-scripts.mjs';
import { policySizeSection } from './section-policy-size.mjs';
import { svidChurnSection } from './section-svid-churn.mjs';
import { workersSection } from './section-workers.mjs';
import { overloadSection } from './section-overload.mjs';
import { sweepSection } from './section-sweep.mjs';
import { soakSection } from './section-soak.mjs';
import { receiptsSections } from '../receipts.mjs';
import { postgresSections } from '../postgres.mjs';

/**
 * @typedef {[key: string, header: string, format?: 'int' | 'ms' | 'pct' | 'frac' | 'range']} Column
 * @typedef {{title: string, columns: Column[], rows: Record<string, unknown>[]}} Table
 * @typedef {{name: string, target: string, value: string, pass: boolean, inconclusive?: string}} Check
 * `inconclusive`: why a performance verdict cannot be trusted (its runs were NOISY); such a check
 * is reported as INCONCLUSIVE whatever `pass` says.
 * @typedef {{tables: Table[], checks: Check[], notes: string[], text?: string, data?: unknown}} SectionResult
 * @typedef {{name: string, title: string, default: boolean,
 *            run: (h: import('./harness.mjs').Harness) => Promise<SectionResult>}} Section
 */

/** @type {Section[]} */
export const SECTIONS = [
  saturationSection,
  openloopSection({
    name: 'openloop',
    title: 'Open loop at 1,000/s: client latency, and the server handler time from /metrics (durability strict)',
    default: true,
    durability: 'strict',
    baseline: true,
  }),
  openloopSection({
    name: 'openloop-relaxed',
    title: 'The same open loop with receipts.durability relaxed (no fsync wait): what durability costs',
    default: false,
    durability: 'relaxed',
    baseline: false,
  }),
  profileSection,
  scriptSection({ name: 'receipt-seal', file: 'receipt-seal.mjs', title: 'Receipt sealing micro-benchmark (bench/receipt-seal.mjs)' }),
  scriptSection({ name: 'policy-scale', file: 'policy-scale.mjs', title: 'Policy scale micro-benchmark (bench/policy-scale.mjs)' }),
  ...receiptsSections(),
  ...postgresSections(),
  // performance at scale (part B): policy size, SVID churn, both cores, overload, latency vs load, memory soak
  policySizeSection,
  svidChurnSection,
  workersSection,
  overloadSection,
  sweepSection,
  soakSection,
];

/**
 * The sections to run: the defaults, or exactly those named (in registry order).
 * Throws TypeError naming the unknown ones.
 * @param {string[]} only
 */
export function selectSections(only) {
  if (only.length === 0) return SECTIONS.filter((s) => s.default);
  const known = new Set(SECTIONS.map((s) => s.name));
  const unknown = only.filter((n) => !known.has(n));
  if (unknown.length) throw new TypeError(`unknown section(s) ${unknown.join(', ')}; known: ${[...known].join(', ')}`);
  return SECTIONS.filter((s) => only.includes(s.name));
}
