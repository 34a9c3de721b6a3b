/**
 * The DNS proxy: UDP and TCP on one address (127.0.0.1:15053 by default). A query for a name in the
 * LocalTable is answered here, authoritatively; anything else is forwarded unchanged. Bad bytes get
 * FORMERR (or are dropped when there is no header to answer), a failed upstream gets SERVFAIL, and every
 * socket is bounded in time and count so no caller can wedge it.
 */
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import type { Logger } from '../observe/log.js';
import type { Forwarder, Transport } from './forward.js';
import { dnsMetrics } from './metrics.js';
import { type LocalTable, tableAnswer } from './table.js';
import { UdpServer, type UdpWorkerMode, type WorkerStats } from './udp-offload.js';
import { emptyReply, formErr, parseQuery, type RawQuery, RCODE, skipName, truncateReply, TYPE, TYPE_NAMES, udpLimit } from './wire.js';

export interface DnsProxyOptions {
  readonly address: string;
  readonly port: number;
  readonly table: LocalTable;
  readonly forwarder: Forwarder;
  readonly log: Logger;
  /** Forwarded queries in flight at once; beyond it new ones get SERVFAIL at once. */
  readonly maxInFlight?: number;
  readonly maxTcpConnections?: number;
  /** A TCP connection with nothing to read or write for this long is closed (RFC 7766 suggests seconds). */
  readonly tcpIdleMs?: number;
  /** Where UDP queries are read: see udp-offload.ts. Default auto, moving at 2,000 queries/s, back after 30 s. */
  readonly udpWorker?: { readonly mode: UdpWorkerMode; readonly upRate?: number; readonly idleMs?: number };
}

type Outcome = 'local' | 'forwarded' | 'failed' | 'malformed' | 'dropped' | 'overload';

const TCP_PENDING_PER_CONNECTION = 32;
/** The query type counted for messages whose type is unknown or unread (labelled OTHER). */
const OTHER = 0;

/** How many ephemeral ports to try for UDP and TCP together (port 0). */
const EPHEMERAL_ATTEMPTS = 5;

export class DnsProxy {
  private udp: UdpServer | undefined;
  private tcp: Server | undefined;
  private readonly conns = new Set<Socket>();
  private inFlight = 0;
  /** Counter cells by transport and outcome, then by query type number: no key string built per query. */
  private readonly counters = { udp: new Map<Outcome, Map<number, { n: number }>>(), tcp: new Map<Outcome, Map<number, { n: number }>>() };
  private readonly timers = new Map<Outcome, (seconds: number) => void>();
  private readonly workerCells = { answered: dnsMetrics.worker.cell('answered'), handed: dnsMetrics.worker.cell('handed'), overload: dnsMetrics.worker.cell('overload'), dropped: dnsMetrics.worker.cell('dropped') };

  constructor(private readonly opts: DnsProxyOptions) {}

  /** Binds UDP then TCP on the same port; throws (nothing left bound) if either cannot. */
  async start(): Promise<AddressInfo> {
    // Port 0: the UDP port the system picks may be taken for TCP by another socket; pick again (a few times).
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startOnce();
      } catch (e) {
        if (this.opts.port !== 0 || (e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= EPHEMERAL_ATTEMPTS) throw e;
      }
    }
  }

  private async startOnce(): Promise<AddressInfo> {
    const { address, log } = this.opts;
    const w = this.opts.udpWorker;
    const udp = new UdpServer({
      address,
      port: this.opts.port,
      mode: w?.mode ?? 'auto',
      upRate: w?.upRate ?? 2000,
      idleMs: w?.idleMs ?? 30_000,
      table: this.opts.table,
      latencyBounds: dnsMetrics.latency.buckets,
      log,
      answer: (msg) => this.answer(msg, 'udp'),
      stats: (s) => this.workerStats(s),
    });
    const bound = await udp.start();
    const tcp = createServer({ noDelay: true }, (s) => this.onTcp(s));
    tcp.maxConnections = this.opts.maxTcpConnections ?? 256;
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(bound.port, address, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      await udp.close();
      throw e;
    }
    tcp.on('error', (e) => log.warn({ err: e.message }, 'dns: tcp server error'));
    this.udp = udp;
    this.tcp = tcp;
    return bound;
  }

  /** Where UDP queries are read now (udp-offload.ts). */
  get udpReader(): 'main' | 'worker' | undefined {
    return this.udp?.reader;
  }

  async close(): Promise<void> {
    for (const s of this.conns) s.destroy();
    await Promise.all([this.udp?.close(), new Promise<void>((r) => (this.tcp ? this.tcp.close(() => r()) : r()))]);
    this.udp = undefined;
    this.tcp = undefined;
  }

  /** The worker's own answers, counted as if answered here. */
  private workerStats(s: WorkerStats): void {
    s.local.forEach((n, qtype) => {
      if (n > 0) this.count('local', qtype, 'udp', n);
    });
    if (s.dropped > 0) this.count('dropped', OTHER, 'udp', s.dropped);
    if (s.overload > 0) this.count('overload', OTHER, 'udp', s.overload);
    this.workerCells.answered.n += s.received - s.handed - s.overload - s.dropped;
    this.workerCells.handed.n += s.handed;
    this.workerCells.overload.n += s.overload;
    this.workerCells.dropped.n += s.dropped;
    dnsMetrics.latency.merge('local', s.latency, s.latencySum);
  }

  private onTcp(s: Socket): void {
    this.conns.add(s);
    let buf: Buffer = Buffer.alloc(0);
    let pending = 0;
    s.setTimeout(this.opts.tcpIdleMs ?? 10_000, () => s.destroy());
    s.on('error', () => {});
    s.on('close', () => this.conns.delete(s));
    const reply = (b: Buffer | undefined) => {
      pending--;
      if (b && !s.destroyed) {
        const len = Buffer.allocUnsafe(2);
        len.writeUInt16BE(b.length);
        s.write(Buffer.concat([len, b]));
      }
      if (s.isPaused() && pending < TCP_PENDING_PER_CONNECTION) s.resume();
    };
    s.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len < 12) {
          // Not even a header: nothing to answer, and the stream cannot be trusted to re-synchronise.
          this.count('malformed', OTHER, 'tcp');
          s.destroy();
          return;
        }
        if (buf.length < 2 + len) break;
        const frame = Buffer.from(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        pending++;
        const r = this.answer(frame, 'tcp');
        if (r instanceof Promise) void r.then(reply);
        else reply(r);
      }
      // Pipelined queries are answered as they complete (RFC 7766 6.2.1.1); a flood of them waits.
      if (pending >= TCP_PENDING_PER_CONNECTION) s.pause();
    });
  }

  /** The reply to one message (a Promise when forwarded), or undefined to send nothing. */
  answer(req: Buffer, transport: Transport): Buffer | undefined | Promise<Buffer | undefined> {
    const started = performance.now();
    const p = parseQuery(req);
    if (!p.ok) {
      if (p.reason === 'short' || p.reason === 'response') {
        this.count('dropped', OTHER, transport);
        return undefined;
      }
      if (p.reason === 'malformed') {
        this.count('malformed', OTHER, transport);
        return formErr(req);
      }
      return this.unusual(req, transport, started);
    }
    const q = p.query;
    const local = tableAnswer(this.opts.table.snapshot, req, q, transport === 'tcp' ? 65535 : udpLimit(q.ednsSize));
    if (local) {
      this.count('local', q.qtype, transport);
      this.time('local', started);
      return local;
    }
    return this.forward(req, q, q.qtype, transport, started);
  }

  /** Several records or sections: checked by dns-packet, then forwarded as they are. */
  private unusual(req: Buffer, transport: Transport, started: number): Buffer | undefined | Promise<Buffer | undefined> {
    let type = OTHER;
    let ednsSize: number | undefined;
    try {
      const packet = dnsPacket.decode(req);
      const qs = packet.questions ?? [];
      // RFC 9619: a query has exactly one question.
      if (qs.length !== 1 && ((req.readUInt16BE(2) >> 11) & 0xf) === 0) throw new Error(`${qs.length} questions`);
      const asked = qs[0]?.type;
      if (asked && asked in TYPE) type = TYPE[asked as keyof typeof TYPE];
      const opt = (packet.additionals ?? []).find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
      ednsSize = opt ? Math.max(512, opt.udpPayloadSize ?? 512) : undefined;
    } catch {
      this.count('malformed', OTHER, transport);
      return formErr(req);
    }
    let off = 12;
    for (let i = req.readUInt16BE(4); i > 0 && off >= 0; i--) off = skipName(req, off) + 4;
    const raw: RawQuery = { id: req.readUInt16BE(0), flags: req.readUInt16BE(2), questionEnd: Math.min(Math.max(off, 12), req.length), ednsSize };
    return this.forward(req, raw, type, transport, started);
  }

  private async forward(req: Buffer, q: RawQuery, type: number, transport: Transport, started: number): Promise<Buffer | undefined> {
    if (this.opts.forwarder.upstreams.length === 0) {
      this.count('failed', type, transport);
      return emptyReply(req, q, RCODE.SERVFAIL);
    }
    if (this.inFlight >= (this.opts.maxInFlight ?? 1024)) {
      this.count('overload', type, transport);
      return emptyReply(req, q, RCODE.SERVFAIL);
    }
    this.inFlight++;
    let reply: Buffer | undefined;
    try {
      reply = await this.opts.forwarder.forward(req, transport);
    } finally {
      this.inFlight--;
    }
    if (!reply) {
      this.count('failed', type, transport);
      this.time('failed', started);
      return emptyReply(req, q, RCODE.SERVFAIL);
    }
    this.count('forwarded', type, transport);
    this.time('forwarded', started);
    if (transport === 'udp' && reply.length > udpLimit(q.ednsSize)) {
      dnsMetrics.truncated.inc({ outcome: 'forwarded' });
      return truncateReply(reply, req, q);
    }
    return reply;
  }

  private count(outcome: Outcome, qtype: number, transport: Transport, n = 1): void {
    // Types we do not name share one cell: the client picks the number, and the map must stay small.
    const type = TYPE_NAMES[qtype] === undefined ? OTHER : qtype;
    const byOutcome = this.counters[transport];
    let byType = byOutcome.get(outcome);
    if (!byType) byOutcome.set(outcome, (byType = new Map()));
    let c = byType.get(type);
    if (!c) byType.set(type, (c = dnsMetrics.queries.cell(outcome, TYPE_NAMES[type] ?? 'OTHER', transport)));
    c.n += n;
  }

  private time(outcome: Outcome, started: number): void {
    let h = this.timers.get(outcome);
    if (!h) this.timers.set(outcome, (h = dnsMetrics.latency.recorder(outcome)));
    h((performance.now() - started) / 1000);
  }
}
