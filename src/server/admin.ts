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
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    const parts = url.pathname.split('/').filter(Boolean);
    let pathMatched = false;
    for (const route of routes) {
      const params = matchRoute(route, parts);
      if (!params) continue;
      pathMatched = true;
      if (route.method !== req.method) continue;
      if (route.auth && !authorized(req.headers.authorization, options.token())) {
        return json(401, { error: { code: 'unauthorized', message: 'a valid Bearer token is required' } }, { 'www-authenticate': 'Bearer' });
      }
      return route.handler({
        method: req.method,
        path: url.pathname,
        query: url.searchParams,
        params,
        headers: req.headers,
        body: () => readBody(req, maxBody),
      });
    }
    return pathMatched
      ? json(405, { error: { code: 'bad_request', message: `method ${req.method ?? ''} not allowed` } })
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
        res.writeHead(out.status, { 'cache-control': 'no-store', ...out.headers });
        res.end(out.body);
      })
      .catch((err: unknown) => {
        options.onError?.(err);
        res.destroy();
      });
  });
  server.headersTimeout = 10_000;

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

function authorized(header: string | undefined, expected: string | null): boolean {
  if (expected === null || header === undefined) return false;
  const m = /^Bearer ([\x21-\x7e]+)$/.exec(header);
  return m !== null && tokenMatches(m[1] as string, expected);
}

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
