/**
 * The DNS proxy's UDP socket, and where it is read.
 *
 * On the main thread, a query waits behind whatever else the event loop is doing (xDS pushes, the data
 * path, a garbage collection), and libuv reads one datagram per wake-up: at 10,000 queries/s the p99 of a
 * bare Node dgram responder on this project's CI machine is about 1 ms. A worker thread blocking in
 * recvmmsg(2) answers the same names with a p99 of a few tenths of a millisecond and less CPU per query
 * (bench/dns.ts). But a worker is a second V8 isolate, about 10 MiB of RSS on Node 20 and 15 MiB on
 * Node 24 (the sidecar idle, `on` against `off`), paid by every pod; most pods ask a few names a second.
 *
 * So the socket is made here (through libc) and kept for the proxy's life, and reading it moves:
 *   - `off`: the main thread only (also when koffi is not there);
 *   - `on`: the worker from the start;
 *   - `auto` (the default): the main thread, moved to the worker once UDP queries stay above `upRate`
 *     per second for two seconds, and back when they stay below a tenth of that for `idleMs`.
 * The main thread reads through a dgram socket made over a copy of the descriptor; the worker gets the
 * descriptor itself. A move closes one reader before the other starts, with the socket left open, so
 * queries that arrive meanwhile wait in its receive buffer and none is lost.
 *
 * In `auto`, the socket starts as a plain dgram socket and koffi loads on the first move, which takes over
 * its descriptor: most pods never move, and koffi is 0.9 (Node 24) to 2.2 MiB (Node 20) of an idle
 * sidecar's RSS.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { readdirSync } from 'node:fs';
import { type AddressInfo, isIP } from 'node:net';
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import type { Logger } from '../observe/log.js';
import { errnoName, type Libc, libcLoadError, loadLibc } from '../sys/libc.js';
import { ipToBuffer, ipToString, type LocalTable } from './table.js';
import type { TableMessage, WorkerInit, WorkerMessage } from './udp-worker.js';

export type UdpWorkerMode = 'auto' | 'on' | 'off';
export type WorkerStats = Extract<WorkerMessage, { kind: 'stats' }>;
type Answer = Buffer | undefined | Promise<Buffer | undefined>;

export interface UdpServerOptions {
  readonly address: string;
  readonly port: number;
  readonly mode: UdpWorkerMode;
  /** auto: UDP queries per second that move reading to the worker (two seconds in a row). */
  readonly upRate: number;
  /** auto: how long below a tenth of upRate before reading comes back to the main thread. */
  readonly idleMs: number;
  readonly table: LocalTable;
  readonly latencyBounds: readonly number[];
  readonly log: Logger;
  /** The reply to a query the worker did not answer itself (or any query, on the main thread). */
  answer(msg: Buffer): Answer;
  /** What the worker answered since its last report, for the proxy's metrics. */
  stats(s: WorkerStats): void;
}

const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_RCVBUF = 8;
const SO_RCVTIMEO = 20;
const SO_TYPE = 3;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0x80000;
const F_DUPFD_CLOEXEC = 1030;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0x800;
const MSG_DONTWAIT = 0x40;
/** How often a blocked worker looks at its stop flag and table messages. */
const WORKER_POLL_US = 100_000;

/**
 * Replies go to the sender's address, always an IP literal (and the bind address is one too: the config
 * requires it). dgram's default lookup (dns.lookup) answers literals on the next tick, a closure and a
 * tick queue entry per reply; this answers at once.
 */
function literalLookup(address: string, _family: unknown, callback: (err: null, address: string, family: number) => void): void {
  callback(null, address, isIP(address));
}

/** libc when it has what the worker needs (Linux with glibc, a 64-bit arch), else null. */
function offloadLibc(): Libc | null {
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) return null;
  return loadLibc();
}

export class UdpServer {
  private libc: Libc | null = null;
  /** Ours, open for the server's life; the dgram socket and the worker read it. -1 without libc. */
  private fd = -1;
  private dgram: UdpSocket | undefined;
  private worker: { thread: Worker; port: MessagePort; control: Int32Array; stopping: boolean } | undefined;
  private moving: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** auto: queries read on the main thread, and by the worker, since the last tick. */
  private seen = 0;
  private hotTicks = 0;
  private quietMs = 0;
  /** The worker failed once: reading stays on the main thread. */
  private broken = false;
  /** Ticks to let pass after a move, before the new reader's rate counts (the worker reports each second). */
  private settling = 0;
  private closed = false;

  constructor(private readonly opts: UdpServerOptions) {}

  /** Where reading happens now, for logs and tests. */
  get reader(): 'main' | 'worker' {
    return this.worker ? 'worker' : 'main';
  }

  async start(): Promise<AddressInfo> {
    const { address, port, mode, log } = this.opts;
    if (mode === 'auto') {
      this.dgram = await this.bindDgram({ port, address });
      this.timer = setInterval(() => this.tick(), 1000).unref();
      return this.dgram.address();
    }
    this.libc = mode === 'off' ? null : offloadLibc();
    if (!this.libc) {
      if (mode === 'on') log.warn({ err: libcLoadError() }, 'dns: the UDP worker needs koffi on 64-bit Linux with glibc; reading UDP on the main thread');
      this.dgram = await this.bindDgram({ port, address });
      return this.dgram.address();
    }
    this.fd = openSocket(this.libc, address, port);
    const bound = socketName(this.libc, this.fd);
    try {
      if (mode === 'on') {
        await this.toWorker({ mode }).catch((e: Error) => {
          this.broken = true;
          log.error({ err: e.message }, 'dns: the UDP worker did not start; reading UDP on the main thread');
          return this.toMain();
        });
      } else this.dgram = await this.adopt();
    } catch (e) {
      this.libc.close(this.fd);
      this.fd = -1;
      throw e;
    }
    return bound;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.moving;
    await this.stopWorker();
    await this.closeDgram();
    if (this.fd >= 0) this.libc!.close(this.fd);
    this.fd = -1;
  }

  private async bindDgram(where: { port: number; address: string } | { fd: number }): Promise<UdpSocket> {
    const s = createSocket({ type: isIP(this.opts.address) === 6 ? 'udp6' : 'udp4', recvBufferSize: 'fd' in where ? undefined : 1 << 20, lookup: literalLookup });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(where, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.on('error', (e) => this.opts.log.warn({ err: e.message }, 'dns: udp socket error'));
    s.on('message', (msg, rinfo) => {
      this.seen++;
      const r = this.opts.answer(msg);
      // A forwarded answer may come back after reading moved to the worker: it goes out on the socket
      // itself then. No callback: one closure less per answer; a failed send surfaces as 'error'.
      if (r instanceof Promise) void r.then((b) => b && (this.dgram === s ? s.send(b, rinfo.port, rinfo.address) : this.sendTo(b, sockaddr(rinfo.address, rinfo.port))));
      else if (r) s.send(r, rinfo.port, rinfo.address);
    });
    return s;
  }

  /** A dgram socket over a copy of our descriptor, for reading on the main thread. */
  private async adopt(): Promise<UdpSocket> {
    const libc = this.libc!;
    const s = await this.bindDgram({ fd: libc.fcntl(this.fd, F_DUPFD_CLOEXEC, 0) });
    // libuv sets SO_REUSEADDR on a socket it adopts: another process could then bind our port and share
    // the queries. The proxy never asked for it.
    const off = Buffer.alloc(4);
    libc.setsockopt(this.fd, SOL_SOCKET, SO_REUSEADDR, off, 4);
    return s;
  }

  private sendTo(b: Buffer, to: Uint8Array | undefined): void {
    if (to && this.fd >= 0) this.libc!.sendto(this.fd, b, b.length, MSG_DONTWAIT, to, to.length);
  }

  private closeDgram(): Promise<void> {
    const s = this.dgram;
    this.dgram = undefined;
    return new Promise((r) => (s ? s.close(() => r()) : r()));
  }

  private tick(): void {
    const rate = this.seen;
    this.seen = 0;
    if (this.closed || this.broken) return;
    if (this.settling > 0) {
      this.settling--;
      return;
    }
    const { upRate, idleMs } = this.opts;
    if (!this.worker) {
      this.hotTicks = rate >= upRate ? this.hotTicks + 1 : 0;
      if (this.hotTicks < 2) return;
      this.hotTicks = 0;
      this.move(() => this.toWorker({ queriesPerSecond: rate }));
    } else {
      this.quietMs = rate < upRate / 10 ? this.quietMs + 1000 : 0;
      if (this.quietMs < idleMs) return;
      this.quietMs = 0;
      this.move(() => this.toMain({ queriesPerSecond: rate }));
    }
  }

  private move(step: () => Promise<void>): void {
    this.settling = 2;
    this.moving = this.moving.then(step).catch(async (e: Error) => {
      this.broken = true;
      this.opts.log.error({ err: e.message }, 'dns: moving UDP reading failed; it stays on the main thread');
      if (this.dgram || this.worker || this.closed) return;
      await this.toMain().catch((e2: Error) => this.opts.log.error({ err: e2.message }, 'dns: UDP cannot be read at all; UDP queries go unanswered (TCP still works)'));
    });
  }

  private async toWorker(why: object): Promise<void> {
    if (this.closed || this.worker) return;
    const libc = this.fd >= 0 ? this.libc! : this.takeOver();
    const { port1, port2 } = new MessageChannel();
    const control = new SharedArrayBuffer(8);
    const init: WorkerInit = { fd: this.fd, control, port: port2, table: this.opts.table.snapshot, latencyBounds: this.opts.latencyBounds };
    // The old generation holds the table (a few MiB for thousands of names); a runaway one dies alone.
    const thread = new Worker(new URL('./udp-worker.js', import.meta.url), { workerData: init, transferList: [port2], resourceLimits: { maxOldGenerationSizeMb: 64 } });
    const w = { thread, port: port1, control: new Int32Array(control), stopping: false };
    this.worker = w;
    let ready: () => void = () => {};
    const started = new Promise<void>((resolve) => (ready = resolve));
    port1.on('message', (m: WorkerMessage) => (m.kind === 'ready' ? ready() : this.fromWorker(m)));
    this.opts.table.onChange((table) => port1.postMessage({ table } satisfies TableMessage));
    thread.on('error', (e) => this.opts.log.error({ err: e.message }, 'dns: UDP worker failed'));
    thread.on('exit', () => {
      if (w.stopping || this.worker !== w) return;
      this.broken = true;
      this.opts.log.error('dns: UDP worker exited; reading UDP on the main thread from now on');
      this.move(() => this.toMain());
    });
    // The main thread reads until the worker is about to (its modules and koffi loaded, which takes tens
    // of milliseconds): a burst meanwhile must not overflow the socket's buffer. The two overlap for a
    // moment, each datagram going to one of them; the worker's first reads do not block until then.
    try {
      await new Promise<void>((resolve, reject) => {
        void started.then(resolve);
        thread.once('error', reject);
        thread.once('exit', () => reject(new Error('the worker exited before it read')));
      });
    } catch (e) {
      await this.stopWorker();
      throw e;
    }
    await this.closeDgram();
    // The dgram socket made the shared file description non-blocking; the worker blocks, with a timeout.
    libc.fcntl(this.fd, F_SETFL, libc.fcntl(this.fd, F_GETFL, 0) & ~O_NONBLOCK);
    this.opts.log.info(why, 'dns: UDP queries moved to a worker thread');
  }

  /** auto, on the first move: koffi, and a descriptor of our own for the dgram socket's socket. */
  private takeOver(): Libc {
    const libc = (this.libc ??= offloadLibc());
    if (!libc) throw new Error(`the UDP worker needs koffi on 64-bit Linux with glibc: ${libcLoadError() ?? 'not this platform'}`);
    const fd = descriptorOf(libc, this.dgram!.address());
    if (fd === undefined) throw new Error('the UDP socket\'s descriptor was not found in /proc/self/fd');
    const own = libc.fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) throw new Error(`fcntl(F_DUPFD_CLOEXEC): ${errnoName(libc.errno())}`);
    this.fd = own;
    if (libc.setsockopt(own, SOL_SOCKET, SO_RCVTIMEO, readTimeout(), 16) !== 0) throw new Error(`setsockopt(SO_RCVTIMEO): ${errnoName(libc.errno())}`);
    return libc;
  }

  private async toMain(why?: object): Promise<void> {
    if (this.closed || this.dgram) return;
    await this.stopWorker();
    this.dgram = await this.adopt();
    if (why) this.opts.log.info(why, 'dns: UDP queries back on the main thread');
  }

  /** Sets the stop flag and waits for the worker to see it (within WORKER_POLL_US) and exit. */
  private async stopWorker(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    w.stopping = true;
    this.opts.table.onChange(undefined);
    Atomics.store(w.control, 0, 1);
    if (w.thread.threadId >= 0) await new Promise((r) => w.thread.once('exit', r));
    // What it sent just before exiting (queries for us to answer, its last counts) is still queued.
    for (let m = receiveMessageOnPort(w.port); m; m = receiveMessageOnPort(w.port)) this.fromWorker(m.message as WorkerMessage);
    w.port.close();
    if (this.worker === w) this.worker = undefined;
  }

  private fromWorker(m: WorkerMessage): void {
    if (m.kind === 'stats') {
      this.seen += m.received;
      this.opts.stats(m);
    } else if (m.kind === 'error') {
      this.opts.log.error({ err: m.message }, 'dns: UDP worker stopped');
    } else if (m.kind === 'query') {
      if (this.worker) Atomics.add(this.worker.control, 1, 1);
      const r = this.opts.answer(Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength));
      if (r instanceof Promise) void r.then((b) => b && this.sendTo(b, m.from));
      else if (r) this.sendTo(r, m.from);
    }
  }
}

/** struct sockaddr_in or sockaddr_in6 for an IP literal; undefined for anything else. */
function sockaddr(address: string, port: number): Buffer | undefined {
  const ip = ipToBuffer(address);
  if (!ip) return undefined;
  const v6 = ip.length === 16;
  const sa = Buffer.alloc(v6 ? 28 : 16);
  sa.writeUInt16LE(v6 ? 10 : 2, 0);
  sa.writeUInt16BE(port, 2);
  ip.copy(sa, v6 ? 8 : 4);
  return sa;
}

/** struct timeval: a worker's blocking reads time out so that it sees its stop flag. */
function readTimeout(): Buffer {
  const timeout = Buffer.alloc(16);
  timeout.writeBigInt64LE(BigInt(WORKER_POLL_US), 8);
  return timeout;
}

/** A UDP socket bound to address:port, blocking reads timing out so a worker can see its stop flag. */
function openSocket(libc: Libc, address: string, port: number): number {
  const sa = sockaddr(address, port);
  if (!sa) throw new Error(`not an IP address: ${address}`);
  const fd = libc.socket(sa.length === 28 ? 10 : 2, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket: ${errnoName(libc.errno())}`);
  const rcvbuf = Buffer.alloc(4);
  rcvbuf.writeInt32LE(1 << 20);
  const step = (what: string, rc: number) => {
    if (rc === 0) return;
    const err = errnoName(libc.errno());
    libc.close(fd);
    throw new Error(`${what}: ${err}`);
  };
  step('setsockopt(SO_RCVBUF)', libc.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, rcvbuf, 4));
  step('setsockopt(SO_RCVTIMEO)', libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, readTimeout(), 16));
  step('bind', libc.bind(fd, sa, sa.length));
  return fd;
}

/**
 * The descriptor of the UDP socket bound to `bound`, found among this process's: dgram does not give its
 * own (its `_handle` is deprecated), and the TCP listener on the same port is told apart by SO_TYPE.
 */
function descriptorOf(libc: Libc, bound: AddressInfo): number | undefined {
  const type = Buffer.alloc(4);
  const ip = ipToBuffer(bound.address) ?? Buffer.alloc(0);
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (libc.getsockopt(fd, SOL_SOCKET, SO_TYPE, type, [4]) !== 0 || type.readInt32LE(0) !== SOCK_DGRAM) continue;
    let at: AddressInfo;
    try {
      at = socketName(libc, fd);
    } catch {
      continue;
    }
    if (at.port === bound.port && ipToBuffer(at.address)?.equals(ip)) return fd;
  }
  return undefined;
}

function socketName(libc: Libc, fd: number): AddressInfo {
  const out = Buffer.alloc(28);
  const len = [out.length];
  if (libc.getsockname(fd, out, len) !== 0) throw new Error(`getsockname: ${errnoName(libc.errno())}`);
  const v6 = out.readUInt16LE(0) === 10;
  const ip = v6 ? out.subarray(8, 24) : out.subarray(4, 8);
  return { address: ipToString(ip), family: v6 ? 'IPv6' : 'IPv4', port: out.readUInt16BE(2) };
}
