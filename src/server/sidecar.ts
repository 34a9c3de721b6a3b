import type { Server } from 'node:http';
import { type AdminView, type ServerState, startAdmin, startHealth, startPrometheus } from '../admin/admin.js';
import { buildConfigDump } from '../admin/config-dump.js';
import { boundAddress } from '../admin/http.js';
import type { Bootstrap, SocketAddress } from '../config/model.js';
import { type Snapshot, snapshotFromBootstrap } from '../config/snapshot.js';
import { ListenerManager } from '../listener/listener-manager.js';
import { log } from '../observe/log.js';
import { ClusterManager } from '../upstream/cluster-manager.js';

export interface SidecarOptions {
  readonly drainTimeoutMs: number;
  readonly admin: SocketAddress;
  readonly health: SocketAddress;
  readonly prometheus: SocketAddress;
  readonly version: string;
}

/** Wires config, listeners, upstreams and admin together; the CLI only parses flags and calls this. */
export class Sidecar implements AdminView {
  healthFailed = false;
  private current: ServerState = 'PRE_INITIALIZING';
  private snapshot: Snapshot | undefined;
  private readonly clusterManager = new ClusterManager();
  private readonly listenerManager: ListenerManager;
  private readonly servers: Server[] = [];
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly bootstrap: Bootstrap,
    private readonly opts: SidecarOptions,
  ) {
    this.listenerManager = new ListenerManager(this.clusterManager, opts.drainTimeoutMs);
  }

  /** Binds admin and the static listeners; throws (before anything proxies) if a listener cannot bind. */
  async start(): Promise<void> {
    const admin = await startAdmin(this.bootstrap.admin ?? this.opts.admin, this);
    const health = await startHealth(this.opts.health, this);
    const prom = await startPrometheus(this.opts.prometheus);
    this.servers.push(admin, health, prom);
    const errors = await this.applySnapshot(snapshotFromBootstrap(this.bootstrap));
    if (errors.length > 0) {
      await this.closeServers();
      this.listenerManager.stopAccepting();
      throw new Error(errors.map((e) => e.message).join('; '));
    }
    // With ADS the xDS client flips this once the first complete config is in; a static config is complete now.
    if (!this.bootstrap.dynamicResources?.adsConfig) this.current = 'LIVE';
    log.info(
      {
        listeners: this.listenerManager.describe(),
        admin: boundAddress(admin),
        health: boundAddress(health),
        prometheus: boundAddress(prom),
        state: this.current,
      },
      'xsidecar started',
    );
  }

  async applySnapshot(snapshot: Snapshot): Promise<Error[]> {
    this.clusterManager.update(snapshot);
    const errors = await this.listenerManager.apply(snapshot);
    this.snapshot = snapshot;
    return errors;
  }

  /** SIGTERM: stop accepting, report not ready, give open connections drainTimeoutMs, then close them. */
  drain(): Promise<void> {
    this.stopping ??= (async () => {
      this.current = 'DRAINING';
      this.listenerManager.stopAccepting();
      const open = this.listenerManager.openConnections;
      log.info({ openConnections: open, drainMs: this.opts.drainTimeoutMs }, 'draining');
      const deadline = Date.now() + this.opts.drainTimeoutMs;
      while (this.listenerManager.openConnections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const left = this.listenerManager.openConnections;
      this.listenerManager.closeAll();
      await this.closeServers();
      log.info({ closedAtDeadline: left }, 'drained, exiting');
    })();
    return this.stopping;
  }

  private async closeServers(): Promise<void> {
    for (const s of this.servers) s.closeAllConnections();
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
  }

  // AdminView
  state(): ServerState {
    return this.current;
  }

  configDump(): object {
    const lastUpdated = this.startedAt.toISOString();
    return buildConfigDump({ bootstrap: this.bootstrap.raw, snapshot: this.snapshot, meta: () => ({ dynamic: false, version: 'static', lastUpdated }) });
  }

  clusters() {
    return this.clusterManager.all();
  }

  listeners() {
    return this.listenerManager.describe();
  }

  serverInfo(): object {
    const uptime = `${Math.floor((Date.now() - this.startedAt.getTime()) / 1000)}s`;
    return {
      version: `xsidecar/${this.opts.version}`,
      state: this.current,
      uptime_current_epoch: uptime,
      uptime_all_epochs: uptime,
      command_line_options: { drain_time: `${this.opts.drainTimeoutMs / 1000}s` },
      node: this.bootstrap.node,
    };
  }

  quit(): void {
    void this.drain().then(() => process.exit(0));
  }
}
