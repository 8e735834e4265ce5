#!/usr/bin/env node
/**
 * `npm run bench` (= `npm run build && node bench/run.mjs`): throughput and latency of the Check
 * path (SPEC §1, §3) against a null server, on one pinned core, as described in bench/README.md.
 * Method: /work/shared/notes/performance.md §5.6 (pinning, repetitions, null baseline, open loop).
 *
 *   node bench/run.mjs [--quick] [--only SECTION[,SECTION]]… [--keep] [--list]
 *
 * Exit 0 when every check passes, 1 when a check fails (a target missed, a failed request, a
 * receipt mismatch, a section that crashed), 2 when the machine cannot run it (no h2load, no
 * taskset, fewer than 2 CPUs, not built) or on bad usage, 3 when nothing failed but a performance
 * verdict was INCONCLUSIVE (measured while other programs used the machine: rerun).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Harness, REFERENCE_REQUEST } from './lib/harness.mjs';
import { H2LOAD_MISSING_HINT } from './lib/h2load.mjs';
import { machineInfo } from './lib/machine.mjs';
import { hasCommand } from './lib/proc.mjs';
import { checkStatus, formatCheck, formatTable, receiptChecks, serversTable, writeResultsJson } from './lib/report.mjs';
import { SECTIONS, selectSections } from './lib/sections.mjs';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SERVER_CPU = 0;
const LOAD_CPU = 1;
const NODE_FLAGS = ['--single-threaded-gc'];

const USAGE = `usage: node bench/run.mjs [--quick] [--only SECTION[,SECTION]]… [--keep] [--list]
  --quick        1 repetition of 5 s (default: 3 × 10 s); open loop 5 s (default 10 s)
  --only S       run only these sections (default: ${SECTIONS.filter((s) => s.default).map((s) => s.name).join(', ')})
  --keep         keep the temp folder (configs, receipts, seeds) and print where it is
  --list         list the sections and exit
`;

/**
 * @param {string} msg
 * @returns {never}
 */
function usage(msg) {
  process.stderr.write(`bench: ${msg}\n${USAGE}`);
  process.exit(2);
}

function options() {
  try {
    const { values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string', multiple: true, default: [] },
        keep: { type: 'boolean', default: false },
        list: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    });
    return { ...values, only: values.only.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean) };
  } catch (err) {
    return usage(err instanceof Error ? err.message : String(err));
  }
}

/** Exit 2 unless this machine can run the bench as specified. */
function preflight() {
  if (!hasCommand('h2load')) {
    process.stderr.write(`bench: ${H2LOAD_MISSING_HINT}\n`);
    process.exit(2);
  }
  if (!hasCommand('taskset', ['-V'])) {
    process.stderr.write('bench: taskset not found: install util-linux (`apt-get install -y util-linux`).\n');
    process.exit(2);
  }
  if (os.availableParallelism() < 2) {
    process.stderr.write(`bench: needs 2 CPUs (server on CPU ${SERVER_CPU}, load on CPU ${LOAD_CPU}); this machine has ${os.availableParallelism()}.\n`);
    process.exit(2);
  }
  if (!existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'index.js'))) {
    process.stderr.write('bench: dist/ is missing: run `npm run bench` (it builds first) or `npm run build`.\n');
    process.exit(2);
  }
}

/** @param {boolean} quick */
function settings(quick, tmpRoot) {
  return {
    repoRoot: REPO_ROOT,
    tmpRoot,
    quick,
    reps: quick ? 1 : 3,
    durationS: quick ? 5 : 10,
    h2loadWarmupS: 2,
    warmupRequests: quick ? 5000 : 6000,
    openloopRate: 1000,
    openloopDurationS: quick ? 5 : 10,
    openloopWarmupS: 2,
    serverCpu: SERVER_CPU,
    loadCpu: LOAD_CPU,
    serverNodeFlags: NODE_FLAGS,
    loadNodeFlags: NODE_FLAGS,
    quietWaitS: quick ? 5 : 10,
    quietBudgetS: quick ? 10 : 20,
    log: (msg) => process.stderr.write(`${msg}\n`),
  };
}

async function main() {
  const opt = options();
  if (opt.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (opt.list) {
    for (const s of SECTIONS) process.stdout.write(`${s.name.padEnd(18)} ${s.default ? '(default) ' : '          '}${s.title}\n`);
    return 0;
  }
  let sections;
  try {
    sections = selectSections(opt.only);
  } catch (err) {
    return usage(err instanceof Error ? err.message : String(err));
  }
  preflight();

  const started = new Date();
  const tmpRoot = mkdtempSync(path.join(os.tmpdir(), 'chio-bench-'));
  const s = settings(opt.quick, tmpRoot);
  const machine = machineInfo(REPO_ROOT);
  const out = (line = '') => process.stdout.write(`${line}\n`);

  out(`chio-authz bench — ${started.toISOString()}${opt.quick ? ' — QUICK (1 × 5 s: indicative only)' : ''}`);
  out(`machine: ${machine.nproc} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, ${machine.kernel}, node ${machine.node} (OpenSSL ${machine.openssl}), ${machine.h2load}`);
  out(`pinning: each server alone on CPU ${SERVER_CPU} (taskset -c ${SERVER_CPU} node ${NODE_FLAGS.join(' ')}), load generators on CPU ${LOAD_CPU} (taskset -c ${LOAD_CPU} h2load | node ${NODE_FLAGS.join(' ')} bench/openloop.mjs)`);
  out(`request: ${REFERENCE_REQUEST} (Envoy binary CheckRequest, framed for gRPC)`);
  out(`chio config unless a section says otherwise: demo/policy.yaml, fresh seed, jsonl sink, durability strict, on_failure deny (temp folder ${opt.keep ? tmpRoot : 'removed at the end'})`);

  const h = await Harness.create(s);
  /** @type {any[]} */
  const results = [];
  for (const section of sections) {
    out();
    out(`== ${section.name}: ${section.title} ==`);
    h.section = section.name;
    const t0 = Date.now();
    let result;
    try {
      result = await section.run(h);
    } catch (err) {
      await h.stopAll();
      const msg = err instanceof Error ? err.message : String(err);
      result = { tables: [], checks: [{ name: `section ${section.name} completed`, target: 'no error', value: msg.split('\n')[0] ?? msg, pass: false }], notes: [msg], data: { error: err instanceof Error ? err.stack : msg } };
    }
    const seconds = (Date.now() - t0) / 1000;
    for (const t of result.tables) {
      out(formatTable(t));
      out();
    }
    if (result.text) out(result.text.trimEnd().replace(/^/gm, '  '));
    for (const n of result.notes) out(`  note: ${n}`);
    for (const c of result.checks) out(formatCheck(c));
    out(`  (${seconds.toFixed(0)} s)`);
    results.push({ name: section.name, title: section.title, seconds, ...result });
  }

  await h.stopAll();
  out();
  out('== servers and receipts ==');
  const reports = h.serverReports;
  out(formatTable(serversTable(reports)));
  const rChecks = receiptChecks(reports);
  const uncleanExits = reports.filter((r) => !r.cleanExit);
  const serverChecks = [
    ...rChecks,
    { name: 'servers exited cleanly on SIGTERM', target: 'exit 0', value: uncleanExits.length ? uncleanExits.map((r) => `${r.section}/${r.label}: ${r.exit}`).join(', ') : 'all', pass: uncleanExits.length === 0 },
  ];
  for (const c of serverChecks) out(formatCheck(c));
  const peak = (kind) => {
    const mib = reports.filter((r) => r.kind === kind).map((r) => r.peakRssMiB);
    return mib.length ? Math.max(...mib) : null;
  };
  const chioPeak = peak('chio');
  const nullPeak = peak('null');
  out(`  peak RSS of chio-authz: ${chioPeak === null ? '– (not run)' : `${chioPeak.toFixed(1)} MiB`}${nullPeak === null ? '' : ` (null server: ${nullPeak.toFixed(1)} MiB)`}`);

  const allChecks = [...results.flatMap((r) => r.checks), ...serverChecks];
  const count = (status) => allChecks.filter((c) => checkStatus(c) === status).length;
  const failed = count('FAIL');
  const inconclusive = count('INCONCLUSIVE');
  const totalS = (Date.now() - started.getTime()) / 1000;
  out();
  out(`== result: ${count('PASS')} PASS, ${failed} FAIL, ${inconclusive} INCONCLUSIVE (${totalS.toFixed(0)} s) ==`);
  for (const c of allChecks.filter((x) => checkStatus(x) !== 'PASS')) out(formatCheck(c));
  if (inconclusive) out('  INCONCLUSIVE: measured while other programs used the machine; rerun when it is quiet.');

  const file = writeResultsJson(path.join(REPO_ROOT, '.bench'), started, {
    schema: 'chio.bench.v1',
    startedAt: started.toISOString(),
    seconds: totalS,
    command: `node bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    quick: opt.quick,
    settings: { ...s, log: undefined },
    machine,
    sections: results,
    servers: reports,
    checks: allChecks.map((c) => ({ ...c, status: checkStatus(c) })),
    pass: failed === 0 && inconclusive === 0,
    chioPeakRssMiB: chioPeak,
  });
  out(`results: ${path.relative(REPO_ROOT, file)}`);
  if (!opt.keep) rmSync(tmpRoot, { recursive: true, force: true });
  return failed > 0 ? 1 : inconclusive > 0 ? 3 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
