import type { Server } from 'node:http';
import { type AdminView, type ServerState, startAdmin, startHealth, startPrometheus } from '../admin/admin.js';
import { buildConfigDump } from '../admin/config-dump.js';
import { boundAddress } from '../admin/http.js';
import type { Bootstrap, SocketAddress } from '../config/model.js';
import { type Snapshot, snapshotFromBootstrap } from '../config/snapshot.js';
import { type DnsFlags, DnsService } from '../dns/dns-service.js';
import { defaultProtection } from '../config/protection.js';
import { type IdentityFlags, type IdentityOptions, identityOptionsFrom } from '../identity/options.js';
import { snapshotNeedsIdentity } from '../identity/needs.js';
import type { WorkloadIdentity } from '../identity/workload-identity.js';
import { ListenerManager } from '../listener/listener-manager.js';
import { OverloadManager } from '../listener/overload.js';
import { raiseDescriptorLimit } from '../listener/rlimit.js';
import { endStartupTiering } from '../sys/tiering.js';
import { compactAfterConfig, configArriving, mapLargeBlocksAlone } from '../memory/compact.js';
import { youngGeneration } from '../memory/young-generation.js';
import { log } from '../observe/log.js';
import { ClusterManager } from '../upstream/cluster-manager.js';
import { usesAds } from '../xds/bootstrap.js';
import { closeAccessLogs } from '../observe/istio/telemetry.js';
import { nodeMetadata, setUpTelemetry, type TelemetryFlags } from './telemetry-config.js';
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
  /** The DNS proxy and registrar (the CLI always passes this; without it there is no DNS proxy). */
  readonly dns?: DnsFlags;
  /** --ca-address, --ca-root-cert, --token-file (the rest of the identity comes from the environment). */
  readonly identity?: IdentityFlags;
  /** Istio metrics on or off, the access log, the method-stats bound. */
  readonly telemetry?: TelemetryFlags;
}

/** Wires config, listeners, upstreams and admin together; the CLI only parses flags and calls this. */
export class Sidecar implements AdminView {
  healthFailed = false;
  private current: ServerState = 'PRE_INITIALIZING';
  private snapshot: Snapshot | undefined;
  private readonly clusterManager = new ClusterManager();
  private readonly listenerManager: ListenerManager;
  private readonly overload: OverloadManager;
  private readonly servers: Server[] = [];
  private readonly startedAt = new Date();
  private stopping: Promise<void> | undefined;
  private xds: XdsClient | undefined;
  /** The xDS config in force (with what /config_dump says about it); undefined until the first one. */
  private published: Published | undefined;
  private readonly nameTableListeners: ((t: NameTable) => void)[] = [];
  /** From xds/: prints the typed configs decoding kept opaque, as Envoy's dump shows them. */
  private expandAnys: ((v: unknown) => unknown) | undefined;
  private dns: DnsService | undefined;
  /** The CA client and its certificate; started when CA_ADDR is set or the config needs a certificate. */
  private identity: WorkloadIdentity | undefined;
  private identityOptions: IdentityOptions | undefined;
  /** The config in force (or the xDS connection) needs the workload certificate: readiness waits for it. */
  private needsCertificate = false;
  private warnedNoCa = false;
  private xdsNeedsCertificate = false;

  constructor(
    private readonly bootstrap: Bootstrap,
    private readonly opts: SidecarOptions,
  ) {
    // The soft descriptor limit goes up to the hard one first: the connection limit is derived from it.
    this.overload = new OverloadManager(bootstrap.protection ?? defaultProtection(), raiseDescriptorLimit());
    this.listenerManager = new ListenerManager(this.clusterManager, opts.drainTimeoutMs, this.overload);
  }

  /** Binds admin and the static listeners; throws (before anything proxies) if a listener cannot bind. */
  async start(): Promise<void> {
    const env = this.opts.env ?? process.env;
    // A malformed CA_ADDR, SECRET_TTL… is a start-up error, like a bad bootstrap.
    this.identityOptions = identityOptionsFrom(env, this.opts.identity);
    // Before anything binds: a bad node identity or xDS address is a start-up error, like a bad bootstrap.
    if (usesAds(this.bootstrap, this.opts.xdsAddress)) {
      // Loaded only when needed: gRPC and the protobuf schema cost a static-config sidecar ~100 ms at start.
      const { createXdsClient, expandOpaqueAnys, xdsNeedsIdentity } = await import('../xds/client.js');
      mapLargeBlocksAlone(); // before the first push's buffers
      this.expandAnys = expandOpaqueAnys;
      this.xdsNeedsCertificate = xdsNeedsIdentity(this.bootstrap, this.opts.xdsAddress);
      // Istio's injector always sets CA_ADDR: the CA client then runs, but readiness waits for its
      // certificate only when the config (or the xDS connection) needs it.
      if (this.xdsNeedsCertificate || env.CA_ADDR || this.opts.identity?.caAddress) await this.startIdentity();
      const { xdsIdentityOf } = await import('../identity/identity.js');
      this.xds = createXdsClient({
        bootstrap: this.bootstrap,
        address: this.opts.xdsAddress,
        env: this.opts.env ?? process.env,
        version: this.opts.version,
        publish: (p) => this.applyXds(p),
        onNameTable: (t) => this.nameTableListeners.forEach((cb) => cb(t)),
        onResponse: configArriving,
        log,
        identity: this.identity ? xdsIdentityOf(this.identity) : undefined,
      });
    } else if (env.CA_ADDR || this.opts.identity?.caAddress) {
      await this.startIdentity();
    }
    const admin = await startAdmin(this.bootstrap.admin ?? this.opts.admin, this);
    const health = await startHealth(this.opts.health, this);
    const prom = await startPrometheus(this.opts.prometheus);
    setUpTelemetry(this.bootstrap, this.xds?.node.metadata ?? nodeMetadata(this.bootstrap, this.opts.env ?? process.env, this.opts.version), this.opts.telemetry);
    this.servers.push(admin, health, prom);
    const errors = await this.applySnapshot(snapshotFromBootstrap(this.bootstrap));
    if (errors.length > 0) {
      await this.closeServers();
      this.listenerManager.stopAccepting();
      throw new Error(errors.map((e) => e.message).join('; '));
    }
    if (this.opts.dns) {
      const dns = new DnsService(this.bootstrap.dns, this.opts.dns, this.opts.env ?? process.env, log);
      try {
        await dns.start();
      } catch (e) {
        await this.closeServers();
        this.listenerManager.stopAccepting();
        throw e;
      }
      this.dns = dns;
      // The last NameTable stays in force when istiod goes away: no NXDOMAIN storm during an outage.
      this.onNameTable((t) => dns.setNameTable(t));
    }
    // With ADS, LIVE waits for the first complete config from istiod; a static config is complete now.
    if (!this.xds) {
      this.current = 'LIVE';
      // What starting allocated comes back a moment later, as after xDS's first config (idle RSS on Node 24:
      // 63.5 → 60.2 MiB; Node 20 keeps about the same).
      compactAfterConfig({ first: true, static: true });
    }
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
    endStartupTiering();
    if (this.current === 'LIVE') this.dns?.live();
    if (this.xdsNeedsCertificate && this.identity) {
      // mTLS to istiod needs the certificate first; the CA client retries with backoff until it has one.
      void this.identity.whenReady().then(() => this.current !== 'DRAINING' && this.xds?.start());
    } else this.xds?.start();
  }

  /** Starts the CA client once; its certificate feeds mesh TLS (SDS `default` / `ROOTCA`) and the xDS channel. */
  private async startIdentity(): Promise<void> {
    if (this.identity || !this.identityOptions) return;
    const { WorkloadIdentity } = await import('../identity/workload-identity.js');
    const { meshSecretSourceOf } = await import('../identity/identity.js');
    const { setMeshSecretSource } = await import('../upstream/mesh-secrets.js');
    const identity = new WorkloadIdentity(this.identityOptions);
    this.identity = identity;
    setMeshSecretSource(meshSecretSourceOf(identity));
    log.info({ ca: this.identityOptions.caAddress, trustDomain: this.identityOptions.trustDomain, keyAlgorithm: this.identityOptions.keyAlgorithm }, 'identity: requesting the workload certificate');
    identity.start();
  }

  /** The workload certificate's state, for admin and tests. */
  identityStatus() {
    const c = this.identity?.certificate;
    return {
      needed: this.needsCertificate || this.xdsNeedsCertificate,
      ready: this.identity?.ready ?? false,
      ...(c ? { spiffeId: c.spiffeId, notAfter: c.notAfter.toISOString(), generation: c.generation } : {}),
      ...(this.identity?.lastError ? { lastError: this.identity.lastError } : {}),
    };
  }

  /** Applies a Snapshot from xDS; the first one makes the sidecar LIVE. */
  private async applyXds(p: Published): Promise<void> {
    if (this.current === 'DRAINING') return;
    const started = performance.now();
    const errors = await this.applySnapshot(p.snapshot);
    for (const e of errors) log.error({ err: e.message, version: p.snapshot.version }, 'xds: listener could not bind');
    // The Snapshot is built after the responses at hand are ACKed (src/xds/engine.ts): this line, not the
    // last ACK, is when a push is in force (bench/xds-scale.ts times a push to it).
    log.info({ version: p.snapshot.version, applyMs: Math.round(performance.now() - started) }, 'xds: config applied');
    this.published = p;
    compactAfterConfig({ first: this.current === 'PRE_INITIALIZING' });
    if (this.current === 'PRE_INITIALIZING') {
      this.current = 'LIVE';
      this.dns?.live();
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
    const needs = snapshotNeedsIdentity(snapshot);
    this.needsCertificate = needs && (this.identityOptions?.configured ?? false);
    if (this.needsCertificate) await this.startIdentity();
    else if (needs && !this.warnedNoCa) {
      this.warnedNoCa = true;
      log.warn('the config asks for mesh mTLS but no CA is configured (CA_ADDR, --ca-address or the Istio token): those TLS connections will fail');
    }
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
      this.identity?.stop();
      this.listenerManager.stopAccepting();
      // Withdrawn while connections drain; the proxy itself answers until the end.
      const withdrawn = this.dns?.drain().catch((e: Error) => log.error({ err: e.message }, 'dns: withdrawal failed'));
      const open = this.listenerManager.openConnections;
      log.info({ openConnections: open, drainMs: this.opts.drainTimeoutMs }, 'draining');
      const deadline = Date.now() + this.opts.drainTimeoutMs;
      while (this.listenerManager.openConnections > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const left = this.listenerManager.openConnections;
      this.listenerManager.closeAll();
      await withdrawn;
      await this.dns?.close();
      await this.closeServers();
      await closeAccessLogs();
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
    // Not ready while the config in force needs the workload certificate and there is none (yet).
    if (this.current === 'LIVE' && (this.needsCertificate || this.xdsNeedsCertificate) && !this.identity?.ready) return 'PRE_INITIALIZING';
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
      memory: { rss: process.memoryUsage.rss(), heap_used: process.memoryUsage().heapUsed, young_generation: youngGeneration() },
    };
  }

  quit(): void {
    void this.drain().then(() => process.exit(0));
  }
}
