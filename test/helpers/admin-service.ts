/**
 * A service with every admin endpoint on: jsonl + sqlite sinks, capability issuance and
 * revocations, and an admin token file holding `token` (the admin API tests).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { generateSeedFile } from '../../src/keys.js';
import { startTestService, type TestService } from './service.js';

export function startAdminApiService(token: string, policy?: string): Promise<TestService> {
  return startTestService({
    ...(policy === undefined ? {} : { policy }),
    configText: () =>
      [
        'schema: chio.config.v1',
        'listen: { grpc: 127.0.0.1:0, admin: 127.0.0.1:0 }',
        'policy: ./policy.yaml',
        'keys: { receipt_signing_seed: ./data/kernel.seed }',
        'receipts: { sinks: [ { type: jsonl, path: ./data/receipts.jsonl }, { type: sqlite, path: ./data/receipts.db } ] }',
        'capabilities: { authority_seed: ./secrets/authority.seed, revocations_file: ./data/revocations.jsonl }',
        'admin: { token_file: ./secrets/admin.token }',
      ].join('\n'),
    beforeStart: (dir) => {
      mkdirSync(path.join(dir, 'secrets'), { mode: 0o700 });
      writeFileSync(path.join(dir, 'secrets', 'admin.token'), `${token}\n`, { mode: 0o600 });
      generateSeedFile(path.join(dir, 'secrets', 'authority.seed'));
    },
  });
}
