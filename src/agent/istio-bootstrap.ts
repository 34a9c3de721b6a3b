/**
 * Istio's bootstrap, built from the pod's environment the way pilot-agent builds Envoy's when no bootstrap
 * file is given: the node (id, PROXY_CONFIG and the downward API's labels in its metadata; the rest of the
 * ISTIO_META_* environment is added by the node identity), admin on 127.0.0.1, and ADS to
 * `discoveryAddress` through a static `xds-grpc` cluster — plaintext on :15010; on :15012 (or with
 * controlPlaneAuthPolicy MUTUAL_TLS) mTLS as Istio writes it for Envoy: the SDS secrets `default` (the
 * workload certificate) and `ROOTCA`, which the identity's CA client fills (with the token and ClusterID on
 * the stream). XSIDECAR_XDS_ROOT_CERT instead pins TLS to files: that root, and a mounted workload
 * certificate when one of Istio's file conventions holds it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ConfigError } from '../config/reader.js';
import type { Env, ProxyConfig } from './proxy-config.js';

/** Workload certificate files Istio's file-mounted credential conventions use (chain, key). */
export const CERT_FILE_PAIRS: readonly (readonly [string, string])[] = [
  ['/var/run/secrets/workload-spiffe-credentials/cert-chain.pem', '/var/run/secrets/workload-spiffe-credentials/key.pem'],
  ['/etc/certs/cert-chain.pem', '/etc/certs/key.pem'],
];
/** The downward API's labels file (the template's istio-podinfo volume). */
export const POD_LABELS_FILE = '/etc/istio/pod/labels';

export interface BootstrapInputs {
  readonly env: Env;
  readonly proxyConfig: ProxyConfig;
  /** `--domain` of `proxy sidecar`: $(POD_NAMESPACE).svc.cluster.local. */
  readonly domain?: string;
  /** For tests: whether a file exists, and its text. */
  readonly exists?: (file: string) => boolean;
  readonly read?: (file: string) => string;
}

export interface XdsSecurity {
  readonly tls: boolean;
  /** TLS from the workload identity (SDS `default` / `ROOTCA`), else from the files below. */
  readonly workloadIdentity?: boolean;
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly serverName?: string;
}

/** The downward API's `key="value"` lines. */
export function parseDownwardLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i <= 0) continue;
    const v = line.slice(i + 1).trim();
    out[line.slice(0, i).trim()] = v.startsWith('"') ? (JSON.parse(v) as string) : v;
  }
  return out;
}

export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}

/** How the xDS connection is secured: the port decides (15012 TLS, 15010 plaintext), else the auth policy. */
export function xdsSecurity({ env, proxyConfig, exists = existsSync }: BootstrapInputs): XdsSecurity {
  const { host, port } = splitHostPort(proxyConfig.discoveryAddress);
  const tls = port === 15012 || (port !== 15010 && proxyConfig.controlPlaneAuthPolicy === 'MUTUAL_TLS');
  if (!tls) return { tls };
  const serverName = env.ISTIOD_SAN || host;
  const root = env.XSIDECAR_XDS_ROOT_CERT;
  if (!root) return { tls, workloadIdentity: true, serverName };
  if (!exists(root)) throw new ConfigError('XSIDECAR_XDS_ROOT_CERT', `${root} does not exist`);
  const pair = CERT_FILE_PAIRS.find(([c, k]) => exists(c) && exists(k));
  return { tls, caFile: root, certFile: pair?.[0], keyFile: pair?.[1], serverName };
}

/** The Envoy-v3-shaped bootstrap object (decoded and validated by config/ like any file). */
export function istioBootstrap(inputs: BootstrapInputs): object {
  const { env, proxyConfig } = inputs;
  const missing = ['POD_NAME', 'POD_NAMESPACE', 'INSTANCE_IP'].filter((k) => !env[k]);
  if (missing.length > 0) throw new ConfigError('env', `${missing.join(', ')} not set: Istio's injection template sets them from the downward API`);
  const ns = env.POD_NAMESPACE!;
  const domain = inputs.domain || `${ns}.svc.cluster.local`;
  const exists = inputs.exists ?? existsSync;
  const read = inputs.read ?? ((f: string) => readFileSync(f, 'utf8'));

  const metadata: Record<string, unknown> = { PROXY_CONFIG: proxyConfig.raw };
  if (env.ISTIO_META_LABELS === undefined && env.ISTIO_METAJSON_LABELS === undefined && exists(POD_LABELS_FILE)) {
    metadata.LABELS = parseDownwardLabels(read(POD_LABELS_FILE));
  }
  const sec = xdsSecurity(inputs);
  const { host, port } = splitHostPort(proxyConfig.discoveryAddress);
  const tlsSocket = sec.tls
    ? {
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
            sni: sec.serverName,
            common_tls_context: sec.workloadIdentity
              ? {
                  tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { api_config_source: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'sds-grpc' } }], transport_api_version: 'V3' }, resource_api_version: 'V3' } }],
                  combined_validation_context: {
                    default_validation_context: { match_subject_alt_names: [{ exact: sec.serverName }] },
                    validation_context_sds_secret_config: { name: 'ROOTCA', sds_config: { api_config_source: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'sds-grpc' } }], transport_api_version: 'V3' }, resource_api_version: 'V3' } },
                  },
                }
              : {
                  ...(sec.certFile ? { tls_certificates: [{ certificate_chain: { filename: sec.certFile }, private_key: { filename: sec.keyFile } }] } : {}),
                  validation_context: { trusted_ca: { filename: sec.caFile } },
                },
          },
        },
      }
    : {};
  const source = { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' };
  return {
    node: { id: `sidecar~${env.INSTANCE_IP}~${env.POD_NAME}.${ns}~${domain}`, metadata },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: proxyConfig.adminPort } } },
    dynamic_resources: {
      lds_config: source,
      cds_config: source,
      ads_config: {
        api_type: env.ISTIO_DELTA_XDS === 'true' ? 'DELTA_GRPC' : 'GRPC',
        transport_api_version: 'V3',
        grpc_services: [{ envoy_grpc: { cluster_name: 'xds-grpc' } }],
      },
    },
    static_resources: {
      clusters: [
        {
          name: 'xds-grpc',
          type: isIP(host) ? 'STATIC' : 'STRICT_DNS',
          connect_timeout: '1s',
          lb_policy: 'ROUND_ROBIN',
          load_assignment: { cluster_name: 'xds-grpc', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: host, port_value: port } } } }] }] },
          ...tlsSocket,
        },
      ],
    },
  };
}
