/**
 * Every parser that reads attacker- or operator-supplied bytes (SPEC §4, §7, §9), fed hostile
 * input: it answers with its SPECIFIC code (never a TypeError, RangeError or stack overflow,
 * never another parser's code), within a bounded time and heap growth (support/bounds.ts).
 *
 * - SPIFFE IDs (SPIFFE-ID §2): a property with an exact oracle of the standard's grammar;
 * - X.509 (X509-SVID §4, RFC 5280): Envoy's URL-encoded PEM, every truncation and every single
 *   byte flip of a fixture DER, thousands of SANs, non-UTF-8 URI SANs;
 * - JWT-SVIDs (JWT-SVID §2–§4): bad base64, huge and deeply nested headers, alg none/HS256, every
 *   single-character change of a valid token;
 * - capability tokens (SPEC §7): random headers, nesting, size, every single-character change;
 * - XFCC (Envoy x-forwarded-client-cert): random headers, and a client-written prefix never changes
 *   the element the local proxy appended;
 * - the request path normalization of the Check path;
 * - YAML, policy, config and trust bundle files: alias bombs, duplicate keys, deep nesting,
 *   oversize, random garbage.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as fc from 'fast-check';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { normalizePath, otherPathReadings } from '../../src/check/envoy.js';
import { decodeCapability } from '../../src/capability/token.js';
import { CapabilityVerifier } from '../../src/capability/verify.js';
import { parseConfig } from '../../src/config/load.js';
import { ChioError, DenyError } from '../../src/errors.js';
import { parseXfcc, trustedXfccElement } from '../../src/identity/xfcc.js';
import { keyFromSeed } from '../../src/keys.js';
import { compilePolicy } from '../../src/policy/load.js';
import { parsePemBundle, parseSpiffeBundle } from '../../src/spiffe/bundle.js';
import { SpiffeId, TrustDomain } from '../../src/spiffe/id.js';
import { JwtSvidVerifier } from '../../src/spiffe/jwt-svid.js';
import { decodeEnvoyCertificate, parseSvidLeaf, SvidCache, svidFromEnvoyCertificate, MAX_ENVOY_CERTIFICATE_LENGTH } from '../../src/spiffe/x509-svid.js';
import { FIXED_NOW, FIXTURES, fixturePem } from '../helpers/service.js';
import { createRootCa, derTlv, envoyUrlEncode, issueSvid, rawExtension } from '../helpers/test-ca.js';
import { bundleOf, contentOf } from '../spiffe/trust-helpers.js';
import { measure, MiB } from './support/bounds.js';
import { fuzzParameters } from './support/fuzz.js';
import { capabilityTokens, HARNESS_AUTHORITY_SEED } from './support/pipeline.js';
import { flipChar, hostileText, spiffeish } from './support/requests.js';

/** The code of what `fn` threw: a ChioError's code, else the error's constructor name. */
function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    if (err instanceof ChioError) return err.code;
    return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  }
}

/** Runs `fn` once, expecting `code` within `ms` and `heap` bytes of heap growth. */
function expectBounded(fn: () => unknown, code: string, bounds: { ms: number; heap: number }): void {
  const m = measure(fn);
  const got = m.error instanceof ChioError ? m.error.code : m.error === undefined ? 'ok' : String(m.error);
  expect(got).toBe(code);
  expect(m.ms).toBeLessThan(bounds.ms);
  expect(m.heapGrowth).toBeLessThan(bounds.heap);
}

const FAST = { ms: 500, heap: 32 * MiB };

// ---------------------------------------------------------------------------------------------

describe('SPIFFE IDs (SPIFFE-ID §2): malformed_spiffe_id, exactly per the grammar', () => {
  /** The standard's grammar, as a regular expression oracle (plus: no "." or ".." segment, ≤ 2048 bytes). */
  const GRAMMAR = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
  const conforms = (s: string): boolean =>
    GRAMMAR.test(s) && s.length <= 2048 && !s.split('/').slice(3).some((seg) => seg === '.' || seg === '..') && s.slice(9).split('/')[0]!.length <= 255;

  it('accepts exactly the IDs of the grammar; everything else is malformed_spiffe_id', () => {
    fc.assert(
      fc.property(fc.oneof(spiffeish, hostileText(64)), (s) => {
        const code = codeOf(() => SpiffeId.parse(s));
        expect(code).toBe(conforms(s) ? 'ok' : 'malformed_spiffe_id');
        if (code === 'ok') expect(SpiffeId.parse(s).uri).toBe(s);
      }),
      fuzzParameters('SPIFFE ID grammar', 3000),
    );
  });

  it('a 1 MiB ID, a 1 MiB trust domain, 100k segments: rejected in bounded time', () => {
    expectBounded(() => SpiffeId.parse(`spiffe://example.org/${'a'.repeat(MiB)}`), 'malformed_spiffe_id', FAST);
    expectBounded(() => TrustDomain.parse('a'.repeat(MiB)), 'malformed_spiffe_id', FAST);
    expectBounded(() => SpiffeId.parse(`spiffe://example.org${'/a'.repeat(100_000)}`), 'malformed_spiffe_id', FAST);
    const err = (() => {
      try {
        SpiffeId.parse(`spiffe://example.org/${'\u0000'.repeat(MiB)}`);
      } catch (e) {
        return e as DenyError;
      }
      return null;
    })();
    // the message quotes at most 200 characters of the input, control characters escaped
    expect(err?.message.length).toBeLessThan(200 * 6 + 200);
    expect(err?.message).not.toMatch(/[\u0000-\u001f]/);
  });
});

// ---------------------------------------------------------------------------------------------

const X509_CODES = new Set([
  'malformed_certificate',
  'malformed_spiffe_id',
  'svid_no_uri_san',
  'svid_dns_san_only',
  'svid_multiple_uri_sans',
  'svid_is_ca',
  'svid_key_usage',
]);

describe('X.509 certificates (X509-SVID §4, RFC 5280): their own codes, bounded', () => {
  const frontend = fixturePem('svid-frontend');
  const der = decodeEnvoyCertificate(frontend.envoy);

  it('Envoy-encoded PEM garbage → malformed_certificate, nothing else', () => {
    fc.assert(
      fc.property(fc.oneof(hostileText(200), flipChar(fc.constant(frontend.envoy))), (s) => {
        const code = codeOf(() => svidFromEnvoyCertificate(s));
        expect(code === 'ok' || X509_CODES.has(code), code).toBe(true);
        if (s !== frontend.envoy && codeOf(() => decodeEnvoyCertificate(s)) !== 'ok') expect(code).toBe('malformed_certificate');
      }),
      fuzzParameters('Envoy certificate text', 2000),
    );
  });

  it('every truncation of a valid DER → malformed_certificate', () => {
    for (let n = 0; n < der.length; n++) expect(codeOf(() => parseSvidLeaf(der.subarray(0, n)))).toBe('malformed_certificate');
  });

  it('every single byte flipped (wrong tags, lengths, OIDs, values): an X.509 code or a leaf, never a crash', () => {
    const seen = new Map<string, number>();
    for (let i = 0; i < der.length; i++) {
      const copy = Buffer.from(der);
      copy[i] = (copy[i] as number) ^ 0xff;
      const code = codeOf(() => parseSvidLeaf(copy));
      seen.set(code, (seen.get(code) ?? 0) + 1);
    }
    for (const code of seen.keys()) expect(code === 'ok' || X509_CODES.has(code), code).toBe(true);
    expect(seen.get('malformed_certificate')).toBeGreaterThan(0);
  });

  it('a 32 KiB + 1 source.certificate is refused before decoding, and not cached', () => {
    const cache = new SvidCache(10);
    const huge = 'A'.repeat(MAX_ENVOY_CERTIFICATE_LENGTH + 1);
    expectBounded(() => cache.get(huge), 'malformed_certificate', FAST);
    expect(cache.size).toBe(0);
  });

  it('4 MiB of PEM-looking text → malformed_certificate in bounded time', () => {
    expectBounded(() => svidFromEnvoyCertificate(`-----BEGIN%20CERTIFICATE-----%0A${'QUFB'.repeat(MiB)}`), 'malformed_certificate', FAST);
  });

  it('huge SAN lists and non-UTF-8 URI SANs: specific codes, bounded', async () => {
    const ca = await createRootCa({ trustDomain: 'example.org' });
    const manyUris = await issueSvid(ca, { uris: Array.from({ length: 2000 }, (_, i) => `spiffe://example.org/w/${i}`) });
    const manyDns = await issueSvid(ca, { uris: [], dns: Array.from({ length: 2000 }, (_, i) => `w${i}.example.org`) });
    const nonUtf8 = await issueSvid(ca, {
      uris: [],
      extensions: [rawExtension('2.5.29.17', true, derTlv(0x30, derTlv(0x86, Buffer.from('spiffe://example.org/w\xff\xfe', 'latin1'))))],
    });
    const bounds = { ms: 500, heap: 64 * MiB };
    // the DER walker (XFCC Cert, chains) reads thousands of SANs …
    expectBounded(() => parseSvidLeaf(manyUris.der), 'svid_multiple_uri_sans', bounds);
    expectBounded(() => parseSvidLeaf(manyDns.der), 'svid_dns_san_only', bounds);
    // … and Envoy's source.certificate is refused above 32 KiB before any decoding
    expect(manyUris.envoyEncoded.length).toBeGreaterThan(MAX_ENVOY_CERTIFICATE_LENGTH);
    expectBounded(() => svidFromEnvoyCertificate(manyUris.envoyEncoded), 'malformed_certificate', bounds);
    const underLimit = await issueSvid(ca, { uris: Array.from({ length: 600 }, (_, i) => `spiffe://example.org/w/${i}`) });
    expectBounded(() => svidFromEnvoyCertificate(underLimit.envoyEncoded), 'svid_multiple_uri_sans', bounds);
    expectBounded(() => svidFromEnvoyCertificate(nonUtf8.envoyEncoded), 'malformed_spiffe_id', bounds);
    // the message names the offending byte, it does not copy it
    expect(() => svidFromEnvoyCertificate(nonUtf8.envoyEncoded)).toThrowError(new DenyError('malformed_spiffe_id', 'certificate URI SAN has a non-ASCII byte 0xff at offset 22'));
    expect(envoyUrlEncode(nonUtf8.pem)).toBe(nonUtf8.envoyEncoded);
  });
});

// ---------------------------------------------------------------------------------------------

const JWT_CODES = new Set(['jwt_svid_invalid', 'jwt_svid_expired', 'jwt_svid_audience_mismatch', 'jwt_svid_alg_not_allowed', 'jwt_svid_unknown_key', 'malformed_spiffe_id']);

describe('JWT-SVIDs (JWT-SVID §2–§4): their own codes, bounded', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const bundle = bundleOf(contentOf('example.org', [], { jwt: new Map([['k1', publicKey]]) }));
  const verifier = (): JwtSvidVerifier => new JwtSvidVerifier((td) => (td === 'example.org' ? bundle : undefined), { audiences: ['chio'], leewaySeconds: 0 });
  const b64 = (s: string): string => Buffer.from(s).toString('base64url');
  const nowS = Math.floor(FIXED_NOW / 1000);

  it('random and JWT-shaped garbage → a JWT-SVID code', () => {
    const v = verifier();
    const part = fc.oneof(fc.string({ maxLength: 40 }), fc.json({ maxDepth: 3 }).map(b64), fc.constantFrom(b64('{"alg":"none"}'), b64('{"alg":"HS256","kid":"k1"}'), '', '===', 'e30'));
    fc.assert(
      fc.property(fc.oneof(hostileText(100), fc.tuple(part, part, part).map((p) => p.join('.'))), (token) => {
        const code = codeOf(() => v.verify(token, FIXED_NOW));
        expect(JWT_CODES.has(code), code).toBe(true);
      }),
      fuzzParameters('JWT-SVID garbage', 2000),
    );
  });

  it('alg none and HS256 → jwt_svid_alg_not_allowed; bad base64 → jwt_svid_invalid', () => {
    const v = verifier();
    const claims = b64(JSON.stringify({ sub: 'spiffe://example.org/w', aud: 'chio', exp: nowS + 60 }));
    expect(codeOf(() => v.verify(`${b64('{"alg":"none","kid":"k1"}')}.${claims}.`, FIXED_NOW))).toBe('jwt_svid_alg_not_allowed');
    expect(codeOf(() => v.verify(`${b64('{"alg":"none","kid":"k1"}')}.${claims}.AAAA`, FIXED_NOW))).toBe('jwt_svid_alg_not_allowed');
    expect(codeOf(() => v.verify(`${b64('{"alg":"HS256","kid":"k1"}')}.${claims}.AAAA`, FIXED_NOW))).toBe('jwt_svid_alg_not_allowed');
    expect(codeOf(() => v.verify(`e30.${claims}.A$AA`, FIXED_NOW))).toBe('jwt_svid_invalid');
    expect(codeOf(() => v.verify(`${b64('{"alg":"ES256"')}.${claims}.AAAA`, FIXED_NOW))).toBe('jwt_svid_invalid');
  });

  it('a 1 MiB header and a 100,000-deep nested header → jwt_svid_invalid in bounded time', () => {
    const v = verifier();
    expectBounded(() => v.verify(`${b64(`{"alg":"ES256","x":"${'a'.repeat(MiB)}"}`)}.e30.AAAA`, FIXED_NOW), 'jwt_svid_invalid', FAST);
    const deep = `{"alg":"ES256","kid":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    // 16 KiB is the token limit; under it, 5,000 levels must not overflow the stack either
    const deepSmall = `{"alg":"ES256","kid":"k1","x":${'['.repeat(5000)}${']'.repeat(5000)}}`;
    expectBounded(() => v.verify(`${b64(deep)}.e30.AAAA`, FIXED_NOW), 'jwt_svid_invalid', FAST);
    expectBounded(() => v.verify(`${b64(deepSmall)}.${b64('{"sub":"spiffe://example.org/w"}')}.AAAA`, FIXED_NOW), 'jwt_svid_invalid', FAST);
  });

  it('every single-character change of a valid JWT-SVID is refused with a JWT-SVID code', async () => {
    const token = await new SignJWT({ sub: 'spiffe://example.org/ns/default/sa/frontend', aud: 'chio' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'JWT' })
      .setIssuedAt(nowS - 10)
      .setExpirationTime(nowS + 300)
      .sign(privateKey);
    expect(codeOf(() => verifier().verify(token, FIXED_NOW))).toBe('ok');
    const alphabet = 'AQgw_-.xZ';
    for (let i = 0; i < token.length; i++) {
      for (const c of alphabet) {
        if (token[i] === c) continue;
        const changed = token.slice(0, i) + c + token.slice(i + 1);
        const code = codeOf(() => verifier().verify(changed, FIXED_NOW));
        // base64url has spare bits in its last character: a change there may decode to the same bytes
        if (code === 'ok') expect(Buffer.from(changed.split('.')[2] ?? '', 'base64url')).toEqual(Buffer.from(token.split('.')[2] ?? '', 'base64url'));
        else expect(JWT_CODES.has(code), `${code} at ${i}`).toBe(true);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('capability tokens (SPEC §7): capability_malformed / the verification codes, bounded', () => {
  const authority = keyFromSeed(HARNESS_AUTHORITY_SEED);
  const [valid] = capabilityTokens(authority, FIXED_NOW) as [string];

  it('random header values → capability_malformed', () => {
    fc.assert(
      fc.property(fc.oneof(hostileText(120), fc.json({ maxDepth: 4 }).map((j) => Buffer.from(j).toString('base64url'))), (header) => {
        expect(codeOf(() => decodeCapability(header))).toBe('capability_malformed');
      }),
      fuzzParameters('capability header garbage', 2000),
    );
  });

  it('every single-character change of a valid token: never accepted', () => {
    const verifier = new CapabilityVerifier({ authorities: [authority] });
    expect(verifier.authenticate(valid).ok).toBe(true);
    const codes = new Set<string>();
    for (let i = 0; i < valid.length; i++) {
      for (const c of ['A', 'B', '_', '-', 'z']) {
        if (valid[i] === c) continue;
        const result = new CapabilityVerifier({ authorities: [authority] }).authenticate(valid.slice(0, i) + c + valid.slice(i + 1));
        expect(result.ok).toBe(false);
        if (!result.ok) codes.add(result.failure.code);
      }
    }
    expect([...codes].sort()).toEqual(expect.arrayContaining(['capability_malformed']));
    for (const code of codes) expect(['capability_malformed', 'capability_unknown_issuer', 'capability_bad_signature']).toContain(code);
  });

  it('an 8 KiB + 1 header, and a 100,000-deep JSON token, are capability_malformed in bounded time', () => {
    expectBounded(() => decodeCapability('A'.repeat(8 * 1024 + 1)), 'capability_malformed', FAST);
    const deep = Buffer.from(`{"a":${'['.repeat(3000)}${']'.repeat(3000)}}`).toString('base64url');
    expectBounded(() => decodeCapability(deep), 'capability_malformed', FAST);
  });
});

// ---------------------------------------------------------------------------------------------

describe('x-forwarded-client-cert: malformed_xfcc, and the trusted element is untouchable', () => {
  const quoted = (s: string): string => `"${s.replace(/["\\]/g, '\\$&')}"`;
  const value = fc.oneof(fc.stringMatching(/^[A-Za-z0-9:/._%-]{0,40}$/), hostileText(40).map(quoted));
  const element = fc
    .array(fc.tuple(fc.constantFrom('By', 'URI', 'DNS', 'Hash', 'Subject', 'Cert'), value), { minLength: 1, maxLength: 5 })
    .map((pairs) => {
      const single = new Set<string>();
      return pairs
        .filter(([k]) => (['Hash', 'Subject', 'Cert'].includes(k) ? !single.has(k) && single.add(k) !== undefined : true))
        .map(([k, v]) => `${k}=${v}`)
        .join(';');
    });

  it('random headers → elements or malformed_xfcc, nothing else', () => {
    fc.assert(
      fc.property(fc.oneof(hostileText(200), fc.array(element, { maxLength: 4 }).map((e) => e.join(','))), (header) => {
        const code = codeOf(() => parseXfcc(header));
        expect(['ok', 'malformed_xfcc']).toContain(code);
      }),
      fuzzParameters('XFCC garbage', 3000),
    );
  });

  it('whatever a client writes before it, the last element (the local proxy’s) parses the same', () => {
    fc.assert(
      fc.property(fc.oneof(hostileText(80), element), element, (prefix, last) => {
        const alone = trustedXfccElement(last);
        const code = codeOf(() => trustedXfccElement(`${prefix},${last}`));
        if (code === 'ok') expect(trustedXfccElement(`${prefix},${last}`)).toEqual(alone);
        else expect(code).toBe('malformed_xfcc');
      }),
      fuzzParameters('XFCC prefix spoofing', 3000),
    );
  });

  it('64 KiB of quotes, escapes or elements → bounded; over 64 KiB → malformed_xfcc at once', () => {
    expectBounded(() => parseXfcc(`URI="${'\\"'.repeat(32 * 1024 - 8)}"`), 'ok', FAST);
    expectBounded(() => parseXfcc('By=a,'.repeat(13_000)), 'malformed_xfcc', FAST);
    expectBounded(() => parseXfcc(`URI="${'a'.repeat(64 * 1024)}`), 'malformed_xfcc', FAST);
    expectBounded(() => parseXfcc(';'.repeat(64 * 1024)), 'malformed_xfcc', FAST);
    expectBounded(() => parseXfcc('a'.repeat(4 * MiB)), 'malformed_xfcc', FAST);
    const err = (() => {
      try {
        parseXfcc('k'.repeat(60_000));
      } catch (e) {
        return e as DenyError;
      }
      return null;
    })();
    // the message quotes a bounded piece of the input (it ends up in a receipt)
    expect(err?.message.length).toBeLessThan(200);
  });
});

// ---------------------------------------------------------------------------------------------

describe('request path normalization (the Check path): correct and linear', () => {
  /** The straightforward RFC 3986 §6.2.2.2 decoding of unreserved escapes, as a reference. */
  const reference = (p: string): string =>
    p.replace(/%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])/g, (m) => String.fromCharCode(parseInt(m.slice(1), 16)));

  it('decodes exactly the unreserved escapes, like the reference', () => {
    const piece = fc.oneof(fc.constantFrom('%2e', '%2E', '%2f', '%41', '%7e', '%7E', '%5f', '%20', '%25', '%2d', '%30', '%3a', '%ff', '/', 'a', '.'), fc.string({ maxLength: 3 }));
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 20 }).map((a) => `/${a.join('')}`), (p) => {
        const code = codeOf(() => normalizePath(p));
        if (code !== 'ok') {
          expect(code).toBe('malformed_request');
          return;
        }
        const clean = p.replace(/[?#].*$/s, '');
        expect(normalizePath(p)).toBe(normalizePath(reference(clean).replace(/%/g, '%25').replace(/%25([0-9a-fA-F]{2})/g, '%$1')));
      }),
      fuzzParameters('path normalization', 2000),
    );
  });

  it('a 60 KiB path of escapes, slashes, dot-segments or characters to encode is normalized, with its other readings, in bounded time; a 4 MiB one is refused at once', () => {
    const bounds = { ms: 1000, heap: 256 * MiB };
    for (const piece of ['%2e', '/', '/..', '%41', './', '"', '\u00e9', '\\', '%3A;%2F/.//']) {
      const path = `/api/${piece.repeat(Math.floor((60 * 1024) / piece.length))}`;
      expectBounded(() => normalizePath(path), 'ok', bounds);
      const short = `/api/${piece.repeat(Math.floor((4 * 1024 - 16) / piece.length))}`;
      expectBounded(() => otherPathReadings(short, normalizePath(short)), 'ok', bounds);
      expectBounded(() => normalizePath(`/api/${piece.repeat(Math.floor((4 * MiB) / piece.length))}`), 'malformed_request', FAST);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('YAML, policy, config and trust bundle files: their own codes, bounded', () => {
  const policyHead = 'schema: chio.policy.v1\n';
  const bomb = (): string => {
    const names = 'abcdefghij';
    let text = `${policyHead}x0: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n`;
    for (let i = 1; i < names.length; i++) text += `x${i}: &${names[i]} [${Array(10).fill(`*${names[i - 1]}`).join(',')}]\n`;
    return text;
  };
  const SLOW = { ms: 5000, heap: 512 * MiB };

  it('an alias bomb (billion laughs) → policy_invalid / config_invalid, without expanding it', () => {
    expectBounded(() => compilePolicy(bomb(), 'p.yaml'), 'policy_invalid', FAST);
    expectBounded(() => parseConfig(bomb().replace(policyHead, 'schema: chio.config.v1\n'), 'chio.yaml', '/tmp'), 'config_invalid', FAST);
  });

  it('duplicate keys → policy_invalid naming the key and line', () => {
    expect(() => compilePolicy(`${policyHead}rules: {}\nrules: {}\n`, 'p.yaml')).toThrowError(/p\.yaml:3:1: rules: duplicate key "rules"/);
    let many = policyHead;
    for (let i = 0; i < 20_000; i++) many += `k${i}: 1\n`;
    expectBounded(() => compilePolicy(`${many}k7: 2\n`, 'p.yaml'), 'policy_invalid', { ms: 3000, heap: 256 * MiB });
  });

  it('deep nesting (flow, block) → policy_invalid, no stack overflow escapes', () => {
    for (const depth of [65, 1000, 100_000]) {
      expectBounded(() => compilePolicy(`${policyHead}rules: ${'['.repeat(depth)}${']'.repeat(depth)}\n`, 'p.yaml'), 'policy_invalid', SLOW);
      expectBounded(() => compilePolicy(`${policyHead}rules: ${'{a: '.repeat(depth)}1${'}'.repeat(depth)}\n`, 'p.yaml'), 'policy_invalid', SLOW);
    }
    let block = policyHead;
    for (let i = 0; i < 500; i++) block += `${' '.repeat(i)}k${i}:\n`;
    expectBounded(() => compilePolicy(block, 'p.yaml'), 'policy_invalid', SLOW);
  });

  it('a file over 8 MiB → policy_invalid before parsing', () => {
    expectBounded(() => compilePolicy(`${policyHead}#${'x'.repeat(8 * MiB)}\n`, 'p.yaml'), 'policy_invalid', FAST);
  });

  it('random text → policy_invalid / config_invalid, nothing else', () => {
    const yamlish = fc.oneof(
      hostileText(120),
      fc.json({ maxDepth: 3 }),
      fc.array(fc.oneof(fc.constantFrom('schema: chio.policy.v1', 'rules:', '  r:', '    default: allow', '&a', '*a', '<<: *a', '- ', '!!binary', '? ', '{', '[', '"', "'", '%YAML 1.2', '---'), hostileText(10)), { maxLength: 12 }).map((l) => l.join('\n')),
    );
    fc.assert(
      fc.property(yamlish, (text) => {
        expect(['ok', 'policy_invalid']).toContain(codeOf(() => compilePolicy(text, 'p.yaml')));
        expect(['ok', 'config_invalid']).toContain(codeOf(() => parseConfig(text, 'chio.yaml', '/tmp')));
      }),
      fuzzParameters('policy/config garbage', 1500),
    );
  });

  it('trust bundle files (PEM, SPIFFE bundle JSON): garbage → config_invalid', () => {
    const pem = readFileSync(path.join(FIXTURES, 'envoy', 'pki', 'ca.pem'), 'utf8');
    fc.assert(
      fc.property(fc.oneof(hostileText(200), flipChar(fc.constant(pem)), fc.json({ maxDepth: 4 })), (text) => {
        expect(['ok', 'config_invalid']).toContain(codeOf(() => parsePemBundle(text, 'example.org', 'bundle.pem')));
        expect(['ok', 'config_invalid']).toContain(codeOf(() => parseSpiffeBundle(text, 'example.org', 'bundle.json')));
      }),
      fuzzParameters('bundle file garbage', 1000),
    );
    // an element of keys that is not a JWK is ignored (RFC 7517 §5): a bundle with no key, in bounded time
    expectBounded(() => parseSpiffeBundle(`{"keys":${'['.repeat(100_000)}${']'.repeat(100_000)}}`, 'example.org', 'b.json'), 'ok', FAST);
    expectBounded(() => parseSpiffeBundle(`{"keys":{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`, 'example.org', 'b.json'), 'config_invalid', FAST);
  });
});
