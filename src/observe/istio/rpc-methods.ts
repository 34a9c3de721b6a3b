/**
 * Method-level RPC metrics for operators (xsidecar_rpc_requests_total, xsidecar_rpc_request_duration_
 * milliseconds), with bounded cardinality: the first `telemetry.maxRpcMethods` distinct (service, method)
 * pairs the process sees get their own series; later ones fold into service="other", method="other".
 */
import { registry } from '../metrics.js';
import { Buckets, histogramSamples, type Sample } from './histogram.js';
import { telemetry } from './telemetry.js';

export const OTHER = 'other';

class MethodSeries {
  count = 0;
  readonly duration = new Buckets();
  constructor(readonly labels: Record<string, string>) {}
}

/** One method of one (protocol, cluster): its series by gRPC status. */
class MethodStats {
  readonly byStatus = new Map<number, MethodSeries>();
  constructor(
    readonly table: MethodTable,
    readonly service: string,
    readonly method: string,
  ) {}

  series(status: number): MethodSeries {
    let s = this.byStatus.get(status);
    if (!s) {
      const t = this.table;
      s = new MethodSeries({ rpc_protocol: t.protocol, rpc_service: this.service, rpc_method: this.method, cluster: t.cluster, status: String(status) });
      this.byStatus.set(status, s);
    }
    return s;
  }
}

/** Distinct pairs admitted so far, process-wide (the bound is on the process's series, not per cluster). */
const admitted = new Map<string, Set<string>>();
let admittedCount = 0;

function admit(service: string, method: string): boolean {
  let methods = admitted.get(service);
  if (methods?.has(method)) return true;
  if (admittedCount >= telemetry.maxRpcMethods) return false;
  if (!methods) admitted.set(service, (methods = new Set()));
  methods.add(method);
  admittedCount++;
  return true;
}

const tables = new Set<MethodTable>();

/** The methods of one (protocol, cluster); held by the engine's per-cluster stats object. */
export class MethodTable {
  private readonly services = new Map<string, Map<string, MethodStats>>();
  private other: MethodStats | undefined;

  constructor(
    readonly protocol: string,
    readonly cluster: string,
  ) {
    tables.add(this);
  }

  /** The last method looked up: a connection tends to call the same one again (two string compares, no hashing). */
  private last: MethodStats | undefined;
  private lastService = '';
  private lastMethod = '';

  /** Two map hits for a known method; a new one is admitted or folded once. */
  method(service: string, method: string): MethodStats {
    if (this.last && service === this.lastService && method === this.lastMethod) return this.last;
    const known = this.services.get(service)?.get(method) ?? this.lookup(service, method);
    this.last = known;
    this.lastService = service;
    this.lastMethod = method;
    return known;
  }

  private lookup(service: string, method: string): MethodStats {
    if (!admit(service, method)) return (this.other ??= new MethodStats(this, OTHER, OTHER));
    let methods = this.services.get(service);
    if (!methods) this.services.set(service, (methods = new Map()));
    const m = new MethodStats(this, service, method);
    methods.set(method, m);
    return m;
  }

  record(service: string | undefined, method: string | undefined, status: number, durationMs: number): void {
    const s = this.method(service ?? 'unknown', method ?? 'unknown').series(status);
    s.count++;
    s.duration.observe(durationMs);
  }

  *all(): Iterable<MethodSeries> {
    for (const methods of this.services.values()) for (const m of methods.values()) yield* m.byStatus.values();
    if (this.other) yield* this.other.byStatus.values();
  }
}

/** For tests: forget admitted pairs (the bound is process-wide). */
export function resetRpcMethods(): void {
  admitted.clear();
  admittedCount = 0;
  tables.clear();
}

function scraped(name: string, help: string, type: 'counter' | 'histogram', fill: (s: MethodSeries, out: Sample[]) => void): void {
  registry.registerMetric({
    name,
    help,
    type,
    aggregator: 'sum',
    get() {
      const values: Sample[] = [];
      if (telemetry.enabled) for (const t of tables) for (const s of t.all()) fill(s, values);
      return { name, help, type, values, aggregator: 'sum' };
    },
    reset() {},
  } as unknown as Parameters<typeof registry.registerMetric>[0]);
}

scraped('xsidecar_rpc_requests_total', 'RPC requests by method (status: the gRPC status); methods past the limit fold into "other"', 'counter', (s, out) => out.push({ labels: s.labels, value: s.count }));
scraped('xsidecar_rpc_request_duration_milliseconds', 'RPC request duration by method', 'histogram', (s, out) => histogramSamples('xsidecar_rpc_request_duration_milliseconds', s.labels, s.duration, out));
