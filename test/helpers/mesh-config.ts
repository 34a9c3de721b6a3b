/**
 * Istio-shaped mesh mTLS config for tests, taken from the real istiod output in test/fixtures/istio: the
 * `tlsMode-istio` transport_socket_matches of an outbound cluster and the TLS chains of virtualInbound,
 * re-pointed at test endpoints.
 */
import { readFileSync } from 'node:fs';
import { fixture } from './paths.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const load = (...p: string[]) => JSON.parse(readFileSync(fixture('istio', ...p), 'utf8')) as Json;
const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

const reviews = load('istio-1.18-sidecar-deathstarbench', 'cluster_outbound_9080_reviews.json');
const inbound = load('istio-repo-authz-configdump', 'listener_virtualInbound.json');

/** The fixture's transport_socket_matches with SNI and SAN for `host:port` served by service account `sa`. */
export function istioMutualMatches(host: string, port: number, sanExact: string | readonly string[]): Json[] {
  const m = clone(reviews.transport_socket_matches) as Json[];
  const tls = m[0]!.transport_socket.typed_config;
  tls.sni = `outbound_.${port}_._.${host}`;
  tls.common_tls_context.combined_validation_context.default_validation_context.match_subject_alt_names = (typeof sanExact === 'string' ? [sanExact] : sanExact).map((exact) => ({ exact }));
  return m;
}

export interface Ep {
  readonly address: string;
  readonly port: number;
  /** Istio labels mesh endpoints `tlsMode: istio`; others get plaintext. */
  readonly istio: boolean;
}

/** A STATIC version of an Istio outbound cluster with its transport_socket_matches and endpoint metadata. */
export function meshCluster(name: string, eps: readonly Ep[], matches: Json[] | undefined): Json {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '5s',
    lb_policy: 'ROUND_ROBIN',
    ...(matches ? { transport_socket_matches: matches } : {}),
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: eps.map((e) => ({
            endpoint: { address: { socket_address: { address: e.address, port_value: e.port } } },
            ...(e.istio ? { metadata: { filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' } } } } : {}),
          })),
        },
      ],
    },
  };
}

/** The fixture's DownstreamTlsContext (require_client_certificate, SAN prefix spiffe://cluster.local/). */
export function inboundTlsSocket(): Json {
  const chain = (inbound.filter_chains as Json[]).find((c) => c.name === 'virtualInbound' && c.transport_socket);
  return clone(chain!.transport_socket);
}

const tcpProxy = (cluster: string) => [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: cluster, cluster } }];

/**
 * Istio's inbound chains for one port, in virtualInbound's order: mTLS (`tls` + Istio ALPN) terminated,
 * plaintext (`raw_buffer`, PERMISSIVE only), and other TLS (`tls`, no ALPN) passed through untouched.
 */
export function inboundChains(cluster: string, mode: 'PERMISSIVE' | 'STRICT', destinationPort?: number): Json[] {
  const match = (m: Json) => ({ filter_chain_match: { ...(destinationPort ? { destination_port: destinationPort } : {}), prefix_ranges: [{ address_prefix: '0.0.0.0', prefix_len: 0 }], ...m } });
  const chains: Json[] = [
    { name: 'inbound-mtls', ...match({ transport_protocol: 'tls', application_protocols: ['istio-peer-exchange', 'istio'] }), filters: tcpProxy(cluster), transport_socket: inboundTlsSocket() },
  ];
  if (mode === 'PERMISSIVE') {
    chains.push({ name: 'inbound-plaintext', ...match({ transport_protocol: 'raw_buffer' }), filters: tcpProxy(cluster) });
    chains.push({ name: 'inbound-foreign-tls', ...match({ transport_protocol: 'tls' }), filters: tcpProxy(cluster) });
  }
  return chains;
}

export const listenerFilters = [
  { name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' } },
];
