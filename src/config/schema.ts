/**
 * `chio.yaml` (SPEC §2.1). Unknown keys are an error; relative paths resolve against the
 * config file's folder (see ./load.ts). Every default lives here.
 */
import { z } from 'zod';
import { grpcTlsConfigSchema } from '../server/tls.js';
import { jwtSvidConfigSchema, requireJwtSvidConfig, trustSchema } from './trust.js';
import { capabilitiesConfigSchema } from '../capability/config.js';
import { checkpointsConfigSchema } from '../receipt/checkpoint.js';
import { retentionConfigSchema } from '../receipt/retention.js';
import { checkPostgresSinks, postgresSinkSchema, revocationsConfigSchema, splitSinks } from '../receipt/pg/config.js';

export const CONFIG_SCHEMA_ID = 'chio.config.v1';

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:9191')
  .refine((s) => Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, 'port must be 0..65535')
  .refine((s) => !/^[0-9.]+:/.test(s) || /^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d):/.test(s), 'not an IPv4 address: four decimal parts 0..255, e.g. 127.0.0.1');

const nonEmpty = z.string().min(1);

const jsonlSink = z.strictObject({ type: z.literal('jsonl'), path: nonEmpty });
const sqliteSink = z.strictObject({ type: z.literal('sqlite'), path: nonEmpty });
const sink = z.discriminatedUnion('type', [jsonlSink, sqliteSink, postgresSinkSchema]);

/**
 * `capabilities.authorities[].public_key` written as a YAML mapping (`{kty: OKP, crv: Ed25519, x: …}`)
 * becomes the JWK's JSON text, which the key parser (src/keys.ts parsePublicKey) reads as it reads a
 * quoted JWK string: one JWK parser, and the README's "hex, base64url or JWK" holds for both spellings.
 * Anything else is left as written, for the schema to accept or refuse.
 */
function authorityJwkMappings(capabilities: unknown): unknown {
  if (!isRecord(capabilities) || !Array.isArray(capabilities['authorities'])) return capabilities;
  const authorities = capabilities['authorities'].map((entry: unknown) =>
    isRecord(entry) && isRecord(entry['public_key']) ? { ...entry, public_key: JSON.stringify(entry['public_key']) } : entry,
  );
  return { ...capabilities, authorities };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export const IDENTITY_SOURCES = ['certificate', 'principal', 'xfcc', 'jwt_svid'] as const;

export const configSchema = z.strictObject({
  schema: z.literal(CONFIG_SCHEMA_ID),
  listen: z
    .strictObject({
      grpc: hostPort.default('127.0.0.1:9191'),
      admin: hostPort.default('127.0.0.1:9192'),
      grpc_tls: grpcTlsConfigSchema.optional(),
      /** the Check listener's gRPC server: node:http2 with our framing (default) or grpc-js's (src/server/grpc.ts) */
      grpc_transport: z.enum(['native', 'grpc-js']).default('native'),
    })
    .prefault({}),
  /** SIGTERM: health NOT_SERVING, keep answering drain_seconds (endpoints move away), then stop within deadline_seconds */
  shutdown: z
    .strictObject({
      drain_seconds: z.number().min(0).max(300).default(0),
      deadline_seconds: z.number().min(1).max(600).default(15),
    })
    .prefault({}),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).prefault({}),
  policy: nonEmpty,
  keys: z.strictObject({ receipt_signing_seed: nonEmpty }),
  receipts: z
    .strictObject({
      sinks: z
        .array(sink)
        .min(1)
        .refine((a) => {
          const paths = a.flatMap((s) => ('path' in s ? [s.path] : []));
          return new Set(paths).size === paths.length;
        }, 'two sinks must not share a path')
        .superRefine(checkPostgresSinks)
        .default([{ type: 'jsonl', path: './data/receipts.jsonl' }]),
      durability: z.enum(['strict', 'relaxed']).default('strict'),
      on_failure: z.enum(['deny', 'allow']).default('deny'),
      checkpoints: checkpointsConfigSchema,
      retention: retentionConfigSchema,
    })
    // a postgres entry is shipped to, not written through: it moves to receipts.postgres (src/receipt/pg/config.ts)
    .transform(({ sinks, ...rest }) => ({ ...rest, ...splitSinks(sinks) }))
    .prefault({}),
  revocations: revocationsConfigSchema,
  identity: z
    .strictObject({
      sources: z
        .array(z.enum(IDENTITY_SOURCES))
        .min(1)
        .refine((a) => new Set(a).size === a.length, 'sources must not repeat')
        .default(['certificate', 'principal']),
      require_known_trust_domain: z.boolean().default(false),
      svid_cache_size: z.number().int().min(1).max(10_000_000).default(10_000),
      jwt_svid: jwtSvidConfigSchema.optional(),
    })
    .superRefine(requireJwtSvidConfig)
    .prefault({}),
  trust: trustSchema,
  /**
   * overload (src/limits.ts): Checks admitted at once per process (from the request's arrival; more are denied
   * `overloaded`, 503, at once, with a receipt), and HTTP/2 streams a Check connection may open
   */
  limits: z
    .strictObject({
      max_in_flight: z.number().int().min(1).max(1_000_000).default(1024),
      max_concurrent_streams: z.number().int().min(1).max(1_000_000).default(100),
      /** native transport: a request must arrive whole (HEADERS to END_STREAM) within this, or its grpc-timeout if shorter */
      request_read_timeout_ms: z.number().int().min(1).max(3_600_000).default(10_000),
      /** native transport: request bytes all Check streams still sending their request may hold together */
      max_buffered_request_bytes: z.number().int().min(65_536).max(2 ** 40).default(64 * 1024 * 1024),
      /** how V8 sizes the heap (src/memory.ts): lean while there is CPU to spare, V8's own sizing near saturation */
      heap: z.enum(['auto', 'lean', 'throughput']).default('auto'),
    })
    .prefault({}),
  capabilities: z.preprocess(authorityJwkMappings, capabilitiesConfigSchema),
  admin: z
    .strictObject({
      token_file: nonEmpty.optional(),
      /** name of an environment variable holding the Bearer token (never the command line) */
      token_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name').optional(),
    })
    .refine((a) => a.token_file === undefined || a.token_env === undefined, {
      path: ['token_env'],
      message: 'set admin.token_file or admin.token_env, not both',
    })
    .prefault({}),
});

export type ConfigFile = z.infer<typeof configSchema>;
