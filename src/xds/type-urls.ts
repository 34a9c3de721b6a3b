/** The xDS resource types xsidecar subscribes to, in the order Envoy (and istiod's push order) uses. */

const PREFIX = 'type.googleapis.com/';

export const TYPE_URL = {
  cluster: `${PREFIX}envoy.config.cluster.v3.Cluster`,
  endpoint: `${PREFIX}envoy.config.endpoint.v3.ClusterLoadAssignment`,
  listener: `${PREFIX}envoy.config.listener.v3.Listener`,
  route: `${PREFIX}envoy.config.route.v3.RouteConfiguration`,
  nametable: `${PREFIX}istio.networking.nds.v1.NameTable`,
} as const;

export type ResourceKind = keyof typeof TYPE_URL;

/** The kinds that make up the proxy config (NDS feeds DNS only). */
export type ConfigKind = Exclude<ResourceKind, 'nametable'>;

/** CDS, then EDS for its clusters, then LDS, then RDS for its listeners: the warming order of Envoy. */
export const KIND_ORDER: readonly ResourceKind[] = ['cluster', 'endpoint', 'listener', 'route', 'nametable'];

/**
 * Wildcard types are subscribed with no names and every response carries the whole set. EDS and RDS name
 * what they want; istiod reads an empty name list for them as "unsubscribe".
 */
export const WILDCARD: ReadonlySet<ResourceKind> = new Set(['cluster', 'listener', 'nametable']);

const byUrl = new Map<string, ResourceKind>(Object.entries(TYPE_URL).map(([k, v]) => [v, k as ResourceKind]));

export const kindOfTypeUrl = (typeUrl: string): ResourceKind | undefined => byUrl.get(typeUrl);

/** Fully qualified message name of a type URL (what follows the last '/'). */
export const messageNameOf = (typeUrl: string): string => typeUrl.slice(typeUrl.lastIndexOf('/') + 1);

/** Display names, as Envoy's errors and config_dump use them. */
export const KIND_LABEL: Record<ResourceKind, string> = {
  cluster: 'Cluster',
  endpoint: 'ClusterLoadAssignment',
  listener: 'Listener',
  route: 'RouteConfiguration',
  nametable: 'NameTable',
};

/** Short names for logs: CDS, EDS, LDS, RDS, NDS. */
export const KIND_API: Record<ResourceKind, string> = { cluster: 'CDS', endpoint: 'EDS', listener: 'LDS', route: 'RDS', nametable: 'NDS' };
