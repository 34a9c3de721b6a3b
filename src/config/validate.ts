import type { Bootstrap, HttpConnectionManagerConfig, NetworkFilterConfig, RouteConfiguration, TcpProxyConfig, XProtocolConfig } from './model.js';
import { ConfigError } from './reader.js';

/**
 * Cross-resource checks for a static bootstrap: names are unique, listeners do not share an address, and
 * every cluster a filter names exists — unless clusters come over CDS, which may deliver it later.
 */
export function checkReferences(b: Bootstrap): void {
  const clusterNames = new Set<string>();
  b.clusters.forEach((c, i) => {
    if (clusterNames.has(c.name)) throw new ConfigError(`static_resources.clusters[${i}].name`, `duplicate cluster name "${c.name}"`);
    clusterNames.add(c.name);
  });
  const listenerNames = new Set<string>();
  const bound = new Set<string>();
  b.listeners.forEach((l, i) => {
    const at = `static_resources.listeners[${i}]`;
    if (listenerNames.has(l.name)) throw new ConfigError(`${at}.name`, `duplicate listener name "${l.name}"`);
    listenerNames.add(l.name);
    const key = `${l.address.address}:${l.address.port}`;
    if (l.bindToPort && l.address.port !== 0 && bound.has(key)) throw new ConfigError(`${at}.address`, `${key} is already used by another listener`);
    bound.add(key);
  });
  if (b.dynamicResources?.cdsConfig) return;
  for (const l of b.listeners) {
    for (const chain of l.defaultFilterChain ? [...l.filterChains, l.defaultFilterChain] : l.filterChains) {
      for (const f of chain.filters) checkFilterClusters(f, clusterNames);
    }
  }
}

function checkFilterClusters(f: NetworkFilterConfig, known: ReadonlySet<string>): void {
  const at = `${f.path}.typed_config`;
  const need = (name: string, path: string) => {
    if (!known.has(name)) throw new ConfigError(path, `unknown cluster "${name}"`);
  };
  if (f.kind === 'tcp_proxy') {
    const tp = f as TcpProxyConfig;
    if (tp.cluster) need(tp.cluster, `${at}.cluster`);
    tp.weightedClusters.forEach((w, i) => need(w.name, `${at}.weighted_clusters.clusters[${i}].name`));
  } else if (f.kind === 'xprotocol' || f.kind === 'http_connection_manager') {
    const cfg = f as XProtocolConfig | HttpConnectionManagerConfig;
    if (cfg.kind === 'xprotocol' && cfg.cluster) need(cfg.cluster, `${at}.cluster`);
    // Envoy rejects a static route to a cluster it does not know (validate_clusters); an RDS route may
    // name one CDS has not sent yet, so only inline route configs are checked.
    if (cfg.routeConfig) checkRouteClusters(cfg.routeConfig, `${at}.route_config`, need);
  }
}

function checkRouteClusters(rc: RouteConfiguration, at: string, need: (name: string, path: string) => void): void {
  rc.virtualHosts.forEach((vh, i) =>
    vh.routes.forEach((r, j) => {
      const path = `${at}.virtual_hosts[${i}].routes[${j}].route`;
      if (r.action?.cluster) need(r.action.cluster, `${path}.cluster`);
      r.action?.weightedClusters.forEach((w, k) => need(w.name, `${path}.weighted_clusters.clusters[${k}].name`));
    }),
  );
}
