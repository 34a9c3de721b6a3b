import { type ErrorKind, type Frame, GrpcStatus, type RequestId } from '../codec.js';
import { FLAG_EVENT, FLAG_REQUEST, FLAG_TWOWAY, HEADER, HESSIAN2, MAGIC_HI, MAGIC_LO, SERIALIZATION_MASK, Status } from './constants.js';

export function setRequestId(raw: Buffer, id: RequestId): void {
  if (typeof id === 'bigint') raw.writeBigUInt64BE(BigInt.asUintN(64, id), 4);
  else {
    // The engine's ids are 32-bit: no bigint on the hot path.
    raw.writeUInt32BE(Math.floor(id / 0x1_0000_0000) >>> 0, 4);
    raw.writeUInt32BE(id >>> 0, 8);
  }
}

function frame(flag: number, status: number, id: RequestId, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER + body.length);
  out[0] = MAGIC_HI;
  out[1] = MAGIC_LO;
  out[2] = flag;
  out[3] = status;
  setRequestId(out, id);
  out.writeUInt32BE(body.length, 12);
  body.copy(out, HEADER);
  return out;
}

const NULL_BODY = Buffer.from([0x4e]);

/** As Java answers: an event response with the caller's id, status OK and a null body. */
export const heartbeatReply = (request: Frame): Buffer =>
  frame(FLAG_EVENT | (request.raw[2]! & SERIALIZATION_MASK), Status.OK, request.requestId, NULL_BODY);

export const keepalive = (id: RequestId): Buffer => frame(FLAG_REQUEST | FLAG_TWOWAY | FLAG_EVENT | HESSIAN2, 0, id, NULL_BODY);

const STATUS: Record<ErrorKind, number> = {
  'no-route': Status.SERVICE_NOT_FOUND,
  'no-healthy-upstream': Status.SERVER_ERROR,
  'connect-failure': Status.SERVER_ERROR,
  'upstream-reset': Status.SERVER_ERROR,
  timeout: Status.SERVER_TIMEOUT,
  overflow: Status.SERVER_THREADPOOL_EXHAUSTED_ERROR,
  'frame-too-large': Status.BAD_REQUEST,
  'codec-error': Status.BAD_REQUEST,
};

/** A hessian2 string; chunked past 65,535 UTF-16 units, which a reason never needs, so it is cut there. */
function hessianString(text: string): Buffer {
  // Lone surrogates would not survive UTF-8; Java clients count UTF-16 units, as `length` does.
  const s = text.slice(0, 0xffff).replace(/[\ud800-\udfff]/g, '?');
  const bytes = Buffer.byteLength(s);
  const short = s.length < 32;
  const out = Buffer.allocUnsafe((short ? 1 : 3) + bytes);
  if (short) out[0] = s.length;
  else {
    out[0] = 0x53;
    out.writeUInt16BE(s.length, 1);
  }
  out.write(s, short ? 1 : 3, 'utf8');
  return out;
}

/**
 * A response with the matching status whose body is the reason, as Java's ExchangeCodec writes an error
 * (`writeUTF(errorMessage)`); consumers reject the call with that text. Always a hessian2 string: the
 * serialization id of the request is kept so strict clients accept the frame.
 */
export function errorResponse(request: Frame, kind: ErrorKind, message: string): Buffer | null {
  if (request.kind !== 'request' || request.heartbeat) return null;
  const ser = request.raw[2]! & SERIALIZATION_MASK;
  return frame(ser, STATUS[kind], request.requestId, hessianString(`xsidecar ${kind}: ${message}`));
}

/** Dubbo's response status as gRPC. An exception the service threw travels with status OK (20), as in Dubbo. */
const GRPC: Record<number, number> = {
  [Status.OK]: GrpcStatus.OK,
  [Status.CLIENT_TIMEOUT]: GrpcStatus.DEADLINE_EXCEEDED,
  [Status.SERVER_TIMEOUT]: GrpcStatus.DEADLINE_EXCEEDED,
  [Status.BAD_REQUEST]: GrpcStatus.INVALID_ARGUMENT,
  [Status.BAD_RESPONSE]: GrpcStatus.INTERNAL,
  [Status.SERVICE_NOT_FOUND]: GrpcStatus.UNIMPLEMENTED,
  [Status.SERVICE_ERROR]: GrpcStatus.INTERNAL,
  [Status.SERVER_ERROR]: GrpcStatus.INTERNAL,
  [Status.CLIENT_ERROR]: GrpcStatus.INTERNAL,
  [Status.SERVER_THREADPOOL_EXHAUSTED_ERROR]: GrpcStatus.RESOURCE_EXHAUSTED,
};

export const grpcStatus = (response: Frame): number => (response.ok ? GrpcStatus.OK : GRPC[response.status!] ?? GrpcStatus.UNKNOWN);
