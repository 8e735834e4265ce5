/**
 * Tool (operation) resolution (SPEC §5 `tools`): a request maps to the first tool, in file order,
 * one of whose entries matches it; an entry matches when every condition it has holds:
 * `methods` (any of), `path` (exact), `path_prefix` (segment-aware), `hosts` (any of, see
 * ./hosts.ts), `grpc_service`, `grpc_method` (exact, against the request's gRPC call).
 *
 * Compiled, not scanned: each entry is filed under its most selective condition (gRPC service,
 * gRPC method, exact path, path prefix trie, host index, method); a Check gathers only the lists
 * its request can reach, verifies their entries in tool order, and keeps the lowest tool index.
 */
import type { CheckInput } from '../check/request.js';
import { pathHasSegmentPrefix } from '../spiffe/id.js';
import { HostIndex, type HostPattern } from './hosts.js';
import { SegmentTrie } from './paths.js';

export interface ToolEntrySpec {
  /** upper-case compare; null = any method */
  readonly methods: readonly string[] | null;
  readonly path: string | null;
  readonly pathPrefix: string | null;
  readonly hosts: readonly HostPattern[] | null;
  readonly grpcService: string | null;
  readonly grpcMethod: string | null;
}

export interface ToolSpec {
  readonly name: string;
  readonly entries: readonly ToolEntrySpec[];
}

class ToolEntry {
  private readonly methods: ReadonlySet<string> | null;
  private readonly hosts: HostIndex<true> | null;

  constructor(
    readonly toolIndex: number,
    readonly spec: ToolEntrySpec,
  ) {
    this.methods = spec.methods === null ? null : new Set(spec.methods.map((m) => m.toUpperCase()));
    this.hosts = spec.hosts === null ? null : hostSet(spec.hosts);
  }

  matches(input: CheckInput, method: string | null, host: string | null, hostname: string | null): boolean {
    const s = this.spec;
    if (this.methods !== null && (method === null || !this.methods.has(method))) return false;
    if (s.path !== null && input.path !== s.path) return false;
    if (s.pathPrefix !== null && (input.path === null || !pathHasSegmentPrefix(input.path, s.pathPrefix))) return false;
    if (this.hosts !== null && !this.hosts.matches(host, hostname)) return false;
    if (s.grpcService !== null && input.grpc?.service !== s.grpcService) return false;
    if (s.grpcMethod !== null && input.grpc?.method !== s.grpcMethod) return false;
    return true;
  }
}

function hostSet(patterns: readonly HostPattern[]): HostIndex<true> {
  const index = new HostIndex<true>();
  for (const pattern of patterns) index.upsert(pattern, () => true);
  return index;
}

type EntryList = ToolEntry[];

function push<K>(map: Map<K, EntryList>, key: K, entry: ToolEntry): void {
  const list = map.get(key);
  if (list) list.push(entry);
  else map.set(key, [entry]);
}

export class ToolResolver {
  private readonly names: readonly string[];
  private readonly byGrpcService = new Map<string, EntryList>();
  private readonly byGrpcMethod = new Map<string, EntryList>();
  private readonly byPath = new Map<string, EntryList>();
  private readonly byPathPrefix = new SegmentTrie<EntryList>();
  private readonly byHost = new HostIndex<EntryList>();
  private readonly byMethod = new Map<string, EntryList>();

  /** `tools` in file order. */
  constructor(tools: readonly ToolSpec[]) {
    this.names = tools.map((t) => t.name);
    tools.forEach((tool, index) => {
      for (const spec of tool.entries) this.file(new ToolEntry(index, spec));
    });
  }

  /** The name of the first tool with a matching entry, or null. */
  resolve(input: CheckInput): string | null {
    const index = this.firstMatchIndex(input);
    return index === -1 ? null : (this.names[index] ?? null);
  }

  /** The index (file order) of the first tool with a matching entry, or -1. */
  firstMatchIndex(input: CheckInput): number {
    const method = input.method === null ? null : input.method.toUpperCase();
    const host = input.host === null ? null : input.host.toLowerCase();
    const hostname = input.hostname === null ? null : input.hostname.toLowerCase();
    let best = Number.POSITIVE_INFINITY;
    const scan = (list: EntryList | undefined): void => {
      if (list === undefined) return;
      for (const entry of list) {
        if (entry.toolIndex >= best) return;
        if (entry.matches(input, method, host, hostname)) {
          best = entry.toolIndex;
          return;
        }
      }
    };
    if (input.grpc !== null) {
      scan(this.byGrpcService.get(input.grpc.service));
      scan(this.byGrpcMethod.get(input.grpc.method));
    }
    if (input.path !== null) {
      scan(this.byPath.get(input.path));
      this.byPathPrefix.visitPrefixesOf(input.path, scan);
    }
    this.byHost.visitMatches(host, hostname, scan);
    if (method !== null) scan(this.byMethod.get(method));
    return best === Number.POSITIVE_INFINITY ? -1 : best;
  }

  /** Files `entry` under its most selective condition; every entry has at least one. */
  private file(entry: ToolEntry): void {
    const s = entry.spec;
    if (s.grpcService !== null) push(this.byGrpcService, s.grpcService, entry);
    else if (s.grpcMethod !== null) push(this.byGrpcMethod, s.grpcMethod, entry);
    else if (s.path !== null) push(this.byPath, s.path, entry);
    else if (s.pathPrefix !== null) this.byPathPrefix.upsert(s.pathPrefix, () => []).push(entry);
    else if (s.hosts !== null) for (const h of s.hosts) this.byHost.upsert(h, () => []).push(entry);
    else if (s.methods !== null) for (const m of new Set(s.methods.map((x) => x.toUpperCase()))) push(this.byMethod, m, entry);
    else throw new TypeError(`tool ${JSON.stringify(this.names[entry.toolIndex])} has an entry without any condition`);
  }
}
