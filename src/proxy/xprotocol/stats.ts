import { Counter } from '../../observe/prom.js';
import type { ErrorKind } from '../../../protocols/codec.js';
import { MethodTable } from '../../observe/istio/rpc-methods.js';
import { registry } from '../../observe/metrics.js';

/**
 * Per-request counters for one (protocol, cluster) as plain numbers: a prom-client inc() hashes its
 * labels on every call, which showed up in profiles. Prometheus reads them at scrape time.
 */
export class RpcStats {
  requests = 0;
  oneway = 0;
  retries = 0;
  lateResponses = 0;
  readonly errors = new Map<ErrorKind, number>();
  /** xsidecar_rpc_requests_total and its histogram, by service and method (bounded). */
  readonly methods: MethodTable;

  constructor(
    readonly protocol: string,
    readonly cluster: string,
  ) {
    this.methods = new MethodTable(protocol, cluster);
  }

  error(kind: ErrorKind): void {
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
  }
}

const all = new Set<RpcStats>();
const byProtocol = new Map<string, Map<string, RpcStats>>();

/** Looked up per request: two map hits, no key string built. */
export function rpcStats(protocol: string, cluster: string): RpcStats {
  let clusters = byProtocol.get(protocol);
  if (!clusters) byProtocol.set(protocol, (clusters = new Map()));
  let s = clusters.get(cluster);
  if (!s) {
    clusters.set(cluster, (s = new RpcStats(protocol, cluster)));
    all.add(s);
  }
  return s;
}

function scraped(name: string, help: string, read: (s: RpcStats) => number): void {
  new Counter({
    name,
    help,
    labelNames: ['protocol', 'cluster'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of all) {
        const v = read(s);
        if (v > 0) this.inc({ protocol: s.protocol, cluster: s.cluster }, v);
      }
    },
  });
}

// Envoy's per-cluster names (cluster.<name>.upstream_rq_*), prefixed xsidecar_cluster_ and labelled by protocol.
scraped('xsidecar_cluster_upstream_rq_total', 'RPC requests forwarded upstream', (s) => s.requests);
scraped('xsidecar_cluster_upstream_rq_oneway_total', 'Oneway RPC requests forwarded upstream', (s) => s.oneway);
scraped('xsidecar_cluster_upstream_rq_retry_total', 'RPC requests sent again to another endpoint', (s) => s.retries);
scraped('xsidecar_cluster_upstream_rq_timeout_total', 'RPC requests answered with a timeout', (s) => s.errors.get('timeout') ?? 0);
scraped('xsidecar_cluster_upstream_rq_pending_overflow_total', 'RPC requests refused by a circuit breaker', (s) => s.errors.get('overflow') ?? 0);
scraped('xsidecar_rpc_late_responses_total', 'Upstream responses that arrived after the request had been answered (timeout)', (s) => s.lateResponses);

new Counter({
  name: 'xsidecar_rpc_local_replies_total',
  help: 'Requests answered by the sidecar with a protocol-native error',
  labelNames: ['protocol', 'cluster', 'reason'],
  registers: [registry],
  collect() {
    this.reset();
    for (const s of all) for (const [reason, v] of s.errors) this.inc({ protocol: s.protocol, cluster: s.cluster, reason }, v);
  },
});
