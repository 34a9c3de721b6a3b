/**
 * The DNS part of the sidecar as one unit for server/: the proxy (its address, static table and upstreams
 * from the bootstrap's dns_filter listener, overridden by flags), the NameTable feed, and the registrar,
 * started once the sidecar is ready and withdrawn on drain.
 */
import { hostname } from 'node:os';
import type { DnsProxyConfig, SocketAddress } from '../config/model.js';
import type { Logger } from '../observe/log.js';
import { Forwarder } from './forward.js';
import { Registrar } from './registrar.js';
import { parseHostPort, readResolvConf, type Upstream } from './resolv.js';
import { DnsProxy, type DnsProxyOptions } from './server.js';
import { LocalTable, type NameTableLike } from './table.js';
import type { TsigKey } from './tsig.js';

export const DEFAULT_DNS_ADDRESS: SocketAddress = { address: '127.0.0.1', port: 15053 };
const WITHDRAW_MS = 5000;

export interface RegistrarFlags {
  readonly server: string;
  readonly zone: string;
  readonly key: TsigKey;
  readonly interfaces: readonly string[];
  readonly serviceIps: readonly string[];
  /** Looked up in the NameTable (FQDN, name.ns or, in the pod's namespace, name) when no service IP is given. */
  readonly serviceName?: string;
  readonly ttlSeconds: number;
  readonly intervalMs: number;
}

export interface DnsFlags {
  /** --dns-port: undefined keeps the bootstrap's (or the default) address, 0 turns the proxy off. */
  readonly port?: number;
  /** --dns-upstream, replacing the bootstrap's client_config and resolv.conf. */
  readonly upstreams?: readonly string[];
  readonly resolvConfPath?: string;
  readonly upstreamTimeoutMs?: number;
  /** --dns-udp-worker and its thresholds (udp-offload.ts). */
  readonly udpWorker?: DnsProxyOptions['udpWorker'];
  readonly registrar?: RegistrarFlags;
}

export class DnsService {
  private proxy: DnsProxy | undefined;
  private registrar: Registrar | undefined;
  readonly table: LocalTable;
  private bound: SocketAddress | undefined;
  private readonly resolv: ReturnType<typeof readResolvConf>;

  constructor(
    private readonly cfg: DnsProxyConfig | undefined,
    private readonly flags: DnsFlags,
    private readonly env: Readonly<Record<string, string | undefined>>,
    private readonly log: Logger,
  ) {
    const resolv = readResolvConf(flags.resolvConfPath);
    this.resolv = resolv;
    // The pod's namespace: POD_NAMESPACE, else the Kubernetes search list's first domain (NS.svc.<domain>).
    const namespace = env.POD_NAMESPACE || /^([^.]+)\.svc\./.exec(resolv.search[0] ?? '')?.[1];
    this.table = new LocalTable({ namespace, search: resolv.search, ttl: 30 });
    if (cfg) this.table.setStatic(cfg.names);
  }

  /** Where the proxy listens, once started (undefined when off or not bound). */
  get address(): SocketAddress | undefined {
    return this.bound;
  }

  /**
   * Binds the proxy. An address the operator chose (flag or bootstrap listener) that cannot be bound is a
   * start-up error; the default one is logged and the sidecar runs without DNS (e.g. a second sidecar on
   * one host).
   */
  async start(): Promise<void> {
    if (this.flags.port === 0) {
      this.log.info('dns: proxy off (--dns-port 0)');
      return;
    }
    const explicit = this.flags.port !== undefined || this.cfg !== undefined;
    const listen = { address: this.cfg?.address.address ?? DEFAULT_DNS_ADDRESS.address, port: this.flags.port ?? this.cfg?.address.port ?? DEFAULT_DNS_ADDRESS.port };
    const upstreams = this.upstreams(listen);
    const forwarder = new Forwarder({ upstreams, timeoutMs: this.flags.upstreamTimeoutMs ?? this.cfg?.resolutionTimeoutMs ?? 2000, log: throttled(this.log) });
    const proxy = new DnsProxy({ address: listen.address, port: listen.port, table: this.table, forwarder, log: this.log, udpWorker: this.flags.udpWorker });
    try {
      const a = await proxy.start();
      this.bound = { address: a.address, port: a.port };
    } catch (e) {
      const msg = `dns: cannot listen on ${listen.address}:${listen.port}: ${(e as Error).message}`;
      if (explicit) throw new Error(msg);
      this.log.error(`${msg}; DNS proxy off`);
      return;
    }
    this.proxy = proxy;
    this.log.info({ address: `${this.bound.address}:${this.bound.port}`, upstreams: upstreams.map((u) => `${u.host}:${u.port}`), staticNames: this.cfg?.names.length ?? 0, search: this.resolv.search }, 'dns: proxy listening (udp, tcp)');
  }

  private upstreams(self: SocketAddress): Upstream[] {
    const list = this.flags.upstreams?.length
      ? this.flags.upstreams.map((u) => parseHostPort(u, 53, '--dns-upstream'))
      : this.cfg?.upstreams.length
        ? this.cfg.upstreams.map((u) => ({ host: u.address, port: u.port || 53 }))
        : [...this.resolv.nameservers];
    // Never forward to ourselves: a resolv.conf pointing at the proxy would loop each query until timeout.
    return list.filter((u) => !(u.port === self.port && (u.host === self.address || (self.address === '0.0.0.0' && u.host.startsWith('127.')))));
  }

  setNameTable(t: NameTableLike): void {
    this.table.setNameTable(t);
  }

  /** The sidecar is ready: start publishing this pod's interfaces. */
  live(): void {
    const r = this.flags.registrar;
    if (!r || this.registrar) return;
    let server: Upstream;
    try {
      server = parseHostPort(r.server, 53, '--dns-update-server');
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'dns registrar: not started');
      return;
    }
    this.registrar = new Registrar({
      server,
      zone: r.zone,
      key: r.key,
      interfaces: r.interfaces,
      serviceIps: () => (r.serviceIps.length > 0 ? r.serviceIps : r.serviceName ? this.table.addressesOf(r.serviceName) : []),
      owner: this.env.POD_NAME ?? hostname(),
      ttlSeconds: r.ttlSeconds,
      intervalMs: r.intervalMs,
      log: this.log,
      onPublished: (names) => this.table.setRegistered(names),
    });
    this.registrar.start();
  }

  /**
   * Drain: withdraw the registrar's records, for at most WITHDRAW_MS (an unreachable server must not hold
   * the pod's exit); the proxy keeps answering until close().
   */
  async drain(): Promise<void> {
    if (!this.registrar) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(() => {
      this.log.warn({ ms: WITHDRAW_MS }, 'dns registrar: withdrawal did not finish in time; exiting anyway');
      r();
    }, WITHDRAW_MS)));
    await Promise.race([this.registrar.withdraw(), late]);
    clearTimeout(timer);
  }

  async close(): Promise<void> {
    this.registrar?.stop();
    await this.proxy?.close();
    this.proxy = undefined;
  }
}

/** At most one upstream-failure line per upstream every 5 s: a dead resolver must not flood the log. */
function throttled(log: Logger): { warn(o: object, msg: string): void } {
  const last = new Map<string, number>();
  return {
    warn(o, msg) {
      const key = String((o as { upstream?: string }).upstream);
      const now = Date.now();
      if ((last.get(key) ?? 0) + 5000 > now) return;
      last.set(key, now);
      log.warn(o, msg);
    },
  };
}
