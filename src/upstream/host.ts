import type { Endpoint } from '../config/model.js';

export interface OutlierCounts {
  consecutive5xx: number;
  consecutiveGateway: number;
  consecutiveLocal: number;
  times: number;
  ejectedUntil: number;
}

/** What a host that never failed reads. Frozen: a write to it would be a bug, and throws. */
const NO_OUTLIER: Readonly<OutlierCounts> = Object.freeze({ consecutive5xx: 0, consecutiveGateway: 0, consecutiveLocal: 0, times: 0, ejectedUntil: 0 });

/** A connection pool as a host holds it (proxy/ owns the real type). */
export interface Pool {
  close(): void;
}

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
  /**
   * Outlier detection's counts and ejection; an ejected host takes no new requests until `ejectedUntil`.
   * Shared zeros until its first failure (outlierCounts), like the pools below: most of a mesh's hosts
   * never fail and never get a connection, and 10,000 hosts held 2 MiB of empty ones at ready.
   */
  outlier: Readonly<OutlierCounts> = NO_OUTLIER;
  /** Failed its active health check (thresholds applied). */
  checkFailed = false;
  /** Per-protocol connection pools, owned by proxy/ and keyed by codec name; made with the first. */
  #pools: Map<string, Pool> | undefined = undefined;
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

  /** The counts to write to (outlier detection): this host's own from now on. */
  outlierCounts(): OutlierCounts {
    if (this.outlier === NO_OUTLIER) this.outlier = { ...NO_OUTLIER };
    return this.outlier as OutlierCounts;
  }

  pool(codec: string): Pool | undefined {
    return this.#pools?.get(codec);
  }

  addPool(codec: string, pool: Pool): void {
    (this.#pools ??= new Map()).set(codec, pool);
  }

  /** Forgets `pool` if it is still this host's pool for `codec`. */
  dropPool(codec: string, pool: Pool): void {
    if (this.#pools?.get(codec) === pool) this.#pools.delete(codec);
  }

  /** The host left its cluster: its pools drain (no new requests; in-flight ones finish). */
  closePools(): void {
    if (this.#pools) for (const pool of [...this.#pools.values()]) pool.close();
  }

  get key(): string {
    return hostKey(this.address, this.port);
  }
}

export const hostKey = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

/** Envoy treats UNKNOWN as healthy: EDS without health checking reports it for every endpoint. */
export const isUsable = (ep: Endpoint) => ep.health === 'HEALTHY' || ep.health === 'UNKNOWN' || ep.health === 'DEGRADED';
