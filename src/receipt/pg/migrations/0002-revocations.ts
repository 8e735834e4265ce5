/**
 * Migration 2: shared capability revocations (SPEC §7 "not revoked"; `POST /v1/revocations` on any
 * replica, enforced by every replica within seconds). A revocation is never deleted. `change`
 * orders them for incremental reads; an insert notifies channel `chio_revocations` with the
 * schema's name as payload (LISTEN/NOTIFY is per database, schemas share it).
 */
export const migration = {
  version: 2,
  name: 'revocations',
  sql: `
CREATE TABLE chio_revocations (
  id text COLLATE "C" PRIMARY KEY,
  reason text,
  revoked_at timestamptz NOT NULL,
  change bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
`,
} as const;
