/**
 * A hand-written protobuf decoder (https://protobuf.dev/programming-guides/encoding/) for the
 * parts of `envoy.service.auth.v3.CheckRequest` the Check path reads (./envoy.ts `RawCheckRequest`;
 * envoy/service/auth/v3/attribute_context.proto, envoy/config/core/v3/address.proto and base.proto,
 * as shipped in @grpc/grpc-js-xds `deps/`):
 *
 *   attributes(1) { source(1) { address(1) { socket_address(1) { address(2), port_value(3) },
 *                                            pipe(2) { path(1) } },
 *                               principal(4), certificate(5) },
 *                   request(4) { http(2) { id(1), method(2), headers(3) map, path(4), host(5),
 *                                          header_map(13) { headers(1) { key(1), value(2), raw_value(3) } } } },
 *                   context_extensions(10) map }
 *
 * Why: proto-loader decodes every field of the message and then copies it into a plain object
 * (`toObject`): ~16–19 µs per Check on the bench machine, more with a request body. This reads
 * the fields above and skips every other field by its length without looking inside (the
 * destination peer, metadata_context, a request body, …).
 *
 * Same result as proto-loader (`LOADER_OPTIONS`) for every well-formed message: strings are read
 * with Buffer's UTF-8 decoder (invalid sequences become U+FFFD, as protobufjs reads them), a
 * singular field that appears twice keeps the last value (protobufjs replaces, it does not merge),
 * repeated fields and map entries accumulate, a later map entry with the same key wins, and
 * `port_value` keeps its low 32 bits. test/check/request-wire.test.ts proves it differentially.
 * One exception, where protobufjs is wrong: a tag or length written as a padded (non-minimal)
 * varint of more than 5 bytes, which the encoding allows. protobufjs skips its bytes past the
 * fifth without reading them as continuations and loses its place; this reads the varint whole.
 * Envoy never pads a varint, and the values read are the encoding's (test: "padded varints").
 *
 * Stricter than protobufjs, and never throwing: a truncated field, a length running past its
 * message, a declared field arriving with another wire type than its declared type's (protobufjs
 * reads it by its declared type anyway and loses its place in the message), a varint longer than
 * 10 bytes, a tag or length of 2^32 or more (protobufjs drops the high bits), field number 0, or
 * a group / reserved wire type make the whole message undecodable
 * (`UNDECODABLE_REQUEST`, denied `malformed_request` with a receipt). Maps are null-prototype
 * objects: a `__proto__` key is an ordinary key.
 */
import { UNDECODABLE_REQUEST, type RawCheckRequest } from './envoy.js';

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** Thrown inside the decoder only (one shared instance: no stack to capture); decodeCheckRequest turns it into UNDECODABLE_REQUEST. */
const MALFORMED = new Error('malformed protobuf');

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends object ? Mutable<T[K]> : T[K] };
type Raw = Mutable<RawCheckRequest>;
type Attributes = NonNullable<Raw['attributes']>;
type Peer = NonNullable<Attributes['source']>;
type Address = NonNullable<Peer['address']>;
type HttpRequest = NonNullable<NonNullable<Attributes['request']>['http']>;
type HeaderValue = NonNullable<NonNullable<HttpRequest['header_map']>['headers']>[number];

/** The fields a message declares (field numbers < 32), by wire type: LEN (strings, bytes, messages, maps) or VARINT. */
interface Schema {
  readonly len: number;
  readonly varint: number;
}

function schema(len: readonly number[], varint: readonly number[] = []): Schema {
  const mask = (fields: readonly number[]): number => fields.reduce((m, f) => m | (1 << f), 0);
  return { len: mask(len), varint: mask(varint) };
}

// every field of the messages we descend into (the .proto files named above); protobufjs reads a
// declared field by its declared type whatever wire type came, and so loses its place: we refuse
const CHECK_REQUEST = schema([1]);
const ATTRIBUTE_CONTEXT = schema([1, 2, 4, 10, 11, 12, 13]);
const PEER = schema([1, 2, 3, 4, 5]);
const ADDRESS = schema([1, 2, 3]);
const SOCKET_ADDRESS = schema([2, 4, 5], [1, 3, 6]);
const PIPE = schema([1], [2]);
const REQUEST = schema([1, 2]);
const HTTP_REQUEST = schema([1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13], [9]);
const HEADER_MAP = schema([1]);
const HEADER_VALUE = schema([1, 2, 3]);

/** Node's Buffer has `utf8Slice(start, end)` (what `toString('utf8', start, end)` ends in; protobufjs uses it too). */
type Utf8SlicingBuffer = Buffer & { utf8Slice?: (start: number, end: number) => string };
const HAS_UTF8_SLICE = typeof (Buffer.prototype as Utf8SlicingBuffer).utf8Slice === 'function';

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  /** A varint of up to 32 bits (tags, lengths); longer ones are read and their high bits dropped. */
  uint32(end: number): number {
    const buf = this.buf;
    let result = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw MALFORMED;
      const b = buf[this.pos++] as number;
      if (shift < 32) result |= (b & 0x7f) << shift;
      if (b < 0x80) return result >>> 0;
      shift += 7;
    }
    throw MALFORMED;
  }

  /**
   * A tag or a length: a varint whose value fits in 32 bits (non-minimal padding allowed). A larger
   * value is malformed, not truncated: a length of 2^32 + n runs past any message (grpc-js caps them
   * at 4 MiB), and protobuf's own parsers refuse it rather than read n.
   */
  varint32(end: number): number {
    const buf = this.buf;
    let result = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= end) throw MALFORMED;
      const b = buf[this.pos++] as number;
      const bits = b & 0x7f;
      if (shift < 28) result |= bits << shift;
      else if (shift === 28 && bits <= 0x0f) result |= bits << 28;
      else if (bits !== 0) throw MALFORMED; // bit 32 or above set
      if (b < 0x80) return result >>> 0;
    }
    throw MALFORMED;
  }

  /** The end of a length-delimited field that starts here, checked against its message's end. */
  limit(end: number): number {
    const len = this.varint32(end);
    const to = this.pos + len;
    if (to > end) throw MALFORMED;
    return to;
  }

  string(end: number): string {
    const to = this.limit(end);
    // Buffer's own utf8Slice where it exists: toString('utf8', …) without its argument dispatch
    const s = HAS_UTF8_SLICE ? ((this.buf as Utf8SlicingBuffer).utf8Slice as (s: number, e: number) => string).call(this.buf, this.pos, to) : this.buf.toString('utf8', this.pos, to);
    this.pos = to;
    return s;
  }

  bytes(end: number): Buffer {
    const to = this.limit(end);
    const b = Buffer.from(this.buf.subarray(this.pos, to)); // a copy: the call's buffer is not kept alive
    this.pos = to;
    return b;
  }

  skip(wireType: number, end: number): void {
    switch (wireType) {
      case VARINT:
        this.uint32(end);
        return;
      case I64:
        this.pos += 8;
        break;
      case LEN:
        this.pos = this.limit(end);
        return;
      case I32:
        this.pos += 4;
        break;
      default:
        throw MALFORMED; // groups (3, 4) and the reserved wire types 6, 7
    }
    if (this.pos > end) throw MALFORMED;
  }
}

/**
 * Reads one message's fields up to `end` into `out`: `read` takes the fields the Check path uses
 * (returning true), every other field is skipped. A declared field must come with its declared
 * wire type, read or not.
 */
function message<T>(r: Reader, end: number, schema: Schema, out: T, read: (r: Reader, field: number, end: number, out: T) => boolean): T {
  while (r.pos < end) {
    const tag = r.varint32(end);
    const field = tag >>> 3;
    const wt = tag & 7;
    if (field === 0) throw MALFORMED; // field numbers start at 1
    const bit = field < 32 ? 1 << field : 0;
    if ((schema.len & bit) !== 0 ? wt !== LEN : (schema.varint & bit) !== 0 && wt !== VARINT) throw MALFORMED;
    if (!read(r, field, end, out)) r.skip(wt, end);
  }
  return out;
}

/**
 * A `map<string, string>` entry (key 1, value 2; absent ones are ''), added to `into` (a later key
 * wins). The commonest message of a CheckRequest (one per header), so its loop is written out here
 * rather than going through `message()`.
 */
function mapEntry(r: Reader, end: number, into: Record<string, string>): void {
  let key = '';
  let value = '';
  while (r.pos < end) {
    const tag = r.varint32(end);
    if (tag === KEY_TAG) key = r.string(end);
    else if (tag === VALUE_TAG) value = r.string(end);
    else if (tag >>> 3 <= 2) throw MALFORMED; // a declared field with another wire type, or field number 0
    else r.skip(tag & 7, end);
  }
  into[key] = value;
}
/** field 1 / field 2, length-delimited */
const KEY_TAG = (1 << 3) | LEN;
const VALUE_TAG = (2 << 3) | LEN;

function emptyMap(): Record<string, string> {
  return Object.create(null) as Record<string, string>;
}

type SocketAddress = NonNullable<Address['socket_address']>;
function readSocketAddress(r: Reader, field: number, end: number, out: SocketAddress): boolean {
  if (field === 2) out.address = r.string(end);
  else if (field === 3) out.port_value = r.uint32(end);
  else return false;
  return true;
}

type Pipe = NonNullable<Address['pipe']>;
function readPipe(r: Reader, field: number, end: number, out: Pipe): boolean {
  if (field !== 1) return false;
  out.path = r.string(end);
  return true;
}

function readAddress(r: Reader, field: number, end: number, out: Address): boolean {
  if (field === 1) out.socket_address = message(r, r.limit(end), SOCKET_ADDRESS, {} as SocketAddress, readSocketAddress);
  else if (field === 2) out.pipe = message(r, r.limit(end), PIPE, {} as Pipe, readPipe);
  else return false;
  return true;
}

function readPeer(r: Reader, field: number, end: number, out: Peer): boolean {
  if (field === 1) out.address = message(r, r.limit(end), ADDRESS, {} as Address, readAddress);
  else if (field === 4) out.principal = r.string(end);
  else if (field === 5) out.certificate = r.string(end);
  else return false;
  return true;
}

function readHeaderValue(r: Reader, field: number, end: number, out: HeaderValue): boolean {
  if (field === 1) out.key = r.string(end);
  else if (field === 2) out.value = r.string(end);
  else if (field === 3) out.raw_value = r.bytes(end);
  else return false;
  return true;
}

function readHeaderMap(r: Reader, field: number, end: number, out: HeaderValue[]): boolean {
  if (field !== 1) return false;
  out.push(message(r, r.limit(end), HEADER_VALUE, {} as HeaderValue, readHeaderValue));
  return true;
}

function readHttpRequest(r: Reader, field: number, end: number, out: HttpRequest): boolean {
  switch (field) {
    case 1:
      out.id = r.string(end);
      return true;
    case 2:
      out.method = r.string(end);
      return true;
    case 3:
      mapEntry(r, r.limit(end), (out.headers ??= emptyMap()));
      return true;
    case 4:
      out.path = r.string(end);
      return true;
    case 5:
      out.host = r.string(end);
      return true;
    case 13: {
      const headers = message(r, r.limit(end), HEADER_MAP, [] as HeaderValue[], readHeaderMap);
      // proto-loader (defaults: false) leaves out an empty repeated field
      out.header_map = headers.length > 0 ? { headers } : {};
      return true;
    }
    default:
      return false;
  }
}

type Request = NonNullable<Attributes['request']>;
function readRequest(r: Reader, field: number, end: number, out: Request): boolean {
  if (field !== 2) return false;
  out.http = message(r, r.limit(end), HTTP_REQUEST, {} as HttpRequest, readHttpRequest);
  return true;
}

function readAttributes(r: Reader, field: number, end: number, out: Attributes): boolean {
  if (field === 1) out.source = message(r, r.limit(end), PEER, {} as Peer, readPeer);
  else if (field === 4) out.request = message(r, r.limit(end), REQUEST, {} as Request, readRequest);
  else if (field === 10) mapEntry(r, r.limit(end), (out.context_extensions ??= emptyMap()));
  else return false;
  return true;
}

function readCheckRequest(r: Reader, field: number, end: number, out: Raw): boolean {
  if (field !== 1) return false;
  out.attributes = message(r, r.limit(end), ATTRIBUTE_CONTEXT, {} as Attributes, readAttributes);
  return true;
}

/**
 * CheckRequest bytes → the fields the Check path reads, or UNDECODABLE_REQUEST. Never throws.
 */
export function decodeCheckRequest(buf: Buffer): RawCheckRequest {
  try {
    return message(new Reader(buf), buf.length, CHECK_REQUEST, {} as Raw, readCheckRequest);
  } catch {
    // Malformed, or anything else (a string too large for V8): denied with a receipt all the same
    return UNDECODABLE_REQUEST;
  }
}
