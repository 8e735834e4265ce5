/**
 * `chio svid verify` and `chio svid verify-jwt` (src/cli/svid.ts): JSON lines, exit codes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/index.js';
import { run } from '../../src/cli/svid.js';
import type { CliIO } from '../../src/cli/io.js';
import { fakeIO } from '../helpers/cli-io.js';
import { createIntermediateCa, createRootCa, issueSvid, TEST_NOW, type TestCa } from '../helpers/test-ca.js';
import { ecKeyPair, spiffeBundleJson } from '../spiffe/trust-helpers.js';

const FIXTURES = path.resolve(import.meta.dirname, '..', 'fixtures');
const PKI = path.join(FIXTURES, 'envoy', 'pki');
const AT = '2026-12-01T00:00:00Z';
const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';

let dir: string;
let root: TestCa;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'chio-svid-cli-'));
  root = await createRootCa({ trustDomain: 'a.test' });
  const inter = await createIntermediateCa(root);
  const leaf = await issueSvid(inter, { uris: ['spiffe://a.test/der'] });
  writeFileSync(path.join(dir, 'chain.der'), Buffer.concat([leaf.der, inter.der]));
  writeFileSync(path.join(dir, 'a-root.pem'), root.pem);
  writeFileSync(path.join(dir, 'garbage.pem'), 'hello\n');
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Result {
  code: number;
  lines: Array<Record<string, unknown>>;
  stderr: string;
}

async function svid(args: string[], stdin?: string): Promise<Result> {
  const io: CliIO & { out: string; err: string } = fakeIO(dir, {}, () => TEST_NOW, stdin ?? '');
  const code = await run(args, io);
  const lines = io.out === '' ? [] : io.out.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code, lines, stderr: io.err };
}

const fixture = (name: string) => path.join(PKI, name);
const caBundle = `example.org=${fixture('ca.pem')}`;

describe('chio svid verify', () => {
  it('a chain that verifies against the bundle of its trust domain: valid, exit 0', async () => {
    expect(await svid(['verify', '--bundle', caBundle, '--at', AT, fixture('svid-frontend.pem')])).toEqual({
      code: 0,
      lines: [{ input: fixture('svid-frontend.pem'), valid: true, spiffeId: FRONTEND, trustDomain: 'example.org', error: null }],
      stderr: '',
    });
  });

  it('a SPIFFE bundle JSON works as well as PEM roots', async () => {
    const bundle = `example.org=${path.join(FIXTURES, 'trust', 'example.org.bundle.json')}`;
    expect((await svid(['verify', '--bundle', bundle, '--at', AT, fixture('svid-backend.pem')])).code).toBe(0);
  });

  it('one line per chain; an untrusted one makes it exit 1', async () => {
    const r = await svid(['verify', '--bundle', caBundle, '--at', AT, '--json', fixture('svid-frontend.pem'), fixture('svid-untrusted.pem')]);
    expect(r.code).toBe(1);
    expect(r.lines[0]?.['valid']).toBe(true);
    expect(r.lines[1]).toEqual({
      input: fixture('svid-untrusted.pem'),
      valid: false,
      spiffeId: FRONTEND,
      trustDomain: 'example.org',
      error: {
        code: 'untrusted_svid',
        message:
          'unknown issuer: the SVID "spiffe://example.org/ns/default/sa/frontend" was issued by "O=Attacker Test CA, CN=Untrusted Root CA", which is neither a root of the trust bundle of example.org nor a presented intermediate (intermediate missing?)',
      },
    });
  });

  it('without --bundle only the X509-SVID rules and validity are checked', async () => {
    expect((await svid(['verify', '--at', AT, fixture('svid-untrusted.pem')])).code).toBe(0);
    const expired = await svid(['verify', '--at', AT, fixture('svid-expired.pem')]);
    expect(expired.code).toBe(1);
    expect(expired.lines[0]?.['error']).toEqual({
      code: 'svid_expired',
      message: 'certificate expired: notAfter 2024-01-02T00:00:00.000Z is before 2026-12-01T00:00:00.000Z',
    });
    const multi = await svid(['verify', '--at', AT, fixture('svid-multi-uri.pem')]);
    expect(multi.lines[0]).toMatchObject({ valid: false, spiffeId: null, error: { code: 'svid_multiple_uri_sans' } });
  });

  it('reads a DER chain (leaf, then intermediate) and decides at the current time by default', async () => {
    const r = await svid(['verify', '--bundle', 'a.test=a-root.pem', 'chain.der']);
    expect(r).toEqual({ code: 0, lines: [{ input: 'chain.der', valid: true, spiffeId: 'spiffe://a.test/der', trustDomain: 'a.test', error: null }], stderr: '' });
  });

  it('a leaf whose trust domain has no given bundle → unknown_trust_domain', async () => {
    const r = await svid(['verify', '--bundle', 'a.test=a-root.pem', '--at', AT, fixture('svid-frontend.pem')]);
    expect(r.code).toBe(1);
    expect(r.lines[0]?.['error']).toEqual({ code: 'unknown_trust_domain', message: 'no trust bundle for trust domain example.org' });
  });

  it('a file without a certificate is an invalid input (malformed_certificate)', async () => {
    const r = await svid(['verify', 'garbage.pem']);
    expect(r.code).toBe(1);
    expect(r.lines[0]).toMatchObject({ valid: false, error: { code: 'malformed_certificate' } });
  });

  it('an unreadable chain → exit 2, the other chains are still reported', async () => {
    const r = await svid(['verify', '--at', AT, 'missing.pem', fixture('svid-frontend.pem')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('chio svid: cannot read missing.pem: ENOENT\n');
    expect(r.lines).toHaveLength(1);
  });

  it('bad usage → exit 2 with the help', async () => {
    for (const args of [
      ['verify'],
      ['verify', '--at', 'yesterday', 'x.pem'],
      ['verify', '--bundle', 'example.org', 'x.pem'],
      ['verify', '--bundle', 'Bad_TD=a-root.pem', 'x.pem'],
      ['verify', '--bundle', 'a.test=a-root.pem', '--bundle', 'a.test=a-root.pem', 'x.pem'],
      ['verify', '--nope', 'x.pem'],
    ]) {
      const r = await svid(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain('usage: chio svid verify');
    }
  });

  it('a bad bundle file → exit 2', async () => {
    const r = await svid(['verify', '--bundle', 'a.test=garbage.pem', fixture('svid-frontend.pem')]);
    expect(r).toEqual({ code: 2, lines: [], stderr: 'chio svid verify: garbage.pem: no PEM CERTIFICATE block\n' });
  });

  it('--help and the command group', async () => {
    const helpIo = fakeIO(dir);
    expect(await run(['verify', '--help'], helpIo)).toBe(0);
    expect(helpIo.out).toContain('usage: chio svid verify [--bundle TD=FILE]... [--at RFC3339] [--json] CHAIN...');
    const io = fakeIO(dir);
    expect(await main(['svid', '--help'], io)).toBe(0);
    expect(io.out).toContain('verify-jwt');
  });
});

describe('chio svid verify-jwt', () => {
  const key = ecKeyPair('k1');
  const now = TEST_NOW / 1000;
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT({ sub: 'spiffe://a.test/api', aud: 'chio', exp: now + 60, ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(key.privateKey);

  beforeAll(() => {
    writeFileSync(path.join(dir, 'a.jwks'), spiffeBundleJson([], [{ kid: 'k1', key: key.publicKey }]));
  });

  it('one line per token; exit 1 when one is invalid', async () => {
    writeFileSync(path.join(dir, 'tokens.txt'), `${await sign({})}\n\n${await sign({ exp: now - 3600 })}\n`);
    const r = await svid(['verify-jwt', '--bundle', 'a.test=a.jwks', '--audience', 'chio', 'tokens.txt']);
    expect(r.code).toBe(1);
    expect(r.lines).toEqual([
      { input: 'tokens.txt:1', valid: true, spiffeId: 'spiffe://a.test/api', trustDomain: 'a.test', error: null },
      {
        input: 'tokens.txt:3',
        valid: false,
        spiffeId: null,
        trustDomain: null,
        error: { code: 'jwt_svid_expired', message: 'JWT-SVID expired at 2030-06-15T11:00:00.000Z (leeway 30s)' },
      },
    ]);
  });

  it('reads tokens from standard input with -', async () => {
    const r = await svid(['verify-jwt', '--bundle', 'a.test=a.jwks', '--audience', 'other', '--audience', 'chio', '-'], `${await sign({})}\n`);
    expect(r).toEqual({ code: 0, lines: [{ input: '-', valid: true, spiffeId: 'spiffe://a.test/api', trustDomain: 'a.test', error: null }], stderr: '' });
  });

  it('reports the exact reason codes', async () => {
    writeFileSync(path.join(dir, 'aud.txt'), await sign({ aud: 'chio-admin' }));
    const r = await svid(['verify-jwt', '--bundle', 'a.test=a.jwks', '--audience', 'chio', '--at', '2030-06-15T12:00:00Z', 'aud.txt']);
    expect(r.lines[0]?.['error']).toEqual({ code: 'jwt_svid_audience_mismatch', message: 'JWT-SVID aud "chio-admin" does not contain "chio"' });
  });

  it('bad usage → exit 2', async () => {
    for (const args of [
      ['verify-jwt', '--audience', 'chio', 'tokens.txt'],
      ['verify-jwt', '--bundle', 'a.test=a.jwks', 'tokens.txt'],
      ['verify-jwt', '--bundle', 'a.test=a.jwks', '--audience', 'chio'],
      ['verify-jwt', '--bundle', 'a.test=a.jwks', '--audience', 'chio', '--leeway', '301', 'tokens.txt'],
    ]) {
      expect((await svid(args)).code, args.join(' ')).toBe(2);
    }
    const empty = await svid(['verify-jwt', '--bundle', 'a.test=a.jwks', '--audience', 'chio', '-'], '\n');
    expect(empty).toEqual({ code: 2, lines: [], stderr: 'chio svid: -: no token\n' });
  });
});

describe('chio svid verify-jwt TOKEN: a JWT itself, @FILE, - or a file', () => {
  // given a token itself, it read a file of that name and printed the whole bearer token in
  // `cannot read <token>: ENAMETOOLONG` (QA finding)
  const key = ecKeyPair('k2');
  const now = TEST_NOW / 1000;
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT({ sub: 'spiffe://a.test/api', aud: 'chio', exp: now + 60, ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'k2' }).sign(key.privateKey);
  const verifyJwt = (...inputs: string[]) => svid(['verify-jwt', '--bundle', 'a.test=k2.jwks', '--audience', 'chio', ...inputs]);

  beforeAll(() => {
    writeFileSync(path.join(dir, 'k2.jwks'), spiffeBundleJson([], [{ kid: 'k2', key: key.publicKey }]));
  });

  it('a token given where an option value goes (--bundle, --at, a base64 "/" in it) is never printed whole', async () => {
    const token = `${await sign({})}/x`;
    const shown = `"${token.slice(0, 12)}…"`;
    const wrongOrder = await svid(['verify-jwt', '--bundle', token, '--audience', 'chio', 'x']);
    expect(wrongOrder.stderr.split('\n')[0]).toBe(`chio svid verify-jwt: --bundle ${shown}: expected TD=FILE`);
    const at = await svid(['verify-jwt', '--bundle', 'a.test=k2.jwks', '--audience', 'chio', '--at', token, 'x']);
    expect(at.stderr).toContain(`--at ${shown} is not an RFC 3339 time`);
    const asFile = await svid(['verify-jwt', '--bundle', `a.test=${token.slice(0, -2)}`, '--audience', 'chio', 'x']);
    expect(asFile.stderr).toBe(`chio svid verify-jwt: cannot read ${shown}: ENOENT\n`);
    for (const r of [wrongOrder, at, asFile]) expect(r.stderr.includes(token.slice(20, 60))).toBe(false);
  });

  it('a token given itself is verified and reported as "argument N", never printed', async () => {
    const good = await sign({});
    const expired = await sign({ exp: now - 3600 });
    const r = await verifyJwt(good, expired);
    expect(r).toEqual({
      code: 1,
      lines: [
        { input: 'argument 1', valid: true, spiffeId: 'spiffe://a.test/api', trustDomain: 'a.test', error: null },
        { input: 'argument 2', valid: false, spiffeId: null, trustDomain: null, error: { code: 'jwt_svid_expired', message: 'JWT-SVID expired at 2030-06-15T11:00:00.000Z (leeway 30s)' } },
      ],
      stderr: '',
    });
  });

  it('@FILE reads a file of tokens; a FILE that is not JWT-shaped is still read (tokens.v1.txt too)', async () => {
    writeFileSync(path.join(dir, 'tokens.v1.txt'), `${await sign({})}\n`);
    expect(await verifyJwt('@tokens.v1.txt')).toEqual({ code: 0, lines: [{ input: '@tokens.v1.txt', valid: true, spiffeId: 'spiffe://a.test/api', trustDomain: 'a.test', error: null }], stderr: '' });
    expect((await verifyJwt('tokens.v1.txt')).lines).toEqual([{ input: 'tokens.v1.txt', valid: true, spiffeId: 'spiffe://a.test/api', trustDomain: 'a.test', error: null }]);
    expect(await verifyJwt('@missing.txt')).toEqual({ code: 2, lines: [], stderr: 'chio svid: cannot read @missing.txt: ENOENT\n' });
  });

  it('neither a JWT nor a file: exit 2 naming the argument, with at most 12 characters of it', async () => {
    const token = await sign({});
    const cut = token.slice(0, token.lastIndexOf('.')); // two parts: not a JWT
    const r = await verifyJwt('@tokens.v1.txt', cut);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.stderr).toBe(`chio svid: argument 2 ("${token.slice(0, 12)}…"): not a JWT-SVID, @FILE, - or an existing file\n`);
    expect(r.stderr).not.toContain(token.slice(0, 13));
    // a long one that was read as a file name (ENAMETOOLONG) is no different
    const long = `${cut}${'A'.repeat(300)}`;
    expect((await verifyJwt(long)).stderr).toBe(`chio svid: argument 1 ("${token.slice(0, 12)}…"): not a JWT-SVID, @FILE, - or an existing file\n`);
  });

  it('--help says so', async () => {
    const io = fakeIO(dir);
    expect(await run(['verify-jwt', '--help'], io)).toBe(0);
    expect(io.out).toContain('TOKEN is a JWT-SVID itself (reported as "argument N", the Nth TOKEN: a token is never printed),\n@FILE for a file of tokens');
  });
});
