import { registerNetworkFilter } from './extensions.js';
import type { TcpProxyConfig } from './model.js';
import { ConfigError } from './reader.js';
import { decodeAccessLog } from './access-log.js';

const ONE_HOUR_MS = 3_600_000;

registerNetworkFilter({
  typeNames: ['envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy'],
  filterNames: ['envoy.filters.network.tcp_proxy', 'envoy.tcp_proxy'],
  terminal: true,
  decode(r, name): TcpProxyConfig {
    r.ignore('max_connect_attempts', 'metadata_match', 'hash_policy', 'on_demand', 'upstream_idle_timeout');
    const cluster = r.str('cluster');
    const weighted = r.obj('weighted_clusters');
    const weightedClusters = (weighted?.objList('clusters') ?? []).map((c) => {
      const wc = { name: c.requiredStr('name'), weight: c.int('weight', 0, 2 ** 32 - 1) ?? 0 };
      c.ignore('metadata_match');
      c.done();
      return wc;
    });
    weighted?.done();
    if (!cluster && weightedClusters.length === 0) {
      throw new ConfigError(r.at('cluster'), 'tcp_proxy needs cluster or weighted_clusters');
    }
    return {
      kind: 'tcp_proxy',
      name,
      statPrefix: r.str('stat_prefix', ''),
      cluster,
      weightedClusters,
      idleTimeoutMs: r.durationMs('idle_timeout') ?? ONE_HOUR_MS,
      accessLog: decodeAccessLog(r),
    };
  },
});
