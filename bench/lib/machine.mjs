/**
 * What a benchmark result is only meaningful with: the machine, the software and the date
 * (/work/shared/notes/performance.md §2). Read-only probes (no git state is changed).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

/**
 * @param {string} cmd
 * @param {string[]} args
 * @param {string} [cwd]
 */
function tryRun(cmd, args, cwd) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** @param {string} repoRoot */
export function machineInfo(repoRoot) {
  let model = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) model = m[1].trim();
  } catch {
    /* keep os.cpus() */
  }
  const pkg = (name) => {
    try {
      return JSON.parse(readFileSync(`${repoRoot}/node_modules/${name}/package.json`, 'utf8')).version;
    } catch {
      return null;
    }
  };
  return {
    nproc: Number(tryRun('nproc', [])) || os.availableParallelism(),
    cpuModel: model,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    openssl: process.versions.openssl,
    h2load: tryRun('h2load', ['--version'])?.split('\n')[0] ?? null,
    packages: { '@grpc/grpc-js': pkg('@grpc/grpc-js'), 'prom-client': pkg('prom-client') },
    gitCommit: tryRun('git', ['rev-parse', '--short', 'HEAD'], repoRoot),
    gitDirty: (tryRun('git', ['status', '--porcelain', '--untracked-files=no'], repoRoot) ?? '') !== '',
    loadAverage: os.loadavg(),
  };
}
