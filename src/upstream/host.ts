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
  /** Outlier detection's counts and ejection; an ejected host takes no new requests until `ejectedUntil`. */
  readonly outlier = { consecutive5xx: 0, consecutiveGateway: 0, consecutiveLocal: 0, times: 0, ejectedUntil: 0 };
  /** Failed its active health check (thresholds applied). */
  checkFailed = false;
  /** Per-protocol connection pools, owned by proxy/ and keyed by codec name. */
  readonly pools = new Map<string, { close(): void }>();
  /** The endpoint's Istio workload metadata (destination_* labels of outbound requests). */
  workload: string | undefined = undefined;
  /** Owned by observe/istio: this host's metric edges, dropped when its workload metadata changes. */
  telemetry: unknown = undefined;
  /** Owned by observe/istio: both identities of the last mTLS connection to this host (principal labels). */
  principals: { readonly local: string; readonly peer: string } | undefined = undefined;
  /** The endpoint's envoy.transport_socket_match metadata: picks plaintext or mesh mTLS per endpoint. */
  transportSocketMatch: Readonly<Record<string, string>> | undefined;

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
    if (ep.workload !== this.workload) {
      this.workload = ep.workload;
      this.telemetry = undefined;
    }
    this.transportSocketMatch = ep.transportSocketMatch;
  }

  /** Out of rotation for now: ejected by outlier detection or failing its active health check. */
  excluded(now: number): boolean {
    return this.checkFailed || this.outlier.ejectedUntil > now;
  }

  get key(): string {
    return hostKey(this.address, this.port);
  }
}

export const hostKey = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

/** Envoy treats UNKNOWN as healthy: EDS without health checking reports it for every endpoint. */
export const isUsable = (ep: Endpoint) => ep.health === 'HEALTHY' || ep.health === 'UNKNOWN' || ep.health === 'DEGRADED';
