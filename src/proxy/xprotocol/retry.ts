/**
 * When a request may be tried again, in Envoy's terms (retry_on), judged on what the engine knows: our own
 * failures (connect failure, reset, per-try timeout) and the upstream's status seen as gRPC. A request that
 * may have reached the provider is retried only when the policy names the condition.
 */
import { type ErrorKind, GrpcStatus } from '../../../protocols/codec.js';
import type { RetryPolicy } from '../../config/model.js';

/** gRPC status as HTTP (Envoy's grpc-to-http mapping), for 5xx, gateway-error and retriable-status-codes. */
const HTTP: Record<number, number> = {
  [GrpcStatus.OK]: 200,
  [GrpcStatus.CANCELLED]: 499,
  [GrpcStatus.UNKNOWN]: 500,
  [GrpcStatus.INVALID_ARGUMENT]: 400,
  [GrpcStatus.DEADLINE_EXCEEDED]: 504,
  [GrpcStatus.NOT_FOUND]: 404,
  [GrpcStatus.RESOURCE_EXHAUSTED]: 429,
  [GrpcStatus.UNIMPLEMENTED]: 501,
  [GrpcStatus.INTERNAL]: 500,
  [GrpcStatus.UNAVAILABLE]: 503,
};
export const httpOf = (grpc: number): number => HTTP[grpc] ?? 500;

/** Envoy's retry_on names for gRPC statuses (x-envoy-retry-grpc-on). */
const GRPC_ON: Record<string, number> = {
  cancelled: GrpcStatus.CANCELLED,
  'deadline-exceeded': GrpcStatus.DEADLINE_EXCEEDED,
  internal: GrpcStatus.INTERNAL,
  'resource-exhausted': GrpcStatus.RESOURCE_EXHAUSTED,
  unavailable: GrpcStatus.UNAVAILABLE,
};

const has = (p: RetryPolicy, ...conditions: string[]) => conditions.some((c) => p.retryOn.includes(c));

/** Our own failure: `sent` says whether the request reached the upstream socket. */
export function retriableFailure(p: RetryPolicy, kind: ErrorKind, sent: boolean): boolean {
  switch (kind) {
    case 'connect-failure':
      // Nothing was sent: safe under any condition that covers a failed connection.
      return !sent && has(p, 'connect-failure', 'refused-stream', 'reset', '5xx', 'gateway-error');
    case 'upstream-reset':
      return has(p, 'reset', '5xx', 'gateway-error');
    case 'timeout':
      // Only a per-try timeout reaches here as retriable; Envoy treats it as a 504.
      return has(p, '5xx', 'gateway-error');
    default:
      return false;
  }
}

/** An upstream's answer with a non-OK status. */
export function retriableResponse(p: RetryPolicy, grpc: number): boolean {
  if (grpc === GrpcStatus.OK || p.retryOn.length === 0) return false;
  for (const c of p.retryOn) if (GRPC_ON[c] === grpc) return true;
  const http = httpOf(grpc);
  if (http >= 500 && has(p, '5xx')) return true;
  if ((http === 502 || http === 503 || http === 504) && has(p, 'gateway-error')) return true;
  return has(p, 'retriable-status-codes') && p.retriableStatusCodes.includes(http);
}
