import type { Socket } from 'node:net';
import { type Codec, CodecError, NEED_MORE } from '../../protocols/codec.js';
import { findCodec } from '../../protocols/registry.js';
import type { HealthCheck } from '../config/model.js';
import { log } from '../observe/log.js';
import { metrics } from '../observe/metrics.js';
import { connectUpstream } from './connect.js';
import type { Host } from './host.js';

/**
 * Active health checking for one cluster: every interval each host gets a TCP connect, or with the
 * rpc_heartbeat checker a connection that must answer the protocol's heartbeat within the timeout.
 * unhealthy_threshold failures in a row take a host out of rotation, healthy_threshold successes bring it
 * back. Hosts start in rotation: the first check runs at once.
 */
export class ActiveHealthChecker {
  private readonly timer: NodeJS.Timeout;
  private readonly codec: Codec | undefined;
  private readonly streak = new WeakMap<Host, number>();
  private running = new Set<Socket>();

  constructor(
    readonly cluster: string,
    readonly check: HealthCheck,
    private hosts: readonly Host[],
  ) {
    this.codec = check.protocol ? findCodec(check.protocol) : undefined;
    this.timer = setInterval(() => this.round(), check.intervalMs).unref();
    this.round();
  }

  setHosts(hosts: readonly Host[]): void {
    this.hosts = hosts;
  }

  private round(): void {
    for (const h of this.hosts) this.probe(h);
  }

  private probe(host: Host): void {
    let done = false;
    const finish = (ok: boolean, why?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.running.delete(socket);
      socket.destroy();
      this.record(host, ok, why);
    };
    const timer = setTimeout(() => finish(false, `no answer within ${this.check.timeoutMs} ms`), this.check.timeoutMs);
    const socket = connectUpstream({ address: host.address, port: host.port, timeoutMs: this.check.timeoutMs }, (err) => {
      if (err) return finish(false, err.message);
      if (!this.codec) return finish(true);
      socket.on('error', (e) => finish(false, e.message));
      socket.on('close', () => finish(false, 'closed before answering the heartbeat'));
      let buf = Buffer.alloc(0);
      const codec = this.codec;
      socket.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        const f = codec.decode(buf, 1 << 20);
        if (f === NEED_MORE) return;
        if (f instanceof CodecError) return finish(false, f.message);
        finish(f.heartbeat && f.kind === 'response', 'answered with something other than a heartbeat');
      });
      socket.write(codec.keepalive(1));
    });
    this.running.add(socket);
  }

  private record(host: Host, ok: boolean, why?: string): void {
    metrics.healthCheck.inc({ cluster: this.cluster, result: ok ? 'success' : 'failure' });
    const prev = this.streak.get(host) ?? 0;
    // Positive: successes in a row; negative: failures in a row.
    const streak = ok ? Math.max(prev, 0) + 1 : Math.min(prev, 0) - 1;
    this.streak.set(host, streak);
    if (!ok && !host.checkFailed && -streak >= this.check.unhealthyThreshold) {
      host.checkFailed = true;
      log.warn({ cluster: this.cluster, host: host.key, reason: why }, 'active health check failed: host out of rotation');
    } else if (ok && host.checkFailed && streak >= this.check.healthyThreshold) {
      host.checkFailed = false;
      log.info({ cluster: this.cluster, host: host.key }, 'active health check passed: host back in rotation');
    }
  }

  stop(): void {
    clearInterval(this.timer);
    for (const s of this.running) s.destroy();
    this.running.clear();
  }
}
