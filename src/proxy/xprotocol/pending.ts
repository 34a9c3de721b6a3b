import type { ErrorKind, Frame } from '../../../protocols/codec.js';
import type { RetryPolicy } from '../../config/model.js';
import type { ClusterState } from '../../upstream/cluster-manager.js';
import type { Host } from '../../upstream/host.js';
import type { Throttle } from './batch.js';
import type { HasDeadline } from './deadlines.js';
import type { RpcStats } from './stats.js';

/** The downstream side of a request, told how it ended; it stops reading while its upstream is congested. */
export interface PendingOwner extends Throttle {
  complete(p: Pending, response: Frame): void;
  /** `sent`: the request reached the upstream socket, so the upstream may have acted on it. */
  fail(p: Pending, kind: ErrorKind, message: string, sent: boolean): void;
}

/** One request in flight upstream; its upstream id is the key in the connection's pending map. */
export class Pending implements HasDeadline {
  deadline = 0;
  bucket = -1;
  upstreamId = 0;
  /** Tries so far, for the retry budget. */
  attempts = 1;
  /** Set while the request sits in a connection's pending map (or its pre-connect queue). */
  conn: { forget(p: Pending): void } | undefined = undefined;
  /** performance.now() when the request arrived, for istio_request_duration_milliseconds. */
  start = 0;
  /**
   * Envoy response flags to report with this request (observe/istio/flags.ts ResponseFlag bits, OR-ed):
   * `p.flags |= ResponseFlag.URX`. The flag of a local reply's ErrorKind (UF, UT, UO…) is added at reporting.
   */
  flags = 0;
  /** The request's own deadline; `deadline` is earlier while a per-try timeout is in force. */
  overallDeadline = 0;
  /** This try is a retry, holding one of its cluster's retry slots (circuit breakers). */
  retrying = false;

  constructor(
    readonly owner: PendingOwner,
    /** The request as decoded; `frame.requestId` is the caller's id even after `raw` was patched. */
    readonly frame: Frame,
    public host: Host,
    readonly cluster: ClusterState,
    readonly stats: RpcStats,
    readonly retry: RetryPolicy,
  ) {}
}
