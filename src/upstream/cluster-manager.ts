import type { Cluster } from '../config/model.js';
import { endpointsOf, type Snapshot } from '../config/snapshot.js';
import { Host, hostKey } from './host.js';
import { createLoadBalancer, type LoadBalancer } from './load-balancer.js';

export class ClusterState {
  private usable: Host[] = [];

  constructor(
    readonly cluster: Cluster,
    readonly hosts: readonly Host[],
    private readonly lb: LoadBalancer,
  ) {
    // Envoy's priority levels: the lowest level that has a usable host takes all traffic.
    const levels = new Map<number, Host[]>();
    hosts.forEach((h) => {
      if (!h.healthy) return;
      const level = levels.get(h.priority);
      if (level) level.push(h);
      else levels.set(h.priority, [h]);
    });
    const best = [...levels.keys()].sort((a, b) => a - b)[0];
    if (best !== undefined) this.usable = levels.get(best)!;
  }

  get isOriginalDst(): boolean {
    return this.cluster.type === 'ORIGINAL_DST';
  }

  /** Undefined when no host is usable: the caller answers "no healthy upstream". */
  pick(): Host | undefined {
    const usable = this.usable;
    if (usable.length === 0) return undefined;
    const host = this.lb.pick(usable);
    if (host.ejectedUntil === 0) return host;
    // Recently failed: any host not in that state beats it; if all are, use the LB's choice anyway.
    const now = Date.now();
    if (host.ejectedUntil <= now) return host;
    return usable.find((h) => h.ejectedUntil <= now) ?? host;
  }

  get usableHosts(): readonly Host[] {
    return this.usable;
  }
}

/** Turns each Snapshot's clusters and endpoints into live state, reusing Host objects across updates. */
export class ClusterManager {
  private states = new Map<string, ClusterState>();

  update(snapshot: Snapshot): void {
    const next = new Map<string, ClusterState>();
    for (const cluster of snapshot.clusters.values()) {
      const prev = this.states.get(cluster.name);
      const known = new Map(prev?.hosts.map((h) => [h.key, h]));
      const hosts = (endpointsOf(snapshot, cluster)?.endpoints ?? []).map((ep) => {
        const key = hostKey(ep.address, ep.port);
        const reused = known.get(key);
        known.delete(key);
        reused?.refresh(ep);
        return reused ?? new Host(ep.address, ep.port, ep);
      });
      // Pools of removed hosts drain: no new requests, in-flight ones finish.
      for (const gone of known.values()) for (const pool of gone.pools.values()) pool.close();
      const lb = createLoadBalancer(cluster.lbPolicy);
      next.set(cluster.name, new ClusterState(cluster, hosts, lb));
    }
    for (const [name, gone] of this.states) {
      if (!next.has(name)) for (const h of gone.hosts) for (const pool of h.pools.values()) pool.close();
    }
    this.states = next;
  }

  get(name: string): ClusterState | undefined {
    return this.states.get(name);
  }

  all(): IterableIterator<ClusterState> {
    return this.states.values();
  }
}
