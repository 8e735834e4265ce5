/**
 * Review of workload-bound capabilities: fail closed. Each test pins an input a capability must
 * NOT grant (or must deny with a specific code), beyond what token/verify/revocations tests cover.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyCapabilityStage, capabilityStage, type CapabilityStageDeps } from '../../src/capability/stage.js';
import { CAPABILITY_SCHEMA, encodeCapability, MAX_CAPABILITY_HEADER_LENGTH, signCapability, type CapabilityConstraints, type UnsignedCapability } from '../../src/capability/token.js';
import { CAPABILITY_SKEW_MS, CapabilityVerifier, checkGrant, type GrantContext } from '../../src/capability/verify.js';
import { RevocationList } from '../../src/capability/revocations.js';
import { ChioError } from '../../src/errors.js';
import { recordingLogger } from '../helpers/service.js';
import type { WorkloadIdentity } from '../../src/identity/identity.js';
import type { IdentityResult } from '../../src/identity/resolve.js';
import type { SigningKey } from '../../src/keys.js';
import type { Decision } from '../../src/policy/evaluate.js';
import { ALLOW_LIST_ORDERS, authorityKey, FRONTEND, identity } from './helpers.js';

const authority = authorityKey(21);
const second = authorityKey(22);
const ISSUED = Date.parse('2026-12-01T00:00:00.000Z');
const EXPIRES = ISSUED + 300_000;
const ID = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3';

function unsigned(overrides: Partial<UnsignedCapability> = {}, key: SigningKey = authority): UnsignedCapability {
  return {
    schema: CAPABILITY_SCHEMA,
    id: ID,
    issuer: key.kid,
    subject: 'agent',
    tools: ['list_orders'],
    issuedAt: new Date(ISSUED).toISOString(),
    expiresAt: new Date(EXPIRES).toISOString(),
    constraints: BOUND,
    ...overrides,
  };
}

const BOUND: CapabilityConstraints = { minimumRuntimeAssuranceTier: 'attested', workloadIdentity: identity(FRONTEND) };

function header(overrides: Partial<UnsignedCapability> = {}, key: SigningKey = authority): string {
  return encodeCapability(signCapability(unsigned(overrides, key), key));
}

function grant(overrides: Partial<GrantContext> = {}): GrantContext {
  return { now: ISSUED + 1000, tool: 'list_orders', identity: identity(FRONTEND), tier: 'attested', isRevoked: () => false, ...overrides };
}

const verifier = new CapabilityVerifier({ authorities: [authority, second] });

function verdict(value: string, ctx: GrantContext = grant()): { code: string; message: string } | null {
  const auth = verifier.authenticate(value);
  if (!auth.ok) return { code: auth.failure.code, message: auth.failure.message };
  const f = checkGrant(auth.token, ctx);
  return f === null ? null : { code: f.code, message: f.message };
}

const allow: Decision = ALLOW_LIST_ORDERS;
const presented = (id: WorkloadIdentity | null, tier: IdentityResult['tier'] = 'attested'): IdentityResult => ({ identity: id, tier, verifier: 'envoy', error: null, svid: null, tierNote: null });
const deps: CapabilityStageDeps = { verifier, isRevoked: () => false };

const NOW = ISSUED + 1000;

describe('time window: a decision time that is not a number never grants', () => {
  it('NaN → capability_not_yet_valid; ±Infinity → not yet valid / expired', () => {
    expect(verdict(header(), grant({ now: Number.NaN }))).toEqual({ code: 'capability_not_yet_valid', message: `capability ${ID} is not valid before 2026-12-01T00:00:00.000Z` });
    expect(verdict(header(), grant({ now: Number.POSITIVE_INFINITY }))).toEqual({ code: 'capability_expired', message: `capability ${ID} expired at 2026-12-01T00:05:00.000Z` });
    expect(verdict(header(), grant({ now: Number.NEGATIVE_INFINITY }))?.code).toBe('capability_not_yet_valid');
  });

  it('grants exactly inside [issuedAt - 30 s, expiresAt + 30 s) (property, integer ms)', () => {
    const h = header();
    fc.assert(
      fc.property(fc.integer({ min: ISSUED - 2 * CAPABILITY_SKEW_MS, max: EXPIRES + 2 * CAPABILITY_SKEW_MS }), (now) => {
        const v = verdict(h, grant({ now }));
        const inside = now >= ISSUED - CAPABILITY_SKEW_MS && now < EXPIRES + CAPABILITY_SKEW_MS;
        expect(v === null).toBe(inside);
        if (!inside) expect(v?.code).toBe(now < ISSUED ? 'capability_not_yet_valid' : 'capability_expired');
      }),
      { numRuns: 300 },
    );
    for (const [now, code] of [
      [ISSUED - CAPABILITY_SKEW_MS - 1, 'capability_not_yet_valid'],
      [ISSUED - CAPABILITY_SKEW_MS, null],
      [EXPIRES + CAPABILITY_SKEW_MS - 1, null],
      [EXPIRES + CAPABILITY_SKEW_MS, 'capability_expired'],
    ] as const) {
      expect(verdict(h, grant({ now }))?.code ?? null).toBe(code);
    }
  });
});

describe('signature: key confusion between two trusted authorities', () => {
  it('signed by one, issuer naming the other → capability_bad_signature (no fallback to any trusted key)', () => {
    const signed = signCapability(unsigned({}, authority), authority);
    const swapped = encodeCapability({ ...signed, issuer: second.kid });
    expect(verdict(swapped)).toEqual({ code: 'capability_bad_signature', message: `capability signature does not verify with the key of issuer ${second.kid}` });
    // the other authority's genuine token is fine: the set is not the problem, the pairing is
    expect(verdict(header({}, second))).toBeNull();
  });
});

describe('workload binding: exact SPIFFE ID, never a prefix or variant (property)', () => {
  it('near-miss IDs are capability_workload_mismatch; a principal alone is weaker; no identity is a mismatch', () => {
    const h = header();
    for (const uri of [
      `${FRONTEND}/`,
      `${FRONTEND}x`,
      `${FRONTEND}/extra`,
      'spiffe://example.org/ns/default/sa',
      'spiffe://example.org/ns/default/sa/Frontend',
      'spiffe://example.org.evil/ns/default/sa/frontend',
      'spiffe://other.org/ns/default/sa/frontend',
    ]) {
      expect(verdict(h, grant({ identity: identity(uri) }))).toEqual({
        code: 'capability_workload_mismatch',
        message: `capability ${ID} is bound to ${FRONTEND}, not to ${uri}`,
      });
    }
    expect(verdict(h, grant({ identity: identity(FRONTEND, 'uri') }))).toEqual({
      code: 'capability_credential_kind_weaker',
      message: `capability ${ID} is bound to a x509_svid credential; uri is weaker`,
    });
    expect(verdict(h, grant({ identity: null }))?.code).toBe('capability_workload_mismatch');
  });

  it('grants a presented ID if and only if it equals the bound uri', () => {
    const segment = fc.stringMatching(/^[a-z0-9]{1,6}$/);
    const uri = fc.tuple(fc.constantFrom('example.org', 'example.com', 'other.org'), fc.array(segment, { minLength: 1, maxLength: 3 })).map(([td, p]) => `spiffe://${td}/${p.join('/')}`);
    fc.assert(
      fc.property(uri, uri, (bound, presentedUri) => {
        const h = header({ constraints: { minimumRuntimeAssuranceTier: 'attested', workloadIdentity: identity(bound) } });
        const v = verdict(h, grant({ identity: identity(presentedUri) }));
        expect(v === null).toBe(bound === presentedUri);
        if (v !== null) expect(v.code).toBe('capability_workload_mismatch');
      }),
      { numRuns: 100 },
    );
  });
});

describe('tool scope: exact, case-sensitive, no wildcards', () => {
  it('near-miss tool names are capability_tool_not_in_scope', () => {
    const h = header({ tools: ['list_orders', 'get_order'] });
    for (const tool of ['List_orders', 'LIST_ORDERS', 'list_order', 'list_orders.x', 'list_*', '*', 'invoke', '']) {
      expect(verdict(h, grant({ tool }))).toEqual({ code: 'capability_tool_not_in_scope', message: `tool ${JSON.stringify(tool)} is not in the scope of capability ${ID}` });
    }
    expect(verdict(h, grant({ tool: 'get_order' }))).toBeNull();
  });
});

describe('header handling at the stage: a presented bad header is a deny with its code, never ignored', () => {
  it('two headers joined by Envoy, an empty one, surrounding space, one over 8 KiB', () => {
    const h = header();
    const stage = (value: string) => capabilityStage(value, allow, presented(identity(FRONTEND)), NOW, deps);
    expect(stage(`${h},${h}`)).toEqual({ capabilityId: null, failure: { code: 'capability_malformed', message: 'capability: the header is not base64url (A-Z a-z 0-9 - _, no padding)' } });
    expect(stage('')).toEqual({ capabilityId: null, failure: { code: 'capability_malformed', message: 'capability: the header is empty' } });
    expect(stage(` ${h}`).failure?.code).toBe('capability_malformed');
    expect(stage(`${h}=`).failure?.code).toBe('capability_malformed');
    const huge = 'A'.repeat(MAX_CAPABILITY_HEADER_LENGTH + 1);
    expect(stage(huge)).toEqual({
      capabilityId: null,
      failure: { code: 'capability_malformed', message: `capability: the header is ${MAX_CAPABILITY_HEADER_LENGTH + 1} characters long; the maximum is ${MAX_CAPABILITY_HEADER_LENGTH}` },
    });
    const denied = applyCapabilityStage(allow, stage(''));
    expect(denied).toMatchObject({ verdict: 'deny', httpStatus: 403, reason: { code: 'capability_malformed' } });
  });
});

describe('revocation file edits', () => {
  it('a revocation made while the file is missing writes the kept revocations back with it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-review-'));
    const file = path.join(dir, 'revocations.jsonl');
    const other = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z4';
    writeFileSync(file, `${ID}\n`);
    const list = RevocationList.open(file, { log: recordingLogger(), pollIntervalMs: 10, useFsWatch: false });
    try {
      rmSync(file);
      expect(() => list.reload()).toThrow(ChioError);
      await list.revoke(other, 'rotated', Date.parse('2026-12-01T00:00:00.000Z'));
      expect(readFileSync(file, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id)).toEqual([ID, other]);
      // a re-read of the recreated file keeps both
      list.reload();
      expect([list.has(ID), list.has(other)]).toEqual([true, true]);
    } finally {
      await list.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a revocation file that goes missing keeps its revocations (deleting or moving it never lifts them)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-review-'));
    const file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, `${ID}\n`);
    const log = recordingLogger();
    const list = RevocationList.open(file, { log, pollIntervalMs: 10, useFsWatch: false });
    try {
      expect(list.has(ID)).toBe(true);
      rmSync(file);
      let thrown: unknown = null;
      try {
        list.reload();
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(ChioError);
      expect((thrown as ChioError).code).toBe('io_error');
      expect((thrown as ChioError).message).toBe(`revocation file ${file} is missing; keeping the last 1 revocation(s)`);
      expect(list.has(ID)).toBe(true);
      // the watcher path: reported, still revoked; and a token with that id is denied
      await new Promise((r) => setTimeout(r, 60));
      expect(list.has(ID)).toBe(true);
      expect(verdict(header(), grant({ isRevoked: (id) => list.has(id) }))).toEqual({ code: 'capability_revoked', message: `capability ${ID} is revoked` });
      // written again empty: as likely a write in place caught between its truncate and its first line
      // as an edit, so it is kept too (fail-closed audit); a file with a comment line speaks
      writeFileSync(file, '');
      expect(() => list.reload()).toThrow(
        new ChioError('io_error', `revocation file ${file} is empty; keeping the last 1 revocation(s) (a write in progress? to lift them all, leave a # comment line)`),
      );
      expect(list.has(ID)).toBe(true);
      writeFileSync(file, '# every revocation lifted\n');
      expect(list.reload()).toBe(true);
      expect(list.has(ID)).toBe(false);
    } finally {
      await list.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('missing at start is still an empty list', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-review-'));
    const list = RevocationList.open(path.join(dir, 'none.jsonl'), { log: recordingLogger(), pollIntervalMs: 60_000, useFsWatch: false });
    try {
      expect(list.size).toBe(0);
      expect(list.reload()).toBe(false);
    } finally {
      await list.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
