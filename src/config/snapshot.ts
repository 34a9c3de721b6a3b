import type { Bootstrap, Cluster, ClusterLoadAssignment, Listener, RouteConfiguration } from './model.js';

/**
 * An immutable view of the whole config. Readers hold on to the Snapshot they started with, so swapping
 * in a new one is atomic and never changes a connection's config under its feet.
 */
export interface Snapshot {
  readonly version: string;
  readonly listeners: ReadonlyMap<string, Listener>;
  readonly clusters: ReadonlyMap<string, Cluster>;
  /** ClusterLoadAssignments from EDS, by cluster (or eds service) name. */
  readonly endpoints: ReadonlyMap<string, ClusterLoadAssignment>;
  /** RouteConfigurations from RDS, by name (inline route configs live in their filter). */
  readonly routes: ReadonlyMap<string, RouteConfiguration>;
}

type Parts = Omit<Snapshot, 'endpoints' | 'routes'> & Partial<Pick<Snapshot, 'endpoints' | 'routes'>>;

export function makeSnapshot(parts: Parts): Snapshot {
  return Object.freeze({ endpoints: new Map(), routes: new Map(), ...parts });
}

export function snapshotFromBootstrap(b: Bootstrap, version = 'static'): Snapshot {
  return makeSnapshot({
    version,
    listeners: new Map(b.listeners.map((l) => [l.name, l])),
    clusters: new Map(b.clusters.map((c) => [c.name, c])),
  });
}

/** Endpoints of a cluster, inline (STATIC/DNS) or delivered by EDS. */
export function endpointsOf(snapshot: Snapshot, cluster: Cluster): ClusterLoadAssignment | undefined {
  if (cluster.type !== 'EDS') return cluster.loadAssignment;
  return snapshot.endpoints.get(cluster.edsServiceName ?? cluster.name);
}
