/**
 * `chio serve [--config FILE] [--workers N]` (SPEC §10): runs the service. Without a config (and
 * without CHIO_CONFIG) it runs the embedded demo config. Exit 2 on a bad config or policy.
 * `--workers N`: N processes on one gRPC listener (src/server/workers.ts); this same command runs
 * in each worker, which node:cluster marks.
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import path from 'node:path';
import { loadConfigSource, resolveConfigSource, type Config } from '../config/load.js';
import { ChioError, describe } from '../errors.js';
import { startService } from '../main.js';
import { runWorker, startPrimary, workerConfigText, workerIndex } from '../server/workers.js';
import type { Logger } from '../check/pipeline.js';
import { EXIT_OK, EXIT_USAGE, type CliIO, type Command } from './io.js';

const HELP = `usage: chio serve [--config FILE] [--workers N]

Runs the ext_authz gRPC service and the admin HTTP listener.
  --config FILE   chio.yaml (default: $CHIO_CONFIG, else the embedded demo config,
                  which keeps its key and receipts in ./chio-data/)
  --workers N     run N processes (1..64, or \`auto\`: one per CPU) on the one gRPC listener, to use
                  several cores (default 1). Each writes its own receipt chain beside the configured
                  files: receipts-w1.jsonl, receipts-w2.jsonl, … (\`chio receipt verify\` takes them all);
                  the admin listener stays one, with metrics summed over the workers.
Signals: SIGHUP reloads the policy; SIGTERM/SIGINT shut down gracefully.
`;

export const run: Command = async (args, io) => {
  let values: { config?: string; workers?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, workers: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (err) {
    io.stderr(`chio serve: ${describe(err)}\n${HELP}`);
    return EXIT_USAGE;
  }
  if (values.help) {
    io.stdout(HELP);
    return EXIT_OK;
  }
  const workers = workerCount(values.workers);
  if (workers === null) {
    io.stderr(`chio serve: --workers must be a number from 1 to 64, or auto; got ${JSON.stringify(values.workers)}\n${HELP}`);
    return EXIT_USAGE;
  }
  const worker = workerIndex(io.env);
  // signals are heard from now on (a worker hears its own in runWorker): a SIGTERM during a start that
  // takes seconds (workers, a federation fetch) stops the service once it is up, a SIGHUP is ignored
  const signals = worker === null ? new ServeSignals() : null;
  let service;
  let config;
  let configText: string | null;
  let log;
  try {
    const inherited = worker === null ? null : workerConfigText(io.env);
    // a worker runs the text its primary read, whatever the file holds now
    ({ config, text: configText } =
      inherited !== null && values.config !== undefined
        ? loadConfigSource(path.resolve(io.cwd, values.config), inherited)
        : resolveConfigSource(values.config, io.env, io.cwd));
    log = pino({
      name: 'chio-authz',
      level: config.log.level,
      base: worker === null ? { pid: process.pid } : { pid: process.pid, worker },
      // defence in depth: nothing we log carries these, and if it ever did they would not be written
      redact: { paths: ['*.token', '*.authorization', '*.seed', '*.privateKey', '*.password'], censor: '[redacted]' },
    });
    if (worker !== null) return await runWorker(config, worker, log);
    if (signals === null) throw new TypeError('serve: no signal handling in the primary');
    if (workers > 1) return await runPrimary(config, configText, workers, log, io, signals);
    service = await startService(config, { log });
  } catch (err) {
    signals?.dispose();
    if (err instanceof ChioError) {
      io.stderr(`chio serve: ${err.code}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
  announce(io, log, config, { grpcPort: service.grpcPort, adminPort: service.adminPort, policyHash: service.policy().hash, kernelKey: service.key.kid });
  return signals.until(
    log,
    () => service.close().then(() => true),
    () => {
      try {
        service.reloadPolicy();
      } catch {
        /* logged and counted by reloadPolicy */
      }
    },
  );
};

/** `--workers`: 1 when absent, the CPU count for `auto`, null when malformed. */
function workerCount(text: string | undefined): number | null {
  if (text === undefined) return 1;
  if (text === 'auto') return Math.min(64, availableParallelism());
  return /^[1-9][0-9]?$/.test(text) && Number(text) <= 64 ? Number(text) : null;
}

/** `--workers N` with N > 1: the primary (src/server/workers.ts) starts the workers and the admin listener. */
async function runPrimary(config: Config, configText: string | null, workers: number, log: Logger, io: CliIO, signals: ServeSignals): Promise<number> {
  const primary = await startPrimary({ config, configText, workers, log, cwd: io.cwd, env: io.env });
  announce(io, log, config, { grpcPort: primary.grpcPort, adminPort: primary.adminPort, policyHash: primary.policy().hash, kernelKey: primary.kernelKey, workers, workerPids: primary.workerPids() });
  return signals.until(log, () => primary.close(), () => primary.reload());
}

/** The `chio-authz ready` log line (the bench and tests read the bound ports from it) and the banner. */
function announce(
  io: CliIO,
  log: Logger,
  config: Config,
  facts: { grpcPort: number; adminPort: number; policyHash: string; kernelKey: string; workers?: number; workerPids?: Array<number | null> },
): void {
  const grpcAddr = config.listen.grpc.replace(/:\d+$/, `:${facts.grpcPort}`);
  const adminAddr = config.listen.admin.replace(/:\d+$/, `:${facts.adminPort}`);
  const workers = facts.workers === undefined ? {} : { workers: facts.workers, workerPids: facts.workerPids };
  const transport = config.listen.grpc_transport;
  log.info({ grpc: grpcAddr, grpcTransport: transport, admin: adminAddr, config: config.file, policyHash: facts.policyHash, kernelKey: facts.kernelKey, ...workers }, 'chio-authz ready');
  const receipts = config.receipts.sinks.map((s) => s.path).join(', ');
  io.stderr(
    `chio-authz ready\n` +
      `  Check (gRPC, envoy.service.auth.v3.Authorization, ${transport} transport): ${grpcAddr}${facts.workers === undefined ? '' : ` (${facts.workers} workers)`}\n` +
      `  admin (HTTP): http://${adminAddr}  /metrics /healthz /readyz /v1/keys\n` +
      `  config: ${config.file}\n` +
      `  receipts: ${facts.workers === undefined ? receipts : `${receipts} (one chain per worker: -w1 … -w${facts.workers})`}\n`,
  );
}

/**
 * SIGTERM/SIGINT/SIGHUP from the moment `chio serve` runs: before the service is up a stop signal is
 * held (acted on as soon as it is up) and SIGHUP is ignored, instead of the default action killing a
 * process that is still starting (a reload sidecar's SIGHUP, a quick rollout's SIGTERM).
 */
class ServeSignals {
  private held: string | null = null;
  private stopping = false;
  private onStop: ((signal: string) => void) | null = null;
  private onReload: (() => void) | null = null;
  // installed until the process exits: a SIGHUP or a second SIGTERM during the shutdown is ignored,
  // never the default action that would kill a service still draining
  private readonly handlers: Array<[NodeJS.Signals, () => void]> = [
    ['SIGTERM', () => this.stop('SIGTERM')],
    ['SIGINT', () => this.stop('SIGINT')],
    ['SIGHUP', () => (this.stopping ? undefined : this.onReload?.())],
  ];

  constructor() {
    for (const [signal, handler] of this.handlers) process.on(signal, handler);
  }

  /** Runs until SIGTERM/SIGINT (then `close`; exit 0 when it shut down cleanly); SIGHUP calls `reload`. */
  until(log: Logger, close: () => Promise<boolean>, reload: () => void): Promise<number> {
    return new Promise<number>((resolve) => {
      this.onReload = reload;
      this.onStop = (signal) => {
        log.info({ signal }, 'shutting down');
        close().then(
          (clean) => resolve(clean ? EXIT_OK : 1),
          (err: unknown) => {
            log.error({ err: describe(err) }, 'shutdown failed');
            resolve(1);
          },
        );
      };
      if (this.held !== null) {
        this.stopping = true;
        this.onStop(this.held);
      }
    });
  }

  dispose(): void {
    for (const [signal, handler] of this.handlers) process.off(signal, handler);
  }

  private stop(signal: string): void {
    if (this.stopping) return;
    if (this.onStop !== null) {
      this.stopping = true;
      this.onStop(signal);
    } else this.held ??= signal;
  }
}
