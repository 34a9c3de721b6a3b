import type { Bootstrap, TcpProxyConfig } from './model.js';
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
      for (const f of chain.filters) {
        if (f.kind !== 'tcp_proxy') continue;
        const tp = f as TcpProxyConfig;
        for (const n of tp.cluster ? [tp.cluster] : tp.weightedClusters.map((w) => w.name)) {
          if (!clusterNames.has(n)) throw new ConfigError(`${f.path}.typed_config.cluster`, `unknown cluster "${n}"`);
        }
      }
    }
  }
}
