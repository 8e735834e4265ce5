/**
 * Host patterns of policy `match.hosts` and tool `hosts` (SPEC §2.1, §5), and an index over them.
 *
 * - A pattern without a port is compared with the request host without its port
 *   (`CheckInput.hostname`); a pattern with a port (`api.example.com:8443`, `[::1]:8080`) with the
 *   host as sent (`CheckInput.host`).
 * - Case-insensitive (patterns are lower-cased; CheckInput hosts already are).
 * - `*.example.com` matches one or more leading labels (`a.example.com`, `a.b.example.com`), never
 *   `example.com` itself. `*` is allowed only as the whole first label.
 * - IPv6 literals are written in brackets, as in a Host header: `[::1]`, `[::1]:8080`, and compared
 *   in their RFC 5952 spelling (`[0:0::1]` is `[::1]`).
 * - An IPv4 address is written as its dotted quad (`ipv4SpellingFault`).
 * - A request without a host (the L4 network filter) never matches a host pattern.
 * - A request host with one trailing dot (an absolute DNS name, `a.example.com.`) is that host.
 *
 * {@link HostIndex} finds the patterns matching a host with one map lookup per label of the host,
 * however many patterns are stored.
 */
import { isIPv6 } from 'node:net';

export interface HostPattern {
  /** the pattern as written, lower-cased */
  readonly text: string;
  /** compare with the host including its port (`CheckInput.host`) */
  readonly withPort: boolean;
  /** `*.` + key */
  readonly wildcard: boolean;
  /** the exact host to compare, or for a wildcard the suffix after `*.` */
  readonly key: string;
}

const MAX_HOST_LENGTH = 253;
const LABEL = /^[a-z0-9_-]+$/;
const IPV6 = /^\[[0-9a-fA-F:.]+\]$/;
const PORT = /^[1-9][0-9]{0,4}$/;

/** Why `raw` is not a valid host pattern, or null when it is. */
export function hostPatternFault(raw: string): string | null {
  const parsed = splitHostPattern(raw);
  return typeof parsed === 'string' ? parsed : null;
}

/** Parses a host pattern that {@link hostPatternFault} accepts; a TypeError otherwise. */
export function parseHostPattern(raw: string): HostPattern {
  const parsed = splitHostPattern(raw);
  if (typeof parsed === 'string') throw new TypeError(`invalid host pattern ${JSON.stringify(raw)}: ${parsed}`);
  return parsed;
}

function splitHostPattern(raw: string): HostPattern | string {
  const text = raw.toLowerCase();
  if (text === '') return 'a host pattern must not be empty';
  const split = splitPort(text);
  if (typeof split === 'string') return split;
  const { name, port } = split;
  if (port !== null && (!PORT.test(port) || Number(port) > 65535)) {
    return `invalid port ${JSON.stringify(port)}: expected 1-65535 without leading zeros`;
  }
  let canonical = name;
  if (name.startsWith('[')) {
    const v6 = canonicalIpv6(name);
    if (v6 === null) return `invalid IPv6 literal ${JSON.stringify(name)}`;
    canonical = v6;
  } else {
    const fault = hostnameFault(name);
    if (fault !== null) return fault;
  }
  const wildcard = name.startsWith('*.');
  const key = (wildcard ? name.slice(2) : canonical) + (port === null ? '' : `:${port}`);
  return { text, withPort: port !== null, wildcard, key };
}

function splitPort(text: string): { name: string; port: string | null } | string {
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    const rest = end === -1 ? '' : text.slice(end + 1);
    if (end === -1 || (rest !== '' && !rest.startsWith(':'))) return `invalid IPv6 literal ${JSON.stringify(text)}`;
    return { name: text.slice(0, end + 1), port: rest === '' ? null : rest.slice(1) };
  }
  const colon = text.indexOf(':');
  if (colon === -1) return { name: text, port: null };
  if (text.indexOf(':', colon + 1) !== -1) {
    return 'an IPv6 address must be written in brackets, e.g. "[::1]" or "[::1]:8080"';
  }
  return { name: text.slice(0, colon), port: text.slice(colon + 1) };
}

/**
 * The RFC 5952 spelling of a bracketed IPv6 literal (`[0:0::1]` → `[::1]`, `[2001:DB8:0::1]` →
 * `[2001:db8::1]`), or null when it is not one (zone ids included). Patterns and request hosts are
 * compared in this spelling, so `[0:0::1]` is the host `[::1]` names.
 */
export function canonicalIpv6(bracketed: string): string | null {
  if (!IPV6.test(bracketed) || !isIPv6(bracketed.slice(1, -1))) return null;
  return new URL(`http://${bracketed}/`).hostname;
}

/** A dotted-quad IPv4 address as WHATWG URL serializes one: four decimal parts 0–255, no leading zeros. */
const DOTTED_QUAD = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
/** WHATWG URL's "ends in a number": the last label (past one root dot) is decimal or 0x-hex. */
const ENDS_IN_NUMBER = /(?:^|\.)(?:\d+|0x[0-9a-f]*)\.?$/;

/**
 * Why `name` (lower case) is an IPv4 address in another spelling than its dotted quad, or null.
 * WHATWG URL, curl and inet_aton read `2852039166`, `0xa9.0xfe.0xa9.0xfe`, `0251.0376.0251.0376`,
 * `169.254.43518` and `127.1` as dotted quads (169.254.169.254, 127.0.0.1): compared as written they
 * miss the rule of that address and a catch-all decides. One spelling is compared: the dotted quad.
 */
export function ipv4SpellingFault(name: string): string | null {
  if (!ENDS_IN_NUMBER.test(name)) return null;
  const bare = name.endsWith('.') ? name.slice(0, -1) : name;
  return DOTTED_QUAD.test(bare) ? null : `${JSON.stringify(name)} ends in a number but is not a dotted-quad IPv4 address (write it as four decimal parts 0-255, e.g. 127.0.0.1)`;
}

function hostnameFault(name: string): string | null {
  if (name.length > MAX_HOST_LENGTH) return `a host name is at most ${MAX_HOST_LENGTH} characters`;
  const ipv4 = ipv4SpellingFault(name);
  if (ipv4 !== null) return ipv4;
  const labels = name.split('.');
  for (const [i, label] of labels.entries()) {
    if (label === '*' && i === 0 && labels.length > 1) continue;
    if (label.includes('*')) return '"*" is allowed only as the whole first label, as in "*.example.com"';
    if (label === '') return `empty label in host name ${JSON.stringify(name)}`;
    if (!LABEL.test(label)) {
      return `host name ${JSON.stringify(name)} may contain only letters, digits, "-", "_" and "." (write IDNs in punycode)`;
    }
  }
  return null;
}

/** The naive definition (used to verify single entries and as the oracle in tests). */
export function hostPatternMatches(pattern: HostPattern, host: string | null, hostname: string | null): boolean {
  if (hostname === null || host === null) return false;
  if (hasRootDot(hostname)) [host, hostname] = withoutRootDot(host, hostname);
  const target = pattern.withPort ? host : hostname;
  if (!pattern.wildcard) return target === pattern.key;
  const dot = target.length - pattern.key.length - 1;
  return dot > 0 && target.endsWith(pattern.key) && target.charCodeAt(dot) === 0x2e;
}

/**
 * An absolute DNS name (`admin.svc.`, one trailing dot: the root label) names the same host as
 * `admin.svc`, and Envoy forwards it as sent (unless `strip_trailing_host_dot`); it must select the
 * same rule and tool, or a catch-all rule would govern it instead. Patterns cannot have the dot.
 */
function hasRootDot(hostname: string): boolean {
  return hostname.length > 1 && hostname.charCodeAt(hostname.length - 1) === 0x2e && hostname.charCodeAt(hostname.length - 2) !== 0x2e;
}

/** `admin.svc.:443`, `admin.svc.` → `admin.svc:443`, `admin.svc`. */
function withoutRootDot(host: string, hostname: string): [string, string] {
  const bare = hostname.slice(0, -1);
  return [host.startsWith(hostname) ? bare + host.slice(hostname.length) : host, bare];
}

/** Exact hosts and wildcard suffixes → values, for one kind of target (with or without port). */
class TargetIndex<T> {
  readonly exact = new Map<string, T>();
  readonly wildcard = new Map<string, T>();
  /** the label counts of the wildcard suffixes, so a lookup tries only suffixes of those lengths */
  private readonly suffixLabels = new Set<number>();
  private maxSuffixLabels = 0;

  upsert(pattern: HostPattern, create: () => T): T {
    const map = pattern.wildcard ? this.wildcard : this.exact;
    let value = map.get(pattern.key);
    if (value === undefined) {
      value = create();
      map.set(pattern.key, value);
      if (pattern.wildcard) {
        const labels = pattern.key.split('.').length;
        this.suffixLabels.add(labels);
        this.maxSuffixLabels = Math.max(this.maxSuffixLabels, labels);
      }
    }
    return value;
  }

  visit(target: string, visit: (value: T) => void): void {
    const hit = this.exact.get(target);
    if (hit !== undefined) visit(hit);
    // Suffixes after a dot with at least one character before it, shortest first.
    let labels = 0;
    for (let dot = target.lastIndexOf('.'); dot > 0 && labels < this.maxSuffixLabels; dot = target.lastIndexOf('.', dot - 1)) {
      labels++;
      if (!this.suffixLabels.has(labels)) continue;
      const value = this.wildcard.get(target.slice(dot + 1));
      if (value !== undefined) visit(value);
    }
  }
}

/** Host patterns → values; finds every value whose pattern matches a request host. */
export class HostIndex<T> {
  private readonly withoutPort = new TargetIndex<T>();
  private readonly withPort = new TargetIndex<T>();

  /** The value stored for `pattern`, created with `create()` if absent. */
  upsert(pattern: HostPattern, create: () => T): T {
    return (pattern.withPort ? this.withPort : this.withoutPort).upsert(pattern, create);
  }

  /** Calls `visit` with the value of every stored pattern that matches the request host. */
  visitMatches(host: string | null, hostname: string | null, visit: (value: T) => void): void {
    if (hostname === null || host === null) return;
    if (hasRootDot(hostname)) [host, hostname] = withoutRootDot(host, hostname);
    this.withoutPort.visit(hostname, visit);
    if (host !== hostname) this.withPort.visit(host, visit);
  }

  /** True when some stored pattern matches the request host. */
  matches(host: string | null, hostname: string | null): boolean {
    let found = false;
    this.visitMatches(host, hostname, () => {
      found = true;
    });
    return found;
  }
}
