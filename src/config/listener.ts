import { decodeCidr, decodeSocketAddress } from './address.js';
import { isUdpListener } from './dns-filter.js';
import { decodeNetworkFilter } from './extensions.js';
import type { FilterChain, FilterChainMatch, Listener } from './model.js';
import { ConfigError, type DecodeContext, ObjReader } from './reader.js';
import { decodeDownstreamTls } from './tls-context.js';
import './tcp-proxy.js'; // registers the built-in filters
import './rpc-filters.js';

// Understood and deliberately not acted on: they tune Envoy internals, logging or stats.
const LISTENER_IGNORED = [
  'listener_filters_timeout', 'continue_on_listener_filters_timeout',
  'access_log', 'socket_options', 'metadata', 'stat_prefix',
  'connection_balance_config', 'drain_type', 'freebind', 'tcp_fast_open_queue_length', 'enable_reuse_port',
  'deprecated_v1', 'tcp_backlog_size', 'ignore_global_conn_limit', 'enable_mptcp',
];

function decodeChainMatch(m: ObjReader | undefined): FilterChainMatch {
  if (!m) return { prefixRanges: [], sourcePrefixRanges: [], sourcePorts: [], applicationProtocols: [], serverNames: [] };
  const strings = (name: string) =>
    m.list(name).map(({ value, path }) => {
      if (typeof value !== 'string') throw new ConfigError(path, 'expected a string');
      return value;
    });
  const match: FilterChainMatch = {
    destinationPort: m.int('destination_port', 1, 65535),
    prefixRanges: m.objList('prefix_ranges').map(decodeCidr),
    sourcePrefixRanges: m.objList('source_prefix_ranges').map(decodeCidr),
    sourcePorts: m.list('source_ports').map(({ value, path }) => {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
        throw new ConfigError(path, 'expected 1..65535');
      }
      return value;
    }),
    transportProtocol: m.str('transport_protocol'),
    applicationProtocols: strings('application_protocols'),
    serverNames: strings('server_names'),
  };
  m.ignore('source_type', 'direct_source_prefix_ranges', 'address_suffix', 'suffix_len');
  m.done();
  return match;
}

export function decodeFilterChain(c: ObjReader, fallbackName: string): FilterChain {
  const name = c.str('name', fallbackName);
  const match = decodeChainMatch(c.obj('filter_chain_match'));
  const decoded = c.objList('filters').flatMap((f) => decodeNetworkFilter(f) ?? []);
  if (!decoded.some((f) => f.terminal)) {
    throw new ConfigError(c.at('filters'), 'no terminal network filter that xsidecar implements (tcp_proxy, http_connection_manager, xprotocol)');
  }
  const tls = decodeDownstreamTls(c.obj('transport_socket'));
  c.ignore('metadata', 'transport_socket_connect_timeout', 'use_proxy_proto', 'on_demand_configuration');
  c.done();
  return { name, match, filters: decoded.map((f) => f.config), ...(tls ? { tls } : {}) };
}

/** Envoy's default per_connection_buffer_limit_bytes. */
const DEFAULT_BUFFER_LIMIT_BYTES = 1024 * 1024;

const ORIGINAL_DST_FILTER = ['envoy.filters.listener.original_dst', 'envoy.listener.original_dst'];

/** Only original_dst changes what we do; TLS/HTTP inspectors feed matches we do not sniff for. */
function hasOriginalDstFilter(r: ObjReader): boolean {
  return r.objList('listener_filters').some((f) => {
    const typed = f.value.typed_config as Record<string, unknown> | undefined;
    const type = String(typed?.['@type'] ?? typed?.type_url ?? '');
    return ORIGINAL_DST_FILTER.includes(String(f.value.name)) || type.endsWith('.original_dst.v3.OriginalDst');
  });
}

/** Only telemetry's reporter reads it, so a value it does not know leaves it unset rather than failing the listener. */
const directionOf = (d: unknown) => (d === 'INBOUND' || d === 1 ? 'INBOUND' : d === 'OUTBOUND' || d === 2 ? 'OUTBOUND' : undefined);

export function decodeListener(value: unknown, path: string, ctx: DecodeContext): Listener {
  const r = ObjReader.of(value, path, ctx);
  const name = r.requiredStr('name');
  const address = decodeSocketAddress(r.requiredObj('address'));
  if (r.value.address && isUdpListener(r.value)) throw new ConfigError(r.at('address.socket_address.protocol'), 'UDP listeners are supported only in the bootstrap, as the DNS proxy (envoy.filters.udp.dns_filter)');
  const filterChains = r.objList('filter_chains').map((c, i) => decodeFilterChain(c, `${name}-chain-${i}`));
  const dfc = r.obj('default_filter_chain');
  const defaultFilterChain = dfc ? decodeFilterChain(dfc, `${name}-default`) : undefined;
  if (filterChains.length === 0 && !defaultFilterChain) {
    throw new ConfigError(r.at('filter_chains'), 'a listener needs at least one filter chain or a default_filter_chain');
  }
  const listener: Listener = {
    name,
    address,
    useOriginalDst: r.bool('use_original_dst'),
    originalDstFilter: hasOriginalDstFilter(r),
    transparent: r.bool('transparent'),
    bindToPort: r.bool('bind_to_port', true),
    filterChains,
    defaultFilterChain,
    perConnectionBufferLimitBytes: r.int('per_connection_buffer_limit_bytes', 1024, 2 ** 32 - 1) ?? DEFAULT_BUFFER_LIMIT_BYTES,
    trafficDirection: directionOf(r.raw('traffic_direction')),
    raw: value,
  };
  r.ignore(...LISTENER_IGNORED);
  r.done();
  return listener;
}
