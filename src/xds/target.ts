/**
 * Where istiod is and how to reach it, from the bootstrap as Istio writes it for Envoy:
 * `ads_config.grpc_services[0].envoy_grpc.cluster_name` names a static cluster (STATIC or STRICT_DNS /
 * LOGICAL_DNS with an inline load_assignment) that holds the address, plaintext for :15010 or with an
 * UpstreamTlsContext transport_socket (CA, certificate and key files) for :15012; or
 * `google_grpc.target_uri` with `channel_credentials.ssl_credentials`. `--xds-address` replaces the address
 * and keeps the TLS settings.
 */
import { isIP } from 'node:net';
import type { Bootstrap, Cluster } from '../config/model.js';
import { ConfigError, newContext, ObjReader } from '../config/reader.js';

export interface TlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  /** Server name to verify (and send as SNI / :authority); istiod's certificate names istiod.istio-system.svc. */
  readonly serverName?: string;
  /**
   * mTLS with the workload certificate from the CA client and the mesh root, plus the token and ClusterID
   * on the stream (what pilot-agent does for Envoy): the xds-grpc cluster names the SDS secrets `default`
   * / `ROOTCA`, or `--xds-address` points at istiod's secure port 15012.
   */
  readonly workloadIdentity?: boolean;
  /** Filled in by createXdsClient from the server's identity. */
  readonly identity?: XdsIdentity;
}

/** What the xDS channel needs from the workload identity (src/identity implements it). */
export interface XdsIdentity {
  /** Throws while there is no certificate yet. */
  credentials(): { readonly rootPem: string; readonly keyPem: string; readonly chainPem: string };
  /** authorization (Bearer token, re-read each time) and ClusterID. */
  callMetadata(): Readonly<Record<string, string>>;
  /** The name istiod's certificate must carry when the config does not say (ISTIOD_SAN). */
  readonly serverName?: string;
}

/** istiod's secure port: without TLS settings of its own, --xds-address to it means mTLS with the workload identity. */
export const ISTIOD_SECURE_PORT = 15012;

export interface XdsTarget {
  /** A grpc-js target: host:port, dns:host:port or ipv4:a:port,b:port. */
  readonly target: string;
  readonly tls?: TlsFiles;
  /** For logs and errors. */
  readonly source: string;
}

const DATA_SOURCE_FORMS = ['filename', 'inline_string', 'inline_bytes', 'environment_variable'];

function fileOf(ds: ObjReader | undefined): string | undefined {
  if (!ds) return undefined;
  const file = ds.str('filename');
  if (!file) {
    const used = DATA_SOURCE_FORMS.find((f) => ds.has(f));
    throw new ConfigError(ds.path, `only { filename: … } is supported for xDS TLS material${used ? `, got ${used}` : ''}`);
  }
  return file;
}

/** envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, reduced to files we can hand to grpc-js. */
function tlsOfCluster(cluster: Cluster, path: string): TlsFiles | undefined {
  const ctx = newContext();
  const raw = ObjReader.of(cluster.raw, path, ctx);
  const ts = raw.obj('transport_socket');
  if (!ts) return undefined;
  const typed = ts.obj('typed_config');
  const type = String(typed?.value['@type'] ?? ts.value.name ?? '');
  if (!/UpstreamTlsContext$|envoy\.transport_sockets\.tls$/.test(type)) {
    if (/RawBuffer$|raw_buffer$/.test(type)) return undefined;
    throw new ConfigError(ts.at('typed_config'), `the xDS cluster needs plaintext or an UpstreamTlsContext, got ${type || 'nothing'}`);
  }
  if (!typed) throw new ConfigError(ts.at('typed_config'), 'an UpstreamTlsContext is required');
  const common = typed.obj('common_tls_context');
  const sdsNames = [
    ...(common?.objList('tls_certificate_sds_secret_configs') ?? []).map((s) => s.str('name')),
    common?.obj('combined_validation_context')?.obj('validation_context_sds_secret_config')?.str('name'),
    common?.obj('validation_context_sds_secret_config')?.str('name'),
  ].filter((n): n is string => n !== undefined);
  if (sdsNames.length > 0) {
    const other = sdsNames.find((n) => n !== 'default' && n !== 'ROOTCA');
    if (other) throw new ConfigError(common!.path, `SDS secret "${other}" is not supported for the xDS connection; use "default" and "ROOTCA" (the workload identity) or files`);
    return { workloadIdentity: true, serverName: typed.str('sni') };
  }
  const cert = common?.objList('tls_certificates')[0];
  const validation = common?.obj('validation_context') ?? common?.obj('combined_validation_context')?.obj('default_validation_context');
  const tls: TlsFiles = {
    caFile: fileOf(validation?.obj('trusted_ca')),
    certFile: fileOf(cert?.obj('certificate_chain')),
    keyFile: fileOf(cert?.obj('private_key')),
    serverName: typed.str('sni'),
  };
  if (!!tls.certFile !== !!tls.keyFile) throw new ConfigError(cert?.path ?? typed.path, 'certificate_chain and private_key go together');
  return tls;
}

function targetOfCluster(cluster: Cluster, path: string): string {
  if (cluster.type !== 'STATIC' && cluster.type !== 'STRICT_DNS' && cluster.type !== 'LOGICAL_DNS') {
    throw new ConfigError(`${path}.type`, `the xDS cluster must be STATIC, STRICT_DNS or LOGICAL_DNS, got ${cluster.type}`);
  }
  const eps = cluster.loadAssignment?.endpoints ?? [];
  if (eps.length === 0) throw new ConfigError(`${path}.load_assignment`, 'the xDS cluster has no endpoint');
  const v4 = eps.every((e) => isIP(e.address) === 4);
  // grpc-js balances over a static list itself; a DNS name is resolved (and re-resolved) by its resolver.
  if (v4) return `ipv4:${eps.map((e) => `${e.address}:${e.port}`).join(',')}`;
  const first = eps[0]!;
  return isIP(first.address) === 6 ? `ipv6:[${first.address}]:${first.port}` : `dns:${first.address}:${first.port}`;
}

/** google_grpc.channel_credentials.ssl_credentials {root_certs, private_key, cert_chain}. */
function tlsOfGoogleGrpc(bootstrap: Bootstrap): TlsFiles | undefined {
  const ctx = newContext();
  const root = ObjReader.of(bootstrap.raw, '', ctx);
  const g = root.obj('dynamic_resources')?.obj('ads_config')?.objList('grpc_services')[0]?.obj('google_grpc');
  const ssl = g?.obj('channel_credentials')?.obj('ssl_credentials');
  if (!ssl) return undefined;
  return { caFile: fileOf(ssl.obj('root_certs')), certFile: fileOf(ssl.obj('cert_chain')), keyFile: fileOf(ssl.obj('private_key')) };
}

export function resolveXdsTarget(bootstrap: Bootstrap, addressOverride?: string): XdsTarget {
  const ads = bootstrap.dynamicResources?.adsConfig;
  let tls: TlsFiles | undefined;
  let target: string | undefined;
  let source = '';
  if (ads?.clusterName) {
    const i = bootstrap.clusters.findIndex((c) => c.name === ads.clusterName);
    const at = 'dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name';
    if (i < 0) throw new ConfigError(at, `no static cluster named "${ads.clusterName}"`);
    const path = `static_resources.clusters[${i}]`;
    const cluster = bootstrap.clusters[i]!;
    tls = tlsOfCluster(cluster, path);
    target = addressOverride ? undefined : targetOfCluster(cluster, path);
    source = `cluster ${ads.clusterName}`;
  } else if (ads?.targetUri) {
    tls = tlsOfGoogleGrpc(bootstrap);
    target = ads.targetUri;
    source = 'google_grpc.target_uri';
  }
  if (addressOverride) {
    if (!/^(\[[^\]]+\]|[^:/\s]+):\d{1,5}$/.test(addressOverride) && !/^[a-z0-9]+:/.test(addressOverride)) {
      throw new ConfigError('--xds-address', `expected host:port, got "${addressOverride}"`);
    }
    const securePort = !tls && addressOverride.endsWith(`:${ISTIOD_SECURE_PORT}`);
    return { target: addressOverride, tls: securePort ? { workloadIdentity: true } : tls, source: '--xds-address' };
  }
  if (!target) throw new ConfigError('dynamic_resources.ads_config', 'no xDS server: set envoy_grpc.cluster_name or google_grpc.target_uri, or pass --xds-address');
  return { target, tls, source };
}
