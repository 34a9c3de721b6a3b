/**
 * The one config model: Envoy v3 resources decoded into plain, typed, read-only objects. Static bootstrap
 * and xDS both produce these; everything downstream reads only these.
 */

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
  /** The resource as it came, for /config_dump. */
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
}

export interface ClusterLoadAssignment {
  readonly clusterName: string;
  readonly endpoints: readonly Endpoint[];
  readonly raw: unknown;
}

export interface Cluster {
  readonly name: string;
  readonly type: ClusterType;
  readonly connectTimeoutMs: number;
  readonly lbPolicy: LbPolicy;
  /** STATIC/DNS clusters carry their endpoints inline; EDS clusters get them from a ClusterLoadAssignment. */
  readonly loadAssignment?: ClusterLoadAssignment;
  readonly edsServiceName?: string;
  readonly upstreamBindAddress?: string;
  readonly raw: unknown;
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

export interface Bootstrap {
  readonly node: Node;
  readonly admin?: SocketAddress;
  readonly listeners: readonly Listener[];
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
  readonly retryOn: readonly string[];
}

export interface RouteAction {
  readonly cluster?: string;
  readonly weightedClusters: readonly WeightedCluster[];
  /** 0 or undefined: no route-level timeout. */
  readonly timeoutMs?: number;
  readonly retryPolicy?: RetryPolicy;
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
}
