/**
 * The Check path as a pipeline of stages (SPEC §1):
 *
 *   CheckRequest → input → identity → decision → capability → receipt (sealed, committed) → CheckResponse
 *
 * `check()` never throws and never rejects: whatever goes wrong inside becomes a deny with a
 * reason code and, wherever a sink can take it, a signed receipt. An RPC error would let
 * Envoy's `failure_mode_allow` open the gate, so there are none.
 */
import { applyCapabilityStage, capabilityStage, NO_CAPABILITY_AUTHORITIES, type CapabilityStageDeps } from '../capability/stage.js';
import { describe, DenyError, type DenyCode } from '../errors.js';
import type { IdentityResolver, IdentityResult } from '../identity/resolve.js';
import type { Metrics } from '../metrics.js';
import { evaluate, type Decision } from '../policy/evaluate.js';
import type { CompiledPolicy } from '../policy/types.js';
import type { PendingReceipt, ReceiptChain, ReceiptDraft, ReceiptRequest } from '../receipt/receipt.js';
import { ACCEPTED, type ReceiptWriter } from '../receipt/writer.js';
import { clip, toCheckInput, type CheckResponseMessage, type RawCheckRequest } from './envoy.js';
import type { CheckInput } from './request.js';
import { allowResponse, denyResponse, type ResponseFacts } from './respond.js';

export interface Logger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface PipelineDeps {
  /** the current policy; read once per request so a reload never changes a decision mid-way */
  readonly policy: () => CompiledPolicy;
  readonly identity: IdentityResolver;
  readonly chain: ReceiptChain;
  readonly writer: ReceiptWriter;
  /** receipts.on_failure */
  readonly onReceiptFailure: 'deny' | 'allow';
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly capabilityHeader: string;
  /** the capability stage's verifier and revocations (default: no trusted authority: any presented token denies) */
  readonly capabilities?: CapabilityStageDeps;
  /** the capability stage's decision time (default Date.now) */
  readonly clock?: () => number;
  /** bounded label for a trust domain (SPEC §8: never unbounded values) */
  readonly trustDomainLabel: (trustDomain: string) => string;
}

/** Everything decided about one request before its receipt is written. */
interface Outcome {
  readonly input: CheckInput | null;
  readonly identity: IdentityResult | null;
  readonly decision: Decision;
  readonly policyHash: string | null;
  /** the presented capability's id whenever it decoded */
  readonly capabilityId?: string | null;
}

const EMPTY_REQUEST: ReceiptRequest = { id: null, method: null, host: null, path: null, source: null };

export class CheckPipeline {
  constructor(private readonly deps: PipelineDeps) {}

  check(raw: RawCheckRequest | null | undefined): Promise<CheckResponseMessage> {
    return this.finish(() => this.decide(raw));
  }

  /**
   * Load shedding (src/limits.ts): deny `overloaded` (HTTP 503) with a receipt, without identity,
   * policy or capability work. The request fields still go on the receipt when they decode.
   */
  shed(raw: RawCheckRequest | null | undefined): Promise<CheckResponseMessage> {
    return this.finish(() => this.overloaded(raw));
  }

  /**
   * An outcome, its receipt and its answer as a promise, with the handler time observed. An outcome
   * that throws is an `internal_error` deny; nothing here throws (anything thrown later becomes a
   * rejection, which the gRPC adapter answers with its last-resort deny). An answer that did not
   * have to wait (relaxed durability, or no receipt) is not sent through extra promise turns.
   */
  private finish(outcomeOf: () => Outcome): Promise<CheckResponseMessage> {
    const started = process.hrtime.bigint();
    const done = (response: CheckResponseMessage): CheckResponseMessage => {
      this.deps.metrics.checkDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
      return response;
    };
    try {
      let outcome: Outcome;
      try {
        outcome = outcomeOf();
      } catch (err) {
        outcome = this.internalError(null, err);
      }
      const answer = this.commit(outcome, started);
      return answer instanceof Promise ? answer.then(done) : Promise.resolve(done(answer));
    } catch (err) {
      return Promise.reject(err); // the gRPC adapter's last resort (a deny) takes it
    }
  }

  /** A shed Check's outcome: the request's fields when they decode, no identity or policy work. */
  private overloaded(raw: RawCheckRequest | null | undefined): Outcome {
    const policyHash = this.deps.policy().hash;
    let input: CheckInput | null = null;
    try {
      input = toCheckInput(raw);
    } catch {
      /* a malformed request is shed all the same */
    }
    return { input, identity: null, decision: denial('overloaded', 'too many Checks in flight; try again'), policyHash };
  }

  /** Stages 1–4, synchronous and pure but for the SVID and capability caches: input → identity → decision → capability. */
  private decide(raw: RawCheckRequest | null | undefined): Outcome {
    const policy = this.deps.policy();
    let input: CheckInput;
    try {
      input = toCheckInput(raw);
    } catch (err) {
      if (err instanceof DenyError) return { input: null, identity: null, decision: denial(err.code, err.message), policyHash: policy.hash };
      throw err;
    }
    const identity = this.deps.identity.resolve(input, policy);
    const decision = evaluate({
      policy,
      input,
      identity: identity.identity,
      identityError: identity.error,
      tier: identity.tier,
      tierNote: identity.tierNote,
    });
    const now = (this.deps.clock ?? Date.now)();
    const capability = capabilityStage(input.headers.get(this.deps.capabilityHeader), decision, identity, now, this.deps.capabilities ?? NO_CAPABILITY_AUTHORITIES);
    return { input, identity, decision: applyCapabilityStage(decision, capability), capabilityId: capability.capabilityId, policyHash: policy.hash };
  }

  /**
   * Stages 5–6: fix the receipt's body (its batch is signed by the writer), make it durable, answer.
   * Returns the answer itself when the writer accepted the receipt without a wait (relaxed).
   */
  private commit(outcome: Outcome, started: bigint): CheckResponseMessage | Promise<CheckResponseMessage> {
    let pending: PendingReceipt;
    try {
      pending = this.deps.chain.next(draftOf(outcome));
    } catch (err) {
      // The receipt body could not be made (clock, draft): nothing can be recorded. Deny without a receipt id.
      this.deps.log.error({ err: describe(err), requestId: outcome.input?.requestId ?? null }, 'receipt could not be sealed');
      return this.answer(this.internalError(outcome.input, err), null);
    }
    const commitStart = process.hrtime.bigint();
    this.deps.metrics.decisionDuration.observe(Number(commitStart - started) / 1e9);
    let submitted: Promise<void>;
    try {
      submitted = this.deps.writer.submit(pending);
    } catch (err) {
      return this.receiptFailed(outcome, pending, err);
    }
    const committed = (): CheckResponseMessage => {
      this.deps.metrics.receiptCommitDuration.observe(Number(process.hrtime.bigint() - commitStart) / 1e9);
      return this.answer(outcome, pending.id);
    };
    if (submitted === ACCEPTED) return committed();
    return submitted.then(committed, (err: unknown) => this.receiptFailed(outcome, pending, err));
  }

  /** The receipt could not be signed or made durable (SPEC §2.1 receipts.on_failure). */
  private async receiptFailed(outcome: Outcome, lost: PendingReceipt, err: unknown): Promise<CheckResponseMessage> {
    if (this.deps.onReceiptFailure === 'allow' || outcome.decision.verdict === 'deny') {
      this.deps.log.error(
        { err: describe(err), receiptId: lost.id, requestId: outcome.input?.requestId ?? null, verdict: outcome.decision.verdict },
        'receipt not durable; answering without it (receipts.on_failure)',
      );
      return this.answer(outcome, null);
    }
    this.deps.log.error(
      { err: describe(err), receiptId: lost.id, requestId: outcome.input?.requestId ?? null },
      'receipt not durable; allow becomes deny receipt_unavailable',
    );
    // the rule, tool and match records of the decision stay: only the verdict and reason change
    const denied: Outcome = {
      ...outcome,
      decision: {
        ...outcome.decision,
        verdict: 'deny',
        reason: { code: 'receipt_unavailable', message: 'the decision receipt could not be made durable' },
        httpStatus: 403,
      },
    };
    // Try to record the denial itself; if the sink is still down, answer without a receipt id.
    try {
      const pending = this.deps.chain.next(draftOf(denied));
      await this.deps.writer.submit(pending);
      return this.answer(denied, pending.id);
    } catch {
      return this.answer(denied, null);
    }
  }

  private internalError(input: CheckInput | null, err: unknown): Outcome {
    this.deps.log.error({ err: describe(err) }, 'internal error in Check; denying');
    let policyHash: string | null = null;
    try {
      policyHash = this.deps.policy().hash;
    } catch {
      /* keep null */
    }
    return { input, identity: null, decision: denial('internal_error', 'internal error while deciding'), policyHash };
  }

  /** A rule the policy defines, else `other` (an unknown `chio_rule` name is request data: SPEC §8 bounded labels). */
  private ruleLabel(rule: string | null): string {
    if (rule === null) return '';
    return this.deps.policy().rules.has(rule) ? rule : 'other';
  }

  private answer(outcome: Outcome, receiptId: string | null): CheckResponseMessage {
    const { decision, identity } = outcome;
    const id = identity?.identity ?? null;
    const reason = decision.reason?.code ?? null;
    this.deps.metrics.countAdmission({
      verdict: decision.verdict,
      rule: this.ruleLabel(decision.rule),
      reason: reason ?? '',
      trust_domain: id ? this.deps.trustDomainLabel(id.trustDomain) : '',
      credential_kind: id?.credentialKind ?? '',
      tier: identity?.tier ?? 'none',
    });
    const facts: ResponseFacts = {
      verdict: decision.verdict,
      receiptId,
      rule: decision.rule,
      tool: decision.tool,
      tier: identity?.tier ?? 'none',
      workloadId: id?.uri ?? null,
      reason,
      httpStatus: decision.httpStatus,
    };
    return decision.verdict === 'allow'
      ? allowResponse(facts, outcome.input, this.deps.capabilityHeader)
      : denyResponse(facts);
  }
}

function denial(code: DenyCode, message: string): Decision {
  return {
    verdict: 'deny',
    rule: null,
    tool: null,
    reason: { code, message },
    // 503 for a shed Check: the caller (and Envoy's `retry_on: 5xx`) may try again
    httpStatus: code === 'identity_required' ? 401 : code === 'overloaded' ? 503 : 403,
    workloadIdentityMatch: null,
    runtimeAssuranceMatch: null,
    requireCapability: false,
  };
}

/**
 * Request-derived text kept in a receipt: at most this many characters (then `…`), so no request
 * can make a receipt line larger than a reader accepts (receipts are ~1 KB; readers refuse 1 MiB).
 */
export const MAX_RECEIPT_TEXT = 2048;

function clipForReceipt(text: string | null): string | null {
  return text === null || text.length <= MAX_RECEIPT_TEXT ? text : `${clip(text, MAX_RECEIPT_TEXT)}…`;
}

function draftOf(o: Outcome): ReceiptDraft {
  const input = o.input;
  const id = o.identity;
  return {
    verdict: o.decision.verdict,
    rule: clipForReceipt(o.decision.rule),
    tool: o.decision.tool,
    capabilityId: o.capabilityId ?? null,
    reasons: o.decision.reason ? [o.decision.reason] : [],
    request: input
      ? {
          id: input.requestId,
          method: clipForReceipt(input.method),
          host: clipForReceipt(input.host),
          path: clipForReceipt(input.path),
          source: clipForReceipt(input.source),
        }
      : EMPTY_REQUEST,
    runtimeAttestation: {
      tier: id?.tier ?? 'none',
      verifier: id?.verifier ?? null,
      workloadIdentity: id?.identity ?? null,
    },
    workloadIdentityMatch: o.decision.workloadIdentityMatch,
    runtimeAssuranceMatch: o.decision.runtimeAssuranceMatch,
    policyHash: o.policyHash,
  };
}
