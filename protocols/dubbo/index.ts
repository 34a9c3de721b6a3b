import type { Codec } from '../codec.js';
import { decode, frameLength, match } from './decode.js';
import { errorResponse, grpcStatus, heartbeatReply, keepalive, setRequestId } from './encode.js';

/** Apache Dubbo 2 (the `dubbo://` protocol): multiplexed, 64-bit ids, hessian2 bodies read header-first. */
export const dubboCodec: Codec = {
  name: 'dubbo',
  poolMode: 'multiplex',
  match,
  decode,
  frameLength,
  setRequestId,
  heartbeatReply,
  keepalive,
  errorResponse,
  grpcStatus,
};
