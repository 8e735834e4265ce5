import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { issueCapability, MAX_CAPABILITY_TTL_SECONDS, type IssuanceContext } from '../../src/capability/issue.js';
import { decodeCapability, signatureValid } from '../../src/capability/token.js';
import { ChioError } from '../../src/errors.js';
import { compilePolicy } from '../../src/policy/load.js';
import { attestation, authorityKey, fixturePolicy, FRONTEND, readFixtureJson } from './helpers.js';

const authority = authorityKey(3);
const NOW = Date.parse('2026-12-01T00:00:00.000Z');
const policy = fixturePolicy();
const ctx: IssuanceContext = { authority, policy, now: NOW, newId: () => 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3' };

function refusal(body: unknown, context: IssuanceContext = ctx): { field: string | undefined; message: string } {
  try {
    issueCapability(body, context);
  } catch (err) {
    if (err instanceof ChioError && err.code === 'issuance_refused') return { field: err.field, message: err.message };
    throw err;
  }
  throw new Error('issued');
}

const request = (overrides: Record<string, unknown> = {}) => ({ subject: 'agent:orders-bot', tools: ['list_orders'], ttlSeconds: 300, ...overrides });

describe('issueCapability: what is issued', () => {
  it('without an attestation: unbound, no tier stamp, signed and decodable', () => {
    const issued = issueCapability(request({ tools: ['list_orders', 'create_order', 'list_orders'] }), ctx);
    expect(issued.capability).toEqual({
      schema: 'chio.capability.v1',
      id: 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3',
      issuer: authority.kid,
      subject: 'agent:orders-bot',
      tools: ['list_orders', 'create_order'],
      issuedAt: '2026-12-01T00:00:00.000Z',
      expiresAt: '2026-12-01T00:05:00.000Z',
      constraints: {},
      signature: issued.capability.signature,
    });
    expect(issued.attestation).toBeNull();
    const decoded = decodeCapability(issued.token).capability;
    expect(decoded).toEqual(issued.capability);
    expect(signatureValid(decoded, authority.publicKey)).toBe(true);
  });

  it('raw evidence lands at attested and binds the workload', () => {
    const issued = issueCapability(request({ runtimeAttestation: attestation(NOW) }), ctx);
    expect(issued.capability.constraints).toEqual({
      minimumRuntimeAssuranceTier: 'attested',
      workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri: FRONTEND, trustDomain: 'example.org', path: '/ns/default/sa/frontend' },
    });
    expect(issued.attestation).toEqual({ tier: 'attested', trustedVerifier: null, note: null });
  });

  it('a trusted_verifiers match promotes to its effective tier', () => {
    const issued = issueCapability(request({ runtimeAttestation: attestation(NOW, FRONTEND, { verifier: 'https://spire.test' }) }), ctx);
    expect(issued.capability.constraints.minimumRuntimeAssuranceTier).toBe('verified');
    expect(issued.attestation).toEqual({ tier: 'verified', trustedVerifier: 'spire_test', note: null });
  });

  it.each([
    ['another verifier family', { verifier: 'https://spire.test', verifierFamily: 'tpm' }],
    ['an attestation type the entry does not allow', {
      verifier: 'https://spire.test',
      attestationType: 'jwt_svid',
      evidenceSchema: 'chio.runtime-attestation.spiffe.jwt-svid.v1',
      workloadIdentity: { scheme: 'spiffe', credentialKind: 'jwt_svid', uri: FRONTEND, trustDomain: 'example.org', path: '/ns/default/sa/frontend' },
    }],
  ])('no promotion for %s', (_name, overrides) => {
    expect(issueCapability(request({ runtimeAttestation: attestation(NOW, FRONTEND, overrides) }), ctx).attestation?.tier).toBe('attested');
  });

  it('evidence older than max_evidence_age_seconds is not promoted: it stays attested (the highest tier it satisfies)', () => {
    const aged = compilePolicy(
      `schema: chio.policy.v1
extensions:
  runtime_assurance:
    trusted_verifiers:
      spire_test: { schema: chio.runtime-attestation.spiffe.x509-svid.v1, verifier: https://spire.test, effective_tier: verified, max_evidence_age_seconds: 120 }
`,
      'aged.yaml',
    );
    const fresh = attestation(NOW, FRONTEND, { verifier: 'https://spire.test', issuedAt: new Date(NOW - 120_000).toISOString() });
    const old = attestation(NOW, FRONTEND, { verifier: 'https://spire.test', issuedAt: new Date(NOW - 121_000).toISOString() });
    const noTools = { ...ctx, policy: { ...aged, toolNames: new Set(['list_orders']) } };
    expect(issueCapability(request({ runtimeAttestation: fresh }), noTools).attestation?.tier).toBe('verified');
    const demoted = issueCapability(request({ runtimeAttestation: old }), noTools).attestation;
    expect(demoted?.tier).toBe('attested');
    expect(demoted?.note).toMatch(/^X\.509-SVID is 121s old .* trusted verifier spire_test accepts at most 120s$/);
  });

  it('runtimeIdentity alone binds the workload with the attestation type as credential kind', () => {
    const att = attestation(NOW);
    delete att['workloadIdentity'];
    expect(issueCapability(request({ runtimeAttestation: att }), ctx).capability.constraints.workloadIdentity).toEqual({
      scheme: 'spiffe',
      credentialKind: 'x509_svid',
      uri: FRONTEND,
      trustDomain: 'example.org',
      path: '/ns/default/sa/frontend',
    });
  });

  it('issues under the attested ceiling up to its TTL and tools; verified allows any tool (invoke)', () => {
    expect(issueCapability(request({ ttlSeconds: 600, tools: ['transfer_funds'], runtimeAttestation: attestation(NOW) }), ctx).capability.tools).toEqual(['transfer_funds']);
    const verified = attestation(NOW, FRONTEND, { verifier: 'https://spire.test' });
    expect(issueCapability(request({ tools: ['admin'], runtimeAttestation: verified }), ctx).capability.tools).toEqual(['admin']);
  });

  it('without a policy: any tool name, no ceilings, no promotion', () => {
    const evidence = attestation(NOW, FRONTEND, { verifier: 'https://spire.test', expiresAt: '2026-12-03T00:00:00Z' });
    const issued = issueCapability(request({ tools: ['anything'], ttlSeconds: 86_400, runtimeAttestation: evidence }), { ...ctx, policy: null });
    expect(issued.attestation?.tier).toBe('attested');
    expect(issued.capability.expiresAt).toBe('2026-12-02T00:00:00.000Z');
    expect(issued.expiryCappedBy).toBeNull();
  });

  it('a capability bound to an attestation expires no later than the attestation: the TTL is cut to its expiresAt', () => {
    // the helper's evidence expires at NOW + 1 h
    const long = issueCapability(request({ ttlSeconds: 600, runtimeAttestation: attestation(NOW, FRONTEND, { expiresAt: '2026-12-01T00:04:00.5Z' }) }), ctx);
    expect([long.capability.issuedAt, long.capability.expiresAt, long.expiryCappedBy]).toEqual([
      '2026-12-01T00:00:00.000Z',
      '2026-12-01T00:04:00.500Z',
      'runtimeAttestation.expiresAt',
    ]);
    expect(decodeCapability(long.token).expiresAtMs).toBe(Date.parse('2026-12-01T00:04:00.500Z'));
    const short = issueCapability(request({ ttlSeconds: 300, runtimeAttestation: attestation(NOW) }), ctx);
    expect([short.capability.expiresAt, short.expiryCappedBy]).toEqual(['2026-12-01T00:05:00.000Z', null]);
    // exactly at the attestation's expiry: not cut
    const equal = issueCapability(request({ ttlSeconds: 240, runtimeAttestation: attestation(NOW, FRONTEND, { expiresAt: '2026-12-01T00:04:00Z' }) }), ctx);
    expect([equal.capability.expiresAt, equal.expiryCappedBy]).toEqual(['2026-12-01T00:04:00.000Z', null]);
    expect(issueCapability(request({ ttlSeconds: 600 }), ctx).expiryCappedBy).toBeNull();
  });
});

describe('issueCapability: refusals name the field, nothing is issued', () => {
  it.each<[string, unknown, string, string]>([
    ['not an object', 'x', '(request)', '(request): Invalid input: expected object, received string'],
    ['unknown key', request({ admin: true }), 'admin', 'admin: unknown key'],
    ['missing subject', { tools: ['list_orders'], ttlSeconds: 60 }, 'subject', 'subject: Invalid input: expected string, received undefined'],
    ['empty subject', request({ subject: '' }), 'subject', 'subject: must not be empty'],
    ['control character in subject', request({ subject: 'a\nb' }), 'subject', 'subject: must not contain control characters'],
    ['no tools', request({ tools: [] }), 'tools', 'tools: at least one tool'],
    ['bad tool name', request({ tools: ['list orders'] }), 'tools.0', 'tools.0: a tool name must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'],
    ['tool the policy does not define', request({ tools: ['list_order'] }), 'tools', 'tools: tool "list_order" is not defined by the policy'],
    ['zero TTL', request({ ttlSeconds: 0 }), 'ttlSeconds', 'ttlSeconds: Too small: expected number to be >=1'],
    ['fractional TTL', request({ ttlSeconds: 1.5 }), 'ttlSeconds', 'ttlSeconds: Invalid input: expected int, received number'],
    ['TTL above the hard maximum', request({ ttlSeconds: MAX_CAPABILITY_TTL_SECONDS + 1 }), 'ttlSeconds', `ttlSeconds: Too big: expected number to be <=${MAX_CAPABILITY_TTL_SECONDS}`],
  ])('%s', (_name, body, field, message) => {
    expect(refusal(body)).toEqual({ field, message });
  });

  it('TTL above the ceiling of the resolved tier', () => {
    expect(refusal(request({ ttlSeconds: 601, runtimeAttestation: attestation(NOW) }))).toEqual({
      field: 'ttlSeconds',
      message: 'ttlSeconds: 601s is longer than extensions.runtime_assurance.tiers.attested.max_scope.ttl_seconds 600s',
    });
    expect(refusal(request({ ttlSeconds: 301, runtimeAttestation: attestation(NOW, FRONTEND, { verifier: 'https://spire.test' }) }))).toEqual({
      field: 'ttlSeconds',
      message: 'ttlSeconds: 301s is longer than extensions.runtime_assurance.tiers.verified.max_scope.ttl_seconds 300s',
    });
  });

  it('a tool outside max_scope.operations of the resolved tier', () => {
    expect(refusal(request({ tools: ['list_orders', 'admin'], runtimeAttestation: attestation(NOW) }))).toEqual({
      field: 'tools',
      message: 'tools: tool "admin" is not in extensions.runtime_assurance.tiers.attested.max_scope.operations [list_orders, create_order, transfer_funds]',
    });
  });

  it('a tier without an entry is capped by the max_scope of the nearest tier above with one (never wider than it)', () => {
    // the fixture has attested (600 s, three tools) and verified (300 s, invoke), no none entry
    expect(refusal(request({ ttlSeconds: 601 }))).toEqual({
      field: 'ttlSeconds',
      message:
        'ttlSeconds: 601s is longer than extensions.runtime_assurance.tiers.attested.max_scope.ttl_seconds 600s (tier none has no entry: the nearest tier above with one caps it)',
    });
    expect(refusal(request({ tools: ['admin'] }))).toEqual({
      field: 'tools',
      message:
        'tools: tool "admin" is not in extensions.runtime_assurance.tiers.attested.max_scope.operations [list_orders, create_order, transfer_funds] (tier none has no entry: the nearest tier above with one caps it)',
    });
    expect(issueCapability(request({ ttlSeconds: 600, tools: ['transfer_funds'] }), ctx).capability.tools).toEqual(['transfer_funds']);
    // SPEC §5's example: only verified has an entry; its minimum_attestation_tier is its own, not inherited
    const specExample = compilePolicy(
      `schema: chio.policy.v1
tools: { list_orders: [ { path_prefix: /api } ], admin: [ { path_prefix: /admin } ] }
extensions: { runtime_assurance: { tiers: { verified: { minimum_attestation_tier: verified, max_scope: { operations: [invoke], ttl_seconds: 300 } } } } }
`,
      'spec-example.yaml',
    );
    const spec = { ...ctx, policy: specExample };
    expect(issueCapability(request({ ttlSeconds: 300, tools: ['admin'] }), spec).capability.constraints).toEqual({});
    expect(refusal(request({ ttlSeconds: 301 }), spec).message).toBe(
      'ttlSeconds: 301s is longer than extensions.runtime_assurance.tiers.verified.max_scope.ttl_seconds 300s (tier none has no entry: the nearest tier above with one caps it)',
    );
    expect(refusal(request({ ttlSeconds: 301, runtimeAttestation: attestation(NOW) }), spec).message).toBe(
      'ttlSeconds: 301s is longer than extensions.runtime_assurance.tiers.verified.max_scope.ttl_seconds 300s (tier attested has no entry: the nearest tier above with one caps it)',
    );
    // no entry at or above the tier: only the 7-day maximum
    const lowOnly = compilePolicy(
      `schema: chio.policy.v1
tools: { list_orders: [ { path_prefix: /api } ] }
extensions: { runtime_assurance: { tiers: { none: { max_scope: { ttl_seconds: 60 } } } } }
`,
      'low-only.yaml',
    );
    const evidence = attestation(NOW, FRONTEND, { expiresAt: '2026-12-09T00:00:00Z' }); // attested: no entry at or above it
    expect(refusal(request({ ttlSeconds: 61 }), { ...ctx, policy: lowOnly }).field).toBe('ttlSeconds');
    expect(issueCapability(request({ ttlSeconds: MAX_CAPABILITY_TTL_SECONDS, runtimeAttestation: evidence }), { ...ctx, policy: lowOnly }).capability.expiresAt).toBe(
      '2026-12-08T00:00:00.000Z',
    );
  });

  it('a tier below the minimum_attestation_tier of its entry', () => {
    const strict = compilePolicy(
      `schema: chio.policy.v1
tools: { list_orders: [ { path_prefix: /api } ] }
extensions: { runtime_assurance: { tiers: { attested: { minimum_attestation_tier: verified }, none: { minimum_attestation_tier: attested } } } }
`,
      'strict.yaml',
    );
    expect(refusal(request({ runtimeAttestation: attestation(NOW) }), { ...ctx, policy: strict })).toEqual({
      field: 'runtimeAttestation',
      message: 'runtimeAttestation: the evidence reaches tier attested; extensions.runtime_assurance.tiers.attested needs minimum_attestation_tier verified',
    });
    expect(refusal(request(), { ...ctx, policy: strict })).toEqual({
      field: 'runtimeAttestation',
      message: 'runtimeAttestation: the evidence reaches tier none; extensions.runtime_assurance.tiers.none needs minimum_attestation_tier attested',
    });
  });

  const wi = (overrides: Record<string, unknown>) => ({
    workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri: FRONTEND, trustDomain: 'example.org', path: '/ns/default/sa/frontend', ...overrides },
  });

  it.each<[string, Record<string, unknown>, string, string]>([
    ['malformed workloadIdentity.uri (..)', { ...wi({ uri: 'spiffe://example.org/ns/../x', path: '/ns/../x' }), runtimeIdentity: undefined }, 'runtimeAttestation.workloadIdentity.uri', 'SPIFFE ID "spiffe://example.org/ns/../x": path contains a ".." segment at index 24'],
    ['malformed workloadIdentity.uri (upper-case trust domain)', wi({ uri: 'spiffe://Example.org/x', trustDomain: 'Example.org', path: '/x' }), 'runtimeAttestation.workloadIdentity.uri', 'SPIFFE ID "spiffe://Example.org/x": trust domain contains an upper-case letter "E" at index 9'],
    ['malformed runtimeIdentity', { runtimeIdentity: 'spiffe://example.org/ns/default/sa/frontend/' }, 'runtimeAttestation.runtimeIdentity', 'SPIFFE ID "spiffe://example.org/ns/default/sa/frontend/": path ends with "/" at index 43 (no trailing slash)'],
    ['non-SPIFFE runtimeIdentity', { runtimeIdentity: 'https://example.org/ns/default/sa/frontend' }, 'runtimeAttestation.runtimeIdentity', 'SPIFFE ID "https://example.org/ns/default/sa/frontend": scheme "https" is not "spiffe"'],
    ['workloadIdentity.trustDomain disagreeing with its uri', wi({ trustDomain: 'other.org' }), 'runtimeAttestation.workloadIdentity.trustDomain', '"other.org" disagrees with the trust domain "example.org" of uri'],
    ['workloadIdentity.path disagreeing with its uri', wi({ path: '/ns/default' }), 'runtimeAttestation.workloadIdentity.path', '"/ns/default" disagrees with the path "/ns/default/sa/frontend" of uri'],
    ['runtimeIdentity in another trust domain', { runtimeIdentity: 'spiffe://other-domain.test/ns/default/sa/frontend' }, 'runtimeAttestation.workloadIdentity.trustDomain', '"example.org" disagrees with the trust domain "other-domain.test" of runtimeIdentity'],
    ['runtimeIdentity with another path', { runtimeIdentity: 'spiffe://example.org/ns/default/sa/backend' }, 'runtimeAttestation.workloadIdentity.path', '"/ns/default/sa/frontend" disagrees with the path "/ns/default/sa/backend" of runtimeIdentity'],
    ['a scheme other than spiffe', wi({ scheme: 'https' }), 'runtimeAttestation.workloadIdentity.scheme', 'unsupported scheme "https": only "spiffe"'],
    ['neither workloadIdentity nor runtimeIdentity', { workloadIdentity: undefined, runtimeIdentity: undefined }, 'runtimeAttestation.workloadIdentity', 'an attestation needs workloadIdentity or runtimeIdentity'],
    ['a credential kind other than the attestation type', wi({ credentialKind: 'uri' }), 'runtimeAttestation.workloadIdentity.credentialKind', 'uri disagrees with attestationType x509_svid (the credential the evidence is about)'],
    ['an evidence schema of the other type', { evidenceSchema: 'chio.runtime-attestation.spiffe.jwt-svid.v1' }, 'runtimeAttestation.evidenceSchema', 'chio.runtime-attestation.spiffe.jwt-svid.v1 is not the evidence schema of attestationType x509_svid'],
    ['expired evidence', { expiresAt: '2026-11-30T23:59:59Z' }, 'runtimeAttestation.expiresAt', 'the evidence expired at 2026-11-30T23:59:59Z'],
    ['evidence from the future', { issuedAt: '2026-12-01T00:01:00Z' }, 'runtimeAttestation.issuedAt', '2026-12-01T00:01:00Z is in the future'],
    ['expiresAt before issuedAt', { issuedAt: '2026-11-30T00:00:00Z', expiresAt: '2026-11-29T00:00:00Z' }, 'runtimeAttestation.expiresAt', '2026-11-29T00:00:00Z is not after issuedAt 2026-11-30T00:00:00Z'],
    ['another attestation schema', { schema: 'chio.runtime-attestation.v2' }, 'runtimeAttestation.schema', 'Invalid input: expected "chio.runtime-attestation.v1"'],
    ['an unknown key', { nonce: 'x' }, 'runtimeAttestation.nonce', 'unknown key'],
    ['a bad evidence hash', { evidenceSha256: 'AB'.repeat(32) }, 'runtimeAttestation.evidenceSha256', 'expected 64 lower-case hex digits'],
    ['a time without zone', { issuedAt: '2026-11-30T23:59:00' }, 'runtimeAttestation.issuedAt', 'expected an RFC 3339 time, e.g. 2026-12-01T00:00:00Z'],
    ['a day that does not exist (read as 2 March by Date.parse)', { expiresAt: '2027-02-30T00:00:00Z' }, 'runtimeAttestation.expiresAt', 'not a real time'],
    ['an hour that does not exist', { issuedAt: '2026-11-30T24:00:00Z' }, 'runtimeAttestation.issuedAt', 'not a real time'],
  ])('%s', (_name, overrides, field, message) => {
    expect(refusal(request({ runtimeAttestation: attestation(NOW, FRONTEND, overrides) }))).toEqual({ field, message: `${field}: ${message}` });
  });

  it('the attestation fixtures of the CLI tests are refused with their fields', () => {
    const at = { ...ctx, now: Date.parse('2026-12-01T00:00:00Z') };
    expect(refusal(request({ runtimeAttestation: readFixtureJson('attestation-conflict-trust-domain.json') }), at).field).toBe('runtimeAttestation.workloadIdentity.trustDomain');
    expect(refusal(request({ runtimeAttestation: readFixtureJson('attestation-malformed-uri.json') }), at).field).toBe('runtimeAttestation.workloadIdentity.uri');
    expect(issueCapability(request({ runtimeAttestation: readFixtureJson('attestation-frontend.json') }), at).attestation?.tier).toBe('attested');
    expect(issueCapability(request({ runtimeAttestation: readFixtureJson('attestation-frontend-verified.json') }), at).attestation?.tier).toBe('verified');
  });

  it('refuses a token too large for the header', () => {
    const many = compilePolicy(
      `schema: chio.policy.v1\ntools:\n${Array.from({ length: 64 }, (_, i) => `  ${'t'.repeat(100)}${i}: [ { path_prefix: /x } ]`).join('\n')}\n`,
      'many.yaml',
    );
    const tools = [...many.toolNames];
    const r = refusal(request({ tools }), { ...ctx, policy: many });
    expect(r.field).toBe('tools');
    expect(r.message).toMatch(/^tools: the capability would be \d+ characters long; a header holds at most 8192$/);
  });

  it('a SPIFFE ID that fails parsing is always refused, whatever it is (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (suffix) => {
        const uri = `spiffe://example.org/${suffix}`;
        let valid = true;
        try {
          issueCapability(request({ runtimeAttestation: attestation(NOW, uri) }), ctx);
        } catch (err) {
          if (!(err instanceof ChioError) || err.code !== 'issuance_refused') throw err;
          valid = false;
          expect(err.field).toMatch(/^runtimeAttestation\.(workloadIdentity\.(uri|path)|runtimeIdentity)$/);
        }
        expect(valid).toBe(/^([A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*|[A-Za-z0-9._-]{3,})(\/([A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*|[A-Za-z0-9._-]{3,}))*$/.test(suffix));
      }),
      { numRuns: 500 },
    );
  });
});
