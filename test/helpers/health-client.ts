/** A grpc.health.v1 client on the proto grpc-health-check ships (tests of the Check listener's health). */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

const PROTO = path.resolve(import.meta.dirname, '..', '..', 'node_modules', 'grpc-health-check', 'proto', 'health', 'v1', 'health.proto');

export function healthClient(port: number): { check(service?: string): Promise<string>; close(): void } {
  const def = loadSync(PROTO, { keepCase: true, enums: String });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } };
  const client = new pkg.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Check(req: object, cb: (err: grpc.ServiceError | null, res?: { status: string }) => void): void;
  };
  return {
    check: (service = '') => new Promise((resolve, reject) => client.Check({ service }, (err, res) => (err ? reject(err) : resolve(res?.status ?? '')))),
    close: () => client.close(),
  };
}
