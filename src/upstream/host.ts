import type { Endpoint } from '../config/model.js';

/**
 * One upstream endpoint. Host objects outlive config updates while their address stays in the cluster,
 * so in-flight counts and connection pools survive an EDS push.
 */
export class Host {
  /** Requests or connections in flight, for LEAST_REQUEST. */
  active = 0;
  weight = 1;
  healthy = true;
  priority = 0;
  /** Until then LB prefers other hosts: a connect to this one just failed. */
  ejectedUntil = 0;
  /** Per-protocol connection pools, owned by proxy/ and keyed by codec name. */
  readonly pools = new Map<string, { close(): void }>();

  constructor(
    readonly address: string,
    readonly port: number,
    ep?: Endpoint,
  ) {
    if (ep) this.refresh(ep);
  }

  refresh(ep: Endpoint): void {
    this.weight = ep.weight;
    this.healthy = isUsable(ep);
    this.priority = ep.priority;
  }

  get key(): string {
    return hostKey(this.address, this.port);
  }
}

export const hostKey = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

/** Envoy treats UNKNOWN as healthy: EDS without health checking reports it for every endpoint. */
export const isUsable = (ep: Endpoint) => ep.health === 'HEALTHY' || ep.health === 'UNKNOWN' || ep.health === 'DEGRADED';
