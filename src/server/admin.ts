/**
 * The admin HTTP listener (SPEC §2): `/metrics`, `/healthz`, `/readyz`, and the `/v1/*` API.
 * A small router; each route says whether it needs the Bearer token (compared in constant time).
 * Errors are JSON `{error: {code, message, field?}}` with the ChioError code.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ChioError, describe } from '../errors.js';

export interface AdminRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly params: Readonly<Record<string, string>>;
  readonly headers: http.IncomingHttpHeaders;
  /** reads the body (at most maxBodyBytes; 413 beyond) */
  body(): Promise<Buffer>;
}

export interface AdminResponse {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body: string | Buffer;
}

export interface Route {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** exact path, or a pattern with `:name` segments */
  readonly path: string;
  readonly auth: boolean;
  readonly handler: (req: AdminRequest) => Promise<AdminResponse> | AdminResponse;
}

export interface AdminServerOptions {
  readonly address: string;
  readonly routes: readonly Route[];
  /** the admin token, or null when none is configured (then every `auth` route answers 401) */
  readonly token: () => string | null;
  readonly maxBodyBytes?: number;
  readonly onError?: (err: unknown) => void;
}

export interface RunningAdminServer {
  readonly server: http.Server;
  readonly port: number;
  close(): Promise<void>;
}

const STATUS_BY_CODE: Record<string, number> = {
  unauthorized: 401,
  not_found: 404,
  receipt_not_found: 404,
  body_too_large: 413,
  io_error: 500,
  internal_error: 500,
};

export function json(status: number, value: unknown, headers: Record<string, string> = {}): AdminResponse {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(value) + '\n' };
}

export function errorResponse(err: ChioError): AdminResponse {
  return json(STATUS_BY_CODE[err.code] ?? 400, { error: err.toJSON() });
}

/** Constant-time comparison of a presented Bearer token with the configured one. */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b) && expected.length > 0;
}

interface CompiledRoute extends Route {
  readonly segments: readonly string[];
}

function matchRoute(route: CompiledRoute, parts: readonly string[]): Record<string, string> | null {
  if (route.segments.length !== parts.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const seg = route.segments[i] as string;
    const part = parts[i] as string;
    if (seg.startsWith(':')) {
      let value: string;
      try {
        value = decodeURIComponent(part);
      } catch {
        return null;
      }
      params[seg.slice(1)] = value;
    } else if (seg !== part) return null;
  }
  return params;
}

export async function startAdminServer(options: AdminServerOptions): Promise<RunningAdminServer> {
  const routes: CompiledRoute[] = options.routes.map((r) => ({ ...r, segments: r.path.split('/').filter(Boolean) }));
  const maxBody = options.maxBodyBytes ?? 64 * 1024;

  const handle = async (req: http.IncomingMessage): Promise<AdminResponse> => {
    const url = requestTarget(req.url ?? '/');
    if (url === null) return json(400, { error: { code: 'bad_request', message: 'malformed request target' } });
    const misencoded = misencodedParameter(url.search);
    if (misencoded !== null) {
      return errorResponse(new ChioError('bad_request', `query parameter ${JSON.stringify(misencoded)} is not percent-encoded UTF-8`, { field: misencoded }));
    }
    const parts = url.pathname.split('/').filter(Boolean);
    // HEAD is GET without the body (RFC 9110 §9.3.2); node's ServerResponse leaves the body out
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const allowed = new Set<string>();
    for (const route of routes) {
      const params = matchRoute(route, parts);
      if (!params) continue;
      if (route.method !== method) {
        allowed.add(route.method);
        if (route.method === 'GET') allowed.add('HEAD');
        continue;
      }
      if (route.auth && !authorized(req, options.token())) {
        return json(401, { error: { code: 'unauthorized', message: 'a valid Bearer token is required' } }, { 'www-authenticate': 'Bearer' });
      }
      return route.handler({
        method,
        path: url.pathname,
        query: url.searchParams,
        params,
        headers: req.headers,
        body: () => readBody(req, maxBody),
      });
    }
    return allowed.size > 0
      ? json(405, { error: { code: 'bad_request', message: `method ${req.method ?? ''} not allowed` } }, { allow: [...allowed].join(', ') })
      : json(404, { error: { code: 'not_found', message: 'no such endpoint' } });
  };

  const server = http.createServer({ maxHeaderSize: 16 * 1024, requestTimeout: 30_000 }, (req, res) => {
    handle(req)
      .catch((err: unknown) => {
        if (err instanceof ChioError) return errorResponse(err);
        options.onError?.(err);
        return json(500, { error: { code: 'internal_error', message: 'internal error' } });
      })
      .then((out) => {
        // a body over the limit is not read to its end: the answer closes the connection (RFC 9110 §15.5.14)
        const close = out.status === 413 && !req.complete ? { connection: 'close' } : {};
        res.writeHead(out.status, { 'cache-control': 'no-store', ...out.headers, ...close });
        res.end(out.body);
      })
      .catch((err: unknown) => {
        options.onError?.(err);
        res.destroy();
      });
  });
  server.headersTimeout = 10_000;
  // `Expect: 100-continue`: invite the body only from a caller with the token and a body within the
  // limit; anyone else gets the final answer (401, 413) without being asked to send it first
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (Number.isSafeInteger(declared) && declared <= maxBody && authorized(req, options.token())) res.writeContinue();
    server.emit('request', req, res);
  });
  // what node's HTTP parser refuses (malformed requests, oversized headers, timeouts) also gets a JSON error body
  server.on('clientError', (err: NodeJS.ErrnoException, socket: import('node:stream').Duplex) => {
    // as node's own handler: answer only when no response has started on this socket
    const inFlight = (socket as { _httpMessage?: { _headerSent?: boolean } | null })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?._headerSent === true) {
      socket.destroy();
      return;
    }
    const [status, reason, code, message] = (err.code !== undefined && Object.hasOwn(CLIENT_ERRORS, err.code) ? CLIENT_ERRORS[err.code] : undefined) ?? BAD_REQUEST;
    const body = JSON.stringify({ error: { code, message } }) + '\n';
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
    socket.destroy();
  });

  const { host, port } = splitAddress(options.address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    server,
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The Bearer token of the request's one Authorization header (scheme case-insensitive, RFC 9110 §11.1); two headers are refused. */
function authorized(req: http.IncomingMessage, expected: string | null): boolean {
  const header = req.headers.authorization;
  if (expected === null || header === undefined) return false;
  // node keeps only the first of repeated Authorization headers: an ambiguous request is refused, not guessed
  if (req.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === 'authorization').length !== 1) return false;
  const m = /^Bearer ([\x21-\x7e]+)$/i.exec(header);
  return m !== null && tokenMatches(m[1] as string, expected);
}

/** The request target as a URL: origin-form (`/path?query`, where `//x` is a path, not a host) or absolute-form; null when malformed. */
function requestTarget(target: string): URL | null {
  try {
    return target.startsWith('/') ? new URL(`http://admin.invalid${target}`) : new URL(target);
  } catch {
    return null;
  }
}

/**
 * The name of the first query parameter whose name or value is not percent-encoded UTF-8 (URLSearchParams
 * would turn `%ff` into U+FFFD and a filter would then match nothing, silently); null when all are.
 */
function misencodedParameter(search: string): string | null {
  for (const pair of search.replace(/^\?/, '').split('&')) {
    const [name = '', value = ''] = pair.split(/=(.*)/s);
    const decodedName = decodeComponent(name);
    if (decodedName === null) return name; // shown as sent
    if (decodeComponent(value) === null) return decodedName;
  }
  return null;
}

/** application/x-www-form-urlencoded decoding of one name or value; null when it is not UTF-8. */
function decodeComponent(text: string): string | null {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

/** node's client errors → status, reason phrase, code, message. */
const CLIENT_ERRORS: Record<string, readonly [number, string, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'bad_request', 'request headers are too large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'Payload Too Large', 'body_too_large', 'chunk extensions are too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'bad_request', 'the request was not received in time'],
};
const BAD_REQUEST = [400, 'Bad Request', 'bad_request', 'malformed HTTP request'] as const;

function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > max) {
      req.resume();
      reject(new ChioError('body_too_large', `request body is larger than ${max} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.removeAllListeners('data');
        req.resume();
        reject(new ChioError('body_too_large', `request body is larger than ${max} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', (e) => reject(new ChioError('bad_request', `could not read the request body: ${describe(e)}`)));
  });
}

export function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  return { host, port: Number(address.slice(i + 1)) };
}
