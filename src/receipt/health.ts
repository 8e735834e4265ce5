/**
 * Whether receipts are being written, for `/readyz` (README "Operating it"). With
 * `receipts.on_failure: deny` a service whose sinks cannot write answers every request with a deny
 * `receipt_unavailable`: it should not be ready, so Kubernetes takes its pod out of the Service's
 * endpoints while other replicas serve.
 *
 * Failing = a write failed and no batch committed since, within the last `holdMs` (10 s). The hold
 * ends on its own so that traffic comes back and shows whether the sink recovered (a service that
 * is not ready gets no requests, and so would never write again to find out); while the sink still
 * fails, the next failure starts it over.
 */
export class ReceiptHealth {
  #failedAt: number | null = null;
  #reason = '';

  constructor(
    /** a monotonic clock in ms (performance.now): the hold must not follow wall-clock steps */
    private readonly clock: () => number,
    private readonly holdMs = 10_000,
  ) {}

  /** A sink write failed (`sink`: its name). */
  failed(sink: string, message: string): void {
    this.#failedAt = this.clock();
    this.#reason = `receipt sink ${sink} cannot write: ${message}`;
  }

  /** A batch was committed: the sinks write again. */
  committed(): void {
    this.#failedAt = null;
  }

  /** Why decisions cannot be recorded now, or null. */
  failing(): string | null {
    if (this.#failedAt === null) return null;
    if (this.clock() - this.#failedAt >= this.holdMs) return null;
    return this.#reason;
  }
}
