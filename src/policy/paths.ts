/**
 * Segment-aware path-prefix index for policy matching (SPEC §5: "`path_prefixes` match whole
 * segments"). The semantics are exactly those of `pathHasSegmentPrefix` (src/spiffe/id.ts):
 * - `/` matches every path;
 * - a prefix ending in `/` matches the paths that start with it (`/api/` matches `/api/x`, not `/api`);
 * - any other prefix matches itself and the paths continuing with `/` after it
 *   (`/v1/transfers` matches `/v1/transfers/9`, never `/v1/transfersX`).
 *
 * A {@link SegmentTrie} stores a value per prefix; `visitPrefixesOf(path)` visits the values of every
 * stored prefix that matches `path`, in O(number of segments of `path`), however many prefixes
 * are stored.
 */

/** Why `value` cannot be an HTTP path (`what` = "a path") or path prefix, or null when it can. */
export function httpPathFault(value: string, what = 'a path prefix'): string | null {
  if (!value.startsWith('/')) return `${what} must start with "/"`;
  if (value.includes('?') || value.includes('#')) return `${what} must not contain "?" or "#"`;
  if (/[\u0000-\u0020\u007f]/.test(value)) return `${what} must not contain spaces or control characters`;
  return null;
}

/**
 * Why `value` (valid per {@link httpPathFault}) can never equal a request path as policy matches it,
 * or null. Request paths are normalized (src/check/envoy.ts `normalizePath`: `//` merged,
 * dot-segments removed, escapes of unreserved characters decoded, a bad escape is malformed), so a
 * prefix written otherwise would silently match nothing: a rule meant to restrict would not govern
 * its requests, a tool meant to be blocked would not be resolved. Fail at load instead.
 */
export function unmatchablePathFault(value: string, what = 'a path prefix'): string | null {
  for (let i = value.indexOf('%'); i !== -1; i = value.indexOf('%', i + 1)) {
    const hex = value.slice(i + 1, i + 3);
    if (!/^[0-9a-fA-F]{2}$/.test(hex)) return `${what} has an invalid percent-encoding at index ${i}`;
    const ch = String.fromCharCode(parseInt(hex, 16));
    if (/^[A-Za-z0-9._~-]$/.test(ch)) {
      return `${what} must not percent-encode ${JSON.stringify(ch)} (${JSON.stringify(`%${hex}`)}): requests are matched decoded; write ${JSON.stringify(ch)}`;
    }
  }
  const segments = value.split('/');
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i];
    if (segment === '' && i < segments.length - 1) {
      return `${what} must not have an empty segment ("//"): requests are matched with "//" merged`;
    }
    if (segment === '.' || segment === '..') {
      return `${what} must not have a "." or ".." segment: requests are matched with dot-segments removed`;
    }
  }
  return null;
}

/**
 * A node's children: up to SMALL_FANOUT of them in two parallel arrays (scanned), more in a Map.
 * Most nodes of a big policy have a handful of children; a Map per node made compiling a
 * 50,000-prefix policy allocation- and GC-bound (~30% of its compile time), and a short scan is as
 * fast as a Map lookup at that size.
 */
const SMALL_FANOUT = 8;

interface TrieNode<T> {
  keys: string[] | null;
  nodes: TrieNode<T>[] | null;
  map: Map<string, TrieNode<T>> | null;
  /** the prefix that ends at this node without a trailing `/` */
  prefix: T | undefined;
  /** the prefix that ends at this node with a trailing `/` (needs more path after the `/`) */
  dirPrefix: T | undefined;
}

function newNode<T>(): TrieNode<T> {
  return { keys: null, nodes: null, map: null, prefix: undefined, dirPrefix: undefined };
}

function childOf<T>(node: TrieNode<T>, segment: string): TrieNode<T> | undefined {
  if (node.map !== null) return node.map.get(segment);
  const keys = node.keys;
  if (keys === null) return undefined;
  for (let i = 0; i < keys.length; i++) if (keys[i] === segment) return (node.nodes as TrieNode<T>[])[i];
  return undefined;
}

function addChild<T>(node: TrieNode<T>, segment: string, child: TrieNode<T>): void {
  if (node.map !== null) {
    node.map.set(segment, child);
  } else if (node.keys === null || node.nodes === null) {
    node.keys = [segment];
    node.nodes = [child];
  } else if (node.keys.length < SMALL_FANOUT) {
    node.keys.push(segment);
    node.nodes.push(child);
  } else {
    const map = new Map<string, TrieNode<T>>();
    node.keys.forEach((k, i) => map.set(k, (node.nodes as TrieNode<T>[])[i] as TrieNode<T>));
    map.set(segment, child);
    node.map = map;
    node.keys = null;
    node.nodes = null;
  }
}

export class SegmentTrie<T> {
  private readonly root: TrieNode<T> = newNode();
  /** the value of the prefix `/`, which matches every path */
  private everyPath: T | undefined;

  /** The value stored for `prefix` (which starts with `/`), created with `create()` if absent. */
  upsert(prefix: string, create: () => T): T {
    if (!prefix.startsWith('/')) throw new TypeError(`path prefix must start with "/": ${JSON.stringify(prefix)}`);
    if (prefix === '/') return (this.everyPath ??= create());
    const dir = prefix.endsWith('/');
    const body = dir ? prefix.slice(1, -1) : prefix.slice(1);
    let node = this.root;
    for (const segment of body.split('/')) {
      let child = childOf(node, segment);
      if (child === undefined) {
        child = newNode();
        addChild(node, segment, child);
      }
      node = child;
    }
    if (dir) return (node.dirPrefix ??= create());
    return (node.prefix ??= create());
  }

  /** Calls `visit` with the value of every stored prefix that matches `path`. */
  visitPrefixesOf(path: string, visit: (value: T) => void): void {
    if (this.everyPath !== undefined) visit(this.everyPath);
    if (path.charCodeAt(0) !== 0x2f) return;
    let node = this.root;
    let pos = 1;
    for (;;) {
      const slash = path.indexOf('/', pos);
      const segment = slash === -1 ? path.slice(pos) : path.slice(pos, slash);
      const child = childOf(node, segment);
      if (child === undefined) return;
      node = child;
      if (node.prefix !== undefined) visit(node.prefix);
      if (slash === -1) return;
      if (node.dirPrefix !== undefined) visit(node.dirPrefix);
      pos = slash + 1;
    }
  }
}
