/**
 * What the engine tells telemetry about each request: Istio's metrics (in gRPC's shape), the method-level
 * xsidecar_rpc_* series and the access log. One call per outcome from session.ts; all of it is skipped
 * when metrics are off and no access log is configured.
 */
import type { Codec, ErrorKind, Frame } from '../../../protocols/codec.js';
import type { AccessLog } from '../../observe/istio/access-log.js';
import { flagsString, LOCAL_REPLIES, localCode, ResponseFlag } from '../../observe/istio/flags.js';
import { accessLogFor, edgeOf, recordRequest, type Reporter, reporterFor, telemetry } from '../../observe/istio/telemetry.js';
import type { ClusterState } from '../../upstream/cluster-manager.js';
import type { Host } from '../../upstream/host.js';
import type { DownstreamContext } from '../context.js';
import type { RpcStats } from './stats.js';

export { ResponseFlag };

const addr = (a: { address: string; port: number }) => (a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);

/** Per downstream connection: who reports, and where its access log goes. */
export class ConnReport {
  readonly reporter: Reporter;
  readonly accessLog: AccessLog | undefined;

  constructor(
    private readonly ctx: DownstreamContext,
    private readonly codec: Codec,
    accessLog?: string,
  ) {
    this.reporter = reporterFor(ctx.listener, codec.name, ctx.socket);
    this.accessLog = accessLog ? accessLogFor(accessLog) : telemetry.accessLog;
  }

  /**
   * An upstream's answer (its status as gRPC's, `grpcStatus`), or (`kind`) the sidecar's own reply; neither
   * for a oneway request. `start`: performance.now() at arrival.
   */
  request(
    frame: Frame,
    start: number,
    cluster: ClusterState | undefined,
    host: Host | undefined,
    stats: RpcStats | undefined,
    upstreamGrpc: number | undefined,
    kind: ErrorKind | undefined,
    flags: number,
    responseBytes: number,
    downstreamGone: boolean,
  ): void {
    const on = telemetry.enabled;
    if (!on && !this.accessLog) return;
    let code: number;
    let grpc: number;
    if (kind !== undefined) {
      const local = LOCAL_REPLIES[kind];
      // A fault abort or a rate limit is its own reason (Envoy's FI, RL), not the status it answers with.
      if ((flags & (ResponseFlag.FI | ResponseFlag.RL)) === 0) flags |= local.flag;
      code = localCode(kind, flags);
      grpc = local.grpc;
    } else {
      code = 200;
      grpc = upstreamGrpc ?? 0;
    }
    // The caller left before its answer: Envoy's DC, with no code sent.
    if (downstreamGone) {
      flags |= ResponseFlag.DC;
      code = 0;
    }
    const durationMs = performance.now() - start;
    if (on) {
      recordRequest(edgeOf(this.reporter, cluster?.cluster, host), code, grpc, flags, durationMs, frame.raw.length, responseBytes);
      stats?.methods.record(frame.header('service'), frame.header('method'), grpc, durationMs);
    }
    if (this.accessLog) {
      const ctx = this.ctx;
      this.accessLog.add({
        start_time: new Date(Date.now() - durationMs).toISOString(),
        protocol: this.codec.name,
        rpc_service: frame.header('service') ?? null,
        rpc_method: frame.header('method') ?? null,
        request_id: String(frame.requestId),
        response_code: code,
        grpc_status: grpc,
        response_flags: flagsString(flags),
        response_code_details: kind ?? (upstreamGrpc !== undefined ? 'via_upstream' : '-'),
        bytes_received: frame.raw.length,
        bytes_sent: responseBytes,
        duration: Math.round(durationMs),
        upstream_host: host ? host.key : null,
        upstream_cluster: cluster?.cluster.name ?? null,
        downstream_local_address: addr(ctx.destination),
        downstream_remote_address: addr(ctx.source),
        listener: ctx.listener.name,
        reporter: this.reporter.direction === 'inbound' ? 'destination' : 'source',
      });
    }
  }
}
