import { Counter } from '../observe/prom.js';
import { registry } from '../observe/metrics.js';

/**
 * Per-query metrics at tens of thousands of queries a second: prom-client's inc() and observe() hash
 * their labels on every call (about 1.7 µs together, a tenth of the proxy's CPU per local answer), so
 * the two per-query metrics are plain counters in arrays, turned into Prometheus samples only when
 * scraped. The rarer ones are ordinary prom-client counters.
 */
interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** A counter whose label sets are handed out once as a cell the hot path increments. */
export class FastCounter {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly cells = new Map<string, { labels: Record<string, string>; n: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
  ) {
    registry.registerMetric(this as never);
  }

  cell(...values: string[]): { n: number } {
    const key = values.join('\u0000');
    let c = this.cells.get(key);
    if (!c) this.cells.set(key, (c = { labels: Object.fromEntries(this.labelNames.map((l, i) => [l, values[i]!])), n: 0 }));
    return c;
  }

  async get() {
    const values: Sample[] = [...this.cells.values()].map((c) => ({ value: c.n, labels: c.labels }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    for (const c of this.cells.values()) c.n = 0;
  }
}

/** A histogram with one label, buckets counted in a typed array. */
export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, { counts: Float64Array; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly label: string,
    private readonly bounds: readonly number[],
  ) {
    registry.registerMetric(this as never);
  }

  /** The recorder for one label value: call it with a duration in seconds. */
  recorder(value: string): (seconds: number) => void {
    const series = this.seriesOf(value);
    const bounds = this.bounds;
    return (seconds) => {
      let i = 0;
      while (i < bounds.length && seconds > bounds[i]!) i++;
      series.counts[i]!++;
      series.sum += seconds;
      series.count++;
    };
  }

  private seriesOf(value: string): { counts: Float64Array; sum: number; count: number } {
    let s = this.series.get(value);
    if (!s) this.series.set(value, (s = { counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }));
    return s;
  }

  get buckets(): readonly number[] {
    return this.bounds;
  }

  /** Adds counts observed elsewhere (the DNS UDP worker) with the same buckets. */
  merge(value: string, counts: Float64Array, sum: number): void {
    const s = this.seriesOf(value);
    for (let i = 0; i < counts.length; i++) {
      s.counts[i]! += counts[i]!;
      s.count += counts[i]!;
    }
    s.sum += sum;
  }

  async get() {
    const values: Sample[] = [];
    for (const [v, s] of this.series) {
      let acc = 0;
      this.bounds.forEach((b, i) => {
        acc += s.counts[i]!;
        values.push({ value: acc, labels: { le: b, [this.label]: v }, metricName: `${this.name}_bucket` });
      });
      values.push({ value: s.count, labels: { le: '+Inf', [this.label]: v }, metricName: `${this.name}_bucket` });
      values.push({ value: s.sum, labels: { [this.label]: v }, metricName: `${this.name}_sum` });
      values.push({ value: s.count, labels: { [this.label]: v }, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}

/** DNS proxy and registrar metrics, on the process registry (/stats/prometheus). */
export const dnsMetrics = {
  /** outcome: local (answered from the table), forwarded, failed (SERVFAIL after every upstream failed), malformed, dropped, overload. */
  queries: new FastCounter('xsidecar_dns_queries_total', 'DNS queries by outcome, query type and transport', ['outcome', 'type', 'transport']),
  latency: new FastHistogram('xsidecar_dns_request_duration_seconds', 'Time from query to answer, by outcome', 'outcome', [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
  /** What the UDP worker thread (udp-offload.ts) did with what it read: answered itself, handed to the main thread, refused (overload), dropped. */
  worker: new FastCounter('xsidecar_dns_udp_worker_queries_total', 'UDP queries read by the DNS worker thread, by what it did with them (answered, handed to the main thread, overload: SERVFAIL with the main thread too far behind, dropped)', ['action']),
  upstreamFailures: new Counter({ name: 'xsidecar_dns_upstream_failures_total', help: 'Forwarding attempts that failed, by upstream and reason', labelNames: ['upstream', 'reason'], registers: [registry] }),
  truncated: new Counter({ name: 'xsidecar_dns_truncated_total', help: 'Forwarded UDP answers cut to the client size with TC set', labelNames: ['outcome'], registers: [registry] }),
  updates: new Counter({ name: 'xsidecar_dns_registrar_updates_total', help: 'RFC 2136 updates sent by the registrar, by operation and result (NOERROR, REFUSED, NOTAUTH, BADSIG, BADKEY, timeout, …)', labelNames: ['op', 'result'], registers: [registry] }),
};
