/**
 * Loading `chio.yaml` (SPEC §2.1): strict schema, paths resolved against the file's folder, and
 * the embedded demo config that `chio serve` runs when no config is given.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChioError } from '../errors.js';
import { parseYamlSource, validateYaml } from '../yaml-source.js';
import { configSchema, type ConfigFile } from './schema.js';
import { resolveGrpcTlsPaths } from '../server/tls.js';
import { federationStateDir, federationStateFile, resolveTrustPaths, statefulFederations } from './trust.js';
import { checkpointStatePaths } from '../receipt/checkpoint.js';
import { resolveCapabilityPaths } from '../capability/config.js';
import { defaultCheckpointsPath } from '../receipt/retention.js';
import { checkWrittenFiles, type WrittenFile } from './files.js';

export interface Config extends ConfigFile {
  /** absolute path of the config file, or `(embedded)` */
  readonly file: string;
  /** folder relative paths resolved against */
  readonly baseDir: string;
}

/** The repository/package root (where demo/ lives). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function parseConfig(text: string, file: string, baseDir: string): Config {
  const src = parseYamlSource(text, file, 'config_invalid');
  const parsed = validateYaml(src, configSchema, 'config_invalid');
  return resolvePaths({ ...parsed, file, baseDir });
}

export function loadConfigFile(file: string): Config {
  return loadConfigSource(file).config;
}

/**
 * A config file and the text it was parsed from (what `--workers` hands to its workers). With
 * `text`, that text is parsed as the file's (a worker runs what its primary read), not the file.
 */
export function loadConfigSource(file: string, text?: string): { config: Config; text: string } {
  const abs = path.resolve(file);
  let source = text;
  if (source === undefined) {
    try {
      source = readFileSync(abs, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ChioError(code === 'ENOENT' ? 'file_not_found' : 'io_error', `cannot read config ${abs}: ${code ?? String(err)}`);
    }
  }
  return { config: parseConfig(source, abs, path.dirname(abs)), text: source };
}

/**
 * The embedded default: the demo policy shipped in the package, a signing key and receipts in
 * `./chio-data/` under the working directory (created on first start): `receipts.jsonl` and the
 * SQLite store `receipts.db` that the query API and `chio receipt list` read.
 */
export function embeddedConfig(cwd: string): Config {
  const dataDir = path.join(cwd, 'chio-data');
  const text = [
    'schema: chio.config.v1',
    'listen: { grpc: 127.0.0.1:9191, admin: 127.0.0.1:9192 }',
    `policy: ${JSON.stringify(path.join(PACKAGE_ROOT, 'demo', 'policy.yaml'))}`,
    `keys: { receipt_signing_seed: ${JSON.stringify(path.join(dataDir, 'kernel.seed'))} }`,
    `receipts: { sinks: [ { type: jsonl, path: ${JSON.stringify(path.join(dataDir, 'receipts.jsonl'))} }, { type: sqlite, path: ${JSON.stringify(path.join(dataDir, 'receipts.db'))} } ], durability: strict, on_failure: deny }`,
    'identity: { sources: [certificate, principal] }',
    '',
  ].join('\n');
  return parseConfig(text, '(embedded)', cwd);
}

/** `--config`, else `CHIO_CONFIG`, else the embedded default. */
export function resolveConfig(explicit: string | undefined, env: NodeJS.ProcessEnv, cwd: string): Config {
  return resolveConfigSource(explicit, env, cwd).config;
}

/**
 * {@link resolveConfig} with the file's text (null for the embedded default). An empty `--config` or
 * `CHIO_CONFIG` is a usage error, not "no config": `--config "$UNSET_VAR"` or `CHIO_CONFIG=` in a
 * manifest ran the demo config (its demo policy, a fresh key in ./chio-data) instead of failing.
 */
export function resolveConfigSource(explicit: string | undefined, env: NodeJS.ProcessEnv, cwd: string): { config: Config; text: string | null } {
  const file = configFileOf(explicit, env);
  if (file !== null) return loadConfigSource(path.resolve(cwd, file));
  return { config: embeddedConfig(cwd), text: null };
}

/** The config file named by `--config`, else `CHIO_CONFIG`; null for neither (the embedded default). */
function configFileOf(explicit: string | undefined, env: NodeJS.ProcessEnv): string | null {
  if (explicit !== undefined) {
    if (explicit.trim() === '') throw new ChioError('usage', '--config is empty: give the path of chio.yaml (omit --config and CHIO_CONFIG for the embedded demo config)');
    return explicit;
  }
  const fromEnv = env['CHIO_CONFIG'];
  if (fromEnv === undefined) return null;
  if (fromEnv.trim() === '') throw new ChioError('usage', 'CHIO_CONFIG is set but empty: set it to the path of chio.yaml, or unset it for the embedded demo config');
  return fromEnv;
}

function resolvePaths(c: Config): Config {
  const named: string[] = [];
  const r = (p: string): string => {
    const abs = path.resolve(c.baseDir, p);
    named.push(abs);
    return abs;
  };
  const resolved: Config = {
    ...c,
    policy: r(c.policy),
    keys: { ...c.keys, receipt_signing_seed: r(c.keys.receipt_signing_seed) },
    receipts: {
      ...c.receipts,
      sinks: c.receipts.sinks.map((s) => ({ ...s, path: r(s.path) })),
      checkpoints: { ...c.receipts.checkpoints, path: c.receipts.checkpoints.path === undefined ? undefined : r(c.receipts.checkpoints.path) },
    },
    admin: c.admin.token_file === undefined ? c.admin : { ...c.admin, token_file: r(c.admin.token_file) },
    listen: { ...c.listen, grpc_tls: resolveGrpcTlsPaths(c.listen.grpc_tls, r) },
    trust: resolveTrustPaths(c.trust, r),
    capabilities: resolveCapabilityPaths(c.capabilities, r),
  };
  checkWrittenFiles(writtenFiles(resolved), named);
  return resolved;
}

/** The files the service writes, by config key (./files.ts). */
function writtenFiles(c: Config): WrittenFile[] {
  const sinks = c.receipts.sinks;
  const out: WrittenFile[] = sinks.flatMap((s, i) => {
    const role = `receipts.sinks[${i}].path`;
    const own = { role, path: s.path, named: true };
    // the writer lock beside every sink (src/receipt/sinks/lock.ts)
    const lock = { role: `${role} (writer lock)`, path: `${s.path}.lock`, named: false };
    // SQLite's WAL mode keeps two more files beside the store
    return s.type === 'sqlite'
      ? [own, lock, { role: `${role}-wal`, path: `${s.path}-wal`, named: false }, { role: `${role}-shm`, path: `${s.path}-shm`, named: false }]
      : [own, lock];
  });
  out.push({ role: 'keys.receipt_signing_seed', path: c.keys.receipt_signing_seed, named: true });
  if (sinks.length > 0) {
    const checkpoints = defaultCheckpointsPath(c.receipts.checkpoints, sinks);
    out.push({ role: 'receipts.checkpoints.path', path: checkpoints, named: c.receipts.checkpoints.path !== undefined });
    // the checkpoint log's state files beside it (src/receipt/checkpoint.ts)
    const state = checkpointStatePaths(checkpoints);
    out.push({ role: 'receipts.checkpoints.path (frontier)', path: state.frontier, named: false }, { role: 'receipts.checkpoints.path (anchor)', path: state.anchor, named: false });
  }
  for (const td of statefulFederations(c.trust)) {
    out.push({ role: `trust federation state of ${td}`, path: federationStateFile(federationStateDir(c.keys.receipt_signing_seed), td), named: false });
  }
  if (c.capabilities.revocations_file !== undefined) out.push({ role: 'capabilities.revocations_file', path: c.capabilities.revocations_file, named: true });
  return out;
}
