/**
 * A static UDP listener with envoy.filters.udp.dns_filter, in Envoy's shape, is read as the DNS proxy's
 * configuration: its address, server_config.inline_dns_table.virtual_domains (names with address lists)
 * and client_config (upstream resolvers, timeout). It is not bound as a listener: the proxy binds it.
 */
import { isIP } from 'node:net';
import { decodeBareSocketAddress, decodeSocketAddress } from './address.js';
import { anyTypeName } from './extensions.js';
import type { DnsProxyConfig, DnsTableName, SocketAddress } from './model.js';
import { ConfigError, type DecodeContext, ObjReader } from './reader.js';

const DNS_FILTER_NAMES = ['envoy.filters.udp.dns_filter', 'envoy.filters.udp_listener.dns_filter'];
const DNS_FILTER_TYPE = 'envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig';

/** Whether a listener resource is a UDP one (socket_address.protocol UDP). */
export function isUdpListener(value: unknown): boolean {
  const sa = (value as { address?: { socket_address?: { protocol?: unknown }; socketAddress?: { protocol?: unknown } } } | null)?.address;
  const protocol = (sa?.socket_address ?? sa?.socketAddress)?.protocol;
  return protocol === 'UDP' || protocol === 1;
}

const NAME_RE = /^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

function decodeVirtualDomain(d: ObjReader): DnsTableName | undefined {
  const name = d.requiredStr('name');
  if (!NAME_RE.test(name)) throw new ConfigError(d.at('name'), `"${name}" is not a valid DNS name`);
  const ttlMs = d.durationMs('answer_ttl');
  const ep = d.requiredObj('endpoint');
  const list = ep.obj('address_list');
  ep.ignore('cluster_name', 'service_list');
  if (!list) {
    d.ctx.warnings.push(`${ep.path}: only address_list endpoints are implemented; "${name}" skipped`);
    ep.done();
    d.done();
    return undefined;
  }
  const addresses = list.list('address').map(({ value, path }) => {
    if (typeof value !== 'string' || isIP(value) === 0) throw new ConfigError(path, `expected an IP address, got ${JSON.stringify(value)}`);
    return value;
  });
  if (addresses.length === 0) throw new ConfigError(list.at('address'), 'needs at least one address');
  list.done();
  ep.done();
  d.done();
  return { name: name.toLowerCase().replace(/\.$/, ''), addresses, ttlSeconds: ttlMs === undefined ? undefined : Math.floor(ttlMs / 1000) };
}

function decodeClientConfig(c: ObjReader | undefined): { upstreams: SocketAddress[]; timeoutMs?: number } {
  if (!c) return { upstreams: [] };
  const timeoutMs = c.durationMs('resolution_timeout');
  const resolvers = (r: ObjReader | undefined) => r?.objList('resolvers').map((a) => decodeSocketAddress(a)) ?? [];
  const legacy = c.obj('dns_resolution_config');
  const typed = c.obj('typed_dns_resolver_config')?.obj('typed_config');
  const upstreams = [
    ...c.objList('upstream_resolvers').map((a) => decodeSocketAddress(a)),
    ...resolvers(legacy),
    ...resolvers(typed),
  ];
  legacy?.ignore('dns_resolver_options');
  typed?.ignore('dns_resolver_options', 'use_resolvers_as_fallback', 'filter_unroutable_families', 'udp_max_queries');
  c.obj('typed_dns_resolver_config')?.ignore('name', 'typed_config');
  c.ignore('max_pending_lookups');
  return { upstreams, timeoutMs };
}

/** Decodes a UDP listener that must carry the DNS filter; anything else is a ConfigError naming the field. */
export function decodeDnsListener(value: unknown, path: string, ctx: DecodeContext): DnsProxyConfig {
  const r = ObjReader.of(value, path, ctx);
  const listenerName = r.requiredStr('name');
  const addr = r.requiredObj('address');
  const sa = addr.requiredObj('socket_address');
  addr.done();
  const address = decodeBareSocketAddress(sa);
  const filters = r.objList('listener_filters');
  const dns = filters.find((f) => DNS_FILTER_NAMES.includes(f.str('name', '')) || (f.obj('typed_config') && anyTypeName(f.obj('typed_config')!) === DNS_FILTER_TYPE));
  if (!dns) throw new ConfigError(r.at('listener_filters'), 'a UDP listener is supported only as the DNS proxy: it needs envoy.filters.udp.dns_filter');
  const typed = dns.obj('typed_config') ?? ObjReader.of({}, dns.at('typed_config'), ctx);
  dns.done();
  const server = typed.obj('server_config');
  const table = server?.obj('inline_dns_table');
  if (server?.has('external_dns_table')) ctx.warnings.push(`${server.at('external_dns_table')}: not implemented, ignored`);
  const names = (table?.objList('virtual_domains') ?? []).flatMap((d) => decodeVirtualDomain(d) ?? []);
  table?.ignore('external_retry_count', 'known_suffixes');
  table?.done();
  server?.done();
  const client = decodeClientConfig(typed.obj('client_config'));
  typed.ignore('stat_prefix', 'access_log');
  typed.done();
  r.ignore('udp_listener_config', 'listener_filters', 'filter_chains', 'traffic_direction', 'stat_prefix', 'metadata', 'socket_options', 'reuse_port', 'enable_reuse_port');
  r.done();
  return { listenerName, address, names, upstreams: client.upstreams, resolutionTimeoutMs: client.timeoutMs };
}
