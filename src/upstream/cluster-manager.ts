import type { Cluster, ClusterLoadAssignment, Endpoint } from '../config/model.js';
import { endpointsOf, type Snapshot } from '../config/snapshot.js';
import { ActiveHealthChecker } from './health-check.js';
import { Host, hostKey } from './host.js';
import { createLoadBalancer, type LoadBalancer } from './load-balancer.js';
import { OutlierDetector } from './outlier.js';
import { ClusterResources } from './resources.js';

export class ClusterState {
  private usable: Host[] = [];

  constructor(
    readonly cluster: Cluster,
    readonly hosts: readonly Host[],
    private readonly lb: LoadBalancer,
    /** Circuit-breaker counts; carried over from the previous state of the same cluster. */
    readonly resources: ClusterResources = new ClusterResources(cluster.name, cluster.circuitBreakers),
    readonly outlier?: OutlierDetector,
    /** The endpoints the hosts were made from (EDS, or the cluster's own): unchanged, the state is kept. */
    readonly assignment?: ClusterLoadAssignment,
  ) {
    // Envoy's priority levels: the lowest level that has a usable host takes all traffic. Found without a
    // map of the levels: a full push builds the state of every cluster twice (after CDS, after EDS).
    let best = Infinity;
    for (const h of hosts) if (h.healthy && h.priority < best) best = h.priority;
    if (best !== Infinity) this.usable = hosts.filter((h) => h.healthy && h.priority === best);
  }

  get isOriginalDst(): boolean {
    return this.cluster.type === 'ORIGINAL_DST';
  }

  /** Undefined when no host is usable: the caller answers "no healthy upstream". */
  pick(): Host | undefined {
    const usable = this.usable;
    if (usable.length === 0) return undefined;
    const host = this.lb.pick(usable);
    if (host.ejectedUntil === 0 && !host.checkFailed && host.outlier.ejectedUntil === 0) return host;
    const now = Date.now();
    if (host.ejectedUntil <= now && !host.excluded(now)) return host;
    // Out of rotation (ejected, failing its health check) or just failed to connect: the LB picks again
    // among the others. When every host is out, all of them serve (Envoy's panic mode) rather than none.
    const inRotation = usable.filter((h) => !h.excluded(now));
    if (inRotation.length === 0) return host;
    const fresh = inRotation.filter((h) => h.ejectedUntil <= now);
    return this.lb.pick(fresh.length > 0 ? fresh : inRotation);
  }

  get usableHosts(): readonly Host[] {
    return this.usable;
  }
}

/** Above this many hosts a cluster's known hosts are looked up by key; below, matched in place. */
const MATCHED_IN_PLACE = 16;

/**
 * The hosts for these endpoints: a host already known by its address and port is kept (with its pools,
 * counts and ejections), refreshed from its endpoint. Pools of hosts gone drain: no new requests,
 * in-flight ones finish. Most clusters have a few hosts, and a full push of a 10,000-endpoint mesh made a
 * map and a key string per host for it; matched in place, it makes none.
 */
function hostsFor(known: readonly Host[], endpoints: readonly Endpoint[]): Host[] {
  const left: (Host | undefined)[] = known.slice();
  const byKey = known.length > MATCHED_IN_PLACE ? new Map(known.map((h, i) => [h.key, i])) : undefined;
  const hosts = endpoints.map((ep) => {
    let i = -1;
    if (byKey) i = byKey.get(hostKey(ep.address, ep.port)) ?? -1;
    else for (let j = 0; j < left.length && i < 0; j++) if (left[j]?.port === ep.port && left[j]!.address === ep.address) i = j;
    const reused = i >= 0 ? left[i] : undefined;
    if (!reused) return new Host(ep.address, ep.port, ep);
    left[i] = undefined;
    reused.refresh(ep);
    return reused;
  });
  for (const gone of left) gone?.closePools();
  return hosts;
}

/** Turns each Snapshot's clusters and endpoints into live state, reusing Host objects across updates. */
export class ClusterManager {
  private states = new Map<string, ClusterState>();
  private readonly checkers = new Map<string, ActiveHealthChecker>();

  update(snapshot: Snapshot): void {
    const next = new Map<string, ClusterState>();
    const hostsOf = (name: string) => () => next.get(name)?.hosts ?? [];
    for (const cluster of snapshot.clusters.values()) {
      const prev = this.states.get(cluster.name);
      const assignment = endpointsOf(snapshot, cluster);
      // A resource whose bytes did not change is the same object (src/xds/resources.ts): a push that
      // changes one service rebuilds one service's state, not the mesh's.
      if (prev && prev.cluster === cluster && prev.assignment === assignment) {
        if (prev.outlier) prev.outlier.hostsOf = hostsOf(cluster.name);
        next.set(cluster.name, prev);
        continue;
      }
      const hosts = hostsFor(prev?.hosts ?? [], assignment?.endpoints ?? []);
      const lb = createLoadBalancer(cluster.lbPolicy);
      const resources = prev?.resources ?? new ClusterResources(cluster.name, cluster.circuitBreakers);
      resources.limits = cluster.circuitBreakers;
      next.set(cluster.name, new ClusterState(cluster, hosts, lb, resources, this.outlierFor(cluster, prev, hostsOf(cluster.name)), assignment));
      this.checkHealth(cluster, hosts);
    }
    for (const [name, gone] of this.states) {
      if (next.has(name)) continue;
      for (const h of gone.hosts) h.closePools();
      gone.outlier?.stop();
      gone.resources.retire();
      this.checkers.get(name)?.stop();
      this.checkers.delete(name);
    }
    this.states = next;
  }

  private outlierFor(cluster: Cluster, prev: ClusterState | undefined, hosts: () => readonly Host[]): OutlierDetector | undefined {
    const config = cluster.outlierDetection;
    if (!config) {
      prev?.outlier?.stop();
      return undefined;
    }
    if (prev?.outlier && prev.outlier.config.intervalMs === config.intervalMs) {
      prev.outlier.config = config;
      prev.outlier.hostsOf = hosts;
      return prev.outlier;
    }
    prev?.outlier?.stop();
    return new OutlierDetector(cluster.name, config, hosts);
  }

  /** One checker per cluster with health_checks; kept across pushes while its check is unchanged. */
  private checkHealth(cluster: Cluster, hosts: readonly Host[]): void {
    const check = cluster.healthChecks[0];
    const running = this.checkers.get(cluster.name);
    if (running && check && JSON.stringify(running.check) === JSON.stringify(check)) return running.setHosts(hosts);
    running?.stop();
    this.checkers.delete(cluster.name);
    for (const h of hosts) h.checkFailed = false;
    if (check) this.checkers.set(cluster.name, new ActiveHealthChecker(cluster.name, check, hosts));
  }

  get(name: string): ClusterState | undefined {
    return this.states.get(name);
  }

  all(): IterableIterator<ClusterState> {
    return this.states.values();
  }
}
