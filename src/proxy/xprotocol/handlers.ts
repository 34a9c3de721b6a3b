/**
 * The terminal filters that may carry RPC: each sniffs (or is pinned to) a codec and hands the
 * connection to a Session; what is not RPC goes through at L4 where that makes sense.
 */
import { findCodec } from '../../../protocols/registry.js';
import type { HttpConnectionManagerConfig, NetworkFilterConfig, RouteConfiguration, TcpProxyConfig, XProtocolConfig } from '../../config/model.js';
import { rpcMetrics } from '../../observe/metrics.js';
import { destinationKeys } from '../../router/router.js';
import { indexOf } from '../../router/virtual-hosts.js';
import { pickWeighted } from '../../router/weighted.js';
import { type DownstreamContext, registerNetworkHandler } from '../context.js';
import { type L4Target, l4TargetOf, proxyL4 } from '../tcp-proxy.js';
import { Session } from './session.js';
import { sniff } from './sniff.js';

/** Limits for RPC sniffed on chains that carry none of their own (tcp_proxy, HTTP connection manager). */
const DEFAULTS = { maxFrameBytes: 16 * 1024 * 1024, defaultTimeoutMs: 30_000 };

const countFallback = (ctx: DownstreamContext) => () => rpcMetrics.l4Fallback.inc({ listener: ctx.listener.name });

/** tcp_proxy: RPC is load-balanced per request over the filter's cluster; other bytes are plain L4. */
registerNetworkHandler('tcp_proxy', (ctx: DownstreamContext, filter: NetworkFilterConfig) => {
  const target = l4TargetOf(filter as TcpProxyConfig);
  const cluster = target.cluster === undefined ? undefined : ctx.clusters.get(target.cluster);
  // One fixed destination (passthrough, or a static single endpoint) leaves nothing to balance, so the
  // bytes are not even looked at; EDS clusters may grow, so they are sniffed from the start.
  if (!cluster || cluster.isOriginalDst || (cluster.cluster.type !== 'EDS' && cluster.hosts.length < 2)) return proxyL4(ctx, target);
  sniff(ctx, {
    l4: target,
    // tcp_proxy's idle_timeout bounds an idle RPC connection as it bounds an idle relay.
    rpc: (codec, first) => new Session(ctx, { ...DEFAULTS, codec, cluster: target.cluster, idleTimeoutMs: target.idleTimeoutMs, accessLog: target.accessLog }, first),
  });
});

/** Where plain bytes on an HTTP-typed port go: the cluster of the virtual host for the destination. */
function l4ForRoutes(ctx: DownstreamContext, routes: RouteConfiguration | undefined, idleTimeoutMs: number, accessLog?: string): L4Target {
  if (!routes) return { idleTimeoutMs, accessLog };
  const vh = indexOf(routes).select(destinationKeys(ctx.destination));
  const action = vh?.routes.find((r) => r.action)?.action;
  const cluster = action && (action.cluster ?? pickWeighted(action.weightedClusters));
  return { cluster, idleTimeoutMs, accessLog };
}

function routeSource(ctx: DownstreamContext, cfg: { rdsName?: string; routeConfig?: RouteConfiguration }) {
  if (cfg.routeConfig) return () => cfg.routeConfig;
  const name = cfg.rdsName;
  return name === undefined ? undefined : () => ctx.live().routes.get(name);
}

registerNetworkHandler('http_connection_manager', (ctx: DownstreamContext, filter: NetworkFilterConfig) => {
  const cfg = filter as HttpConnectionManagerConfig;
  const routes = routeSource(ctx, cfg);
  sniff(ctx, {
    l4: l4ForRoutes(ctx, routes?.(), cfg.idleTimeoutMs, cfg.accessLog),
    notRpc: countFallback(ctx),
    rpc: (codec, first) => new Session(ctx, { ...DEFAULTS, codec, routes, idleTimeoutMs: cfg.idleTimeoutMs, accessLog: cfg.accessLog }, first),
  });
});

registerNetworkHandler('xprotocol', (ctx: DownstreamContext, filter: NetworkFilterConfig) => {
  const cfg = filter as XProtocolConfig;
  const routes = routeSource(ctx, cfg);
  const session = (codec: NonNullable<ReturnType<typeof findCodec>>, first?: Buffer) =>
    new Session(ctx, { codec, maxFrameBytes: cfg.maxFrameBytes, defaultTimeoutMs: cfg.defaultTimeoutMs, routes, cluster: cfg.cluster, idleTimeoutMs: cfg.idleTimeoutMs, frameTimeoutMs: cfg.frameTimeoutMs, accessLog: cfg.accessLog }, first);
  const pinned = cfg.protocol ? findCodec(cfg.protocol) : undefined;
  if (pinned) return void session(pinned);
  sniff(ctx, { l4: cfg.cluster ? { cluster: cfg.cluster, idleTimeoutMs: cfg.idleTimeoutMs, accessLog: cfg.accessLog } : undefined, notRpc: countFallback(ctx), rpc: session, timeoutMs: cfg.sniffTimeoutMs });
});
