/**
 * A route's own gates before a request goes upstream: the local rate limit (a token bucket per route) and
 * fault injection (Istio's VirtualService `fault`: delay and abort, each for a percentage of requests).
 */
import { type ErrorKind, GrpcStatus } from '../../../protocols/codec.js';
import type { FaultInjection, LocalRateLimit } from '../../config/model.js';
import { metrics } from '../../observe/metrics.js';

class TokenBucket {
  private tokens: number;
  private filledAt = Date.now();

  constructor(private readonly cfg: LocalRateLimit) {
    this.tokens = cfg.maxTokens;
  }

  take(): boolean {
    const now = Date.now();
    const fills = Math.floor((now - this.filledAt) / this.cfg.fillIntervalMs);
    if (fills > 0) {
      this.tokens = Math.min(this.cfg.maxTokens, this.tokens + fills * this.cfg.tokensPerFill);
      this.filledAt += fills * this.cfg.fillIntervalMs;
    }
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}

/** Buckets live as long as their route's config: a push that changes the limit starts a fresh bucket. */
const buckets = new WeakMap<LocalRateLimit, TokenBucket>();

const chance = (percent: number) => percent >= 100 || Math.random() * 100 < percent;

/** True when the request is over the route's limit and the limit is enforced for it. */
export function rateLimited(cfg: LocalRateLimit | undefined, route: string): boolean {
  if (!cfg || !chance(cfg.enabledPercent)) return false;
  let b = buckets.get(cfg);
  if (!b) buckets.set(cfg, (b = new TokenBucket(cfg)));
  if (b.take()) return false;
  metrics.rateLimited.inc({ route });
  return chance(cfg.enforcedPercent);
}

/** An abort's HTTP or gRPC status as the engine's nearest native error. */
function abortKind(a: NonNullable<FaultInjection['abort']>): ErrorKind {
  const grpc = a.grpcStatus ?? { 404: GrpcStatus.NOT_FOUND, 429: GrpcStatus.RESOURCE_EXHAUSTED, 503: GrpcStatus.UNAVAILABLE, 504: GrpcStatus.DEADLINE_EXCEEDED, 400: GrpcStatus.INVALID_ARGUMENT }[a.httpStatus!];
  switch (grpc) {
    case GrpcStatus.NOT_FOUND:
    case GrpcStatus.UNIMPLEMENTED:
      return 'no-route';
    case GrpcStatus.RESOURCE_EXHAUSTED:
      return 'overflow';
    case GrpcStatus.UNAVAILABLE:
      return 'no-healthy-upstream';
    case GrpcStatus.DEADLINE_EXCEEDED:
      return 'timeout';
    case GrpcStatus.INVALID_ARGUMENT:
      return 'codec-error';
    default:
      return 'upstream-reset';
  }
}

export interface FaultDecision {
  readonly delayMs: number;
  readonly abort?: { readonly kind: ErrorKind; readonly message: string };
}

const NONE: FaultDecision = { delayMs: 0 };

/** What fault injection does to this request: a delay, an abort, both (delay first, as Envoy), or nothing. */
export function injectFault(f: FaultInjection | undefined, route: string): FaultDecision {
  if (!f) return NONE;
  const delayMs = f.delay && f.delay.ms > 0 && chance(f.delay.percent) ? f.delay.ms : 0;
  const a = f.abort && chance(f.abort.percent) ? f.abort : undefined;
  if (delayMs) metrics.faults.inc({ route, fault: 'delay' });
  if (!a) return delayMs ? { delayMs } : NONE;
  metrics.faults.inc({ route, fault: 'abort' });
  const status = a.grpcStatus !== undefined ? `grpc ${a.grpcStatus}` : `http ${a.httpStatus}`;
  return { delayMs, abort: { kind: abortKind(a), message: `fault filter abort (${status})` } };
}
