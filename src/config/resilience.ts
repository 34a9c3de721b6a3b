/**
 * Decoders for what keeps traffic alive when parts fail: a cluster's circuit breakers, outlier detection
 * and active health checks, and a route's retry policy, fault injection and local rate limit. Envoy's
 * fields and defaults, so Istio's DestinationRule and VirtualService arrive unchanged.
 */
import type { CircuitBreakers, FaultInjection, HealthCheck, LocalRateLimit, OutlierDetection, RetryPolicy } from './model.js';
import { ConfigError, ObjReader } from './reader.js';

const U32 = 2 ** 32 - 1;

/**
 * Envoy's defaults when a cluster sets no thresholds, but for max_retries: Envoy's 3 is a limit istiod
 * always lifts (to 2^32-1), and with it a provider killed under load fails most of its in-flight calls
 * instead of retrying them (measured in the soak: 71 lost calls with 3, none with more).
 */
const DEFAULT_BREAKERS: CircuitBreakers = { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 1024 };

export function decodeCircuitBreakers(r: ObjReader | undefined): CircuitBreakers {
  if (!r) return DEFAULT_BREAKERS;
  const all = r.objList('thresholds');
  r.ignore('per_host_thresholds');
  r.done();
  // Only the default priority's thresholds apply: xsidecar routes no traffic at high priority.
  const t = all.find((x) => x.enumOf('priority', ['DEFAULT', 'HIGH'] as const, 'DEFAULT') === 'DEFAULT');
  for (const other of all) if (other !== t) other.ignore('priority', 'max_connections', 'max_pending_requests', 'max_requests', 'max_retries', 'retry_budget', 'track_remaining', 'max_connection_pools');
  if (!t) return DEFAULT_BREAKERS;
  const budget = t.obj('retry_budget');
  const breakers: CircuitBreakers = {
    maxConnections: t.int('max_connections', 0, U32) ?? DEFAULT_BREAKERS.maxConnections,
    maxPendingRequests: t.int('max_pending_requests', 0, U32) ?? DEFAULT_BREAKERS.maxPendingRequests,
    maxRequests: t.int('max_requests', 0, U32) ?? DEFAULT_BREAKERS.maxRequests,
    maxRetries: t.int('max_retries', 0, U32) ?? DEFAULT_BREAKERS.maxRetries,
    retryBudget: budget ? { percent: percentOf(budget, 'budget_percent', 20), minRetryConcurrency: budget.int('min_retry_concurrency', 0, U32) ?? 3 } : undefined,
  };
  budget?.done();
  t.ignore('track_remaining', 'max_connection_pools');
  t.done();
  return breakers;
}

/** envoy.type.v3.Percent ({value: 12.5}) or a bare number. */
function percentOf(r: ObjReader, name: string, fallback: number): number {
  const v = r.raw(name);
  if (v === undefined || v === null) return fallback;
  const n = typeof v === 'object' && v !== null && 'value' in v ? Number((v as { value: unknown }).value) : Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 100) throw new ConfigError(r.at(name), `expected a percentage 0..100, got ${JSON.stringify(v)}`);
  return n;
}

export function decodeOutlierDetection(r: ObjReader | undefined): OutlierDetection | undefined {
  if (!r) return undefined;
  const od: OutlierDetection = {
    consecutive5xx: r.int('consecutive_5xx', 0, U32) ?? 5,
    consecutiveGatewayFailure: r.int('consecutive_gateway_failure', 0, U32) ?? 5,
    consecutiveLocalOriginFailure: r.int('consecutive_local_origin_failure', 0, U32) ?? 5,
    enforcing5xx: r.int('enforcing_consecutive_5xx', 0, 100) ?? 100,
    enforcingGatewayFailure: r.int('enforcing_consecutive_gateway_failure', 0, 100) ?? 0,
    enforcingLocalOrigin: r.int('enforcing_consecutive_local_origin_failure', 0, 100) ?? 100,
    splitExternalLocalOriginErrors: r.bool('split_external_local_origin_errors'),
    intervalMs: r.durationMs('interval') ?? 10_000,
    baseEjectionTimeMs: r.durationMs('base_ejection_time') ?? 30_000,
    maxEjectionTimeMs: r.durationMs('max_ejection_time') ?? 300_000,
    maxEjectionPercent: r.int('max_ejection_percent', 0, 100) ?? 10,
  };
  if (od.intervalMs <= 0) throw new ConfigError(r.at('interval'), 'must be positive');
  r.ignore(
    'success_rate_minimum_hosts', 'success_rate_request_volume', 'success_rate_stdev_factor', 'enforcing_success_rate',
    'failure_percentage_threshold', 'enforcing_failure_percentage', 'enforcing_failure_percentage_local_origin',
    'failure_percentage_minimum_hosts', 'failure_percentage_request_volume', 'max_ejection_time_jitter',
    'successful_active_health_check_uneject_host', 'monitors', 'always_eject_one_host', 'detect_degraded_hosts',
  );
  r.done();
  return od;
}

export const RPC_HEARTBEAT_CHECKER = 'xsidecar.health_checkers.rpc_heartbeat';

export function decodeHealthChecks(list: ObjReader[], knownProtocols: readonly string[]): HealthCheck[] {
  return list.map((h) => {
    const timeoutMs = h.durationMs('timeout');
    const intervalMs = h.durationMs('interval');
    if (!timeoutMs) throw new ConfigError(h.at('timeout'), 'is required');
    if (!intervalMs) throw new ConfigError(h.at('interval'), 'is required');
    let protocol: string | undefined;
    const custom = h.obj('custom_health_check');
    if (custom) {
      const name = custom.requiredStr('name');
      if (name !== RPC_HEARTBEAT_CHECKER) throw new ConfigError(custom.at('name'), `unknown health checker "${name}" (known: ${RPC_HEARTBEAT_CHECKER})`);
      const cfg = custom.obj('typed_config');
      protocol = cfg?.requiredStr('protocol');
      cfg?.done();
      if (!protocol || !knownProtocols.includes(protocol)) throw new ConfigError(custom.at('typed_config.protocol'), `expected one of ${knownProtocols.join(', ')}`);
      custom.done();
    } else if (!h.has('tcp_health_check')) {
      throw new ConfigError(h.path, 'only tcp_health_check and the custom rpc_heartbeat checker are supported');
    }
    h.ignore('tcp_health_check', 'initial_jitter', 'interval_jitter', 'interval_jitter_percent', 'reuse_connection', 'no_traffic_interval', 'no_traffic_healthy_interval', 'unhealthy_interval', 'unhealthy_edge_interval', 'healthy_edge_interval', 'event_log_path', 'always_log_health_check_failures', 'transport_socket_match_criteria', 'alt_port', 'event_logger', 'always_log_health_check_success');
    const check: HealthCheck = {
      timeoutMs,
      intervalMs,
      unhealthyThreshold: h.int('unhealthy_threshold', 1, U32) ?? 1,
      healthyThreshold: h.int('healthy_threshold', 1, U32) ?? 1,
      protocol,
    };
    h.done();
    return check;
  });
}

export function decodeRetryPolicy(r: ObjReader | undefined): RetryPolicy | undefined {
  if (!r) return undefined;
  const policy: RetryPolicy = {
    numRetries: r.int('num_retries', 0, U32) ?? 1,
    retryOn: r.str('retry_on', '').split(',').map((s) => s.trim()).filter(Boolean),
    perTryTimeoutMs: r.durationMs('per_try_timeout') || undefined,
    retriableStatusCodes: r.list('retriable_status_codes').map(({ value, path }) => {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 100 || n > 599) throw new ConfigError(path, `expected an HTTP status code, got ${JSON.stringify(value)}`);
      return n;
    }),
  };
  // Another host on each retry is what xsidecar always does (Envoy's previous_hosts predicate).
  r.ignore('retry_host_predicate', 'host_selection_retry_max_attempts', 'retriable_headers', 'retry_back_off', 'retry_priority', 'rate_limited_retry_back_off', 'retriable_request_headers', 'per_try_idle_timeout', 'retry_options_predicates');
  r.done();
  return policy;
}

/** envoy.type.v3.FractionalPercent as a percentage; Istio writes numerator only (per hundred). */
function fraction(r: ObjReader | undefined, fallback: number): number {
  if (!r) return fallback;
  const numerator = r.int('numerator', 0, U32) ?? 0;
  const per = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 }[r.enumOf('denominator', ['HUNDRED', 'TEN_THOUSAND', 'MILLION'] as const, 'HUNDRED')];
  r.done();
  return Math.min(100, (numerator / per) * 100);
}

const FAULT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
const RATE_LIMIT_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';

/** A route's `typed_per_filter_config` entry of type `typeUrl`, unwrapped from FilterConfig when Istio wraps it. */
function perFilter(r: ObjReader, typeUrl: string): ObjReader | undefined {
  const all = r.obj('typed_per_filter_config');
  if (!all) return undefined;
  for (const name of Object.keys(all.value)) {
    const entry = all.obj(name)!;
    const inner = entry.value['@type'] === 'type.googleapis.com/envoy.config.route.v3.FilterConfig' ? entry.obj('config') : entry;
    if (inner?.value['@type'] === typeUrl) return inner;
  }
  return undefined;
}

export function decodeFault(route: ObjReader): FaultInjection | undefined {
  const f = perFilter(route, FAULT_TYPE);
  if (!f) return undefined;
  const d = f.obj('delay');
  const a = f.obj('abort');
  const fault: FaultInjection = {
    delay: d ? { ms: d.durationMs('fixed_delay') ?? 0, percent: fraction(d.obj('percentage'), 100) } : undefined,
    abort: a ? { httpStatus: a.int('http_status', 200, 599), grpcStatus: a.int('grpc_status', 0, 16), percent: fraction(a.obj('percentage'), 100) } : undefined,
  };
  if (a && fault.abort!.httpStatus === undefined && fault.abort!.grpcStatus === undefined) throw new ConfigError(a.path, 'an abort needs http_status or grpc_status');
  d?.ignore('header_delay');
  d?.done();
  a?.ignore('header_abort');
  a?.done();
  f.ignore('upstream_cluster', 'headers', 'downstream_nodes', 'max_active_faults', 'response_rate_limit', 'delay_percent_runtime', 'abort_percent_runtime', 'delay_duration_runtime', 'abort_http_status_runtime', 'max_active_faults_runtime', 'response_rate_limit_percent_runtime', 'abort_grpc_status_runtime', 'disable_downstream_cluster_stats', 'filter_metadata');
  f.done();
  return fault;
}

export function decodeLocalRateLimit(route: ObjReader): LocalRateLimit | undefined {
  const l = perFilter(route, RATE_LIMIT_TYPE);
  if (!l) return undefined;
  const bucket = l.requiredObj('token_bucket');
  const maxTokens = bucket.int('max_tokens', 1, U32);
  if (maxTokens === undefined) throw new ConfigError(bucket.at('max_tokens'), 'is required');
  const fillIntervalMs = bucket.durationMs('fill_interval');
  if (!fillIntervalMs || fillIntervalMs <= 0) throw new ConfigError(bucket.at('fill_interval'), 'must be a positive duration');
  const limit: LocalRateLimit = {
    maxTokens,
    tokensPerFill: bucket.int('tokens_per_fill', 1, U32) ?? 1,
    fillIntervalMs,
    // As in Envoy: without filter_enabled the limiter is off; without filter_enforced it only counts.
    enabledPercent: fraction(l.obj('filter_enabled')?.obj('default_value'), 0),
    enforcedPercent: fraction(l.obj('filter_enforced')?.obj('default_value'), 0),
  };
  bucket.done();
  if (limit.enabledPercent === 0) route.ctx.warnings.push(`${l.path}: filter_enabled is not set, so the rate limit is off (as in Envoy)`);
  l.ignore('stat_prefix', 'status', 'filter_enabled', 'filter_enforced', 'request_headers_to_add_when_not_enforced', 'response_headers_to_add', 'descriptors', 'stage', 'local_rate_limit_per_downstream_connection', 'enable_x_ratelimit_headers', 'vh_rate_limits', 'always_consume_default_token_bucket', 'rate_limited_as_resource_exhausted', 'local_cluster_rate_limit');
  l.done();
  return limit;
}
