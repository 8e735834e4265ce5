/**
 * Strict YAML loading with locations, shared by chio.yaml and policy files.
 *
 * Errors name the file, the YAML path and the line:column, e.g.
 * `policy.yaml:12:7: rules.payments_write.require_runtime_assurance_tier: Invalid option: …`.
 * Duplicate keys, more than a few aliases (billion-laughs) and deep nesting are rejected.
 */
import { LineCounter, parseDocument, isMap, isScalar, isSeq, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { ChioError, type OperationCode } from './errors.js';
import { FULL_PARSER_OPTIONS, readPlainYaml } from './yaml-fast.js';

const MAX_ALIASES = 50;
const MAX_DEPTH = 64;
const MAX_BYTES = 8 * 1024 * 1024;

export interface YamlSource {
  readonly file: string;
  /** the located syntax tree; when the fast reader read the file, it is parsed on first use (to locate an error) */
  readonly doc: Document.Parsed;
  readonly lines: LineCounter;
  readonly value: unknown;
  /** true when the fast reader read the file: every map key is a string as written, and in file order in `value` */
  readonly plainKeys?: boolean;
}

type Code = Extract<OperationCode, 'config_invalid' | 'policy_invalid'>;

/**
 * Reads YAML text. Files in the plain subset (./yaml-fast.ts) are read fast, without a located
 * tree; the tree is built only when something asks where a node is (an error to report). Every
 * other file, and every file the full parser would refuse, takes the full parser.
 */
export function parseYamlSource(text: string, file: string, code: Code): YamlSource {
  if (text.length > MAX_BYTES) {
    throw new ChioError(code, `${file}: file is larger than ${MAX_BYTES} bytes`);
  }
  const fast = readPlainYaml(text, MAX_DEPTH);
  if (fast === undefined) return parseLocated(text, file, code);
  let located: YamlSource | undefined;
  const full = (): YamlSource => (located ??= parseLocated(text, file, code));
  return {
    file,
    value: fast.value,
    plainKeys: true,
    get doc() {
      return full().doc;
    },
    get lines() {
      return full().lines;
    },
  };
}

/** The full parser: a located tree, its errors, duplicate keys, nesting depth and alias limits. */
function parseLocated(text: string, file: string, code: Code): YamlSource {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, ...FULL_PARSER_OPTIONS });
  const first = doc.errors[0];
  if (first) {
    const at = first.linePos?.[0] ?? (first.pos ? lines.linePos(first.pos[0]) : undefined);
    const where = at ? `${file}:${at.line}:${at.col}` : file;
    throw new ChioError(code, `${where}: ${first.message.split('\n')[0]}`);
  }
  checkNode(doc.contents, [], file, code, lines);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (err) {
    throw new ChioError(code, `${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { file, doc, lines, value, plainKeys: false };
}

/**
 * The keys of the map at `path` in file order, without the located tree, when the fast reader read
 * the file (its objects keep file order: it leaves integer-like keys to the full parser); else
 * undefined (read them from `src.doc`). [] when there is no map at `path`.
 */
export function plainKeysInFileOrder(src: YamlSource, path: ReadonlyArray<string | number>): string[] | undefined {
  if (!src.plainKeys) return undefined;
  let node: unknown = src.value;
  for (const key of path) {
    if (node === null || typeof node !== 'object' || !Object.prototype.hasOwnProperty.call(node, key)) return [];
    node = (node as Record<string | number, unknown>)[key];
  }
  return node !== null && typeof node === 'object' && !Array.isArray(node) ? Object.keys(node) : [];
}

/**
 * One walk over the tree: nesting depth, and duplicate keys (the `yaml` package's own check is
 * quadratic in the size of a map; this one is linear and names the YAML path).
 */
function checkNode(node: unknown, path: Array<string | number>, file: string, code: Code, lines: LineCounter): void {
  const where = (n: unknown): string => {
    const range = (n as Node | null)?.range;
    const pos = range ? lines.linePos(range[0]) : undefined;
    return `${file}${pos ? `:${pos.line}:${pos.col}` : ''}`;
  };
  if (path.length > MAX_DEPTH) throw new ChioError(code, `${where(node)}: nesting deeper than ${MAX_DEPTH} levels`);
  if (isMap(node)) {
    const seen = new Set<string>();
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      if (seen.has(key)) {
        const at = [...path, key];
        throw new ChioError(code, `${where(pair.key)}: ${formatPath(at)}: duplicate key ${JSON.stringify(key)}`, {
          field: formatPath(at),
        });
      }
      seen.add(key);
      checkNode(pair.value, [...path, key], file, code, lines);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => checkNode(item, [...path, i], file, code, lines));
  }
}

/** The location `file:line:col` of a YAML path, or of its nearest existing ancestor. */
export function locate(src: YamlSource, path: ReadonlyArray<PropertyKey>): string {
  for (let n = path.length; n >= 0; n--) {
    const keys = path.slice(0, n).map((k) => (typeof k === 'symbol' ? String(k) : k));
    const node = keys.length === 0 ? src.doc.contents : (src.doc.getIn(keys, true) as Node | undefined);
    // For a key that exists, point at the key itself (more useful than its value).
    const range = node && typeof node === 'object' && 'range' in node ? node.range : undefined;
    if (range) {
      const pos = src.lines.linePos(keyStart(src, keys) ?? range[0]);
      return `${src.file}:${pos.line}:${pos.col}`;
    }
  }
  return src.file;
}

function keyStart(src: YamlSource, keys: ReadonlyArray<string | number>): number | undefined {
  if (keys.length === 0) return undefined;
  const parent = keys.length === 1 ? src.doc.contents : src.doc.getIn(keys.slice(0, -1), true);
  if (!isMap(parent)) return undefined;
  const last = keys[keys.length - 1];
  for (const pair of parent.items) {
    const k = pair.key as Node | null;
    if (k && 'value' in k && (k as { value: unknown }).value === last && k.range) return k.range[0];
  }
  return undefined;
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  if (path.length === 0) return '(root)';
  return path
    .map((k, i) => (typeof k === 'number' ? `[${k}]` : `${i === 0 ? '' : '.'}${String(k)}`))
    .join('');
}

/** Validates `src.value` with a zod schema; the first issue becomes a ChioError with location. */
export function validateYaml<S extends z.ZodType>(src: YamlSource, schema: S, code: Code): z.infer<S> {
  const result = schema.safeParse(src.value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (!issue) throw new ChioError(code, `${src.file}: invalid`);
  let path: PropertyKey[] = [...issue.path];
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0];
    if (key !== undefined) path = [...path, key];
    message = `unknown key ${JSON.stringify(key)}`;
  }
  throw new ChioError(code, `${locate(src, path)}: ${formatPath(path)}: ${message}`, { field: formatPath(path) });
}

/** A semantic error found after schema validation, located at `path`. */
export function yamlError(src: YamlSource, path: ReadonlyArray<PropertyKey>, message: string, code: Code): ChioError {
  return new ChioError(code, `${locate(src, path)}: ${formatPath(path)}: ${message}`, { field: formatPath(path) });
}
