/**
 * `chio serve [--config FILE]` (SPEC §10): runs the service. Without a config (and without
 * CHIO_CONFIG) it runs the embedded demo config. Exit 2 on a bad config or policy.
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { resolveConfig } from '../config/load.js';
import { ChioError, describe } from '../errors.js';
import { startService } from '../main.js';
import { EXIT_OK, EXIT_USAGE, type Command } from './io.js';

const HELP = `usage: chio serve [--config FILE]

Runs the ext_authz gRPC service and the admin HTTP listener.
  --config FILE   chio.yaml (default: $CHIO_CONFIG, else the embedded demo config,
                  which keeps its key and receipts in ./chio-data/)
Signals: SIGHUP reloads the policy; SIGTERM/SIGINT shut down gracefully.
`;

export const run: Command = async (args, io) => {
  let values: { config?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (err) {
    io.stderr(`chio serve: ${describe(err)}\n${HELP}`);
    return EXIT_USAGE;
  }
  if (values.help) {
    io.stdout(HELP);
    return EXIT_OK;
  }
  let service;
  let config;
  let log;
  try {
    config = resolveConfig(values.config, io.env, io.cwd);
    log = pino({
      name: 'chio-authz',
      level: config.log.level,
      base: { pid: process.pid },
      // defence in depth: nothing we log carries these, and if it ever did they would not be written
      redact: { paths: ['*.token', '*.authorization', '*.seed', '*.privateKey', '*.password'], censor: '[redacted]' },
    });
    service = await startService(config, { log });
  } catch (err) {
    if (err instanceof ChioError) {
      io.stderr(`chio serve: ${err.code}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
  const grpcAddr = config.listen.grpc.replace(/:\d+$/, `:${service.grpcPort}`);
  const adminAddr = config.listen.admin.replace(/:\d+$/, `:${service.adminPort}`);
  log.info({ grpc: grpcAddr, admin: adminAddr, config: config.file, policyHash: service.policy().hash, kernelKey: service.key.kid }, 'chio-authz ready');
  io.stderr(
    `chio-authz ready\n` +
      `  Check (gRPC, envoy.service.auth.v3.Authorization): ${grpcAddr}\n` +
      `  admin (HTTP): http://${adminAddr}  /metrics /healthz /readyz /v1/keys\n` +
      `  config: ${config.file}\n` +
      `  receipts: ${config.receipts.sinks.map((s) => s.path).join(', ')}\n`,
  );

  return new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'shutting down');
      service.close().then(
        () => resolve(EXIT_OK),
        (err: unknown) => {
          log.error({ err: describe(err) }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      try {
        service.reloadPolicy();
      } catch {
        /* logged and counted by reloadPolicy */
      }
    });
  });
};
