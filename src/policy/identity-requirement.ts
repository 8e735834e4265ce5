/**
 * `require_workload_identity` / `prefer_workload_identity` of a policy rule (SPEC §5): every field
 * of the match must pass — scheme, trust domain, path prefix (segment-aware, any of the list),
 * credential kind. The first failing field is reported with the expected and the actual value.
 */
import type { DenyCode } from '../errors.js';
import { CREDENTIAL_KINDS, type CredentialKind, type WorkloadIdentity } from '../identity/identity.js';
import { pathHasSegmentPrefix } from '../spiffe/id.js';
import type { IdentityRequirement } from './types.js';

/** At most this many expected prefixes are listed in a mismatch message. */
const LISTED_PREFIXES = 5;

export interface IdentityRequirementSpec {
  readonly trustDomain: string | null;
  readonly pathPrefixes: readonly string[];
  /** null = all credential kinds */
  readonly credentialKinds: readonly CredentialKind[] | null;
}

export function compileIdentityRequirement(spec: IdentityRequirementSpec): IdentityRequirement {
  return new CompiledIdentityRequirement(
    spec.trustDomain,
    [...spec.pathPrefixes],
    spec.credentialKinds === null ? [...CREDENTIAL_KINDS] : [...new Set(spec.credentialKinds)],
  );
}

type Mismatch = { code: DenyCode; message: string };

class CompiledIdentityRequirement implements IdentityRequirement {
  readonly scheme = 'spiffe' as const;

  constructor(
    readonly trustDomain: string | null,
    readonly pathPrefixes: readonly string[],
    readonly credentialKinds: readonly CredentialKind[],
  ) {}

  check(identity: WorkloadIdentity): Mismatch | null {
    return (
      this.schemeMismatch(identity) ??
      this.trustDomainMismatch(identity) ??
      this.pathMismatch(identity) ??
      this.credentialKindMismatch(identity)
    );
  }

  private schemeMismatch(identity: WorkloadIdentity): Mismatch | null {
    if (identity.scheme === this.scheme) return null;
    return {
      code: 'workload_scheme_mismatch',
      message: `workload identity scheme is ${JSON.stringify(identity.scheme)}; the rule requires "${this.scheme}"`,
    };
  }

  private trustDomainMismatch(identity: WorkloadIdentity): Mismatch | null {
    if (this.trustDomain === null || identity.trustDomain === this.trustDomain) return null;
    return {
      code: 'workload_trust_domain_mismatch',
      message: `workload trust domain is ${JSON.stringify(identity.trustDomain)}; the rule requires ${JSON.stringify(this.trustDomain)}`,
    };
  }

  private pathMismatch(identity: WorkloadIdentity): Mismatch | null {
    if (this.pathPrefixes.length === 0) return null;
    if (this.pathPrefixes.some((prefix) => pathHasSegmentPrefix(identity.path, prefix))) return null;
    return {
      code: 'workload_path_mismatch',
      message: `workload path ${JSON.stringify(identity.path)} is under none of the required prefixes ${listPrefixes(this.pathPrefixes)}`,
    };
  }

  private credentialKindMismatch(identity: WorkloadIdentity): Mismatch | null {
    if (this.credentialKinds.includes(identity.credentialKind)) return null;
    return {
      code: 'workload_credential_kind_not_allowed',
      message: `credential kind ${JSON.stringify(identity.credentialKind)} is not allowed; the rule allows ${this.credentialKinds.join(', ')}`,
    };
  }
}

function listPrefixes(prefixes: readonly string[]): string {
  const shown = prefixes.slice(0, LISTED_PREFIXES).map((p) => JSON.stringify(p)).join(', ');
  const more = prefixes.length - LISTED_PREFIXES;
  return more > 0 ? `${shown} and ${more} more` : shown;
}
