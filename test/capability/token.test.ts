import * as ed from '@noble/ed25519';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CAPABILITY_SCHEMA,
  decodeCapability,
  encodeCapability,
  MAX_CAPABILITY_HEADER_LENGTH,
  signCapability,
  signatureValid,
  unsignedOf,
  type Capability,
  type UnsignedCapability,
} from '../../src/capability/token.js';
import { DenyError } from '../../src/errors.js';
import { jcs } from '../../src/receipt/canonical.js';
import { authorityKey, FRONTEND } from './helpers.js';

const authority = authorityKey(7);
const other = authorityKey(8);

function unsigned(overrides: Partial<UnsignedCapability> = {}): UnsignedCapability {
  return {
    schema: CAPABILITY_SCHEMA,
    id: 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3',
    issuer: authority.kid,
    subject: 'agent:orders-bot',
    tools: ['list_orders', 'create_order'],
    issuedAt: '2026-12-01T00:00:00.000Z',
    expiresAt: '2026-12-01T00:05:00.000Z',
    constraints: {
      minimumRuntimeAssuranceTier: 'attested',
      workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri: FRONTEND, trustDomain: 'example.org', path: '/ns/default/sa/frontend' },
    },
    ...overrides,
  };
}

const token = signCapability(unsigned(), authority);
const header = encodeCapability(token);

/** Malformed or not signed by `authority`: what Check does with a header, as one verdict. */
function accepted(value: string): boolean {
  try {
    return signatureValid(decodeCapability(value).capability, authority.publicKey);
  } catch (err) {
    if (err instanceof DenyError && err.code === 'capability_malformed') return false;
    throw err;
  }
}

function malformedMessage(value: string): string {
  try {
    decodeCapability(value);
  } catch (err) {
    if (err instanceof DenyError) {
      expect(err.code).toBe('capability_malformed');
      return err.message;
    }
    throw err;
  }
  throw new Error('decoded');
}

/** The header of an arbitrary JSON value (as a forger would build one). */
function headerOf(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value), 'utf8').toString('base64url');
}

describe('capability token format', () => {
  it('is the base64url of the JCS bytes of the whole token, signed over the JCS bytes without signature', async () => {
    expect(Buffer.from(header, 'base64url').toString('utf8')).toBe(jcs(token));
    expect(header).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(token.signature).toMatch(/^ed25519:[A-Za-z0-9_-]{86}$/);
    // @noble/ed25519 as the oracle: the same signature over the same bytes.
    const signed = new TextEncoder().encode(jcs(unsignedOf(token)));
    const sig = Buffer.from(token.signature.slice('ed25519:'.length), 'base64url');
    expect(await ed.verifyAsync(sig, signed, authority.publicKeyRaw)).toBe(true);
    expect(Object.keys(unsignedOf(token)).sort()).toEqual(['constraints', 'expiresAt', 'id', 'issuedAt', 'issuer', 'schema', 'subject', 'tools']);
  });

  it('decodes to the same token with its times, and verifies with the issuer key only', () => {
    const parsed = decodeCapability(header);
    expect(parsed.capability).toEqual(token);
    expect(parsed.issuedAtMs).toBe(Date.parse('2026-12-01T00:00:00.000Z'));
    expect(parsed.expiresAtMs).toBe(Date.parse('2026-12-01T00:05:00.000Z'));
    expect(signatureValid(parsed.capability, authority.publicKey)).toBe(true);
    expect(signatureValid(parsed.capability, other.publicKey)).toBe(false);
  });

  it('accepts an unbound token with empty constraints', () => {
    const plain = signCapability(unsigned({ constraints: {} }), authority);
    expect(decodeCapability(encodeCapability(plain)).capability.constraints).toEqual({});
  });

  it('refuses to sign with a key that is not the issuer (programmer error)', () => {
    expect(() => signCapability(unsigned(), other)).toThrow(TypeError);
  });
});

describe('strict decoding: capability_malformed with the first fault', () => {
  const good = JSON.parse(jcs(token)) as Record<string, unknown>;
  const resigned = (change: (c: Record<string, unknown>) => void): string => {
    const copy = JSON.parse(jcs(token)) as Record<string, unknown>;
    change(copy);
    return headerOf(jcs(copy));
  };

  it.each([
    ['', 'capability: the header is empty'],
    ['a'.repeat(MAX_CAPABILITY_HEADER_LENGTH + 1), `capability: the header is ${MAX_CAPABILITY_HEADER_LENGTH + 1} characters long; the maximum is ${MAX_CAPABILITY_HEADER_LENGTH}`],
    ['abc=', 'capability: the header is not base64url (A-Z a-z 0-9 - _, no padding)'],
    ['ab+/', 'capability: the header is not base64url (A-Z a-z 0-9 - _, no padding)'],
    ['stolen token', 'capability: the header is not base64url (A-Z a-z 0-9 - _, no padding)'],
    ['QR', 'capability: the header is not canonical base64url'],
    [Buffer.from([0xff, 0xfe, 0x7b]).toString('base64url'), 'capability: the decoded header is not UTF-8'],
    [headerOf('{"schema":'), 'capability: the decoded header is not JSON'],
    [headerOf('[]'), 'capability: Invalid input: expected object, received array'],
  ])('%j', (value, message) => {
    expect(malformedMessage(value)).toBe(message);
  });

  it('rejects a token that is not in its JCS form (whitespace, order, escapes, duplicate keys)', () => {
    const canonical = 'capability: the token is not in its canonical (RFC 8785 JCS) form';
    expect(malformedMessage(headerOf(JSON.stringify(good, null, 1)))).toBe(canonical);
    const reordered = { signature: good['signature'], ...good };
    expect(malformedMessage(headerOf(JSON.stringify(reordered)))).toBe(canonical);
    expect(malformedMessage(headerOf(jcs(token).replace('"agent:', '"\\u0061gent:')))).toBe(canonical);
    expect(malformedMessage(headerOf(jcs(token).replace('{', '{"subject":"x",')))).toBe(canonical);
  });

  it.each([
    ['unknown key', (c: Record<string, unknown>) => void (c['admin'] = true), 'capability: Unrecognized key: "admin"'],
    ['unknown constraint', (c: Record<string, unknown>) => void ((c['constraints'] as Record<string, unknown>)['maxCalls'] = 1), 'capability: constraints: Unrecognized key: "maxCalls"'],
    ['other schema', (c: Record<string, unknown>) => void (c['schema'] = 'chio.capability.v2'), 'capability: schema: Invalid input: expected "chio.capability.v1"'],
    ['bad id', (c: Record<string, unknown>) => void (c['id'] = 'rct-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3'), 'capability: id: Invalid string: must match pattern /^cap-[0-7][0-9A-HJKMNP-TV-Z]{25}$/'],
    ['no tools', (c: Record<string, unknown>) => void (c['tools'] = []), 'capability: tools: Too small: expected array to have >=1 items'],
    ['repeated tool', (c: Record<string, unknown>) => void (c['tools'] = ['a', 'a']), 'capability: tools: tools must not repeat'],
    ['time without ms', (c: Record<string, unknown>) => void (c['issuedAt'] = '2026-12-01T00:00:00Z'), 'capability: issuedAt: expected an RFC 3339 UTC time with milliseconds, e.g. 2026-12-01T00:00:00.000Z'],
    ['impossible date', (c: Record<string, unknown>) => void (c['expiresAt'] = '2026-02-30T00:00:00.000Z'), 'capability: expiresAt: not a real calendar time'],
    ['window backwards', (c: Record<string, unknown>) => void (c['expiresAt'] = '2026-11-30T00:00:00.000Z'), 'capability: expiresAt: must be after issuedAt'],
    ['bad tier', (c: Record<string, unknown>) => void ((c['constraints'] as Record<string, unknown>)['minimumRuntimeAssuranceTier'] = 'gold'), 'capability: constraints.minimumRuntimeAssuranceTier: Invalid option: expected one of "none"|"basic"|"attested"|"verified"'],
    [
      'bound uri malformed',
      (c: Record<string, unknown>) => void (((c['constraints'] as Record<string, unknown>)['workloadIdentity'] as Record<string, unknown>)['uri'] = 'spiffe://example.org/ns/../x'),
      'capability: constraints.workloadIdentity.uri: SPIFFE ID "spiffe://example.org/ns/../x": path contains a ".." segment at index 24',
    ],
    [
      'bound path disagrees with uri',
      (c: Record<string, unknown>) => void (((c['constraints'] as Record<string, unknown>)['workloadIdentity'] as Record<string, unknown>)['path'] = '/ns/default'),
      'capability: constraints.workloadIdentity.path: "/ns/default" disagrees with the path "/ns/default/sa/frontend" of uri',
    ],
    ['signature not canonical', (c: Record<string, unknown>) => void (c['signature'] = String(c['signature']).slice(0, -1) + 'B'), 'capability: signature: Invalid string: must match pattern /^ed25519:[A-Za-z0-9_-]{85}[AQgw]$/'],
  ])('%s', (_name, change, message) => {
    expect(malformedMessage(resigned(change))).toBe(message);
  });
});

describe('any single-byte change makes a token invalid (property)', () => {
  it('holds for the header string', () => {
    expect(accepted(header)).toBe(true);
    fc.assert(
      fc.property(fc.nat({ max: header.length - 1 }), fc.integer({ min: 0x20, max: 0x7e }), (index, code) => {
        fc.pre(header.charCodeAt(index) !== code);
        const changed = header.slice(0, index) + String.fromCharCode(code) + header.slice(index + 1);
        expect(accepted(changed)).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('holds for the JCS bytes the header carries', () => {
    const bytes = Buffer.from(jcs(token), 'utf8');
    fc.assert(
      fc.property(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 0, max: 255 }), (index, value) => {
        fc.pre(bytes[index] !== value);
        const changed = Buffer.from(bytes);
        changed[index] = value;
        expect(accepted(changed.toString('base64url'))).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('holds for every position of the signature, exhaustively over base64url characters', () => {
    const text = jcs(token);
    const sigStart = text.indexOf(token.signature); // ASCII: character offsets are byte offsets
    const first = Math.floor((sigStart * 4) / 3);
    const last = Math.ceil(((sigStart + token.signature.length) * 4) / 3);
    expect(last - first).toBeGreaterThan(100);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    for (let i = first; i < last; i++) {
      for (const ch of alphabet) {
        if (ch === header[i]) continue;
        expect(accepted(header.slice(0, i) + ch + header.slice(i + 1))).toBe(false);
      }
    }
  });
});

describe('decodeCapability on arbitrary input (property)', () => {
  it('never throws anything but capability_malformed, and never accepts junk', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.base64String(), fc.jsonValue().map((v) => headerOf(JSON.stringify(v) ?? 'null'))), (value) => {
        expect(accepted(value)).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  it('round-trips any token it signs', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !/[\u0000-\u001f\u007f]/.test(s)),
        fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9_]{0,20}$/), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 86_400 }),
        (subject, tools, ttl) => {
          const c: Capability = signCapability(
            unsigned({ subject, tools, constraints: {}, expiresAt: new Date(Date.parse('2026-12-01T00:00:00.000Z') + ttl * 1000).toISOString() }),
            authority,
          );
          const h = encodeCapability(c);
          expect(decodeCapability(h).capability).toEqual(c);
          expect(accepted(h)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });
});
