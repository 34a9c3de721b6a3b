import type { Socket } from 'node:net';
import { type Codec, CodecError, type ErrorKind, type Frame, NEED_MORE } from '../../../protocols/codec.js';
import type { RetryPolicy, RouteConfiguration, VirtualHost } from '../../config/model.js';
import { log } from '../../observe/log.js';
import { rpcMetrics } from '../../observe/metrics.js';
import { destinationHost, destinationKeys, selectRoute } from '../../router/router.js';
import { pickWeighted } from '../../router/weighted.js';
import type { ClusterState } from '../../upstream/cluster-manager.js';
import type { DownstreamContext } from '../context.js';
import { whenDrained } from './batch.js';
import { batch, deadlines } from './engine-state.js';
import { FrameBuffer } from './frame-buffer.js';
import { Pending, type PendingOwner } from './pending.js';
import { poolFor } from './pool.js';
import { rpcStats } from './stats.js';

export interface SessionOptions {
  readonly codec: Codec;
  readonly maxFrameBytes: number;
  readonly defaultTimeoutMs: number;
  /** Routes for each request, read live so a push re-routes open connections. */
  readonly routes?: () => RouteConfiguration | undefined;
  /** With no routes, every request goes to this cluster (tcp_proxy's, or the filter's `cluster`). */
  readonly cluster?: string;
}

/** Retrying is safe when nothing was sent; Istio's default retry_on names connect-failure. */
const DEFAULT_RETRY: RetryPolicy = { numRetries: 2, retryOn: ['connect-failure'] };

function retriable(policy: RetryPolicy, kind: ErrorKind, sent: boolean): boolean {
  if (kind === 'connect-failure' && !sent) return policy.retryOn.includes('connect-failure') || policy.retryOn.includes('refused-stream') || policy.retryOn.includes('reset');
  return kind === 'upstream-reset' && policy.retryOn.includes('reset');
}

interface Target {
  readonly cluster: ClusterState;
  /** The route's `timeout`, when it sets one. */
  readonly routeTimeoutMs: number | undefined;
  readonly retry: RetryPolicy;
}

/**
 * One downstream connection speaking an RPC protocol. Frames are decoded header-only; each request is
 * routed and load-balanced on its own, sent over a shared multiplexed pool with its id rewritten, and
 * answered with the upstream's response (id restored) or with a protocol-native error. Never a hang.
 */
export class Session implements PendingOwner {
  private readonly input = new FrameBuffer();
  private closed = false;
  private closing = false;
  private inFlight = 0;
  private readonly waitingOn = new Set<Socket>();
  private readonly dstKeys: readonly string[];
  /** The virtual host of this connection's destination, for the route config it was looked up in. */
  private dstHost: { readonly config: RouteConfiguration; readonly vh: VirtualHost | undefined } | undefined;

  constructor(
    private readonly ctx: DownstreamContext,
    private readonly opts: SessionOptions,
    first: Buffer | undefined,
  ) {
    this.dstKeys = destinationKeys(ctx.destination);
    const s = ctx.socket;
    rpcMetrics.sniffed.inc({ protocol: opts.codec.name });
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('close', () => (this.closed = true));
    s.on('error', () => undefined);
    s.on('end', () => {
      // The caller is done sending; answer what is in flight, then close.
      this.closing = true;
      this.endIfIdle();
    });
    if (first) this.onData(first);
    s.resume();
  }

  private onData(chunk: Buffer): void {
    let buf = this.input.append(chunk);
    const { codec } = this.opts;
    while (buf.length > 0 && !this.closing) {
      const r = codec.decode(buf, this.opts.maxFrameBytes);
      if (r === NEED_MORE) break;
      if (r instanceof CodecError) {
        this.onCodecError(r);
        break;
      }
      buf = buf.subarray(r.raw.length);
      this.input.consume(r.raw.length);
      this.handle(r);
    }
  }

  /** A bad frame ends this connection only: answer what can be answered, stop reading, close. */
  private onCodecError(err: CodecError): void {
    rpcMetrics.codecErrors.inc({ protocol: this.opts.codec.name, direction: 'downstream', reason: err.reason });
    log.warn({ listener: this.ctx.listener.name, source: this.ctx.source, err: err.message }, 'bad frame from downstream, closing the connection');
    if (err.request) this.reply(err.request, 'frame-too-large', err.message);
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
    const target = this.target(frame);
    if (typeof target === 'string') return this.reply(frame, 'no-route', target);
    const stats = rpcStats(codec.name, target.cluster.cluster.name);
    const host = target.cluster.pick();
    if (!host) {
      stats.error('no-healthy-upstream');
      return this.reply(frame, 'no-healthy-upstream', `no healthy endpoint in cluster ${target.cluster.cluster.name}`);
    }
    if (frame.kind === 'oneway') {
      stats.oneway++;
      poolFor(host, codec, target.cluster.cluster).sendOneway(frame, this);
      return;
    }
    stats.requests++;
    const p = new Pending(this, frame, host, target.cluster, stats, target.retry);
    // The caller's own deadline, tightened by the route's: an operator can shorten it, never lengthen it.
    const own = frame.timeoutMs ?? Infinity;
    const limit = Math.min(own, target.routeTimeoutMs ?? Infinity);
    p.deadline = Date.now() + (limit === Infinity ? this.opts.defaultTimeoutMs : limit);
    deadlines.add(p);
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
    const routes = opts.routes?.();
    if (routes) {
      if (this.dstHost?.config !== routes) this.dstHost = { config: routes, vh: destinationHost(routes, this.dstKeys) };
      const action = selectRoute(routes, frame, this.dstHost.vh);
      if (!action) return `no route for ${frame.header('service') ?? '?'}/${frame.header('method') ?? '?'} to ${ctx.destination.address}:${ctx.destination.port}`;
      clusterName = action.cluster ?? pickWeighted(action.weightedClusters);
      if (action.timeoutMs) routeTimeoutMs = action.timeoutMs;
      retry = action.retryPolicy ?? DEFAULT_RETRY;
    }
    if (clusterName === undefined) return 'no route configured';
    const cluster = ctx.clusters.get(clusterName);
    if (!cluster) return `cluster ${clusterName} not found`;
    return { cluster, routeTimeoutMs, retry };
  }

  /** Answers first, settles after: settling the last request of a half-closed caller ends its socket. */
  complete(p: Pending, response: Frame): void {
    if (!this.closed) {
      this.opts.codec.setRequestId(response.raw, p.frame.requestId);
      this.write(response.raw);
    }
    this.settle(p);
  }

  fail(p: Pending, kind: ErrorKind, message: string, sent: boolean): void {
    if (!this.closed && p.attempts <= p.retry.numRetries && retriable(p.retry, kind, sent)) {
      const next = this.retryHost(p);
      if (next) {
        p.attempts++;
        p.stats.retries++;
        p.host.active--;
        p.host = next;
        next.active++;
        poolFor(next, this.opts.codec, p.cluster.cluster).send(p);
        return;
      }
    }
    p.stats.error(kind);
    if (!this.closed) this.reply(p.frame, kind, message);
    this.settle(p);
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
    p.host.active--;
    this.inFlight--;
    this.endIfIdle();
  }

  /**
   * The request's raw bytes may carry an upstream id and may still sit in an upstream socket's queue, so
   * they are never patched back: the reply is built, then given the caller's id.
   */
  private reply(request: Frame, kind: ErrorKind, message: string): void {
    const err = this.opts.codec.errorResponse(request, kind, message);
    if (!err) return;
    this.opts.codec.setRequestId(err, request.requestId);
    this.write(err);
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
      if (this.waitingOn.size === 0 && !this.closing && !this.closed) this.ctx.socket.resume();
    });
  }

  private endIfIdle(): void {
    if (this.closing && this.inFlight === 0 && !this.closed) {
      batch.flush();
      this.ctx.socket.end();
    }
  }
}
