/**
 * gRPC over HTTP/2 message framing (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md:
 * 1 byte compressed-flag, 4-byte big-endian length, message) and the one CheckResponse field the
 * load generators read on every answer: `status.code` (envoy.service.auth.v3.CheckResponse field 1,
 * google.rpc.Status field 1; protobuf wire format https://protobuf.dev/programming-guides/encoding/).
 * Full decoding uses Envoy's official protos through dist/check/envoy.js (as the service does).
 */

/** @param {Uint8Array} message  an encoded protobuf message */
export function frameMessage(message) {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.length, 1);
  Buffer.from(message.buffer, message.byteOffset, message.byteLength).copy(frame, 5);
  return frame;
}

/**
 * The single uncompressed message of a unary gRPC body. Throws TypeError otherwise.
 * @param {Buffer} body
 */
export function unframeMessage(body) {
  if (body.length < 5) throw new TypeError(`gRPC body of ${body.length} bytes is shorter than its 5-byte prefix`);
  if (body[0] !== 0) throw new TypeError(`gRPC message is compressed (flag ${body[0]}); the bench sends no grpc-accept-encoding`);
  const len = body.readUInt32BE(1);
  if (body.length !== 5 + len) throw new TypeError(`gRPC body is ${body.length} bytes, its prefix says ${5 + len}`);
  return body.subarray(5);
}

/**
 * The frames of a buffer holding several framed gRPC messages back to back (a bodies file of
 * bench/closedloop.mjs). Throws TypeError on a torn or compressed frame, or on none.
 * @param {Buffer} buf
 * @returns {Buffer[]}
 */
export function splitFrames(buf) {
  const frames = [];
  for (let pos = 0; pos < buf.length; ) {
    if (pos + 5 > buf.length) throw new TypeError(`torn gRPC frame prefix at byte ${pos}`);
    const end = pos + 5 + buf.readUInt32BE(pos + 1);
    if (end > buf.length) throw new TypeError(`gRPC frame at byte ${pos} runs past the end`);
    const frame = buf.subarray(pos, end);
    unframeMessage(frame);
    frames.push(frame);
    pos = end;
  }
  if (frames.length === 0) throw new TypeError('no gRPC frame');
  return frames;
}

/**
 * @param {Uint8Array} buf
 * @param {number} pos
 * @returns {[value: number, next: number]}  values above 2^53 lose precision (not used for lengths)
 */
function readVarint(buf, pos) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    const byte = buf[pos + i];
    if (byte === undefined) throw new TypeError('truncated varint');
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return [value, pos + i + 1];
    scale *= 128;
  }
  throw new TypeError('varint longer than 10 bytes');
}

/**
 * Calls onField(fieldNumber, wireType, start, end) for each field of a message; for varints
 * start is the decoded value and end the next position.
 * @param {Uint8Array} buf
 * @param {(field: number, wire: number, a: number, b: number) => void} onField
 */
function forEachField(buf, onField) {
  let pos = 0;
  while (pos < buf.length) {
    const [tag, p] = readVarint(buf, pos);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 0) throw new TypeError('field number 0');
    switch (wire) {
      case 0: {
        const [v, next] = readVarint(buf, p);
        onField(field, wire, v, next);
        pos = next;
        break;
      }
      case 1:
        pos = p + 8;
        break;
      case 2: {
        const [len, start] = readVarint(buf, p);
        const end = start + len;
        if (end > buf.length) throw new TypeError('length-delimited field runs past the message');
        onField(field, wire, start, end);
        pos = end;
        break;
      }
      case 5:
        pos = p + 4;
        break;
      default:
        throw new TypeError(`unsupported wire type ${wire}`);
    }
    if (pos > buf.length) throw new TypeError('fixed-width field runs past the message');
  }
}

/**
 * `status.code` of an encoded CheckResponse: 0 (OK, allow) when `status` or its code is absent,
 * as Envoy reads it (SPEC §3: a CheckResponse without status means allow). Repeated fields merge
 * the protobuf way (the last code wins). Throws TypeError on a malformed message.
 * @param {Uint8Array} message
 */
export function checkResponseStatusCode(message) {
  let code = 0;
  forEachField(message, (field, wire, start, end) => {
    if (field !== 1) return;
    if (wire !== 2) throw new TypeError('CheckResponse.status is not a message');
    forEachField(message.subarray(start, end), (f, w, v) => {
      if (f === 1 && w === 0) code = v > 0x7fffffff ? v - 2 ** 64 : v;
    });
  });
  return code;
}

export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';

/**
 * What one unary answer was, for the load generators (openloop.mjs, closedloop.mjs):
 * `[outcome, detail]`, detail null when ok. On the Check path a CheckResponse with a non-zero
 * status is `denied`; elsewhere any grpc-status 0 answer is `ok`. A rejected call (stream reset,
 * session gone) is `streamErrors` and is classified by the caller.
 * @param {{httpStatus: number, grpcStatus: number | null, grpcMessage?: string | null, body: Buffer}} ans
 * @param {string} path
 * @returns {['ok' | 'httpErrors' | 'grpcErrors' | 'denied' | 'malformed', string | null]}
 */
export function answerOutcome(ans, path) {
  if (ans.httpStatus !== 200) return ['httpErrors', `HTTP ${ans.httpStatus}`];
  if (ans.grpcStatus !== 0) return ['grpcErrors', `grpc-status ${ans.grpcStatus} ${ans.grpcMessage ?? ''}`.trim()];
  if (path !== CHECK_PATH) return ['ok', null];
  try {
    const code = checkResponseStatusCode(unframeMessage(ans.body));
    return code === 0 ? ['ok', null] : ['denied', `CheckResponse status.code ${code}`];
  } catch (err) {
    return ['malformed', err instanceof Error ? err.message : String(err)];
  }
}

/**
 * The outcomes in which the server answered (a CheckResponse or a gRPC status), so chio decided
 * and receipted the call; HTTP errors and stream errors (e.g. REFUSED_STREAM) never reached its
 * handler.
 */
export const ANSWERED_OUTCOMES = new Set(['ok', 'denied', 'malformed', 'grpcErrors']);

/**
 * How many of the counted calls the server answered (see ANSWERED_OUTCOMES).
 * @param {Record<string, number>} counts  outcome → calls
 */
export function measuredAnswered(counts) {
  let n = 0;
  for (const outcome of ANSWERED_OUTCOMES) n += counts[outcome] ?? 0;
  return n;
}

/**
 * Encoders/decoders of Envoy's official CheckRequest/CheckResponse (the service's own loader).
 * Needs `npm run build`.
 * @returns {Promise<{decodeRequest: (b: Buffer) => any, decodeResponse: (b: Buffer) => any}>}
 */
export async function loadCheckCodec() {
  const envoy = await import('../../dist/check/envoy.js');
  const service = envoy.loadAuthProtos()[envoy.AUTHORIZATION_SERVICE];
  const method = service && 'Check' in service ? service.Check : null;
  if (!method) throw new TypeError('envoy.service.auth.v3.Authorization/Check not found in the Envoy protos');
  return {
    decodeRequest: (b) => method.requestDeserialize(b),
    decodeResponse: (b) => method.responseDeserialize(b),
  };
}
