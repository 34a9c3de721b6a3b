/**
 * The embedded default: Istio's skeleton for a pod whose control plane has said nothing yet. Outbound
 * capture passes traffic through to its original destination, inbound capture delivers it to the local
 * app from 127.0.0.6 (so Istio's rules do not capture it again), and connections aimed at the capture
 * ports themselves are black-holed.
 */
const chain = (name: string, cluster: string, match?: object) => ({
  name,
  ...(match ? { filter_chain_match: match } : {}),
  filters: [
    {
      name: 'envoy.filters.network.tcp_proxy',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
        stat_prefix: cluster,
        cluster,
      },
    },
  ],
});

// Outbound hands connections off to per-destination listeners (use_original_dst); inbound only matches
// chains on the original destination (the original_dst listener filter), as Istio configures them.
const listener = (name: string, port: number, passthrough: string, handOff: boolean) => ({
  name,
  address: { socket_address: { address: '0.0.0.0', port_value: port } },
  ...(handOff
    ? { use_original_dst: true }
    : { listener_filters: [{ name: 'envoy.filters.listener.original_dst', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst' } }] }),
  filter_chains: [chain(`${name}-blackhole`, 'BlackHoleCluster', { destination_port: port }), chain(`${name}-catchall-tcp`, passthrough)],
});

export const defaultBootstrap = {
  node: { id: 'sidecar~127.0.0.1~xsidecar.default~default.svc.cluster.local', cluster: 'xsidecar.default' },
  admin: { address: { socket_address: { address: '127.0.0.1', port_value: 15000 } } },
  static_resources: {
    listeners: [
      listener('virtualOutbound', 15001, 'PassthroughCluster', true),
      listener('virtualInbound', 15006, 'InboundPassthroughClusterIpv4', false),
    ],
    clusters: [
      { name: 'PassthroughCluster', type: 'ORIGINAL_DST', connect_timeout: '10s', lb_policy: 'CLUSTER_PROVIDED' },
      {
        name: 'InboundPassthroughClusterIpv4',
        type: 'ORIGINAL_DST',
        connect_timeout: '10s',
        lb_policy: 'CLUSTER_PROVIDED',
        upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } },
      },
      { name: 'BlackHoleCluster', type: 'STATIC', connect_timeout: '10s' },
    ],
  },
};
