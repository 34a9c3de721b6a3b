/**
 * Giving memory back to the pod. A sidecar's RSS is paid once per pod, and both V8 and glibc keep what a
 * burst (of connections, of xDS config) made them grow: V8 keeps freed pages committed until its memory
 * reducer runs, glibc keeps freed blocks in its arenas. Two tools, both used sparingly because each is a
 * pause on the event loop:
 *
 * - a "last resort" full collection: V8 also compacts and unmaps the pages it freed, which a regular major
 *   GC keeps (2 M small objects dropped: RSS 262 → 62 MB on Node 24 and 267 → 212 MB on Node 20, where a
 *   regular one left 214 and 268); tens of milliseconds for a heap of tens of MiB;
 * - `malloc_trim(0)`: measured with 40 connections growing 15 MiB frames, RSS stayed at 562 MiB with
 *   4 MiB of live heap and fell to 60 MiB on a trim; well under a millisecond.
 */
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadLibc } from '../sys/libc.js';
import { readProcSelf } from '../sys/proc.js';
import { MMAP_THRESHOLD_BYTES, MMAP_THRESHOLD_ENV } from './mmap-threshold.js';
import { narrowYoungGeneration, widenYoungGeneration, youngGenerationState } from './young-generation.js';
import { log } from '../observe/log.js';
import { throttled } from '../observe/throttle.js';

/**
 * Anonymous RSS beyond what V8 and Buffers account for, below which a trim is not worth it. The binary's
 * resident pages (about 40 MiB of `node`) are file pages, not counted: against the whole RSS every check
 * looked worth a trim. Node's own native memory (libuv, ICU, OpenSSL) is about 2 MiB of the rest on a
 * static config.
 */
const TRIM_SLACK_BYTES = 4 * 1024 * 1024;
/**
 * When the compaction after config runs (ms); a table so that a test can shorten it in a process of its own.
 * - settle: after a config change, wait this long for the pushes to settle, then compact once;
 * - firstSettle: after the first complete config nothing is settling (the first push is the largest, and
 *   it is done), so the pod's memory comes back a moment after ready rather than a second later; what
 *   arrives just after it (the name table) puts it off by as much again, up to firstMaxDelay;
 * - minSpacing: not more often than this, whatever the push rate: a full compaction is a pause;
 * - maxDelay: nor later than this after it was first asked for, however often it is put off: responses
 *   less than a second apart (endpoint churn, a rollout) would otherwise hold it off for ever, and with it
 *   the young generation widened for them.
 */
export const compactionTiming = { settleMs: 1000, firstSettleMs: 200, firstMaxDelayMs: 1000, minSpacingMs: 10_000, maxDelayMs: 30_000 };

/** glibc's mallopt parameter. */
const M_MMAP_THRESHOLD = -3;

/** V8 before 12 (Node 20): see collectFully. */
const REGULAR_FIRST = Number(process.versions.v8.split('.')[0]) < 12;
let quietUntil = 0;
let gc: ((options?: object) => void) | undefined;

/** One memory-reducing full collection (a pause: tens of ms for a heap of tens of MiB). */
export function collectFully(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as (options?: object) => void;
  }
  // Node 20's V8 (11.3) skipped a last-resort collection asked for first (the heap stayed at 152 MB with
  // 2 M dead objects); after a regular full one it compacts and releases. Node 24's needs no regular one
  // first, which was 23–50 ms of the pause after a full push of bench/xds-scale.ts's mesh.
  if (REGULAR_FIRST) gc();
  gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  quietUntil = 0;
}

/**
 * Large blocks (a partial frame's buffer, a push's protobuf bytes) mapped on their own, so freeing one
 * returns it to the OS at once. glibc's default threshold is dynamic: after the first large block is freed
 * it rises to that block's size (up to 32 MiB), and from then on multi-MiB buffers come from the heap,
 * where freed ones stay resident until a trim. Setting it fixes it. Measured in bench/hostile.ts (40
 * connections growing partial frames toward 15 MiB).
 *
 * Called before the first large block can exist (the first proxied connection, the xDS client's start)
 * rather than at start: it needs koffi, which an idle sidecar on a static config otherwise never loads
 * (0.9 MiB of RSS on Node 24, 2.2 MiB on Node 20). Once per process. Where the process started with
 * MALLOC_MMAP_THRESHOLD_ (the re-exec with the heap defaults sets it), glibc fixed the threshold already.
 */
export function mapLargeBlocksAlone(): boolean {
  if (largeBlocksAlone !== undefined) return largeBlocksAlone;
  if (process.env[MMAP_THRESHOLD_ENV]) return (largeBlocksAlone = true);
  largeBlocksAlone = loadLibc()?.mallopt?.(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) === 1;
  if (!largeBlocksAlone) log.info('memory: the allocator\'s mmap threshold could not be fixed (needs koffi and glibc); freed large buffers may stay resident until a trim');
  return largeBlocksAlone;
}
let largeBlocksAlone: boolean | undefined;

/** What V8 accounts for: its heap (committed) and the memory of Buffers (`h`: statistics already read). */
export function accountedBytes(h = getHeapStatistics()): number {
  return h.total_heap_size + ((h as { external_memory?: number }).external_memory ?? 0);
}

/**
 * Anonymous resident memory (the heaps of V8 and glibc, stacks), from /proc/self/status without koffi;
 * the whole RSS where /proc is not there.
 */
export function anonymousRss(status = readProcSelf('status')): number {
  const m = status === undefined ? null : /^RssAnon:\s+(\d+) kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : process.memoryUsage.rss();
}

/**
 * When anonymous memory exceeds what V8 accounts for by more than the slack (or `always`), hands glibc's
 * free memory back. A trim that releases little (fragmentation) holds further trims off for a minute.
 */
export function giveBackMemory(accounted = accountedBytes(), always = false): void {
  const anon = anonymousRss();
  if ((!always && anon - accounted < TRIM_SLACK_BYTES) || Date.now() < quietUntil) return;
  const libc = loadLibc();
  if (!libc?.mallocTrim) return;
  const rss = process.memoryUsage.rss();
  libc.mallocTrim(0);
  const after = process.memoryUsage.rss();
  if (rss - after < TRIM_SLACK_BYTES) quietUntil = Date.now() + 60_000;
  throttled.log('info', 'malloc trim', { rssBefore: rss, rssAfter: after, anonBefore: anon, accounted }, 'memory: returned freed heap to the OS');
}

let configTimer: NodeJS.Timeout | undefined;
let lastConfigCompaction = -Infinity;
/** When the pending compaction was first asked for. */
let askedAt: number | undefined;
/** When the first config came, while its compaction is pending. */
let firstAt: number | undefined;

/**
 * Called when a new config is in use: decoding a large push allocates several times the config's final
 * size, and without more allocation afterwards V8 never gives it back (measured in bench/xds-scale.ts).
 * Once the pushes have settled (a second without a new one; 200 ms after the first config), one full
 * collection and a trim; at most every 10 s after the first, and at the latest 30 s after it was first
 * asked for (compactionTiming). `static`: the bootstrap's config, at start, without xDS.
 */
export function compactAfterConfig(opts: { first?: boolean; static?: boolean } = {}): void {
  const t = compactionTiming;
  const now = performance.now();
  askedAt ??= now;
  if (opts.first) firstAt = now;
  const due = Math.min(
    firstAt !== undefined ? Math.min(now + t.firstSettleMs, firstAt + t.firstMaxDelayMs) : Math.max(now + t.settleMs, lastConfigCompaction + t.minSpacingMs),
    askedAt + t.maxDelayMs,
  );
  clearTimeout(configTimer);
  configTimer = setTimeout(() => {
    askedAt = firstAt = undefined;
    const started = (lastConfigCompaction = performance.now());
    const rssBefore = process.memoryUsage.rss();
    const youngNarrowed = narrowYoungGeneration(); // and the collection shrinks it
    collectFully();
    // After xDS config, always (as before the slack looked at anonymous memory only; its effect on the
    // memory after pushes was not measured apart): a push frees megabytes of Buffers into glibc's arenas,
    // and ADS loads far more than koffi. After a static start only when worth it: an idle sidecar should not
    // load koffi (0.9–2.2 MiB) for a trim that frees next to nothing (0.17 MB, measured).
    giveBackMemory(accountedBytes(), !opts.static);
    log.info({ pauseMs: Math.round(performance.now() - started), rssBefore, rssAfter: process.memoryUsage.rss(), youngNarrowed }, 'memory: compacted after a config change');
  }, Math.max(0, due - now)).unref();
}

/**
 * Called as config arrives (an xDS response, before it is decoded): decoding allocates tens of MiB in a
 * burst, so the young generation may grow for it (memory/young-generation.ts). The compaction is
 * scheduled from here too, so the young generation is narrowed and shrunk again even when the response
 * is rejected and no config follows; an applied config reschedules it.
 */
export function configArriving(): void {
  widenYoungGeneration();
  if (youngGenerationState() === 'widened') compactAfterConfig();
}
