/**
 * Turns the accepted resources into the next Snapshot, Envoy's way: a cluster whose endpoints have not
 * arrived yet, or a listener whose routes have not, is *warming*. A warming resource does not go live —
 * its previous version (if any) keeps serving — until what it needs arrives or its warming timeout
 * (the config source's initial_fetch_timeout; 0 waits for ever) expires, when it goes live as it is.
 * Everything else moves on, so one missing route never holds back an endpoint update.
 */
import type { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration } from '../config/model.js';
import { makeSnapshot, type Snapshot } from '../config/snapshot.js';
import { type ConfigState, edsNameOf, routeNamesOf } from './config-state.js';
import type { Resource } from './resources.js';
import type { ConfigKind } from './type-urls.js';

export interface WarmingPolicy {
  /** How long a cluster waits for its ClusterLoadAssignment; 0: for ever. */
  readonly edsMs: number;
  /** How long a listener waits for its RouteConfigurations; 0: for ever. */
  readonly rdsMs: number;
}

/** A Snapshot plus what /config_dump says about each dynamic resource in it. */
export interface Published {
  readonly snapshot: Snapshot;
  /** The dynamic resources in force, by kind and name (static ones are not here). */
  readonly resources: Readonly<Record<ConfigKind, ReadonlyMap<string, Resource>>>;
  readonly versions: Readonly<Partial<Record<ConfigKind, string>>>;
}

export interface BuildResult {
  readonly published: Published;
  /** CDS and LDS have answered (or timed out) and nothing is warming: the config is whole. */
  readonly complete: boolean;
  readonly warming: { readonly clusters: readonly Resource[]; readonly listeners: readonly Resource[] };
  /** When the earliest warming timeout expires (epoch ms), to build again then. */
  readonly nextDeadline?: number;
}

export class SnapshotBuilder {
  /**
   * When each resource version started warming, by Resource: a new version is a new Resource and starts
   * over; the same bytes sent again are the same Resource (resources.ts) and keep their clock.
   */
  private readonly warmingSince = new Map<Resource, number>();

  constructor(private readonly policy: WarmingPolicy) {}

  build(state: ConfigState, previous: Published | undefined, now: number): BuildResult {
    const seen = new Set<Resource>();
    let nextDeadline: number | undefined;
    const warms = (r: Resource, timeoutMs: number): boolean => {
      seen.add(r);
      const since = this.warmingSince.get(r) ?? now;
      this.warmingSince.set(r, since);
      if (timeoutMs > 0 && now - since >= timeoutMs) return false;
      if (timeoutMs > 0) nextDeadline = Math.min(nextDeadline ?? Infinity, since + timeoutMs);
      return true;
    };

    const endpoints = new Map<string, ClusterLoadAssignment>();
    for (const [name, r] of state.active.endpoint) endpoints.set(name, r.config as ClusterLoadAssignment);
    const routes = new Map<string, RouteConfiguration>();
    for (const [name, r] of state.active.route) routes.set(name, r.config as RouteConfiguration);

    /** Splits the accepted resources of a kind into live ones (an old version stands in for a warming one) and warming ones. */
    const partition = (kind: 'cluster' | 'listener', waiting: (r: Resource) => boolean, timeoutMs: number) => {
      const live = new Map<string, Resource>();
      const warming: Resource[] = [];
      for (const [name, r] of state.active[kind]) {
        if (waiting(r) && warms(r, timeoutMs)) {
          warming.push(r);
          const old = previous?.resources[kind].get(name);
          if (old) live.set(name, old);
        } else live.set(name, r);
      }
      return { live, warming };
    };

    // A rejected first version counts as an answer, as in Envoy: the cluster goes live with no endpoints.
    const edsName = (r: Resource) => edsNameOf(r.config as Cluster);
    const { live: liveClusters, warming: warmingClusters } = partition(
      'cluster',
      (r) => (r.config as Cluster).type === 'EDS' && !endpoints.has(edsName(r)) && !state.rejected.endpoint.has(edsName(r)),
      this.policy.edsMs,
    );
    const clusters = new Map<string, Cluster>(state.statics.clusters.map((c) => [c.name, c]));
    for (const [name, r] of liveClusters) clusters.set(name, r.config as Cluster);

    const { live: liveListeners, warming: warmingListeners } = partition(
      'listener',
      (r) => routeNamesOf(r.config as Listener).some((n) => !routes.has(n) && !state.rejected.route.has(n)),
      this.policy.rdsMs,
    );
    const listeners = new Map<string, Listener>(state.statics.listeners.map((l) => [l.name, l]));
    for (const [name, r] of liveListeners) listeners.set(name, r.config as Listener);

    for (const key of this.warmingSince.keys()) if (!seen.has(key)) this.warmingSince.delete(key);

    const versions = { ...state.versions };
    const snapshot = makeSnapshot({
      version: (['cluster', 'endpoint', 'listener', 'route'] as const).map((k) => `${k}=${versions[k] ?? ''}`).join(','),
      listeners,
      clusters,
      endpoints,
      routes,
    });
    return {
      published: {
        snapshot,
        resources: { cluster: liveClusters, endpoint: new Map(state.active.endpoint), listener: liveListeners, route: new Map(state.active.route) },
        versions,
      },
      complete: state.isInitialized('cluster') && state.isInitialized('listener') && warmingClusters.length === 0 && warmingListeners.length === 0,
      warming: { clusters: warmingClusters, listeners: warmingListeners },
      nextDeadline,
    };
  }
}
