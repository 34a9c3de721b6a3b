/** Envoy's default histogram buckets, which Istio's standard metrics keep (milliseconds and bytes alike). */
export const ENVOY_BUCKETS: readonly number[] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

/**
 * A histogram as plain numbers: one slot per bucket (not cumulative; the last is +Inf) and a sum. An
 * observation is a short scan and two additions; prom-client's observe() would hash the labels each time.
 */
export class Buckets {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[] = ENVOY_BUCKETS) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

export interface Sample {
  readonly labels: Record<string, string | number>;
  readonly value: number;
  readonly metricName?: string;
}

/** Prometheus's histogram samples (`_bucket` with `le`, cumulative; `_sum`; `_count`) for one label set. */
export function histogramSamples(name: string, labels: Record<string, string>, h: Buckets, out: Sample[]): void {
  let acc = 0;
  for (let i = 0; i < h.bounds.length; i++) {
    acc += h.counts[i]!;
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: h.bounds[i]! }, value: acc });
  }
  acc += h.counts[h.bounds.length]!;
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: acc });
  out.push({ metricName: `${name}_sum`, labels, value: h.sum });
  out.push({ metricName: `${name}_count`, labels, value: h.count });
}
