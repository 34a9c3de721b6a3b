import type { Server } from 'node:http';
import { type AdminView, type ServerState, startAdmin, startHealth, startPrometheus } from '../admin/admin.js';
import { buildConfigDump } from '../admin/config-dump.js';
import { boundAddress } from '../admin/http.js';
import type { Bootstrap, SocketAddress } from '../config/model.js';
import { type Snapshot, snapshotFromBootstrap } from '../config/snapshot.js';
import { ListenerManager } from '../listener/listener-manager.js';
import { log } from '../observe/log.js';
import { ClusterManager } from '../upstream/cluster-manager.js';
import { usesAds } from '../xds/bootstrap.js';
import type { NameTable, Published, XdsClient } from '../xds/client.js';

export interface SidecarOptions {
  readonly drainTimeoutMs: number;
  readonly admin: SocketAddress;
  readonly health: SocketAddress;
  readonly prometheus: SocketAddress;
  readonly version: string;
  /** --xds-address: istiod's address, replacing the one in the bootstrap (or enabling ADS without one). */
  readonly xdsAddress?: string;
  /** Where the node identity's POD_NAME, POD_NAMESPACE, INSTANCE_IP and ISTIO_META_* come from. */
  readonly env?: Readonly<Record<string, string | undefined>>;
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
  private xds: XdsClient | undefined;
  /** The xDS config in force (with what /config_dump says about it); undefined until the first one. */
  private published: Published | undefined;
  private readonly nameTableListeners: ((t: NameTable) => void)[] = [];
  /** From xds/: prints the typed configs decoding kept opaque, as Envoy's dump shows them. */
  private expandAnys: ((v: unknown) => unknown) | undefined;

  constructor(
    private readonly bootstrap: Bootstrap,
    private readonly opts: SidecarOptions,
  ) {
    this.listenerManager = new ListenerManager(this.clusterManager, opts.drainTimeoutMs);
  }

  /** Binds admin and the static listeners; throws (before anything proxies) if a listener cannot bind. */
  async start(): Promise<void> {
    // Before anything binds: a bad node identity or xDS address is a start-up error, like a bad bootstrap.
    if (usesAds(this.bootstrap, this.opts.xdsAddress)) {
      // Loaded only when needed: gRPC and the protobuf schema cost a static-config sidecar ~100 ms at start.
      const { createXdsClient, expandOpaqueAnys } = await import('../xds/client.js');
      this.expandAnys = expandOpaqueAnys;
      this.xds = createXdsClient({
        bootstrap: this.bootstrap,
        address: this.opts.xdsAddress,
        env: this.opts.env ?? process.env,
        version: this.opts.version,
        publish: (p) => this.applyXds(p),
        onNameTable: (t) => this.nameTableListeners.forEach((cb) => cb(t)),
        log,
      });
    }
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
    // With ADS, LIVE waits for the first complete config from istiod; a static config is complete now.
    if (!this.xds) this.current = 'LIVE';
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
    this.xds?.start();
  }

  /** Applies a Snapshot from xDS; the first one makes the sidecar LIVE. */
  private async applyXds(p: Published): Promise<void> {
    if (this.current === 'DRAINING') return;
    const errors = await this.applySnapshot(p.snapshot);
    for (const e of errors) log.error({ err: e.message, version: p.snapshot.version }, 'xds: listener could not bind');
    this.published = p;
    if (this.current === 'PRE_INITIALIZING') {
      this.current = 'LIVE';
      log.info({ version: p.snapshot.version, listeners: this.listenerManager.describe().length }, 'xds: first complete config applied, LIVE');
    }
  }

  /** Istio's NameTable (NDS) for the DNS proxy: called with each new table. */
  onNameTable(cb: (t: NameTable) => void): void {
    this.nameTableListeners.push(cb);
    const latest = this.xds?.nameTable;
    if (latest) cb(latest);
  }

  /** The xDS client's state (versions, rejections, warming, connection), for admin and tests. */
  xdsStatus() {
    return this.xds?.status();
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
      this.xds?.stop();
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
    const status = this.xds?.status();
    const dump = buildConfigDump({
      bootstrap: this.bootstrap.raw,
      snapshot: this.snapshot,
      staticLastUpdated: this.startedAt.toISOString(),
      dynamic: this.published?.resources,
      versions: status?.versions,
      rejected: status?.rejected,
      warming: status?.warming,
    });
    return this.expandAnys ? (this.expandAnys(dump) as object) : dump;
  }

  clusters() {
    return this.clusterManager.all();
  }

  listeners() {
    return this.listenerManager.describe();
  }

  serverInfo(): object {
    const uptime = `${Math.floor((Date.now() - this.startedAt.getTime()) / 1000)}s`;
    const xds = this.xds?.status();
    return {
      version: `xsidecar/${this.opts.version}`,
      state: this.current,
      uptime_current_epoch: uptime,
      uptime_all_epochs: uptime,
      command_line_options: { drain_time: `${this.opts.drainTimeoutMs / 1000}s` },
      node: this.xds?.node ?? this.bootstrap.node,
      ...(xds ? { xds: { api: xds.api, target: xds.target, connected: xds.connected, ready: xds.ready, versions: xds.versions } } : {}),
      memory: { rss: process.memoryUsage.rss(), heap_used: process.memoryUsage().heapUsed },
    };
  }

  quit(): void {
    void this.drain().then(() => process.exit(0));
  }
}
