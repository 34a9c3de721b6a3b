import { type Frame, GrpcStatus } from '../codec.js';
import { Status } from './constants.js';

/** HSF's status (ours past 0: see README.md) as gRPC. */
const GRPC: Record<number, number> = {
  [Status.OK]: GrpcStatus.OK,
  [Status.BAD_REQUEST]: GrpcStatus.INVALID_ARGUMENT,
  [Status.FRAME_TOO_LARGE]: GrpcStatus.INVALID_ARGUMENT,
  [Status.SERVICE_NOT_FOUND]: GrpcStatus.UNIMPLEMENTED,
  [Status.SERVER_ERROR]: GrpcStatus.INTERNAL,
  [Status.NO_PROVIDER]: GrpcStatus.UNAVAILABLE,
  [Status.CONNECT_FAILED]: GrpcStatus.UNAVAILABLE,
  [Status.TIMEOUT]: GrpcStatus.DEADLINE_EXCEEDED,
  [Status.THREADPOOL_EXHAUSTED]: GrpcStatus.RESOURCE_EXHAUSTED,
};

export const grpcStatus = (response: Frame): number => GRPC[response.status ?? 0] ?? GrpcStatus.UNKNOWN;
