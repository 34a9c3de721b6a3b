import type { Codec } from '../codec.js';
import { decode, match } from './decode.js';
import { errorResponse, heartbeatReply, keepalive, setRequestId } from './encode.js';
import { grpcStatus } from './status.js';

/** HSF 2.x (Alibaba's RPC, no public specification; see README.md): multiplexed, 64-bit ids, deadlines in the frame. */
export const hsfCodec: Codec = {
  name: 'hsf',
  poolMode: 'multiplex',
  match,
  decode,
  setRequestId,
  heartbeatReply,
  keepalive,
  errorResponse,
  grpcStatus,
};
