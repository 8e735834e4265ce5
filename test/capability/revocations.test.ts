import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseRevocations, RevocationList } from '../../src/capability/revocations.js';
import { ChioError } from '../../src/errors.js';
import { recordingLogger } from '../helpers/service.js';

const A = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3';
const B = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z4';
const C = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z5';
const NOW = Date.parse('2026-12-01T00:00:00.000Z');

let dir: string;
let lists: RevocationList[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'chio-revocations-'));
  lists = [];
});
afterEach(async () => {
  await Promise.all(lists.map((l) => l.close()));
  rmSync(dir, { recursive: true, force: true });
});

function open(file: string | null, pollIntervalMs = 60_000, useFsWatch = true) {
  const log = recordingLogger();
  const list = RevocationList.open(file, { log, pollIntervalMs, debounceMs: 10, useFsWatch });
  lists.push(list);
  return { list, log };
}

async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function parseError(text: string): string {
  try {
    parseRevocations(text, 'rev.jsonl');
  } catch (err) {
    if (err instanceof ChioError) {
      expect(err.code).toBe('config_invalid');
      return err.message;
    }
    throw err;
  }
  throw new Error('parsed');
}

describe('parseRevocations', () => {
  it('reads bare ids, JSON lines, comments and blank lines; the first entry of an id wins', () => {
    const list = parseRevocations(
      `# revoked by hand\n${A}\n\n  {"id":"${B}","reason":"key leaked","revokedAt":"2026-12-01T00:00:00.000Z"}\r\n{"id":"${A}","reason":"again"}\n`,
      'rev.jsonl',
    );
    expect([...list.values()]).toEqual([
      { id: A, reason: null, revokedAt: null },
      { id: B, reason: 'key leaked', revokedAt: '2026-12-01T00:00:00.000Z' },
    ]);
  });

  it.each([
    ['rct-01JDQ8J4Z8V4M9V6K9W0X1Y2Z3', 'rev.jsonl:1: expected a capability id (cap-<ULID>) or a JSON object'],
    [`${A}\n{"id":`, 'rev.jsonl:2: not valid JSON (Unexpected end of JSON input)'],
    [`{"id":"${A}","by":"me"}`, 'rev.jsonl:1: Unrecognized key: "by"'],
    ['{"id":"cap-x"}', 'rev.jsonl:1: id: expected cap-<ULID>'],
    [`{"id":"${A}","reason":"a\\u0000b"}`, 'rev.jsonl:1: reason: must not contain control characters'],
  ])('%j → %s', (text, message) => {
    expect(parseError(text)).toBe(message);
  });
});

describe('RevocationList', () => {
  it('without a file: empty, and revoke() refuses (a revocation must survive a restart)', async () => {
    const { list } = open(null);
    expect(list.has(A)).toBe(false);
    await expect(list.revoke(A, null, NOW)).rejects.toMatchObject({
      code: 'not_found',
      message: 'revocation is not enabled: set capabilities.revocations_file in chio.yaml (a revocation must survive a restart)',
    });
  });

  it('a missing file is an empty list; revoke() creates it (0600), appends JSON lines and applies at once', async () => {
    const file = path.join(dir, 'sub', 'revocations.jsonl');
    const { list } = open(file);
    expect(list.size).toBe(0);
    const first = await list.revoke(A, 'key leaked', NOW);
    expect(first).toEqual({ revocation: { id: A, reason: 'key leaked', revokedAt: '2026-12-01T00:00:00.000Z' }, created: true });
    expect(list.has(A)).toBe(true);
    expect((await list.revoke(A, 'twice', NOW + 1)).created).toBe(false);
    await list.revoke(B, null, NOW);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).toBe(
      `{"id":"${A}","reason":"key leaked","revokedAt":"2026-12-01T00:00:00.000Z"}\n{"id":"${B}","reason":null,"revokedAt":"2026-12-01T00:00:00.000Z"}\n`,
    );
    expect(parseRevocations(readFileSync(file, 'utf8'), file).size).toBe(2);
  });

  it('appends after a hand-written last line without a newline; concurrent revokes are serialized', async () => {
    const file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, `# by hand\n${A}`);
    const { list } = open(file);
    await Promise.all([list.revoke(B, null, NOW), list.revoke(C, null, NOW), list.revoke(B, null, NOW)]);
    const lines = readFileSync(file, 'utf8').split('\n');
    expect(lines.slice(0, 2)).toEqual(['# by hand', A]);
    expect(lines.filter((l) => l.includes(B))).toHaveLength(1);
    expect(parseRevocations(readFileSync(file, 'utf8'), file).size).toBe(3);
  });

  it('a bad file at start is an error', () => {
    const file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, 'nonsense\n');
    expect(() => RevocationList.open(file, { log: recordingLogger() })).toThrow(
      new ChioError('config_invalid', `${file}:1: expected a capability id (cap-<ULID>) or a JSON object`),
    );
  });

  it('picks up edits of the file without a restart (watch); a bad edit keeps the last good list', async () => {
    const file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, `${A}\n`);
    const { list, log } = open(file);
    expect(list.has(B)).toBe(false);
    appendFileSync(file, `${B}\n`);
    await eventually(() => list.has(B));
    writeFileSync(file, `${A}\n${B}\nbroken line\n`);
    await eventually(() => log.entries.some((e) => e.msg === 'revocation file reload failed; keeping the last good list'));
    expect(list.has(A) && list.has(B)).toBe(true);
    writeFileSync(file, `${B}\n`); // un-revoking A by removing its line is an operator's right
    await eventually(() => !list.has(A));
    expect(list.has(B)).toBe(true);
  });

  it('the periodic stat check catches a change the watcher missed', async () => {
    const file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, '');
    const { list } = open(file, 30, false); // a file system without change events
    writeFileSync(file, `${C}\n`);
    await eventually(() => list.has(C));
  });
});

describe('RevocationList.open with startDespiteBadFile (a --workers worker, which holds the primary\'s list)', () => {
  it('a file that does not parse at start is logged and the list starts empty; it is read once mended', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'chio-rev-bad-'));
    const file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, 'cap-01M8D4AMZ01TK0FBRK09R70JCY  # by hand\n');
    expect(() => RevocationList.open(file, { log: recordingLogger() })).toThrow(ChioError);
    const log = recordingLogger();
    const list = RevocationList.open(file, { log, pollIntervalMs: 60_000, debounceMs: 10, startDespiteBadFile: true });
    lists.push(list);
    expect(list.size).toBe(0);
    expect(log.entries.map((e) => e.msg)).toEqual(['revocation file does not parse; starting with the revocations the primary holds']);
    writeFileSync(file, `${JSON.stringify({ id: A })}\n`);
    await eventually(() => list.has(A));
  });
});

describe('RevocationList.apply (chio serve --workers: revocations the primary recorded)', () => {
  it('puts them in force without writing; an id already revoked keeps its entry; a bad entry applies none', () => {
    const { list } = open(null);
    const a = { id: A, reason: 'leaked', revokedAt: '2026-12-01T00:00:00.000Z' };
    expect(list.apply([a, { id: B, reason: null, revokedAt: null }])).toBe(2);
    expect(list.apply([{ id: A, reason: 'again', revokedAt: null }, { id: C, reason: null, revokedAt: null }])).toBe(1);
    expect(list.list()).toEqual([a, { id: B, reason: null, revokedAt: null }, { id: C, reason: null, revokedAt: null }]);
    const bad = { id: 'cap-nope', reason: null, revokedAt: null };
    const D = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z6';
    expect(() => list.apply([{ id: D, reason: null, revokedAt: null }, bad])).toThrow(new ChioError('bad_request', 'revocation 1: id: expected cap-<ULID>'));
    expect(list.has(D)).toBe(false);
    expect(list.size).toBe(3);
  });

  it('a reason or time the file format refuses is dropped, never the revocation (a PostgreSQL row written by other means)', () => {
    const { list } = open(null);
    const E = 'cap-01JDQ8J4Z8V4M9V6K9W0X1Y2Z7';
    expect(list.apply([{ id: E, reason: 'line one\nline two', revokedAt: 'x'.repeat(65) }])).toBe(1);
    expect(list.list()).toEqual([{ id: E, reason: null, revokedAt: null }]);
  });

  it('keeps them as a revoke() made here: through a file that does not parse, a deleted file, a re-read that holds them; an edit removing the line lifts one', () => {
    const file = path.join(dir, 'revocations.jsonl');
    writeFileSync(file, `${A}\n`);
    const { list } = open(file, 60_000, false);
    // a line added by hand that does not parse, then the primary's append of B (it sends B once appended)
    const lineB = JSON.stringify({ id: B, reason: 'leaked', revokedAt: '2026-12-01T00:00:00.000Z' });
    appendFileSync(file, `cap-01M8D4AMZ01TK0FBRK09R70JCY  # revoked by hand\n${lineB}\n`);
    const text = readFileSync(file, 'utf8');
    expect(list.apply([{ id: B, reason: 'leaked', revokedAt: '2026-12-01T00:00:00.000Z' }])).toBe(1);
    expect(readFileSync(file, 'utf8')).toBe(text); // not written again
    expect(() => list.reload()).toThrow(ChioError); // the file does not parse: the last good list, and B
    expect([list.has(A), list.has(B)]).toEqual([true, true]);
    rmSync(file);
    expect(() => list.reload()).toThrow(new ChioError('io_error', `revocation file ${file} is missing; keeping the last 2 revocation(s)`));
    expect([list.has(A), list.has(B)]).toEqual([true, true]);
    writeFileSync(file, `${A}\n${lineB}\n`);
    list.reload();
    expect([list.has(A), list.has(B)]).toEqual([true, true]);
    writeFileSync(file, `${A}\n`); // un-revoking B by removing its line, as for one revoked here
    expect(list.reload()).toBe(true);
    expect([list.has(A), list.has(B)]).toEqual([true, false]);
  });
});
