/**
 * JWT-SVID validation (src/spiffe/jwt-svid.ts): tokens signed with jose at test time; every
 * verdict and reason code asserted exactly.
 */
import { createHmac, sign as nodeSign } from 'node:crypto';
import { SignJWT, UnsecuredJWT, base64url, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { DenyError } from '../../src/errors.js';
import {
  bearerToken,
  JwtSvidVerifier,
  MAX_NUMERIC_DATE_SECONDS,
  verifyJwtSvid,
  type JwtSvidOptions,
} from '../../src/spiffe/jwt-svid.js';
import { bundleSetOf, contentOf, ecKeyPair, rsaKeyPair, type JwtKeyPair } from './trust-helpers.js';

const NOW = Date.parse('2030-06-15T12:00:00Z');
const NOW_S = NOW / 1000;
const OPTIONS: JwtSvidOptions = { audiences: ['chio'], leewaySeconds: 30 };

const keyA = ecKeyPair('a-key-1');
const keyA384 = ecKeyPair('a-key-384', 'P-384');
const keyB = ecKeyPair('b-key-1');
const rsaA = rsaKeyPair('a-rsa');

function setup(extraA: JwtKeyPair[] = [], extraB: JwtKeyPair[] = []) {
  const jwt = (keys: JwtKeyPair[]) => new Map(keys.map((k) => [k.kid, k.publicKey]));
  return bundleSetOf(
    contentOf('a.test', [], { jwt: jwt([keyA, keyA384, rsaA, ...extraA]) }),
    contentOf('b.test', [], { jwt: jwt([keyB, ...extraB]) }),
  );
}

const lookup = (() => {
  const { set } = setup();
  return (td: string) => set.get(td);
})();

async function sign(
  key: JwtKeyPair,
  claims: JWTPayload = {},
  header: { alg?: string; kid?: string | null; typ?: string } = {},
): Promise<string> {
  const protectedHeader: Record<string, unknown> = { alg: header.alg ?? 'ES256', typ: header.typ ?? 'JWT' };
  if (header.kid !== null) protectedHeader['kid'] = header.kid ?? key.kid;
  return new SignJWT({ sub: 'spiffe://a.test/workload', aud: 'chio', exp: NOW_S + 300, iat: NOW_S - 10, ...claims })
    .setProtectedHeader(protectedHeader as { alg: string })
    .sign(key.privateKey);
}

function denyOf(run: () => unknown): DenyError {
  try {
    run();
  } catch (err) {
    if (err instanceof DenyError) return err;
    throw err;
  }
  throw new Error('expected a DenyError');
}

function expectDeny(token: string, code: string, message: string, options: JwtSvidOptions = OPTIONS, now = NOW): void {
  const err = denyOf(() => verifyJwtSvid(token, lookup, options, now));
  expect({ code: err.code, message: err.message }).toEqual({ code, message });
}

describe('JWT-SVID: valid tokens', () => {
  it('accepts an ES256 token of a.test signed by a key of the a.test bundle', async () => {
    const svid = verifyJwtSvid(await sign(keyA), lookup, OPTIONS, NOW);
    expect(svid.spiffeId.uri).toBe('spiffe://a.test/workload');
    expect(svid.kid).toBe('a-key-1');
    expect(svid.alg).toBe('ES256');
    expect(svid.audience).toEqual(['chio']);
    expect(svid.expiresAt).toBe(NOW + 300_000);
    expect(svid.issuedAt).toBe(NOW - 10_000);
    expect(svid.bundle.trustDomain).toBe('a.test');
  });

  it('accepts ES384, RS256, RS512 and PS256', async () => {
    expect(verifyJwtSvid(await sign(keyA384, {}, { alg: 'ES384' }), lookup, OPTIONS, NOW).alg).toBe('ES384');
    for (const alg of ['RS256', 'RS512', 'PS256']) {
      expect(verifyJwtSvid(await sign(rsaA, {}, { alg }), lookup, OPTIONS, NOW).alg).toBe(alg);
    }
  });

  it('accepts an aud array that contains a configured audience exactly', async () => {
    const svid = verifyJwtSvid(await sign(keyA, { aud: ['other', 'chio'] }), lookup, OPTIONS, NOW);
    expect(svid.audience).toEqual(['other', 'chio']);
  });

  it('accepts typ JOSE and no typ', async () => {
    expect(verifyJwtSvid(await sign(keyA, {}, { typ: 'JOSE' }), lookup, OPTIONS, NOW).kid).toBe('a-key-1');
    const noTyp = await new SignJWT({ sub: 'spiffe://a.test/w', aud: 'chio', exp: NOW_S + 60 })
      .setProtectedHeader({ alg: 'ES256', kid: 'a-key-1' })
      .sign(keyA.privateKey);
    expect(verifyJwtSvid(noTyp, lookup, OPTIONS, NOW).spiffeId.uri).toBe('spiffe://a.test/w');
  });

  it('tolerates an exp up to the leeway in the past', async () => {
    const token = await sign(keyA, { exp: NOW_S - 30 });
    expect(verifyJwtSvid(token, lookup, OPTIONS, NOW).expiresAt).toBe(NOW - 30_000);
  });
});

describe('JWT-SVID: rejected tokens', () => {
  it('expired → jwt_svid_expired', async () => {
    expectDeny(await sign(keyA, { exp: NOW_S - 31 }), 'jwt_svid_expired', 'JWT-SVID expired at 2030-06-15T11:59:29.000Z (leeway 30s)');
  });

  it('wrong aud → jwt_svid_audience_mismatch', async () => {
    expectDeny(await sign(keyA, { aud: 'billing' }), 'jwt_svid_audience_mismatch', 'JWT-SVID aud "billing" does not contain "chio"');
  });

  it('aud substring is never a match (chio vs chio-admin, both ways)', async () => {
    expectDeny(await sign(keyA, { aud: 'chio-admin' }), 'jwt_svid_audience_mismatch', 'JWT-SVID aud "chio-admin" does not contain "chio"');
    expectDeny(await sign(keyA, { aud: ['chi', 'chio '] }), 'jwt_svid_audience_mismatch', 'JWT-SVID aud "chi, chio " does not contain "chio"');
    expectDeny(await sign(keyA, { aud: 'chio' }), 'jwt_svid_audience_mismatch', 'JWT-SVID aud "chio" does not contain "chio-admin"', {
      audiences: ['chio-admin'],
      leewaySeconds: 30,
    });
  });

  it('missing aud → jwt_svid_invalid', async () => {
    expectDeny(await sign(keyA, { aud: undefined }), 'jwt_svid_invalid', 'JWT-SVID has no "aud" claim');
    expectDeny(await sign(keyA, { aud: [] }), 'jwt_svid_invalid', 'JWT-SVID has no "aud" claim');
  });

  it('missing exp → jwt_svid_invalid', async () => {
    expectDeny(await sign(keyA, { exp: undefined }), 'jwt_svid_invalid', 'JWT-SVID has no "exp" claim');
  });

  it('alg none → jwt_svid_alg_not_allowed', () => {
    const token = new UnsecuredJWT({ sub: 'spiffe://a.test/workload', aud: 'chio', exp: NOW_S + 60 }).encode();
    expectDeny(
      token,
      'jwt_svid_alg_not_allowed',
      'JWT-SVID alg "none" is not allowed; allowed are RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512',
    );
  });

  it('HS256 signed with the public key bytes → jwt_svid_alg_not_allowed', () => {
    const header = base64url.encode(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: 'a-key-1' }));
    const payload = base64url.encode(JSON.stringify({ sub: 'spiffe://a.test/workload', aud: 'chio', exp: NOW_S + 60 }));
    const secret = keyA.publicKey.export({ format: 'der', type: 'spki' });
    const mac = createHmac('sha256', secret).update(`${header}.${payload}`).digest();
    expectDeny(
      `${header}.${payload}.${base64url.encode(mac)}`,
      'jwt_svid_alg_not_allowed',
      'JWT-SVID alg "HS256" is not allowed; allowed are RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512',
    );
  });

  it('unknown kid → jwt_svid_unknown_key', async () => {
    expectDeny(await sign(keyA, {}, { kid: 'rotated-away' }), 'jwt_svid_unknown_key', 'JWT-SVID kid "rotated-away" is not in the JWT bundle of a.test');
  });

  it('a key of another trust domain never verifies', async () => {
    // signed by a.test's key for an ID of b.test: looked up in b.test's bundle only
    expectDeny(
      await sign(keyA, { sub: 'spiffe://b.test/impostor' }),
      'jwt_svid_unknown_key',
      'JWT-SVID kid "a-key-1" is not in the JWT bundle of b.test',
    );
    // even when b.test has a key with the same kid, a.test's signature does not verify with it
    const sameKid = ecKeyPair('a-key-1');
    const { set } = setup([], [sameKid]);
    const crossSigned = await sign(keyA, { sub: 'spiffe://b.test/impostor' });
    const err = denyOf(() => verifyJwtSvid(crossSigned, (td) => set.get(td), OPTIONS, NOW));
    expect({ code: err.code, message: err.message }).toEqual({ code: 'jwt_svid_invalid', message: 'JWT-SVID signature does not verify' });
  });

  it('no JWT keys for the trust domain → jwt_svid_unknown_key', async () => {
    expectDeny(await sign(keyA, { sub: 'spiffe://c.test/w' }), 'jwt_svid_unknown_key', 'no JWT-SVID keys for trust domain c.test');
  });

  it('no kid → jwt_svid_invalid', async () => {
    expectDeny(await sign(keyA, {}, { kid: null }), 'jwt_svid_invalid', 'JWT-SVID header has no "kid"; keys are looked up by kid');
  });

  it('sub that is not a SPIFFE ID → malformed_spiffe_id', async () => {
    expectDeny(
      await sign(keyA, { sub: 'spiffe://a.test/../admin' }),
      'malformed_spiffe_id',
      'JWT-SVID sub: SPIFFE ID "spiffe://a.test/../admin": path contains a ".." segment at index 16',
    );
    expectDeny(await sign(keyA, { sub: undefined }), 'jwt_svid_invalid', 'JWT-SVID has no "sub" claim');
  });

  it('tampered payload → jwt_svid_invalid', async () => {
    const [h, , s] = (await sign(keyA)).split('.');
    const payload = base64url.encode(JSON.stringify({ sub: 'spiffe://a.test/admin', aud: 'chio', exp: NOW_S + 60 }));
    expectDeny(`${h}.${payload}.${s}`, 'jwt_svid_invalid', 'JWT-SVID signature does not verify');
  });

  it('nbf in the future beyond the leeway → jwt_svid_invalid', async () => {
    expectDeny(await sign(keyA, { nbf: NOW_S + 31 }), 'jwt_svid_invalid', 'JWT-SVID is not valid before 2030-06-15T12:00:31.000Z (nbf, leeway 30s)');
  });

  it('typ other than JWT/JOSE → jwt_svid_invalid', async () => {
    expectDeny(await sign(keyA, {}, { typ: 'at+jwt' }), 'jwt_svid_invalid', 'JWT-SVID typ "at+jwt" must be "JWT" or "JOSE"');
  });

  it('a key that does not fit alg → jwt_svid_invalid', async () => {
    // ES256 naming the P-384 key of the bundle
    expectDeny(
      await sign(keyA, {}, { kid: 'a-key-384' }),
      'jwt_svid_invalid',
      'JWT-SVID kid "a-key-384" cannot verify it: ES256 needs an EC prime256v1 key',
    );
  });

  it('an RSA key under 2048 bits → jwt_svid_invalid', async () => {
    const weak = rsaKeyPair('weak', 1024);
    const { set } = setup([weak]);
    // jose refuses to sign with a 1024-bit key; the token is built with node:crypto
    const built = rsaToken(weak, { sub: 'spiffe://a.test/w', aud: 'chio', exp: NOW_S + 60 });
    const err = denyOf(() => verifyJwtSvid(built, (td) => set.get(td), OPTIONS, NOW));
    expect({ code: err.code, message: err.message }).toEqual({
      code: 'jwt_svid_invalid',
      message: 'JWT-SVID kid "weak" cannot verify it: RSA key of 1024 bits; at least 2048 are required',
    });
  });

  it('garbage → jwt_svid_invalid', () => {
    expectDeny('not-a-jwt', 'jwt_svid_invalid', 'JWT-SVID is not a JWS compact serialization (header.payload.signature)');
    expectDeny('a.b.c', 'jwt_svid_invalid', 'JWT-SVID header is not valid base64url JSON (Invalid Token or Protected Header formatting)');
  });
});

function rsaToken(key: JwtKeyPair, claims: JWTPayload): string {
  const header = base64url.encode(JSON.stringify({ alg: 'RS256', kid: key.kid }));
  const payload = base64url.encode(JSON.stringify(claims));
  const sig = base64url.encode(nodeSign('sha256', Buffer.from(`${header}.${payload}`), key.privateKey));
  return `${header}.${payload}.${sig}`;
}

describe('JWT-SVID: review of 2026-11-26 (each failure a specific deny, never a throw)', () => {
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  const verifier = (): JwtSvidVerifier => new JwtSvidVerifier(lookup, OPTIONS);
  const expectDenyBoth = (token: string, code: string, message: string): void => {
    expectDeny(token, code, message);
    const err = denyOf(() => verifier().verify(token, NOW));
    expect({ code: err.code, message: err.message }).toEqual({ code, message });
  };

  it('a signature part that is not base64url (length 4n+1) → jwt_svid_invalid, not a TypeError', async () => {
    const [h, p] = (await sign(keyA)).split('.');
    expectDenyBoth(`${h}.${p}.AAAAA`, 'jwt_svid_invalid', 'JWT-SVID signature is not valid base64url (RFC 7515 §5.2)');
    expectDenyBoth(`${h}.${p}.AAAA`, 'jwt_svid_invalid', 'JWT-SVID signature does not verify');
  });

  it('a NumericDate outside what a Date can hold → jwt_svid_invalid, not a RangeError', async () => {
    const range = 'is out of range (a NumericDate within ±8640000000000 seconds)';
    expectDenyBoth(await sign(keyA, { nbf: 1e13 }), 'jwt_svid_invalid', `JWT-SVID claim "nbf" ${range}`);
    expectDenyBoth(await sign(keyA, { exp: -1e13 }), 'jwt_svid_invalid', `JWT-SVID claim "exp" ${range}`);
    expectDenyBoth(await sign(keyA, { iat: -1e13 }), 'jwt_svid_invalid', `JWT-SVID claim "iat" ${range}`);
    expect(verifyJwtSvid(await sign(keyA, { exp: MAX_NUMERIC_DATE_SECONDS }), lookup, OPTIONS, NOW).expiresAt).toBe(8.64e15);
  });

  it('a sub without a path (a bare trust domain) names no workload → malformed_spiffe_id', async () => {
    expectDenyBoth(
      await sign(keyA, { sub: 'spiffe://a.test' }),
      'malformed_spiffe_id',
      'JWT-SVID sub "spiffe://a.test" has no path; a workload\'s SPIFFE ID must have one',
    );
  });

  it('a header parameter other than alg, kid and typ → jwt_svid_invalid naming it (JWT-SVID §2); crit keeps its own message', async () => {
    const only = 'a JWT-SVID header holds only alg, kid and typ (JWT-SVID §2)';
    const jku = await new SignJWT({ sub: 'spiffe://a.test/workload', aud: 'chio', exp: NOW_S + 300 })
      .setProtectedHeader({ alg: 'ES256', kid: keyA.kid, typ: 'JWT', jku: 'https://evil.example/keys' })
      .sign(keyA.privateKey);
    expectDenyBoth(jku, 'jwt_svid_invalid', `JWT-SVID header has "jku"; ${only}`);
    const [, p, sig] = (await sign(keyA)).split('.');
    expectDenyBoth(`${b64({ alg: 'ES256', kid: keyA.kid, cty: 'JWT' })}.${p}.${sig}`, 'jwt_svid_invalid', `JWT-SVID header has "cty"; ${only}`);
    expectDenyBoth(`${b64({ alg: 'ES256', kid: keyA.kid, crit: [] })}.${p}.${sig}`, 'jwt_svid_invalid', 'JWT-SVID header has "crit"; no JWS extension is understood');
  });

  it('an iat ahead of the clock beyond the leeway → jwt_svid_invalid (it would make the evidence look fresh)', async () => {
    expectDenyBoth(await sign(keyA, { iat: NOW_S + 31 }), 'jwt_svid_invalid', 'JWT-SVID was issued in the future: iat 2030-06-15T12:00:31.000Z (leeway 30s)');
    expect(verifyJwtSvid(await sign(keyA, { iat: NOW_S + 30 }), lookup, OPTIONS, NOW).issuedAt).toBe(NOW + 30_000);
  });
});

describe('bearerToken', () => {
  it('takes the token of a Bearer authorization value, scheme case-insensitive', () => {
    expect(bearerToken('Bearer abc.def.ghi')).toBe('abc.def.ghi');
    expect(bearerToken('bearer abc.def.ghi')).toBe('abc.def.ghi');
    expect(bearerToken('Basic dXNlcjpwYXNz')).toBeNull();
    expect(bearerToken('Bearer')).toBeNull();
    expect(bearerToken('Bearer a b')).toBeNull();
  });
});

describe('JwtSvidVerifier: cache per (token, bundle generation)', () => {
  it('verifies a repeated token once, re-verifies after a bundle update, and applies time checks on every use', async () => {
    const { set, index } = setup();
    let lookups = 0;
    const verifier = new JwtSvidVerifier((td) => {
      lookups++;
      return set.get(td);
    }, OPTIONS);
    const token = await sign(keyA, { exp: NOW_S + 60 });
    expect(verifier.verify(token, NOW).spiffeId.uri).toBe('spiffe://a.test/workload');
    const afterFirst = lookups;
    expect(verifier.verify(token, NOW + 1000).kid).toBe('a-key-1');
    expect(lookups).toBe(afterFirst + 1); // one freshness lookup, no re-verification
    expect(verifier.size).toBe(1);

    // rotation: a.test's JWT keys no longer hold a-key-1
    set.replace(index, [contentOf('a.test', [], { jwt: new Map([[keyA384.kid, keyA384.publicKey]]) })]);
    const err = denyOf(() => verifier.verify(token, NOW));
    expect(err.code).toBe('jwt_svid_unknown_key');

    set.replace(index, [contentOf('a.test', [], { jwt: new Map([[keyA.kid, keyA.publicKey]]) })]);
    expect(verifier.verify(token, NOW).kid).toBe('a-key-1');
    const expired = denyOf(() => verifier.verify(token, NOW + 91_000));
    expect({ code: expired.code, message: expired.message }).toEqual({
      code: 'jwt_svid_expired',
      message: 'JWT-SVID expired at 2030-06-15T12:01:00.000Z (leeway 30s)',
    });
  });

  it('caches a deny', () => {
    const { set } = setup();
    let lookups = 0;
    const verifier = new JwtSvidVerifier((td) => {
      lookups++;
      return set.get(td);
    }, OPTIONS);
    expect(denyOf(() => verifier.verify('x.y.z', NOW)).code).toBe('jwt_svid_invalid');
    expect(denyOf(() => verifier.verify('x.y.z', NOW)).code).toBe('jwt_svid_invalid');
    expect(lookups).toBe(0);
    expect(verifier.size).toBe(1);
  });

  it('rejects bad options', () => {
    const { set } = setup();
    expect(() => new JwtSvidVerifier((td) => set.get(td), { audiences: [], leewaySeconds: 0 })).toThrow(TypeError);
    expect(() => new JwtSvidVerifier((td) => set.get(td), { audiences: ['a'], leewaySeconds: 301 })).toThrow(TypeError);
  });
});
