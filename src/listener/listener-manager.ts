import { createServer, type Server, type Socket } from 'node:net';
import type { Listener, SocketAddress } from '../config/model.js';
import type { Snapshot } from '../config/snapshot.js';
import { sameSource } from '../config/source.js';
import { mapLargeBlocksAlone } from '../memory/compact.js';
import { log } from '../observe/log.js';
import { metrics } from '../observe/metrics.js';
import { throttled } from '../observe/throttle.js';
import { networkHandler } from '../proxy/context.js';
import type { ClusterManager } from '../upstream/cluster-manager.js';
import { type ConnectionFacts, matchFilterChain } from './chain-match.js';
import { ListenerIndex } from './handoff.js';
import { localDestination, originalDestination } from './original-dst.js';
import type { OverloadManager } from './overload.js';
import { inspectTls, needsTlsInspector } from './tls-inspector.js';
import { terminateTls, tlsMetrics } from './tls-terminator.js';
import { openTransparentListener } from './transparent.js';
import '../proxy/xprotocol/handlers.js';

interface Bound {
  listener: Listener;
  readonly server: Server;
  /** The address actually bound (port 0 resolves to a real port). */
  local: SocketAddress;
}

/**
 * How long the TLS inspector waits for a first byte before calling the connection raw_buffer (a
 * server-first protocol on a port with TLS chains); a TLS client sends its ClientHello at once.
 */
const INSPECTOR_SILENT_MS = 1000;

/**
 * Owns the listening sockets. Each accepted connection is handed off by its original destination, matched
 * to a filter chain and given to that chain's terminal filter, together with the Snapshot of the moment.
 */
export class ListenerManager {
  private snapshot: Snapshot | undefined;
  private index = new ListenerIndex([]);
  private readonly bound = new Map<string, Bound>();
  private readonly conns = new Map<Socket, Listener>();
  private capturePorts = new Set<number>();
  private readonly live = () => this.snapshot!;

  constructor(
    private readonly clusters: ClusterManager,
    private readonly drainTimeoutMs: number,
    /** The global connection limit and heap actions; without one, every connection is accepted. */
    private readonly overload?: OverloadManager,
  ) {}

  /** Applies a new Snapshot: binds new listeners, drains removed or changed ones. Returns bind errors. */
  async apply(snapshot: Snapshot): Promise<Error[]> {
    const errors: Error[] = [];
    const wanted = [...snapshot.listeners.values()].filter((l) => l.bindToPort);
    // Connections belong to the listener that handled them (a hand-off target included), so every
    // removed or changed listener drains, bound or not.
    for (const old of this.snapshot?.listeners.values() ?? []) {
      const next = snapshot.listeners.get(old.name);
      if (!next || !sameSource(old, next)) this.drain(old.name, next);
    }
    for (const [name, b] of this.bound) {
      const next = snapshot.listeners.get(name);
      if (next && next.bindToPort && next.address.address === b.listener.address.address && next.address.port === b.listener.address.port) continue;
      b.server.close();
      this.bound.delete(name);
    }
    for (const l of wanted) {
      const b = this.bound.get(l.name);
      if (b) {
        b.listener = l;
        continue;
      }
      try {
        this.bound.set(l.name, await this.bind(l));
      } catch (e) {
        errors.push(new Error(`listener ${l.name} on ${l.address.address}:${l.address.port}: ${(e as Error).message}`));
      }
    }
    this.snapshot = snapshot;
    this.index = new ListenerIndex(snapshot.listeners.values());
    this.capturePorts = new Set(wanted.filter((l) => l.useOriginalDst || l.originalDstFilter).map((l) => l.address.port));
    return errors;
  }

  private bind(l: Listener): Promise<Bound> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    const bound: Bound = { listener: l, server, local: l.address };
    server.on('connection', (socket) => this.onConnection(bound, socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      const onListening = () => {
        server.off('error', reject);
        // EMFILE/ENFILE on accept arrive here, once per refused connection: counted, logged rate-limited.
        server.on('error', (err) => {
          if (this.overload) this.overload.acceptError(bound.listener.name, err);
          else log.error({ listener: bound.listener.name, err: err.message }, 'listener error');
        });
        const a = server.address();
        if (typeof a === 'object' && a) bound.local = { address: a.address, port: a.port };
        resolve(bound);
      };
      if (l.transparent) server.listen({ fd: openTransparentListener(l.address) }, onListening);
      else server.listen({ host: l.address.address, port: l.address.port, backlog: 511 }, onListening);
    });
  }

  private onConnection(b: Bound, socket: Socket): void {
    socket.on('error', () => undefined); // each filter handles errors; this only keeps the process alive
    const closeNow = () => socket.destroy();
    const onClosed = (fn: () => void) => void socket.once('close', fn);
    if (this.overload && !this.overload.admit(b.listener.name, closeNow, onClosed)) return;
    mapLargeBlocksAlone(); // once, before the first proxied byte
    const snapshot = this.snapshot!;
    const receiving = b.listener;
    metrics.downstreamCx.inc({ listener: receiving.name });
    const wantsOriginal = receiving.useOriginalDst || receiving.originalDstFilter;
    const destination = wantsOriginal ? originalDestination(socket) : localDestination(socket);
    const source = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    if (wantsOriginal && this.capturePorts.has(destination.port)) {
      // Dialled straight at a capture port, or a redirect loop: forwarding would only come back here.
      metrics.loopGuard.inc({ listener: receiving.name });
      throttled.warn('loop guard', { listener: receiving.name, destination, source }, 'loop guard: original destination is a capture port, closing');
      socket.destroy();
      return;
    }
    const listener = receiving.useOriginalDst ? this.index.handOff(receiving, destination) : receiving;
    if (needsTlsInspector(listener)) {
      inspectTls(socket, INSPECTOR_SILENT_MS, (hello) => this.dispatch(socket, listener, snapshot, { destination, source, ...hello }));
      return;
    }
    this.dispatch(socket, listener, snapshot, { destination, source, transportProtocol: 'raw_buffer' });
  }

  /** Matches a filter chain on what is known of the connection and hands it to the chain's terminal filter. */
  private dispatch(socket: Socket, listener: Listener, snapshot: Snapshot, facts: ConnectionFacts): void {
    const { destination, source } = facts;
    const chain = matchFilterChain(listener, facts);
    const filter = chain?.filters[chain.filters.length - 1];
    const handler = filter && networkHandler(filter.kind);
    if (!chain || !filter || !handler) {
      metrics.noFilterChain.inc({ listener: listener.name });
      log.debug({ listener: listener.name, destination }, 'no filter chain matched, closing');
      socket.destroy();
      return;
    }
    this.track(socket, listener);
    if (chain.tls) {
      terminateTls(socket, chain.tls, facts.applicationProtocols ?? [], (err, t) => {
        if (err || !t) {
          tlsMetrics.refused.inc({ listener: listener.name });
          log.debug({ listener: listener.name, chain: chain.name, source, err: err?.message }, 'mesh mTLS refused');
          return;
        }
        tlsMetrics.accepted.inc({ listener: listener.name });
        handler({ socket: t.socket, listener, chain, destination, source, snapshot, live: this.live, clusters: this.clusters }, filter);
      });
      return;
    }
    handler({ socket, listener, chain, destination, source, snapshot, live: this.live, clusters: this.clusters }, filter);
  }

  private track(socket: Socket, listener: Listener): void {
    this.conns.set(socket, listener);
    const gauge = metrics.downstreamCxActive.labels({ listener: listener.name });
    gauge.inc();
    socket.once('close', () => {
      this.conns.delete(socket);
      gauge.dec();
    });
  }

  /**
   * Connections that started on an older config of listener `name` (not on `current`) get drainTimeoutMs
   * to finish, then are closed.
   */
  private drain(name: string, current: Listener | undefined): void {
    const victims = [...this.conns].filter(([, l]) => l.name === name && l !== current).map(([s]) => s);
    if (victims.length === 0) return;
    log.info({ listener: name, connections: victims.length, drainMs: this.drainTimeoutMs }, 'draining connections of a removed or changed listener');
    setTimeout(() => victims.forEach((s) => s.destroy()), this.drainTimeoutMs).unref();
  }

  /** Stops accepting on every listener; open connections carry on. */
  stopAccepting(): void {
    for (const b of this.bound.values()) b.server.close();
  }

  get openConnections(): number {
    return this.conns.size;
  }

  closeAll(): void {
    for (const s of this.conns.keys()) s.destroy();
  }

  describe(): { name: string; address: string; bound: boolean }[] {
    return [...(this.snapshot?.listeners.values() ?? [])].map((l) => {
      const b = this.bound.get(l.name);
      const a = b?.local ?? l.address;
      return { name: l.name, address: `${a.address}:${a.port}`, bound: !!b };
    });
  }
}
