import { crc32 } from 'node:zlib';
import { type ErrorKind, type Frame, GrpcStatus, type RequestId } from '../codec.js';
import { CMD_HEARTBEAT, CMD_RESPONSE, CODEC_PROTOBUF, Status, hasCrc, shift } from './constants.js';
import { ERROR_CLASS, errorBody } from './hessian.js';

export function setRequestId(raw: Buffer, id: RequestId): void {
  // Bolt ids are 32 bits: larger engine ids wrap.
  const value = typeof id === 'bigint' ? Number(BigInt.asUintN(32, id)) : id >>> 0;
  if (!hasCrc(raw)) {
    raw.writeUInt32BE(value, 5 + shift(raw));
    return;
  }
  // The CRC covers the id. Re-sign only a frame that arrived intact, so corruption still shows downstream.
  const end = raw.length - 4;
  const intact = crc32(raw.subarray(0, end)) === raw.readUInt32BE(end);
  raw.writeUInt32BE(value, 5 + shift(raw));
  if (intact) raw.writeUInt32BE(crc32(raw.subarray(0, end)), end);
}

/** A response to `req` keeping its protocol, ver1, ver2, id, codec and switch (hence its CRC mode). */
function reply(req: Buffer, cmd: number, status: number, cls?: Buffer, header?: Buffer, body?: Buffer): Buffer {
  const s = shift(req);
  const fixed = 20 + 2 * s;
  const cl = cls?.length ?? 0, hl = header?.length ?? 0, bl = body?.length ?? 0;
  const crc = hasCrc(req) ? 4 : 0;
  const out = Buffer.allocUnsafe(fixed + cl + hl + bl + crc);
  req.copy(out, 0, 0, 12); // proto [ver1] type cmdcode ver2 id codec [switch]; type and cmdcode rewritten below
  out[1 + s] = 0;
  out.writeUInt16BE(cmd, 2 + s);
  let p = out.writeUInt16BE(status, 10 + 2 * s);
  p = out.writeInt16BE(cl, p);
  p = out.writeInt16BE(hl, p);
  p = out.writeInt32BE(bl, p);
  if (cls) p += cls.copy(out, p);
  if (header) p += header.copy(out, p);
  if (body) p += body.copy(out, p);
  if (crc) out.writeUInt32BE(crc32(out.subarray(0, p)), p);
  return out;
}

export const heartbeatReply = (request: Frame): Buffer => reply(request.raw, CMD_HEARTBEAT, Status.SUCCESS);

/** A v1 heartbeat, understood by every Bolt peer; -1 is sofa-bolt's "no timeout" for heartbeats. */
export function keepalive(id: RequestId): Buffer {
  const out = Buffer.alloc(22);
  out[0] = out[1] = out[4] = out[9] = 1; // proto 1, request, cmdcode 0, ver2 1, hessian2
  setRequestId(out, id);
  out.writeInt32BE(-1, 10);
  return out;
}

const STATUS: Record<ErrorKind, number> = {
  'no-route': Status.NO_PROCESSOR,
  // Nothing was sent upstream: a transport failure the caller may retry.
  'no-healthy-upstream': Status.CONNECTION_CLOSED,
  'connect-failure': Status.CONNECTION_CLOSED,
  // The upstream may have run the call: a server failure, not an invitation to retry.
  'upstream-reset': Status.SERVER_EXCEPTION,
  overflow: Status.SERVER_THREADPOOL_BUSY,
  timeout: Status.TIMEOUT,
  'frame-too-large': Status.CODEC_EXCEPTION,
  'codec-error': Status.CODEC_EXCEPTION,
};

// sofa-bolt-node's protobuf responses flag errors in the header map; the body is then the bare message.
const PB_ERROR_HEADER = Buffer.alloc(36);
PB_ERROR_HEADER.writeInt32BE(24, 0);
PB_ERROR_HEADER.write('sofa_head_response_error', 4, 'latin1');
PB_ERROR_HEADER.writeInt32BE(4, 28);
PB_ERROR_HEADER.write('true', 32, 'latin1');

/**
 * Like sofa-bolt's own exception responses: class RpcServerException, body an RpcServerException whose
 * detailMessage is the reason. sofa-rpc-node rejects the call with an Error whose message contains it.
 */
export function errorResponse(request: Frame, kind: ErrorKind, message: string): Buffer | null {
  if (request.kind !== 'request') return null;
  const req = request.raw;
  const text = `xsidecar ${kind}: ${message}`;
  return req[9 + shift(req)] === CODEC_PROTOBUF
    ? reply(req, CMD_RESPONSE, STATUS[kind], ERROR_CLASS, PB_ERROR_HEADER, Buffer.from(text))
    : reply(req, CMD_RESPONSE, STATUS[kind], ERROR_CLASS, undefined, errorBody(text));
}

/** sofa-bolt ResponseStatus as gRPC: what the status says happened, not who caused it. */
const GRPC: Record<number, number> = {
  [Status.SUCCESS]: GrpcStatus.OK,
  [Status.SERVER_EXCEPTION]: GrpcStatus.INTERNAL,
  [Status.SERVER_THREADPOOL_BUSY]: GrpcStatus.RESOURCE_EXHAUSTED,
  [Status.NO_PROCESSOR]: GrpcStatus.UNIMPLEMENTED,
  [Status.TIMEOUT]: GrpcStatus.DEADLINE_EXCEEDED,
  [Status.CODEC_EXCEPTION]: GrpcStatus.INVALID_ARGUMENT,
  [Status.CONNECTION_CLOSED]: GrpcStatus.UNAVAILABLE,
};

export const grpcStatus = (response: Frame): number => GRPC[response.status ?? 0] ?? GrpcStatus.UNKNOWN;
