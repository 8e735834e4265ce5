/**
 * Sections that run another team member's stand-alone micro-benchmark script (bench/*.mjs) pinned
 * to the server CPU and keep its output as text (their formats are their own). Not in the default
 * run; `--only receipt-seal` / `--only policy-scale`.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { spawnPinned } from './proc.mjs';

/**
 * @param {{name: string, file: string, title: string, args?: string[]}} o
 * @returns {import('./sections.mjs').Section}
 */
export function scriptSection(o) {
  return {
    name: o.name,
    title: o.title,
    default: false,
    async run(h) {
      const script = path.join(h.settings.repoRoot, 'bench', o.file);
      if (!existsSync(script)) {
        return { tables: [], checks: [], notes: [`skipped: bench/${o.file} does not exist`], data: { skipped: true } };
      }
      const args = [...h.settings.serverNodeFlags, script, ...(o.args ?? [])];
      let out = '';
      const p = spawnPinned({ cpu: h.settings.serverCpu, command: process.execPath, args, cwd: h.settings.repoRoot, onLine: (l) => (out += l + '\n') });
      const exit = await p.exited;
      const ok = exit.code === 0;
      return {
        tables: [],
        checks: [{ name: `bench/${o.file} ran`, target: 'exit 0', value: `exit ${exit.code ?? exit.signal}`, pass: ok }],
        notes: [`command: taskset -c ${h.settings.serverCpu} node ${args.map((a) => path.relative(h.settings.repoRoot, a) || a).join(' ')}`],
        text: ok ? out : `${out}\n${p.stderr()}`,
        data: { exit, output: out },
      };
    },
  };
}
