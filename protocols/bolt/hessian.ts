/**
 * The two places the codec touches hessian: peeking the method name of a SofaRequest body (sofa-rpc-node
 * sends only `service` in the header map; Java sends `sofa_head_method_name`), and writing the exception
 * object of an error reply. Both are hand-rolled so the hot path never loads a hessian library.
 */

// A cursor shared by the readers below: tuples or closures per call would allocate.
let pos = 0;

function int(b: Buffer): number {
  const c = b[pos++];
  if (c >= 0x80 && c <= 0xbf) return c - 0x90;
  if (c >= 0xc0 && c <= 0xcf) return ((c - 0xc8) << 8) + b[pos++];
  if (c >= 0xd0 && c <= 0xd7) return ((c - 0xd4) << 16) + (b[pos++] << 8) + b[pos++];
  if (c === 0x49) return (b[pos++] << 24) | (b[pos++] << 16) | (b[pos++] << 8) | b[pos++];
  return NaN;
}

/** Skips a string; false when it is not a plain (unchunked, BMP) string ending before `end`. */
function str(b: Buffer, end: number, chars = -1): boolean {
  if (chars < 0) {
    const c = b[pos++];
    if (c <= 0x1f) chars = c;
    else if (c >= 0x30 && c <= 0x33) chars = ((c - 0x30) << 8) + b[pos++];
    else if (c === 0x53) chars = (b[pos++] << 8) + b[pos++];
    else return false;
  }
  // Hessian counts characters, not bytes.
  while (chars-- > 0 && pos < end) {
    const c = b[pos];
    if (c >= 0xf0) return false;
    pos += c < 0x80 ? 1 : c < 0xe0 ? 2 : 3;
  }
  return chars < 0 && pos <= end;
}

const METHOD_NAME = Buffer.from('methodName', 'latin1');

// A byte loop: a string or a native compare would cost more than the rest of the peek.
function isMethodName(b: Buffer, start: number, end: number): boolean {
  if (end - start !== 10) return false;
  for (let i = 0; i < 10; i++) if (b[start + i] !== METHOD_NAME[i]) return false;
  return true;
}

/** Where a string's characters start, given where its length prefix starts. */
const text = (b: Buffer, at: number) => at + (b[at] === 0x53 ? 3 : b[at] >= 0x30 ? 2 : 1);

/**
 * The first field value of the object opening the body when that field is `methodName`, in either class
 * definition form: 'O' len type ... 'o' ref (hessian 2 draft, what sofa-rpc-node writes) or 'C' type ... 'O'
 * ref / 0x60-0x6f (hessian 2.0). Undefined for anything else.
 */
export function peekMethod(b: Buffer, start: number, end: number): string | undefined {
  pos = start + 1;
  const draft = b[start] === 0x4f;
  if (draft) {
    const n = int(b);
    if (!(n >= 0) || !str(b, end, n)) return undefined;
  } else if (b[start] !== 0x43 || !str(b, end)) return undefined;
  let fields = int(b);
  const name = pos;
  if (!(fields > 0) || !str(b, end) || !isMethodName(b, text(b, name), pos)) return undefined;
  while (--fields > 0) if (!str(b, end)) return undefined;
  const o = b[pos++];
  if (draft ? o !== 0x6f || isNaN(int(b)) : o === 0x4f ? isNaN(int(b)) : o < 0x60 || o > 0x6f) return undefined;
  const value = pos;
  return str(b, end) ? b.toString('utf8', text(b, value), pos) : undefined;
}

export const ERROR_CLASS = Buffer.from('com.alipay.remoting.rpc.exception.RpcServerException', 'latin1');

const shortStr = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]);

// An RpcServerException in the draft form sofa-rpc-node's decoder requires, with the same fields in the same
// order as sofa-bolt-node's own error replies: its per-connection class cache is keyed by name and field
// count only and skips the field names by their cached byte length. 52 > 47 needs the two-byte int.
const ERROR_HEAD = Buffer.concat([
  Buffer.from([0x4f, 0xc8, ERROR_CLASS.length]), ERROR_CLASS, Buffer.from([0x93]),
  shortStr('detailMessage'), shortStr('stackTrace'), shortStr('cause'), Buffer.from([0x6f, 0x90]),
]);

/** Hessian RpcServerException{detailMessage: message, stackTrace: null, cause: null}. */
export function errorBody(message: string): Buffer {
  // The node decoder rejects 4-byte UTF-8, and one short chunk is plenty for a reason.
  const chars = message.slice(0, 4000).replace(/[\ud800-\udfff]/g, '?');
  const short = chars.length < 32;
  const out = Buffer.allocUnsafe(ERROR_HEAD.length + (short ? 1 : 3) + Buffer.byteLength(chars) + 2);
  let p = ERROR_HEAD.copy(out, 0);
  if (short) out[p++] = chars.length;
  else {
    out[p] = 0x53;
    p = out.writeUInt16BE(chars.length, p + 1);
  }
  p += out.write(chars, p, 'utf8');
  out[p] = out[p + 1] = 0x4e;
  return out;
}
