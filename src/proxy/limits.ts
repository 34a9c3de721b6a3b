/**
 * What one downstream connection may hold, in time and memory, and what all of them together may hold.
 * Connections that sniff or speak RPC register here; one sweep (a timer that runs only while some are
 * registered) checks their timeouts and the process-wide buffer budget, so no connection carries timers
 * of its own and the hot path only stamps a few numbers.
 */
import { totalmem } from 'node:os';
import type { Protection } from '../config/model.js';
import { overloadMetrics } from '../observe/metrics.js';
import { throttled } from '../observe/throttle.js';

export type CloseReason = 'sniff_timeout' | 'frame_timeout' | 'idle_timeout' | 'buffer_budget' | 'heap_pressure' | 'evicted';

/** A downstream connection under watch. */
export interface Watched {
  /** Closes the connection if one of its timeouts has passed. */
  check(now: number): void;
  /** Bytes it keeps alive in partial frames and unsent responses. */
  held(): number;
  /** Nothing in flight and no partial frame: closing it loses no work. */
  idle(): boolean;
  /** Closes it for `reason`, counting it (countClosed). */
  shed(reason: CloseReason): void;
  /** Still sniffing, nothing decisive said: the first to go when a new caller needs its place. */
  readonly silent?: boolean;
}

const MIB = 1024 * 1024;

export interface EngineLimits {
  sniffTimeoutMs: number;
  frameTimeoutMs: number;
  bufferBudgetBytes: number;
  maxEarlyDials: number;
}

/**
 * Partial frames and unsent responses may take a quarter of the machine's memory, between 64 MiB and
 * 1 GiB: far more than the good clients of one pod hold (each is capped by its listener's 1 MiB buffer
 * limit), far less than what would get the pod OOM-killed.
 */
const defaultBudget = () => Math.min(1024 * MIB, Math.max(64 * MIB, Math.floor(totalmem() / 4)));

export const limits: EngineLimits = { sniffTimeoutMs: 15_000, frameTimeoutMs: 30_000, bufferBudgetBytes: defaultBudget(), maxEarlyDials: 1024 };

/** Applies the bootstrap's settings; `maxConnections` is the global limit in force (early dials are a share of it). */
export function configureLimits(p: Protection, maxConnections: number): void {
  limits.sniffTimeoutMs = p.sniffTimeoutMs;
  limits.frameTimeoutMs = p.frameTimeoutMs;
  limits.bufferBudgetBytes = p.bufferBudgetBytes ?? defaultBudget();
  limits.maxEarlyDials = p.maxEarlyDials ?? Math.max(16, Math.min(1024, Math.floor(maxConnections / 8)));
  overloadMetrics.budget.set(limits.bufferBudgetBytes);
}

const watched = new Set<Watched>();
let timer: NodeJS.Timeout | undefined;
let resolutionMs = 1000;
/** Growth since the last sweep; a burst of partial frames triggers a sweep before the timer does. */
let grownSinceSweep = 0;

/**
 * A coarse clock, updated by every sweep, for stamping activity on the hot path without a syscall. It lags
 * by at most one sweep, so a timeout fires between N and N plus two sweeps after its start.
 */
export let coarseNow = Date.now();

/** Starts watching `w`; `shortestTimeoutMs` sets how often the sweep must run to honour its timeouts. */
export function watch(w: Watched, shortestTimeoutMs: number): void {
  watched.add(w);
  if (shortestTimeoutMs > 0) {
    const wanted = Math.max(25, Math.min(1000, Math.floor(shortestTimeoutMs / 4)));
    if (wanted < resolutionMs) {
      resolutionMs = wanted;
      if (timer) {
        clearInterval(timer);
        timer = undefined;
      }
    }
  }
  coarseNow = Date.now();
  timer ??= setInterval(sweep, resolutionMs).unref();
}

export function unwatch(w: Watched): void {
  watched.delete(w);
  if (watched.size === 0 && timer) {
    clearInterval(timer);
    timer = undefined;
    overloadMetrics.buffered.set(0);
  }
}

/** Reports that a connection's partial frame grew by `bytes`; sweeps early when the growth is large. */
export function grew(bytes: number): void {
  grownSinceSweep += bytes;
  if (grownSinceSweep > limits.bufferBudgetBytes / 8) sweep();
}

export function watchedCount(): number {
  return watched.size;
}

function sweep(): void {
  const now = (coarseNow = Date.now());
  grownSinceSweep = 0;
  let total = 0;
  for (const w of watched) {
    w.check(now);
    total += w.held();
  }
  overloadMetrics.buffered.set(total > limits.bufferBudgetBytes ? enforceBudget(total) : total);
}

/** Over budget: the connections holding the most are closed until the rest fit, largest first. Returns what is left. */
function enforceBudget(total: number): number {
  const holders = [...watched].map((w) => ({ w, held: w.held() })).filter((h) => h.held > 0);
  holders.sort((a, b) => b.held - a.held);
  let closed = 0;
  let freed = 0;
  for (const h of holders) {
    if (total - freed <= limits.bufferBudgetBytes) break;
    h.w.shed('buffer_budget');
    freed += h.held;
    closed++;
  }
  throttled.warn('buffer budget', { budgetBytes: limits.bufferBudgetBytes, heldBytes: total, closed, freedBytes: freed }, 'buffer budget exceeded: closed the connections holding the most');
  return total - freed;
}

/** Heap pressure: closes every idle watched connection; returns how many. */
export function shedIdle(): number {
  let n = 0;
  for (const w of [...watched]) {
    if (!w.idle()) continue;
    w.shed('heap_pressure');
    n++;
  }
  return n;
}

/** Closes the longest-watched silent connection (the Set keeps insertion order); false when there is none. */
export function evictOldestSilent(): boolean {
  for (const w of watched) {
    if (!w.silent) continue;
    w.shed('evicted');
    return true;
  }
  return false;
}

// Early dials for silent clients (sniff.ts): each may cost an upstream descriptor for a client that never
// speaks, so only so many are in progress at once.
let earlyDials = 0;

export function tryEarlyDial(): boolean {
  if (earlyDials >= limits.maxEarlyDials) {
    overloadMetrics.earlyDialSkipped.inc();
    return false;
  }
  overloadMetrics.earlyDials.set(++earlyDials);
  return true;
}

export function endEarlyDial(): void {
  overloadMetrics.earlyDials.set(--earlyDials);
}

/** Counts and logs (rate-limited) a connection closed by a limit. */
export function countClosed(listener: string, reason: CloseReason, fields: object = {}): void {
  overloadMetrics.closed.inc({ listener, reason });
  throttled.warn(`closed: ${reason}`, { listener, reason, ...fields }, `downstream connection closed: ${reason.replace('_', ' ')}`);
}
