import { CodecError, NEED_MORE, type Frame, type MatchResult, type NeedMore } from '../codec.js';
import { CMD_HEARTBEAT, TYPE_ONEWAY, TYPE_REQUEST, TYPE_RESPONSE, hasCrc } from './constants.js';
import { BoltFrame } from './frame.js';

const malformed = (what: string, value: number) => new CodecError(`bolt: bad ${what} ${value}`, 'malformed');

export function match(head: Buffer): MatchResult {
  const s = head[0] - 1;
  if (s !== 0 && s !== 1) return head.length === 0 ? 'need-more' : 'no';
  // Type, and a command code below 256 (heartbeat, request, response, MOSN's goaway 100), after ver1 in v2.
  if (head.length < 4 + s) return 'need-more';
  return (s === 0 || head[1] === 1 || head[1] === 2) && head[1 + s] <= TYPE_ONEWAY && head[2 + s] === 0 ? 'yes' : 'no';
}

/**
 * Where the class, header and content lengths start (`s`: 0 in v1, 1 in v2): after 10 bytes (12 in v2),
 * a response's 2-byte status or a request's 4-byte timeout. The fixed header ends 8 bytes later.
 */
const lengthsAt = (s: number, response: boolean) => 10 + 2 * s + (response ? 2 : 4);

export function frameLength(buf: Buffer): number {
  const s = buf[0]! - 1;
  if ((s !== 0 && s !== 1) || buf.length < 2 + s) return -1;
  const at = lengthsAt(s, buf[1 + s] === TYPE_RESPONSE);
  if (buf.length < at + 8) return -1;
  return at + 8 + buf.readInt16BE(at) + buf.readInt16BE(at + 2) + buf.readInt32BE(at + 4) + (hasCrc(buf) ? 4 : 0);
}

export function decode(buf: Buffer, maxFrameBytes: number): Frame | NeedMore | CodecError {
  const len = buf.length;
  if (len === 0) return NEED_MORE;
  const s = buf[0] - 1;
  if (s !== 0 && s !== 1) return malformed('protocol code', buf[0]);
  if (s === 1 && len > 1 && buf[1] !== 1 && buf[1] !== 2) return malformed('v2 protocol version', buf[1]);
  if (len < 2 + s) return NEED_MORE;
  const type = buf[1 + s];
  if (type > TYPE_ONEWAY) return malformed('command type', type);
  const response = type === TYPE_RESPONSE;
  const base = 10 + 2 * s;
  const lengths = lengthsAt(s, response);
  const fixed = lengths + 8;
  if (len < fixed) return NEED_MORE;
  // Signed like the Java reader: a negative length is a broken frame, never a huge one.
  const classLen = buf.readInt16BE(lengths);
  const headerLen = buf.readInt16BE(lengths + 2);
  const contentLen = buf.readInt32BE(lengths + 4);
  if (classLen < 0 || headerLen < 0 || contentLen < 0) return malformed('length', Math.min(classLen, headerLen, contentLen));
  const bodyStart = fixed + classLen + headerLen;
  const bodyEnd = bodyStart + contentLen;
  const total = bodyEnd + (hasCrc(buf) ? 4 : 0);
  const heartbeat = buf.readUInt16BE(2 + s) === CMD_HEARTBEAT;
  const id = buf.readUInt32BE(5 + s);
  const timeout = response ? 0 : buf.readInt32BE(base);
  // Bolt uses 0 and -1 for "no deadline".
  const timeoutMs = timeout > 0 ? timeout : undefined;
  if (total > maxFrameBytes) {
    // The fixed header alone is enough to answer natively; there is nothing to route on.
    const request = type === TYPE_REQUEST
      ? new BoltFrame(buf.subarray(0, fixed), 'request', heartbeat, id, timeoutMs, undefined, fixed, fixed, fixed)
      : undefined;
    return new CodecError(`bolt: frame of ${total} bytes is over the ${maxFrameBytes}-byte limit`, 'too-large', request);
  }
  if (len < total) return NEED_MORE;
  const kind = response ? 'response' : type === TYPE_REQUEST ? 'request' : 'oneway';
  const status = response ? buf.readUInt16BE(base) : undefined;
  return new BoltFrame(buf.subarray(0, total), kind, heartbeat, id, timeoutMs, status, fixed + classLen, bodyStart, bodyEnd);
}
