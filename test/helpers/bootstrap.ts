/**
 * Pieces of Envoy-shaped static bootstraps that the end-to-end tests share: Istio's virtualOutbound with
 * its passthrough, tcp_proxy filters and STATIC clusters of provider pods.
 */

export const tcpProxy = (cluster: string, statPrefix = cluster) => ({
  name: 'envoy.filters.network.tcp_proxy',
  typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: statPrefix, cluster },
});

/** Istio's outbound capture listener: hands each connection to the listener of its original destination, else passes it through. */
export const virtualOutbound = () => ({
  name: 'virtualOutbound',
  address: { socket_address: { address: '0.0.0.0', port_value: 15001 } },
  use_original_dst: true,
  filter_chains: [{ filters: [tcpProxy('PassthroughCluster', 'pass')] }],
});

export const passthroughCluster = () => ({ name: 'PassthroughCluster', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED' });

/** A STATIC cluster of pods at `ips`, all on `port`, balanced round robin. */
export const staticCluster = (name: string, ips: readonly string[], port: number) => ({
  name,
  type: 'STATIC',
  connect_timeout: '1s',
  lb_policy: 'ROUND_ROBIN',
  load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: ips.map((ip) => ({ endpoint: { address: { socket_address: { address: ip, port_value: port } } } })) }] },
});
