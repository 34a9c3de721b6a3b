/**
 * The overload manager, after Envoy's: a global limit on downstream connections that refuses new ones
 * (closed at once) before descriptors run out, keeping some for admin, health, xDS, DNS and upstream
 * pools; and a heap monitor whose pressure first closes idle connections, then refuses new ones.
 */
import { getHeapStatistics } from 'node:v8';
import type { Protection } from '../config/model.js';
import { accountedBytes, collectFully, giveBackMemory } from '../memory/compact.js';
import { log } from '../observe/log.js';
import { overloadMetrics } from '../observe/metrics.js';
import { throttled } from '../observe/throttle.js';
import { configureLimits, evictOldestSilent, shedIdle } from '../proxy/limits.js';
import type { DescriptorLimit } from './rlimit.js';

const HEAP_CHECK_MS = 1000;
/** Every this many heap checks, memory freed but kept by malloc is looked at. */
const TRIM_EVERY = 5;

/**
 * Descriptors kept back from downstream connections: a tenth of the limit, between 64 and 1,024. Each
 * downstream connection is then allowed two descriptors (itself and, at L4, its upstream).
 */
export function connectionCeiling(nofile: number): number {
  const reserved = Math.min(1024, Math.max(64, Math.floor(nofile / 10)));
  return Math.max(1, Math.floor((nofile - reserved) / 2));
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
    // A burst of connections has ended: with nothing allocating afterwards V8 never collects what it left
    // (measured: 70 MiB of heap still "used" 20 s after 10,000 silent connections had closed).
    if (this.peakActive >= 1000 && this.active < this.peakActive / 10) {
      collectFully();
      this.peakActive = this.active;
      giveBackMemory(accountedBytes());
      return;
    }
    giveBackMemory(accountedBytes(h));
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
