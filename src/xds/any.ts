/**
 * Unpacks the Any-wrapped resources of a discovery response into plain proto3-JSON objects (snake_case,
 * enums and int64 as strings, nested Anys expanded when their type is loaded, kept as base64 otherwise),
 * read from the bytes in one pass by wire-json.ts.
 */
import protobuf from 'protobufjs';
import { TO_OBJECT } from './proto-json.js';
import { DUMP_PROTOS, loadXdsProtos, type XdsProtos } from './protos.js';
import { asBuffer, WireCursor, wireToJson } from './wire-json.js';

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

/**
 * The name a serialized resource begins with: field 1 of a Listener, Cluster, RouteConfiguration and
 * ClusterLoadAssignment, written first by istiod as by any protobuf encoder; undefined otherwise. A later
 * name field would replace it, so it is a hint: to a resource already known, or to what to ask for ahead.
 */
export function leadingName(bytes: Uint8Array): string | undefined {
  try {
    const buf = asBuffer(bytes);
    const c = new WireCursor(buf);
    return buf.length > 0 && c.tag(buf.length) === (1 << 3) + 2 ? c.string(buf.length) : undefined;
  } catch {
    return undefined;
  }
}

export function nameOf(message: Record<string, unknown>): string {
  const n = message.name ?? message.cluster_name;
  return typeof n === 'string' ? n : '';
}

/** Decodes an Any's body straight to proto3 JSON (wire-json.ts); an error names the type and what is wrong. */
export function unpackAny(protos: XdsProtos, any: AnyMessage, expectedTypeUrl = any.type_url): Unpacked {
  if (any.type_url !== expectedTypeUrl) throw new UnpackError(`resource of type ${any.type_url || '(none)'} in a ${expectedTypeUrl} response`);
  const type = protos.typeOf(any.type_url);
  if (!type) throw new UnpackError(`type ${any.type_url} is not loaded`);
  let plain: Record<string, unknown>;
  try {
    plain = wireToJson(type, any.value);
  } catch (e) {
    throw new UnpackError(`cannot decode ${any.type_url}: ${(e as Error).message}`);
  }
  return { typeUrl: any.type_url, name: nameOf(plain), plain };
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
