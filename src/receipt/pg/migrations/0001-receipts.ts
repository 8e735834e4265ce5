/**
 * Migration 1: the central receipt store (README "Several replicas, one PostgreSQL"; SPEC §6).
 *
 * One row per receipt of every replica's chain, keyed by (chain, seq): a retried insert of the same
 * receipt is a no-op (ON CONFLICT DO NOTHING), a different receipt at the same place is a fork the
 * shipper reports. `jcs` is the receipt's exact text (what the query API returns verifies byte for
 * byte); `hash` is its chain hash (what the next receipt's prevHash names). The query API reads in
 * the total order (time_ms, chain, seq): every filter index ends in those columns, so
 * `col = $1 AND (time_ms, chain, seq) > cursor ORDER BY time_ms, chain, seq LIMIT n` walks one index.
 *
 * Retention: `chio_prune_chain(chain, through_seq)` deletes a chain's receipts up to a seq (never the
 * newest one, so shipping resumes), and records where the chain now starts (`chio_chains.first_seq`)
 * and the hash the first remaining receipt must name (`first_prev_hash`), so what remains still
 * verifies (`chio receipt verify --pg-url-env`). `chio db prune --before TIME` calls it per chain.
 */
export const migration = {
  version: 1,
  name: 'receipts',
  sql: `
CREATE TABLE chio_chains (
  chain text COLLATE "C" PRIMARY KEY,
  first_seq bigint NOT NULL DEFAULT 1 CHECK (first_seq >= 1),
  first_prev_hash text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chio_receipts (
  chain text COLLATE "C" NOT NULL REFERENCES chio_chains (chain),
  seq bigint NOT NULL CHECK (seq >= 1),
  id text COLLATE "C" NOT NULL,
  time_ms bigint NOT NULL,
  verdict text NOT NULL,
  rule text,
  tool text,
  capability_id text,
  workload_uri text,
  trust_domain text,
  workload_path text COLLATE "C",
  tier text NOT NULL,
  hash text NOT NULL,
  jcs text NOT NULL,
  shipped_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (chain, seq)
);

CREATE INDEX chio_receipts_by_time ON chio_receipts (time_ms, chain, seq);
CREATE INDEX chio_receipts_by_id ON chio_receipts (id);
CREATE INDEX chio_receipts_by_verdict ON chio_receipts (verdict, time_ms, chain, seq);
CREATE INDEX chio_receipts_by_rule ON chio_receipts (rule, time_ms, chain, seq);
CREATE INDEX chio_receipts_by_tool ON chio_receipts (tool, time_ms, chain, seq);
CREATE INDEX chio_receipts_by_capability_id ON chio_receipts (capability_id, time_ms, chain, seq) WHERE capability_id IS NOT NULL;
CREATE INDEX chio_receipts_by_workload_uri ON chio_receipts (workload_uri, time_ms, chain, seq);
CREATE INDEX chio_receipts_by_trust_domain ON chio_receipts (trust_domain, time_ms, chain, seq);
CREATE INDEX chio_receipts_by_tier ON chio_receipts (tier, time_ms, chain, seq);
CREATE INDEX chio_receipts_by_workload_path ON chio_receipts (workload_path, time_ms, chain, seq);

CREATE FUNCTION chio_prune_chain(p_chain text, p_through bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  newest bigint;
  boundary_hash text;
  deleted bigint;
BEGIN
  PERFORM 1 FROM chio_chains WHERE chain = p_chain FOR UPDATE;
  SELECT max(seq) INTO newest FROM chio_receipts WHERE chain = p_chain;
  IF newest IS NULL THEN
    RETURN 0;
  END IF;
  IF p_through >= newest THEN
    p_through := newest - 1;
  END IF;
  SELECT hash INTO boundary_hash FROM chio_receipts WHERE chain = p_chain AND seq = p_through;
  IF boundary_hash IS NULL THEN
    RETURN 0;
  END IF;
  DELETE FROM chio_receipts WHERE chain = p_chain AND seq <= p_through;
  GET DIAGNOSTICS deleted = ROW_COUNT;
  UPDATE chio_chains SET first_seq = p_through + 1, first_prev_hash = boundary_hash WHERE chain = p_chain;
  RETURN deleted;
END;
$$;
`,
} as const;
