/**
 * Test helper: CheckInput objects built directly (the normalized request, src/check/request.ts),
 * shaped like the Envoy fixtures in test/fixtures/envoy/check-requests/.
 */
import type { CheckInput } from '../../src/check/request.js';
import type { WorkloadIdentity } from '../../src/identity/identity.js';

export interface RequestInit {
  readonly method?: string;
  /** `host[:port]` as sent; lower-cased like the real normalizer does */
  readonly host?: string;
  readonly path?: string;
  readonly grpc?: { readonly service: string; readonly method: string };
  readonly contextExtensions?: Readonly<Record<string, string>>;
}

/** An HTTP request; `hostname` and `port` are derived from `host` (IPv6 brackets kept). */
export function httpRequest(init: RequestInit = {}): CheckInput {
  const host = (init.host ?? 'payments.prod.svc.cluster.local').toLowerCase();
  const { hostname, port } = splitHost(host);
  return {
    kind: 'http',
    requestId: 'req-1',
    method: init.method ?? 'GET',
    host,
    hostname,
    port,
    path: init.path ?? '/',
    grpc: init.grpc ?? null,
    headers: new Map(),
    source: '10.0.0.7:51234',
    principal: null,
    certificate: null,
    contextExtensions: new Map(Object.entries(init.contextExtensions ?? {})),
  };
}

/** A gRPC call: `POST /pkg.Service/Method`. */
export function grpcRequest(service: string, method: string, host = 'payments.prod.svc.cluster.local'): CheckInput {
  return httpRequest({ method: 'POST', host, path: `/${service}/${method}`, grpc: { service, method } });
}

/** What Envoy's network (L4) filter sends: no request at all. */
export function tcpRequest(contextExtensions: Readonly<Record<string, string>> = {}): CheckInput {
  return {
    kind: 'tcp',
    requestId: null,
    method: null,
    host: null,
    hostname: null,
    port: null,
    path: null,
    grpc: null,
    headers: new Map(),
    source: '10.0.0.7:51234',
    principal: null,
    certificate: null,
    contextExtensions: new Map(Object.entries(contextExtensions)),
  };
}

function splitHost(host: string): { hostname: string; port: string | null } {
  const match = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(host);
  if (!match) return { hostname: host, port: null };
  return { hostname: match[1] ?? host, port: match[2] ?? null };
}

/** The workload most policy tests decide for: an X.509-SVID of prod.chio/payments/worker. */
export const WORKER: WorkloadIdentity = {
  scheme: 'spiffe',
  credentialKind: 'x509_svid',
  uri: 'spiffe://prod.chio/payments/worker',
  trustDomain: 'prod.chio',
  path: '/payments/worker',
};
