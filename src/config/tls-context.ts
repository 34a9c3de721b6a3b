/**
 * Envoy's TLS transport sockets as Istio pushes them for mesh mTLS (ISTIO_MUTUAL): an UpstreamTlsContext
 * in a cluster's `transport_socket_matches` (`tlsMode-istio`) and a DownstreamTlsContext on the inbound
 * `transport_protocol: tls` chains. Their secrets are SDS names, `default` (the workload certificate) and
 * `ROOTCA` (the mesh root), which xsidecar resolves itself from its CA client: no SDS server is needed.
 */
import type { StringMatcher } from './model.js';
import { ConfigError, type DecodeContext, ObjReader } from './reader.js';
import { decodeStringMatcher } from './route.js';

export type TlsVersion = 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';

interface CommonTls {
  /** The SDS secret holding the certificate and key (Istio: `default`). */
  readonly certificateSecret?: string;
  /** The SDS secret holding the trusted roots (Istio: `ROOTCA`). */
  readonly validationSecret?: string;
  /** The peer's certificate must carry a SAN matching one of these (none: any peer the roots accept). */
  readonly matchSans: readonly StringMatcher[];
  readonly alpn: readonly string[];
  readonly minVersion: TlsVersion;
  readonly maxVersion: TlsVersion;
}

export interface UpstreamTls extends CommonTls {
  readonly sni?: string;
}

export interface DownstreamTls extends CommonTls {
  readonly requireClientCertificate: boolean;
}

/** One `transport_socket_matches` entry: endpoints whose `envoy.transport_socket_match` metadata has every `match` key get `tls` (undefined: plaintext). */
export interface TransportSocketMatch {
  readonly name: string;
  readonly match: Readonly<Record<string, string>>;
  readonly tls?: UpstreamTls;
  /** Set when the socket is TLS we cannot originate (files, other SDS names): such connections fail closed. */
  readonly unsupported?: string;
}

const VERSIONS = ['TLS_AUTO', 'TLSv1_0', 'TLSv1_1', 'TLSv1_2', 'TLSv1_3'] as const;
const NODE_VERSION: Record<(typeof VERSIONS)[number], TlsVersion | undefined> = {
  TLS_AUTO: undefined, TLSv1_0: 'TLSv1', TLSv1_1: 'TLSv1.1', TLSv1_2: 'TLSv1.2', TLSv1_3: 'TLSv1.3',
};

/** A TlsParameters version by its enum number, as decodeCommon reads it; undefined for a number it refuses. */
export function tlsVersionAt(n: number, fallback: TlsVersion): TlsVersion | undefined {
  const name = VERSIONS[n];
  return name === undefined ? undefined : (NODE_VERSION[name] ?? fallback);
}

const TLS_TYPE = /(Upstream|Downstream)TlsContext$|^envoy\.transport_sockets\.tls$/;
const RAW_TYPE = /RawBuffer$|^envoy\.transport_sockets\.raw_buffer$/;

function decodeCommon(c: ObjReader | undefined, isServer: boolean): CommonTls {
  const params = c?.obj('tls_params');
  // Envoy's defaults: TLS 1.2 minimum; maximum 1.2 as a client, 1.3 as a server.
  const min = NODE_VERSION[params?.enumOf('tls_minimum_protocol_version', VERSIONS, 'TLS_AUTO') ?? 'TLS_AUTO'] ?? 'TLSv1.2';
  const max = NODE_VERSION[params?.enumOf('tls_maximum_protocol_version', VERSIONS, 'TLS_AUTO') ?? 'TLS_AUTO'] ?? (isServer ? 'TLSv1.3' : 'TLSv1.2');
  params?.ignore('cipher_suites', 'ecdh_curves', 'signature_algorithms', 'compliance_policies');
  params?.done();
  if (c?.has('tls_certificates')) throw new ConfigError(c.at('tls_certificates'), 'inline or file certificates are not supported for mesh TLS; use the SDS secret "default"');
  const certs = c?.objList('tls_certificate_sds_secret_configs') ?? [];
  if (certs.length > 1) throw new ConfigError(c!.at('tls_certificate_sds_secret_configs'), 'one certificate secret is supported');
  const certificateSecret = certs[0]?.requiredStr('name');
  certs[0]?.ignore('sds_config');
  const combined = c?.obj('combined_validation_context');
  const plain = c?.obj('validation_context');
  const dvc = combined?.obj('default_validation_context') ?? plain;
  const vsds = combined?.obj('validation_context_sds_secret_config') ?? c?.obj('validation_context_sds_secret_config');
  vsds?.ignore('sds_config');
  if (dvc?.has('trusted_ca')) throw new ConfigError(dvc.at('trusted_ca'), 'trusted_ca files are not supported for mesh TLS; use the SDS secret "ROOTCA"');
  const matchSans = dvc?.objList('match_subject_alt_names').map(decodeStringMatcher) ?? [];
  dvc?.ignore('match_typed_subject_alt_names', 'crl', 'allow_expired_certificate', 'trust_chain_verification', 'verify_certificate_spki', 'verify_certificate_hash');
  const alpn = (c?.list('alpn_protocols') ?? []).map(({ value, path }) => {
    if (typeof value !== 'string') throw new ConfigError(path, 'expected a string');
    return value;
  });
  c?.ignore('tls_certificate_provider_instance', 'validation_context_certificate_provider_instance', 'key_log', 'custom_handshaker');
  return { certificateSecret, validationSecret: vsds?.str('name'), matchSans, alpn, minVersion: min, maxVersion: max };
}

/** The typed_config of a transport socket, or undefined for raw_buffer (and for none). */
function tlsTyped(ts: ObjReader | undefined, want: 'Upstream' | 'Downstream'): ObjReader | undefined {
  if (!ts) return undefined;
  const typed = ts.obj('typed_config');
  const type = String(typed?.value['@type'] ?? ts.value.name ?? '');
  ts.ignore('name');
  if (RAW_TYPE.test(type) || type === '') return undefined;
  if (!TLS_TYPE.test(type) || (type.endsWith('TlsContext') && !type.endsWith(`${want}TlsContext`))) {
    throw new ConfigError(ts.at('typed_config'), `expected a ${want}TlsContext or RawBuffer transport socket, got ${type}`);
  }
  if (!typed) throw new ConfigError(ts.at('typed_config'), `a ${want}TlsContext is required`);
  return typed;
}

export function decodeUpstreamTls(ts: ObjReader | undefined): UpstreamTls | undefined {
  const typed = tlsTyped(ts, 'Upstream');
  if (!typed) return undefined;
  const common = decodeCommon(typed.obj('common_tls_context'), false);
  const tls = { ...common, sni: typed.str('sni') };
  typed.ignore('allow_renegotiation', 'max_session_keys', 'enforce_rsa_key_usage');
  return tls;
}

export function decodeDownstreamTls(ts: ObjReader | undefined): DownstreamTls | undefined {
  const typed = tlsTyped(ts, 'Downstream');
  if (!typed) return undefined;
  const common = decodeCommon(typed.obj('common_tls_context'), true);
  const tls = { ...common, requireClientCertificate: typed.bool('require_client_certificate') };
  typed.ignore('require_sni', 'session_ticket_keys', 'session_ticket_keys_sds_secret_config', 'disable_stateless_session_resumption', 'session_timeout', 'ocsp_staple_policy', 'full_scan_certs_on_sni_mismatch');
  return tls;
}

/** A cluster's `transport_socket_matches`. */
export function decodeTransportSocketMatches(r: ObjReader): TransportSocketMatch[] {
  return r.objList('transport_socket_matches').map((m, i) => {
    const name = m.str('name', `match-${i}`);
    const match: Record<string, string> = {};
    const mo = m.obj('match');
    for (const [k, v] of Object.entries(mo?.value ?? {})) match[k] = typeof v === 'string' ? v : JSON.stringify(v);
    const decoded = upstreamSocket(m.obj('transport_socket'), m.ctx);
    return { name, match, ...decoded };
  });
}

/** A cluster's own `transport_socket` (the fallback when no match entry applies). */
export function decodeClusterTransportSocket(r: ObjReader): Pick<TransportSocketMatch, 'tls' | 'unsupported'> | undefined {
  const ts = r.obj('transport_socket');
  return ts ? upstreamSocket(ts, r.ctx) : undefined;
}

function upstreamSocket(ts: ObjReader | undefined, ctx: DecodeContext): Pick<TransportSocketMatch, 'tls' | 'unsupported'> {
  try {
    return { tls: decodeUpstreamTls(ts) };
  } catch (e) {
    // A DestinationRule's own TLS (SIMPLE/MUTUAL with files) must not fail the whole push: connections
    // using it fail closed instead, and the reason is logged.
    if (!(e instanceof ConfigError)) throw e;
    ctx.warnings.push(`${e.message}; connections that need this transport socket will fail`);
    return { unsupported: e.message };
  }
}

/** Envoy's rule: the first entry whose `match` keys all equal the endpoint's metadata; {} matches any. */
export function selectTransportSocket(
  matches: readonly TransportSocketMatch[],
  fallback: Pick<TransportSocketMatch, 'tls' | 'unsupported'> | undefined,
  metadata: Readonly<Record<string, string>> | undefined,
): Pick<TransportSocketMatch, 'tls' | 'unsupported'> | undefined {
  for (const m of matches) {
    if (Object.entries(m.match).every(([k, v]) => metadata?.[k] === v)) return m;
  }
  return fallback;
}
