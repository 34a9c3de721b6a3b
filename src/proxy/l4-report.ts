/**
 * What an L4 connection tells telemetry: Istio's istio_tcp_* metrics (bytes while it lasts, the close
 * with its response flags) and one access-log line when it ends.
 */
import type { Socket } from 'node:net';
import type { Cluster } from '../config/model.js';
import { flagsString, ResponseFlag } from '../observe/istio/flags.js';
import type { AccessLog } from '../observe/istio/access-log.js';
import { accessLogFor, edgeOf, reporterFor, TcpConn, telemetry } from '../observe/istio/telemetry.js';
import type { Host } from '../upstream/host.js';
import type { DownstreamContext } from './context.js';

const addr = (a: { address: string; port: number }) => (a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);

export { ResponseFlag as L4Flag };

export class L4Report {
  private conn: TcpConn | undefined;
  private readonly startedAt = Date.now();
  private done = false;
  private down: Socket | undefined;
  private up: Socket | undefined;
  private readonly accessLog: AccessLog | undefined;

  constructor(
    private readonly ctx: DownstreamContext,
    private readonly clusterName: string,
    private readonly cluster: Cluster | undefined,
    private readonly host: Host | undefined,
    accessLog?: string,
  ) {
    this.accessLog = accessLog ? accessLogFor(accessLog) : telemetry.accessLog;
  }

  private edge() {
    return edgeOf(reporterFor(this.ctx.listener, 'tcp', this.ctx.socket), this.cluster ?? { name: this.clusterName }, this.host);
  }

  /** The relay began: the connection counts as opened. */
  relaying(down: Socket, up: Socket): void {
    this.down = down;
    this.up = up;
    if (!telemetry.enabled) return;
    this.conn = new TcpConn(this.edge());
    this.conn.down = down;
    this.conn.up = up;
  }

  /** The connection ended, after relaying or (flags UF, UH, NC…) without ever reaching an upstream. */
  closed(flags: number): void {
    if (this.done) return;
    this.done = true;
    if (telemetry.enabled) {
      this.conn ??= new TcpConn(this.edge());
      this.conn.close(flags);
    }
    const log = this.accessLog;
    if (log) {
      const { ctx } = this;
      log.add({
        start_time: new Date(this.startedAt).toISOString(),
        protocol: 'tcp',
        response_flags: flagsString(flags),
        bytes_received: this.up?.bytesWritten ?? 0,
        bytes_sent: this.down?.bytesWritten ?? 0,
        duration: Date.now() - this.startedAt,
        upstream_host: this.host ? this.host.key : this.up ? addr(ctx.destination) : null,
        upstream_cluster: this.clusterName,
        downstream_local_address: addr(ctx.destination),
        downstream_remote_address: addr(ctx.source),
        listener: ctx.listener.name,
      });
    }
  }
}
