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

interface TrieNode<T> {
  children: Map<string, TrieNode<T>> | null;
  /** the prefix that ends at this node without a trailing `/` */
  prefix: T | undefined;
  /** the prefix that ends at this node with a trailing `/` (needs more path after the `/`) */
  dirPrefix: T | undefined;
}

function newNode<T>(): TrieNode<T> {
  return { children: null, prefix: undefined, dirPrefix: undefined };
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
      node.children ??= new Map();
      let child = node.children.get(segment);
      if (!child) {
        child = newNode();
        node.children.set(segment, child);
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
      const child = node.children?.get(segment);
      if (!child) return;
      node = child;
      if (node.prefix !== undefined) visit(node.prefix);
      if (slash === -1) return;
      if (node.dirPrefix !== undefined) visit(node.dirPrefix);
      pos = slash + 1;
    }
  }
}
