import type { ErrorKind, Frame, RequestId } from '../codec.js';
import {
  HEARTBEAT_MAGIC, HEARTBEAT_SIZE, ID_REQUEST, MAGIC, RESPONSE_HEADER, Status, TYPE_REQUEST, TYPE_RESPONSE, VERSION, idOffset,
} from './constants.js';

const TWO_32 = 2 ** 32;

/** Ids are 64 bits: engine numbers fit, bigints are taken modulo 2^64. */
export function setRequestId(raw: Buffer, id: RequestId): void {
  const at = idOffset(raw);
  if (raw.length < at + 8) return;
  if (typeof id === 'bigint') {
    raw.writeBigUInt64BE(BigInt.asUintN(64, id), at);
    return;
  }
  raw.writeUInt32BE(Math.floor(id / TWO_32) >>> 0, at);
  raw.writeUInt32BE(id >>> 0, at + 4);
}

/** Unverified: the request heartbeat sent back with type = response, everything else (id, timeout) echoed. */
export function heartbeatReply(request: Frame): Buffer {
  const out = Buffer.from(request.raw.subarray(0, HEARTBEAT_SIZE));
  out[1] = TYPE_RESPONSE;
  return out;
}

/** A heartbeat request with no timeout and zero extension bytes. */
export function keepalive(id: RequestId): Buffer {
  const out = Buffer.alloc(HEARTBEAT_SIZE);
  out[0] = HEARTBEAT_MAGIC;
  out[1] = TYPE_REQUEST;
  out[2] = VERSION;
  setRequestId(out, id);
  return out;
}

const STATUS: Record<ErrorKind, number> = {
  'no-route': Status.SERVICE_NOT_FOUND,
  'no-healthy-upstream': Status.NO_PROVIDER,
  'connect-failure': Status.CONNECT_FAILED,
  'upstream-reset': Status.SERVER_ERROR,
  timeout: Status.TIMEOUT,
  overflow: Status.THREADPOOL_EXHAUSTED,
  'frame-too-large': Status.FRAME_TOO_LARGE,
  'codec-error': Status.BAD_REQUEST,
};

/** A hessian2 string: one chunk of at most 4000 UTF-16 units, lone surrogates replaced so units and bytes agree. */
export function hessianString(message: string): Buffer {
  const chars = message.slice(0, 4000).replace(/[\ud800-\udfff]/g, '?');
  const n = chars.length;
  const head = n < 32 ? [n] : n < 1024 ? [0x30 + (n >> 8), n & 0xff] : [0x53, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from(head), Buffer.from(chars, 'utf8')]);
}

/**
 * A response with the status for `kind` and a hessian2 string body; the serialization and extension bytes
 * and the id are the request's. Unverified: what a real HSF consumer makes of the body.
 */
export function errorResponse(request: Frame, kind: ErrorKind, message: string): Buffer | null {
  const req = request.raw;
  if (request.kind !== 'request' || request.heartbeat || req.length < ID_REQUEST + 8) return null;
  const body = hessianString(`xsidecar ${kind}: ${message}`);
  const out = Buffer.allocUnsafe(RESPONSE_HEADER + body.length);
  out[0] = MAGIC;
  out[1] = req[1]!;
  out[2] = TYPE_RESPONSE;
  out[3] = STATUS[kind];
  req.copy(out, 4, 3, 15); // serialization, extension bytes, id: one byte further on in a response
  out.writeUInt32BE(body.length, 16);
  body.copy(out, RESPONSE_HEADER);
  return out;
}
