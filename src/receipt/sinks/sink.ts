import type { ChainHead, SealedReceipt } from '../receipt.js';

/** A durable destination for receipts. Writes come in seq order, in batches (group commit). */
export interface ReceiptSink {
  readonly name: string;
  /** Opens the sink and returns the head of the chain it holds (null when empty). */
  open(): Promise<ChainHead | null>;
  /** Appends a batch; when `durable`, resolves only after the data is on stable storage (fsync). */
  write(batch: readonly SealedReceipt[], durable: boolean): Promise<void>;
  /**
   * Removes the receipts after `head` (all of them for null), durably. The writer calls it on the
   * sinks that committed a batch another sink failed, so every sink keeps one chain.
   */
  rewind(head: ChainHead | null): Promise<void>;
  close(): Promise<void>;
}
