/**
 * The accepted xDS resources per type, the last rejection of each resource, and what they refer to.
 * A response is accepted or rejected as a whole: one bad resource NACKs the response and every resource
 * keeps its previous accepted version, so the config in force never mixes two pushes.
 */
import type { Cluster, HttpConnectionManagerConfig, Listener, XProtocolConfig } from '../config/model.js';
import { crossCheck, type Resource, type ResourceFailure, type Statics } from './resources.js';
import type { ConfigKind } from './type-urls.js';

export interface Rejection {
  readonly name: string;
  readonly raw: unknown;
  readonly version: string;
  readonly lastUpdated: string;
  readonly details: string;
}

export interface Change {
  readonly resources: readonly Resource[];
  readonly failures: readonly ResourceFailure[];
  /** Names the server removed (delta). */
  readonly removed?: readonly string[];
  /** State of the world for a wildcard type: what is not in the response is gone. */
  readonly replaceAll: boolean;
}

const KINDS: readonly ConfigKind[] = ['cluster', 'endpoint', 'listener', 'route'];
const perKind = <T>(make: () => T) => Object.fromEntries(KINDS.map((k) => [k, make()])) as Record<ConfigKind, T>;

/** The RDS names a listener's filters use (HTTP connection manager and x-protocol `rds`). */
export function routeNamesOf(l: Listener): string[] {
  const names: string[] = [];
  for (const chain of l.defaultFilterChain ? [...l.filterChains, l.defaultFilterChain] : l.filterChains) {
    for (const f of chain.filters) {
      const rds = (f as HttpConnectionManagerConfig | XProtocolConfig).rdsName;
      if ((f.kind === 'http_connection_manager' || f.kind === 'xprotocol') && rds) names.push(rds);
    }
  }
  return names;
}

export const edsNameOf = (c: Cluster) => c.edsServiceName ?? c.name;

export class ConfigState {
  readonly active = perKind(() => new Map<string, Resource>());
  readonly rejected = perKind(() => new Map<string, Rejection>());
  readonly versions: Partial<Record<ConfigKind, string>> = {};
  /** CDS and LDS are initialized by their first response, accepted or not, or by their fetch timeout. */
  private readonly initialized = new Set<ConfigKind>();

  constructor(readonly statics: Statics) {}

  markInitialized(kind: ConfigKind): void {
    this.initialized.add(kind);
  }

  isInitialized(kind: ConfigKind): boolean {
    return this.initialized.has(kind);
  }

  /** Applies a change, or records why not; returns the NACK message when rejected. */
  update(kind: ConfigKind, change: Change, version: string, now: string): string | undefined {
    const current = this.active[kind];
    const merged = change.replaceAll ? new Map<string, Resource>() : new Map(current);
    for (const name of change.removed ?? []) merged.delete(name);
    for (const r of change.resources) merged.set(r.name, r);
    const failures = [...change.failures, ...(change.failures.length === 0 ? crossCheck(kind, merged, this.statics) : [])];
    const rejected = this.rejected[kind];
    if (failures.length > 0) {
      for (const f of failures) rejected.set(f.name, { name: f.name, raw: f.raw, version, lastUpdated: now, details: f.message });
      return failures.map((f) => f.message).join('\n');
    }
    this.active[kind] = merged;
    this.versions[kind] = version;
    if (change.replaceAll) rejected.clear();
    else for (const name of [...(change.removed ?? []), ...change.resources.map((r) => r.name)]) rejected.delete(name);
    return undefined;
  }

  /** Drops EDS/RDS resources nothing refers to any more (a removed cluster's endpoints, …). */
  retain(kind: 'endpoint' | 'route', wanted: ReadonlySet<string>): void {
    for (const name of this.active[kind].keys()) if (!wanted.has(name)) this.active[kind].delete(name);
    for (const name of this.rejected[kind].keys()) if (!wanted.has(name)) this.rejected[kind].delete(name);
  }

  private clusters(): Cluster[] {
    return [...this.statics.clusters, ...[...this.active.cluster.values()].map((r) => r.config as Cluster)];
  }

  private listeners(): Listener[] {
    return [...this.statics.listeners, ...[...this.active.listener.values()].map((r) => r.config as Listener)];
  }

  /** ClusterLoadAssignments to subscribe: one per EDS cluster (its eds service name). */
  edsNames(): Set<string> {
    return new Set(this.clusters().filter((c) => c.type === 'EDS').map(edsNameOf));
  }

  /** RouteConfigurations to subscribe: every rds name an accepted listener uses. */
  rdsNames(): Set<string> {
    return new Set(this.listeners().flatMap(routeNamesOf));
  }
}
