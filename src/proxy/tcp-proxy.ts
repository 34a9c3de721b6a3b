import type { Socket } from 'node:net';
import type { SocketAddress, TcpProxyConfig } from '../config/model.js';
import { notePeerIdentity } from '../observe/istio/telemetry.js';
import { log } from '../observe/log.js';
import { metrics } from '../observe/metrics.js';
import { throttled } from '../observe/throttle.js';
import { pickWeighted } from '../router/weighted.js';
import type { Host } from '../upstream/host.js';
import { connectUpstream } from '../upstream/connect.js';
import { transportFor, type UpstreamTransport } from '../upstream/tls-origination.js';
import type { DownstreamContext } from './context.js';
import { L4Flag, L4Report } from './l4-report.js';

/** Where an L4 connection goes: a cluster, or (no cluster) straight to the original destination. */
export interface L4Target {
  readonly cluster?: string;
  readonly idleTimeoutMs: number;
  /** The filter's access log path; undefined: --access-log's, if any. */
  readonly accessLog?: string;
}

export const l4TargetOf = (cfg: TcpProxyConfig): L4Target => ({
  cluster: cfg.cluster ?? pickWeighted(cfg.weightedClusters),
  idleTimeoutMs: cfg.idleTimeoutMs,
  accessLog: cfg.accessLog,
});

/**
 * Relays bytes both ways. pipe() gives backpressure (a full write buffer pauses the other side's reads)
 * and relays a FIN as end(); errors reset both sides; a clean close of one side ends the other once its
 * queued writes are flushed.
 */
function relay(down: Socket, up: Socket, clusterName: string, idleTimeoutMs: number, release: () => void): void {
  let finished = false;
  const finish = (err?: Error) => {
    if (finished) return;
    finished = true;
    release();
    metrics.bytes.inc({ cluster: clusterName, direction: 'upstream' }, up.bytesWritten);
    metrics.bytes.inc({ cluster: clusterName, direction: 'downstream' }, down.bytesWritten);
    if (err) {
      down.destroy();
      up.destroy();
    }
  };
  down.on('error', finish);
  up.on('error', finish);
  down.on('close', () => (finish(), up.end()));
  up.on('close', () => (finish(), down.end()));
  if (idleTimeoutMs > 0) {
    // Every relayed byte is a read on one socket and a write on the other, so the downstream socket's
    // inactivity timer sees traffic in both directions.
    down.setTimeout(idleTimeoutMs, () => {
      metrics.idleTimeout.inc({ cluster: clusterName });
      finish(new Error('idle timeout'));
    });
  }
  down.pipe(up);
  up.pipe(down);
  down.resume();
}

/**
 * An upstream connection opened for L4 but not yet relaying: the sniffer opens one when the client stays
 * silent (the server may speak first) and either commits to it or cancels it when the client's first
 * bytes turn out to be RPC.
 */
export class L4Attempt {
  private up: Socket | undefined;
  private connected = false;
  private committed: { first?: Buffer } | undefined;
  private done = false;
  private failed = false;
  private host: Host | undefined;
  private readonly clusterName: string;
  /** Called once with the upstream's first bytes when it speaks before the client does. */
  onUpstreamFirst: ((chunk: Buffer) => void) | undefined;

  constructor(
    private readonly ctx: DownstreamContext,
    private readonly target: L4Target,
  ) {
    this.clusterName = target.cluster ?? 'original_dst';
    const down = ctx.socket;
    let dst: SocketAddress = ctx.destination;
    let connectTimeoutMs = 10_000;
    let localAddress: string | undefined;
    let transport: UpstreamTransport;
    if (target.cluster !== undefined) {
      const state = ctx.clusters.get(target.cluster);
      if (!state) {
        metrics.unknownCluster.inc({ cluster: target.cluster });
        throttled.warn('tcp_proxy: cluster not found', { cluster: target.cluster, listener: ctx.listener.name }, 'tcp_proxy: cluster not found, closing');
        this.fail(L4Flag.NC);
        return;
      }
      if (!state.isOriginalDst) {
        this.host = state.pick();
        if (!this.host) {
          metrics.noHealthyUpstream.inc({ cluster: target.cluster });
          this.fail(L4Flag.UH);
          return;
        }
        this.host.active++;
        dst = this.host;
      }
      connectTimeoutMs = state.cluster.connectTimeoutMs;
      localAddress = state.cluster.upstreamBindAddress;
      transport = transportFor(state.cluster, this.host?.transportSocketMatch);
    }
    metrics.upstreamCx.inc({ cluster: this.clusterName });
    this.up = connectUpstream({ address: dst.address, port: dst.port, timeoutMs: connectTimeoutMs, localAddress, transport }, (err, up) => {
      if (err) {
        metrics.upstreamConnectFail.inc({ cluster: this.clusterName });
        log.debug({ cluster: this.clusterName, target: dst, err: err.message }, 'tcp_proxy: upstream connect failed');
        this.fail(L4Flag.UF);
        return;
      }
      this.connected = true;
      if (this.host) notePeerIdentity(this.host, up);
      if (down.destroyed) return this.cancel();
      if (this.committed) this.start();
      else up.once('data', this.onEarlyData);
    });
    // A caller that gives up while we connect should not leave the upstream attempt behind.
    down.once('close', () => {
      if (!this.committed) this.cancel();
    });
  }

  private readonly onEarlyData = (chunk: Buffer) => {
    this.up!.pause();
    this.onUpstreamFirst?.(chunk);
  };

  private release = () => {
    if (this.host) this.host.active--;
    this.host = undefined;
  };

  /** Telemetry for this connection, made once while the host is still known. */
  private report: L4Report | undefined;
  /** Why the attempt failed, as Envoy's response flag (NC, UH, UF). */
  private failFlag = 0;
  private reportOf(): L4Report {
    const state = this.target.cluster === undefined ? undefined : this.ctx.clusters.get(this.target.cluster);
    return (this.report ??= new L4Report(this.ctx, this.clusterName, state?.cluster, this.host, this.target.accessLog));
  }

  /** A speculative attempt fails quietly: the client has not asked for L4 yet and may still speak RPC. */
  private fail(flag = 0): void {
    if (this.done) return;
    this.done = true;
    this.failed = true;
    this.failFlag = flag;
    this.reportOf();
    this.release();
    if (this.committed) {
      this.report!.closed(flag);
      this.ctx.socket.destroy();
    }
  }

  /** False once the attempt failed or was cancelled: commit() would only close the client. */
  get usable(): boolean {
    return !this.failed && !this.done;
  }

  /** Relays from now on; `first` holds client bytes already read (by the sniffer). */
  commit(first?: Buffer): void {
    if (this.failed) {
      this.reportOf().closed(this.failFlag);
      return void this.ctx.socket.destroy();
    }
    if (this.done || this.committed) return;
    this.committed = { first };
    if (this.connected) this.start();
  }

  private start(): void {
    const up = this.up!;
    up.off('data', this.onEarlyData);
    this.done = true;
    if (this.committed?.first) up.write(this.committed.first);
    const report = this.reportOf();
    report.relaying(this.ctx.socket, up);
    relay(this.ctx.socket, up, this.clusterName, this.target.idleTimeoutMs, () => (this.release(), report.closed(0)));
    up.resume();
  }

  /** The client turned out to speak RPC: drop this connection before it carried anything. */
  cancel(): void {
    if (this.done) return;
    this.done = true;
    this.release();
    this.up?.destroy();
  }
}

/** Proxies a connection at L4 to `target`; `first` are bytes a sniffer already read from the client. */
export function proxyL4(ctx: DownstreamContext, target: L4Target, first?: Buffer, attempt?: L4Attempt): void {
  (attempt ?? new L4Attempt(ctx, target)).commit(first);
}
