/**
 * The two terminal filters that carry RPC routing: Envoy's HTTP connection manager (its routes serve RPC
 * frames sniffed on HTTP-typed ports, as Istio configures them) and our own x-protocol proxy.
 */
import { codecs, findCodec } from '../../protocols/registry.js';
import { registerNetworkFilter } from './extensions.js';
import type { HttpConnectionManagerConfig, RouteConfiguration, XProtocolConfig } from './model.js';
import { ConfigError, type ObjReader } from './reader.js';
import { decodeRouteConfiguration } from './route.js';
import { decodeAccessLog } from './access-log.js';

const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 30_000;
const ONE_HOUR_MS = 3_600_000;

/** `rds` or an inline `route_config`, as both filters carry them. */
function routeSpecifier(r: ObjReader): { rdsName?: string; routeConfig?: RouteConfiguration } {
  const rds = r.obj('rds');
  const rdsName = rds?.requiredStr('route_config_name');
  rds?.ignore('config_source');
  rds?.done();
  const inline = r.raw('route_config');
  // The listener's own raw form carries an inline route config; a copy here would keep an xDS listener's
  // proto3 JSON alive after decoding (src/config/source.ts).
  const routeConfig = inline ? { ...decodeRouteConfiguration(inline, r.at('route_config'), r.ctx), raw: undefined } : undefined;
  return { rdsName, routeConfig };
}

registerNetworkFilter({
  typeNames: ['envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'],
  filterNames: ['envoy.filters.network.http_connection_manager', 'envoy.http_connection_manager'],
  terminal: true,
  decode(r, name): HttpConnectionManagerConfig {
    const spec = routeSpecifier(r);
    if (!spec.rdsName && !spec.routeConfig) {
      if (r.has('scoped_routes')) throw new ConfigError(r.at('scoped_routes'), 'scoped routes are not supported');
      throw new ConfigError(r.at('rds'), 'needs rds or route_config');
    }
    // An idle RPC connection, and the L4 fallback, close after the HTTP idle timeout (Envoy's default: 1 h).
    const common = r.obj('common_http_protocol_options');
    const idleTimeoutMs = common?.durationMs('idle_timeout') ?? ONE_HOUR_MS;
    const accessLog = decodeAccessLog(r);
    // Everything else configures HTTP handling we do not do: RPC frames are routed, other bytes pass at L4.
    for (const k of Object.keys(r.value)) r.ignore(k);
    return { kind: 'http_connection_manager', name, statPrefix: r.str('stat_prefix', ''), idleTimeoutMs, accessLog, ...spec };
  },
});

registerNetworkFilter({
  typeNames: ['xsidecar.xprotocol.v1.XProtocolProxy'],
  filterNames: ['xsidecar.filters.network.xprotocol'],
  terminal: true,
  decode(r, name): XProtocolConfig {
    const spec = routeSpecifier(r);
    const cluster = r.str('cluster');
    if (!spec.rdsName && !spec.routeConfig && !cluster) throw new ConfigError(r.at('route_config'), 'needs rds, route_config or cluster');
    const protocol = r.str('protocol');
    if (protocol !== undefined && !findCodec(protocol)) {
      throw new ConfigError(r.at('protocol'), `unknown protocol "${protocol}" (known: ${codecs.map((c) => c.name).join(', ')})`);
    }
    return {
      kind: 'xprotocol',
      name,
      statPrefix: r.str('stat_prefix', ''),
      protocol,
      cluster,
      maxFrameBytes: r.int('max_frame_bytes', 16, 2 ** 31 - 1) ?? DEFAULT_MAX_FRAME_BYTES,
      defaultTimeoutMs: r.durationMs('default_timeout') || DEFAULT_TIMEOUT_MS,
      sniffTimeoutMs: r.durationMs('sniff_timeout'),
      frameTimeoutMs: r.durationMs('frame_timeout'),
      idleTimeoutMs: r.durationMs('idle_timeout') ?? ONE_HOUR_MS,
      accessLog: decodeAccessLog(r),
      ...spec,
    };
  },
});
