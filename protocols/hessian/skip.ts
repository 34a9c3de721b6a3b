/**
 * A Hessian 2.0 reader that builds nothing: it finds where a value ends, so a codec can step over a call's
 * arguments to reach what follows them (Dubbo's attachments) and read a few strings in place. It knows the
 * whole grammar as Java's Hessian2Output writes it, and hostile input (a length past the end, an unknown
 * tag, nesting past MAX_DEPTH, a list with no end) returns BAD instead of throwing or looping: every step
 * consumes at least one byte and never reads past `end`.
 */

/** What every reader here returns for input it cannot step over. */
export const BAD = -1;
export const MAX_DEPTH = 32;

/**
 * Field counts of the class definitions seen so far in one message: objects refer to them by index, and a
 * class defined inside the arguments is used by the attachments after them. One per message, never shared.
 */
export type ClassTable = number[];

/** Where the value at `pos` ends (exclusive), or BAD. */
export function skipValue(b: Buffer, pos: number, end: number, classes: ClassTable = [], depth = 0): number {
  if (pos >= end || depth > MAX_DEPTH) return BAD;
  const t = b[pos]!;
  if (t <= 0x1f) return utf8(b, pos + 1, end, t); // short string
  if (t <= 0x2f) return fixed(pos, 1 + t - 0x20, end); // short binary
  if (t <= 0x33) return pos + 1 < end ? utf8(b, pos + 2, end, ((t - 0x30) << 8) | b[pos + 1]!) : BAD;
  if (t <= 0x37) return pos + 1 < end ? fixed(pos, 2 + (((t - 0x34) << 8) | b[pos + 1]!), end) : BAD;
  if (t <= 0x3f) return fixed(pos, 3, end); // long, three bytes
  if (t >= 0x80) {
    if (t <= 0xbf) return pos + 1; // int, one byte
    if (t <= 0xcf) return fixed(pos, 2, end);
    if (t <= 0xd7) return fixed(pos, 3, end);
    if (t <= 0xef) return pos + 1; // long, one byte
    return fixed(pos, 2, end); // long, two bytes
  }
  if (t >= 0x60 && t <= 0x6f) return fields(b, pos + 1, end, classes, t - 0x60, depth);
  if (t >= 0x70 && t <= 0x77) return items(b, skipType(b, pos + 1, end, classes), end, classes, t - 0x70, depth);
  if (t >= 0x78) return items(b, pos + 1, end, classes, t - 0x78, depth);
  switch (t) {
    case 0x4e: // N
    case 0x54: // T
    case 0x46: // F
    case 0x5b: // 0.0
    case 0x5c: // 1.0
      return pos + 1;
    case 0x5d: // double as byte
      return fixed(pos, 2, end);
    case 0x5e: // double as short
      return fixed(pos, 3, end);
    case 0x49: // I
    case 0x59: // long as int
    case 0x5f: // double as float
    case 0x4b: // date in minutes
      return fixed(pos, 5, end);
    case 0x4c: // L
    case 0x44: // D
    case 0x4a: // date in milliseconds
      return fixed(pos, 9, end);
    case 0x53: // S: final string chunk
    case 0x52: // R: string chunk, more follow
      return chunks(b, pos, end, true);
    case 0x42: // B
    case 0x41: // A
      return chunks(b, pos, end, false);
    case 0x51: // Q: reference to an earlier value
      return skipInt(b, pos + 1, end);
    case 0x48: // H: untyped map
      return entries(b, pos + 1, end, classes, depth);
    case 0x4d: // M: typed map
      return entries(b, skipType(b, pos + 1, end, classes), end, classes, depth);
    case 0x55: // U: typed list, ends with Z
      return untilZ(b, skipType(b, pos + 1, end, classes), end, classes, depth);
    case 0x57: // W: untyped list, ends with Z
      return untilZ(b, pos + 1, end, classes, depth);
    case 0x56: // V: typed list of a given length
      return counted(b, skipType(b, pos + 1, end, classes), end, classes, depth);
    case 0x58: // X: untyped list of a given length
      return counted(b, pos + 1, end, classes, depth);
    case 0x43: // C: a class definition, then the value that uses it
      return classDef(b, pos + 1, end, classes, depth);
    case 0x4f: {
      // O: an object of a class defined earlier
      const at = skipInt(b, pos + 1, end);
      if (at === BAD) return BAD;
      return fields(b, at, end, classes, readIntAt(b, pos + 1), depth);
    }
    default:
      return BAD;
  }
}

const fixed = (pos: number, size: number, end: number) => (pos + size <= end ? pos + size : BAD);

/** Steps over `chars` UTF-16 units of Hessian's UTF-8 (a 4-byte sequence is a surrogate pair: two units). */
function utf8(b: Buffer, pos: number, end: number, chars: number): number {
  while (chars > 0) {
    if (pos >= end) return BAD;
    const c = b[pos]!;
    if (c < 0x80) pos += 1;
    else if (c < 0xe0) pos += 2;
    else if (c < 0xf0) pos += 3;
    else {
      pos += 4;
      chars--;
    }
    chars--;
  }
  return pos <= end && chars === 0 ? pos : BAD;
}

/** Chunked strings ('R'…'S') and binaries ('A'…'B'); a chunk's length is in units, then the final chunk. */
function chunks(b: Buffer, pos: number, end: number, text: boolean): number {
  for (;;) {
    if (pos >= end) return BAD;
    const t = b[pos]!;
    const more = text ? t === 0x52 : t === 0x41;
    if (!more && t !== (text ? 0x53 : 0x42)) {
      // The final chunk may also be written in a short form (as short as one byte, at the very end).
      if (text ? t <= 0x1f || (t >= 0x30 && t <= 0x33) : (t >= 0x20 && t <= 0x2f) || (t >= 0x34 && t <= 0x37)) return skipValue(b, pos, end);
      return BAD;
    }
    if (pos + 3 > end) return BAD;
    const len = b.readUInt16BE(pos + 1);
    pos = text ? utf8(b, pos + 3, end, len) : fixed(pos + 3, len, end);
    if (pos === BAD || !more) return pos;
  }
}

/** A type is a string, or an int referring to a type seen before. */
function skipType(b: Buffer, pos: number, end: number, classes: ClassTable): number {
  if (pos === BAD || pos >= end) return BAD;
  const t = b[pos]!;
  const isString = t <= 0x1f || (t >= 0x30 && t <= 0x33) || t === 0x52 || t === 0x53;
  return isString ? skipValue(b, pos, end, classes) : skipInt(b, pos, end);
}

/** Where an int ends, or BAD when the value there is not an int. */
export function skipInt(b: Buffer, pos: number, end: number): number {
  if (pos >= end) return BAD;
  const t = b[pos]!;
  if (t >= 0x80 && t <= 0xbf) return pos + 1;
  if (t >= 0xc0 && t <= 0xcf) return fixed(pos, 2, end);
  if (t >= 0xd0 && t <= 0xd7) return fixed(pos, 3, end);
  if (t === 0x49) return fixed(pos, 5, end);
  return BAD;
}

/** The int at `pos`; call only after skipInt said it is one. */
export function readIntAt(b: Buffer, pos: number): number {
  const t = b[pos]!;
  if (t === 0x49) return b.readInt32BE(pos + 1);
  if (t <= 0xbf) return t - 0x90;
  if (t <= 0xcf) return ((t - 0xc8) << 8) | b[pos + 1]!;
  return ((t - 0xd4) << 16) | (b[pos + 1]! << 8) | b[pos + 2]!;
}

function items(b: Buffer, pos: number, end: number, classes: ClassTable, n: number, depth: number): number {
  for (let i = 0; i < n && pos !== BAD; i++) pos = skipValue(b, pos, end, classes, depth + 1);
  return pos;
}

function counted(b: Buffer, pos: number, end: number, classes: ClassTable, depth: number): number {
  const at = pos === BAD ? BAD : skipInt(b, pos, end);
  if (at === BAD) return BAD;
  const n = readIntAt(b, pos);
  // Each item takes at least a byte: a count beyond what is left is a lie, not a reason to loop.
  return n < 0 || n > end - at ? BAD : items(b, at, end, classes, n, depth);
}

function untilZ(b: Buffer, pos: number, end: number, classes: ClassTable, depth: number): number {
  while (pos !== BAD) {
    if (pos >= end) return BAD;
    if (b[pos] === 0x5a) return pos + 1;
    pos = skipValue(b, pos, end, classes, depth + 1);
  }
  return BAD;
}

function entries(b: Buffer, pos: number, end: number, classes: ClassTable, depth: number): number {
  while (pos !== BAD) {
    if (pos >= end) return BAD;
    if (b[pos] === 0x5a) return pos + 1;
    pos = skipValue(b, pos, end, classes, depth + 1); // key
    if (pos !== BAD) pos = skipValue(b, pos, end, classes, depth + 1); // value
  }
  return BAD;
}

function classDef(b: Buffer, pos: number, end: number, classes: ClassTable, depth: number): number {
  // Definitions in a row are a loop, not a recursion: a hostile chain of them must not exhaust the stack.
  for (;;) {
    pos = skipValue(b, pos, end, classes, depth + 1); // the class name, a string
    const at = pos === BAD ? BAD : skipInt(b, pos, end);
    if (at === BAD) return BAD;
    const n = readIntAt(b, pos);
    if (n < 0 || n > end - at) return BAD;
    pos = items(b, at, end, classes, n, depth); // the field names
    if (pos === BAD) return BAD;
    classes.push(n);
    if (pos >= end || b[pos] !== 0x43) return skipValue(b, pos, end, classes, depth);
    pos++;
  }
}

function fields(b: Buffer, pos: number, end: number, classes: ClassTable, ref: number, depth: number): number {
  const n = classes[ref];
  return n === undefined ? BAD : items(b, pos, end, classes, n, depth);
}

/** Where the value of a plain (unchunked) string at `pos` starts and ends, or BAD. */
export function stringBounds(b: Buffer, pos: number, end: number): { start: number; end: number } | undefined {
  if (pos >= end) return undefined;
  const t = b[pos]!;
  let start: number, chars: number;
  if (t <= 0x1f) (start = pos + 1), (chars = t);
  else if (t >= 0x30 && t <= 0x33 && pos + 1 < end) (start = pos + 2), (chars = ((t - 0x30) << 8) | b[pos + 1]!);
  else if (t === 0x53 && pos + 2 < end) (start = pos + 3), (chars = b.readUInt16BE(pos + 1));
  else return undefined;
  const stop = utf8(b, start, end, chars);
  return stop === BAD ? undefined : { start, end: stop };
}

/**
 * Text of a string's bytes. Java and hessian.js write a character outside the BMP as two 3-byte surrogates
 * (CESU-8), which Node's UTF-8 decoder turns into U+FFFD: only then is it decoded unit by unit.
 */
function decode(b: Buffer, start: number, end: number): string {
  const s = b.toString('utf8', start, end);
  if (!s.includes('\ufffd')) return s;
  let out = '';
  for (let p = start; p < end; ) {
    const c = b[p]!;
    const n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    out += n === 3 && p + 3 <= end
      ? String.fromCharCode(((c & 0x0f) << 12) | ((b[p + 1]! & 0x3f) << 6) | (b[p + 2]! & 0x3f))
      : b.toString('utf8', p, Math.min(p + n, end));
    p += n;
  }
  return out;
}

/**
 * The string at `pos` (any form, chunked too), or null for 'N', or undefined when the value is not a string;
 * `next` is set to where it ends. Used for the handful of names a route reads, so it favours clarity.
 */
export function readString(b: Buffer, pos: number, end: number, next: { pos: number }): string | null | undefined {
  if (pos < end && b[pos] === 0x4e) {
    next.pos = pos + 1;
    return null;
  }
  const plain = stringBounds(b, pos, end);
  if (plain) {
    next.pos = plain.end;
    return decode(b, plain.start, plain.end);
  }
  if (pos >= end || b[pos] !== 0x52) return undefined;
  const stop = chunks(b, pos, end, true);
  if (stop === BAD) return undefined;
  let out = '';
  for (let p = pos; p < stop; ) {
    const t = b[p]!;
    if (t === 0x52 || t === 0x53) {
      const s = p + 3;
      const e = utf8(b, s, stop, b.readUInt16BE(p + 1));
      out += decode(b, s, e);
      p = e;
    } else {
      const last = stringBounds(b, p, stop)!;
      out += decode(b, last.start, last.end);
      p = last.end;
    }
  }
  next.pos = stop;
  return out;
}

/** A scalar as routing text: strings as they are, ints, longs and booleans in decimal; else undefined. */
export function readScalar(b: Buffer, pos: number, end: number, next: { pos: number }): string | undefined {
  const s = readString(b, pos, end, next);
  if (s !== undefined) return s ?? undefined;
  const t = b[pos];
  if (t === 0x54 || t === 0x46) {
    next.pos = pos + 1;
    return t === 0x54 ? 'true' : 'false';
  }
  const stop = skipInt(b, pos, end);
  if (stop !== BAD) {
    next.pos = stop;
    return String(readIntAt(b, pos));
  }
  if (t === 0x4c && pos + 9 <= end) {
    next.pos = pos + 9;
    return b.readBigInt64BE(pos + 1).toString();
  }
  return undefined;
}

/**
 * The untyped or typed map at `pos` as routing text: string keys to scalar values (others are stepped
 * over). Undefined when the bytes there are not a well-formed map.
 */
export function readStringMap(b: Buffer, pos: number, end: number, classes: ClassTable = []): Map<string, string> | undefined {
  if (pos >= end) return undefined;
  let p: number;
  if (b[pos] === 0x48) p = pos + 1;
  else if (b[pos] === 0x4d) p = skipType(b, pos + 1, end, classes);
  else return undefined;
  const out = new Map<string, string>();
  const next = { pos: 0 };
  while (p !== BAD && p < end) {
    if (b[p] === 0x5a) return out;
    const key = readString(b, p, end, next);
    const valueAt = key === undefined ? skipValue(b, p, end, classes, 1) : next.pos;
    if (valueAt === BAD) return undefined;
    const value = key ? readScalar(b, valueAt, end, next) : undefined;
    if (key && value !== undefined) out.set(key, value), (p = next.pos);
    else p = skipValue(b, valueAt, end, classes, 1);
  }
  return undefined;
}

/**
 * One entry of the map at `pos`, by key, as routing text: keys are compared in place and only the value
 * asked for becomes a string, so looking up one attachment builds nothing else. Undefined when absent,
 * not a scalar, or when the map is not well formed up to it.
 */
export function findInMap(b: Buffer, pos: number, end: number, key: Buffer, classes: ClassTable = []): string | undefined {
  if (pos >= end) return undefined;
  let p: number;
  if (b[pos] === 0x48) p = pos + 1;
  else if (b[pos] === 0x4d) p = skipType(b, pos + 1, end, classes);
  else return undefined;
  const next = { pos: 0 };
  while (p !== BAD && p < end && b[p] !== 0x5a) {
    const k = b[p]! <= 0x1f ? p + 1 : -1; // the short form every key of a few chars takes
    const valueAt = skipValue(b, p, end, classes, 1);
    if (valueAt === BAD) return undefined;
    const hit = k >= 0 ? valueAt - k === key.length && key.compare(b, k, valueAt) === 0 && b[p] === key.length : readString(b, p, end, next) === key.toString();
    if (hit) return readScalar(b, valueAt, end, next);
    p = skipValue(b, valueAt, end, classes, 1);
  }
  return undefined;
}
