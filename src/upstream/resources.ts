import type { CircuitBreakers } from '../config/model.js';
import { metrics } from '../observe/metrics.js';

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
  ) {}

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
