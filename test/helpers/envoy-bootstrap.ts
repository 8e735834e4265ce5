/**
 * An offline, strict checker of Envoy v3 YAML (a bootstrap, or any message) against Envoy's
 * official protos (SPEC §3: the ones `@grpc/grpc-js-xds` ships under `deps/`), for tests.
 *
 * It reads the YAML the way Envoy's loader does (proto3 JSON mapping,
 * https://protobuf.dev/programming-guides/json/) and is stricter where Envoy would only warn:
 * - every key must be a field of its message, by its proto name or its lowerCamel JSON name;
 * - nested messages recursively; `google.protobuf.Any` (`"@type"`) resolved to its message and
 *   checked too (and `xds.type.v3.TypedStruct` to the type it names);
 * - enums by value name (or a defined number); scalars by type and range;
 * - well-known types in their JSON form: Duration `"0.25s"`, Timestamp RFC 3339, wrappers
 *   (`UInt32Value`, `BoolValue`, …) as plain scalars, Struct / Value / ListValue, Empty, FieldMask;
 * - a oneof set twice; and the protoc-gen-validate rules Envoy enforces when it loads a config
 *   (`(validate.required)` oneofs, `message.required`, string `min_len`/`max_len`/`pattern`,
 *   `repeated.min_items`, numeric `gt`/`gte`/`lt`/`lte`, enum `defined_only`/`not_in`);
 * - deprecated fields and enum values are reported too (a new config should not use them).
 *
 * Each violation names the YAML path (`a.b[0]["x.y"].c`) and `file:line:col`.
 *
 * Also: `readYamlDocuments`, every YAML document of the operator-facing folders (envoy-config/,
 * deploy/), read the way Kubernetes reads manifests (YAML 1.1), for the tests that check them.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { LineCounter, parseAllDocuments, parseDocument } from 'yaml';
import { envoyProtoIncludeDirs } from '../../src/check/envoy.js';
import { locate, type YamlSource } from '../../src/yaml-source.js';

const require = createRequire(import.meta.url);

/** The repository root (this file is test/helpers/envoy-bootstrap.ts). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const BOOTSTRAP_TYPE = 'envoy.config.bootstrap.v3.Bootstrap';

/** The bootstrap proto plus every typed_config type our Envoy YAML uses. Add one here when a config needs it. */
export const ENVOY_PROTO_FILES = [
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/filters/network/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'xds/type/v3/typed_struct.proto',
] as const;

export type YamlPath = ReadonlyArray<string | number>;

export interface Violation {
  /** `formatYamlPath` of the offending node */
  readonly path: string;
  /** `file:line:col` of the offending key or value (or of its nearest existing ancestor) */
  readonly at: string;
  readonly message: string;
}

/** A mapping that was checked as a message of `typeName` (for typed_config: without its `@type`). */
export interface VisitedMessage {
  readonly path: YamlPath;
  readonly typeName: string;
  readonly value: Readonly<Record<string, unknown>>;
}

/** A value that was checked as a value of enum `typeName`. */
export interface VisitedEnum {
  readonly path: YamlPath;
  readonly typeName: string;
  readonly value: string | number;
}

export interface EnvoyYamlCheck {
  readonly file: string;
  /** the YAML as plain data (null when it did not parse) */
  readonly value: unknown;
  readonly violations: readonly Violation[];
  readonly messages: readonly VisitedMessage[];
  readonly enums: readonly VisitedEnum[];
}

export interface EnvoyValueCheck {
  readonly violations: ReadonlyArray<{ readonly path: YamlPath; readonly message: string }>;
  readonly messages: readonly VisitedMessage[];
  readonly enums: readonly VisitedEnum[];
}

let cachedRoot: protobuf.Root | undefined;

/** Envoy's official protos (ENVOY_PROTO_FILES and their imports), loaded once (~0.2 s). */
export function loadEnvoyProtos(): protobuf.Root {
  if (cachedRoot) return cachedRoot;
  // protobufjs ships google/protobuf/descriptor.proto (imported by the validate and udpa annotations).
  const includeDirs = [...envoyProtoIncludeDirs(), path.dirname(require.resolve('protobufjs/package.json'))];
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target)) return target;
    for (const dir of includeDirs) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync([...ENVOY_PROTO_FILES], { keepCase: true });
  root.resolveAll();
  cachedRoot = root;
  return root;
}

/** Parses `text` (one YAML document) and checks it as a `typeName` message (default: the bootstrap). */
export function checkEnvoyYaml(text: string, file: string, typeName: string = BOOTSTRAP_TYPE): EnvoyYamlCheck {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, strict: true, prettyErrors: false });
  const src: YamlSource = { file, doc, lines, value: null };
  const parseError = doc.errors[0];
  if (parseError) {
    const pos = lines.linePos(parseError.pos[0]);
    const at = `${file}:${pos.line}:${pos.col}`;
    const violation = { path: '(root)', at, message: `not valid YAML: ${parseError.message.split('\n')[0]}` };
    return { file, value: null, violations: [violation], messages: [], enums: [] };
  }
  const value: unknown = doc.toJS({ maxAliasCount: 100 });
  const result = checkEnvoyValue(value, typeName);
  const violations = result.violations.map((v) => ({
    path: formatYamlPath(v.path),
    at: locate({ ...src, value }, [...v.path]),
    message: v.message,
  }));
  return { file, value, violations, messages: result.messages, enums: result.enums };
}

/** Checks plain data (as from JSON or YAML) as a message of `typeName`. */
export function checkEnvoyValue(value: unknown, typeName: string): EnvoyValueCheck {
  const root = loadEnvoyProtos();
  const walker = new Walker(root);
  walker.message(root.lookupType(typeName), value, [], NO_RULES);
  return walker;
}

/** Human-readable YAML path: `static_resources.listeners[0].typed_per_filter_config["envoy.filters.http.ext_authz"]`. */
export function formatYamlPath(p: YamlPath): string {
  let out = '';
  for (const key of p) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) out += out === '' ? key : `.${key}`;
    else out += `[${JSON.stringify(key)}]`;
  }
  return out === '' ? '(root)' : out;
}

/** Every mapping of `check` that was checked as a `typeName` message, in document order. */
export function messagesOfType(check: Pick<EnvoyValueCheck, 'messages'>, typeName: string): VisitedMessage[] {
  return check.messages.filter((m) => m.typeName === typeName);
}

/** The value at `p` inside `root`, or undefined. */
export function valueAt(root: unknown, p: YamlPath): unknown {
  let node: unknown = root;
  for (const key of p) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[key];
  }
  return node;
}

/** Proto name and lowerCamel JSON name (protobuf's ToJsonName, or an explicit json_name). */
export function jsonName(field: protobuf.Field): string {
  const explicit = (field.options as Record<string, unknown> | undefined)?.['json_name'];
  if (typeof explicit === 'string') return explicit;
  return field.name.replace(/_(.)/g, (_m, c: string) => c.toUpperCase());
}

/** One YAML document of a file under the repository. */
export interface YamlDocument {
  /** path relative to the repository root, `/`-separated */
  readonly file: string;
  /** 0-based position of the document in its file */
  readonly index: number;
  readonly value: unknown;
  /** `file#index (kind/name)` or `file#index` for messages */
  readonly label: string;
}

/**
 * Every document of every `*.yaml`/`*.yml` file under `dir` (relative to the repository root),
 * sorted by file name. YAML 1.1 like Kubernetes' decoder (`0400` is octal, `yes` is true); a file
 * that does not parse throws, naming it.
 */
export function readYamlDocuments(dir: string): YamlDocument[] {
  const docs: YamlDocument[] = [];
  for (const file of listFiles(dir, /\.ya?ml$/)) {
    const parsed = parseAllDocuments(readFileSync(path.join(REPO_ROOT, file), 'utf8'), { version: '1.1', uniqueKeys: true });
    if (!Array.isArray(parsed)) throw new Error(`${file}: not a YAML stream`);
    parsed.forEach((doc, index) => {
      const error = doc.errors[0];
      if (error) throw new Error(`${file}#${index}: ${error.message}`);
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) return;
      docs.push({ file, index, value, label: `${file}#${index}${kindAndName(value)}` });
    });
  }
  return docs;
}

/** Files under `dir` (relative to the repository root) whose name matches `pattern`, sorted, `/`-separated. */
export function listFiles(dir: string, pattern: RegExp): string[] {
  const abs = path.join(REPO_ROOT, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { recursive: true, encoding: 'utf8' })
    .map((f) => f.split(path.sep).join('/'))
    .filter((f) => pattern.test(f))
    .sort()
    .map((f) => `${dir}/${f}`);
}

function kindAndName(value: unknown): string {
  if (!isMapping(value)) return '';
  const kind = value['kind'];
  const meta = value['metadata'];
  const name = isMapping(meta) ? meta['name'] : undefined;
  return typeof kind === 'string' && typeof name === 'string' ? ` (${kind}/${name})` : '';
}

// ---------------------------------------------------------------------------------------------

type Rules = Readonly<Record<string, unknown>>;
const NO_RULES: Rules = {};
const ANY = 'google.protobuf.Any';
const TYPED_STRUCT = 'xds.type.v3.TypedStruct';
const WRAPPERS: Readonly<Record<string, string>> = {
  'google.protobuf.DoubleValue': 'double',
  'google.protobuf.FloatValue': 'float',
  'google.protobuf.Int64Value': 'int64',
  'google.protobuf.UInt64Value': 'uint64',
  'google.protobuf.Int32Value': 'int32',
  'google.protobuf.UInt32Value': 'uint32',
  'google.protobuf.BoolValue': 'bool',
  'google.protobuf.StringValue': 'string',
  'google.protobuf.BytesValue': 'bytes',
};
/** Duration in proto3 JSON: seconds with up to 9 fractional digits and an `s`. */
const DURATION = /^-?\d{1,12}(\.\d{1,9})?s$/;
const MAX_DURATION_SECONDS = 315_576_000_000;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;
const INTEGER_TEXT = /^-?\d+$/;
const INT_RANGES: Readonly<Record<string, readonly [bigint, bigint]>> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  sint32: [-(2n ** 31n), 2n ** 31n - 1n],
  sfixed32: [-(2n ** 31n), 2n ** 31n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  fixed32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  sint64: [-(2n ** 63n), 2n ** 63n - 1n],
  sfixed64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  fixed64: [0n, 2n ** 64n - 1n],
};

function isMapping(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

function typeName(t: protobuf.ReflectionObject): string {
  return t.fullName.replace(/^\./, '');
}

/** The full name of a field's message/enum type, or its scalar type. */
function elementType(field: protobuf.Field): string {
  return field.resolvedType ? typeName(field.resolvedType) : field.type;
}

function rulesOf(field: protobuf.Field): Rules {
  return (field.options as Rules | undefined) ?? NO_RULES;
}

function isDeprecated(options: Rules | undefined): boolean {
  return options?.['deprecated'] === true;
}

/** The numeric/length rule `(validate.rules).<kind>.<name>` as a number, if set. */
function ruleNumber(rules: Rules, kind: string, name: string): number | undefined {
  const v = rules[`(validate.rules).${kind}.${name}`];
  return typeof v === 'number' ? v : typeof v === 'string' && INTEGER_TEXT.test(v) ? Number(v) : undefined;
}

/** A validate `pattern` (RE2) as a JS RegExp; null for RE2-only syntax we do not translate. */
function compilePattern(pattern: string): RegExp | null {
  try {
    return new RegExp(pattern, 'u');
  } catch {
    return null;
  }
}

const fieldIndex = new WeakMap<protobuf.Type, ReadonlyMap<string, protobuf.Field>>();

function fieldByKey(type: protobuf.Type, key: string): protobuf.Field | undefined {
  let index = fieldIndex.get(type);
  if (!index) {
    const m = new Map<string, protobuf.Field>();
    for (const f of type.fieldsArray) {
      m.set(f.name, f);
      m.set(jsonName(f), f);
    }
    fieldIndex.set(type, m);
    index = m;
  }
  return index.get(key);
}

class Walker implements EnvoyValueCheck {
  readonly violations: Array<{ path: YamlPath; message: string }> = [];
  readonly messages: VisitedMessage[] = [];
  readonly enums: VisitedEnum[] = [];

  constructor(private readonly root: protobuf.Root) {}

  private fail(p: YamlPath, message: string): void {
    this.violations.push({ path: p, message });
  }

  message(type: protobuf.Type, value: unknown, p: YamlPath, rules: Rules): void {
    const name = typeName(type);
    if (name.startsWith('google.protobuf.')) {
      this.wellKnown(type, name, value, p, rules);
      return;
    }
    if (!isMapping(value)) {
      this.fail(p, `expected a mapping (${name}), got ${describeValue(value)}`);
      return;
    }
    this.messages.push({ path: p, typeName: name, value });
    const present = new Map<protobuf.Field, string>();
    for (const [key, item] of Object.entries(value)) {
      const field = fieldByKey(type, key);
      const at = [...p, key];
      if (!field) {
        this.fail(at, `unknown field "${key}" in ${name}`);
        continue;
      }
      const earlier = present.get(field);
      if (earlier !== undefined) {
        this.fail(at, `field ${field.name} of ${name} is given twice ("${earlier}" and "${key}")`);
        continue;
      }
      if (item === null) continue; // proto3 JSON: null means "not set"
      present.set(field, key);
      if (isDeprecated(field.options as Rules | undefined)) this.fail(at, `deprecated field ${field.name} of ${name}`);
      this.field(field, item, at);
    }
    this.checkOneofs(type, present, p);
    this.checkRequired(type, present, p);
  }

  private field(field: protobuf.Field, value: unknown, p: YamlPath): void {
    const rules = rulesOf(field);
    if (field instanceof protobuf.MapField) {
      if (!isMapping(value)) {
        this.fail(p, `expected a mapping (map<${field.keyType}, ${elementType(field)}>), got ${describeValue(value)}`);
        return;
      }
      for (const [key, item] of Object.entries(value)) {
        if (field.keyType !== 'string') this.scalar(field.keyType, key, [...p, key], NO_RULES, true);
        this.single(field, item, [...p, key], NO_RULES);
      }
      return;
    }
    if (field.repeated) {
      if (!Array.isArray(value)) {
        this.fail(p, `expected a list (repeated ${elementType(field)}), got ${describeValue(value)}`);
        return;
      }
      const min = ruleNumber(rules, 'repeated', 'min_items');
      if (min !== undefined && value.length < min) this.fail(p, `needs at least ${min} item(s), has ${value.length}`);
      value.forEach((item, i) => this.single(field, item, [...p, i], NO_RULES));
      return;
    }
    this.single(field, value, p, rules);
  }

  private single(field: protobuf.Field, value: unknown, p: YamlPath, rules: Rules): void {
    const resolved = field.resolvedType;
    if (resolved instanceof protobuf.Type) this.message(resolved, value, p, rules);
    else if (resolved instanceof protobuf.Enum) this.enumValue(resolved, value, p, rules);
    else this.scalar(field.type, value, p, rules, false);
  }

  private enumValue(en: protobuf.Enum, value: unknown, p: YamlPath, rules: Rules): void {
    const name = typeName(en);
    const names = Object.keys(en.values);
    let number: number | undefined;
    if (typeof value === 'string') {
      number = en.values[value];
      if (number === undefined) {
        this.fail(p, `${JSON.stringify(value)} is not a value of ${name} (${names.join(', ')})`);
        return;
      }
      if (isDeprecated(en.valuesOptions?.[value] as Rules | undefined)) this.fail(p, `deprecated value ${value} of ${name}`);
    } else if (typeof value === 'number' && Number.isInteger(value)) {
      if (!Object.values(en.values).includes(value)) {
        this.fail(p, `${value} is not a value of ${name} (${names.join(', ')})`);
        return;
      }
      number = value;
    } else {
      this.fail(p, `expected a value name of ${name} (${names.join(', ')}), got ${describeValue(value)}`);
      return;
    }
    const notIn = rules['(validate.rules).enum.not_in'];
    const forbidden = Array.isArray(notIn) ? notIn : notIn === undefined ? [] : [notIn];
    if (forbidden.includes(number)) this.fail(p, `${describeValue(value)} is not allowed here (validate: enum.not_in)`);
    this.enums.push({ path: p, typeName: name, value });
  }

  private scalar(type: string, value: unknown, p: YamlPath, rules: Rules, mapKey: boolean): void {
    switch (type) {
      case 'string':
        if (typeof value !== 'string') return this.fail(p, `expected a string, got ${describeValue(value)}`);
        return this.checkLength(value, p, rules);
      case 'bool':
        if (typeof value !== 'boolean' && !(mapKey && (value === 'true' || value === 'false'))) {
          return this.fail(p, `expected true or false, got ${describeValue(value)}`);
        }
        return;
      case 'bytes':
        if (typeof value !== 'string' || !BASE64.test(value)) return this.fail(p, `expected base64 bytes, got ${describeValue(value)}`);
        return;
      case 'double':
      case 'float':
        return this.checkFloat(type, value, p, rules);
      default:
        return this.checkInteger(type, value, p, rules);
    }
  }

  private checkLength(value: string, p: YamlPath, rules: Rules): void {
    const length = [...value].length;
    const min = ruleNumber(rules, 'string', 'min_len');
    const max = ruleNumber(rules, 'string', 'max_len');
    if (min !== undefined && length < min) this.fail(p, `must be at least ${min} character(s) long`);
    if (max !== undefined && length > max) this.fail(p, `must be at most ${max} character(s) long`);
    const pattern = rules['(validate.rules).string.pattern'];
    const re = typeof pattern === 'string' ? compilePattern(pattern) : null;
    if (re !== null && !re.test(value)) this.fail(p, `must match ${pattern}`);
  }

  private checkFloat(type: string, value: unknown, p: YamlPath, rules: Rules): void {
    const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : Number.NaN;
    const special = value === 'NaN' || value === 'Infinity' || value === '-Infinity';
    if (!special && (typeof value === 'boolean' || value === '' || Number.isNaN(n))) {
      this.fail(p, `expected a number (${type}), got ${describeValue(value)}`);
      return;
    }
    this.checkBounds(type, n, p, rules);
  }

  private checkInteger(type: string, value: unknown, p: YamlPath, rules: Rules): void {
    const range = INT_RANGES[type];
    if (!range) throw new TypeError(`unhandled scalar type ${type}`);
    const text = typeof value === 'number' && Number.isInteger(value) ? String(value) : typeof value === 'string' ? value : '';
    if (!INTEGER_TEXT.test(text)) {
      this.fail(p, `expected an integer (${type}), got ${describeValue(value)}`);
      return;
    }
    const big = BigInt(text);
    if (big < range[0] || big > range[1]) {
      this.fail(p, `${text} is out of range for ${type}`);
      return;
    }
    this.checkBounds(type, Number(text), p, rules);
  }

  private checkBounds(type: string, n: number, p: YamlPath, rules: Rules): void {
    const bounds: Array<[string, (limit: number) => boolean, string]> = [
      ['gt', (l) => n > l, '>'],
      ['gte', (l) => n >= l, '>='],
      ['lt', (l) => n < l, '<'],
      ['lte', (l) => n <= l, '<='],
    ];
    for (const [rule, ok, op] of bounds) {
      const limit = ruleNumber(rules, type, rule);
      if (limit !== undefined && !ok(limit)) this.fail(p, `${n} must be ${op} ${limit}`);
    }
  }

  private wellKnown(type: protobuf.Type, name: string, value: unknown, p: YamlPath, rules: Rules): void {
    const wrapped = WRAPPERS[name];
    if (wrapped !== undefined) {
      this.scalar(wrapped, value, p, rules, false);
      return;
    }
    switch (name) {
      case 'google.protobuf.Duration':
        return this.checkDuration(value, p);
      case 'google.protobuf.Timestamp':
        if (typeof value !== 'string' || !TIMESTAMP.test(value)) this.fail(p, `expected an RFC 3339 timestamp, got ${describeValue(value)}`);
        return;
      case 'google.protobuf.FieldMask':
        if (typeof value !== 'string') this.fail(p, `expected a field mask string, got ${describeValue(value)}`);
        return;
      case 'google.protobuf.Struct':
        if (!isMapping(value)) this.fail(p, `expected a mapping (google.protobuf.Struct), got ${describeValue(value)}`);
        return;
      case 'google.protobuf.ListValue':
        if (!Array.isArray(value)) this.fail(p, `expected a list (google.protobuf.ListValue), got ${describeValue(value)}`);
        return;
      case 'google.protobuf.Value':
        return;
      case 'google.protobuf.Empty':
        if (!isMapping(value) || Object.keys(value).length > 0) this.fail(p, `expected {} (google.protobuf.Empty), got ${describeValue(value)}`);
        return;
      case ANY:
        return this.any(value, p);
      default:
        throw new TypeError(`unhandled well-known type ${name} (${typeName(type)})`);
    }
  }

  private checkDuration(value: unknown, p: YamlPath): void {
    if (typeof value !== 'string' || !DURATION.test(value)) {
      this.fail(p, `expected a duration like "0.25s" (seconds, up to 9 decimals, then "s"), got ${describeValue(value)}`);
      return;
    }
    if (Math.abs(Number.parseFloat(value)) > MAX_DURATION_SECONDS) this.fail(p, `duration ${value} is out of range`);
  }

  private any(value: unknown, p: YamlPath): void {
    if (!isMapping(value)) {
      this.fail(p, `expected a mapping with "@type" (google.protobuf.Any), got ${describeValue(value)}`);
      return;
    }
    const url = value['@type'];
    if (typeof url !== 'string' || url === '') {
      this.fail(p, 'missing "@type" (google.protobuf.Any needs a type URL like type.googleapis.com/<message>)');
      return;
    }
    const target = this.lookupType(url.slice(url.lastIndexOf('/') + 1));
    if (!target) {
      this.fail([...p, '@type'], `unknown type ${url}: not a message of the loaded Envoy protos (see ENVOY_PROTO_FILES)`);
      return;
    }
    const name = typeName(target);
    if (name.startsWith('google.protobuf.')) {
      // A well-known type inside Any is written {"@type": …, "value": <its JSON form>}.
      for (const key of Object.keys(value)) if (key !== '@type' && key !== 'value') this.fail([...p, key], `unknown field "${key}" in Any of ${name}`);
      this.message(target, value['value'], [...p, 'value'], NO_RULES);
      return;
    }
    const fields = Object.fromEntries(Object.entries(value).filter(([key]) => key !== '@type'));
    this.message(target, fields, p, NO_RULES);
    if (name === TYPED_STRUCT) this.typedStruct(fields, p);
  }

  /** xds.type.v3.TypedStruct: `value` (a Struct) is the JSON of the message that `type_url` names. */
  private typedStruct(fields: Record<string, unknown>, p: YamlPath): void {
    const url = fields['type_url'] ?? fields['typeUrl'];
    if (typeof url !== 'string') return;
    const target = this.lookupType(url.slice(url.lastIndexOf('/') + 1));
    if (!target) {
      this.fail([...p, 'type_url'], `unknown type ${url}: not a message of the loaded Envoy protos (see ENVOY_PROTO_FILES)`);
      return;
    }
    this.message(target, fields['value'] ?? {}, [...p, 'value'], NO_RULES);
  }

  private lookupType(name: string): protobuf.Type | null {
    try {
      return this.root.lookupType(name);
    } catch {
      return null;
    }
  }

  private checkOneofs(type: protobuf.Type, present: ReadonlyMap<protobuf.Field, string>, p: YamlPath): void {
    for (const oneof of type.oneofsArray) {
      const set = oneof.fieldsArray.filter((f) => present.has(f));
      const second = set[1];
      if (second !== undefined) {
        const keys = set.map((f) => present.get(f) ?? f.name);
        this.fail([...p, present.get(second) ?? second.name], `only one of ${keys.join(', ')} may be set (oneof ${oneof.name} of ${typeName(type)})`);
      }
      const required = (oneof.options as Rules | undefined)?.['(validate.required)'] === true;
      if (set.length === 0 && required) {
        this.fail(p, `one of ${oneof.fieldsArray.map((f) => f.name).join(', ')} is required (oneof ${oneof.name} of ${typeName(type)})`);
      }
    }
  }

  /** Fields whose validate rules make them required even when absent (outside oneofs). */
  private checkRequired(type: protobuf.Type, present: ReadonlyMap<protobuf.Field, string>, p: YamlPath): void {
    for (const field of type.fieldsArray) {
      if (present.has(field) || field.partOf) continue;
      const rules = rulesOf(field);
      const required =
        rules['(validate.rules).message.required'] === true ||
        (ruleNumber(rules, 'string', 'min_len') ?? 0) > 0 ||
        (ruleNumber(rules, 'repeated', 'min_items') ?? 0) > 0;
      if (required) this.fail([...p, field.name], `required field ${field.name} of ${typeName(type)} is missing`);
    }
  }
}
