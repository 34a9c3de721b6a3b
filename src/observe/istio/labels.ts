/**
 * Istio's standard metric labels and where each value comes from, as Istio's stats filter takes them:
 * this pod's node metadata for the local side, the cluster name (`outbound|port|subset|host`) or the
 * cluster's `istio.services` metadata for the destination service, and the EDS endpoint metadata
 * (`filter_metadata.istio.workload` = `name;namespace;canonical-service;revision;cluster`) for the peer
 * workload on the outbound side. What is not known is `unknown`, as in Istio. Pure functions: unit tested.
 */

export const UNKNOWN = 'unknown';

/** One side of an edge: what Istio's `source_*` / `destination_*` eight labels say about a workload. */
export interface Workload {
  readonly workload: string;
  readonly namespace: string;
  readonly principal: string;
  readonly app: string;
  readonly version: string;
  readonly canonicalService: string;
  readonly canonicalRevision: string;
  readonly cluster: string;
}

export const UNKNOWN_WORKLOAD: Workload = {
  workload: UNKNOWN,
  namespace: UNKNOWN,
  principal: UNKNOWN,
  app: UNKNOWN,
  version: UNKNOWN,
  canonicalService: UNKNOWN,
  canonicalRevision: UNKNOWN,
  cluster: UNKNOWN,
};

export interface DestinationService {
  readonly service: string;
  readonly name: string;
  readonly namespace: string;
}

type Plain = Record<string, unknown>;
const isPlain = (v: unknown): v is Plain => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/**
 * This pod as Istio's stats filter sees it from its node metadata: WORKLOAD_NAME, NAMESPACE, CLUSTER_ID,
 * and LABELS (app, version, service.istio.io/canonical-name, service.istio.io/canonical-revision). The
 * canonical service falls back to the app label, then the workload name; the revision to the version
 * label, then `latest` (istio's own fallbacks). No mTLS yet, so the principal is unknown (Istio derives
 * it from the peer certificate, not from metadata).
 */
export function localWorkload(metadata: Readonly<Record<string, unknown>> | undefined): Workload {
  const m: Plain = metadata ?? {};
  const labels: Plain = isPlain(m.LABELS) ? m.LABELS : {};
  const app = str(labels.app) ?? str(labels['app.kubernetes.io/name']);
  const version = str(labels.version) ?? str(labels['app.kubernetes.io/version']);
  const workload = str(m.WORKLOAD_NAME) ?? UNKNOWN;
  return {
    workload,
    namespace: str(m.NAMESPACE) ?? UNKNOWN,
    principal: UNKNOWN,
    app: app ?? UNKNOWN,
    version: version ?? UNKNOWN,
    canonicalService: str(labels['service.istio.io/canonical-name']) ?? app ?? (workload === UNKNOWN ? UNKNOWN : workload),
    canonicalRevision: str(labels['service.istio.io/canonical-revision']) ?? version ?? (workload === UNKNOWN ? UNKNOWN : 'latest'),
    cluster: str(m.CLUSTER_ID) ?? UNKNOWN,
  };
}

/**
 * The peer of an outbound request from its endpoint's `istio.workload` metadata. Istio fills only these
 * five fields from it; app and version stay unknown (they would come from metadata exchange).
 */
export function endpointWorkload(encoded: string | undefined): Workload {
  if (!encoded) return UNKNOWN_WORKLOAD;
  const parts = encoded.split(';');
  if (parts.length < 5) return UNKNOWN_WORKLOAD;
  const [workload, namespace, canonicalService, canonicalRevision, cluster] = parts.map((p) => p || UNKNOWN) as [string, string, string, string, string];
  return { ...UNKNOWN_WORKLOAD, workload, namespace, canonicalService, canonicalRevision, cluster };
}

/** The services a cluster serves, as Istio writes them in the cluster's `filter_metadata.istio.services`. */
export interface ClusterService {
  readonly host: string;
  readonly name?: string;
  readonly namespace?: string;
}

/** Istio's special clusters: their name is the service name (Kiali draws them as such). */
const NAMED_CLUSTERS = new Set(['PassthroughCluster', 'InboundPassthroughClusterIpv4', 'InboundPassthroughClusterIpv6', 'BlackHoleCluster', 'original_dst']);

/**
 * destination_service, _name and _namespace: the cluster's `istio.services[0]` when it has one, else
 * the host of an Istio cluster name (`outbound|9080|v1|reviews.default.svc.cluster.local`: name
 * `reviews`, namespace `default`), else the cluster name itself (passthrough, a hand-written cluster).
 * An inbound cluster (`inbound|port||`) names no host: it serves the local workload, so its canonical
 * service and namespace stand in, as they do in Istio when the cluster metadata is missing.
 */
export function destinationService(clusterName: string | undefined, services: readonly ClusterService[] | undefined, local: Workload | undefined): DestinationService {
  const svc = services?.[0];
  if (svc) {
    const [first, second] = svc.host.split('.');
    return { service: svc.host, name: svc.name ?? first ?? UNKNOWN, namespace: svc.namespace ?? second ?? UNKNOWN };
  }
  if (clusterName === undefined || clusterName === '') return { service: UNKNOWN, name: UNKNOWN, namespace: UNKNOWN };
  const parts = clusterName.split('|');
  if (parts.length === 4 && (parts[0] === 'outbound' || parts[0] === 'inbound')) {
    const host = parts[3]!;
    if (host) {
      const labels = host.split('.');
      // A bare name (`outbound|12200||user-service`) is the service in the local namespace; an IP is not a name.
      const isIp = /^[\d.]+$/.test(host) || host.includes(':');
      return {
        service: host,
        name: isIp ? host : labels[0]!,
        namespace: isIp ? UNKNOWN : (labels[1] ?? local?.namespace ?? UNKNOWN),
      };
    }
    if (parts[0] === 'inbound' && local) {
      return { service: local.canonicalService, name: local.canonicalService, namespace: local.namespace };
    }
  }
  if (NAMED_CLUSTERS.has(clusterName)) return { service: clusterName, name: clusterName, namespace: UNKNOWN };
  return { service: clusterName, name: clusterName, namespace: UNKNOWN };
}

export type Direction = 'inbound' | 'outbound';

/**
 * Which side reports: Istio's inbound listener is `virtualInbound` (or `inbound|…` in older versions)
 * with `traffic_direction: INBOUND`, bound to the inbound capture port 15006. Anything else reports as
 * the source (outbound).
 */
export function listenerDirection(listener: { readonly name: string; readonly address?: { readonly port: number }; readonly trafficDirection?: string }): Direction {
  if (listener.trafficDirection === 'INBOUND') return 'inbound';
  if (listener.trafficDirection === 'OUTBOUND') return 'outbound';
  if (listener.name === 'virtualInbound' || listener.name.startsWith('inbound|')) return 'inbound';
  if (listener.address?.port === 15006) return 'inbound';
  return 'outbound';
}

/** The label names of Istio's request metrics, in Istio's order, plus our `rpc_protocol`. */
export const REQUEST_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_canonical_service',
  'source_canonical_revision',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_cluster',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
  'rpc_protocol',
] as const;

/** Istio's TCP metrics: the same peers, `request_protocol="tcp"`, no response code or gRPC status. */
export const TCP_LABELS = REQUEST_LABELS.filter((l) => l !== 'response_code' && l !== 'grpc_response_status' && l !== 'rpc_protocol');

/** The fixed part of an edge's labels (everything but the outcome), in Istio's order. */
export function edgeLabels(direction: Direction, source: Workload, destination: Workload, service: DestinationService): Record<string, string> {
  const w = (prefix: string, x: Workload) =>
    [
      [`${prefix}_workload`, x.workload],
      [`${prefix}_workload_namespace`, x.namespace],
      [`${prefix}_principal`, x.principal],
      [`${prefix}_app`, x.app],
      [`${prefix}_version`, x.version],
    ] as const;
  const pairs: (readonly [string, string])[] = [
    ['reporter', direction === 'inbound' ? 'destination' : 'source'],
    ...w('source', source),
    ['source_canonical_service', source.canonicalService],
    ['source_canonical_revision', source.canonicalRevision],
    ['source_cluster', source.cluster],
    ...w('destination', destination),
    ['destination_service', service.service],
    ['destination_service_name', service.name],
    ['destination_service_namespace', service.namespace],
    ['destination_canonical_service', destination.canonicalService],
    ['destination_canonical_revision', destination.canonicalRevision],
    ['destination_cluster', destination.cluster],
  ];
  return Object.fromEntries(pairs);
}
