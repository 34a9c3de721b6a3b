/**
 * Unpacks the Any-wrapped resources of a discovery response into plain proto3-JSON objects (snake_case,
 * enums and int64 as strings, nested Anys expanded when their type is loaded, kept as base64 otherwise).
 */
import { createHash } from 'node:crypto';
import type protobuf from 'protobufjs';
import { TO_OBJECT } from './proto-json.js';
import type { XdsProtos } from './protos.js';

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

/** Decodes the message only (cheap), to learn its name before deciding whether to convert it. */
export function decodeMessage(protos: XdsProtos, any: AnyMessage, expectedTypeUrl: string): protobuf.Message & Record<string, unknown> {
  if (any.type_url !== expectedTypeUrl) throw new UnpackError(`resource of type ${any.type_url || '(none)'} in a ${expectedTypeUrl} response`);
  const type = protos.typeOf(any.type_url);
  if (!type) throw new UnpackError(`type ${any.type_url} is not loaded`);
  try {
    return type.decode(any.value) as protobuf.Message & Record<string, unknown>;
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
