/**
 * When each not-yet-shipped receipt was committed, coarsely: what `chio_receipt_shipping_lag_seconds`
 * reports, the age of the OLDEST receipt still missing from PostgreSQL (README "Shipping").
 *
 * Marks are `(seq, ms)`: receipts from `seq` on were committed at `ms` or later. A mark is added
 * only when at least `resolutionMs` passed since the last one, so a receipt's age is overstated by
 * less than that; when more than `maxMarks` are held (a long outage), every other mark is dropped,
 * which attributes its receipts to the earlier mark before it: ages are then overstated, never
 * understated. Memory stays bounded whatever the outage's length.
 */
export interface CommitTimesOptions {
  /** default 100 ms */
  readonly resolutionMs?: number;
  /** default 4,096 */
  readonly maxMarks?: number;
}

interface Mark {
  readonly seq: number;
  readonly ms: number;
}

export class CommitTimes {
  readonly #resolutionMs: number;
  readonly #maxMarks: number;
  #marks: Mark[] = [];

  constructor(options: CommitTimesOptions = {}) {
    this.#resolutionMs = options.resolutionMs ?? 100;
    this.#maxMarks = options.maxMarks ?? 4096;
    if (!(this.#maxMarks >= 2)) throw new TypeError('CommitTimes: maxMarks must be at least 2');
  }

  /** Receipts from `firstSeq` on were committed at `ms` (calls in seq order). */
  committed(firstSeq: number, ms: number): void {
    const last = this.#marks[this.#marks.length - 1];
    if (last !== undefined && (firstSeq <= last.seq || ms - last.ms < this.#resolutionMs)) return;
    this.#marks.push({ seq: firstSeq, ms });
    if (this.#marks.length > this.#maxMarks) this.#marks = this.#marks.filter((_, i) => i % 2 === 0);
  }

  /** Every receipt through `seq` is shipped: marks that describe only those go. */
  shippedThrough(seq: number): void {
    let drop = 0;
    while (drop + 1 < this.#marks.length && (this.#marks[drop + 1] as Mark).seq <= seq + 1) drop++;
    if (drop > 0) this.#marks = this.#marks.slice(drop);
  }

  /** Forget every mark (everything is shipped). */
  clear(): void {
    this.#marks = [];
  }

  /** When the oldest receipt after `shipped` was committed (null: no mark, nothing known to lag). */
  oldestAfter(shipped: number): number | null {
    this.shippedThrough(shipped);
    return this.#marks[0]?.ms ?? null;
  }

  /** marks held (tests: the bound) */
  get size(): number {
    return this.#marks.length;
  }
}
