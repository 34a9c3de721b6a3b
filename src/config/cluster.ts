import { decodeBareSocketAddress, decodeSocketAddress } from './address.js';
import {
  CLUSTER_TYPES,
  type Cluster,
  type ClusterLoadAssignment,
  type Endpoint,
  HEALTH_STATUSES,
  type HealthStatus,
  type IstioService,
  type LbPolicy,
} from './model.js';
import { ConfigError, type DecodeContext, ObjReader } from './reader.js';
import { SharedTable } from './shared-table.js';
import { decodeClusterTransportSocket, decodeTransportSocketMatches } from './tls-context.js';
import { decodeCircuitBreakers, decodeHealthChecks, decodeOutlierDetection } from './resilience.js';
import { codecs } from '../../protocols/registry.js';

const LB_POLICIES = ['ROUND_ROBIN', 'LEAST_REQUEST', 'RING_HASH', 'RANDOM', 'UNUSED_4', 'MAGLEV', 'CLUSTER_PROVIDED', 'LOAD_BALANCING_POLICY_CONFIG'] as const;

const CLUSTER_IGNORED = [
  'typed_extension_protocol_options', 'filters',
  'common_lb_config', 'dns_lookup_family', 'max_requests_per_connection',
  'http2_protocol_options', 'http_protocol_options', 'common_http_protocol_options', 'alt_stat_name',
  'cleanup_interval', 'dns_refresh_rate', 'respect_dns_ttl', 'upstream_connection_options', 'lb_subset_config',
  'least_request_lb_config', 'round_robin_lb_config', 'original_dst_lb_config', 'ring_hash_lb_config',
  'per_connection_buffer_limit_bytes', 'track_cluster_stats', 'track_timeout_budgets',
  'close_connections_on_host_health_failure', 'ignore_health_on_host_removal', 'protocol_selection',
  'load_balancing_policy', 'dns_resolution_config', 'typed_dns_resolver_config', 'wait_for_warm_on_init',
];

export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

/**
 * One object per distinct match: a mesh's 10,000 endpoints carry a handful (Istio: `tlsMode: istio` or
 * none), and each endpoint holding its own copy was as many small objects kept for the config's life.
 */
const socketMatches = new SharedTable<Readonly<Record<string, string>>>(256, 1024);

/** metadata.filter_metadata["envoy.transport_socket_match"] as strings (Istio sets `tlsMode: istio`). */
function transportSocketMatchOf(md: ObjReader | undefined): Readonly<Record<string, string>> | undefined {
  const fm = md?.value.filter_metadata ?? md?.value.filterMetadata;
  const m = (fm as Record<string, unknown> | undefined)?.['envoy.transport_socket_match'];
  if (typeof m !== 'object' || m === null) return undefined;
  return sharedSocketMatch(Object.fromEntries(Object.entries(m).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])));
}

/** The one shared (frozen) object equal to `match`. */
export function sharedSocketMatch(match: Record<string, string>): Readonly<Record<string, string>> {
  const key = JSON.stringify(match);
  return socketMatches.get(key) ?? socketMatches.keep(key, Object.freeze(match));
}

/** metadata.filter_metadata.istio, as proto3 JSON or as a YAML bootstrap spells it. */
function istioMetadata(md: unknown): { workload?: unknown; services?: unknown } | undefined {
  const m = md as { filter_metadata?: Record<string, unknown>; filterMetadata?: Record<string, unknown> } | null | undefined;
  const istio = (m?.filter_metadata ?? m?.filterMetadata)?.istio;
  return typeof istio === 'object' && istio !== null ? istio : undefined;
}

/** metadata.filter_metadata.istio.workload, for telemetry's destination_* labels. */
function istioWorkload(md: unknown): string | undefined {
  const istio = istioMetadata(md);
  return typeof istio?.workload === 'string' && istio.workload !== '' ? sharedWorkload(istio.workload) : undefined;
}

/** metadata.filter_metadata.istio.services (`[{host, name, namespace}]`); entries without a host are skipped. */
export function istioServicesOf(md: unknown): IstioService[] | undefined {
  const services = istioMetadata(md)?.services;
  if (!Array.isArray(services)) return undefined;
  const out = services.filter((x): x is IstioService => typeof x === 'object' && x !== null && typeof (x as IstioService).host === 'string');
  return out.length > 0 ? out : undefined;
}

/**
 * Every endpoint is made here, whichever decoder read it (xds/cla-wire.ts reads istiod's straight from the
 * wire), so all have one shape, which the data path reads per connection.
 */
export function newEndpoint(
  address: string,
  port: number,
  weight: number,
  health: HealthStatus,
  priority: number,
  transportSocketMatch: Readonly<Record<string, string>> | undefined,
  workload: string | undefined,
): Endpoint {
  return { address, port, weight, health, priority, transportSocketMatch, workload };
}

/**
 * Istio labels each endpoint with its workload, the same string for every pod of a deployment: a mesh's
 * 10,000 endpoints held 10,000 copies of a few hundred strings. (What xds/cla-wire.ts reads shares them
 * already, by the metadata's bytes.)
 */
const workloads = new SharedTable<string>(4096, 256);
const sharedWorkload = (w: string): string => workloads.get(w) ?? workloads.keep(w, w);

export function decodeLoadAssignment(value: unknown, path: string, ctx: DecodeContext, opts: { hostnames?: boolean } = {}): ClusterLoadAssignment {
  const r = ObjReader.of(value, path, ctx);
  const clusterName = r.str('cluster_name', '');
  const endpoints: Endpoint[] = [];
  for (const locality of r.objList('endpoints')) {
    const priority = locality.int('priority', 0, 127) ?? 0;
    for (const lb of locality.objList('lb_endpoints')) {
      const ep = lb.obj('endpoint');
      if (!ep) throw new ConfigError(lb.at('endpoint'), 'is required (named endpoints are not supported)');
      const { address, port } = decodeSocketAddress(ep.requiredObj('address'), opts);
      if (port === 0) throw new ConfigError(ep.at('address.socket_address.port_value'), 'expected 1..65535, got 0');
      ep.ignore('health_check_config', 'hostname', 'additional_addresses');
      ep.done();
      endpoints.push(
        newEndpoint(
          address,
          port,
          lb.int('load_balancing_weight', 1, 2 ** 32 - 1) ?? 1,
          lb.enumOf('health_status', HEALTH_STATUSES, 'UNKNOWN'),
          priority,
          transportSocketMatchOf(lb.obj('metadata')),
          istioWorkload(lb.raw('metadata')),
        ),
      );
      lb.ignore('endpoint_name');
      lb.done();
    }
    locality.ignore('locality', 'load_balancing_weight', 'metadata', 'proximity', 'leds_cluster_locality_config');
    locality.done();
  }
  r.ignore('policy', 'named_endpoints');
  r.done();
  return { clusterName, endpoints, raw: value };
}

/** The policy xsidecar runs for an lb_policy, or undefined for one it does not implement. */
function implementedLbPolicy(p: (typeof LB_POLICIES)[number] | undefined): LbPolicy | undefined {
  if (p === 'ROUND_ROBIN' || p === 'LEAST_REQUEST' || p === 'RANDOM') return p;
  return p === 'CLUSTER_PROVIDED' ? 'ROUND_ROBIN' : undefined;
}

/** An lb_policy by its enum number when it needs no warning (xds/cluster-wire.ts), else undefined. */
export const lbPolicyAt = (n: number): LbPolicy | undefined => implementedLbPolicy(LB_POLICIES[n]);

/** Every cluster is made here, whichever decoder read it, so all have one shape. */
export function newCluster(c: Cluster): Cluster {
  return {
    name: c.name,
    type: c.type,
    connectTimeoutMs: c.connectTimeoutMs,
    lbPolicy: c.lbPolicy,
    loadAssignment: c.loadAssignment,
    edsServiceName: c.edsServiceName,
    upstreamBindAddress: c.upstreamBindAddress,
    transportSocketMatches: c.transportSocketMatches,
    transportSocket: c.transportSocket,
    circuitBreakers: c.circuitBreakers,
    outlierDetection: c.outlierDetection,
    healthChecks: c.healthChecks,
    istioServices: c.istioServices,
    raw: c.raw,
  };
}

function lbPolicyOf(r: ObjReader): LbPolicy {
  const p = r.enumOf('lb_policy', LB_POLICIES, 'ROUND_ROBIN');
  const implemented = implementedLbPolicy(p);
  if (implemented) return implemented;
  r.ctx.warnings.push(`${r.at('lb_policy')}: ${p} is not implemented, using ROUND_ROBIN`);
  return 'ROUND_ROBIN';
}

export function decodeCluster(value: unknown, path: string, ctx: DecodeContext): Cluster {
  const r = ObjReader.of(value, path, ctx);
  const name = r.requiredStr('name');
  if (r.has('cluster_type')) throw new ConfigError(r.at('cluster_type'), 'custom cluster types are not supported');
  const type = r.enumOf('type', CLUSTER_TYPES, 'STATIC');
  const dns = type === 'STRICT_DNS' || type === 'LOGICAL_DNS';
  const la = r.raw('load_assignment');
  const loadAssignment = la === undefined || la === null ? undefined : decodeLoadAssignment(la, r.at('load_assignment'), ctx, { hostnames: dns });
  const eds = r.obj('eds_cluster_config');
  const edsServiceName = eds?.str('service_name');
  eds?.ignore('eds_config');
  eds?.done();
  if (type === 'EDS' && loadAssignment) ctx.warnings.push(`${r.at('load_assignment')}: ignored for an EDS cluster`);
  const bind = r.obj('upstream_bind_config');
  const upstreamBindAddress = bind ? decodeBareSocketAddress(bind.requiredObj('source_address')).address : undefined;
  bind?.ignore('freebind', 'socket_options', 'additional_source_addresses', 'extra_source_addresses');
  bind?.done();
  const cluster = newCluster({
    name,
    type,
    connectTimeoutMs: r.durationMs('connect_timeout') ?? DEFAULT_CONNECT_TIMEOUT_MS,
    lbPolicy: lbPolicyOf(r),
    loadAssignment: type === 'EDS' ? undefined : loadAssignment,
    edsServiceName,
    upstreamBindAddress,
    transportSocketMatches: decodeTransportSocketMatches(r),
    transportSocket: decodeClusterTransportSocket(r),
    circuitBreakers: decodeCircuitBreakers(r.obj('circuit_breakers')),
    outlierDetection: decodeOutlierDetection(r.obj('outlier_detection')),
    healthChecks: decodeHealthChecks(r.objList('health_checks'), codecs.map((c) => c.name)),
    istioServices: istioServicesOf(r.raw('metadata')),
    raw: value,
  });
  r.ignore(...CLUSTER_IGNORED);
  r.done();
  return cluster;
}
