/**
 * What the readers that go straight from istiod's bytes to the model (cla-wire.ts, cluster-wire.ts) share:
 * how they give up on a shape, and the small messages they all meet. A reader that gives up returns
 * undefined and the resource goes the general way (bytes to proto3 JSON to the model), which accepts it
 * or names what is wrong; so each of them reads only what it can read exactly as the general way would.
 */
import type protobuf from 'protobufjs';
import { SharedTable } from '../config/shared-table.js';
import { latin1Of, type WireCursor, wireToJson } from './wire-json.js';

export const VARINT = 0, LEN = 2;
export const tag = (field: number, wire: number) => (field << 3) | wire;

/** Not an error: this shape is left to the general decoder. */
const ELSEWHERE = Symbol('left to the general decoder');
export function elsewhere(): never {
  throw ELSEWHERE;
}

/** Runs a direct reader: its result, or undefined when it left the bytes to the general decoder (or they do not parse). */
export function directly<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

/** google.protobuf.UInt32Value: its value (0 when absent, as proto3 JSON reads it). */
export function uint32Wrapper(c: WireCursor, end: number): number {
  let v = 0;
  while (c.pos < end) {
    if (c.tag(end) !== tag(1, VARINT)) elsewhere();
    v = c.uint32(end);
  }
  return v;
}

/** A google.protobuf.Struct whose values are all non-empty strings. */
export function stringStruct(c: WireCursor, end: number): Map<string, string> {
  const fields = new Map<string, string>();
  while (c.pos < end) {
    if (c.tag(end) !== tag(1, LEN)) elsewhere();
    const entryEnd = c.delimited(end);
    let key = '';
    let value: string | undefined;
    let valueSeen = false;
    while (c.pos < entryEnd) {
      const t = c.tag(entryEnd);
      if (t === tag(1, LEN)) key = c.string(entryEnd);
      else if (t === tag(2, LEN) && !valueSeen) {
        valueSeen = true;
        const valueEnd = c.delimited(entryEnd);
        while (c.pos < valueEnd) {
          if (c.tag(valueEnd) !== tag(3, LEN)) elsewhere(); // google.protobuf.Value.string_value only
          value = c.string(valueEnd);
        }
      } else elsewhere();
    }
    if (!value) elsewhere();
    fields.set(key, value);
  }
  return fields;
}

/** A non-empty string field: proto3 JSON leaves out an empty one, so an empty one is not read directly. */
export function nonEmpty(c: WireCursor, end: number): string {
  const s = c.string(end);
  return s === '' ? elsewhere() : s;
}

/**
 * Bytes of a field the model does not use, which the general decoder still decodes (and refuses if they do
 * not parse): decoded once here for the same verdict. Istio repeats them across a mesh (every cluster's
 * SDS config source, metadata-exchange filter, locality LB config), so the last few accepted of each type
 * are kept and compared byte for byte, which costs no string per field.
 */
const PARSED_PER_TYPE = 8;
const parsed = new WeakMap<protobuf.Type, { readonly depth: number; readonly bytes: Buffer }[]>();

/** `depth`: where the field's message sits in the resource (the general decoder's nesting limit counts from there). */
export function skipParsed(type: protobuf.Type, depth: number, c: WireCursor, end: number): void {
  let known = parsed.get(type);
  if (!known) parsed.set(type, (known = []));
  const len = end - c.pos;
  if (!known.some((k) => k.depth === depth && k.bytes.length === len && c.buf.compare(k.bytes, 0, len, c.pos, end) === 0)) {
    const bytes = c.buf.subarray(c.pos, end);
    wireToJson(type, bytes, depth); // throws on bytes the general decoder would refuse
    if (len <= 1024) {
      if (known.length >= PARSED_PER_TYPE) known.shift();
      known.push({ depth, bytes: Buffer.from(bytes) }); // a copy: a view would keep the whole response
    }
  }
  c.pos = end;
}

/**
 * What `read` makes of the bytes from the cursor to `end`, read once per distinct bytes: remembered in
 * `table` under those bytes when they are no longer than its keys may be (longer ones are read each time,
 * without making a key). The cursor ends at `end`.
 */
export function readByBytes<T>(table: SharedTable<T>, c: WireCursor, end: number, read: (c: WireCursor, end: number) => T): T {
  const key = end - c.pos <= table.maxKeyLength ? latin1Of(c.buf, c.pos, end) : undefined;
  let value = key === undefined ? undefined : table.get(key);
  if (value === undefined) {
    value = read(c, end);
    if (key !== undefined) table.keep(key, value);
  }
  c.pos = end;
  return value;
}

/**
 * A part of the model decoded the general way (its proto3 JSON, then the model's own decoder) and
 * remembered by its bytes with the warnings it gave: Istio sends the same circuit breakers or outlier
 * detection to many clusters, and the same bytes again in every push.
 */
export class PartTable<T> {
  readonly #table: SharedTable<{ readonly value: T; readonly warnings: readonly string[] }>;

  /** `type` at `depth` in its resource (where the general decoder's nesting limit counts from). */
  constructor(
    private readonly type: protobuf.Type,
    private readonly depth: number,
    private readonly decode: (plain: Record<string, unknown>, warnings: string[]) => T,
    entries = 256,
    maxBytes = 1024,
  ) {
    this.#table = new SharedTable(entries, maxBytes);
  }

  /** The part in `c` up to `end`; its warnings are added to `warnings`. */
  read(c: WireCursor, end: number, warnings: string[]): T {
    const part = readByBytes(this.#table, c, end, (c, end) => {
      const own: string[] = [];
      return { value: this.decode(wireToJson(this.type, c.buf.subarray(c.pos, end), this.depth), own), warnings: own };
    });
    warnings.push(...part.warnings);
    return part.value;
  }
}
