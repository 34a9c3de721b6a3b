import type { Socket } from 'node:net';
import type { NetworkFilterConfig, SocketAddress, TcpProxyConfig, WeightedCluster } from '../config/model.js';
import { log } from '../observe/log.js';
import { metrics } from '../observe/metrics.js';
import type { Host } from '../upstream/host.js';
import { connectUpstream } from '../upstream/connect.js';
import { type DownstreamContext, registerNetworkHandler } from './context.js';

export function pickWeighted(clusters: readonly WeightedCluster[]): string {
  let total = 0;
  for (const c of clusters) total += c.weight;
  let r = Math.random() * total;
  for (const c of clusters) {
    r -= c.weight;
    if (r < 0) return c.name;
  }
  return clusters[clusters.length - 1]!.name;
}

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

function tcpProxy(ctx: DownstreamContext, filter: NetworkFilterConfig): void {
  const cfg = filter as TcpProxyConfig;
  const down = ctx.socket;
  const clusterName = cfg.cluster ?? pickWeighted(cfg.weightedClusters);
  const state = ctx.clusters.get(clusterName);
  if (!state) {
    metrics.unknownCluster.inc({ cluster: clusterName });
    log.warn({ cluster: clusterName, listener: ctx.listener.name }, 'tcp_proxy: cluster not found, closing');
    down.destroy();
    return;
  }
  let target: SocketAddress;
  let host: Host | undefined;
  if (state.isOriginalDst) target = ctx.destination;
  else {
    host = state.pick();
    if (!host) {
      metrics.noHealthyUpstream.inc({ cluster: clusterName });
      down.destroy();
      return;
    }
    target = host;
    host.active++;
  }
  const release = () => host && host.active--;
  metrics.upstreamCx.inc({ cluster: clusterName });
  const pending = connectUpstream(
    { address: target.address, port: target.port, timeoutMs: state.cluster.connectTimeoutMs, localAddress: state.cluster.upstreamBindAddress },
    (err, up) => {
      if (err) {
        metrics.upstreamConnectFail.inc({ cluster: clusterName });
        log.debug({ cluster: clusterName, target, err: err.message }, 'tcp_proxy: upstream connect failed');
        release();
        down.destroy();
        return;
      }
      if (down.destroyed) {
        release();
        up.destroy();
        return;
      }
      relay(down, up, clusterName, cfg.idleTimeoutMs, release);
    },
  );
  // A caller that gives up while we connect should not leave the upstream attempt behind.
  down.once('close', () => {
    if (pending.connecting) pending.destroy();
  });
  down.on('error', () => undefined);
}

registerNetworkHandler('tcp_proxy', tcpProxy);
