import type { OutlierDetection } from '../config/model.js';
import { log } from '../observe/log.js';
import { metrics } from '../observe/metrics.js';
import type { Host } from './host.js';

/** How a request ended, as outlier detection counts it. */
export type Outcome = 'success' | 'server-error' | 'gateway-error' | 'local-origin';

/**
 * Envoy's consecutive-errors outlier detection for one cluster. Errors are the upstream's status seen as
 * gRPC (INTERNAL, UNKNOWN… are 5xx; UNAVAILABLE, DEADLINE_EXCEEDED are gateway errors) and failures of
 * our own (connect failure, reset, timeout: local origin, counted as 5xx unless split). An ejected host
 * gets no new requests for base_ejection_time × times ejected (capped), then comes back.
 */
export class OutlierDetector {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly cluster: string,
    public config: OutlierDetection,
    /** The cluster's current hosts: a push replaces the list, not the detector. */
    public hostsOf: () => readonly Host[],
  ) {
    this.arm();
  }

  report(host: Host, outcome: Outcome): void {
    if (outcome === 'success') {
      const seen = host.outlier;
      // A host with no counts of its own has nothing to reset: it stays on the shared zeros.
      if (seen.consecutive5xx || seen.consecutiveGateway || seen.consecutiveLocal) {
        const o = host.outlierCounts();
        o.consecutive5xx = o.consecutiveGateway = o.consecutiveLocal = 0;
      }
      return;
    }
    const o = host.outlierCounts();
    const c = this.config;
    if (outcome === 'local-origin' && c.splitExternalLocalOriginErrors) {
      if (++o.consecutiveLocal >= c.consecutiveLocalOriginFailure) this.eject(host, 'consecutive_local_origin_failure', c.enforcingLocalOrigin);
      return;
    }
    if (outcome === 'gateway-error' || outcome === 'local-origin') {
      if (++o.consecutiveGateway >= c.consecutiveGatewayFailure && c.enforcingGatewayFailure > 0) {
        this.eject(host, 'consecutive_gateway_failure', c.enforcingGatewayFailure);
        return;
      }
    }
    if (++o.consecutive5xx >= c.consecutive5xx) this.eject(host, 'consecutive_5xx', c.enforcing5xx);
  }

  private eject(host: Host, reason: string, enforcing: number): void {
    const o = host.outlierCounts();
    o.consecutive5xx = o.consecutiveGateway = o.consecutiveLocal = 0;
    if (o.ejectedUntil > Date.now() || Math.random() * 100 >= enforcing) return;
    const all = this.hostsOf();
    const ejected = all.filter((h) => h.outlier.ejectedUntil > Date.now()).length;
    // Envoy's rule: eject only while the share of ejected hosts stays within max_ejection_percent.
    if ((100 * (ejected + 1)) / all.length > this.config.maxEjectionPercent) return;
    o.times++;
    const ms = Math.min(this.config.baseEjectionTimeMs * o.times, Math.max(this.config.baseEjectionTimeMs, this.config.maxEjectionTimeMs));
    o.ejectedUntil = Date.now() + ms;
    metrics.outlierEjections.inc({ cluster: this.cluster, reason });
    log.warn({ cluster: this.cluster, host: host.key, reason, ejectionMs: ms }, 'outlier detection ejected a host');
  }

  /** Each interval, a host that has served its ejection out of trouble has its multiplier decay. */
  private arm(): void {
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const h of this.hostsOf()) if (h.outlier.ejectedUntil <= now && h.outlier.times > 0 && now - h.outlier.ejectedUntil > this.config.baseEjectionTimeMs) h.outlierCounts().times--;
    }, this.config.intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
