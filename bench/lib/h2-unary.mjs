/**
 * One unary gRPC call on a raw node:http2 client session (gRPC over HTTP/2:
 * https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md). Used by the open-loop generator
 * (bench/openloop.mjs) and the harness's sanity check: no grpc-js client on the load side (the
 * grpc-js client costs ~3× a server call and measures itself; performance notes §3.3b).
 */
import http2 from 'node:http2';

/** @typedef {{httpStatus: number, grpcStatus: number | null, grpcMessage: string | null, body: Buffer}} UnaryAnswer */

/**
 * @param {string} origin  e.g. http://127.0.0.1:9191
 * @returns {Promise<http2.ClientHttp2Session>}
 */
export function connect(origin) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(origin);
    const onError = (err) => reject(err);
    session.once('error', onError);
    session.once('connect', () => {
      session.off('error', onError);
      // A later session error (e.g. a GOAWAY from an overloaded server) fails the streams still on
      // it, which the caller counts; it must not crash the load generator.
      session.on('error', () => undefined);
      resolve(session);
    });
  });
}

/**
 * Sends one framed gRPC request and collects the answer. Resolves with the HTTP status, the
 * grpc-status (null when the server sent none: itself a failure) and the raw response body;
 * rejects on a stream error. `grpc-status` is read from the trailers, or from the headers of a
 * Trailers-Only response.
 * @param {http2.ClientHttp2Session} session
 * @param {string} path
 * @param {Buffer} frame
 * @returns {Promise<UnaryAnswer>}
 */
export function unaryCall(session, path, frame) {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    let httpStatus = 0;
    /** @type {string | null} */
    let grpcStatus = null;
    /** @type {string | null} */
    let grpcMessage = null;
    /** @type {Buffer[]} */
    const chunks = [];
    const takeStatus = (headers) => {
      const s = headers['grpc-status'];
      if (s !== undefined) grpcStatus = String(s);
      const m = headers['grpc-message'];
      if (m !== undefined) grpcMessage = decodeURIComponent(String(m));
    };
    stream.on('response', (headers) => {
      httpStatus = Number(headers[':status']);
      takeStatus(headers);
    });
    stream.on('trailers', takeStatus);
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.once('error', reject);
    stream.once('close', () => {
      if (stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR && httpStatus === 0) {
        reject(new Error(`stream reset with code ${stream.rstCode}`));
        return;
      }
      const code = grpcStatus === null || !/^\d+$/.test(grpcStatus) ? null : Number(grpcStatus);
      resolve({ httpStatus, grpcStatus: code, grpcMessage, body: Buffer.concat(chunks) });
    });
    stream.end(frame);
  });
}

/**
 * @param {http2.ClientHttp2Session} session
 * @returns {Promise<void>}
 */
export function closeSession(session) {
  return new Promise((resolve) => {
    if (session.closed || session.destroyed) {
      resolve();
      return;
    }
    session.close(() => resolve());
  });
}
