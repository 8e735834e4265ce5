/**
 * The servers under test, started as separate pinned processes (bench/README.md):
 *
 * - chio-authz: `node <flags> bin/chio.js serve --config <temp chio.yaml>` (SPEC §2.1, §10) with a
 *   fresh signing seed and a jsonl receipt sink in its own temp folder; listeners on port 0, the
 *   bound addresses read from its `chio-authz ready` log line (pino JSON on stdout).
 * - the null server: `node <flags> bench/null-server.mjs` (same Envoy protos, answers OK).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnPinned } from './proc.mjs';

/**
 * @typedef {{
 *   policy: string,
 *   durability?: 'strict' | 'relaxed',
 *   onFailure?: 'deny' | 'allow',
 *   extraYaml?: string,
 *   workers?: number,
 * }} ChioConfigSpec
 * `extraYaml`: more top-level chio.yaml keys (e.g. an `identity:` block) for later sections.
 * `workers`: `chio serve --workers N` (src/server/workers.ts); each worker writes receipts-w<N>.jsonl.
 */

/**
 * A chio.yaml in `dir` (paths absolute or relative to it). Returns the file names it refers to.
 * @param {string} dir
 * @param {ChioConfigSpec} spec
 */
export function writeChioConfig(dir, spec) {
  mkdirSync(dir, { recursive: true });
  const configFile = path.join(dir, 'chio.yaml');
  const seedFile = path.join(dir, 'kernel.seed');
  const receiptsFile = path.join(dir, 'receipts.jsonl');
  const yaml = [
    'schema: chio.config.v1',
    'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
    `policy: ${JSON.stringify(path.resolve(spec.policy))}`,
    `keys: { receipt_signing_seed: ${JSON.stringify(seedFile)} }`,
    'receipts:',
    `  sinks: [ { type: jsonl, path: ${JSON.stringify(receiptsFile)} } ]`,
    `  durability: ${spec.durability ?? 'strict'}`,
    `  on_failure: ${spec.onFailure ?? 'deny'}`,
    ...(spec.extraYaml ? [spec.extraYaml.trimEnd()] : []),
    '',
  ].join('\n');
  writeFileSync(configFile, yaml);
  return { configFile, seedFile, receiptsFile, yaml };
}

/**
 * The bound addresses from chio's ready log line, or undefined for any other line.
 * @param {string} line
 * @returns {{grpc: string, admin: string, workerPids: number[]} | undefined}
 */
export function chioReadyLine(line) {
  if (!line.startsWith('{')) return undefined;
  let obj;
  try {
    obj = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (obj && obj.msg === 'chio-authz ready' && typeof obj.grpc === 'string' && typeof obj.admin === 'string') {
    // `chio serve --workers N`: the primary announces its workers' pids (their CPU is the server's)
    const workerPids = Array.isArray(obj.workerPids) ? obj.workerPids.filter((p) => typeof p === 'number') : [];
    return { grpc: obj.grpc, admin: obj.admin, workerPids };
  }
  return undefined;
}

/**
 * @param {string} line
 * @returns {{grpc: string} | undefined}
 */
export function nullReadyLine(line) {
  if (!line.startsWith('{')) return undefined;
  try {
    const obj = JSON.parse(line);
    return obj && obj.ready === true && typeof obj.grpc === 'string' ? { grpc: obj.grpc } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * @typedef {{
 *   kind: 'chio' | 'null', label: string, cpu: number | null, nodeFlags: string[], command: string[],
 *   proc: ReturnType<typeof spawnPinned>, pid: number, workerPids: number[], origin: string, adminOrigin: string | null,
 *   dir: string, configFile: string | null, seedFile: string | null, receiptsFile: string | null, receiptsFiles: string[],
 *   durability: 'strict' | 'relaxed' | null, nullStats: {answered: number, malformed: number} | null,
 * }} ServerProcess
 */

const READY_TIMEOUT_MS = 30_000;

/**
 * @param {{repoRoot: string, dir: string, cpu: number | null, nodeFlags: string[], config: ChioConfigSpec, label?: string}} o
 * @returns {Promise<ServerProcess>}
 */
export async function startChioProcess(o) {
  const files = writeChioConfig(o.dir, o.config);
  const workers = o.config.workers ?? 1;
  const args = [...o.nodeFlags, path.join(o.repoRoot, 'bin', 'chio.js'), 'serve', '--config', files.configFile, ...(workers > 1 ? ['--workers', String(workers)] : [])];
  const proc = spawnPinned({ cpu: o.cpu, command: process.execPath, args, cwd: o.dir });
  const ready = await proc.waitFor(chioReadyLine, READY_TIMEOUT_MS);
  return {
    kind: 'chio',
    label: o.label ?? 'chio',
    cpu: o.cpu,
    nodeFlags: o.nodeFlags,
    command: ['node', ...args],
    proc,
    pid: /** @type {number} */ (proc.child.pid),
    workerPids: ready.workerPids,
    origin: `http://${ready.grpc}`,
    adminOrigin: `http://${ready.admin}`,
    dir: o.dir,
    configFile: files.configFile,
    seedFile: files.seedFile,
    receiptsFile: files.receiptsFile,
    receiptsFiles: workers > 1 ? Array.from({ length: workers }, (_, i) => files.receiptsFile.replace(/\.jsonl$/, `-w${i + 1}.jsonl`)) : [files.receiptsFile],
    durability: o.config.durability ?? 'strict',
    nullStats: null,
  };
}

/**
 * @param {{repoRoot: string, dir: string, cpu: number | null, nodeFlags: string[], label?: string, transport?: 'grpc-js' | 'native'}} o
 * @returns {Promise<ServerProcess>}
 */
export async function startNullProcess(o) {
  mkdirSync(o.dir, { recursive: true });
  const args = [...o.nodeFlags, path.join(o.repoRoot, 'bench', 'null-server.mjs'), '--address', '127.0.0.1:0', ...(o.transport ? ['--transport', o.transport] : [])];
  const proc = spawnPinned({ cpu: o.cpu, command: process.execPath, args, cwd: o.dir });
  /** @type {ServerProcess} */
  const server = {
    kind: 'null',
    label: o.label ?? 'null',
    cpu: o.cpu,
    nodeFlags: o.nodeFlags,
    command: ['node', ...args],
    proc,
    pid: /** @type {number} */ (proc.child.pid),
    workerPids: [],
    origin: '',
    adminOrigin: null,
    dir: o.dir,
    configFile: null,
    seedFile: null,
    receiptsFile: null,
    receiptsFiles: [],
    durability: null,
    nullStats: null,
  };
  proc.onLine((line) => {
    try {
      const obj = JSON.parse(line);
      if (obj && typeof obj.answered === 'number') server.nullStats = { answered: obj.answered, malformed: obj.malformed };
    } catch {
      /* not a stats line */
    }
  });
  const ready = await proc.waitFor(nullReadyLine, READY_TIMEOUT_MS);
  server.origin = `http://${ready.grpc}`;
  return server;
}
