import type { CircuitBreakers } from '../config/model.js';
import { Gauge } from '../observe/prom.js';
import { metrics, registry } from '../observe/metrics.js';

/** Every cluster's live counts, read at scrape time (Envoy's upstream_cx_active, upstream_rq_active…). */
const live = new Map<string, ClusterResources>();

new Gauge({
  name: 'xsidecar_cluster_upstream_active',
  help: 'Upstream connections, requests in flight, requests waiting for a connection and retries in flight, per cluster',
  labelNames: ['cluster', 'resource'],
  registers: [registry],
  collect() {
    this.reset();
    for (const r of live.values()) {
      this.set({ cluster: r.cluster, resource: 'connections' }, r.connections);
      this.set({ cluster: r.cluster, resource: 'requests' }, r.requests);
      this.set({ cluster: r.cluster, resource: 'pending' }, r.pending);
      this.set({ cluster: r.cluster, resource: 'retries' }, r.retries);
    }
  },
});

/**
 * A cluster's live counts against its circuit breakers (Envoy's resource manager). It outlives config
 * updates of the same cluster: the counts are of things in flight, which a push does not end.
 */
export class ClusterResources {
  requests = 0;
  pending = 0;
  connections = 0;
  retries = 0;

  constructor(
    readonly cluster: string,
    public limits: CircuitBreakers,
  ) {
    live.set(cluster, this);
  }

  /** The cluster left the config. */
  retire(): void {
    if (live.get(this.cluster) === this) live.delete(this.cluster);
  }

  /** Room for one more request in flight; false counts an overflow. */
  tryRequest(): boolean {
    if (this.requests < this.limits.maxRequests) return true;
    metrics.upstreamOverflow.inc({ cluster: this.cluster, resource: 'requests' });
    return false;
  }

  tryPending(): boolean {
    if (this.pending < this.limits.maxPendingRequests) return true;
    metrics.upstreamOverflow.inc({ cluster: this.cluster, resource: 'pending' });
    return false;
  }

  canConnect(): boolean {
    return this.connections < this.limits.maxConnections;
  }

  /**
   * Room for one more retry: max_retries, or with a retry budget a share of the requests in flight (but
   * at least min_retry_concurrency), as Envoy does.
   */
  tryRetry(): boolean {
    const b = this.limits.retryBudget;
    const max = b ? Math.max(b.minRetryConcurrency, Math.floor((this.requests * b.percent) / 100)) : this.limits.maxRetries;
    if (this.retries < max) return true;
    metrics.upstreamOverflow.inc({ cluster: this.cluster, resource: 'retries' });
    return false;
  }
}
