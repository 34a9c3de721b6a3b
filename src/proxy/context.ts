import type { Socket } from 'node:net';
import type { FilterChain, Listener, NetworkFilterConfig, SocketAddress } from '../config/model.js';
import type { Snapshot } from '../config/snapshot.js';
import type { ClusterManager } from '../upstream/cluster-manager.js';

/** Everything a network filter needs about one accepted connection; fixed for its lifetime. */
export interface DownstreamContext {
  readonly socket: Socket;
  readonly listener: Listener;
  readonly chain: FilterChain;
  /** The original destination (ClusterIP:port outbound, pod IP:port inbound). */
  readonly destination: SocketAddress;
  readonly source: SocketAddress;
  /** The config the connection started with; later pushes do not change it. */
  readonly snapshot: Snapshot;
  /** The newest config: per-request routing reads it, so a push re-routes open RPC connections. */
  readonly live: () => Snapshot;
  readonly clusters: ClusterManager;
}

/** A terminal network filter: takes the connection over until it closes. */
export type NetworkHandler = (ctx: DownstreamContext, config: NetworkFilterConfig) => void;

const handlers = new Map<string, NetworkHandler>();

export function registerNetworkHandler(kind: string, handler: NetworkHandler): void {
  handlers.set(kind, handler);
}

export function networkHandler(kind: string): NetworkHandler | undefined {
  return handlers.get(kind);
}
