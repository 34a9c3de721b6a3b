import type { Counter } from 'prom-client';
import type { ErrorKind } from '../../../protocols/codec.js';
import { metrics, rpcMetrics } from '../../observe/metrics.js';

type Child = ReturnType<Counter['labels']>;

/** Counters for one (protocol, cluster), bound once: labels() per request would cost a lookup each time. */
export class RpcStats {
  readonly requests: Child;
  readonly oneway: Child;
  readonly retries: Child;
  readonly lateResponses: Child;
  private readonly errors = new Map<ErrorKind, Child>();

  constructor(
    private readonly protocol: string,
    private readonly cluster: string,
  ) {
    const labels = { protocol, cluster };
    this.requests = rpcMetrics.requests.labels(labels);
    this.oneway = rpcMetrics.oneway.labels(labels);
    this.retries = rpcMetrics.retries.labels(labels);
    this.lateResponses = rpcMetrics.lateResponses.labels(labels);
  }

  error(kind: ErrorKind): void {
    let c = this.errors.get(kind);
    if (!c) this.errors.set(kind, (c = rpcMetrics.localReplies.labels({ protocol: this.protocol, cluster: this.cluster, reason: kind })));
    c.inc();
  }
}

const cache = new Map<string, RpcStats>();

export function rpcStats(protocol: string, cluster: string): RpcStats {
  const key = `${protocol}\u0000${cluster}`;
  let s = cache.get(key);
  if (!s) cache.set(key, (s = new RpcStats(protocol, cluster)));
  return s;
}

export { metrics };
