import type { Socket } from 'node:net';
import { type Codec, CodecError, type ErrorKind, type Frame, NEED_MORE } from '../../../protocols/codec.js';
import type { RetryPolicy, RouteAction, RouteConfiguration, VirtualHost } from '../../config/model.js';
import { throttled } from '../../observe/throttle.js';
import { rpcMetrics } from '../../observe/metrics.js';
import { destinationHost, destinationKeys, selectRoute } from '../../router/router.js';
import { pickWeighted } from '../../router/weighted.js';
import type { ClusterState } from '../../upstream/cluster-manager.js';
import type { Outcome } from '../../upstream/outlier.js';
import type { DownstreamContext } from '../context.js';
import { type CloseReason, coarseNow, countClosed, grew, limits, unwatch, watch, type Watched } from '../limits.js';
import { whenDrained } from './batch.js';
import { batch, deadlines } from './engine-state.js';
import { FrameBuffer } from './frame-buffer.js';
import { Pending, type PendingOwner } from './pending.js';
import { poolFor } from './pool.js';
import { httpOf, retriableFailure, retriableResponse } from './retry.js';
import { injectFault, rateLimited } from './route-filters.js';
import { ConnReport, ResponseFlag } from './report.js';
import { type RpcStats, rpcStats } from './stats.js';

export interface SessionOptions {
  readonly codec: Codec;
  readonly maxFrameBytes: number;
  readonly defaultTimeoutMs: number;
  /** Routes for each request, read live so a push re-routes open connections. */
  readonly routes?: () => RouteConfiguration | undefined;
  /** With no routes, every request goes to this cluster (tcp_proxy's, or the filter's `cluster`). */
  readonly cluster?: string;
  /** Nothing in flight and nothing read for this long: closed. 0 disables. */
  readonly idleTimeoutMs: number;
  /** A frame must complete within this of its first byte; undefined: the bootstrap's. 0 disables. */
  readonly frameTimeoutMs?: number;
  /** The filter's access log path (`-`: stdout); undefined: --access-log's, if any. */
  readonly accessLog?: string;
}

const DEFAULT_BUFFER_LIMIT = 1024 * 1024;
/** Envoy's delayed_close_timeout: after our FIN, how long a caller may take to close its side. */
const DELAYED_CLOSE_MS = 1000;

/** Retrying is safe when nothing was sent; Istio's default retry_on names connect-failure. */
const DEFAULT_RETRY: RetryPolicy = { numRetries: 2, retryOn: ['connect-failure'], retriableStatusCodes: [] };

interface Target {
  readonly cluster: ClusterState;
  /** The route's `timeout`, when it sets one. */
  readonly routeTimeoutMs: number | undefined;
  readonly retry: RetryPolicy;
  /** The route that matched; undefined on chains without routes. */
  readonly action?: RouteAction;
}

/** How outlier detection counts a response: only server-side errors count against a host. */
function outcomeOf(grpc: number): Outcome {
  const http = httpOf(grpc);
  if (http === 502 || http === 503 || http === 504) return 'gateway-error';
  return http >= 500 ? 'server-error' : 'success';
}

/**
 * One downstream connection speaking an RPC protocol. Frames are decoded header-only; each request is
 * routed and load-balanced on its own, sent over a shared multiplexed pool with its id rewritten, and
 * answered with the upstream's response (id restored) or with a protocol-native error. Never a hang.
 */
export class Session implements PendingOwner, Watched {
  private readonly input: FrameBuffer;
  private closed = false;
  private closing = false;
  private inFlight = 0;
  /** Raw bytes of the requests in flight: with unsent responses, what the buffer limit bounds. */
  private inFlightBytes = 0;
  /** Reading paused because this connection holds more than its buffer limit. */
  private overLimit = false;
  private readonly bufferLimit: number;
  private readonly maxFrameBytes: number;
  private readonly frameTimeoutMs: number;
  /** When the partial frame now in `input` began (0: none). */
  private partialSince = 0;
  private lastActive = coarseNow;
  /** When we ended our side; a caller that does not close its own within DELAYED_CLOSE_MS is cut. */
  private endedAt = 0;
  private readonly waitingOn = new Set<Socket>();
  private readonly dstKeys: readonly string[];
  /** Istio metrics, method stats and access log for this connection's requests. */
  private readonly report: ConnReport;
  /** The virtual host of this connection's destination, for the route config it was looked up in. */
  private dstHost: { readonly config: RouteConfiguration; readonly vh: VirtualHost | undefined } | undefined;

  constructor(
    private readonly ctx: DownstreamContext,
    private readonly opts: SessionOptions,
    first: Buffer | undefined,
  ) {
    this.dstKeys = destinationKeys(ctx.destination);
    this.report = new ConnReport(ctx, opts.codec, opts.accessLog);
    this.input = new FrameBuffer(opts.codec.frameLength);
    const s = ctx.socket;
    this.bufferLimit = ctx.listener.perConnectionBufferLimitBytes ?? DEFAULT_BUFFER_LIMIT;
    // A frame larger than the buffer limit is refused with the codec's too-large error, not held whole.
    this.maxFrameBytes = Math.min(opts.maxFrameBytes, this.bufferLimit);
    this.frameTimeoutMs = opts.frameTimeoutMs ?? limits.frameTimeoutMs;
    rpcMetrics.sniffed.inc({ protocol: opts.codec.name });
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('close', () => {
      this.closed = true;
      this.input.clear();
      unwatch(this);
    });
    watch(this, Math.min(this.frameTimeoutMs || Infinity, opts.idleTimeoutMs || Infinity));
    s.on('error', () => undefined);
    s.on('end', () => {
      // The caller is done sending; answer what is in flight, then close.
      this.closing = true;
      this.endIfIdle();
    });
    if (first) this.onData(first);
    // The first bytes may already have ended it (a frame too large, a bad one): then it is not read again.
    if (!this.closing) s.resume();
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return; // answering what is in flight, then closing: nothing more is read
    this.lastActive = coarseNow;
    const retainedBefore = this.input.retained;
    let buf = this.input.append(chunk);
    const { codec } = this.opts;
    let decoded = false;
    while (buf.length > 0 && !this.closing) {
      const r = codec.decode(buf, this.maxFrameBytes);
      if (r === NEED_MORE) break;
      if (r instanceof CodecError) {
        this.onCodecError(r);
        break;
      }
      decoded = true;
      buf = buf.subarray(r.raw.length);
      this.input.consume(r.raw.length);
      this.handle(r);
    }
    if (this.input.pending === 0) this.partialSince = 0;
    else {
      // The clock of a frame starts at its first byte: a frame trickling in keeps its first stamp.
      if (decoded || this.partialSince === 0) this.partialSince = Date.now();
      // What a growth allocated counts, not only what arrived: the budget charges allocations.
      grew(Math.max(chunk.length, this.input.retained - retainedBefore));
    }
    this.checkLimit();
  }

  // Watched: the sweep in ../limits.ts calls these.
  check(now: number): void {
    if (this.closed) return;
    if (this.endedAt > 0) {
      if (now - this.endedAt >= DELAYED_CLOSE_MS) this.ctx.socket.destroy();
      return;
    }
    // While we hold the caller back (backpressure, buffer limit) its frame cannot complete: no clock then.
    const heldBack = this.overLimit || this.waitingOn.size > 0;
    if (heldBack && this.partialSince > 0) this.partialSince = now;
    if (this.frameTimeoutMs > 0 && this.partialSince > 0 && now - this.partialSince >= this.frameTimeoutMs) this.shed('frame_timeout');
    else if (this.opts.idleTimeoutMs > 0 && this.inFlight === 0 && now - this.lastActive >= this.opts.idleTimeoutMs) this.shed('idle_timeout');
  }

  held(): number {
    return this.input.retained + this.ctx.socket.writableLength;
  }

  idle(): boolean {
    return this.inFlight === 0 && this.input.pending === 0;
  }

  /** Closed by a limit: what is in flight is dropped with the connection (its responses are discarded). */
  shed(reason: CloseReason): void {
    if (this.closed) return;
    countClosed(this.ctx.listener.name, reason, { source: this.ctx.source, protocol: this.opts.codec.name, inFlight: this.inFlight, partialBytes: this.input.pending });
    this.closing = true;
    this.input.clear();
    this.ctx.socket.destroy();
  }

  /**
   * Envoy's per_connection_buffer_limit_bytes: requests in flight plus responses not yet taken by the
   * caller may not exceed the listener's limit; past it the caller is not read until they fit again.
   */
  private checkLimit(): void {
    const s = this.ctx.socket;
    const over = this.inFlightBytes + s.writableLength > this.bufferLimit;
    if (over === this.overLimit) return;
    this.overLimit = over;
    if (over) {
      s.pause();
      if (s.writableNeedDrain) whenDrained(s, () => this.checkLimit());
    } else this.resumeIfClear();
  }

  private resumeIfClear(): void {
    if (!this.overLimit && this.waitingOn.size === 0 && !this.closing && !this.closed) this.ctx.socket.resume();
  }

  /** A bad frame ends this connection only: answer what can be answered, stop reading, close. */
  private onCodecError(err: CodecError): void {
    rpcMetrics.codecErrors.inc({ protocol: this.opts.codec.name, direction: 'downstream', reason: err.reason });
    throttled.warn(`bad frame: ${err.reason}`, { listener: this.ctx.listener.name, source: this.ctx.source, err: err.message }, 'bad frame from downstream, closing the connection');
    if (err.request) this.localReply(err.request, 'frame-too-large', err.message);
    this.input.clear();
    this.partialSince = 0;
    this.closing = true;
    this.ctx.socket.pause();
    this.endIfIdle();
  }

  private handle(frame: Frame): void {
    const { codec } = this.opts;
    if (frame.kind === 'response') return; // callers do not answer us; nothing to do with it
    if (frame.heartbeat) {
      rpcMetrics.heartbeats.inc({ protocol: codec.name });
      batch.write(this.ctx.socket, codec.heartbeatReply(frame));
      return;
    }
    const start = performance.now();
    const target = this.target(frame);
    if (typeof target === 'string') return this.localReply(frame, 'no-route', target, 0, undefined, undefined, start);
    const stats = rpcStats(codec.name, target.cluster.cluster.name);
    const action = target.action;
    if (action && (action.rateLimit || action.fault)) return this.gate(frame, target, action, stats, start);
    this.dispatch(frame, target, stats, start, 0);
  }

  /** The route's rate limit and faults, before the request goes upstream (a delay holds it here). */
  private gate(frame: Frame, target: Target, action: RouteAction, stats: RpcStats, start: number): void {
    const route = action.routeName ?? '';
    if (rateLimited(action.rateLimit, route)) return this.localReply(frame, 'overflow', `local rate limit of route ${route}`, ResponseFlag.RL, target.cluster, stats, start);
    const fault = injectFault(action.fault, route);
    const go = (flags: number) => {
      if (fault.abort) this.localReply(frame, fault.abort.kind, fault.abort.message, flags | ResponseFlag.FI, target.cluster, stats, start);
      else this.dispatch(frame, target, stats, start, flags);
    };
    if (!fault.delayMs) return go(0);
    // Held like a request in flight, so a half-closed caller still gets its answer after the delay.
    this.inFlight++;
    setTimeout(() => {
      this.inFlight--;
      if (this.closed) return;
      go(ResponseFlag.DI);
      this.endIfIdle();
    }, fault.delayMs);
  }

  private dispatch(frame: Frame, target: Target, stats: RpcStats, start: number, flags: number): void {
    const { codec } = this.opts;
    const resources = target.cluster.resources;
    if (frame.kind !== 'oneway' && !resources.tryRequest()) {
      stats.error('overflow');
      return this.localReply(frame, 'overflow', `too many requests in flight to cluster ${target.cluster.cluster.name}`, flags, target.cluster, stats, start);
    }
    const host = target.cluster.pick();
    if (!host) {
      stats.error('no-healthy-upstream');
      return this.localReply(frame, 'no-healthy-upstream', `no healthy endpoint in cluster ${target.cluster.cluster.name}`, flags, target.cluster, stats, start);
    }
    if (frame.kind === 'oneway') {
      stats.oneway++;
      poolFor(host, codec, target.cluster.cluster).sendOneway(frame, this, target.cluster.resources);
      this.report.request(frame, start, target.cluster, host, stats, undefined, undefined, 0, 0, false);
      return;
    }
    stats.requests++;
    this.inFlightBytes += frame.raw.length;
    const p = new Pending(this, frame, host, target.cluster, stats, target.retry);
    p.start = start;
    p.flags = flags;
    resources.requests++;
    // The caller's own deadline, tightened by the route's: an operator can shorten it, never lengthen it.
    const own = frame.timeoutMs ?? Infinity;
    const limit = Math.min(own, target.routeTimeoutMs ?? Infinity);
    const now = Date.now();
    p.overallDeadline = now + (limit === Infinity ? this.opts.defaultTimeoutMs : limit);
    this.arm(p, now);
    this.inFlight++;
    host.active++;
    poolFor(host, codec, target.cluster.cluster).send(p);
  }

  /** The cluster and limits for a request, or why there is none. */
  private target(frame: Frame): Target | string {
    const { opts, ctx } = this;
    let clusterName = opts.cluster;
    let routeTimeoutMs: number | undefined;
    let retry = DEFAULT_RETRY;
    let action: RouteAction | undefined;
    const routes = opts.routes?.();
    if (routes) {
      if (this.dstHost?.config !== routes) this.dstHost = { config: routes, vh: destinationHost(routes, this.dstKeys) };
      action = selectRoute(routes, frame, this.dstHost.vh);
      if (!action) return `no route for ${frame.header('service') ?? '?'}/${frame.header('method') ?? '?'} to ${ctx.destination.address}:${ctx.destination.port}`;
      clusterName = action.cluster ?? pickWeighted(action.weightedClusters);
      if (action.timeoutMs) routeTimeoutMs = action.timeoutMs;
      retry = action.retryPolicy ?? DEFAULT_RETRY;
    }
    if (clusterName === undefined) return 'no route configured';
    const cluster = ctx.clusters.get(clusterName);
    if (!cluster) return `cluster ${clusterName} not found`;
    return { cluster, routeTimeoutMs, retry, action };
  }

  /** Each try's deadline: the request's own, or sooner with a per-try timeout. */
  private arm(p: Pending, now: number): void {
    const perTry = p.retry.perTryTimeoutMs;
    p.deadline = perTry ? Math.min(p.overallDeadline, now + perTry) : p.overallDeadline;
    deadlines.add(p);
  }

  /** Answers first, settles after: settling the last request of a half-closed caller ends its socket. */
  complete(p: Pending, response: Frame): void {
    const outlier = p.cluster.outlier;
    // Asked once: the retry policy, outlier detection and telemetry all read it.
    const grpc = response.ok ? 0 : this.opts.codec.grpcStatus(response);
    if (!response.ok) {
      outlier?.report(p.host, outcomeOf(grpc));
      if (retriableResponse(p.retry, grpc) && this.retry(p)) return;
    } else outlier?.report(p.host, 'success');
    if (!this.closed) {
      this.opts.codec.setRequestId(response.raw, p.frame.requestId);
      this.write(response.raw);
    }
    this.report.request(p.frame, p.start, p.cluster, p.host, p.stats, grpc, undefined, p.flags, response.raw.length, this.closed);
    this.settle(p);
  }

  fail(p: Pending, kind: ErrorKind, message: string, sent: boolean): void {
    if (kind === 'connect-failure' || kind === 'upstream-reset' || kind === 'timeout') p.cluster.outlier?.report(p.host, 'local-origin');
    // A timeout is retriable only while the request's own deadline has not passed: a per-try timeout.
    const perTry = kind === 'timeout' && p.overallDeadline > Date.now();
    if ((kind !== 'timeout' || perTry) && retriableFailure(p.retry, kind, sent) && this.retry(p)) return;
    if (perTry) message = `no response within the per-try timeout from ${p.host.key}`;
    p.stats.error(kind);
    const n = this.closed ? 0 : this.reply(p.frame, kind, message);
    this.report.request(p.frame, p.start, p.cluster, p.host, p.stats, undefined, kind, p.flags, n, this.closed);
    this.settle(p);
  }

  /**
   * Sends the request again to another host, if the policy has tries left and the cluster's circuit
   * breakers have a retry to spare; false leaves the failure to be answered (flagged URX when tries ran out).
   */
  private retry(p: Pending): boolean {
    if (this.closed) return false;
    if (p.attempts > p.retry.numRetries) {
      if (p.retry.numRetries > 0) p.flags |= ResponseFlag.URX;
      return false;
    }
    const next = this.retryHost(p);
    if (!next) return false;
    if (!p.retrying) {
      if (!p.cluster.resources.tryRetry()) return false;
      p.retrying = true;
      p.cluster.resources.retries++;
    }
    deadlines.remove(p);
    p.attempts++;
    p.stats.retries++;
    p.host.active--;
    p.host = next;
    next.active++;
    this.arm(p, Date.now());
    poolFor(next, this.opts.codec, p.cluster.cluster).send(p);
    return true;
  }

  /** Another usable host than the one that failed, when the cluster has one. */
  private retryHost(p: Pending) {
    for (let i = 0; i < 3; i++) {
      const h = p.cluster.pick();
      if (h && h !== p.host) return h;
    }
    return p.cluster.usableHosts.length === 1 ? p.cluster.usableHosts[0] : undefined;
  }

  private settle(p: Pending): void {
    deadlines.remove(p);
    p.cluster.resources.requests--;
    if (p.retrying) p.cluster.resources.retries--;
    p.host.active--;
    this.inFlight--;
    this.inFlightBytes -= p.frame.raw.length;
    this.endIfIdle();
    if (this.overLimit) this.checkLimit();
  }

  /**
   * The request's raw bytes may carry an upstream id and may still sit in an upstream socket's queue, so
   * they are never patched back: the reply is built, then given the caller's id.
   */
  private reply(request: Frame, kind: ErrorKind, message: string): number {
    const err = this.opts.codec.errorResponse(request, kind, message);
    if (!err) return 0;
    this.opts.codec.setRequestId(err, request.requestId);
    this.write(err);
    return err.length;
  }

  /**
   * Answers a request that has no Pending (yet) with the protocol's error for `kind`, and reports it.
   * `flags`: Envoy response flags beyond the kind's own (ResponseFlag.RL for a rate-limited request, FI
   * for a fault abort, DI when it was delayed first).
   */
  private localReply(request: Frame, kind: ErrorKind, message: string, flags = 0, cluster?: ClusterState, stats?: RpcStats, start = performance.now()): void {
    const n = this.closed ? 0 : this.reply(request, kind, message);
    this.report.request(request, start, cluster, undefined, stats, undefined, kind, flags, n, this.closed);
  }

  private write(data: Buffer): void {
    batch.write(this.ctx.socket, data, this);
  }

  /** Backpressure: stop reading this caller until `socket` (ours or an upstream's) drains. */
  pauseFor(socket: Socket): void {
    if (this.waitingOn.has(socket)) return;
    this.waitingOn.add(socket);
    this.ctx.socket.pause();
    whenDrained(socket, () => {
      this.waitingOn.delete(socket);
      if (this.overLimit) this.checkLimit();
      this.resumeIfClear();
    });
  }

  private endIfIdle(): void {
    if (this.closing && this.inFlight === 0 && !this.closed && this.endedAt === 0) {
      batch.flush();
      this.ctx.socket.end();
      this.endedAt = Date.now();
    }
  }
}
