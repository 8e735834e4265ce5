/**
 * Every schema migration of the central PostgreSQL store, in version order (1, 2, …). SQL is kept
 * in TypeScript modules so it is compiled into dist/ and ships in the package and the container
 * image. A migration, once released, is never edited: its checksum is recorded when applied and
 * `chio db migrate` refuses a database whose recorded checksum differs. Add a new one instead.
 */
import { migration as receipts } from './0001-receipts.js';
import { migration as revocations } from './0002-revocations.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [receipts, revocations];
