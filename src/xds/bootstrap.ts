/**
 * Bootstrap-level xDS facts, kept apart from the client so that deciding whether to use ADS (and the CLI's
 * embedded xDS bootstrap) does not load gRPC and the protobuf schema for a sidecar that runs on a static
 * config.
 */
import type { Bootstrap } from '../config/model.js';

/** True when this bootstrap (or an --xds-address) asks for configuration over ADS. */
export const usesAds = (bootstrap: Bootstrap, address?: string): boolean => !!(bootstrap.dynamicResources?.adsConfig || address);

/**
 * The bootstrap for `run --xds-address` without -c: Istio's shape, with no static listeners to collide with
 * the virtualOutbound/virtualInbound istiod sends, and no fetch timeout (wait for istiod, as Istio sets it).
 */
export function adsBootstrap(node: unknown, address: string): object {
  const source = { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' };
  return {
    node,
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 15000 } } },
    dynamic_resources: {
      lds_config: source,
      cds_config: source,
      ads_config: { api_type: 'GRPC', transport_api_version: 'V3', grpc_services: [{ google_grpc: { target_uri: address, stat_prefix: 'xds' } }] },
    },
  };
}
