import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { httpPathFault, SegmentTrie } from '../../src/policy/paths.js';
import { pathHasSegmentPrefix } from '../../src/spiffe/id.js';

/** The prefixes stored in `trie` that match `path`, as the trie reports them. */
function matchesOf(trie: SegmentTrie<string>, path: string): string[] {
  const found: string[] = [];
  trie.visitPrefixesOf(path, (prefix) => found.push(prefix));
  return found.sort();
}

function trieOf(prefixes: readonly string[]): SegmentTrie<string> {
  const trie = new SegmentTrie<string>();
  for (const p of prefixes) trie.upsert(p, () => p);
  return trie;
}

describe('SegmentTrie', () => {
  const trie = trieOf(['/v1/transfers', '/v1', '/api/', '/a//b']);

  it('matches whole segments only', () => {
    expect(matchesOf(trie, '/v1/transfers')).toEqual(['/v1', '/v1/transfers']);
    expect(matchesOf(trie, '/v1/transfers/9')).toEqual(['/v1', '/v1/transfers']);
    expect(matchesOf(trie, '/v1/transfersX')).toEqual(['/v1']);
    expect(matchesOf(trie, '/v10')).toEqual([]);
    expect(matchesOf(trie, '/v1/')).toEqual(['/v1']);
  });

  it('a prefix ending in "/" needs the slash in the path', () => {
    expect(matchesOf(trie, '/api')).toEqual([]);
    expect(matchesOf(trie, '/api/')).toEqual(['/api/']);
    expect(matchesOf(trie, '/api/x/y')).toEqual(['/api/']);
  });

  it('keeps empty segments significant', () => {
    expect(matchesOf(trie, '/a//b/c')).toEqual(['/a//b']);
    expect(matchesOf(trie, '/a/b')).toEqual([]);
  });

  it('"/" matches every path, even one that does not start with "/"', () => {
    const all = trieOf(['/', '/x']);
    expect(matchesOf(all, '/x/y')).toEqual(['/', '/x']);
    expect(matchesOf(all, '*')).toEqual(['/']);
  });

  it('upsert returns the value stored first', () => {
    const t = new SegmentTrie<number>();
    expect(t.upsert('/a', () => 1)).toBe(1);
    expect(t.upsert('/a', () => 2)).toBe(1);
    expect(t.upsert('/a/', () => 3)).toBe(3);
    expect(() => t.upsert('a', () => 4)).toThrow(new TypeError('path prefix must start with "/": "a"'));
  });

  it('agrees with pathHasSegmentPrefix on random prefixes and paths', () => {
    const segment = fc.constantFrom('', 'a', 'b', 'ab', 'v1', '.');
    const pathLike = fc.array(segment, { minLength: 0, maxLength: 4 }).map((s) => `/${s.join('/')}`);
    const request = fc.oneof(pathLike, fc.constantFrom('', '*', 'a/b', 'http://h/a'));
    fc.assert(
      fc.property(fc.uniqueArray(pathLike, { maxLength: 8 }), fc.array(request, { maxLength: 8 }), (prefixes, paths) => {
        const trie = trieOf(prefixes);
        for (const path of paths) {
          expect(matchesOf(trie, path)).toEqual(prefixes.filter((p) => pathHasSegmentPrefix(path, p)).sort());
        }
      }),
      { numRuns: 500 },
    );
  });

  it('agrees with pathHasSegmentPrefix when nodes have many children (small arrays and maps)', () => {
    // up to 12 distinct segments at each level: nodes past 8 children switch to a Map
    const segment = fc.constantFrom('', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k');
    const pathLike = fc.array(segment, { minLength: 1, maxLength: 3 }).map((s) => `/${s.join('/')}`);
    const prefix = fc.tuple(pathLike, fc.boolean()).map(([p, dir]) => (dir ? `${p}/` : p));
    fc.assert(
      fc.property(fc.uniqueArray(prefix, { minLength: 10, maxLength: 60 }), fc.array(pathLike, { minLength: 1, maxLength: 20 }), (prefixes, paths) => {
        const trie = trieOf(prefixes);
        for (const path of paths) {
          expect(matchesOf(trie, path)).toEqual(prefixes.filter((p) => pathHasSegmentPrefix(path, p)).sort());
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('httpPathFault', () => {
  it('accepts HTTP path prefixes', () => {
    for (const ok of ['/', '/v1', '/v1/', '/a//b', '/%2Fx', '/~user/a.b']) expect(httpPathFault(ok)).toBeNull();
  });

  it('names what is wrong', () => {
    expect(httpPathFault('')).toBe('a path prefix must start with "/"');
    expect(httpPathFault('v1')).toBe('a path prefix must start with "/"');
    expect(httpPathFault('/v1?x=1')).toBe('a path prefix must not contain "?" or "#"');
    expect(httpPathFault('/v1#top')).toBe('a path prefix must not contain "?" or "#"');
    expect(httpPathFault('/v 1')).toBe('a path prefix must not contain spaces or control characters');
    expect(httpPathFault('/v1\n')).toBe('a path prefix must not contain spaces or control characters');
    expect(httpPathFault('v1', 'a path')).toBe('a path must start with "/"');
  });
});
