/**
 * The Check path's view of one CheckRequest, normalized once from Envoy's
 * `envoy.service.auth.v3.CheckRequest` (see ./envoy.ts for the mapping).
 * Every stage after the gRPC adapter reads this, never the raw message.
 */
export interface CheckInput {
  /** `http` for the HTTP filter, `tcp` for the network (L4) filter, which sends no `request`. */
  readonly kind: 'http' | 'tcp';
  /** `x-request-id`, else Envoy's `request.http.id`; null if neither. */
  readonly requestId: string | null;
  /** Upper-case HTTP method, null for tcp. */
  readonly method: string | null;
  /** `:authority`/host as sent, with any port. Lower-cased. */
  readonly host: string | null;
  /** The host without its port (IPv6 brackets kept). Lower-cased. */
  readonly hostname: string | null;
  /** The port of `host`, if it had one. */
  readonly port: string | null;
  /** The request path without query or fragment; null for tcp. */
  readonly path: string | null;
  /** gRPC service and method when the request is `POST /pkg.Service/Method` with a gRPC content type. */
  readonly grpc: { readonly service: string; readonly method: string } | null;
  /**
   * The path (and gRPC target) as other servers would route it: `%2F`, `%5C`, `\` taken for `/`,
   * `;parameters` dropped (src/check/envoy.ts `otherPathReadings`); empty or absent for almost every
   * path. Policy refuses a request whose rule or tool differ under any of them (`ambiguous_path`).
   */
  readonly otherReadings?: ReadonlyArray<{ readonly path: string; readonly grpc: CheckInput['grpc'] }>;
  /** Lower-case header names → value (from `headers` or `header_map`; repeated headers joined with `,`). */
  readonly headers: ReadonlyMap<string, string>;
  /** `ip:port` (or the pipe path) of the downstream peer, null if absent. */
  readonly source: string | null;
  /** Envoy's `attributes.source.principal`, '' or null when not set. */
  readonly principal: string | null;
  /** Envoy's URL-encoded PEM `attributes.source.certificate`, null when not set. */
  readonly certificate: string | null;
  /** Envoy per-route `context_extensions`. */
  readonly contextExtensions: ReadonlyMap<string, string>;
}
