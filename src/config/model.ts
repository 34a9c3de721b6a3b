/**
 * The one config model: Envoy v3 resources decoded into plain, typed, read-only objects. Static bootstrap
 * and xDS both produce these; everything downstream reads only these.
 */
import type { DownstreamTls, TransportSocketMatch } from './tls-context.js';

export interface SocketAddress {
  readonly address: string;
  readonly port: number;
}

export interface CidrRange {
  readonly address: string;
  readonly prefixLen: number;
}

export interface FilterChainMatch {
  readonly destinationPort?: number;
  readonly prefixRanges: readonly CidrRange[];
  readonly sourcePrefixRanges: readonly CidrRange[];
  readonly sourcePorts: readonly number[];
  readonly transportProtocol?: string;
  readonly applicationProtocols: readonly string[];
  readonly serverNames: readonly string[];
}

/** A decoded network filter; `kind` selects the handler in proxy/. */
export interface NetworkFilterConfig {
  readonly kind: string;
  readonly name: string;
  /** Where it was declared, for error messages. */
  readonly path?: string;
  /** The filter's Envoy `access_log` file path (`-`: stdout); see config/access-log.ts. */
  readonly accessLog?: string;
}

export interface WeightedCluster {
  readonly name: string;
  readonly weight: number;
}

export interface TcpProxyConfig extends NetworkFilterConfig {
  readonly kind: 'tcp_proxy';
  readonly statPrefix: string;
  readonly cluster?: string;
  readonly weightedClusters: readonly WeightedCluster[];
  /** 0 disables; Envoy's default is one hour. */
  readonly idleTimeoutMs: number;
}

export interface FilterChain {
  readonly name: string;
  readonly match: FilterChainMatch;
  readonly filters: readonly NetworkFilterConfig[];
  /** A DownstreamTlsContext transport socket: the chain terminates TLS before its filters see bytes. */
  readonly tls?: DownstreamTls;
}

export interface Listener {
  readonly name: string;
  readonly address: SocketAddress;
  /** Hand the connection to the listener that owns its original destination (Envoy's use_original_dst). */
  readonly useOriginalDst: boolean;
  /** The original_dst listener filter: match chains on the original destination, without hand-off. */
  readonly originalDstFilter: boolean;
  readonly transparent: boolean;
  readonly bindToPort: boolean;
  readonly filterChains: readonly FilterChain[];
  readonly defaultFilterChain?: FilterChain;
  /**
   * Envoy's per_connection_buffer_limit_bytes (default 1 MiB): what one connection may hold in requests
   * read but not answered and responses not yet sent before its reading pauses; also the largest RPC frame
   * it may send (a larger one is refused with the protocol's own error rather than held whole).
   */
  readonly perConnectionBufferLimitBytes: number;
  /** traffic_direction: Istio marks its inbound and outbound listeners; telemetry's reporter follows it. */
  readonly trafficDirection?: 'INBOUND' | 'OUTBOUND';
  /** The resource as it came, for /config_dump (see {@link Cluster.raw}). */
  readonly raw: unknown;
}

export type ClusterType = 'STATIC' | 'STRICT_DNS' | 'LOGICAL_DNS' | 'EDS' | 'ORIGINAL_DST';
export const CLUSTER_TYPES: readonly ClusterType[] = ['STATIC', 'STRICT_DNS', 'LOGICAL_DNS', 'EDS', 'ORIGINAL_DST'];

export type LbPolicy = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';

export type HealthStatus = 'UNKNOWN' | 'HEALTHY' | 'UNHEALTHY' | 'DRAINING' | 'TIMEOUT' | 'DEGRADED';
export const HEALTH_STATUSES: readonly HealthStatus[] = ['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'];

export interface Endpoint {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  readonly health: HealthStatus;
  readonly priority: number;
  /** filter_metadata["envoy.transport_socket_match"] (Istio: `tlsMode: istio`), read by transport_socket_matches. */
  readonly transportSocketMatch?: Readonly<Record<string, string>>;
  /** Istio's filter_metadata.istio.workload (`name;namespace;canonical-service;revision;cluster`), for telemetry. */
  readonly workload?: string;
}

export interface ClusterLoadAssignment {
  readonly clusterName: string;
  readonly endpoints: readonly Endpoint[];
  readonly raw: unknown;
}

/** Envoy's circuit breaker thresholds (default priority): Istio's DestinationRule connectionPool. */
export interface CircuitBreakers {
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxRequests: number;
  readonly maxRetries: number;
  /** retry_budget: active retries may be this share of active requests, but at least minRetryConcurrency. */
  readonly retryBudget?: { readonly percent: number; readonly minRetryConcurrency: number };
}

/** Envoy's outlier detection (Istio's DestinationRule outlierDetection); errors are judged through gRPC statuses. */
export interface OutlierDetection {
  readonly consecutive5xx: number;
  readonly consecutiveGatewayFailure: number;
  readonly consecutiveLocalOriginFailure: number;
  readonly enforcing5xx: number;
  readonly enforcingGatewayFailure: number;
  readonly enforcingLocalOrigin: number;
  /** When false, local-origin failures (connect failures, resets, timeouts) count as 5xx too. */
  readonly splitExternalLocalOriginErrors: boolean;
  readonly intervalMs: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
}

/** An active health check: a TCP connect, or the protocol's own heartbeat (xsidecar.health_checkers.rpc_heartbeat). */
export interface HealthCheck {
  readonly timeoutMs: number;
  readonly intervalMs: number;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
  /** A codec name for a heartbeat check; undefined: TCP connect. */
  readonly protocol?: string;
}

export interface Cluster {
  readonly name: string;
  readonly circuitBreakers: CircuitBreakers;
  readonly outlierDetection?: OutlierDetection;
  readonly healthChecks: readonly HealthCheck[];
  readonly type: ClusterType;
  readonly connectTimeoutMs: number;
  readonly lbPolicy: LbPolicy;
  /** STATIC/DNS clusters carry their endpoints inline; EDS clusters get them from a ClusterLoadAssignment. */
  readonly loadAssignment?: ClusterLoadAssignment;
  readonly edsServiceName?: string;
  readonly upstreamBindAddress?: string;
  /** transport_socket_matches (Istio's `tlsMode-istio` / `tlsMode-disabled`), in order. */
  readonly transportSocketMatches?: readonly TransportSocketMatch[];
  /** The cluster's own transport_socket: used when no match entry applies. Undefined: plaintext. */
  readonly transportSocket?: Pick<TransportSocketMatch, 'tls' | 'unsupported'>;
  /** metadata.filter_metadata.istio.services: the services Istio says this cluster serves (telemetry). */
  readonly istioServices?: readonly IstioService[];
  /**
   * The resource as it came, for /config_dump. An xDS resource's is made again from its bytes each time
   * it is read (src/xds/resources.ts): kept, the proto3 JSON of a mesh took more heap than its model.
   * What the data path needs of it is decoded into the fields above.
   */
  readonly raw: unknown;
}

/** One entry of Istio's `istio.services` cluster metadata. */
export interface IstioService {
  readonly host: string;
  readonly name?: string;
  readonly namespace?: string;
}

export interface Node {
  readonly id: string;
  readonly cluster: string;
  readonly metadata: Readonly<Record<string, unknown>>;
}

export interface ConfigSource {
  readonly ads: boolean;
  readonly initialFetchTimeoutMs?: number;
}

export interface AdsConfig {
  readonly apiType: 'GRPC' | 'DELTA_GRPC';
  readonly clusterName?: string;
  readonly targetUri?: string;
}

export interface DynamicResources {
  readonly ldsConfig?: ConfigSource;
  readonly cdsConfig?: ConfigSource;
  readonly adsConfig?: AdsConfig;
}

/** A name of the DNS filter's inline table (envoy.data.dns.v3.DnsTable.DnsVirtualDomain). */
export interface DnsTableName {
  readonly name: string;
  readonly addresses: readonly string[];
  readonly ttlSeconds?: number;
}

/**
 * A UDP listener holding envoy.filters.udp.dns_filter: not a listener we bind, but the DNS proxy's
 * configuration (its address, its static table, its upstream resolvers).
 */
export interface DnsProxyConfig {
  readonly listenerName: string;
  readonly address: SocketAddress;
  readonly names: readonly DnsTableName[];
  /** client_config resolvers; empty: /etc/resolv.conf. */
  readonly upstreams: readonly SocketAddress[];
  readonly resolutionTimeoutMs?: number;
}

/**
 * What callers may hold, process-wide: Envoy's overload manager (`overload_manager`, and the runtime key
 * `overload.global_downstream_max_connections` in `layered_runtime`) plus xsidecar's own runtime keys.
 */
export interface Protection {
  /** Undefined: derived from RLIMIT_NOFILE. An explicit value is clamped to that ceiling. */
  readonly maxDownstreamConnections?: number;
  /** envoy.resource_monitors.fixed_heap; undefined: V8's heap limit. */
  readonly maxHeapBytes?: number;
  /** Heap pressure (0..1) at which idle downstream connections are closed. */
  readonly shedIdleAt: number;
  /** Heap pressure (0..1) at which new downstream connections are refused. */
  readonly stopAcceptingAt: number;
  /** First-bytes timeout for chains that sniff (`xsidecar.sniff_timeout_ms`); 0 disables. */
  readonly sniffTimeoutMs: number;
  /** A frame must complete within this of its first byte (`xsidecar.frame_timeout_ms`); 0 disables. */
  readonly frameTimeoutMs: number;
  /** Bytes held in partial frames and unsent responses, all connections together (`xsidecar.buffer_budget_bytes`); undefined: derived from memory. */
  readonly bufferBudgetBytes?: number;
  /** Concurrent upstream dials for silent clients (`xsidecar.max_early_dials`); undefined: derived. */
  readonly maxEarlyDials?: number;
}

export interface Bootstrap {
  readonly node: Node;
  readonly protection: Protection;
  readonly admin?: SocketAddress;
  readonly listeners: readonly Listener[];
  /** From a static UDP listener with the DNS filter; undefined: the proxy's defaults. */
  readonly dns?: DnsProxyConfig;
  readonly clusters: readonly Cluster[];
  readonly dynamicResources?: DynamicResources;
  readonly raw: unknown;
}

export type StringMatchKind = 'exact' | 'prefix' | 'suffix' | 'contains' | 'regex';

export interface StringMatcher {
  readonly kind: StringMatchKind;
  readonly value: string;
  readonly ignoreCase: boolean;
  /** Compiled once for 'regex' (full match, as RE2 in Envoy). */
  readonly regex?: RegExp;
}

/** Envoy's HeaderMatcher; for RPC frames the names are the codec's headers: service, method, version, group, … */
export interface HeaderMatcher {
  readonly name: string;
  /** undefined: present_match (or absent when `present` is false). */
  readonly match?: StringMatcher;
  readonly present: boolean;
  readonly invert: boolean;
}

export interface RouteMatch {
  /** Path matching; an RPC frame's path is /service/method. */
  readonly path?: StringMatcher;
  readonly headers: readonly HeaderMatcher[];
}

export interface RetryPolicy {
  readonly numRetries: number;
  /** Envoy's retry_on conditions: connect-failure, reset, 5xx, gateway-error, retriable-status-codes, and gRPC's (unavailable, …). */
  readonly retryOn: readonly string[];
  /** Each try's own deadline; undefined: the request's deadline covers every try. */
  readonly perTryTimeoutMs?: number;
  /** HTTP codes for retriable-status-codes; RPC statuses are compared through their gRPC and HTTP meaning. */
  readonly retriableStatusCodes: readonly number[];
}

/** envoy.extensions.filters.http.fault.v3.HTTPFault, per route (Istio's VirtualService `fault`). */
export interface FaultInjection {
  readonly delay?: { readonly ms: number; readonly percent: number };
  /** An HTTP or gRPC status, answered with the protocol's nearest native error. */
  readonly abort?: { readonly httpStatus?: number; readonly grpcStatus?: number; readonly percent: number };
}

/** envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, per route: a token bucket. */
export interface LocalRateLimit {
  readonly maxTokens: number;
  readonly tokensPerFill: number;
  readonly fillIntervalMs: number;
  /** filter_enabled / filter_enforced, as percentages. */
  readonly enabledPercent: number;
  readonly enforcedPercent: number;
}

export interface RouteAction {
  readonly cluster?: string;
  readonly weightedClusters: readonly WeightedCluster[];
  /** 0 or undefined: no route-level timeout. */
  readonly timeoutMs?: number;
  readonly retryPolicy?: RetryPolicy;
  readonly fault?: FaultInjection;
  readonly rateLimit?: LocalRateLimit;
  /** The route's name, for metrics of its rate limit and faults. */
  readonly routeName?: string;
}

export interface Route {
  readonly name: string;
  readonly match: RouteMatch;
  /** Undefined for routes we cannot act on (redirects, direct responses): they answer "no route". */
  readonly action?: RouteAction;
}

export interface VirtualHost {
  readonly name: string;
  readonly domains: readonly string[];
  /** Each route's retry policy already includes the virtual host's default. */
  readonly routes: readonly Route[];
}

export interface RouteConfiguration {
  readonly name: string;
  readonly virtualHosts: readonly VirtualHost[];
  readonly ignorePortInHostMatching: boolean;
  readonly raw: unknown;
}

/** The HTTP connection manager: we use its routes for RPC frames sniffed on HTTP-typed ports. */
export interface HttpConnectionManagerConfig extends NetworkFilterConfig {
  readonly kind: 'http_connection_manager';
  readonly statPrefix: string;
  readonly rdsName?: string;
  readonly routeConfig?: RouteConfiguration;
  /** common_http_protocol_options.idle_timeout (Envoy's default: one hour): for RPC and the L4 fallback. */
  readonly idleTimeoutMs: number;
}

/** xsidecar.xprotocol.v1.XProtocolProxy (proto/xsidecar/xprotocol/v1/xprotocol.proto). */
export interface XProtocolConfig extends NetworkFilterConfig {
  readonly kind: 'xprotocol';
  readonly statPrefix: string;
  /** Empty: sniff the codec from the first bytes. */
  readonly protocol?: string;
  readonly rdsName?: string;
  readonly routeConfig?: RouteConfiguration;
  readonly cluster?: string;
  readonly maxFrameBytes: number;
  readonly defaultTimeoutMs: number;
  /** Undefined: the bootstrap's (Protection). */
  readonly sniffTimeoutMs?: number;
  readonly frameTimeoutMs?: number;
  /** A connection with nothing in flight and nothing read for this long is closed; 0 disables. */
  readonly idleTimeoutMs: number;
}
