import type { Socket } from 'node:net';
import { type Codec, CodecError, type Frame, NEED_MORE } from '../../../protocols/codec.js';
import type { Cluster } from '../../config/model.js';
import { notePeerIdentity } from '../../observe/istio/telemetry.js';
import { log } from '../../observe/log.js';
import { metrics, rpcMetrics } from '../../observe/metrics.js';
import { throttled } from '../../observe/throttle.js';
import type { ClusterResources } from '../../upstream/resources.js';
import { connectUpstream } from '../../upstream/connect.js';
import { transportFor } from '../../upstream/tls-origination.js';
import type { Host } from '../../upstream/host.js';
import type { Throttle } from './batch.js';
import { batch } from './engine-state.js';
import { FrameBuffer } from './frame-buffer.js';
import { IdTable } from './id-table.js';
import type { Pending } from './pending.js';
import { rpcStats } from './stats.js';

const MAX_CONNECTIONS = 4;
/** In-flight requests per connection before the pool opens another one. */
const GROW_AT = 256;
const KEEPALIVE_INTERVAL_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;
/** After a failed connect or a connection lost mid-request, LB avoids the host this long (passive health checking). */
const EJECT_MS = 3_000;
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

const numericId = (id: number | bigint) => (typeof id === 'bigint' ? Number(id) : id);

/** One multiplexed upstream connection: rewrites request ids to its own, restores them on responses. */
class UpstreamConnection {
  readonly pending = new IdTable<Pending>();
  private queue: Pending[] | undefined = [];
  private readonly input: FrameBuffer;
  private lastActive = Date.now();
  private keepaliveSent = 0;
  private keepaliveId = -1;
  private readonly socket: Socket;
  closed = false;
  private draining = false;

  constructor(
    private readonly pool: MultiplexPool,
    /** The circuit breakers this connection counts against: those of the cluster that opened it. */
    readonly resources: ClusterResources,
  ) {
    const { host, cluster } = pool;
    this.input = new FrameBuffer(pool.codec.frameLength);
    resources.connections++;
    metrics.upstreamCx.inc({ cluster: cluster.name });
    this.socket = connectUpstream(
      { address: host.address, port: host.port, timeoutMs: cluster.connectTimeoutMs, localAddress: cluster.upstreamBindAddress, transport: transportFor(cluster, host.transportSocketMatch) },
      (err) => (err ? this.onConnectFailed(err) : this.onConnected()),
    );
  }

  get load(): number {
    return this.pending.size + (this.queue?.length ?? 0);
  }

  private onConnected(): void {
    const s = this.socket;
    notePeerIdentity(this.pool.host, s);
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('error', (err) => log.debug({ upstream: this.pool.host.key, err: err.message }, 'upstream connection error'));
    s.on('close', () => this.onClosed('upstream connection closed'));
    // Upstream sockets allow half-close (for L4): a provider's FIN here means it is gone, and what is in
    // flight will never be answered. Fail it now rather than at its deadline.
    s.on('end', () => {
      this.onClosed('upstream connection closed');
      s.destroy();
    });
    const queued = this.queue!;
    this.queue = undefined;
    for (const p of queued) {
      p.cluster.resources.pending--;
      this.write(p);
    }
  }

  private onConnectFailed(err: Error): void {
    metrics.upstreamConnectFail.inc({ cluster: this.pool.cluster.name });
    this.pool.host.ejectedUntil = Date.now() + EJECT_MS;
    this.closed = true;
    this.pool.remove(this);
    const queued = this.queue ?? [];
    this.queue = undefined;
    for (const p of queued) {
      p.cluster.resources.pending--;
      p.conn = undefined;
      p.owner.fail(p, 'connect-failure', `cannot connect to ${this.pool.host.key}: ${err.message}`, false);
    }
  }

  send(p: Pending): void {
    this.lastActive = Date.now();
    if (!this.queue) {
      p.conn = this;
      return this.write(p);
    }
    // Waiting for the connection: a pending request, which the cluster's max_pending_requests bounds.
    if (!p.cluster.resources.tryPending()) return p.owner.fail(p, 'overflow', `too many requests waiting for a connection to ${this.pool.host.key}`, false);
    p.cluster.resources.pending++;
    p.conn = this;
    this.queue.push(p);
  }

  sendOneway(frame: Frame, writer: Throttle): void {
    this.lastActive = Date.now();
    if (this.queue) return; // dropped before connect: oneway promises nothing, and nobody waits
    // An id of ours that no request holds: some providers answer oneway calls, and the caller's own id
    // could then complete another caller's request.
    this.pool.codec.setRequestId(frame.raw, this.pending.allocate(this.keepaliveId));
    batch.write(this.socket, frame.raw, writer);
  }

  private write(p: Pending): void {
    const id = this.pending.allocate(this.keepaliveId); // 32-bit wrap; 0 and ids in flight are skipped
    p.upstreamId = id;
    this.pool.codec.setRequestId(p.frame.raw, id);
    this.pending.set(id, p);
    batch.write(this.socket, p.frame.raw, p.owner);
  }

  /** The request was answered some other way (timeout): a late response is then dropped. */
  forget(p: Pending): void {
    if (this.pending.get(p.upstreamId) === p) this.pending.delete(p.upstreamId);
    else if (this.queue?.includes(p)) {
      this.queue = this.queue.filter((q) => q !== p);
      p.cluster.resources.pending--;
    }
    p.conn = undefined;
    this.closeIfDrained();
  }

  private onData(chunk: Buffer): void {
    this.lastActive = Date.now();
    let buf = this.input.append(chunk);
    const codec = this.pool.codec;
    while (buf.length > 0) {
      const r = codec.decode(buf, MAX_RESPONSE_BYTES);
      if (r === NEED_MORE) break;
      if (r instanceof CodecError) {
        rpcMetrics.codecErrors.inc({ protocol: codec.name, direction: 'upstream', reason: r.reason });
        throttled.warn('bad frame from upstream', { upstream: this.pool.host.key, err: r.message }, 'upstream sent a bad frame, closing the connection');
        this.socket.destroy();
        break;
      }
      buf = buf.subarray(r.raw.length);
      this.input.consume(r.raw.length);
      if (r.heartbeat) {
        this.onHeartbeat(r);
        continue;
      }
      if (r.kind !== 'response') continue; // other requests from a server are not part of our protocol contract
      const id = numericId(r.requestId);
      const p = this.pending.get(id);
      if (!p) {
        rpcStats(codec.name, this.pool.cluster.name).lateResponses++; // its caller had its timeout reply
        continue;
      }
      this.pending.delete(id);
      p.conn = undefined;
      p.owner.complete(p, r);
    }
    this.closeIfDrained();
  }

  /**
   * Providers probe idle connections too, and close them after a few unanswered probes: answer theirs. Any
   * heartbeat reply proves the peer alive, whatever its id (some providers answer with id 0). A reply we
   * did not ask for is such a provider's probe in disguise (Node's Dubbo provider probes with a response
   * frame): it gets a probe of ours, whose reply then ends the exchange.
   */
  private onHeartbeat(r: Frame): void {
    if (r.kind === 'request') batch.write(this.socket, this.pool.codec.heartbeatReply(r));
    else if (this.keepaliveId >= 0) this.keepaliveId = -1;
    else this.probe(Date.now());
  }

  private probe(now: number): void {
    const id = this.pending.allocate();
    this.keepaliveId = id;
    this.keepaliveSent = now;
    this.lastActive = now;
    this.socket.write(this.pool.codec.keepalive(id));
  }

  private onClosed(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.remove(this);
    const inFlight = this.pending.drain();
    // Dropped with work in flight: the endpoint is likely gone, so steer new requests elsewhere for a while.
    if (inFlight.length > 0) this.pool.host.ejectedUntil = Date.now() + EJECT_MS;
    for (const p of inFlight) {
      p.conn = undefined;
      p.owner.fail(p, 'upstream-reset', `${reason} with the request in flight (${this.pool.host.key})`, true);
    }
  }

  /** Keeps an idle connection alive with the codec's heartbeat; a silent peer is dropped. */
  tick(now: number): void {
    if (this.closed || this.queue) return;
    if (this.keepaliveId >= 0 && now - this.keepaliveSent > KEEPALIVE_TIMEOUT_MS) {
      throttled.warn('keepalive unanswered', { upstream: this.pool.host.key }, 'keepalive unanswered, closing the upstream connection');
      this.socket.destroy();
      return;
    }
    if (this.keepaliveId < 0 && now - this.lastActive >= KEEPALIVE_INTERVAL_MS) this.probe(now);
  }

  drain(): void {
    this.draining = true;
    this.closeIfDrained();
  }

  private closeIfDrained(): void {
    if (this.draining && this.load === 0 && !this.closed) {
      this.closed = true;
      this.pool.remove(this);
      this.socket.end();
    }
  }
}

/**
 * Multiplexed connections to one endpoint for one codec: a few connections shared by every downstream,
 * opened on demand, the least loaded one used.
 */
export class MultiplexPool {
  private readonly conns: UpstreamConnection[] = [];
  private draining = false;
  private readonly keepalive: NodeJS.Timeout;

  constructor(
    readonly host: Host,
    readonly codec: Codec,
    readonly cluster: Cluster,
  ) {
    this.keepalive = setInterval(() => {
      const now = Date.now();
      for (const c of this.conns) c.tick(now);
    }, KEEPALIVE_INTERVAL_MS / 3).unref();
  }

  /** The least loaded connection, or a new one while under the limits; undefined when max_connections forbids one. */
  private pick(resources: ClusterResources): UpstreamConnection | undefined {
    let best: UpstreamConnection | undefined;
    for (const c of this.conns) if (!best || c.load < best.load) best = c;
    if (!best || (best.load >= GROW_AT && this.conns.length < MAX_CONNECTIONS)) {
      if (!resources.canConnect()) {
        if (!best) metrics.upstreamOverflow.inc({ cluster: this.cluster.name, resource: 'connections' });
        return best;
      }
      best = new UpstreamConnection(this, resources);
      this.conns.push(best);
    }
    return best;
  }

  send(p: Pending): void {
    const c = this.pick(p.cluster.resources);
    if (c) c.send(p);
    else p.owner.fail(p, 'overflow', `cluster ${p.cluster.cluster.name} is at its max_connections`, false);
  }

  sendOneway(frame: Frame, writer: Throttle, resources: ClusterResources): void {
    this.pick(resources)?.sendOneway(frame, writer);
  }

  remove(c: UpstreamConnection): void {
    const i = this.conns.indexOf(c);
    if (i >= 0) {
      this.conns.splice(i, 1);
      c.resources.connections--;
    }
    if (this.draining && this.conns.length === 0) clearInterval(this.keepalive);
  }

  /** The endpoint left the cluster: in-flight requests finish, then the connections close. */
  close(): void {
    this.draining = true;
    this.host.dropPool(this.codec.name, this);
    for (const c of [...this.conns]) c.drain();
    if (this.conns.length === 0) clearInterval(this.keepalive);
  }
}

export function poolFor(host: Host, codec: Codec, cluster: Cluster): MultiplexPool {
  let pool = host.pool(codec.name) as MultiplexPool | undefined;
  if (!pool) host.addPool(codec.name, (pool = new MultiplexPool(host, codec, cluster)));
  return pool;
}
