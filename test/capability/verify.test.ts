import { describe, expect, it } from 'vitest';
import { capabilityStage, applyCapabilityStage, NO_CAPABILITY_AUTHORITIES, type CapabilityStageDeps } from '../../src/capability/stage.js';
import { CAPABILITY_SCHEMA, decodeCapability, encodeCapability, signCapability, type CapabilityConstraints } from '../../src/capability/token.js';
import { CAPABILITY_SKEW_MS, CapabilityVerifier, checkGrant, type GrantContext } from '../../src/capability/verify.js';
import type { Tier } from '../../src/attestation/tier.js';
import type { WorkloadIdentity } from '../../src/identity/identity.js';
import type { IdentityResult } from '../../src/identity/resolve.js';
import type { SigningKey } from '../../src/keys.js';
import type { Decision } from '../../src/policy/evaluate.js';
import { ALLOW_LIST_ORDERS, authorityKey, FRONTEND, identity } from './helpers.js';

const authority = authorityKey(1);
const stranger = authorityKey(2);
const ISSUED = Date.parse('2026-12-01T00:00:00.000Z');
const EXPIRES = ISSUED + 300_000;
const ID = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3';

function header(constraints: CapabilityConstraints = {}, key: SigningKey = authority, tools = ['list_orders']): string {
  return encodeCapability(
    signCapability(
      {
        schema: CAPABILITY_SCHEMA,
        id: ID,
        issuer: key.kid,
        subject: 'agent',
        tools,
        issuedAt: new Date(ISSUED).toISOString(),
        expiresAt: new Date(EXPIRES).toISOString(),
        constraints,
      },
      key,
    ),
  );
}

const BOUND: CapabilityConstraints = { minimumRuntimeAssuranceTier: 'attested', workloadIdentity: identity(FRONTEND) };

function grant(overrides: Partial<GrantContext> = {}): GrantContext {
  return { now: ISSUED + 1000, tool: 'list_orders', identity: identity(FRONTEND), tier: 'attested', isRevoked: () => false, ...overrides };
}

function codeOf(value: string, ctx: GrantContext, verifier = new CapabilityVerifier({ authorities: [authority] })): string | null {
  const auth = verifier.authenticate(value);
  if (!auth.ok) return auth.failure.code;
  return checkGrant(auth.token, ctx)?.code ?? null;
}

describe('CapabilityVerifier.authenticate', () => {
  it('accepts a token of a trusted authority and caches it by header string', () => {
    const verifier = new CapabilityVerifier({ authorities: [authority] });
    const h = header(BOUND);
    const first = verifier.authenticate(h);
    expect(first.ok).toBe(true);
    expect(verifier.cacheEntries).toBe(1);
    const second = verifier.authenticate(h);
    // the very same parsed token: served from the cache, no second Ed25519 verify
    expect(second.ok && first.ok && second.token === first.token).toBe(true);
  });

  it('does not cache failures, and bounds the cache (LRU)', () => {
    const verifier = new CapabilityVerifier({ authorities: [authority], cacheSize: 2 });
    expect(verifier.authenticate(header({}, stranger)).ok).toBe(false);
    expect(verifier.cacheEntries).toBe(0);
    const a = header({});
    const b = header(BOUND);
    const c = header({}, authority, ['create_order']);
    const tokenOf = (h: string) => {
      const r = verifier.authenticate(h);
      if (!r.ok) throw new Error(r.failure.message);
      return r.token;
    };
    const ta = tokenOf(a);
    const tb = tokenOf(b);
    tokenOf(a); // a is now the most recently used
    tokenOf(c); // evicts b, the least recently used
    expect(verifier.cacheEntries).toBe(2);
    expect(tokenOf(a)).toBe(ta); // still cached
    expect(tokenOf(b)).not.toBe(tb); // verified afresh
    expect(tokenOf(b)).toEqual(tb);
  });

  it('unknown issuer, bad signature and malformed each have their code, with the id when the token decoded', () => {
    const verifier = new CapabilityVerifier({ authorities: [authority] });
    const unknown = verifier.authenticate(header({}, stranger));
    expect(unknown).toMatchObject({ ok: false, failure: { code: 'capability_unknown_issuer', message: `capability issuer ${stranger.kid} is not a trusted authority key` } });
    expect(unknown.token?.capability.id).toBe(ID);

    // the stranger's signature under the authority's kid: decodes, does not verify
    const forged = decodeCapability(header({}, stranger)).capability;
    const bad = verifier.authenticate(encodeCapability({ ...forged, issuer: authority.kid }));
    expect(bad).toMatchObject({ ok: false, failure: { code: 'capability_bad_signature' } });
    expect(bad.token?.capability.id).toBe(ID);

    const junk = verifier.authenticate('junk!');
    expect(junk).toMatchObject({ ok: false, token: null, failure: { code: 'capability_malformed' } });
  });

  it('idOf decodes without verifying; null for junk', () => {
    const verifier = new CapabilityVerifier({ authorities: [] });
    expect(verifier.idOf(header({}, stranger))).toBe(ID);
    expect(verifier.idOf('junk!')).toBeNull();
  });
});

describe('checkGrant: per-request checks, first failure wins', () => {
  it('grants the bound workload, its tool, inside the window', () => {
    expect(codeOf(header(BOUND), grant())).toBeNull();
  });

  it('time window with 30 s of skew at both ends', () => {
    const h = header(BOUND);
    expect(codeOf(h, grant({ now: ISSUED - CAPABILITY_SKEW_MS }))).toBeNull();
    expect(codeOf(h, grant({ now: ISSUED - CAPABILITY_SKEW_MS - 1 }))).toBe('capability_not_yet_valid');
    expect(codeOf(h, grant({ now: EXPIRES + CAPABILITY_SKEW_MS - 1 }))).toBeNull();
    expect(codeOf(h, grant({ now: EXPIRES + CAPABILITY_SKEW_MS }))).toBe('capability_expired');
  });

  it('revoked, tool out of scope, a request with no tool', () => {
    const h = header(BOUND);
    expect(codeOf(h, grant({ isRevoked: (id) => id === ID }))).toBe('capability_revoked');
    expect(codeOf(h, grant({ tool: 'create_order' }))).toBe('capability_tool_not_in_scope');
    expect(codeOf(h, grant({ tool: null }))).toBe('capability_tool_not_in_scope');
  });

  it.each<[string, WorkloadIdentity | null, Tier, string | null]>([
    ['the bound workload', identity(FRONTEND), 'attested', null],
    ['same ID as a JWT-SVID (a bearer token: weaker than x509_svid)', identity(FRONTEND, 'jwt_svid'), 'attested', 'capability_credential_kind_weaker'],
    ['a sibling path', identity('spiffe://example.org/ns/default/sa/backend'), 'attested', 'capability_workload_mismatch'],
    ['a child path (exact, not a prefix)', identity(`${FRONTEND}/canary`), 'attested', 'capability_workload_mismatch'],
    ['a parent path', identity('spiffe://example.org/ns/default/sa'), 'attested', 'capability_workload_mismatch'],
    ['the same path in another trust domain', identity('spiffe://other-domain.test/ns/default/sa/frontend'), 'attested', 'capability_workload_mismatch'],
    ['no identity', null, 'none', 'capability_workload_mismatch'],
    ['the bound ID, principal only (uri is weaker than x509_svid)', identity(FRONTEND, 'uri'), 'attested', 'capability_credential_kind_weaker'],
    ['another ID, principal only: the ID is checked first', identity('spiffe://example.org/ns/default/sa/backend', 'uri'), 'attested', 'capability_workload_mismatch'],
    ['the bound workload below the stamped tier', identity(FRONTEND), 'basic', 'capability_tier_insufficient'],
    ['the bound workload above the stamped tier', identity(FRONTEND), 'verified', null],
  ])('%s', (_name, presented, tier, code) => {
    expect(codeOf(header(BOUND), grant({ identity: presented, tier }))).toBe(code);
  });

  it('a capability bound to a JWT-SVID accepts the JWT-SVID and the X.509-SVID of the same ID, not the principal alone', () => {
    const jwtBound: CapabilityConstraints = { workloadIdentity: identity(FRONTEND, 'jwt_svid') };
    expect(codeOf(header(jwtBound), grant({ identity: identity(FRONTEND, 'jwt_svid') }))).toBeNull();
    expect(codeOf(header(jwtBound), grant({ identity: identity(FRONTEND, 'x509_svid') }))).toBeNull();
    expect(codeOf(header(jwtBound), grant({ identity: identity(FRONTEND, 'uri') }))).toBe('capability_credential_kind_weaker');
  });

  it('an unbound token grants any workload; a tier stamp alone still applies', () => {
    expect(codeOf(header({}), grant({ identity: null, tier: 'none' }))).toBeNull();
    expect(codeOf(header({ minimumRuntimeAssuranceTier: 'verified' }), grant({ tier: 'attested' }))).toBe('capability_tier_insufficient');
  });

  it('order: expired before revoked before tool before workload before tier', () => {
    const h = header(BOUND);
    const everythingWrong = grant({ now: EXPIRES + 60_000, isRevoked: () => true, tool: 'x', identity: null, tier: 'none' });
    expect(codeOf(h, everythingWrong)).toBe('capability_expired');
    expect(codeOf(h, { ...everythingWrong, now: ISSUED })).toBe('capability_revoked');
    expect(codeOf(h, { ...everythingWrong, now: ISSUED, isRevoked: () => false })).toBe('capability_tool_not_in_scope');
    expect(codeOf(h, { ...everythingWrong, now: ISSUED, isRevoked: () => false, tool: 'list_orders' })).toBe('capability_workload_mismatch');
  });
});

describe('capabilityStage', () => {
  const deps: CapabilityStageDeps = { verifier: new CapabilityVerifier({ authorities: [authority] }), isRevoked: () => false };
  const allow: Decision = ALLOW_LIST_ORDERS;
  const policyDeny: Decision = { ...allow, verdict: 'deny', tool: 'admin', reason: { code: 'tool_blocked', message: 'blocked' }, httpStatus: 403 };
  const presented = (id: WorkloadIdentity | null, tier: Tier = 'attested'): IdentityResult => ({ identity: id, tier, verifier: 'envoy', error: null, svid: null, tierNote: null });
  const now = ISSUED + 1000;

  it('no header: nothing to check, unless the rule requires a capability', () => {
    expect(capabilityStage(undefined, allow, presented(identity(FRONTEND)), now, deps)).toEqual({ capabilityId: null, failure: null });
    expect(capabilityStage(undefined, { ...allow, requireCapability: true }, presented(identity(FRONTEND)), now, deps)).toEqual({
      capabilityId: null,
      failure: { code: 'capability_required', message: 'rule "orders" requires a capability and none was presented' },
    });
  });

  it('a valid capability keeps the allow and records its id', () => {
    const result = capabilityStage(header(BOUND), allow, presented(identity(FRONTEND)), now, deps);
    expect(result).toEqual({ capabilityId: ID, failure: null });
    expect(applyCapabilityStage(allow, result)).toBe(allow);
  });

  it('a presented capability is verified even when the rule does not require it: a bad one denies 403, keeping rule and tool', () => {
    const result = capabilityStage(header(BOUND), allow, presented(identity('spiffe://example.org/ns/default/sa/backend')), now, deps);
    expect(result.capabilityId).toBe(ID);
    expect(result.failure?.code).toBe('capability_workload_mismatch');
    expect(applyCapabilityStage(allow, result)).toEqual({ ...allow, verdict: 'deny', reason: result.failure, httpStatus: 403 });
    expect(capabilityStage('junk', allow, presented(identity(FRONTEND)), now, deps)).toEqual({
      capabilityId: null,
      failure: { code: 'capability_malformed', message: 'capability: the decoded header is not UTF-8' },
    });
  });

  it('a policy deny wins; the receipt still gets the id of a decodable token (even an untrusted one)', () => {
    expect(capabilityStage(header({}, stranger), policyDeny, presented(identity(FRONTEND)), now, deps)).toEqual({ capabilityId: ID, failure: null });
    expect(capabilityStage('junk', policyDeny, presented(null), now, deps)).toEqual({ capabilityId: null, failure: null });
    expect(capabilityStage(undefined, { ...policyDeny, requireCapability: true }, presented(null), now, deps)).toEqual({ capabilityId: null, failure: null });
  });

  it('without configured authorities every presented token is denied', () => {
    expect(capabilityStage(header(BOUND), allow, presented(identity(FRONTEND)), now, NO_CAPABILITY_AUTHORITIES).failure?.code).toBe('capability_unknown_issuer');
  });
});
