import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseDocument } from 'yaml';
import { FULL_PARSER_OPTIONS, readPlainYaml, resolvePlainScalar } from '../src/yaml-fast.js';
import { parseYamlSource, plainKeysInFileOrder } from '../src/yaml-source.js';
import { readFileSync } from 'node:fs';

/** property-test runs per property (raise it to fuzz longer: YAML_FAST_RUNS=50000) */
const RUNS = Number(process.env['YAML_FAST_RUNS'] ?? 1500);

/** What the full parser makes of `text`: its value, or null when it reports an error or a duplicate key. */
function fullParse(text: string): { value: unknown } | null {
  const doc = parseDocument(text, FULL_PARSER_OPTIONS);
  if (doc.errors.length > 0) return null;
  if (parseDocument(text, { ...FULL_PARSER_OPTIONS, uniqueKeys: true }).errors.length > 0) return null;
  return { value: doc.toJS({ maxAliasCount: 50 }) };
}

/** The value with every object's own keys listed in order (and its prototype), so that key order is compared too. */
function ordered(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(ordered);
  if (v !== null && typeof v === 'object') {
    return { proto: Object.getPrototypeOf(v) === Object.prototype, entries: Object.entries(v).map(([k, x]) => [k, ordered(x)]) };
  }
  return v;
}

/** The fast reader never accepts what the full parser refuses, and reads exactly the same value. */
function agrees(text: string): boolean {
  const fast = readPlainYaml(text, 64);
  if (fast === undefined) return true;
  const full = fullParse(text);
  expect(full, `fast reader accepted what the full parser refuses:\n${text}`).not.toBeNull();
  // entries in order (toStrictEqual on the objects themselves trips over an own `constructor` key)
  expect(ordered(fast.value)).toStrictEqual(ordered(full?.value));
  return true;
}

// Scalars chosen to hit every core-schema type and every indicator rule.
const TRICKY = [
  'a', 'b-c', 'x_y', '/api/v1', 'http://h:8080/p', 'svc.ns.svc.cluster.local:8443', 'true', 'True', 'TRUE', 'tRue', 'false',
  'null', 'Null', '~', '', 'yes', 'no', 'on', '0', '7', '007', '-1', '+1', '1.5', '.5', '5.', '1e3', '-1E-3', '0x1F', '0o17',
  '0b101', '1_000', '.inf', '-.Inf', '.nan', '.NaN', 'a: b', 'a:b', 'a #b', 'a#b', '#a', '- a', '-a', '-', '--', '---', '...',
  '[a]', '{a: b}', 'a, b', 'a]', '}', "it's", 'say "hi"', ' lead', 'trail ', '*x', '&a', '!t', '|', '>', '%p', '@x', '`x',
  '?', '? x', ':', ':x', 'a:', '__proto__', 'constructor', '10', 'é', 'ä: ö', 'a\\b', '\\n', 'a"b', "a'b",
  // white space to JavaScript, not to YAML (space and tab only): kept in a plain scalar or key
  'allow\u00a0', '\u3000x', 'a\u2003', 'b\u202f', '\u1680', 'x\u205f ',
];

const scalarText = fc.oneof(
  fc.constantFrom(...TRICKY),
  fc.string({ unit: fc.constantFrom('a', 'b', '1', ':', ' ', '#', '-', ',', '[', ']', '{', '}', '"', "'", '\\', '.', '&', '*'), maxLength: 6 }),
);

/** A scalar written plain (maybe invalid), single-quoted, or double-quoted. */
const scalar = fc.tuple(scalarText, fc.constantFrom('plain', 'plain', 'single', 'double')).map(([s, style]) =>
  style === 'plain' ? s : style === 'single' ? `'${s.replaceAll("'", "''")}'` : JSON.stringify(s),
);

type Tree = { kind: 'scalar'; text: string } | { kind: 'map'; entries: [string, Tree][] } | { kind: 'seq'; items: Tree[] };

const tree: fc.Arbitrary<Tree> = fc.letrec<{ tree: Tree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scalar.map((text): Tree => ({ kind: 'scalar', text })),
    fc.array(fc.tuple(scalar, tie('tree')), { maxLength: 4 }).map((entries): Tree => ({ kind: 'map', entries })),
    fc.array(tie('tree'), { maxLength: 4 }).map((items): Tree => ({ kind: 'seq', items })),
  ),
})).tree;

/** Flow style on one line. */
function flow(t: Tree): string {
  if (t.kind === 'scalar') return t.text;
  if (t.kind === 'seq') return `[${t.items.map(flow).join(', ')}]`;
  return `{ ${t.entries.map(([k, v]) => `${k}: ${flow(v)}`).join(', ')} }`;
}

/** Block style, choosing flow for some children; `compact` puts a sequence item's collection on the `- ` line. */
function block(t: Tree, indent: number, choose: () => number): string[] {
  const pad = ' '.repeat(indent);
  if (t.kind === 'scalar' || choose() % 4 === 0) return [`${pad}${flow(t)}`];
  if (t.kind === 'seq') {
    if (t.items.length === 0) return [`${pad}[]`];
    return t.items.flatMap((item) => {
      const inner = block(item, indent + 2, choose);
      const first = (inner[0] ?? '').trimStart();
      return choose() % 2 === 0 ? [`${pad}- ${first}`, ...inner.slice(1)] : [`${pad}-`, ...inner];
    });
  }
  if (t.entries.length === 0) return [`${pad}{}`];
  return t.entries.flatMap(([k, v]) => {
    if (v.kind === 'scalar') return [`${pad}${k}: ${v.text}${choose() % 5 === 0 ? ' # note' : ''}`];
    const sameIndentSeq = v.kind === 'seq' && choose() % 3 === 0;
    return [`${pad}${k}:`, ...block(v, sameIndentSeq ? indent : indent + 2, choose)];
  });
}

const documentText = fc
  .tuple(tree, fc.array(fc.nat(), { minLength: 64, maxLength: 64 }))
  .map(([t, picks]) => {
    let i = 0;
    const choose = (): number => picks[i++ % picks.length] ?? 0;
    return `${block(t, 0, choose).join('\n')}\n`;
  });

/** A small random edit: the fast reader must still never disagree. */
const mutated = fc.tuple(documentText, fc.nat(), fc.constantFrom(' ', '  ', '\n', ':', '#', '-', '&a ', '*a', '!!str ', '|', '"', "'", '{', ']', ',', '\t', 'x')).map(
  ([text, at, ins]) => {
    const p = text.length === 0 ? 0 : at % text.length;
    return text.slice(0, p) + ins + text.slice(p);
  },
);

describe('readPlainYaml', () => {
  it('reads the shipped policy and config files, and agrees with the yaml package', () => {
    for (const file of ['demo/policy.yaml', 'test/fixtures/policy/valid.yaml', 'test/fixtures/capability/policy.yaml']) {
      const text = readFileSync(file, 'utf8');
      const fast = readPlainYaml(text, 64);
      expect(fast, file).toBeDefined();
      expect(agrees(text)).toBe(true);
    }
  });

  it('agrees with the full parser on random documents (block, flow, compact, comments, every scalar style)', () => {
    let accepted = 0;
    fc.assert(
      fc.property(documentText, (text) => {
        if (readPlainYaml(text, 64) !== undefined) accepted++;
        return agrees(text);
      }),
      { numRuns: RUNS },
    );
    // the generator mostly writes the subset: the fast path must actually be taken
    expect(accepted).toBeGreaterThan(300);
  });

  it('agrees with the full parser on randomly damaged documents', () => {
    fc.assert(fc.property(mutated, agrees), { numRuns: RUNS });
  });

  it.each([
    ['an anchor and alias', 'a: &x 1\nb: *x\n'],
    ['a tag', 'a: !!str 1\n'],
    ['a block scalar', 'a: |\n  text\n'],
    ['a multi-line plain scalar', 'a: one\n  two\n'],
    ['a multi-line flow collection', 'a: [1,\n  2]\n'],
    ['a duplicate key', 'a: 1\na: 2\n'],
    ['a duplicate key in a flow map', 'a: { b: 1, b: 2 }\n'],
    ['a tab', 'a:\t1\n'],
    ['a document marker', '---\na: 1\n'],
    ['a directive', '%YAML 1.2\n---\na: 1\n'],
    ['an integer-like key (object order)', '"10": a\nb: c\n'],
    ['a non-string key', '10: a\n'],
    ['__proto__', '__proto__: 1\n'],
    ['a compact nested mapping', 'a: b: c\n'],
    ['a sequence after a key', 'a: - b\n'],
    ['bad indentation', 'a:\n    b: 1\n  c: 2\n'],
    ['a YAML-only escape', 'a: "\\x41"\n'],
    ['a trailing comma', 'a: [1, 2,]\n'],
    ['an empty document', '# nothing\n'],
    ['nesting deeper than the limit', `${'[' .repeat(70)}${']'.repeat(70)}\n`],
  ])('leaves %s to the full parser', (_what, text) => {
    expect(readPlainYaml(text, 64)).toBeUndefined();
  });

  it('reads the common shapes exactly', () => {
    const text = [
      'schema: chio.policy.v1 # comment',
      'list:',
      '- a',
      '- { k: "v#1", n: 10, f: 1.5, t: true, z: ~ }',
      '- - nested',
      '  - 0x10',
      '- key: value',
      '  other: [x, "y", \'it\'\'s\']',
      'empty:',
      'host: "*.example.com"',
      'url: http://h:8080/p#frag',
      '',
    ].join('\n');
    expect(readPlainYaml(text, 64)?.value).toStrictEqual({
      schema: 'chio.policy.v1',
      list: ['a', { k: 'v#1', n: 10, f: 1.5, t: true, z: null }, ['nested', 16], { key: 'value', other: ['x', 'y', "it's"] }],
      empty: null,
      host: '*.example.com',
      url: 'http://h:8080/p#frag',
    });
    expect(agrees(text)).toBe(true);
  });

  it('keeps white space that is not YAML white space at the end of plain scalars and keys (U+00A0, U+2003, U+3000…)', () => {
    const cases: Array<[string, unknown]> = [
      ['a: b\u00a0', { a: 'b\u00a0' }],
      ['a\u00a0: b', { 'a\u00a0': 'b' }],
      ['[b\u3000]', ['b\u3000']],
      ['{a\u2003: b}', { 'a\u2003': 'b' }],
      ['a: b\u202f # c', { a: 'b\u202f' }],
      ['a: b  # spaces do go', { a: 'b' }],
    ];
    for (const [text, value] of cases) {
      expect(readPlainYaml(text, 64)?.value, JSON.stringify(text)).toStrictEqual(value);
      expect(agrees(text)).toBe(true);
    }
  });

  it('leaves a null leaf below the depth limit to the full parser, as any other node that deep', () => {
    const depth = 63;
    const lines: string[] = [];
    for (let i = 0; i < depth; i++) lines.push(`${' '.repeat(i)}k${i}:`);
    lines.push(`${' '.repeat(depth)}x:`, `${' '.repeat(depth)}-`);
    const text = lines.join('\n') + '\n';
    expect(readPlainYaml(text, 64)).toBeUndefined();
    expect(() => parseYamlSource(text, 'p.yaml', 'policy_invalid')).toThrow('nesting deeper than 64 levels');
  });

  it('pins the core-schema patterns its first-character shortcut relies on', () => {
    const doc = parseDocument('', FULL_PARSER_OPTIONS);
    const patterns = doc.schema.tags.filter((t) => t.default === true && 'test' in t && t.test).map((t) => String((t as { test: RegExp }).test));
    // every pattern below starts with one of ~ n N t T f F 0-9 + - . (or matches ''): resolvePlainScalar skips others
    expect(patterns).toStrictEqual([
      '/^(?:~|[Nn]ull|NULL)?$/',
      '/^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/',
      '/^0o[0-7]+$/',
      '/^[-+]?[0-9]+$/',
      '/^0x[0-9a-fA-F]+$/',
      '/^(?:[-+]?\\.(?:inf|Inf|INF)|\\.nan|\\.NaN|\\.NAN)$/',
      '/^[-+]?(?:\\.[0-9]+|[0-9]+(?:\\.[0-9]*)?)[eE][-+]?[0-9]+$/',
      '/^[-+]?(?:\\.[0-9]+|[0-9]+\\.[0-9]*)$/',
    ]);
    expect([resolvePlainScalar('~'), resolvePlainScalar('0o17'), resolvePlainScalar('-.inf'), resolvePlainScalar('abc')]).toStrictEqual([null, 15, -Infinity, 'abc']);
  });
});

describe('parseYamlSource with the fast reader', () => {
  it('builds the located tree only when asked, and keeps map keys in file order', () => {
    const src = parseYamlSource('b: 1\na: { y: 1, x: 2 }\n', 'f.yaml', 'config_invalid');
    expect(src.plainKeys).toBe(true);
    expect(plainKeysInFileOrder(src, ['a'])).toStrictEqual(['y', 'x']);
    expect(plainKeysInFileOrder(src, ['nope', 'deeper'])).toStrictEqual([]);
    expect(src.doc.getIn(['a', 'x'])).toBe(2);
    expect(src.lines.linePos(5)).toStrictEqual({ line: 2, col: 1 });
  });

  it('falls back to the full parser, whose errors name the line', () => {
    const src = parseYamlSource('"10": a\nb: c\n', 'f.yaml', 'config_invalid');
    expect(src.plainKeys).toBe(false);
    expect(plainKeysInFileOrder(src, [])).toBeUndefined();
    expect(() => parseYamlSource('a: 1\nb:\n  c: 1\n  c: 2\n', 'f.yaml', 'config_invalid')).toThrow('f.yaml:4:3: b.c: duplicate key "c"');
  });
});
