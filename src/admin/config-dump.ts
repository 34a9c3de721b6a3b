import type { Snapshot } from '../config/snapshot.js';

/** Where each resource came from and when, as Envoy's config_dump reports it. */
export interface ResourceMeta {
  readonly dynamic: boolean;
  readonly version: string;
  readonly lastUpdated: string;
}

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
  readonly meta: (kind: 'listener' | 'cluster' | 'endpoint' | 'route', name: string) => ResourceMeta;
  readonly rejected?: { readonly listeners: readonly RejectedResource[]; readonly clusters: readonly RejectedResource[]; readonly routes: readonly RejectedResource[]; readonly endpoints: readonly RejectedResource[] };
}

const TYPE = 'type.googleapis.com/envoy.admin.v3.';

function split<T extends { raw: unknown }>(items: Iterable<[string, T]>, kind: 'listener' | 'cluster' | 'endpoint' | 'route', input: DumpInput) {
  const statics: object[] = [];
  const dynamics: object[] = [];
  for (const [name, item] of items) {
    const m = input.meta(kind, name);
    if (m.dynamic) dynamics.push({ name, version_info: m.version, [kind === 'endpoint' ? 'endpoint_config' : kind]: item.raw, last_updated: m.lastUpdated });
    else statics.push({ [kind === 'endpoint' ? 'endpoint_config' : kind]: item.raw, last_updated: m.lastUpdated });
  }
  return { statics, dynamics };
}

const errorState = (r: RejectedResource) => ({ failed_configuration: r.raw, last_update_attempt: r.lastUpdated, details: r.details, version_info: r.version });

/** Envoy-shaped /config_dump: bootstrap, then listeners, clusters, routes and endpoints, static and dynamic. */
export function buildConfigDump(input: DumpInput): object {
  const s = input.snapshot;
  const rej = input.rejected;
  const listeners = split(s?.listeners ?? new Map(), 'listener', input);
  const clusters = split(s?.clusters ?? new Map(), 'cluster', input);
  const endpoints = split(s?.endpoints ?? new Map(), 'endpoint', input);
  return {
    configs: [
      { '@type': `${TYPE}BootstrapConfigDump`, bootstrap: input.bootstrap },
      {
        '@type': `${TYPE}ListenersConfigDump`,
        version_info: s?.version,
        static_listeners: listeners.statics,
        dynamic_listeners: [
          ...listeners.dynamics.map((d) => {
            const { name, ...active } = d as { name: string };
            return { name, active_state: active };
          }),
          ...(rej?.listeners ?? []).map((r) => ({ name: r.name, error_state: errorState(r) })),
        ],
      },
      {
        '@type': `${TYPE}ClustersConfigDump`,
        version_info: s?.version,
        static_clusters: clusters.statics,
        dynamic_active_clusters: clusters.dynamics,
        dynamic_rejected_clusters: (rej?.clusters ?? []).map(errorState),
      },
      {
        '@type': `${TYPE}EndpointsConfigDump`,
        static_endpoint_configs: endpoints.statics,
        dynamic_endpoint_configs: endpoints.dynamics,
      },
    ],
  };
}
