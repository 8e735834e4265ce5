/**
 * X.509 name constraints on the CA certificates of an X509-SVID's path
 * (RFC 5280 §4.2.1.10 the extension, §6.1.3 (b)(c) / §6.1.4 (g) their processing; X509-SVID
 * https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md §4.4 "Name Constraints").
 *
 * A SPIFFE PKI uses them to bound a signing certificate to trust domains: an enterprise root that
 * lets an intermediate issue only `spiffe://prod.example.org/…` names carries a permitted URI
 * subtree `prod.example.org`. Ignoring that would admit a workload the CA was not allowed to vouch
 * for, so chio processes the two kinds an SVID's names can have, as go-spiffe does through Go's x509:
 * - `uniformResourceIdentifier`: matched against the URI's host (for a SPIFFE ID, its trust
 *   domain). `host.example` matches that host only; `.example` matches any host below it;
 * - `dNSName`: `example.com` matches it and every name below it; `.example.com` only names below
 *   it; the empty name matches every DNS name.
 * Every other kind (directoryName, iPAddress, rfc822Name, …) and a subtree with a minimum or
 * maximum (RFC 5280: minimum MUST be 0, maximum MUST be absent) is recorded as `unsupported`: a
 * CA whose critical constraints hold one is not used (fail closed, like Go's "unhandled critical
 * extension"); in a non-critical extension they are ignored, as the extension allows.
 *
 * Names are compared case-insensitively (DNS, RFC 4343). A name of a kind with permitted subtrees
 * must match one of them; no name may match an excluded subtree.
 */
import { contextTag, DerError, DerTag, tagName, type DerReader, type Tlv } from './der.js';

export const OID_NAME_CONSTRAINTS = '2.5.29.30';

export type Subtree =
  | { readonly kind: 'uri' | 'dns'; readonly name: string }
  /** a kind or form chio does not process; `what` names it */
  | { readonly kind: 'unsupported'; readonly what: string };

export interface NameConstraints {
  readonly permitted: readonly Subtree[];
  readonly excluded: readonly Subtree[];
  /** whether the extension is marked critical (RFC 5280 requires it) */
  readonly critical: boolean;
}

/** The names of one certificate that constraints apply to. */
export interface ConstrainedNames {
  /** URI SANs (latin1, one character per byte) */
  readonly uris: readonly string[];
  /** DNS SANs (latin1) */
  readonly dns: readonly string[];
}

const TAG_PERMITTED = contextTag(0, true);
const TAG_EXCLUDED = contextTag(1, true);
const TAG_MINIMUM = contextTag(0, false);
const TAG_MAXIMUM = contextTag(1, false);

/** GeneralName CHOICE tags (RFC 5280 §4.2.1.6) by name, for messages. */
const GENERAL_NAME_KINDS: ReadonlyMap<number, string> = new Map([
  [contextTag(0, true), 'otherName'],
  [contextTag(1, false), 'rfc822Name'],
  [contextTag(2, false), 'dNSName'],
  [contextTag(3, true), 'x400Address'],
  [contextTag(4, true), 'directoryName'],
  [contextTag(5, true), 'ediPartyName'],
  [contextTag(6, false), 'uniformResourceIdentifier'],
  [contextTag(7, false), 'iPAddress'],
  [contextTag(8, false), 'registeredID'],
]);
const TAG_DNS = contextTag(2, false);
const TAG_URI = contextTag(6, false);

/**
 * NameConstraints ::= SEQUENCE { permittedSubtrees [0] GeneralSubtrees OPTIONAL,
 * excludedSubtrees [1] GeneralSubtrees OPTIONAL }, from an extension value. Throws DerError for
 * what is not a well-formed NameConstraints (including an empty one, which RFC 5280 forbids).
 */
export function readNameConstraints(r: DerReader, value: Tlv, critical: boolean): NameConstraints {
  const parts = r.children(r.expect(value, DerTag.SEQUENCE, 'NameConstraints'));
  let at = 0;
  const permitted = parts[at]?.tag === TAG_PERMITTED ? readSubtrees(r, parts[at++] as Tlv) : [];
  const excluded = parts[at]?.tag === TAG_EXCLUDED ? readSubtrees(r, parts[at++] as Tlv) : [];
  const extra = parts[at];
  if (extra !== undefined) throw new DerError(`unexpected ${tagName(extra.tag)} in NameConstraints`, extra.offset);
  if (parts.length === 0) throw new DerError('NameConstraints is empty (RFC 5280 §4.2.1.10 forbids it)', value.offset);
  return { permitted, excluded, critical };
}

/** GeneralSubtrees ::= SEQUENCE SIZE (1..MAX) OF GeneralSubtree */
function readSubtrees(r: DerReader, list: Tlv): Subtree[] {
  const subtrees = r.children(list);
  if (subtrees.length === 0) throw new DerError('GeneralSubtrees is empty', list.offset);
  return subtrees.map((s) => readSubtree(r, s));
}

/** GeneralSubtree ::= SEQUENCE { base GeneralName, minimum [0] DEFAULT 0, maximum [1] OPTIONAL } */
function readSubtree(r: DerReader, subtree: Tlv): Subtree {
  const [base, ...rest] = r.children(r.expect(subtree, DerTag.SEQUENCE, 'GeneralSubtree'));
  if (base === undefined) throw new DerError('GeneralSubtree has no base', subtree.offset);
  const kind = GENERAL_NAME_KINDS.get(base.tag);
  if (kind === undefined) throw new DerError(`GeneralSubtree base is ${tagName(base.tag)}, not a GeneralName`, base.offset);
  let limits = 0;
  for (const field of rest) {
    if (field.tag !== TAG_MINIMUM && field.tag !== TAG_MAXIMUM) {
      throw new DerError(`unexpected ${tagName(field.tag)} in GeneralSubtree`, field.offset);
    }
    limits++;
  }
  if (limits > 0) return { kind: 'unsupported', what: `a ${kind} subtree with a minimum or maximum` };
  if (base.tag !== TAG_DNS && base.tag !== TAG_URI) return { kind: 'unsupported', what: kind };
  const name = Buffer.from(r.contents(base)).toString('latin1');
  return { kind: base.tag === TAG_DNS ? 'dns' : 'uri', name: name.toLowerCase() };
}

/** RFC 5280 §4.2.1.10 dNSName: `c` matches itself and names below it; `.c` only names below; `` everything. */
export function dnsNameMatches(name: string, constraint: string): boolean {
  const n = name.toLowerCase();
  const c = constraint.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return n.length > c.length && n.endsWith(c);
  return n === c || (n.length > c.length && n.endsWith(c) && n.charAt(n.length - c.length - 1) === '.');
}

/** RFC 5280 §4.2.1.10 uniformResourceIdentifier, on the URI's host: `h` that host only; `.d` any host below d. */
export function uriHostMatches(host: string, constraint: string): boolean {
  const h = host.toLowerCase();
  const c = constraint.toLowerCase();
  if (c.startsWith('.')) return h.length > c.length && h.endsWith(c);
  return h === c;
}

/** RFC 3986 §3.2: the host of `scheme://[userinfo@]host[:port]…`, or null when there is none. */
export function uriHost(uri: string): string | null {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[^/?#@]*@)?([^/?#:@[\]]+)(?::\d*)?(?:[/?#]|$)/.exec(uri);
  return m === null ? null : (m[1] as string);
}

/** A subtree of a kind chio processes. */
type NameSubtree = Subtree & { readonly kind: 'uri' | 'dns' };

/** Whether the constraints hold any subtree (permitted or excluded) of this kind. */
function constrains(nc: NameConstraints, kind: NameSubtree['kind']): boolean {
  return nc.permitted.some((s) => s.kind === kind) || nc.excluded.some((s) => s.kind === kind);
}

function matches(subtree: NameSubtree, value: string): boolean {
  return subtree.kind === 'dns' ? dnsNameMatches(value, subtree.name) : uriHostMatches(value, subtree.name);
}

function describeSubtrees(subtrees: readonly Subtree[]): string {
  return subtrees.map((s) => (s.kind === 'unsupported' ? s.what : JSON.stringify(s.name))).join(', ');
}

/**
 * Why the constraints do not allow `names` (of the certificate called `subject`), or null when
 * they do. A constraint kind chio does not process makes a critical extension unusable.
 */
export function nameConstraintsProblem(nc: NameConstraints, names: ConstrainedNames, subject: string): string | null {
  if (nc.critical) {
    const unsupported = [...nc.permitted, ...nc.excluded].find((s): s is Subtree & { kind: 'unsupported' } => s.kind === 'unsupported');
    if (unsupported !== undefined) {
      return `has critical nameConstraints with ${unsupported.what}, which chio does not process (RFC 5280 §4.2 requires rejecting it)`;
    }
  }
  const values: Array<{ kind: NameSubtree['kind']; value: string; shown: string }> = [];
  for (const uri of names.uris) {
    const host = uriHost(uri);
    if (host === null) {
      if (constrains(nc, 'uri')) {
        return `has URI nameConstraints, and ${subject} has a URI SAN without a host (${JSON.stringify(uri)}) to check against them`;
      }
      continue;
    }
    values.push({ kind: 'uri', value: host, shown: `URI SAN ${JSON.stringify(uri)}` });
  }
  const dnsConstrained = constrains(nc, 'dns');
  for (const dns of names.dns) {
    // `x.evil.test.` or `a..b` would slip past a subtree `evil.test`: under DNS constraints only plain host names pass (as in Go's x509)
    if (dnsConstrained && (dns === '' || dns.endsWith('.') || dns.startsWith('.') || dns.includes('..'))) {
      return `has DNS nameConstraints, and ${subject} has a DNS SAN ${JSON.stringify(dns)} that is not a plain host name to check against them`;
    }
    values.push({ kind: 'dns', value: dns, shown: `DNS SAN ${JSON.stringify(dns)}` });
  }
  for (const v of values) {
    const kindName = v.kind === 'uri' ? 'URI' : 'DNS';
    const permitted = nc.permitted.filter((s): s is NameSubtree => s.kind === v.kind);
    if (permitted.length > 0 && !permitted.some((s) => matches(s, v.value))) {
      return `does not permit the ${v.shown} of ${subject} (permitted ${kindName} subtrees: ${describeSubtrees(permitted)})`;
    }
    const excluded = nc.excluded.find((s): s is NameSubtree => s.kind === v.kind && matches(s, v.value));
    if (excluded !== undefined) {
      return `excludes the ${v.shown} of ${subject} (excluded ${kindName} subtree ${JSON.stringify(excluded.name)})`;
    }
  }
  return null;
}
