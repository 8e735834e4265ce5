/**
 * RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes receipts and capabilities are
 * signed and hashed over (SPEC §6, §7). Members sorted by UTF-16 code units, ECMAScript number
 * and string serialization, no whitespace. Implemented by the `canonicalize` package.
 */
import canonicalizeModule from 'canonicalize';

type Canonicalize = (input: unknown) => string | undefined;

// `canonicalize` is CommonJS (`module.exports = fn`) typed with `export default`: under NodeNext
// the default import is the function itself at run time, while TypeScript sees the namespace.
const canonicalizeImpl: Canonicalize =
  typeof (canonicalizeModule as unknown) === 'function'
    ? (canonicalizeModule as unknown as Canonicalize)
    : (canonicalizeModule as unknown as { default: Canonicalize }).default;

/**
 * The JCS text of a JSON value. Throws TypeError for what JSON cannot carry (undefined, a
 * function or symbol at the top, NaN, ±Infinity, BigInt).
 */
export function jcs(value: unknown): string {
  let text: string | undefined;
  try {
    text = canonicalizeImpl(value);
  } catch (err) {
    throw new TypeError(`value cannot be canonicalized as JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof text !== 'string') throw new TypeError(`value of type ${typeof value} cannot be canonicalized as JSON`);
  return text;
}

/** The UTF-8 bytes of the JCS text of a JSON value. */
export function jcsBytes(value: unknown): Buffer {
  return Buffer.from(jcs(value), 'utf8');
}
