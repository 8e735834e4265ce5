/**
 * X.509-SVID chain verification against the bundle of the SVID's OWN trust domain
 * (SPEC §4; X509-SVID https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md §4.3,
 * §5.1; RFC 5280 §6.1 path validation, §4.2.1.3 keyUsage, §4.2.1.9 basicConstraints).
 *
 * Path building is a bounded depth-first search from the leaf: at each step a bundle root
 * that issued the certificate ends the path; otherwise a presented or configured intermediate
 * that issued it is taken and the search continues from it. A candidate issuer must:
 * - have the certificate's issuer name as its subject and match its authority key identifier
 *   (node:crypto `checkIssued`), and have signed it (`verify(publicKey)`);
 * - be a CA (basicConstraints cA=true) with keyCertSign (X509-SVID §4.3);
 * - be within its validity at the decision time;
 * - allow the number of intermediates below it (pathLenConstraint), and the whole path is at
 *   most {@link MAX_PATH_INTERMEDIATES} intermediates long; a search weighs at most
 *   {@link MAX_ISSUER_CHECKS} candidates, from at most {@link MAX_PRESENTED_INTERMEDIATES} presented
 *   intermediates, each certificate once;
 * - carry no critical extension chio does not process (RFC 5280 §6.1.4 (o));
 * - permit, by its nameConstraints, the URI and DNS names of the leaf and of every intermediate
 *   below it that is not self-issued (RFC 5280 §6.1.3 (b)(c); ./name-constraints.ts).
 * Roots are the anchors of the trust domain's bundle only: never another trust domain's.
 *
 * Failures are `deny('untrusted_svid', why)`; a bundle whose X.509 roots all expired is
 * `deny('bundle_expired')`. {@link X509ChainVerifier} caches each outcome per (leaf, presented
 * chain, bundle generation) together with the time window in which the outcome cannot change,
 * so a repeated SVID costs a WeakMap lookup and two comparisons.
 */
import type { X509Certificate } from 'node:crypto';
import { deny, DenyError } from '../errors.js';
import { parseCaCertificate, type BundleSet, type CaCertificate, type TrustBundle } from './bundle.js';
import { nameConstraintsProblem, type ConstrainedNames, type NameConstraints } from './name-constraints.js';
import { checkValidity, parseSvidLeaf, type SvidLeaf } from './x509-svid.js';

/** More intermediates than this between leaf and root is not a sane SPIFFE PKI. */
export const MAX_PATH_INTERMEDIATES = 8;
/** A presented chain with more intermediates than this is refused before any search. */
export const MAX_PRESENTED_INTERMEDIATES = 16;
/**
 * The most candidate issuers one path search weighs (each a signature check at worst). A search
 * through presented CAs that issue each other tries every ordering of them: eight copies of one
 * self-signed CA took ~11 s of the event loop. A real SPIFFE path weighs a handful (a CA rotation
 * doubles a level); past the budget the search fails `untrusted_svid`.
 */
export const MAX_ISSUER_CHECKS = 32;

export interface VerifiedChain {
  /** the anchor the path ends at */
  readonly root: CaCertificate;
  /** intermediates from the leaf's issuer upwards */
  readonly intermediates: readonly CaCertificate[];
}

/** The instants at which some validity comparison of a verification would flip. */
class ValidityWindow {
  /** the outcome holds for times in [from, until) */
  from = -Infinity;
  until = Infinity;

  constructor(private readonly now: number) {}

  /** now against [notBefore, notAfter] (both inclusive, RFC 5280 §4.1.2.5), recording the edges. */
  validity(notBefore: number, notAfter: number): 'valid' | 'expired' | 'not_yet_valid' {
    this.edge(notBefore);
    this.edge(notAfter + 1);
    if (this.now > notAfter) return 'expired';
    return this.now < notBefore ? 'not_yet_valid' : 'valid';
  }

  /** records a comparison `now < t`. */
  edge(t: number): void {
    if (t <= this.now) this.from = Math.max(this.from, t);
    else this.until = Math.min(this.until, t);
  }
}

interface Failure {
  readonly depth: number;
  readonly message: string;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** The RDNs of a name in DER order, `, `-separated and length-bounded (node prints one per line). */
function dn(text: string): string {
  const flat = text.split('\n').filter((l) => l !== '').join(', ');
  return JSON.stringify(flat.length > 200 ? `${flat.slice(0, 200)}…` : flat);
}

function caName(ca: CaCertificate, role: 'root' | 'intermediate'): string {
  return `${role} ${dn(ca.x509.subject)}`;
}

class PathSearch {
  readonly window: ValidityWindow;
  private best: Failure | null = null;
  private checks = 0;

  constructor(
    private readonly bundle: TrustBundle,
    private readonly pool: readonly CaCertificate[],
    now: number,
    private readonly leafName: string,
    private readonly leafNames: ConstrainedNames,
  ) {
    this.window = new ValidityWindow(now);
  }

  run(leaf: X509Certificate): VerifiedChain {
    const found = this.from(leaf, this.leafName, []);
    if (found !== null) return found;
    throw deny('untrusted_svid', this.best?.message ?? `${this.leafName} does not chain to the trust bundle of ${this.bundle.trustDomain}`);
  }

  private fail(depth: number, message: string): void {
    if (this.best === null || depth > this.best.depth) this.best = { depth, message };
  }

  /** A path from `cert` (with `below` intermediates under it) to a root, or null. */
  private from(cert: X509Certificate, name: string, below: readonly CaCertificate[]): VerifiedChain | null {
    const depth = below.length;
    let candidates = 0;
    for (const root of this.bundle.x509Authorities) {
      if (cert.issuer !== root.x509.subject) continue;
      candidates++;
      const problem = this.issuerProblem(cert, name, root, 'root', below);
      if (problem === null) return { root, intermediates: below };
      this.fail(depth, problem);
    }
    for (const ca of this.pool) {
      if (below.includes(ca) || cert.issuer !== ca.x509.subject) continue;
      candidates++;
      if (depth >= MAX_PATH_INTERMEDIATES) {
        this.fail(depth, `path from ${this.leafName} is longer than ${MAX_PATH_INTERMEDIATES} intermediates`);
        continue;
      }
      const problem = this.issuerProblem(cert, name, ca, 'intermediate', below);
      if (problem !== null) {
        this.fail(depth, problem);
        continue;
      }
      const found = this.from(ca.x509, caName(ca, 'intermediate'), [...below, ca]);
      if (found !== null) return found;
    }
    if (candidates === 0) this.fail(depth, this.unknownIssuer(cert, name));
    return null;
  }

  private unknownIssuer(cert: X509Certificate, name: string): string {
    const hint = this.pool.length === 0 ? ' (intermediate missing?)' : '';
    return (
      `unknown issuer: ${name} was issued by ${dn(cert.issuer)}, which is neither a root of the trust bundle of ` +
      `${this.bundle.trustDomain} nor a presented intermediate${hint}`
    );
  }

  /** Why `ca` cannot be the issuer of `cert` with `below` intermediates under it, or null. */
  private issuerProblem(
    cert: X509Certificate,
    name: string,
    ca: CaCertificate,
    role: 'root' | 'intermediate',
    belowCas: readonly CaCertificate[],
  ): string | null {
    if (++this.checks > MAX_ISSUER_CHECKS) {
      throw deny('untrusted_svid', `path search for ${this.leafName} gave up after ${MAX_ISSUER_CHECKS} candidate issuers (CAs that issue each other?)`);
    }
    const who = caName(ca, role);
    const below = belowCas.length;
    if (!ca.isCa) return `${who} is not a CA (basicConstraints cA=false)`;
    if (!ca.keyCertSign) return `${who} lacks keyUsage keyCertSign`;
    if (ca.unprocessedCritical !== null) {
      return `${who} has a critical extension chio does not process (${ca.unprocessedCritical}); RFC 5280 §6.1.4 requires rejecting it`;
    }
    const validity = this.window.validity(ca.notBefore, ca.notAfter);
    if (validity === 'expired') return `${who} expired (notAfter ${iso(ca.notAfter)})`;
    if (validity === 'not_yet_valid') return `${who} is not yet valid (notBefore ${iso(ca.notBefore)})`;
    if (ca.pathLen !== null && below > ca.pathLen) {
      return `${who} allows ${ca.pathLen} intermediate(s) below it (pathLenConstraint); the path has ${below}`;
    }
    if (!cert.checkIssued(ca.x509)) return `${name} names ${who} as issuer but its authority key identifier does not match`;
    if (!cert.verify(ca.x509.publicKey)) return `bad signature: ${name} is not signed by the key of ${who}`;
    if (ca.nameConstraints !== null) {
      const problem = this.constraintsProblem(ca.nameConstraints, belowCas);
      if (problem !== null) return `${who} ${problem}`;
    }
    return null;
  }

  /** The leaf's names, then those of each intermediate below the constrained CA (self-issued ones excepted). */
  private constraintsProblem(nc: NameConstraints, belowCas: readonly CaCertificate[]): string | null {
    const leaf = nameConstraintsProblem(nc, this.leafNames, this.leafName);
    if (leaf !== null) return leaf;
    for (const ca of belowCas) {
      if (ca.selfIssued) continue;
      const problem = nameConstraintsProblem(nc, ca.names, caName(ca, 'intermediate'));
      if (problem !== null) return problem;
    }
    return null;
  }
}

function checkBundleUsable(bundle: TrustBundle, window: ValidityWindow): void {
  const td = bundle.trustDomain;
  if (bundle.x509ExpiresAt === null) {
    throw deny('untrusted_svid', `the trust bundle of ${td} has no X.509 authorities`);
  }
  if (window.validity(-Infinity, bundle.x509ExpiresAt) === 'expired') {
    throw deny('bundle_expired', `every X.509 root in the trust bundle of ${td} expired (the last at ${iso(bundle.x509ExpiresAt)})`);
  }
}

/**
 * Verifies that `leaf` chains to a root of `bundle` (which must be the bundle of the leaf's
 * trust domain) through `presented` and the bundle's configured intermediates, at `nowMs`.
 * Leaf rules and leaf validity are the caller's (x509-svid.ts). Throws DenyError
 * ('untrusted_svid' | 'bundle_expired').
 */
export function verifyChain(leaf: SvidLeaf, presented: readonly CaCertificate[], bundle: TrustBundle, nowMs: number): VerifiedChain {
  return verifyChainWithin(leaf, presented, bundle, new ValidityWindow(nowMs), nowMs);
}

function verifyChainWithin(
  leaf: SvidLeaf,
  presented: readonly CaCertificate[],
  bundle: TrustBundle,
  window: ValidityWindow,
  nowMs: number,
): VerifiedChain {
  if (leaf.spiffeId.trustDomain !== bundle.trustDomain) {
    throw new TypeError(`verifyChain: bundle of ${bundle.trustDomain} for an SVID of ${leaf.spiffeId.trustDomain}`);
  }
  checkBundleUsable(bundle, window);
  if (presented.length > MAX_PRESENTED_INTERMEDIATES) {
    throw deny('untrusted_svid', `${presented.length} intermediates presented with ${leaf.spiffeId.uri}; at most ${MAX_PRESENTED_INTERMEDIATES} are read`);
  }
  const pool = presented.length === 0 ? bundle.intermediates : distinct([...presented, ...bundle.intermediates]);
  const leafNames = { uris: [leaf.spiffeId.uri], dns: leaf.dnsSans };
  const search = new PathSearch(bundle, pool, nowMs, `the SVID ${JSON.stringify(leaf.spiffeId.uri)}`, leafNames);
  try {
    return search.run(leaf.x509);
  } finally {
    window.from = Math.max(window.from, search.window.from);
    window.until = Math.min(window.until, search.window.until);
  }
}

/** Each certificate once (by its DER's SHA-256): a copy is not another path. */
function distinct(cas: readonly CaCertificate[]): CaCertificate[] {
  const seen = new Set<string>();
  const out: CaCertificate[] = [];
  for (const ca of cas) {
    if (seen.has(ca.sha256)) continue;
    seen.add(ca.sha256);
    out.push(ca);
  }
  return out;
}

interface CacheEntry {
  readonly bundle: TrustBundle;
  readonly chainKey: string;
  readonly from: number;
  readonly until: number;
  readonly outcome: VerifiedChain | DenyError;
}

/** Outcome of {@link X509ChainVerifier.verify}. */
export type ChainOutcome =
  | { readonly kind: 'verified'; readonly bundle: TrustBundle; readonly chain: VerifiedChain }
  /** no bundle for the trust domain */
  | { readonly kind: 'no_bundle' };

/**
 * Chain verification with the per-(leaf, presented chain, bundle generation) cache of the
 * Check path. Leaves are the SvidCache's objects, so the cache is a WeakMap that forgets a
 * leaf when the SvidCache does.
 */
export class X509ChainVerifier {
  private readonly cache = new WeakMap<SvidLeaf, CacheEntry>();

  constructor(private readonly bundles: BundleSet) {}

  /**
   * Verifies `leaf` against the bundle of its trust domain. `chainKey` identifies the
   * presented intermediates (`''` for none); `presented` is only called on a cache miss.
   * Throws DenyError('untrusted_svid' | 'bundle_expired'); a configured trust domain whose
   * bundle is not loaded yet is `untrusted_svid` (never "no bundle").
   */
  verify(leaf: SvidLeaf, chainKey: string, presented: () => readonly CaCertificate[], nowMs: number): ChainOutcome {
    const td = leaf.spiffeId.trustDomain;
    const bundle = this.bundles.get(td);
    if (bundle === undefined) {
      const pending = this.bundles.pendingReason(td);
      if (pending !== null) throw deny('untrusted_svid', pending);
      return { kind: 'no_bundle' };
    }
    let entry = this.cache.get(leaf);
    if (entry === undefined || entry.bundle !== bundle || entry.chainKey !== chainKey || nowMs < entry.from || nowMs >= entry.until) {
      entry = this.evaluate(leaf, chainKey, presented, bundle, nowMs);
      this.cache.set(leaf, entry);
    }
    if (entry.outcome instanceof DenyError) throw entry.outcome;
    return { kind: 'verified', bundle, chain: entry.outcome };
  }

  private evaluate(
    leaf: SvidLeaf,
    chainKey: string,
    presented: () => readonly CaCertificate[],
    bundle: TrustBundle,
    nowMs: number,
  ): CacheEntry {
    const window = new ValidityWindow(nowMs);
    let outcome: VerifiedChain | DenyError;
    try {
      outcome = verifyChainWithin(leaf, presented(), bundle, window, nowMs);
    } catch (err) {
      if (!(err instanceof DenyError)) throw err;
      outcome = err;
    }
    return { bundle, chainKey, from: window.from, until: window.until, outcome };
  }
}

/** What {@link verifySvid} found. */
export interface VerifiedSvid {
  readonly leaf: SvidLeaf;
  /** null when no bundles were given (only the X509-SVID rules and validity were checked) */
  readonly chain: VerifiedChain | null;
  readonly bundle: TrustBundle | null;
}

/**
 * A whole presented chain, leaf first (DER): the X509-SVID leaf rules, the leaf's validity at
 * `nowMs`, then, when `bundleFor` is given, the chain against the bundle of the leaf's trust
 * domain (`unknown_trust_domain` when there is none). What `chio svid verify` runs; the Check
 * path uses {@link X509ChainVerifier}. Throws DenyError.
 */
export function verifySvid(
  certificates: readonly Uint8Array[],
  bundleFor: ((trustDomain: string) => TrustBundle | undefined) | null,
  nowMs: number,
): VerifiedSvid {
  const [first, ...rest] = certificates;
  if (first === undefined) throw new TypeError('verifySvid: no certificate');
  const leaf = parseSvidLeaf(Buffer.from(first));
  checkValidity(leaf, nowMs);
  if (bundleFor === null) return { leaf, chain: null, bundle: null };
  const td = leaf.spiffeId.trustDomain;
  const bundle = bundleFor(td);
  if (bundle === undefined) throw deny('unknown_trust_domain', `no trust bundle for trust domain ${td}`);
  const presented = rest.map((der) => parseCaCertificate(der));
  return { leaf, chain: verifyChain(leaf, presented, bundle, nowMs), bundle };
}
