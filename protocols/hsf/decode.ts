import { CodecError, NEED_MORE, type Frame, type MatchResult, type NeedMore, type RequestId } from '../codec.js';
import {
  HEARTBEAT_MAGIC, HEARTBEAT_SIZE, ID_HEARTBEAT, ID_REQUEST, ID_RESPONSE, MAGIC, REQUEST_COUNTED, REQUEST_FIXED,
  RESPONSE_HEADER, TYPE_REQUEST, TYPE_RESPONSE, VERSION,
} from './constants.js';
import { HsfFrame } from './frame.js';

/** Magic, version and type must all fit: 0x0e and 0x0c alone are too common to claim a connection on. */
export function match(head: Buffer): MatchResult {
  if (head.length === 0) return 'need-more';
  const m = head[0];
  if (m !== MAGIC && m !== HEARTBEAT_MAGIC) return 'no';
  // Requests put the version before the type, heartbeats after it.
  const version = m === MAGIC ? 1 : 2;
  const type = 3 - version;
  if (head.length > version && head[version] !== VERSION) return 'no';
  if (head.length > type && head[type] !== TYPE_REQUEST && head[type] !== TYPE_RESPONSE) return 'no';
  return head.length < 3 ? 'need-more' : 'yes';
}

/** The 64-bit id as a number while it fits in 32 bits (always, for ids we chose), else a bigint. */
function readId(b: Buffer, at: number): RequestId {
  const hi = b.readUInt32BE(at);
  return hi === 0 ? b.readUInt32BE(at + 4) : b.readBigUInt64BE(at);
}

const bad = (what: string, value: number) => new CodecError(`hsf: bad ${what} ${value}`, 'malformed');
const tooLarge = (total: number, max: number, request?: Frame) =>
  new CodecError(`hsf: frame of at least ${total} bytes is over the ${max}-byte limit`, 'too-large', request);
const timeoutOf = (ms: number) => (ms > 0 ? ms : undefined);
/** Only the fixed header is known to be there: enough to answer natively, not to route. */
const early = (buf: Buffer, id: RequestId, timeoutMs: number | undefined) =>
  new HsfFrame(buf.subarray(0, REQUEST_COUNTED), 'request', false, id, timeoutMs, undefined);

export function decode(buf: Buffer, maxFrameBytes: number): Frame | NeedMore | CodecError {
  const len = buf.length;
  if (len === 0) return NEED_MORE;
  if (buf[0] === HEARTBEAT_MAGIC) return heartbeat(buf, maxFrameBytes);
  if (buf[0] !== MAGIC) return bad('magic', buf[0]!);
  if (len > 1 && buf[1] !== VERSION) return bad('version', buf[1]!);
  if (len < 3) return NEED_MORE;
  const type = buf[2]!;
  if (type === TYPE_RESPONSE) return response(buf, maxFrameBytes);
  if (type !== TYPE_REQUEST) return bad('type', type);
  if (len < REQUEST_COUNTED) return NEED_MORE;
  const id = readId(buf, ID_REQUEST);
  const timeoutMs = timeoutOf(buf.readUInt32BE(15));
  const n = buf.readUInt32BE(27);
  // The lengths so far, as doubles: u32 sums cannot overflow them, and a huge N is refused before any loop.
  const head = REQUEST_FIXED + 8 * n;
  let total = head + buf.readUInt32BE(19) + buf.readUInt32BE(23);
  if (total > maxFrameBytes) return tooLarge(total, maxFrameBytes, early(buf, id, timeoutMs));
  if (len < head) return NEED_MORE;
  // Each length is at most 2^32 and the sum stops once past the limit, so it stays exact.
  for (let p = REQUEST_COUNTED; p < head && total <= maxFrameBytes; p += 4) total += buf.readUInt32BE(p);
  if (total > maxFrameBytes) return tooLarge(total, maxFrameBytes, early(buf, id, timeoutMs));
  if (len < total) return NEED_MORE;
  return new HsfFrame(buf.subarray(0, total), 'request', false, id, timeoutMs, undefined, n);
}

function response(buf: Buffer, maxFrameBytes: number): Frame | NeedMore | CodecError {
  if (buf.length < RESPONSE_HEADER) return NEED_MORE;
  const total = RESPONSE_HEADER + buf.readUInt32BE(16);
  if (total > maxFrameBytes) return tooLarge(total, maxFrameBytes);
  if (buf.length < total) return NEED_MORE;
  return new HsfFrame(buf.subarray(0, total), 'response', false, readId(buf, ID_RESPONSE), undefined, buf[3]);
}

function heartbeat(buf: Buffer, maxFrameBytes: number): Frame | NeedMore | CodecError {
  const type = buf[1];
  if (buf.length > 1 && type !== TYPE_REQUEST && type !== TYPE_RESPONSE) return bad('heartbeat type', type!);
  if (buf.length > 2 && buf[2] !== VERSION) return bad('heartbeat version', buf[2]!);
  if (HEARTBEAT_SIZE > maxFrameBytes) return tooLarge(HEARTBEAT_SIZE, maxFrameBytes);
  if (buf.length < HEARTBEAT_SIZE) return NEED_MORE;
  const response = type === TYPE_RESPONSE;
  const id = readId(buf, ID_HEARTBEAT);
  // The layout has no status byte: a heartbeat reply is a sign of life whatever else it says.
  return new HsfFrame(buf.subarray(0, HEARTBEAT_SIZE), response ? 'response' : 'request', true, id,
    timeoutOf(buf.readUInt32BE(14)), response ? 0 : undefined);
}
