import { CodecError, NEED_MORE, type Frame, type MatchResult, type NeedMore, type RequestId } from '../codec.js';
import { FLAG_EVENT, FLAG_REQUEST, FLAG_TWOWAY, HEADER, MAGIC_HI, MAGIC_LO } from './constants.js';
import { DubboFrame } from './frame.js';

export function match(head: Buffer): MatchResult {
  if (head.length === 0) return 'need-more';
  if (head[0] !== MAGIC_HI) return 'no';
  if (head.length < 2) return 'need-more';
  return head[1] === MAGIC_LO ? 'yes' : 'no';
}

/** The 64-bit id as a number while it fits in 32 bits (always, for ids we chose), else a bigint. */
function readId(b: Buffer): RequestId {
  const hi = b.readUInt32BE(4);
  return hi === 0 ? b.readUInt32BE(8) : b.readBigUInt64BE(4);
}

export const frameLength = (buf: Buffer): number => (buf.length >= HEADER ? HEADER + buf.readInt32BE(12) : -1);

export function decode(buf: Buffer, maxFrameBytes: number): Frame | NeedMore | CodecError {
  if (buf.length < 2) return buf.length === 1 && buf[0] !== MAGIC_HI ? bad('magic', buf[0]!) : NEED_MORE;
  if (buf[0] !== MAGIC_HI || buf[1] !== MAGIC_LO) return bad('magic', buf.readUInt16BE(0));
  if (buf.length < HEADER) return NEED_MORE;
  const flag = buf[2]!;
  // Signed like Java's readInt: a negative length is a broken frame, never a huge one.
  const bodyLen = buf.readInt32BE(12);
  if (bodyLen < 0) return bad('body length', bodyLen);
  const total = HEADER + bodyLen;
  const request = (flag & FLAG_REQUEST) !== 0;
  const kind = !request ? 'response' : flag & FLAG_TWOWAY ? 'request' : 'oneway';
  const heartbeat = (flag & FLAG_EVENT) !== 0;
  const status = request ? undefined : buf[3];
  if (total > maxFrameBytes) {
    // The header alone is enough to answer natively; there is nothing to route on.
    const header = kind === 'request' && !heartbeat ? new DubboFrame(buf.subarray(0, HEADER), kind, false, readId(buf), undefined) : undefined;
    return new CodecError(`dubbo: frame of ${total} bytes is over the ${maxFrameBytes}-byte limit`, 'too-large', header);
  }
  if (buf.length < total) return NEED_MORE;
  return new DubboFrame(buf.subarray(0, total), kind, heartbeat, readId(buf), status);
}

const bad = (what: string, value: number) => new CodecError(`dubbo: bad ${what} ${value}`, 'malformed');
