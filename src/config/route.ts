import type { HeaderMatcher, Route, RouteAction, RouteConfiguration, StringMatcher, VirtualHost } from './model.js';
import { ConfigError, type DecodeContext, ObjReader } from './reader.js';
import { decodeFault, decodeLocalRateLimit, decodeRetryPolicy } from './resilience.js';

/** Envoy regexes are RE2 and must match the whole input. */
function compileRegex(at: string, pattern: string, ignoreCase = false): RegExp {
  try {
    return new RegExp(`^(?:${pattern})$`, ignoreCase ? 'i' : '');
  } catch (e) {
    throw new ConfigError(at, `invalid regex: ${(e as Error).message}`);
  }
}

function regexOf(r: ObjReader, name: string): { value: string; regex: RegExp } | undefined {
  const rx = r.obj(name);
  if (!rx) return undefined;
  const value = rx.requiredStr('regex');
  rx.ignore('google_re2');
  rx.done();
  return { value, regex: compileRegex(rx.at('regex'), value) };
}

/** envoy.type.matcher.v3.StringMatcher. */
export function decodeStringMatcher(r: ObjReader): StringMatcher {
  const ignoreCase = r.bool('ignore_case');
  for (const kind of ['exact', 'prefix', 'suffix', 'contains'] as const) {
    const v = r.raw(kind);
    if (typeof v === 'string') {
      r.done();
      return { kind, value: v, ignoreCase };
    }
  }
  const rx = regexOf(r, 'safe_regex');
  r.done();
  if (!rx) throw new ConfigError(r.path, 'a string matcher needs exact, prefix, suffix, contains or safe_regex');
  return { kind: 'regex', value: rx.value, ignoreCase, regex: ignoreCase ? new RegExp(rx.regex.source, 'i') : rx.regex };
}

function decodeHeaderMatcher(h: ObjReader): HeaderMatcher {
  const name = h.requiredStr('name');
  const invert = h.bool('invert_match');
  const ignoreCase = false;
  let match: StringMatcher | undefined;
  for (const [field, kind] of [['exact_match', 'exact'], ['prefix_match', 'prefix'], ['suffix_match', 'suffix'], ['contains_match', 'contains']] as const) {
    const v = h.str(field);
    if (v !== undefined) match = { kind, value: v, ignoreCase };
  }
  const rx = regexOf(h, 'safe_regex_match');
  if (rx) match = { kind: 'regex', value: rx.value, ignoreCase, regex: rx.regex };
  const sm = h.obj('string_match');
  if (sm) match = decodeStringMatcher(sm);
  if (h.has('range_match')) throw new ConfigError(h.at('range_match'), 'range_match is not supported');
  const present = h.has('present_match') ? h.bool('present_match') : true;
  h.ignore('treat_missing_header_as_empty');
  h.done();
  return { name, match, present, invert };
}

function decodeRouteAction(a: ObjReader): RouteAction {
  const cluster = a.str('cluster');
  const wc = a.obj('weighted_clusters');
  const weightedClusters = (wc?.objList('clusters') ?? []).map((c) => {
    const w = { name: c.requiredStr('name'), weight: c.int('weight', 0, 2 ** 32 - 1) ?? 0 };
    c.ignore('metadata_match', 'request_headers_to_add', 'request_headers_to_remove', 'response_headers_to_add', 'response_headers_to_remove', 'typed_per_filter_config', 'host_rewrite_literal', 'cluster_header');
    c.done();
    return w;
  });
  wc?.ignore('total_weight', 'runtime_key_prefix', 'header_name', 'random_value_specifier');
  wc?.done();
  if (!cluster && weightedClusters.length === 0) {
    if (a.has('cluster_header') || a.has('cluster_specifier_plugin')) throw new ConfigError(a.at('cluster_header'), 'cluster_header and cluster specifier plugins are not supported');
    throw new ConfigError(a.at('cluster'), 'a route needs cluster or weighted_clusters');
  }
  const action = { cluster, weightedClusters, timeoutMs: a.durationMs('timeout'), retryPolicy: decodeRetryPolicy(a.obj('retry_policy')) };
  a.ignore(
    'max_grpc_timeout', 'grpc_timeout_offset', 'max_stream_duration', 'idle_timeout', 'hash_policy', 'prefix_rewrite', 'regex_rewrite',
    'host_rewrite_literal', 'auto_host_rewrite', 'cors', 'request_mirror_policies', 'priority', 'rate_limits', 'include_vh_rate_limits',
    'upgrade_configs', 'internal_redirect_policy', 'metadata_match', 'cluster_not_found_response_code', 'append_x_forwarded_host',
  );
  a.done();
  return action;
}

function decodeRoute(r: ObjReader, index: number): Route {
  const m = r.requiredObj('match');
  let path: StringMatcher | undefined;
  const prefix = m.raw('prefix');
  if (typeof prefix === 'string') path = { kind: 'prefix', value: prefix, ignoreCase: false };
  const exact = m.str('path');
  if (exact !== undefined) path = { kind: 'exact', value: exact, ignoreCase: false };
  const rx = regexOf(m, 'safe_regex');
  if (rx) path = { kind: 'regex', value: rx.value, ignoreCase: false, regex: rx.regex };
  const psp = m.str('path_separated_prefix');
  if (psp !== undefined) path = { kind: 'prefix', value: psp, ignoreCase: false };
  if (m.raw('case_sensitive') === false && path) path = { ...path, ignoreCase: true };
  const headers = m.objList('headers').map(decodeHeaderMatcher);
  m.ignore('case_sensitive', 'query_parameters', 'grpc', 'runtime_fraction', 'tls_context', 'dynamic_metadata');
  m.done();
  const ra = r.obj('route');
  const fault = decodeFault(r);
  const rateLimit = decodeLocalRateLimit(r);
  const name = r.str('name', `route-${index}`); // read before done(), or every named route warns "unknown field"
  const action = ra ? { ...decodeRouteAction(ra), fault, rateLimit, routeName: name } : undefined;
  if (!ra) r.ctx.warnings.push(`${r.path}: only route actions are implemented; redirects and direct responses answer "no route"`);
  r.ignore('direct_response', 'redirect', 'filter_action', 'non_forwarding_action', 'decorator', 'metadata', 'typed_per_filter_config', 'request_headers_to_add', 'request_headers_to_remove', 'response_headers_to_add', 'response_headers_to_remove', 'tracing', 'per_request_buffer_limit_bytes', 'stat_prefix');
  r.done();
  return { name, match: { path, headers }, action };
}

function decodeVirtualHost(v: ObjReader): VirtualHost {
  const domains = v.list('domains').map(({ value, path }) => {
    if (typeof value !== 'string' || value === '') throw new ConfigError(path, 'expected a domain');
    if (value.indexOf('*') > 0 && value.indexOf('*') < value.length - 1) throw new ConfigError(path, `wildcard must lead or trail: "${value}"`);
    return value.toLowerCase();
  });
  if (domains.length === 0) throw new ConfigError(v.at('domains'), 'at least one domain is required');
  const retryPolicy = decodeRetryPolicy(v.obj('retry_policy'));
  // A route's own retry policy wins over its virtual host's (Envoy); folding it here keeps routing lean.
  const routes = v.objList('routes').map(decodeRoute).map((r) =>
    r.action && !r.action.retryPolicy && retryPolicy ? { ...r, action: { ...r.action, retryPolicy } } : r,
  );
  const vh = { name: v.requiredStr('name'), domains, routes };
  v.ignore('include_request_attempt_count', 'include_attempt_count_in_response', 'require_tls', 'virtual_clusters', 'rate_limits', 'request_headers_to_add', 'request_headers_to_remove', 'response_headers_to_add', 'response_headers_to_remove', 'cors', 'typed_per_filter_config', 'hedge_policy', 'per_request_buffer_limit_bytes', 'metadata', 'matcher', 'request_mirror_policies');
  v.done();
  return vh;
}

export function decodeRouteConfiguration(value: unknown, path: string, ctx: DecodeContext): RouteConfiguration {
  const r = ObjReader.of(value, path, ctx);
  const virtualHosts = r.objList('virtual_hosts').map(decodeVirtualHost);
  const seen = new Map<string, string>();
  for (const vh of virtualHosts) {
    for (const d of vh.domains) {
      if (seen.has(d)) throw new ConfigError(r.at('virtual_hosts'), `domain "${d}" appears in virtual hosts ${seen.get(d)} and ${vh.name}`);
      seen.set(d, vh.name);
    }
  }
  const rc = { name: r.str('name', ''), virtualHosts, ignorePortInHostMatching: r.bool('ignore_port_in_host_matching'), raw: value };
  r.ignore('validate_clusters', 'request_headers_to_add', 'request_headers_to_remove', 'response_headers_to_add', 'response_headers_to_remove', 'internal_only_headers', 'max_direct_response_body_size_bytes', 'most_specific_header_mutations_wins', 'vhds', 'cluster_specifier_plugins', 'request_mirror_policies', 'typed_per_filter_config', 'metadata');
  r.done();
  return rc;
}
