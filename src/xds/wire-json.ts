/**
 * Protobuf bytes straight to proto3 JSON, in one pass: no protobufjs message in between.
 *
 * protobufjs decodes into message objects and a second generated function converts those to JSON: every
 * field is allocated twice, and hundreds of per-type generated functions each warm up on their own. At a
 * 1,000-service mesh's first push that was two thirds of the time to ready. This reader is one loop over a
 * per-type table of fields, which warms once for all types and allocates only the JSON.
 *
 * What comes out is exactly what `type.toObject(type.decode(bytes), TO_OBJECT)` gives with protobufjs 8 on
 * a root patched by `installProto3JsonReaders` (the tests compare the two): snake_case field names, enums
 * by name (an unknown number stays a number), 64-bit integers as decimal strings, bytes as base64,
 * non-finite doubles as strings, wrappers as bare values, Duration/Timestamp/FieldMask as strings,
 * Struct/Value/ListValue as plain JSON, an Any expanded when its type is loaded and kept as
 * `{"@type", value: base64}` otherwise. Plain proto3 scalars at their default are left out, the last
 * member of a oneof wins, and a known field with an unexpected wire type is skipped as unknown (as
 * protobufjs and Envoy do). A singular message sent twice must be merged: those rare bytes are handed to
 * protobufjs itself.
 *
 * Stricter than protobufjs where the bytes are wrong: field number 0, a varint over 10 bytes, a length
 * past its message's end or nesting over 100 deep is an error.
 */
import { isUtf8 } from 'node:buffer';
import protobuf from 'protobufjs';
import { durationString, timestampString, TO_OBJECT, VALUE_KINDS, WRAPPER_DEFAULTS } from './proto-json.js';

type Plain = Record<string, unknown>;

export class WireError extends Error {
  override name = 'WireError';
}

const MAX_DEPTH = 100;

// Value kinds. Numbers, not an enum: the switch below stays a jump table.
const DOUBLE = 0, FLOAT = 1, INT32 = 2, UINT32 = 3, SINT32 = 4, FIXED32 = 5, SFIXED32 = 6;
const INT64 = 7, UINT64 = 8, SINT64 = 9, FIXED64 = 10, SFIXED64 = 11;
const BOOL = 12, STRING = 13, BYTES = 14, ENUM = 15, MESSAGE = 16;

const SCALAR_KIND: Record<string, number> = {
  double: DOUBLE, float: FLOAT, int32: INT32, uint32: UINT32, sint32: SINT32, fixed32: FIXED32, sfixed32: SFIXED32,
  int64: INT64, uint64: UINT64, sint64: SINT64, fixed64: FIXED64, sfixed64: SFIXED64, bool: BOOL, string: STRING, bytes: BYTES,
};

/** The wire type each kind is written with (packed repeated scalars come as 2 besides). */
const WIRE_TYPE = [1, 5, 0, 0, 0, 5, 5, 0, 0, 0, 1, 1, 0, 2, 2, 0, 2];

interface FieldPlan {
  readonly name: string;
  readonly kind: number;
  readonly repeated: boolean;
  /** A repeated number, bool or enum: may come packed. */
  readonly packable: boolean;
  /** Map fields: the key's kind; -1 otherwise. */
  readonly keyKind: number;
  readonly enumNames: Readonly<Record<number, string>> | undefined;
  readonly type: protobuf.Type | undefined;
  /**
   * A singular scalar without presence (proto3's plain fields): protobufjs leaves it out at its default
   * value, and a later default clears an earlier value. Its default's JSON form; undefined otherwise.
   */
  readonly implicitDefault: unknown;
  /** The other members of the field's oneof: setting one clears them, as protobufjs's oneof setter does. */
  readonly oneofSiblings: readonly string[] | undefined;
  /** The message type's plan, looked up on first use (types refer to themselves). */
  plan: TypePlan | undefined;
}

interface TypePlan {
  readonly type: protobuf.Type;
  readonly fields: readonly (FieldPlan | undefined)[];
  readonly any: boolean;
  /**
   * The proto3 JSON form of a well-known type, from its fields as read. Those types are not JSON objects,
   * so inside an Any they sit under "value".
   */
  readonly finish: ((fields: Plain) => unknown) | undefined;
}

// ------------------------------------------------------------------------------------ well-known types

function valueJson(v: Plain): unknown {
  for (const [snake, camel] of VALUE_KINDS) {
    const x = v[snake] !== undefined ? v[snake] : v[camel];
    if (x !== undefined) return x;
  }
  return null;
}

const FINISH: Record<string, (fields: Plain) => unknown> = {
  '.google.protobuf.Duration': (m) => durationString(m.seconds, m.nanos),
  '.google.protobuf.Timestamp': (m) => timestampString(m.seconds, m.nanos),
  '.google.protobuf.Struct': (m) => (m.fields as Plain | undefined) ?? {},
  '.google.protobuf.Value': valueJson,
  '.google.protobuf.ListValue': (m) => (m.values as unknown[] | undefined) ?? [],
  '.google.protobuf.FieldMask': (m) => ((m.paths as string[] | undefined) ?? []).join(','),
};
for (const [name, fallback] of Object.entries(WRAPPER_DEFAULTS)) FINISH[name] = (m) => (m.value === undefined ? fallback : m.value);

// ------------------------------------------------------------------------------------------- plans

const plans = new WeakMap<protobuf.Type, TypePlan>();

function fieldPlan(f: protobuf.Field): FieldPlan {
  f.resolve();
  const resolved = f.resolvedType;
  const kind = SCALAR_KIND[f.type] ?? (resolved instanceof protobuf.Enum ? ENUM : MESSAGE);
  const map = f instanceof protobuf.MapField;
  return {
    name: f.name,
    kind,
    repeated: f.repeated,
    packable: f.repeated && kind !== STRING && kind !== BYTES && kind !== MESSAGE,
    keyKind: map ? (SCALAR_KIND[(f as protobuf.MapField).keyType] ?? STRING) : -1,
    enumNames: resolved instanceof protobuf.Enum ? (resolved.valuesById as Record<number, string>) : undefined,
    type: resolved instanceof protobuf.Type ? resolved : undefined,
    implicitDefault: implicitDefaultOf(f, kind, map),
    oneofSiblings: f.partOf && f.partOf.oneof.length > 1 ? f.partOf.oneof.filter((n) => n !== f.name) : undefined,
    plan: undefined,
  };
}

function implicitDefaultOf(f: protobuf.Field, kind: number, map: boolean): unknown {
  if (f.repeated || map || f.hasPresence || kind === MESSAGE) return undefined;
  if (kind === ENUM) return (f.resolvedType as protobuf.Enum).valuesById[f.typeDefault as number] ?? f.typeDefault;
  if (kind === STRING || kind === BYTES) return '';
  if (kind === BOOL) return false;
  return kind >= INT64 && kind <= SFIXED64 ? '0' : 0;
}

function planOf(type: protobuf.Type): TypePlan {
  let plan = plans.get(type);
  if (plan) return plan;
  const fields: (FieldPlan | undefined)[] = [];
  for (const f of type.fieldsArray) fields[f.id] = fieldPlan(f);
  const name = type.fullName;
  plan = { type, fields, any: name === '.google.protobuf.Any', finish: FINISH[name] };
  plans.set(type, plan);
  return plan;
}

const ANY_CACHE_LIMIT = 4096;
const anyPlans = new WeakMap<protobuf.Root, Map<string, TypePlan | undefined>>();

/** The plan of an Any's type URL in `root`; undefined when the type is not loaded. */
function anyPlan(root: protobuf.Root, url: string): TypePlan | undefined {
  let cache = anyPlans.get(root);
  if (!cache) anyPlans.set(root, (cache = new Map()));
  if (cache.has(url)) return cache.get(url);
  const found = root.lookup(url.slice(url.lastIndexOf('/') + 1));
  const plan = found instanceof protobuf.Type ? planOf(found) : undefined;
  // Type URLs come from the control plane: past a bound, new ones are looked up each time, not kept.
  if (cache.size < ANY_CACHE_LIMIT) cache.set(url, plan);
  return plan;
}

// ------------------------------------------------------------------------------------------- reading

/**
 * An ASCII string: Buffer's own latin1Slice where it has one (Node 20 and 24 do), which skips toString's
 * argument checks: a mesh's push reads some 200,000 strings.
 */
/** Bytes as a one-byte string, one character per byte (Buffer's own slice, without toString's checks). */
export const latin1Of: (buf: Buffer, start: number, end: number) => string =
  typeof (Buffer.prototype as { latin1Slice?: unknown }).latin1Slice === 'function'
    ? (buf, start, end) => (buf as unknown as { latin1Slice(s: number, e: number): string }).latin1Slice(start, end)
    : (buf, start, end) => buf.toString('latin1', start, end);

/** Thrown inside the reader when the bytes need a message merged; wireToJson hands them to protobufjs. */
const MERGE = Symbol('merge');

const outOfRange = () => new WireError('a length or value runs past the end of its message');

/** The same bytes as a Buffer, without a copy. */
export const asBuffer = (bytes: Uint8Array): Buffer => (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));

/**
 * The wire itself: varints, lengths, strings and skipping, with no types. Exported so that a scan of a
 * few fields (eds-ahead.ts) reads the bytes exactly as the decoder does.
 */
export class WireCursor {
  pos = 0;

  constructor(readonly buf: Buffer) {}

  /** A field's tag; field number 0 is refused (protobufjs reads it as a field). */
  tag(end: number): number {
    const tag = this.uint32(end);
    if (tag >>> 3 === 0) throw new WireError(`field number 0 at offset ${this.pos}`);
    return tag;
  }

  /** A varint's low 32 bits, unsigned. */
  uint32(end: number): number {
    const buf = this.buf;
    let p = this.pos;
    let b = buf[p++]!;
    let v = b & 127;
    if (b >= 128) {
      b = buf[p++]!;
      v |= (b & 127) << 7;
      if (b >= 128) {
        b = buf[p++]!;
        v |= (b & 127) << 14;
        if (b >= 128) {
          b = buf[p++]!;
          v |= (b & 127) << 21;
          if (b >= 128) {
            b = buf[p++]!;
            v |= b << 28;
            for (let i = 0; b >= 128; i++) {
              if (i === 5) throw new WireError('a varint is longer than 10 bytes');
              b = buf[p++]!;
            }
          }
        }
      }
    }
    if (p > end) throw outOfRange();
    this.pos = p;
    return v >>> 0;
  }

  /** A 64-bit varint as a decimal string, exact: Numbers while it fits in 49 bits, BigInt past that. */
  int64(kind: number, end: number): string {
    const buf = this.buf;
    let p = this.pos;
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 7; i++) {
      const b = buf[p++]!;
      v += (b & 127) * scale;
      if (b < 128) {
        if (p > end) throw outOfRange();
        this.pos = p;
        return kind === SINT64 ? String(v % 2 === 0 ? v / 2 : -(v + 1) / 2) : String(v);
      }
      scale *= 128;
    }
    let x = 0n;
    p = this.pos;
    for (let i = 0, shift = 0n; ; i++, shift += 7n) {
      if (i === 10) throw new WireError('a varint is longer than 10 bytes');
      const b = buf[p++]!;
      x |= BigInt(b & 127) << shift;
      if (!(b >= 128)) break;
    }
    if (p > end) throw outOfRange();
    this.pos = p;
    x = BigInt.asUintN(64, x);
    if (kind === UINT64) return x.toString();
    if (kind === INT64) return BigInt.asIntN(64, x).toString();
    return BigInt.asIntN(64, (x >> 1n) ^ -(x & 1n)).toString();
  }

  fixed64(signed: boolean, end: number): string {
    const p = this.take(8, end);
    const x = this.buf.readBigUInt64LE(p);
    return (signed ? BigInt.asIntN(64, x) : x).toString();
  }

  /** Advances past `n` bytes, returning where they start. */
  take(n: number, end: number): number {
    const p = this.pos;
    if (p + n > end) throw outOfRange();
    this.pos = p + n;
    return p;
  }

  /** A length-delimited field's end. */
  delimited(end: number): number {
    const n = this.uint32(end);
    const e = this.pos + n;
    if (e > end) throw outOfRange();
    return e;
  }

  string(end: number): string {
    const e = this.delimited(end);
    const s = this.pos;
    const buf = this.buf;
    this.pos = e;
    for (let i = s; i < e; i++) {
      if (buf[i]! < 0x80) continue;
      if (!isUtf8(buf.subarray(s, e))) throw new WireError('a string field is not valid UTF-8');
      return buf.toString('utf8', s, e);
    }
    return latin1Of(buf, s, e);
  }

  skip(wireType: number, end: number, depth: number): void {
    switch (wireType) {
      case 0:
        this.int64(UINT64, end);
        return;
      case 1:
        this.take(8, end);
        return;
      case 2:
        this.pos = this.delimited(end);
        return;
      case 3: // a group, proto2's: skipped to its end tag
        if (depth > MAX_DEPTH) throw new WireError(`nested more than ${MAX_DEPTH} deep`);
        for (;;) {
          if (this.pos >= end) throw outOfRange();
          const tag = this.uint32(end);
          if ((tag & 7) === 4) return;
          this.skip(tag & 7, end, depth + 1);
        }
      case 5:
        this.take(4, end);
        return;
      default:
        throw new WireError(`invalid wire type ${wireType} at offset ${this.pos}`);
    }
  }
}

class Reader extends WireCursor {
  constructor(
    buf: Buffer,
    readonly root: protobuf.Root,
  ) {
    super(buf);
  }

  value(f: FieldPlan, kind: number, end: number, depth: number): unknown {
    switch (kind) {
      case DOUBLE: {
        const v = this.buf.readDoubleLE(this.take(8, end));
        return Number.isFinite(v) ? v : String(v);
      }
      case FLOAT: {
        const v = this.buf.readFloatLE(this.take(4, end));
        return Number.isFinite(v) ? v : String(v);
      }
      case INT32:
        return this.uint32(end) | 0;
      case UINT32:
        return this.uint32(end);
      case SINT32: {
        const v = this.uint32(end);
        return (v >>> 1) ^ -(v & 1);
      }
      case FIXED32:
        return this.buf.readUInt32LE(this.take(4, end));
      case SFIXED32:
        return this.buf.readInt32LE(this.take(4, end));
      case INT64:
      case UINT64:
      case SINT64:
        return this.int64(kind, end);
      case FIXED64:
        return this.fixed64(false, end);
      case SFIXED64:
        return this.fixed64(true, end);
      case BOOL:
        return this.uint32(end) !== 0;
      case STRING:
        return this.string(end);
      case BYTES: {
        const e = this.delimited(end);
        const s = this.pos;
        this.pos = e;
        return this.buf.toString('base64', s, e);
      }
      case ENUM: {
        const v = this.uint32(end) | 0;
        const name = f.enumNames![v];
        return name === undefined ? v : name;
      }
      default: {
        const e = this.delimited(end);
        return this.message((f.plan ??= planOf(f.type!)), e, depth + 1, undefined);
      }
    }
  }

  /** Reads a message that ends at `end` into `into` (a new object when undefined). */
  message(plan: TypePlan, end: number, depth: number, into: Plain | undefined): unknown {
    if (depth > MAX_DEPTH) throw new WireError(`nested more than ${MAX_DEPTH} deep`);
    if (plan.any) return this.any(end, depth, into);
    const out: Plain = into ?? {};
    const fields = plan.fields;
    while (this.pos < end) {
      const tag = this.tag(end);
      const id = tag >>> 3;
      const wireType = tag & 7;
      const f = fields[id];
      if (f === undefined) {
        this.skip(wireType, end, depth);
        continue;
      }
      if (f.keyKind >= 0) {
        if (wireType !== 2) this.skip(wireType, end, depth);
        else this.mapEntry(f, out, this.delimited(end), depth);
      } else if (f.repeated) {
        let list = out[f.name] as unknown[] | undefined;
        if (wireType === 2 && f.packable) {
          const e = this.delimited(end);
          while (this.pos < e) (list ??= out[f.name] = []).push(this.value(f, f.kind, e, depth));
        } else if (wireType !== WIRE_TYPE[f.kind]) this.skip(wireType, end, depth);
        else (list ??= out[f.name] = []).push(this.value(f, f.kind, end, depth));
      } else if (wireType !== WIRE_TYPE[f.kind]) {
        this.skip(wireType, end, depth);
      } else {
        // A message sent twice is merged into the first (protobufjs and the spec): rare enough to leave
        // to protobufjs, whose result this reader must equal.
        if (f.kind === MESSAGE && out[f.name] !== undefined) throw MERGE;
        const v = this.value(f, f.kind, end, depth);
        if (f.oneofSiblings) for (const n of f.oneofSiblings) delete out[n];
        if (f.implicitDefault !== undefined && Object.is(v, f.implicitDefault)) delete out[f.name];
        else out[f.name] = v;
      }
    }
    return plan.finish ? plan.finish(out) : out;
  }

  private mapEntry(f: FieldPlan, out: Plain, end: number, depth: number): void {
    let key: unknown;
    let value: unknown;
    while (this.pos < end) {
      const tag = this.uint32(end);
      const id = tag >>> 3;
      const wireType = tag & 7;
      if (id === 1 && wireType === WIRE_TYPE[f.keyKind]) key = this.value(f, f.keyKind, end, depth);
      else if (id === 2 && wireType === WIRE_TYPE[f.kind]) {
        if (f.kind === MESSAGE && value !== undefined) throw MERGE;
        value = this.value(f, f.kind, end, depth);
      }
      else this.skip(wireType, end, depth);
    }
    if (key === undefined) key = f.keyKind === STRING ? '' : f.keyKind === BOOL ? false : f.keyKind >= INT64 && f.keyKind <= SFIXED64 ? '0' : 0;
    if (value === undefined) value = this.defaultOf(f, depth);
    const map = (out[f.name] ??= {}) as Plain;
    const k = String(key);
    // A map key is data: "__proto__" must become a key, not the object's prototype.
    if (k === '__proto__') Object.defineProperty(map, k, { value, enumerable: true, writable: true, configurable: true });
    else map[k] = value;
  }

  private defaultOf(f: FieldPlan, depth: number): unknown {
    switch (f.kind) {
      case MESSAGE:
        return this.message((f.plan ??= planOf(f.type!)), this.pos, depth + 1, undefined);
      case ENUM:
        return f.enumNames![0] ?? 0;
      case STRING:
      case BYTES:
        return '';
      case BOOL:
        return false;
      default:
        return f.kind >= INT64 && f.kind <= SFIXED64 ? '0' : 0;
    }
  }

  /** google.protobuf.Any: the body decoded in place when its type is loaded. */
  private any(end: number, depth: number, into: Plain | undefined): Plain {
    let url = '';
    let start = -1;
    let stop = -1;
    while (this.pos < end) {
      const tag = this.uint32(end);
      const id = tag >>> 3;
      const wireType = tag & 7;
      if (id === 1 && wireType === 2) url = this.string(end);
      else if (id === 2 && wireType === 2) {
        stop = this.delimited(end);
        start = this.pos;
        this.pos = stop;
      } else this.skip(wireType, end, depth);
    }
    const out: Plain = into ?? {};
    if (!url) return out;
    out['@type'] = url;
    const inner = anyPlan(this.root, url);
    if (!inner) {
      if (stop > start) out.value = this.buf.toString('base64', start, stop);
      return out;
    }
    const after = this.pos;
    this.pos = start < 0 ? end : start;
    if (inner.finish) out.value = this.message(inner, start < 0 ? end : stop, depth + 1, undefined);
    else this.message(inner, start < 0 ? end : stop, depth + 1, out);
    this.pos = after;
    return out;
  }

}

/**
 * The message of `type` in `bytes` as proto3 JSON; a WireError says what is wrong with the bytes. `depth`:
 * how deep the message sits in the resource it was cut from, so the nesting limit counts from the top.
 */
export function wireToJson(type: protobuf.Type, bytes: Uint8Array, depth = 0): Plain {
  const buf = asBuffer(bytes);
  const r = new Reader(buf, type.root as protobuf.Root);
  try {
    return r.message(planOf(type), buf.length, depth, undefined) as Plain;
  } catch (e) {
    if (e instanceof WireError) throw e;
    try {
      if (e === MERGE) return type.toObject(type.decode(buf), TO_OBJECT) as Plain;
    } catch (inner) {
      throw new WireError((inner as Error).message);
    }
    // A well-known type's value out of its range (a Timestamp past year 275760): still the bytes' fault.
    throw new WireError((e as Error).message);
  }
}
