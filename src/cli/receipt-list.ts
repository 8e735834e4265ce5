/**
 * `chio receipt list` (SPEC §6, §10): receipts matching AND-combined filters, ordered by seq, from
 * the local SQLite receipt store (`--store`, default ./chio-data/receipts.db) or from a running
 * service's query API (`--control-url`, `GET /v1/receipts/query`, Bearer token from `--token-file`
 * or the CHIO_ADMIN_TOKEN environment variable — never from the command line). A table for people,
 * NDJSON (one receipt per line, its JCS text) with `--json`; `--all` follows the cursors.
 *
 * Exit codes: 0 listed (also when nothing matches); 2 bad usage, a bad filter, an unreadable store
 * or a service that refuses, cannot be reached or answers something other than receipt pages (a
 * receipt without the table's fields, a cursor that does not move forward).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { CAPABILITY_ID_PATTERN } from '../capability/token.js';
import { ChioError, describe } from '../errors.js';
import { MAX_QUERY_LIMIT, parseReceiptQuery, type QueryParameter, type ReceiptPage } from '../receipt/query.js';
import { SqliteReceiptStore } from '../receipt/store.js';
import { usageError } from './args.js';
import { EXIT_OK, EXIT_USAGE, type CliIO } from './io.js';

export const DEFAULT_STORE = './chio-data/receipts.db';
export const TOKEN_ENV = 'CHIO_ADMIN_TOKEN';

/** Each filter flag and the query API parameter it sets. */
const FILTER_FLAGS = {
  'workload-uri': 'workloadUri',
  'trust-domain': 'trustDomain',
  'path-prefix': 'pathPrefix',
  verdict: 'verdict',
  rule: 'rule',
  tool: 'tool',
  'capability-id': 'capabilityId',
  tier: 'tier',
  since: 'since',
  until: 'until',
  limit: 'limit',
  cursor: 'cursor',
} as const satisfies Record<string, QueryParameter>;
type FilterFlag = keyof typeof FILTER_FLAGS;

const OPTIONS = {
  ...(Object.fromEntries(Object.keys(FILTER_FLAGS).map((f) => [f, { type: 'string' }])) as Record<FilterFlag, { type: 'string' }>),
  all: { type: 'boolean' },
  store: { type: 'string' },
  'control-url': { type: 'string' },
  'token-file': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const LIST_HELP = `usage: chio receipt list [filters] [--all] [--store FILE | --control-url URL [--token-file FILE]] [--json]

Lists receipts matching every given filter, ordered by seq.
Filters:
  --workload-uri URI     exact SPIFFE ID of the workload (spiffe://prod.chio/payments/worker)
  --trust-domain TD      the workload's trust domain (prod.chio)
  --path-prefix PATH     the workload's SPIFFE path, whole segments (/payments/worker matches
                         /payments/worker and /payments/worker/x, never /payments/workerX)
  --verdict allow|deny   --rule NAME   --tool NAME   --capability-id cap-<ULID>
  --tier none|basic|attested|verified
  --since TIME           RFC 3339, inclusive (2026-11-24T00:00:00Z)
  --until TIME           RFC 3339, exclusive
  --limit N              receipts per page, 1 to ${MAX_QUERY_LIMIT} (default 50; ${MAX_QUERY_LIMIT} with --all)
  --cursor C             continue after a previous page (its "next page" cursor)
  --all                  follow the cursors to the last page
Source (default: the store ${DEFAULT_STORE}):
  --store FILE           a SQLite receipt store (receipts.sinks type sqlite)
  --control-url URL      a running service's admin listener (http://127.0.0.1:9192); the Bearer
  --token-file FILE      token is read from FILE, else from $${TOKEN_ENV}. A service with a postgres
                         sink answers from the central store: every replica's receipts, ordered
                         by (time, chain, seq)
Output: a table (seq, time, verdict, rule, tool, reason, workload); --json prints one receipt per
line (NDJSON, each its canonical JSON). Without --all, the cursor of the next page goes to stderr.
Exit status: 0 listed (also when nothing matches), 2 bad usage, a bad filter or an unreadable source.
`;

/** One page of receipts (as JCS texts) per call. */
type PageSource = (params: ReadonlyArray<readonly [QueryParameter, string]>) => Promise<ReceiptPage>;

/** Where the pages come from; `name` (the store file or the service's origin) is for messages. */
interface Source {
  readonly name: string;
  readonly pages: PageSource;
  readonly close: () => void;
}

export async function listReceipts(args: string[], io: CliIO): Promise<number> {
  let values: ReturnType<typeof parse>;
  try {
    values = parse(args);
  } catch (err) {
    return usageError(io, 'receipt list', describe(err), LIST_HELP);
  }
  if (values.help) {
    io.stdout(LIST_HELP);
    return EXIT_OK;
  }
  const params: Array<readonly [QueryParameter, string]> = [];
  for (const flag of Object.keys(FILTER_FLAGS) as FilterFlag[]) {
    const value = values[flag];
    if (value !== undefined) params.push([FILTER_FLAGS[flag], value]);
  }
  if (values.all && values.limit === undefined) params.push(['limit', String(MAX_QUERY_LIMIT)]);
  const capabilityId = values['capability-id'];
  if (capabilityId !== undefined && !CAPABILITY_ID_PATTERN.test(capabilityId)) {
    // the query takes any text and matches nothing: a typo read as "no receipts match"
    return usageError(io, 'receipt list', `--capability-id ${JSON.stringify(capabilityId)} is not a capability id (cap- and a ULID, as \`chio capability inspect\` shows it)`, LIST_HELP);
  }
  try {
    parseReceiptQuery(params); // the same validation as the API, reported with the flag's name
  } catch (err) {
    if (err instanceof ChioError && err.code === 'bad_request') return usageError(io, 'receipt list', flagMessage(err), LIST_HELP);
    throw err;
  }
  if (values.store !== undefined && values['control-url'] !== undefined) {
    return usageError(io, 'receipt list', 'give --store or --control-url, not both', LIST_HELP);
  }
  if (values['token-file'] !== undefined && values['control-url'] === undefined) {
    return usageError(io, 'receipt list', '--token-file goes with --control-url', LIST_HELP);
  }

  let source: Source;
  try {
    source = values['control-url'] !== undefined ? apiSource(values['control-url'], values['token-file'], io) : storeSource(values.store ?? DEFAULT_STORE, io);
  } catch (err) {
    return failure(io, err);
  }
  try {
    const printer = values.json ? ndjson(io) : table(io, source.name);
    // a cursor handed out twice would have --all ask for the same pages forever
    const cursors = new Set(values.cursor === undefined ? [] : [values.cursor]);
    let page = await source.pages(params);
    for (;;) {
      printer.page(page.receipts);
      if (!values.all || page.nextCursor === null) break;
      if (cursors.has(page.nextCursor)) {
        throw new ChioError('io_error', `${source.name} answered the cursor ${page.nextCursor} again: its pages do not move forward; stopped`);
      }
      cursors.add(page.nextCursor);
      page = await source.pages([...params.filter(([k]) => k !== 'cursor'), ['cursor', page.nextCursor]]);
    }
    printer.end();
    if (page.nextCursor !== null) io.stderr(`more receipts: continue with --cursor ${page.nextCursor} (or list them all with --all)\n`);
    return EXIT_OK;
  } catch (err) {
    return failure(io, err);
  } finally {
    source.close();
  }
}

function parse(args: string[]) {
  return parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }).values;
}

/** `--workload-uri: …` for an error about the API parameter workloadUri. */
function flagMessage(err: ChioError): string {
  const flag = (Object.keys(FILTER_FLAGS) as FilterFlag[]).find((f) => FILTER_FLAGS[f] === err.field);
  const message = err.message.replace(/^query parameter \w+: /, '');
  return flag === undefined ? message : `--${flag}: ${message}`;
}

function failure(io: CliIO, err: unknown): number {
  if (!(err instanceof ChioError)) throw err;
  io.stderr(`chio receipt list: ${err.code}: ${err.message}\n`);
  return EXIT_USAGE;
}

/** `chio receipt show --store FILE`: the receipt with this id in a SQLite store, parsed; undefined when absent. */
export async function findStoredReceipt(file: string, id: string): Promise<unknown> {
  const store = SqliteReceiptStore.open(file);
  try {
    const jcs = await store.get(id);
    return jcs === null ? undefined : (JSON.parse(jcs) as unknown);
  } finally {
    store.close();
  }
}

function storeSource(file: string, io: CliIO): Source {
  const store = SqliteReceiptStore.open(path.resolve(io.cwd, file));
  return { name: file, pages: (params) => store.query(parseReceiptQuery(params)), close: () => store.close() };
}

const pageSchema = z.object({ receipts: z.array(z.record(z.string(), z.unknown())), nextCursor: z.string().nullable() });
const errorSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

function apiSource(controlUrl: string, tokenFile: string | undefined, io: CliIO): Source {
  let base: URL;
  try {
    base = new URL('/v1/receipts/query', controlUrl);
  } catch {
    throw new ChioError('usage', `--control-url ${JSON.stringify(controlUrl)} is not a URL (e.g. http://127.0.0.1:9192)`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new ChioError('usage', `--control-url must be http:// or https://, got ${base.protocol}`);
  const token = readToken(tokenFile, io);
  const pages: PageSource = async (params) => {
    const url = new URL(base);
    for (const [k, v] of params) url.searchParams.set(k, v);
    let res: Response;
    try {
      res = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
    } catch (err) {
      throw new ChioError('io_error', `cannot reach ${base.origin}: ${describe((err as { cause?: unknown }).cause ?? err)}`);
    }
    const body: unknown = await res.json().catch(() => null);
    if (!res.ok) {
      const e = errorSchema.safeParse(body);
      throw e.success ? new ChioError('io_error', `${base.origin} answered ${res.status} ${e.data.error.code}: ${e.data.error.message}`) : new ChioError('io_error', `${base.origin} answered HTTP ${res.status}`);
    }
    const page = pageSchema.safeParse(body);
    if (!page.success) throw new ChioError('io_error', `${base.origin} answered something that is not a receipt page`);
    return { receipts: page.data.receipts.map((r) => JSON.stringify(r)), nextCursor: page.data.nextCursor };
  };
  return { name: base.origin, pages, close: () => undefined };
}

function readToken(tokenFile: string | undefined, io: CliIO): string {
  if (tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(path.resolve(io.cwd, tokenFile), 'utf8').trim();
    } catch (err) {
      throw new ChioError('file_not_found', `cannot read --token-file ${tokenFile}: ${describe(err)}`);
    }
    if (text === '') throw new ChioError('usage', `--token-file ${tokenFile} is empty`);
    return text;
  }
  const env = io.env[TOKEN_ENV]?.trim();
  if (!env) throw new ChioError('usage', `no admin token: give --token-file FILE or set ${TOKEN_ENV}`);
  return env;
}

interface Printer {
  page(receipts: readonly string[]): void;
  end(): void;
}

/** NDJSON: each receipt's canonical JSON on its own line (JSON.stringify of a parsed JCS text is that text). */
function ndjson(io: CliIO): Printer {
  return {
    page(receipts) {
      if (receipts.length > 0) io.stdout(`${receipts.join('\n')}\n`);
    },
    end: () => undefined,
  };
}

const receiptRow = z.object({
  seq: z.number(),
  timestamp: z.string(),
  verdict: z.string(),
  rule: z.string().nullable(),
  tool: z.string().nullable(),
  reasons: z.array(z.object({ code: z.string() })),
  runtimeAttestation: z.object({ workloadIdentity: z.object({ uri: z.string() }).nullable() }),
});

const COLUMNS = ['SEQ', 'TIME', 'VERDICT', 'RULE', 'TOOL', 'REASON', 'WORKLOAD'] as const;

/**
 * A table, columns sized to their content, printed as pages arrive (header once). A receipt without
 * the columns' fields (a service answering something else) is receipt_malformed, not a crash.
 */
function table(io: CliIO, from: string): Printer {
  let rows = 0;
  return {
    page(receipts) {
      const cells = receipts.map((text, i) => {
        const row = receiptRow.safeParse(JSON.parse(text));
        if (!row.success) {
          const issue = row.error.issues[0];
          const where = issue === undefined || issue.path.length === 0 ? '' : `${issue.path.join('.')}: `;
          throw new ChioError('receipt_malformed', `receipt ${rows + i + 1} from ${from} is not a receipt: ${where}${issue?.message ?? 'unexpected shape'}`);
        }
        const r = row.data;
        return [String(r.seq), r.timestamp, r.verdict, r.rule ?? '-', r.tool ?? '-', r.reasons[0]?.code ?? '-', r.runtimeAttestation.workloadIdentity?.uri ?? '-'];
      });
      if (cells.length === 0) return;
      const all = rows === 0 ? [[...COLUMNS], ...cells] : cells;
      const widths = COLUMNS.map((_, i) => Math.max(...[[...COLUMNS], ...cells].map((row) => row[i]?.length ?? 0)));
      io.stdout(all.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n') + '\n');
      rows += cells.length;
    },
    end() {
      io.stdout(rows === 0 ? 'no receipts match\n' : `${rows} receipt(s)\n`);
    },
  };
}
