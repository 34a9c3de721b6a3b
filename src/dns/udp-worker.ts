/**
 * The DNS proxy's UDP socket served off the event loop (see udp-offload.ts for when and why): a worker
 * thread that blocks in recvmmsg(2), answers the table's names in place and sends the batch's answers
 * with one sendmmsg(2). Anything else (a name it does not hold, a malformed or unusual message) goes to
 * the main thread as bytes plus the sender's sockaddr; the main thread answers it as before and replies
 * on the same socket. It imports nothing but wire.ts, table.ts and libc: a small isolate.
 */
import { type MessagePort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { errnoName, loadLibc } from '../sys/libc.js';
import { type Entry, type TableSnapshot, tableAnswer } from './table.js';
import { emptyReply, parseQuery, RCODE, udpLimit } from './wire.js';

export interface WorkerInit {
  readonly fd: number;
  /**
   * Int32 [0]: set to 1 by the main thread to stop (the worker sees it within the socket's receive
   * timeout); [1]: queries the main thread has taken from those handed to it (it adds 1 each).
   */
  readonly control: SharedArrayBuffer;
  readonly port: MessagePort;
  readonly table: TableSnapshot;
  readonly latencyBounds: readonly number[];
}

/** Worker → main. */
export type WorkerMessage =
  | { readonly kind: 'query'; readonly bytes: Uint8Array; readonly from: Uint8Array }
  | { readonly kind: 'ready' }
  | { readonly kind: 'stats'; readonly received: number; readonly handed: number; readonly overload: number; readonly local: Float64Array; readonly dropped: number; readonly latency: Float64Array; readonly latencySum: number }
  | { readonly kind: 'error'; readonly message: string };

/** Main → worker: the table after each change. */
export interface TableMessage {
  readonly table: TableSnapshot;
}

// struct mmsghdr on LP64 Linux (x64, arm64): a msghdr (56 bytes) then msg_len; 64 bytes with padding.
const MMSG = 64;
const NAME = 0;
const NAMELEN = 8;
const IOV = 16;
const IOVLEN = 24;
const FLAGS = 48;
const MSGLEN = 56;
const IOVEC = 16;
/** sockaddr_in6 is 28 bytes; room for either family. */
const ADDR = 32;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;
const MSG_WAITFORONE = 0x10000;
const EAGAIN = 11;
const EINTR = 4;

/** Datagrams per call. At 10,000 queries/s a call usually returns one; under a burst, this many. */
const BATCH = 32;
/**
 * The largest UDP payload, so no query is ever cut. Only the pages a datagram touches become resident
 * (calloc maps the region lazily): a 100-byte query costs one page of its slot.
 */
const SLOT_IN = 65536;
/** Answers up to this go in the batch; a longer one (a name with hundreds of addresses) is sent alone. */
const SLOT_OUT = 4096;
const STATS_MS = 1000;
/**
 * Queries handed to the main thread and not yet taken. A flood of names we do not hold, faster than the
 * main thread forwards, must not queue without bound: beyond this the worker answers SERVFAIL itself.
 */
const MAX_HANDED = 1024;

/**
 * One region per direction: BATCH mmsghdrs, their iovecs, sockaddrs and data slots, wired together once.
 * The kernel writes into `in`; answers are laid out in `out`.
 */
function vectors(libc: NonNullable<ReturnType<typeof loadLibc>>, slot: number) {
  const addrs = BATCH * MMSG;
  const iovs = addrs + BATCH * ADDR;
  const data = iovs + BATCH * IOVEC;
  const mem = libc.allocNative(data + BATCH * slot);
  const dv = new DataView(mem.bytes);
  for (let i = 0; i < BATCH; i++) {
    const h = i * MMSG;
    dv.setBigUint64(h + NAME, BigInt(mem.address + addrs + i * ADDR), true);
    dv.setUint32(h + NAMELEN, ADDR, true);
    dv.setBigUint64(h + IOV, BigInt(mem.address + iovs + i * IOVEC), true);
    dv.setBigUint64(h + IOVLEN, 1n, true);
    dv.setBigUint64(iovs + i * IOVEC, BigInt(mem.address + data + i * slot), true);
    dv.setBigUint64(iovs + i * IOVEC + 8, BigInt(slot), true);
  }
  return { mem, dv, u8: new Uint8Array(mem.bytes), addrs, iovs, data, slot };
}

function run(init: WorkerInit): void {
  const libc = loadLibc();
  if (!libc) throw new Error('koffi is not available in the worker');
  const { fd, port } = init;
  const control = new Int32Array(init.control);
  const rx = vectors(libc, SLOT_IN);
  const tx = vectors(libc, SLOT_OUT);
  let table = withBuffers(init.table);
  const bounds = init.latencyBounds;
  let local = new Float64Array(256);
  let latency = new Float64Array(bounds.length + 1);
  let latencySum = 0;
  let received = 0;
  let handed = 0;
  let handedTotal = 0;
  let overload = 0;
  let dropped = 0;
  let lastStats = performance.now();
  const flush = () => {
    if (received === 0) return;
    const m: WorkerMessage = { kind: 'stats', received, handed, overload, local, dropped, latency, latencySum };
    port.postMessage(m, [local.buffer, latency.buffer]);
    local = new Float64Array(256);
    latency = new Float64Array(bounds.length + 1);
    latencySum = received = handed = overload = dropped = 0;
  };
  port.postMessage({ kind: 'ready' } satisfies WorkerMessage);
  try {
    while (Atomics.load(control, 0) === 0) {
      const n = libc.recvmmsg(fd, rx.mem.address, BATCH, MSG_WAITFORONE, null);
      // At once: anything below may make a libc call of its own.
      const errno = n < 0 ? libc.errno() : 0;
      const started = performance.now();
      // After the wait, not before it: a table sent while we were blocked applies to what just came.
      for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) table = withBuffers((m.message as TableMessage).table);
      if (n < 0 && errno !== EAGAIN && errno !== EINTR) throw new Error(`recvmmsg: ${errnoName(errno)}`);
      let out = 0;
      for (let i = 0; i < n; i++) {
        received++;
        const h = i * MMSG;
        const len = rx.dv.getUint32(h + MSGLEN, true);
        const addrLen = rx.dv.getUint32(h + NAMELEN, true);
        // The kernel wrote the sender's length over the slot's size: give the size back for the next call.
        rx.dv.setUint32(h + NAMELEN, ADDR, true);
        const from = rx.addrs + i * ADDR;
        if ((rx.dv.getInt32(h + FLAGS, true) & MSG_TRUNC) !== 0) {
          dropped++;
          continue;
        }
        const req = Buffer.from(rx.mem.bytes, rx.data + i * SLOT_IN, len);
        const p = parseQuery(req);
        let answer = p.ok ? tableAnswer(table, req, p.query, udpLimit(p.query.ednsSize)) : undefined;
        if (answer !== undefined && p.ok) {
          local[p.query.qtype < 256 ? p.query.qtype : 0]!++;
          const seconds = (performance.now() - started) / 1000;
          let b = 0;
          while (b < bounds.length && seconds > bounds[b]!) b++;
          latency[b]!++;
          latencySum += seconds;
        } else if (((handedTotal - Atomics.load(control, 1)) | 0) < MAX_HANDED) {
          // Copies: the slot is overwritten by the next batch before the main thread reads it.
          const m: WorkerMessage = { kind: 'query', bytes: Uint8Array.from(req), from: rx.u8.slice(from, from + addrLen) };
          port.postMessage(m);
          handed++;
          handedTotal = (handedTotal + 1) | 0;
          continue;
        } else {
          overload++;
          if (!p.ok) continue; // nothing we can safely answer
          answer = emptyReply(req, p.query, RCODE.SERVFAIL);
        }
        if (answer.length > SLOT_OUT) {
          libc.sendto(fd, answer, answer.length, MSG_DONTWAIT, rx.u8.subarray(from, from + addrLen), addrLen);
        } else {
          const o = out * MMSG;
          tx.u8.set(rx.u8.subarray(from, from + addrLen), tx.addrs + out * ADDR);
          tx.dv.setUint32(o + NAMELEN, addrLen, true);
          tx.dv.setBigUint64(tx.iovs + out * IOVEC + 8, BigInt(answer.length), true);
          tx.u8.set(answer, tx.data + out * SLOT_OUT);
          out++;
        }
      }
      // A message the kernel refuses stops sendmmsg there: skip it and send the rest (UDP may drop).
      for (let sent = 0; sent < out; ) {
        const r = libc.sendmmsg(fd, tx.mem.address + sent * MMSG, out - sent, MSG_DONTWAIT);
        sent += r > 0 ? r : 1;
      }
      if (started - lastStats >= STATS_MS) {
        lastStats = started;
        flush();
      }
    }
  } catch (e) {
    port.postMessage({ kind: 'error', message: (e as Error).message } satisfies WorkerMessage);
  } finally {
    flush();
    port.close();
    rx.mem.free();
    tx.mem.free();
  }
}

/** Structured cloning turns the table's Buffers into Uint8Arrays; wire.ts copies from Buffers. */
function withBuffers(t: TableSnapshot): TableSnapshot {
  const entries = new Map<string, Entry>();
  const buf = (a: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  for (const [k, e] of t.entries) entries.set(k, { ...e, v4: e.v4.map(buf), v6: e.v6.map(buf) });
  return { entries, firstSearch: t.firstSearch };
}

run(workerData as WorkerInit);
