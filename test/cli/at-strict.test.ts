/**
 * `--at` of `chio svid verify|verify-jwt` and `chio capability inspect|verify` is read by the
 * strict parseRfc3339 of src/receipt/query.ts: an impossible date (Feb 30) or hour 24 is a usage
 * error naming the option (exit 2), never rolled over into March or the next day.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run as capability } from '../../src/cli/capability.js';
import { run as svid } from '../../src/cli/svid.js';
import { decodeCapability } from '../../src/capability/token.js';
import { generateSeedFile, type SigningKey } from '../../src/keys.js';
import { capture, fakeIO } from '../helpers/cli-io.js';

const NOW = Date.parse('2026-12-01T00:00:00.000Z');
const IMPOSSIBLE = ['2027-02-30T00:00:00Z', '2026-11-30T24:00:00Z', '2026-04-31T00:00:00Z'];

let cwd: string;
let authority: SigningKey;
let token: string;

const cap = (args: string[]) => capture(capability, args, fakeIO(cwd, {}, () => NOW));

beforeAll(async () => {
  cwd = mkdtempSync(join(tmpdir(), 'chio-cli-at-'));
  authority = generateSeedFile(join(cwd, 'authority.seed'));
  const r = await cap(['issue', '--authority-seed', 'authority.seed', '--subject', 'bot', '--tool', 'list_orders', '--ttl', '1d']);
  expect(r.code).toBe(0);
  token = r.out.trim();
});
afterAll(() => {
  rmSync(cwd, { recursive: true, force: true });
});

const message = (at: string) => `--at ${JSON.stringify(at)} is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)`;

describe('--at refuses impossible dates and times (exit 2, the option named)', () => {
  it.each(IMPOSSIBLE)('chio svid verify and verify-jwt --at %s', async (at) => {
    const chain = await capture(svid, ['verify', '--at', at, 'chain.pem'], fakeIO(cwd, {}, () => NOW));
    expect(chain.code).toBe(2);
    expect(chain.out).toBe('');
    expect(chain.err.startsWith(`chio svid verify: ${message(at)}\n\nusage: chio svid verify `)).toBe(true);
    const jwt = await capture(svid, ['verify-jwt', '--audience', 'a', '--at', at, 'token.txt'], fakeIO(cwd, {}, () => NOW));
    expect(jwt.code).toBe(2);
    expect(jwt.err.startsWith(`chio svid verify-jwt: ${message(at)}\n\nusage: chio svid verify-jwt `)).toBe(true);
  });

  it.each(IMPOSSIBLE)('chio capability inspect and verify --at %s', async (at) => {
    const inspect = await cap(['inspect', token, '--at', at]);
    expect(inspect.code).toBe(2);
    expect(inspect.out).toBe('');
    expect(inspect.err.startsWith(`chio capability inspect: ${message(at)}\n\nusage: chio capability inspect`)).toBe(true);
    const verify = await cap(['verify', token, '--authority-pub', authority.publicKeyRaw.toString('hex'), '--at', at]);
    expect(verify.code).toBe(2);
    expect(verify.out).toBe('');
    expect(verify.err.startsWith(`chio capability verify: ${message(at)}\n\nusage: chio capability verify`)).toBe(true);
  });

  it('a real date still decides (lower-case t and z, an offset, a leap day)', async () => {
    const r = await cap(['inspect', token, '--json', '--at', '2026-12-01t01:00:00+01:00']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as { window: { at: string; status: string } }).window).toMatchObject({ at: '2026-12-01T00:00:00.000Z', status: 'within window' });
    const leap = await cap(['verify', token, '--authority-pub', authority.publicKeyRaw.toString('hex'), '--at', '2028-02-29T00:00:00Z']);
    expect(leap).toEqual({ code: 1, out: `invalid: capability_expired: capability ${decodeCapability(token).capability.id} expired at 2026-12-02T00:00:00.000Z\n`, err: '' });
  });
});

describe('chio capability issue --ttl', () => {
  it('--help lists the d unit the parser accepts; 1d is 86400 s', async () => {
    const help = await cap(['issue', '--help']);
    expect(help.out).toContain('  --ttl DURATION                   lifetime: 300s, 5m, 1h, 1d or plain seconds (at most 7 days)\n');
    const c = decodeCapability(token).capability;
    expect([c.issuedAt, c.expiresAt]).toEqual(['2026-12-01T00:00:00.000Z', '2026-12-02T00:00:00.000Z']);
    const bad = await cap(['issue', '--authority-seed', 'authority.seed', '--subject', 'bot', '--tool', 't', '--ttl', '1w']);
    expect(bad.code).toBe(2);
    expect(bad.err.startsWith('chio capability issue: --ttl "1w" is not a duration (e.g. 300s, 5m, 1h)\n\nusage: chio capability issue')).toBe(true);
  });
});
