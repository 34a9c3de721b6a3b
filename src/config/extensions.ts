/**
 * Extensions are found by the type URL of their typed_config, as in Envoy. A filter we do not implement
 * is skipped with a warning; a chain left without a terminal filter we implement cannot work and is
 * rejected by the listener decoder.
 */
import { ObjReader } from './reader.js';
import type { NetworkFilterConfig } from './model.js';

export interface NetworkFilterExtension {
  /** Fully qualified proto message names, e.g. envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy. */
  readonly typeNames: readonly string[];
  /** Well-known filter names, for configs that name a filter without a typed_config. */
  readonly filterNames: readonly string[];
  readonly terminal: boolean;
  decode(config: ObjReader, name: string): NetworkFilterConfig;
}

const byType = new Map<string, NetworkFilterExtension>();
const byName = new Map<string, NetworkFilterExtension>();

export function registerNetworkFilter(ext: NetworkFilterExtension): void {
  for (const t of ext.typeNames) byType.set(t, ext);
  for (const n of ext.filterNames) byName.set(n, ext);
}

export const typeNameOf = (typeUrl: string) => typeUrl.slice(typeUrl.lastIndexOf('/') + 1);

/** The @type of an Any in proto3 JSON, or its type_url as protobufjs leaves an unknown Any. */
export function anyTypeName(any: ObjReader): string | undefined {
  const url = any.value['@type'] ?? any.value.type_url ?? any.value.typeUrl;
  return typeof url === 'string' ? typeNameOf(url) : undefined;
}

export interface DecodedFilter {
  readonly config: NetworkFilterConfig;
  readonly terminal: boolean;
}

/** Undefined when the filter is not one we implement (a warning is recorded). */
export function decodeNetworkFilter(filter: ObjReader): DecodedFilter | undefined {
  const name = filter.str('name', '');
  const typed = filter.obj('typed_config');
  filter.ignore('config_discovery', 'disabled');
  filter.done();
  const typeName = typed ? anyTypeName(typed) : undefined;
  const ext = typeName ? byType.get(typeName) : byName.get(name);
  if (!ext) {
    filter.ctx.warnings.push(`${filter.path}: filter ${name || '(unnamed)'} (${typeName ?? 'no typed_config'}) is not implemented, skipped`);
    return undefined;
  }
  const config = ext.decode(typed ?? ObjReader.of({}, filter.at('typed_config'), filter.ctx), name);
  typed?.done();
  return { config: { ...config, path: filter.path }, terminal: ext.terminal };
}
