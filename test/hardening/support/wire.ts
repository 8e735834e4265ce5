/**
 * Raw gRPC calls over node:http2 (gRPC over HTTP/2, https://github.com/grpc/grpc/blob/master/doc/
 * PROTOCOL-HTTP2.md: a Length-Prefixed-Message is 1 byte compressed flag, 4 bytes big-endian
 * length, the message), so tests can send bytes no protobuf library would produce: mutated
 * CheckRequest encodings, truncated frames, lying lengths. Responses are decoded with the same
 * proto-loader definition the server uses.
 */
import http2 from 'node:http2';
import { AUTHORIZATION_SERVICE, loadAuthProtos, type CheckResponseMessage } from '../../../src/check/envoy.js';

export const CHECK_PATH = `/${AUTHORIZATION_SERVICE}/Check`;

export interface WireResult {
  /** grpc-status (trailers, or headers for a trailers-only response) */
  readonly grpcStatus: number | null;
  readonly grpcMessage: string | null;
  /** the decoded CheckResponse when the call carried one */
  readonly response: CheckResponseMessage | null;
}

/** One Length-Prefixed-Message; `declaredLength` lets the prefix lie. */
export function grpcFrame(message: Uint8Array, options: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt8(options.compressed ? 1 : 0, 0);
  prefix.writeUInt32BE(options.declaredLength ?? message.length, 1);
  return Buffer.concat([prefix, message]);
}

function decodeResponse(body: Buffer): CheckResponseMessage | null {
  if (body.length < 5) return null;
  const length = body.readUInt32BE(1);
  const service = loadAuthProtos()[AUTHORIZATION_SERVICE] as unknown as { Check: { responseDeserialize: (b: Buffer) => unknown } };
  return service.Check.responseDeserialize(body.subarray(5, 5 + length)) as CheckResponseMessage;
}

/** A client session to the gRPC listener that sends raw request bodies. */
export class RawGrpcClient {
  private readonly session: http2.ClientHttp2Session;

  constructor(port: number) {
    this.session = http2.connect(`http://127.0.0.1:${port}`);
    this.session.on('error', () => undefined);
  }

  /** POSTs `body` (already framed) to Check and reads status and response; rejects after `timeoutMs`. */
  call(body: Buffer, timeoutMs = 10_000): Promise<WireResult> {
    return new Promise((resolve, reject) => {
      const req = this.session.request({
        ':method': 'POST',
        ':path': CHECK_PATH,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      let status: { code: number | null; message: string | null } = { code: null, message: null };
      const take = (h: http2.IncomingHttpHeaders): void => {
        const code = h['grpc-status'];
        if (code !== undefined) status = { code: Number(code), message: decodeURIComponent(String(h['grpc-message'] ?? '')) };
      };
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => {
        req.close();
        reject(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      req.on('response', take);
      req.on('trailers', take);
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        clearTimeout(timer);
        try {
          resolve({ grpcStatus: status.code, grpcMessage: status.message, response: decodeResponse(Buffer.concat(chunks)) });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.end(body);
    });
  }

  close(): void {
    this.session.close();
  }
}

// ---- hand-made protobuf ----

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 127) {
    out.push((v & 127) | 128);
    v >>>= 7;
  }
  out.push(v);
  return Buffer.from(out);
}

function lengthDelimited(field: number, body: Buffer): Buffer {
  return Buffer.concat([varint((field << 3) | 2), varint(body.length), body]);
}

/**
 * CheckRequest{attributes{metadata_context{filter_metadata{"x": Struct nested `depth` deep}}}} in
 * wire form: deeper than protobufjs decodes (it stops at 100), what a JWT with nested claims
 * becomes once Envoy's jwt_authn copies it into metadata.
 */
export function deepMetadataMessage(depth: number): Buffer {
  let value = lengthDelimited(3, Buffer.from('leaf')); // Value.string_value
  for (let i = 0; i < depth; i++) {
    const entry = Buffer.concat([lengthDelimited(1, Buffer.from('a')), lengthDelimited(2, value)]);
    value = lengthDelimited(5, lengthDelimited(1, entry)); // Value.struct_value = Struct{fields: {a: value}}
  }
  const struct = lengthDelimited(1, Buffer.concat([lengthDelimited(1, Buffer.from('a')), lengthDelimited(2, value)]));
  const filterMetadata = lengthDelimited(1, Buffer.concat([lengthDelimited(1, Buffer.from('x')), lengthDelimited(2, struct)]));
  return lengthDelimited(1, lengthDelimited(11, filterMetadata)); // CheckRequest.attributes.metadata_context
}

