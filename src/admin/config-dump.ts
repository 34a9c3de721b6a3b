import type { Cluster } from '../config/model.js';
import type { Snapshot } from '../config/snapshot.js';

export type DumpKind = 'cluster' | 'endpoint' | 'listener' | 'route';

/** A resource delivered over xDS, as it is in force. */
export interface DynamicEntry {
  readonly name: string;
  readonly raw: unknown;
  readonly version: string;
  readonly lastUpdated: string;
}

/** The last rejected version of a resource and why (the NACK's error_detail). */
export interface RejectedResource {
  readonly name: string;
  readonly raw: unknown;
  readonly version: string;
  readonly lastUpdated: string;
  readonly details: string;
}

export interface DumpInput {
  readonly bootstrap: unknown;
  readonly snapshot: Snapshot | undefined;
  /** When the static resources were loaded. */
  readonly staticLastUpdated: string;
  /** The dynamic resources in force; a name not here is a static resource. */
  readonly dynamic?: Partial<Record<DumpKind, ReadonlyMap<string, DynamicEntry>>>;
  /** version_info of the last accepted response per type. */
  readonly versions?: Partial<Record<DumpKind, string>>;
  readonly rejected?: Partial<Record<DumpKind, readonly RejectedResource[]>>;
  /** Accepted but waiting for their endpoints / routes; the previous version (if any) is still active. */
  readonly warming?: { readonly clusters: readonly DynamicEntry[]; readonly listeners: readonly DynamicEntry[] };
}

const ADMIN = 'type.googleapis.com/envoy.admin.v3.';
const RESOURCE_TYPE: Record<DumpKind, string> = {
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
};

/** Resources in the dump are Anys: they carry their @type first, as Envoy prints them. */
function asAny(kind: DumpKind, raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null) return raw;
  const { '@type': _type, ...rest } = raw as Record<string, unknown>;
  return { '@type': RESOURCE_TYPE[kind], ...rest };
}

const errorState = (kind: DumpKind, r: RejectedResource) => ({
  failed_configuration: asAny(kind, r.raw),
  last_update_attempt: r.lastUpdated,
  details: r.details,
  version_info: r.version,
});

const FIELD: Record<DumpKind, string> = { cluster: 'cluster', endpoint: 'endpoint_config', listener: 'listener', route: 'route_config' };

/** Active dynamic entries with their error_state, then rejected resources that never became active. */
function dynamicEntries(kind: DumpKind, input: DumpInput, names: Iterable<string>): object[] {
  const dyn = input.dynamic?.[kind];
  const rejected = new Map((input.rejected?.[kind] ?? []).map((r) => [r.name, r]));
  const out: object[] = [];
  for (const name of names) {
    const e = dyn?.get(name);
    if (!e) continue;
    const rej = rejected.get(name);
    rejected.delete(name);
    out.push({ version_info: e.version, [FIELD[kind]]: asAny(kind, e.raw), last_updated: e.lastUpdated, ...(rej ? { error_state: errorState(kind, rej), client_status: 'NACKED' } : {}) });
  }
  for (const rej of rejected.values()) out.push({ error_state: errorState(kind, rej), client_status: 'NACKED' });
  return out;
}

/** Envoy-shaped /config_dump: bootstrap, clusters, endpoints, listeners, routes; static and dynamic. */
export function buildConfigDump(input: DumpInput): object {
  const s = input.snapshot;
  const isDynamic = (kind: DumpKind, name: string) => input.dynamic?.[kind]?.has(name) ?? false;
  const staticOf = <T extends { raw: unknown }>(kind: DumpKind, items: ReadonlyMap<string, T> | undefined) =>
    [...(items ?? new Map<string, T>())].filter(([name]) => !isDynamic(kind, name)).map(([, item]) => ({ [FIELD[kind]]: asAny(kind, item.raw), last_updated: input.staticLastUpdated }));
  const staticClusters = [...(s?.clusters.values() ?? [])].filter((c: Cluster) => !isDynamic('cluster', c.name));
  const warm = (kind: 'cluster' | 'listener', e: DynamicEntry) => ({ version_info: e.version, [FIELD[kind]]: asAny(kind, e.raw), last_updated: e.lastUpdated });
  const warmingListeners = new Map((input.warming?.listeners ?? []).map((e) => [e.name, e]));
  const listenerRejections = new Map((input.rejected?.listener ?? []).map((r) => [r.name, r]));
  const dynListeners = input.dynamic?.listener ?? new Map<string, DynamicEntry>();
  const listenerNames = [...new Set([...dynListeners.keys(), ...warmingListeners.keys(), ...listenerRejections.keys()])];

  return {
    configs: [
      { '@type': `${ADMIN}BootstrapConfigDump`, bootstrap: input.bootstrap, last_updated: input.staticLastUpdated },
      {
        '@type': `${ADMIN}ClustersConfigDump`,
        version_info: input.versions?.cluster,
        static_clusters: staticOf('cluster', s?.clusters),
        dynamic_active_clusters: dynamicEntries('cluster', input, input.dynamic?.cluster?.keys() ?? []),
        dynamic_warming_clusters: (input.warming?.clusters ?? []).map((e) => warm('cluster', e)),
      },
      {
        '@type': `${ADMIN}EndpointsConfigDump`,
        static_endpoint_configs: staticClusters.filter((c) => c.loadAssignment).map((c) => ({ endpoint_config: asAny('endpoint', c.loadAssignment!.raw), last_updated: input.staticLastUpdated })),
        dynamic_endpoint_configs: dynamicEntries('endpoint', input, input.dynamic?.endpoint?.keys() ?? []),
      },
      {
        '@type': `${ADMIN}ListenersConfigDump`,
        version_info: input.versions?.listener,
        static_listeners: staticOf('listener', s?.listeners),
        dynamic_listeners: listenerNames.map((name) => {
          const active = dynListeners.get(name);
          const warming = warmingListeners.get(name);
          const rej = listenerRejections.get(name);
          return {
            name,
            ...(active ? { active_state: { version_info: active.version, listener: asAny('listener', active.raw), last_updated: active.lastUpdated } } : {}),
            ...(warming ? { warming_state: { version_info: warming.version, listener: asAny('listener', warming.raw), last_updated: warming.lastUpdated } } : {}),
            ...(rej ? { error_state: errorState('listener', rej), client_status: 'NACKED' } : {}),
          };
        }),
      },
      {
        '@type': `${ADMIN}RoutesConfigDump`,
        static_route_configs: staticOf('route', s?.routes),
        dynamic_route_configs: dynamicEntries('route', input, input.dynamic?.route?.keys() ?? []),
      },
    ],
  };
}
