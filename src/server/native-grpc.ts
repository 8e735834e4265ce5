/**
 * A gRPC server on node:http2 directly, for the Check listener's hot path.
 *
 * Implements the server side of gRPC over HTTP/2
 * (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) for what chio serves: unary
 * methods (`envoy.service.auth.v3.Authorization/Check`, `grpc.health.v1.Health/Check` and `List`) and
 * server-streaming ones (`Health/Watch`). Services are added with grpc-js's own
 * `addService(ServiceDefinition, implementation)` shape, so the same service definitions, codecs and
 * handlers (and grpc-health-check's HealthImplementation) run on either server.
 *
 * Why not grpc-js's server: on one core grpc-js costs ~80 µs of CPU per unary call before any
 * handler runs, node:http2 with this framing ~35 µs (BENCHMARKS.md, "Native transport"). On a
 * service whose whole decision costs ~60 µs, the transport was more than half of every Check.
 * `listen.grpc_transport: grpc-js` keeps grpc-js's server available.
 *
 * What it does, per request stream:
 * - `:method` other than POST → HTTP 405; `content-type` other than `application/grpc` (or
 *   `+proto`) → HTTP 415 (the protocol's own answers for a non-gRPC client).
 * - unknown `:path` → UNIMPLEMENTED; more than `maxReceiveMessageLength` bytes → RESOURCE_EXHAUSTED;
 *   not exactly one request message, a cut message or a bad compressed flag → INTERNAL;
 *   `grpc-encoding` gzip / deflate are inflated (bounded), any other compressed message →
 *   UNIMPLEMENTED with `grpc-accept-encoding`.
 * - answers are never compressed; errors are Trailers-Only responses; `grpc-message` is
 *   percent-encoded as the protocol says.
 * - a request must arrive whole (END_STREAM) within its `grpc-timeout` or `requestReadTimeoutMs`
 *   (10 s), whichever is shorter, else DEADLINE_EXCEEDED; a malformed `grpc-timeout` → INTERNAL (as
 *   grpc-js and grpc-go). Once a request is dispatched its deadline is not enforced here: Envoy
 *   enforces its own ext_authz timeout and resets the stream, and an answer for a stream that is gone
 *   is dropped (a Check's receipt is being written by then anyway).
 * - the request bytes held by all streams whose message is not complete yet are bounded by
 *   `maxBufferedRequestBytes` (64 MiB): beyond it a stream is refused RESOURCE_EXHAUSTED. Without
 *   both bounds, streams that send most of a 4 MiB message and never end it held ~400 MiB per
 *   connection, for ever.
 * - `admitCall` (the Check listener's `allowed_callers`) is asked at stream open, before any of the
 *   request is read: a refused peer holds no buffer.
 * Connections: SETTINGS_MAX_CONCURRENT_STREAMS from `limits.max_concurrent_streams`; graceful
 * shutdown sends two GOAWAYs on every session (the first for stream 2³¹−1, the last after a PING
 * round trip) and lets admitted calls finish (server-streaming calls are ended with UNAVAILABLE);
 * TLS material can be replaced while serving (`setSecureContext`).
 */
import { constants as bufferConstants } from 'node:buffer';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { gunzipSync, inflateSync } from 'node:zlib';
import { status as Status, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';

/** What `call.getAuthContext()` returns, the part of grpc-js's AuthContext that chio reads. */
export interface NativeAuthContext {
  readonly transportSecurityType?: 'ssl';
  readonly sslPeerCertificate?: { raw?: Buffer; fingerprint256?: string };
}

export interface NativeServiceError {
  readonly code: number;
  readonly details?: string;
}

/** TLS for the listener; `requireClientCertificate` as grpc-js's certificate-provider credentials. */
export interface NativeTlsOptions {
  readonly key: Buffer;
  readonly cert: Buffer;
  readonly ca: Buffer;
  readonly requireClientCertificate: boolean;
}

export interface NativeGrpcServerOptions {
  /** bytes of one request message, after decompression (grpc-js's `grpc.max_receive_message_length`) */
  readonly maxReceiveMessageLength?: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection */
  readonly maxConcurrentStreams?: number;
  readonly tls?: NativeTlsOptions;
  /** ms a request may take from its HEADERS to its END_STREAM (default 10 s; a shorter grpc-timeout wins) */
  readonly requestReadTimeoutMs?: number;
  /** request bytes all incomplete request messages together may hold (default 64 MiB) */
  readonly maxBufferedRequestBytes?: number;
  /**
   * Asked once per stream at its opening, before its request is read: an error to refuse the call
   * with, or null to read and serve it. Throwing refuses with INTERNAL.
   */
  readonly admitCall?: (path: string, peer: NativeAuthContext) => NativeServiceError | null;
  /**
   * Every call answered with an error instead of a message: the gRPC status name
   * (`RESOURCE_EXHAUSTED`, …) or `HTTP_405` / `HTTP_415` for a client not speaking gRPC.
   */
  readonly onError?: (code: string) => void;
}

type Deserialize = (buf: Buffer) => unknown;
type Serialize = (value: never) => Buffer;
type UnaryCallback = (err: NativeServiceError | null, value?: unknown) => void;

interface Route {
  readonly streaming: boolean;
  readonly deserialize: Deserialize;
  readonly serialize: Serialize;
  readonly handler: (call: Call, callback: UnaryCallback) => void;
}

const DEFAULT_MAX_RECEIVE = 4 * 1024 * 1024;
/** How long a request may take to arrive whole when its grpc-timeout does not say less. */
export const DEFAULT_REQUEST_READ_TIMEOUT_MS = 10_000;
/** Request bytes that incomplete request messages may hold together, per server. */
export const DEFAULT_MAX_BUFFERED_REQUEST_BYTES = 64 * 1024 * 1024;
/** How often streams still reading their request are checked for their deadline and for a peer that left. */
const READ_SWEEP_MS = 100;
/** How long, once shutdown begins, a request still arriving has to arrive whole (else UNAVAILABLE). */
const SHUTDOWN_READ_GRACE_MS = 1000;

const MAX_BUFFER_LENGTH = bufferConstants.MAX_LENGTH;
const GRPC_CONTENT_TYPE = 'application/grpc';
const ACCEPT_ENCODING = 'identity,gzip,deflate';
const noop = (): void => {};

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * `grpc-timeout` in ms (PROTOCOL-HTTP2: TimeoutValue = at most 8 ASCII digits, TimeoutUnit one of
 * H M S m u n); null when malformed.
 */
export function parseGrpcTimeout(value: string): number | null {
  const m = /^([0-9]{1,8})([HMSmun])$/.exec(value);
  if (m === null) return null;
  return Number(m[1]) * (TIMEOUT_UNIT_MS[m[2] as string] as number);
}

/** The name of a gRPC status code, for metrics. */
export function statusName(code: number): string {
  const name = (Status as unknown as Record<number, string | undefined>)[code];
  return typeof name === 'string' ? name : `CODE_${code}`;
}

/**
 * The gRPC way of writing a status message into a header: bytes outside 0x20–0x7E, and `%`
 * itself, as `%XX` of their UTF-8.
 */
export function percentEncodeGrpcMessage(message: string): string {
  let simple = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      simple = false;
      break;
    }
  }
  if (simple) return message;
  let out = '';
  for (const b of Buffer.from(message, 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * `application/grpc`, alone, with `+proto` or with parameters: what our protobuf codecs read. Not
 * `application/grpc-web*` (another framing: Envoy's grpc_web filter translates it) nor `+json`.
 */
export function isGrpcContentType(value: string | undefined): boolean {
  if (typeof value !== 'string' || !value.startsWith(GRPC_CONTENT_TYPE)) return false;
  const rest = value.slice(GRPC_CONTENT_TYPE.length);
  return rest === '' || rest.startsWith(';') || rest === '+proto' || rest.startsWith('+proto;');
}

/** A Trailers-Only answer: HTTP 200, the status in the one HEADERS frame, END_STREAM. */
function answerStatus(stream: http2.ServerHttp2Stream, code: number, details: string, extra?: http2.OutgoingHttpHeaders): void {
  if (stream.destroyed || stream.headersSent) return;
  try {
    stream.respond(
      { ':status': 200, 'content-type': GRPC_CONTENT_TYPE, 'grpc-status': String(code), 'grpc-message': percentEncodeGrpcMessage(details), ...extra },
      { endStream: true },
    );
    stopReading(stream);
  } catch {
    stream.destroy();
  }
}

/**
 * After a complete answer to a request still being sent: RST_STREAM(NO_ERROR) tells the client to
 * stop sending (RFC 9113 §8.1). Not when its request had ended: nothing to stop.
 */
function stopReading(stream: http2.ServerHttp2Stream): void {
  if (stream.destroyed || stream.endAfterHeaders || stream.readableEnded) return;
  stream.close(http2.constants.NGHTTP2_NO_ERROR);
}

/** Idle time before the kernel's TCP keepalive probes start on a Check connection. */
export const TCP_KEEPALIVE_IDLE_MS = 60_000;

/** How long a draining connection waits for the PING acknowledgement before its final GOAWAY. */
const DRAIN_PING_TIMEOUT_MS = 1000;

/**
 * Graceful close in two GOAWAYs (RFC 9113 §6.8): the first names stream 2³¹−1, so streams the
 * client already sent are still served; after one round trip (a PING acknowledged) the second,
 * from `session.close()`, names the last stream processed. With one GOAWAY a Check crossing it
 * would be reset, and Envoy would answer it with its failure mode.
 */
function drain(session: http2.ServerHttp2Session): void {
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    if (!session.closed && !session.destroyed) session.close();
  };
  const timer = setTimeout(close, DRAIN_PING_TIMEOUT_MS);
  timer.unref();
  try {
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
    if (!session.ping(close)) close();
  } catch {
    close();
  }
}

/** An HTTP answer for a client that is not speaking gRPC. */
function answerHttp(stream: http2.ServerHttp2Stream, httpStatus: number): void {
  if (stream.destroyed || stream.headersSent) return;
  try {
    stream.respond({ ':status': httpStatus }, { endStream: true });
    stopReading(stream);
  } catch {
    stream.destroy();
  }
}

/** A handler error's code, or UNKNOWN when it has none (as grpc-js). */
function statusCodeOf(err: NativeServiceError): number {
  return Number.isInteger(err.code) && err.code >= 0 && err.code <= 16 ? err.code : Status.UNKNOWN;
}

/** Ends the stream (after `payload`, if any) with `trailers` once HTTP/2 asks for them. */
function endWithTrailers(stream: http2.ServerHttp2Stream, trailers: http2.OutgoingHttpHeaders, payload?: Buffer): void {
  stream.once('wantTrailers', () => {
    try {
      stream.sendTrailers(trailers);
    } catch {
      stream.destroy();
    }
  });
  if (payload) stream.end(payload);
  else stream.end();
}

function describeThrown(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function frame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = 0;
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, 5);
  return out;
}

type Refusal = { code: number; details: string; acceptEncoding?: true };
type Framing = { message: Buffer } | Refusal;

const tooLarge = (size: number | string, maxLength: number): Refusal => ({
  code: Status.RESOURCE_EXHAUSTED,
  details: `Received message larger than max (${size} vs. ${maxLength})`,
});
const MORE_THAN_ONE: Refusal = { code: Status.INTERNAL, details: 'expected one request message, got more' };

/**
 * The one Length-Prefixed-Message of a request body, inflated when it says so. Exported for tests.
 */
export function unframeSingleMessage(body: Buffer, encoding: string | undefined, maxLength: number): Framing {
  if (body.length < 5) return { code: Status.INTERNAL, details: body.length === 0 ? 'expected one request message, got none' : 'request message cut short' };
  const flag = body[0] as number;
  const length = body.readUInt32BE(1);
  if (flag > 1) return { code: Status.INTERNAL, details: `request message has compressed flag ${flag}` };
  if (length > maxLength) return tooLarge(length, maxLength);
  if (body.length < 5 + length) return { code: Status.INTERNAL, details: 'request message cut short' };
  if (body.length > 5 + length) return MORE_THAN_ONE;
  const raw = body.subarray(5);
  if (flag === 0) return { message: raw };
  try {
    if (encoding === 'gzip') return checkInflated(gunzipSync(raw, { maxOutputLength: maxLength }), maxLength);
    if (encoding === 'deflate') return checkInflated(inflateSync(raw, { maxOutputLength: maxLength }), maxLength);
  } catch (err) {
    const tooBig = (err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE';
    return tooBig
      ? tooLarge('more', maxLength)
      : { code: Status.INTERNAL, details: `request message could not be decompressed (${encoding})` };
  }
  if (encoding === undefined || encoding === 'identity') return { code: Status.INTERNAL, details: 'compressed flag set without grpc-encoding' };
  return { code: Status.UNIMPLEMENTED, details: `message compressed with ${encoding}, which this server does not support`, acceptEncoding: true };
}

function checkInflated(message: Buffer, maxLength: number): Framing {
  return message.length > maxLength ? tooLarge(message.length, maxLength) : { message };
}

/**
 * A request body as it arrives: the one message's bytes in one buffer, sized by its length prefix.
 * A prefix over the limit is refused at once, before its bytes arrive, and bytes past the first
 * message at once too; chunks are copied as they come, so many small DATA frames cost no more
 * than one (the common case, the whole message in one chunk, is kept without a copy). The buffer
 * reserves at most 64 KiB before the bytes arrive and doubles as they do: a prefix alone (a stream
 * that declares 4 MiB and sends nothing) holds no more than that.
 */
const INITIAL_RESERVE = 64 * 1024;

/** The bytes a server's incomplete request messages hold together, bounded (`maxBufferedRequestBytes`). */
export class RequestBuffers {
  #used = 0;

  constructor(readonly max: number) {
    if (!Number.isSafeInteger(max) || max < 0) throw new TypeError(`maxBufferedRequestBytes must be a non-negative integer, got ${max}`);
  }

  get used(): number {
    return this.#used;
  }

  /** Takes `bytes` of the budget; false (nothing taken) when they do not fit. */
  reserve(bytes: number): boolean {
    if (this.#used + bytes > this.max) return false;
    this.#used += bytes;
    return true;
  }

  release(bytes: number): void {
    this.#used -= bytes;
  }
}

const buffersFull = (max: number): Refusal => ({
  code: Status.RESOURCE_EXHAUSTED,
  details: `Server request buffers full (${max} bytes held by requests still arriving)`,
});

export class MessageBody {
  refused = false;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #buf: Buffer | null = null;
  #filled = 0;
  /** 5 + the declared length, once the prefix is in */
  #size = 0;
  /** bytes of `buffers` this body holds */
  #held = 0;

  constructor(
    private readonly maxLength: number,
    private readonly buffers: RequestBuffers = new RequestBuffers(Number.MAX_SAFE_INTEGER),
  ) {}

  /** Takes a chunk; a refusal to answer with, or null. */
  add(chunk: Buffer): Refusal | null {
    // the budget is charged what arrived, not what is reserved: a declared length alone costs nothing
    // (a reserve is address space until written), so streams that send a prefix and stall cannot fill it
    if (!this.#hold(chunk.length)) return this.#refuse(buffersFull(this.buffers.max));
    if (this.#buf === null) {
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#pendingBytes < 5) return null;
      const head = this.#pending.length === 1 ? chunk : Buffer.concat(this.#pending, this.#pendingBytes);
      this.#pending = [];
      const declared = head.readUInt32BE(1);
      if (declared > this.maxLength) return this.#refuse(tooLarge(declared, this.maxLength));
      const size = 5 + declared;
      this.#size = size;
      if (head.length === size) {
        this.#buf = head;
        this.#filled = size;
        return null;
      }
      this.#buf = Buffer.allocUnsafe(Math.min(size, Math.max(INITIAL_RESERVE, head.length)));
      chunk = head;
    }
    const filled = this.#filled + chunk.length;
    if (filled > this.#size) return this.#refuse(MORE_THAN_ONE);
    if (filled > this.#buf.length) {
      const grown = Buffer.allocUnsafe(Math.min(this.#size, Math.max(filled, 2 * this.#buf.length)));
      this.#buf.copy(grown, 0, 0, this.#filled);
      this.#buf = grown;
    }
    chunk.copy(this.#buf, this.#filled);
    this.#filled = filled;
    return null;
  }

  /** What arrived: the whole message, or fewer bytes (unframeSingleMessage names what is missing). */
  bytes(): Buffer {
    if (this.#buf === null) return this.#pendingBytes === 0 ? Buffer.alloc(0) : Buffer.concat(this.#pending, this.#pendingBytes);
    return this.#filled === this.#buf.length ? this.#buf : this.#buf.subarray(0, this.#filled);
  }

  /** Bytes reserved for the message so far (tests). */
  get reserved(): number {
    return this.#buf?.length ?? this.#pendingBytes;
  }

  /** Hands this body's share of the buffer budget back (idempotent): the message was taken, or dropped. */
  release(): void {
    this.buffers.release(this.#held);
    this.#held = 0;
  }

  /** Drops what arrived and hands its budget back; later chunks are ignored (`refused`). */
  abandon(): void {
    this.refused = true;
    this.#pending = [];
    this.#buf = null;
    this.release();
  }

  #hold(bytes: number): boolean {
    if (!this.buffers.reserve(bytes)) return false;
    this.#held += bytes;
    return true;
  }

  #refuse(refusal: Refusal): Refusal {
    this.abandon();
    return refusal;
  }
}

/** A stream's TLS peer, read once per connection (`peers` caches it by session). */
function authContextOf(stream: http2.ServerHttp2Stream, peers: WeakMap<http2.Http2Session, NativeAuthContext>): NativeAuthContext {
  const session = stream.session;
  if (!session) return {};
  let ctx = peers.get(session);
  if (ctx === undefined) {
    const socket = session.socket as Partial<TLSSocket>;
    if (typeof socket.getPeerCertificate !== 'function') {
      ctx = {};
    } else if (socket.authorized !== true) {
      // a certificate TLS did not verify (require_client_certificate: false) is no identity, as in grpc-js
      ctx = { transportSecurityType: 'ssl' };
    } else {
      const cert = socket.getPeerCertificate(false) as { raw?: Buffer; fingerprint256?: string } | null;
      const peer = cert?.raw ? { raw: cert.raw, ...(cert.fingerprint256 ? { fingerprint256: cert.fingerprint256 } : {}) } : undefined;
      ctx = { transportSecurityType: 'ssl', ...(peer ? { sslPeerCertificate: peer } : {}) };
    }
    peers.set(session, ctx);
  }
  return ctx;
}

/** A stream whose request message has not arrived whole yet. */
interface Reading {
  readonly body: MessageBody;
  /** shortened to SHUTDOWN_READ_GRACE_MS from now when the server shuts down */
  deadline: number;
  /** the grpc-timeout set the deadline (not requestReadTimeoutMs) */
  readonly byGrpcTimeout: boolean;
}

/** The per-call object a handler sees: grpc-js's shape, as far as chio's handlers use it. */
class Call {
  /** the client went away before the call ended */
  cancelled = false;
  #done = false;
  #cancelListeners: Array<() => void> | null = null;
  #headersSent = false;

  constructor(
    readonly request: unknown,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly serialize: Serialize,
    private readonly peers: WeakMap<http2.Http2Session, NativeAuthContext>,
    private readonly report: (code: number) => void,
  ) {}

  /** The TLS peer, read once per connection. */
  getAuthContext(): NativeAuthContext {
    return authContextOf(this.stream, this.peers);
  }

  on(event: string, listener: () => void): this {
    if (event === 'cancelled') (this.#cancelListeners ??= []).push(listener);
    return this;
  }

  /** The stream closed: a cancellation unless the call had ended. */
  closed(): void {
    if (this.#done) return;
    this.#done = true;
    this.cancelled = true;
    for (const l of this.#cancelListeners ?? []) l();
  }

  /** Server streaming: one more response message. */
  write(value: unknown): boolean {
    if (this.#done || this.stream.destroyed) return false;
    try {
      const payload = frame((this.serialize as (v: unknown) => Buffer)(value));
      if (!this.#headersSent) {
        this.#headersSent = true;
        this.stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE }, { waitForTrailers: true });
      }
      return this.stream.write(payload);
    } catch {
      this.stream.destroy();
      return false;
    }
  }

  /** Server streaming: the status, as trailers (or Trailers-Only when nothing was written). */
  end(code: number, details = ''): void {
    if (this.#done || this.stream.destroyed) return;
    this.#done = true;
    if (code !== Status.OK) this.report(code);
    if (!this.#headersSent) {
      answerStatus(this.stream, code, details);
      return;
    }
    const trailers: http2.OutgoingHttpHeaders = { 'grpc-status': String(code) };
    if (details) trailers['grpc-message'] = percentEncodeGrpcMessage(details);
    endWithTrailers(this.stream, trailers);
  }

  /** Unary: the answer or the error, once. */
  answer(err: NativeServiceError | null, value?: unknown): void {
    if (this.#done || this.stream.destroyed) return;
    this.#done = true;
    if (err) {
      const code = statusCodeOf(err);
      this.report(code);
      answerStatus(this.stream, code, err.details ?? (err as { message?: string }).message ?? '');
      return;
    }
    let payload: Buffer;
    try {
      payload = frame((this.serialize as (v: unknown) => Buffer)(value));
    } catch {
      this.report(Status.INTERNAL);
      answerStatus(this.stream, Status.INTERNAL, 'Failed to serialize the response');
      return;
    }
    try {
      this.stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE }, { waitForTrailers: true });
      endWithTrailers(this.stream, { 'grpc-status': '0' }, payload);
    } catch {
      this.stream.destroy();
    }
  }
}

/**
 * A gRPC server for unary and server-streaming methods on node:http2. See the module comment.
 */
export class NativeGrpcServer {
  readonly #routes = new Map<string, Route>();
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  readonly #streamingCalls = new Set<Call>();
  readonly #peers = new WeakMap<http2.Http2Session, NativeAuthContext>();
  readonly #maxReceive: number;
  readonly #readTimeoutMs: number;
  readonly #buffers: RequestBuffers;
  readonly #admitCall: NativeGrpcServerOptions['admitCall'];
  /** streams whose request has not arrived whole, swept every READ_SWEEP_MS while there are any */
  readonly #reading = new Map<http2.ServerHttp2Stream, Reading>();
  #sweeper: NodeJS.Timeout | null = null;
  readonly #onError: ((code: string) => void) | undefined;
  readonly #reportCode = (code: number): void => this.#onError?.(statusName(code));
  readonly #server: http2.Http2Server | http2.Http2SecureServer;
  #listening = false;
  #closed = false;

  constructor(options: NativeGrpcServerOptions = {}) {
    const maxReceive = options.maxReceiveMessageLength ?? DEFAULT_MAX_RECEIVE;
    this.#onError = options.onError;
    if (!Number.isSafeInteger(maxReceive) || maxReceive < 0) throw new TypeError(`maxReceiveMessageLength must be a non-negative integer, got ${maxReceive}`);
    // a message (with its 5-byte prefix) is held in one Buffer: a larger limit would make a length
    // prefix over Buffer's maximum throw from the data listener, and so take the process down
    this.#maxReceive = Math.min(maxReceive, MAX_BUFFER_LENGTH - 5);
    this.#readTimeoutMs = options.requestReadTimeoutMs ?? DEFAULT_REQUEST_READ_TIMEOUT_MS;
    if (!(this.#readTimeoutMs > 0) || !Number.isFinite(this.#readTimeoutMs)) throw new TypeError(`requestReadTimeoutMs must be a positive number, got ${this.#readTimeoutMs}`);
    this.#buffers = new RequestBuffers(options.maxBufferedRequestBytes ?? DEFAULT_MAX_BUFFERED_REQUEST_BYTES);
    this.#admitCall = options.admitCall;
    const common: http2.ServerOptions = {
      // as grpc-js: nghttp2's session memory limit degrades badly when reached; streams are bounded by SETTINGS instead
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
      maxSendHeaderBlockLength: Number.MAX_SAFE_INTEGER,
      ...(options.maxConcurrentStreams === undefined ? {} : { settings: { maxConcurrentStreams: options.maxConcurrentStreams } }),
    };
    if (options.tls) {
      const t = options.tls;
      this.#server = http2.createSecureServer({
        ...common,
        key: t.key,
        cert: t.cert,
        ca: t.ca,
        requestCert: true,
        rejectUnauthorized: t.requireClientCertificate,
        minVersion: 'TLSv1.2',
      });
      // TLS handshake errors are the client's business (nodejs/node#35824)
      this.#server.on('secureConnection', (socket: Socket) => socket.on('error', noop));
    } else {
      this.#server = http2.createServer(common);
    }
    this.#server.on('connection', (socket: Socket) => {
      socket.on('error', noop);
      // a peer that vanished without a FIN (its node died) is found and its connection closed,
      // instead of an idle session and descriptor kept forever (grpc-js's server pings only when configured)
      socket.setKeepAlive(true, TCP_KEEPALIVE_IDLE_MS);
    });
    this.#server.setTimeout(0);
    this.#server.on('session', (session: http2.ServerHttp2Session) => {
      if (this.#closed) {
        session.destroy();
        return;
      }
      this.#sessions.add(session);
      session.on('error', noop);
      session.once('close', () => this.#sessions.delete(session));
    });
    this.#server.on('stream', (stream, headers) => this.#onStream(stream, headers));
  }

  /**
   * grpc-js's `Server.addService`: every method of `service`, by its path, served by
   * `implementation[name]` (or its original lower-case name, as grpc-health-check registers them).
   */
  addService(service: ServiceDefinition, implementation: UntypedServiceImplementation): void {
    for (const [name, def] of Object.entries(service)) {
      if (def.requestStream) throw new TypeError(`${def.path}: client-streaming methods are not supported by the native transport`);
      const handler = implementation[name] ?? (def.originalName === undefined ? undefined : implementation[def.originalName]);
      if (handler === undefined) continue;
      if (this.#routes.has(def.path)) throw new TypeError(`${def.path} is already served`);
      this.#routes.set(def.path, {
        streaming: def.responseStream,
        deserialize: def.requestDeserialize as Deserialize,
        serialize: def.responseSerialize as Serialize,
        handler: handler as unknown as Route['handler'],
      });
    }
  }

  /** Binds `host:port` (`[v6]:port` too); resolves to the bound port. */
  listen(address: string): Promise<number> {
    if (this.#listening) throw new TypeError('NativeGrpcServer.listen() called twice');
    const colon = address.lastIndexOf(':');
    const port = Number(address.slice(colon + 1));
    let host = address.slice(0, colon);
    if (colon < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`expected host:port, got ${address}`);
    if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
    this.#listening = true;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen({ host, port }, () => {
        this.#server.off('error', onError);
        resolve((this.#server.address() as AddressInfo).port);
      });
    });
  }

  /** New TLS material for new connections (a rotated certificate or CA). */
  setSecureContext(material: { key: Buffer; cert: Buffer; ca: Buffer }): void {
    if (!('setSecureContext' in this.#server)) throw new TypeError('setSecureContext() on a plaintext listener');
    this.#server.setSecureContext(material);
  }

  /** Connections open now (for tests and shutdown). */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Bytes held by request messages still arriving, and how many streams are still sending theirs (tests). */
  get reading(): { streams: number; bytes: number } {
    return { streams: this.#reading.size, bytes: this.#buffers.used };
  }

  /** Stops accepting, sends GOAWAY on every connection, ends streaming calls; `done` once every connection closed. */
  tryShutdown(done: () => void): void {
    this.#closed = true;
    // a request still arriving gets a short grace, not its whole read deadline, to hold the drain
    const grace = Date.now() + SHUTDOWN_READ_GRACE_MS;
    for (const r of this.#reading.values()) r.deadline = Math.min(r.deadline, grace);
    for (const call of this.#streamingCalls) call.end(Status.UNAVAILABLE, 'server shutting down');
    this.#streamingCalls.clear();
    let pending = 1 + this.#sessions.size;
    const settle = (): void => {
      if (--pending === 0) done();
    };
    for (const session of this.#sessions) {
      if (session.closed || session.destroyed) {
        settle();
        continue;
      }
      session.once('close', settle);
      drain(session);
    }
    if (this.#listening) this.#server.close(() => settle());
    else settle();
  }

  /** Drops every connection now. */
  forceShutdown(): void {
    this.#closed = true;
    for (const session of this.#sessions) session.destroy();
    this.#sessions.clear();
    if (this.#listening && this.#server.listening) this.#server.close();
  }

  #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', noop); // a peer's RST_STREAM, a broken session: nothing to answer
    if (headers[':method'] !== 'POST') return this.#refuseHttp(stream, 405);
    if (!isGrpcContentType(headers['content-type'])) return this.#refuseHttp(stream, 415);
    const path = headers[':path'] ?? '';
    const route = this.#routes.get(path);
    if (route === undefined) return this.#refuse(stream, Status.UNIMPLEMENTED, `The server does not implement the method ${path}`);
    const encodingHeader = headers['grpc-encoding'];
    const encoding = typeof encodingHeader === 'string' ? encodingHeader : undefined;
    let readMs = this.#readTimeoutMs;
    let byGrpcTimeout = false;
    const timeoutHeader = headers['grpc-timeout'];
    if (timeoutHeader !== undefined) {
      const ms = typeof timeoutHeader === 'string' ? parseGrpcTimeout(timeoutHeader) : null;
      if (ms === null) return this.#refuse(stream, Status.INTERNAL, `Invalid grpc-timeout value "${String(timeoutHeader)}"`);
      if (ms < readMs) {
        readMs = ms;
        byGrpcTimeout = true;
      }
    }
    if (this.#admitCall !== undefined) {
      let refusal: NativeServiceError | null;
      try {
        refusal = this.#admitCall(path, authContextOf(stream, this.#peers));
      } catch (err) {
        refusal = { code: Status.INTERNAL, details: `Call admission failed: ${describeThrown(err)}` };
      }
      if (refusal !== null) return this.#refuse(stream, statusCodeOf(refusal), refusal.details ?? '');
    }

    const body = new MessageBody(this.#maxReceive, this.#buffers);
    this.#startReading(stream, { body, deadline: Date.now() + readMs, byGrpcTimeout });
    stream.on('data', (chunk: Buffer) => {
      if (body.refused) return;
      const refusal = body.add(chunk);
      if (refusal) {
        this.#reading.delete(stream);
        this.#refuse(stream, refusal.code, refusal.details);
      }
    });
    stream.once('end', () => {
      this.#reading.delete(stream);
      body.release(); // the message is taken below, or dropped: it no longer counts as arriving
      if (body.refused || stream.destroyed) return;
      // node:http2 ends the readable side of a stream the client reset with NO_ERROR too: that
      // request was abandoned (no END_STREAM), not sent; nothing to serve or answer
      if (stream.closed) return;
      const framing = unframeSingleMessage(body.bytes(), encoding, this.#maxReceive);
      if (!('message' in framing)) {
        return this.#refuse(stream, framing.code, framing.details, framing.acceptEncoding ? { 'grpc-accept-encoding': ACCEPT_ENCODING } : undefined);
      }
      this.#dispatch(stream, route, framing.message);
    });
  }

  #startReading(stream: http2.ServerHttp2Stream, reading: Reading): void {
    this.#reading.set(stream, reading);
    if (this.#sweeper === null) {
      this.#sweeper = setInterval(() => this.#sweepReading(), READ_SWEEP_MS);
      this.#sweeper.unref();
    }
  }

  /**
   * Streams still sending their request: one the peer left (reset, connection gone) hands its
   * buffer back; one past its deadline is answered DEADLINE_EXCEEDED and told to stop sending.
   */
  #sweepReading(): void {
    const now = Date.now();
    for (const [stream, r] of this.#reading) {
      const gone = stream.destroyed || stream.closed;
      if (!gone && now < r.deadline) continue;
      this.#reading.delete(stream);
      r.body.abandon();
      if (gone) continue;
      if (this.#closed) this.#refuse(stream, Status.UNAVAILABLE, 'server shutting down');
      else if (r.byGrpcTimeout) this.#refuse(stream, Status.DEADLINE_EXCEEDED, 'Deadline exceeded');
      else this.#refuse(stream, Status.DEADLINE_EXCEEDED, `Deadline exceeded: the request did not arrive whole within ${this.#readTimeoutMs} ms`);
    }
    if (this.#reading.size === 0 && this.#sweeper !== null) {
      clearInterval(this.#sweeper);
      this.#sweeper = null;
    }
  }

  #refuse(stream: http2.ServerHttp2Stream, code: number, details: string, extra?: http2.OutgoingHttpHeaders): void {
    this.#reportCode(code);
    answerStatus(stream, code, details, extra);
  }

  #refuseHttp(stream: http2.ServerHttp2Stream, httpStatus: number): void {
    this.#onError?.(`HTTP_${httpStatus}`);
    answerHttp(stream, httpStatus);
  }

  #dispatch(stream: http2.ServerHttp2Stream, route: Route, message: Buffer): void {
    let request: unknown;
    try {
      request = route.deserialize(message);
    } catch {
      return this.#refuse(stream, Status.INTERNAL, 'Error deserializing the request message');
    }
    if (route.streaming && this.#closed) return this.#refuse(stream, Status.UNAVAILABLE, 'server shutting down');
    const call = new Call(request, stream, route.serialize, this.#peers, this.#reportCode);
    if (!route.streaming) {
      try {
        route.handler(call, (err, value) => call.answer(err, value));
      } catch (err) {
        call.answer({ code: Status.UNKNOWN, details: `Server method handler threw error ${describeThrown(err)}` });
      }
      return;
    }
    this.#streamingCalls.add(call);
    stream.once('close', () => {
      this.#streamingCalls.delete(call);
      call.closed();
    });
    try {
      (route.handler as (c: Call) => void)(call); // grpc-js's handleServerStreamingCall: no callback
    } catch (err) {
      call.end(Status.UNKNOWN, `Server method handler threw error ${describeThrown(err)}`);
    }
  }
}
