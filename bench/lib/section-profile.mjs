/**
 * Section `profile` (not in the default run): chio-authz under closed-loop saturation with
 * `node --cpu-prof`, then where the CPU time of a Check goes, per request: the top functions by
 * self time (V8, grpc-js, node internals included) and chio's own functions (dist/) by inclusive
 * time. The .cpuprofile is copied to .bench/ for Chrome DevTools / speedscope.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { functionTimes } from './cpuprofile.mjs';

const PROFILE_INTERVAL_US = 250;

/** @type {import('./sections.mjs').Section} */
export const profileSection = {
  name: 'profile',
  title: 'CPU profile of chio-authz at saturation (node --cpu-prof): where a Check spends its time',
  default: false,
  async run(h) {
    const s = h.settings;
    let profDir = '';
    const { report } = await h.withServer(
      'chio',
      { label: 'chio (--cpu-prof)', nodeFlags: [...s.serverNodeFlags, '--cpu-prof', `--cpu-prof-interval=${PROFILE_INTERVAL_US}`] },
      async (server) => {
        profDir = server.dir; // --cpu-prof writes into the working directory on exit
        await h.sanity(server);
        await h.warmUp(server);
        return h.h2load(server, { clients: 4, streams: 16, durationS: s.durationS, warmupS: s.h2loadWarmupS, label: 'profiled' });
      },
    );
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no .cpuprofile written in ${profDir} (did chio exit cleanly? ${report.exit})`);
    const saved = path.join(s.repoRoot, '.bench', `chio-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
    mkdirSync(path.dirname(saved), { recursive: true });
    copyFileSync(path.join(profDir, file), saved);

    const t = functionTimes(JSON.parse(readFileSync(saved, 'utf8')), s.repoRoot);
    const requests = report.receipts?.decisions.total ?? NaN;
    const perReq = (us) => us / requests;
    const busyUs = t.totalUs - t.idleUs;
    const top = t.functions.filter((f) => f.fn !== '(idle)').slice(0, 25);
    const own = t.functions
      .filter((f) => f.where.startsWith('dist/'))
      .sort((a, b) => b.totalUs - a.totalUs)
      .slice(0, 25);
    const row = (f) => ({ fn: f.fn, where: f.where, selfUs: perReq(f.selfUs), totalUs: perReq(f.totalUs), selfPct: (100 * f.selfUs) / busyUs });
    return {
      tables: [
        {
          title: `top functions by self time, µs per Check (${requests.toLocaleString('en-US')} Checks; ${perReq(busyUs).toFixed(0)} µs of CPU per Check in all, GC ${perReq(t.gcUs).toFixed(0)} µs)`,
          columns: [
            ['fn', 'function'],
            ['where', 'where'],
            ['selfUs', 'self µs/req', 'ms'],
            ['selfPct', 'self % of busy', 'pct'],
            ['totalUs', 'incl µs/req', 'ms'],
          ],
          rows: top.map(row),
        },
        {
          title: 'chio-authz code (dist/) by inclusive time, µs per Check (awaited I/O not included: CPU only)',
          columns: [
            ['fn', 'function'],
            ['where', 'where'],
            ['totalUs', 'incl µs/req', 'ms'],
            ['selfUs', 'self µs/req', 'ms'],
          ],
          rows: own.map(row),
        },
      ],
      checks: [],
      notes: [`profile saved: ${path.relative(s.repoRoot, saved)} (open in Chrome DevTools › Performance, or speedscope)`, `sampling interval ${PROFILE_INTERVAL_US} µs; the profile covers start-up, warm-up and the measured run.`],
      data: { profile: path.relative(s.repoRoot, saved), requests, totalUs: t.totalUs, idleUs: t.idleUs, gcUs: t.gcUs, programUs: t.programUs, top: top.map(row), own: own.map(row) },
    };
  },
};
