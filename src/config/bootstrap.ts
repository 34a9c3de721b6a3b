import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { decodeSocketAddress } from './address.js';
import { decodeCluster } from './cluster.js';
import { decodeDnsListener, isUdpListener } from './dns-filter.js';
import { decodeListener } from './listener.js';
import { decodeProtection } from './protection.js';
import type { AdsConfig, Bootstrap, ConfigSource, DnsProxyConfig, DynamicResources, Node } from './model.js';
import { ConfigError, type DecodeContext, newContext, ObjReader } from './reader.js';
import { checkReferences } from './validate.js';


const BOOTSTRAP_IGNORED = [
  'stats_config', 'stats_sinks', 'stats_flush_interval', 'tracing',
  'cluster_manager', 'watchdog', 'watchdogs', 'hds_config', 'flags_path', 'enable_dispatcher_stats',
  'header_prefix', 'stats_server_version_override', 'use_tcp_for_dns_lookups', 'bootstrap_extensions',
  'fatal_actions', 'default_socket_interface', 'inline_headers', 'node_context_params', 'typed_dns_resolver_config',
];

function decodeNode(n: ObjReader | undefined): Node {
  if (!n) return { id: 'xsidecar', cluster: 'xsidecar', metadata: {} };
  const node: Node = {
    id: n.str('id', 'xsidecar'),
    cluster: n.str('cluster', 'xsidecar'),
    metadata: (n.raw('metadata') as Record<string, unknown> | undefined) ?? {},
  };
  n.ignore('locality', 'user_agent_name', 'user_agent_version', 'user_agent_build_version', 'extensions', 'client_features', 'listening_addresses');
  n.done();
  return node;
}

function decodeConfigSource(c: ObjReader | undefined): ConfigSource | undefined {
  if (!c) return undefined;
  if (!c.has('ads')) throw new ConfigError(c.at('ads'), 'only ADS config sources are supported ({ads: {}})');
  const src = { ads: true, initialFetchTimeoutMs: c.durationMs('initial_fetch_timeout') };
  c.ignore('resource_api_version', 'authorities');
  c.done();
  return src;
}

function decodeAdsConfig(a: ObjReader | undefined): AdsConfig | undefined {
  if (!a) return undefined;
  const apiType = a.enumOf('api_type', ['DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE', 'REST', 'GRPC', 'DELTA_GRPC', 'UNUSED', 'AGGREGATED_GRPC', 'AGGREGATED_DELTA_GRPC'] as const, 'GRPC');
  if (apiType === 'REST' || apiType.startsWith('DEPRECATED') || apiType === 'UNUSED') {
    throw new ConfigError(a.at('api_type'), `expected GRPC or DELTA_GRPC, got ${apiType}`);
  }
  const services = a.objList('grpc_services');
  if (services.length === 0) throw new ConfigError(a.at('grpc_services'), 'is required');
  const svc = services[0]!;
  const envoyGrpc = svc.obj('envoy_grpc');
  const googleGrpc = svc.obj('google_grpc');
  const clusterName = envoyGrpc?.requiredStr('cluster_name');
  const targetUri = googleGrpc?.requiredStr('target_uri');
  if (!clusterName && !targetUri) throw new ConfigError(svc.path, 'needs envoy_grpc.cluster_name or google_grpc.target_uri');
  envoyGrpc?.ignore('authority', 'retry_policy', 'max_receive_message_length', 'skip_envoy_headers');
  googleGrpc?.ignore('stat_prefix', 'channel_credentials', 'call_credentials', 'credentials_factory_name', 'config', 'channel_args', 'per_stream_buffer_limit_bytes');
  svc.ignore('timeout', 'initial_metadata', 'retry_policy');
  for (const r of [envoyGrpc, googleGrpc, svc]) r?.done();
  a.ignore('transport_api_version', 'set_node_on_first_message_only', 'rate_limit_settings', 'refresh_delay', 'request_timeout', 'config_validators');
  a.done();
  return { apiType: apiType.includes('DELTA') ? 'DELTA_GRPC' : 'GRPC', clusterName, targetUri };
}

function decodeDynamic(d: ObjReader | undefined): DynamicResources | undefined {
  if (!d) return undefined;
  const dyn = {
    ldsConfig: decodeConfigSource(d.obj('lds_config')),
    cdsConfig: decodeConfigSource(d.obj('cds_config')),
    adsConfig: decodeAdsConfig(d.obj('ads_config')),
  };
  d.ignore('lds_resources_locator', 'cds_resources_locator');
  d.done();
  return dyn;
}

/** Decodes and validates a bootstrap; throws ConfigError naming the first bad field. */
export function decodeBootstrap(value: unknown, ctx: DecodeContext = newContext()): Bootstrap {
  const r = ObjReader.of(value, '', ctx);
  const node = decodeNode(r.obj('node'));
  const adminR = r.obj('admin');
  const admin = adminR?.obj('address') ? decodeSocketAddress(adminR.requiredObj('address')) : undefined;
  adminR?.ignore('access_log', 'access_log_path', 'profile_path', 'socket_options', 'ignore_global_conn_limit');
  adminR?.done();
  const sr = r.obj('static_resources');
  // A UDP listener with the DNS filter configures the DNS proxy; it is not bound as a TCP listener.
  let dns: DnsProxyConfig | undefined;
  const listeners = (sr?.list('listeners') ?? []).flatMap(({ value: v, path }) => {
    if (!isUdpListener(v)) return [decodeListener(v, path, ctx)];
    if (dns) throw new ConfigError(path, `a second DNS listener (the first is "${dns.listenerName}"): the sidecar runs one DNS proxy`);
    dns = decodeDnsListener(v, path, ctx);
    return [];
  });
  const clusters = sr?.list('clusters').map(({ value: v, path }) => decodeCluster(v, path, ctx)) ?? [];
  sr?.ignore('secrets');
  sr?.done();
  const dynamicResources = decodeDynamic(r.obj('dynamic_resources'));
  const protection = decodeProtection(r);
  r.ignore(...BOOTSTRAP_IGNORED);
  r.done();
  const bootstrap: Bootstrap = { node, protection, admin, listeners, dns, clusters, dynamicResources, raw: value };
  checkReferences(bootstrap);
  return bootstrap;
}

/** yaml (some 70 modules) loads when a file is read: the embedded default and generated bootstraps never need it. */
const parseYaml = (text: string): unknown => (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse(text);

/** Control characters other than tab/newline, or bytes that were not UTF-8: not a config file. */
const BINARY = /[\u0000-\u0008\u000e-\u001f\ufffd]/;

/** Printable ASCII only, so an error message never carries the input's bytes to the terminal. */
const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, '?');

export function parseConfigText(text: string, source: string): unknown {
  if (text.trim() === '') throw new ConfigError(source, 'empty file');
  if (BINARY.test(text.slice(0, 64 * 1024))) throw new ConfigError(source, 'not a text file (binary data): expected a YAML or JSON bootstrap');
  let value: unknown;
  try {
    value = parseYaml(text); // YAML 1.2 is a superset of JSON
  } catch (e) {
    throw new ConfigError(source, `not valid YAML or JSON: ${printable((e as Error).message.split('\n')[0]!.slice(0, 200))}`);
  }
  if (value === null || value === undefined) throw new ConfigError(source, 'empty file');
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(source, `expected a bootstrap object, got ${Array.isArray(value) ? 'a list' : `a ${typeof value}`}`);
  }
  return value;
}

export function loadBootstrapFile(file: string, ctx: DecodeContext = newContext()): Bootstrap {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return decodeBootstrap(parseConfigText(text, file), ctx);
}
