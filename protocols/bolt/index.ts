import type { Codec } from '../codec.js';
import { decode, frameLength, match } from './decode.js';
import { errorResponse, grpcStatus, heartbeatReply, keepalive, setRequestId } from './encode.js';

/** Bolt v1 and v2 (SOFARPC's transport): multiplexed, 32-bit ids, deadlines and headers in the frame. */
export const boltCodec: Codec = {
  name: 'bolt',
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
