/**
 * The overload manager, after Envoy's: a global limit on downstream connections that refuses new ones
 * (closed at once) before descriptors run out, keeping some for admin, health, xDS, DNS and upstream
 * pools; and a heap monitor whose pressure first closes idle connections, then refuses new ones.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Protection } from '../config/model.js';
import { log } from '../observe/log.js';
import { overloadMetrics } from '../observe/metrics.js';
import { throttled } from '../observe/throttle.js';
import { configureLimits, evictOldestSilent, shedIdle } from '../proxy/limits.js';
import { loadLibc } from './libc.js';
import type { DescriptorLimit } from './rlimit.js';

const HEAP_CHECK_MS = 1000;
/** Every this many heap checks, memory freed but kept by malloc is looked at. */
const TRIM_EVERY = 5;
const TRIM_SLACK_BYTES = 16 * 1024 * 1024;

/**
 * Descriptors kept back from downstream connections: a tenth of the limit, between 64 and 1,024. Each
 * downstream connection is then allowed two descriptors (itself and, at L4, its upstream).
 */
export function connectionCeiling(nofile: number): number {
  const reserved = Math.min(1024, Math.max(64, Math.floor(nofile / 10)));
  return Math.max(1, Math.floor((nofile - reserved) / 2));
}

/**
 * After a burst of large Buffers (partial frames, unsent responses) glibc keeps the freed memory: measured
 * with 40 connections growing 15 MiB frames, RSS stayed at 562 MiB with 4 MiB of live heap, and fell to
 * 60 MiB on malloc_trim(0). So when RSS exceeds what V8 and Buffers account for by more than 16 MiB, the
 * slack is handed back. A trim walks malloc's free lists (well under a millisecond here).
 */
let quietUntil = 0;
let gc: ((options?: object) => void) | undefined;

/**
 * One full collection when a burst of connections has ended: with nothing allocating afterwards V8 never
 * collects what the burst left (measured: 70 MiB of heap still "used" 20 s after 10,000 silent connections
 * had closed, 17 MiB after a burst that kept allocating). V8's "last resort" flavour also compacts and
 * unmaps the pages it freed, which a regular major GC keeps committed (2 M small objects dropped: RSS
 * 262 → 62 MB on Node 24 and 267 → 212 MB on Node 20, where a regular one left 214 and 268). About 50 ms,
 * once per burst.
 */
function collectAfterBurst(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as (o?: object) => void;
  }
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
}

function giveBackMemory(accounted: number): void {
  const rss = process.memoryUsage.rss();
  if (rss - accounted < TRIM_SLACK_BYTES || Date.now() < quietUntil) return;
  const libc = loadLibc();
  if (!libc) return;
  libc.mallocTrim(0);
  const after = process.memoryUsage.rss();
  // Slack that a trim cannot release (fragmentation) is not worth a trim every few seconds.
  if (rss - after < TRIM_SLACK_BYTES / 4) quietUntil = Date.now() + 60_000;
  throttled.log('info', 'malloc trim', { rssBefore: rss, rssAfter: after, accounted }, 'memory: returned freed heap to the OS');
}

export class OverloadManager {
  readonly maxConnections: number;
  private active = 0;
  private pressure = 0;
  private ticks = 0;
  /** The most connections seen since the last collection after a burst. */
  private peakActive = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly protection: Protection,
    fds: DescriptorLimit | undefined,
  ) {
    const ceiling = fds ? connectionCeiling(fds.soft) : Number.MAX_SAFE_INTEGER;
    const wanted = protection.maxDownstreamConnections;
    if (wanted !== undefined && wanted > ceiling) {
      log.warn({ configured: wanted, ceiling, nofile: fds?.soft }, 'overload: global_downstream_max_connections is above what the descriptor limit allows; using the ceiling');
    }
    this.maxConnections = Math.min(wanted ?? ceiling, ceiling);
    overloadMetrics.maxConnections.set(this.maxConnections);
    configureLimits(protection, this.maxConnections);
    this.timer = setInterval(() => this.checkHeap(), HEAP_CHECK_MS).unref();
    log.info({ maxConnections: this.maxConnections, nofile: fds?.soft, nofileWas: fds?.was, heapLimit: this.heapLimit() }, 'overload manager');
  }

  private heapLimit(): number {
    return this.protection.maxHeapBytes ?? getHeapStatistics().heap_size_limit;
  }

  /** V8's heap plus the memory of Buffers, over the limit: Buffers live outside V8's heap but cost as much. */
  private checkHeap(): void {
    const h = getHeapStatistics();
    const external = (h as { external_memory?: number }).external_memory ?? 0;
    this.pressure = (h.used_heap_size + external) / this.heapLimit();
    overloadMetrics.heapPressure.set(this.pressure);
    this.peakActive = Math.max(this.peakActive, this.active);
    if (++this.ticks % TRIM_EVERY !== 0) return;
    if (this.peakActive >= 1000 && this.active < this.peakActive / 10) {
      collectAfterBurst();
      this.peakActive = this.active;
      quietUntil = 0;
      const after = getHeapStatistics();
      giveBackMemory(after.total_heap_size + ((after as { external_memory?: number }).external_memory ?? 0));
      return;
    }
    giveBackMemory(h.total_heap_size + external);
    if (this.pressure >= this.protection.shedIdleAt) {
      const shed = shedIdle();
      throttled.warn('heap pressure', { pressure: Number(this.pressure.toFixed(3)), shedIdle: shed }, 'overload: heap pressure, closed idle connections');
    }
  }

  /** Accepts or refuses a new downstream connection; a refused one is closed at once. */
  admit(listener: string, close: () => void, onClosed: (fn: () => void) => void): boolean {
    let reason: 'max_connections' | 'heap_pressure' | undefined;
    if (this.pressure >= this.protection.stopAcceptingAt) reason = 'heap_pressure';
    // At the limit, a caller that has not said a word in the longest time makes room for the new one:
    // silent connections then never lock out callers with something to say.
    else if (this.active >= this.maxConnections && !evictOldestSilent()) reason = 'max_connections';
    if (reason) {
      overloadMetrics.refused.inc({ reason });
      throttled.warn(`refused: ${reason}`, { listener, reason, active: this.active, max: this.maxConnections }, `overload: new connection refused (${reason.replace('_', ' ')})`);
      close();
      return false;
    }
    overloadMetrics.active.set(++this.active);
    onClosed(() => overloadMetrics.active.set(--this.active));
    return true;
  }

  /** EMFILE/ENFILE and other accept errors: never silent. */
  acceptError(listener: string, err: NodeJS.ErrnoException): void {
    const code = err.code ?? 'unknown';
    overloadMetrics.acceptErrors.inc({ listener, code });
    throttled.log('error', `accept: ${code}`, { listener, code, err: err.message, active: this.active }, code === 'EMFILE' || code === 'ENFILE' ? 'out of file descriptors: cannot accept connections' : 'listener error');
  }

  get activeConnections(): number {
    return this.active;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
