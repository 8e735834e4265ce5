import { describe, expect, it } from 'vitest';
import type { WorkloadIdentity } from '../../src/identity/identity.js';
import { compileIdentityRequirement } from '../../src/policy/identity-requirement.js';

function identity(uri: string, credentialKind: WorkloadIdentity['credentialKind'] = 'x509_svid'): WorkloadIdentity {
  const rest = uri.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  return { scheme: 'spiffe', credentialKind, uri, trustDomain, path };
}

describe('IdentityRequirement', () => {
  const payments = compileIdentityRequirement({
    trustDomain: 'prod.chio',
    pathPrefixes: ['/payments/worker', '/payments/reconciler'],
    credentialKinds: ['x509_svid', 'jwt_svid'],
  });

  it('exposes its fields; omitted credential kinds mean all three', () => {
    expect(payments).toMatchObject({ scheme: 'spiffe', trustDomain: 'prod.chio', credentialKinds: ['x509_svid', 'jwt_svid'] });
    const any = compileIdentityRequirement({ trustDomain: null, pathPrefixes: [], credentialKinds: null });
    expect(any.credentialKinds).toEqual(['uri', 'x509_svid', 'jwt_svid']);
    expect(any.check(identity('spiffe://anything.example', 'uri'))).toBeNull();
  });

  it('accepts an identity that passes every field (segment-aware prefixes, any of)', () => {
    expect(payments.check(identity('spiffe://prod.chio/payments/worker'))).toBeNull();
    expect(payments.check(identity('spiffe://prod.chio/payments/worker/shard-3', 'jwt_svid'))).toBeNull();
    expect(payments.check(identity('spiffe://prod.chio/payments/reconciler'))).toBeNull();
  });

  it('reports the trust domain first', () => {
    expect(payments.check(identity('spiffe://staging.chio/payments/worker', 'uri'))).toEqual({
      code: 'workload_trust_domain_mismatch',
      message: 'workload trust domain is "staging.chio"; the rule requires "prod.chio"',
    });
  });

  it('reports a path under none of the prefixes, never a string prefix', () => {
    expect(payments.check(identity('spiffe://prod.chio/payments/workerX'))).toEqual({
      code: 'workload_path_mismatch',
      message: 'workload path "/payments/workerX" is under none of the required prefixes "/payments/worker", "/payments/reconciler"',
    });
    expect(payments.check(identity('spiffe://prod.chio'))).toEqual({
      code: 'workload_path_mismatch',
      message: 'workload path "" is under none of the required prefixes "/payments/worker", "/payments/reconciler"',
    });
  });

  it('lists at most five prefixes in a message', () => {
    const many = compileIdentityRequirement({ trustDomain: null, pathPrefixes: ['/a', '/b', '/c', '/d', '/e', '/f', '/g'], credentialKinds: null });
    expect(many.check(identity('spiffe://td/z'))?.message).toBe(
      'workload path "/z" is under none of the required prefixes "/a", "/b", "/c", "/d", "/e" and 2 more',
    );
  });

  it('reports a credential kind that is not listed', () => {
    expect(payments.check(identity('spiffe://prod.chio/payments/worker', 'uri'))).toEqual({
      code: 'workload_credential_kind_not_allowed',
      message: 'credential kind "uri" is not allowed; the rule allows x509_svid, jwt_svid',
    });
  });

  it('reports a scheme other than spiffe', () => {
    const odd = { ...identity('spiffe://prod.chio/payments/worker'), scheme: 'https' } as unknown as WorkloadIdentity;
    expect(payments.check(odd)).toEqual({
      code: 'workload_scheme_mismatch',
      message: 'workload identity scheme is "https"; the rule requires "spiffe"',
    });
  });
});
