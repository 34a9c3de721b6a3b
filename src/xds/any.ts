/**
 * Unpacks the Any-wrapped resources of a discovery response into plain proto3-JSON objects (snake_case,
 * enums and int64 as strings, nested Anys expanded when their type is loaded, kept as base64 otherwise).
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import protobuf from 'protobufjs';
import { TO_OBJECT } from './proto-json.js';
import { DUMP_PROTOS, loadXdsProtos, type XdsProtos } from './protos.js';

export interface AnyMessage {
  readonly type_url: string;
  readonly value: Uint8Array;
}

export interface Unpacked {
  readonly typeUrl: string;
  /** The resource's own name (Listener/Cluster/RouteConfiguration name, ClusterLoadAssignment cluster_name). */
  readonly name: string;
  readonly plain: Record<string, unknown>;
}

export class UnpackError extends Error {
  override name = 'UnpackError';
}

/** A digest of a resource's bytes: an unchanged resource in a new push is recognised without decoding it. */
export const digestOf = (bytes: Uint8Array): string => createHash('sha1').update(bytes).digest('base64');

/**
 * protobufjs reads a short proto3 string 8 bytes at a time (`str += …`), so each comes out as a chain of
 * V8 cons strings: 3–4 times its flat size, for as long as the config model holds it (a mesh's model holds
 * about 50 per cluster). Here each is one flat string from Node's UTF-8 decoder; proto3's check that it is
 * valid UTF-8 stays, run natively when a byte says it is not ASCII.
 */
class FlatStringReader extends protobuf.BufferReader {
  override stringVerify(this: FlatStringReader & { size(): number; buf: Buffer; pos: number; len: number }): string {
    const length = this.size();
    const start = this.pos;
    const end = start + length;
    if (end > this.len) throw new RangeError(`index out of range: ${start} + ${length} > ${this.len}`);
    this.pos = end;
    const buf = this.buf;
    for (let i = start; i < end; i++) {
      if (buf[i]! < 0x80) continue;
      if (!isUtf8(buf.subarray(start, end))) throw new TypeError('a string field is not valid UTF-8');
      break;
    }
    return buf.toString('utf8', start, end);
  }
}

const readerOf = (bytes: Uint8Array) =>
  new FlatStringReader(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));

/** Decodes the message only (cheap), to learn its name before deciding whether to convert it. */
export function decodeMessage(protos: XdsProtos, any: AnyMessage, expectedTypeUrl: string): protobuf.Message & Record<string, unknown> {
  if (any.type_url !== expectedTypeUrl) throw new UnpackError(`resource of type ${any.type_url || '(none)'} in a ${expectedTypeUrl} response`);
  const type = protos.typeOf(any.type_url);
  if (!type) throw new UnpackError(`type ${any.type_url} is not loaded`);
  try {
    return type.decode(readerOf(any.value)) as protobuf.Message & Record<string, unknown>;
  } catch (e) {
    throw new UnpackError(`cannot decode ${any.type_url}: ${(e as Error).message}`);
  }
}

export function nameOf(message: Record<string, unknown>): string {
  const n = message.name ?? message.cluster_name;
  return typeof n === 'string' ? n : '';
}

export function toPlain(protos: XdsProtos, typeUrl: string, message: protobuf.Message): Record<string, unknown> {
  const type = protos.typeOf(typeUrl)!;
  try {
    return type.toObject(message, TO_OBJECT) as Record<string, unknown>;
  } catch (e) {
    throw new UnpackError(`cannot convert ${typeUrl}: ${(e as Error).message}`);
  }
}

export function unpackAny(protos: XdsProtos, any: AnyMessage, expectedTypeUrl = any.type_url): Unpacked {
  const message = decodeMessage(protos, any, expectedTypeUrl);
  return { typeUrl: any.type_url, name: nameOf(message), plain: toPlain(protos, any.type_url, message) };
}

/**
 * For /config_dump: expands the Anys decoding left opaque (`{"@type", "value": base64}`, types the client
 * does not load to stay cheap) using the wider DUMP_PROTOS schema, loaded on first use. Istio's own types
 * (istio.stats, metadata exchange, …) are in no schema we have and stay as they are.
 */
export function expandOpaqueAnys(value: unknown): unknown {
  const full = loadXdsProtos(DUMP_PROTOS);
  const client = loadXdsProtos();
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (typeof v !== 'object' || v === null) return v;
    const o = v as Record<string, unknown>;
    const url = o['@type'];
    if (typeof url === 'string' && Object.keys(o).length <= 2 && (o.value === undefined || typeof o.value === 'string')) {
      // Only what decoding left opaque: a type the client knows was expanded already.
      const type = client.typeOf(url) ? undefined : full.typeOf(url);
      if (type) {
        try {
          const bytes = typeof o.value === 'string' ? protobuf.util.base64.length(o.value) : 0;
          const buf = new Uint8Array(bytes);
          if (typeof o.value === 'string') protobuf.util.base64.decode(o.value, buf, 0);
          return { '@type': url, ...(walk(type.toObject(type.decode(buf), TO_OBJECT)) as object) };
        } catch {
          return o; // a scalar-JSON well-known type, or bytes that do not decode: leave it as it came
        }
      }
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, walk(x)]));
  };
  return walk(value);
}
