/**
 * grpc.health.v1.Health (https://github.com/grpc/grpc/blob/master/doc/health-checking.md) for the
 * Check listener, on the proto definition grpc-health-check ships. Ours, not the package's
 * HealthImplementation: that one keeps a watcher set for every service name a Watch ever asked
 * about, forever (up to 4 MiB per name: 300 Watch calls of 1 MB names took the heap from 34 to
 * 324 MB, a review). Here a name's set goes when its last watcher does.
 */
import { service as healthService, type ServingStatus } from 'grpc-health-check';

type Status = ServingStatus | 'SERVICE_UNKNOWN';
type Watcher = (status: Status) => void;

/** What the health service needs of a server: both gRPC transports have it. */
export interface HealthServer {
  addService(service: typeof healthService, implementation: Record<string, unknown>): void;
}

interface UnaryCall {
  readonly request: { service?: unknown };
}
interface WatchCall extends UnaryCall {
  write(message: { status: Status }): unknown;
  on(event: 'cancelled', listener: () => void): unknown;
}
type Callback = (err: { code: number; details: string } | null, value?: unknown) => void;

const NOT_FOUND = 5;
const RESOURCE_EXHAUSTED = 8;
const LIST_LIMIT = 100;

export class HealthService {
  readonly #status = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<Watcher>>();

  constructor(initial: Record<string, ServingStatus>) {
    for (const [name, status] of Object.entries(initial)) this.#status.set(name, status);
  }

  setStatus(name: string, status: ServingStatus): void {
    if (this.#status.get(name) === status) return;
    this.#status.set(name, status);
    for (const w of this.#watchers.get(name) ?? []) w(status);
  }

  /** How many service names have watchers (tests). */
  get watchedNames(): number {
    return this.#watchers.size;
  }

  addToServer(server: HealthServer): void {
    server.addService(healthService, {
      check: (call: UnaryCall, callback: Callback) => {
        const name = String(call.request.service ?? '');
        const status = this.#status.get(name);
        if (status === undefined) callback({ code: NOT_FOUND, details: 'health status unknown for that service' });
        else callback(null, { status });
      },
      watch: (call: WatchCall) => {
        const name = String(call.request.service ?? '');
        const watcher: Watcher = (status) => void call.write({ status });
        let set = this.#watchers.get(name);
        if (set === undefined) this.#watchers.set(name, (set = new Set()));
        set.add(watcher);
        call.on('cancelled', () => {
          const current = this.#watchers.get(name);
          current?.delete(watcher);
          if (current?.size === 0) this.#watchers.delete(name);
        });
        // the spec: an unknown service is SERVICE_UNKNOWN, and the call stays open
        call.write({ status: this.#status.get(name) ?? 'SERVICE_UNKNOWN' });
      },
      list: (_call: unknown, callback: Callback) => {
        if (this.#status.size > LIST_LIMIT) {
          callback({ code: RESOURCE_EXHAUSTED, details: 'too many services to list' });
          return;
        }
        const statuses: Record<string, { status: ServingStatus }> = {};
        for (const [name, status] of this.#status) statuses[name] = { status };
        callback(null, { statuses });
      },
    });
  }
}
