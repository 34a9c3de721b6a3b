/**
 * V8 heap defaults for the sidecar, applied by `xsidecar run` before anything else loads.
 *
 * A sidecar's memory is paid once per pod, so its heap must be sized by the sidecar, not by V8's
 * desktop-sized defaults: Node 24's V8 lets the young generation grow to tens of MiB and the old
 * generation to several times the live heap before it collects, which after a few large xDS pushes
 * leaves hundreds of MiB resident for a live heap of about 50 MiB (see bench/xds-scale.ts). Like
 * Istio's pilot-agent setting GOMEMLIMIT from the container's limit, we size V8 from
 * `process.constrainedMemory()` (the cgroup limit):
 *
 * - `--max-semi-space-size`: a small, fixed young generation. Scavenges get more frequent but each is
 *   short; the data path allocates little per request, so CPU per request does not move measurably.
 * - `--max-old-space-size`: three quarters of the container's limit (the rest: young generation, code,
 *   Buffers, the binary), between 96 MiB and 2 GiB; without a container limit, V8's own default. It is a
 *   hard limit (V8 aborts past it), so it is never set below what a large mesh needs; the overload
 *   manager's heap actions work against it, before it is reached.
 *
 * - `--v8-pool-size`: V8's worker threads (concurrent marking and sweeping, parallel scavenges, background
 *   compilation) from the CPUs the pod may use (sys/cpus.ts), not Node's fixed four (poolFlags).
 *
 * The same re-exec also starts V8 with a high Maglev threshold until the sidecar has started
 * (sys/tiering.ts), and glibc with MALLOC_MMAP_THRESHOLD_ (memory/mmap-threshold.ts), which fixes the
 * allocator's threshold from the first allocation without loading koffi.
 *
 * Flags given explicitly (on the command line or in NODE_OPTIONS) win; XSIDECAR_HEAP_DEFAULTS=off turns
 * the defaults off. They are applied by replacing the process with `process.execve` (Node ≥ 22.15 and
 * 23.11): no second process stays behind. Older Node has no execve, and a supervising parent would cost
 * more memory than the flags save, so there the old generation keeps V8's default (set NODE_OPTIONS) and
 * the young generation is held at its initial size (holdYoungGeneration).
 */
import { totalmem } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { MMAP_THRESHOLD_BYTES, MMAP_THRESHOLD_ENV } from '../memory/mmap-threshold.js';
import { cpuBudget } from '../sys/cpus.js';
import { hasFlag, startupTiering } from '../sys/tiering.js';

export const HEAP_ENV = 'XSIDECAR_HEAP_DEFAULTS';
/** MiB. Measured: 1 and 2 MiB hold RSS the same, 1 MiB costs more scavenges (bench/xds-scale.ts). */
export const SEMI_SPACE_MIB = 2;
const MIB = 1024 * 1024;

/** The container's memory limit in bytes, or undefined when there is none (or it is above the machine's RAM). */
export function containerLimit(constrained = process.constrainedMemory?.(), total = totalmem()): number | undefined {
  if (!constrained || !Number.isFinite(constrained) || constrained <= 0 || constrained >= total) return undefined;
  return constrained;
}

/** The heap flags to add, given what is already set. */
export function heapFlags(limitBytes: number | undefined, given: readonly string[]): string[] {
  const flags: string[] = [];
  if (!hasFlag(given, '--max-semi-space-size')) flags.push(`--max-semi-space-size=${SEMI_SPACE_MIB}`);
  if (limitBytes !== undefined && !hasFlag(given, '--max-old-space-size')) {
    const mib = Math.min(2048, Math.max(96, Math.floor((limitBytes * 0.75) / MIB)));
    flags.push(`--max-old-space-size=${mib}`);
  }
  return flags;
}

/** Node's default size of V8's worker pool. */
const NODE_POOL_SIZE = 4;

/**
 * V8's worker pool sized to the CPUs the sidecar may use less its main thread, between 1 and Node's 4:
 * four workers beside the main thread on a pod of two CPUs fight it (and the app) for them, and a push
 * that makes V8 collect constantly stalls on workers that are not running. Measured on 2 CPUs with
 * bench/xds-scale.ts's 1,000-service mesh, Node 24, five interleaved rounds of 14 full pushes: one push
 * 212 → 189 ms (median) with one worker; Node 20 (not settable there, see holdYoungGeneration) 263 → 236
 * ms, ready 510 → 432 ms. CPU per request on the Bolt data path did not move beyond its noise (three A/Bs:
 * +4, −2, +1 % closed loop).
 */
export function poolFlags(cpus: number, given: readonly string[]): string[] {
  if (hasFlag(given, '--v8-pool-size')) return [];
  const pool = Math.max(1, Math.min(NODE_POOL_SIZE, cpus - 1));
  return pool < NODE_POOL_SIZE ? [`--v8-pool-size=${pool}`] : [];
}

/**
 * Without execve (Node 20, the one such Node `engines` allows) the size flags cannot be given, but the young generation can still be kept
 * small: V8 reads its growth factor each time it would grow it, so a factor of 1 set now holds it at the
 * size it starts with (4 MiB of new space, as with the 2 MiB semi-spaces Node 24 gets). Without it Node 20
 * grows it to 32 MiB: on the 1,000-service mesh of bench/xds-scale.ts, 27.6 MiB of young generation was
 * resident at ready (RSS 121 MiB; 98 held). The cost is the same as on Node 24: more scavenges, a whole-mesh
 * decode 146 → 188 ms warm in-process. On the command line the same value is ignored (V8 raises it to
 * its minimum of 2 at start-up; set at run time it is not checked again: Node 20's V8 is fixed at 11.3).
 */
export function holdYoungGeneration(given: readonly string[]): boolean {
  if (hasFlag(given, '--max-semi-space-size') || hasFlag(given, '--semi-space-growth-factor')) return false;
  setFlagsFromString('--semi-space-growth-factor=1');
  return true;
}

/**
 * Re-executes this process with the heap defaults when they are missing and execve exists (else holds the
 * young generation where it starts); returns only when nothing needs to change (or cannot be changed).
 */
export function applyHeapDefaults(env: NodeJS.ProcessEnv = process.env): void {
  if (env[HEAP_ENV] === 'off' || env[HEAP_ENV] === 'applied') return;
  const execve = (process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
  const given = [...process.execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean)];
  if (typeof execve !== 'function') {
    holdYoungGeneration(given);
    return;
  }
  const tiering = startupTiering(given);
  const flags = [...heapFlags(containerLimit(), given), ...poolFlags(cpuBudget(), given), ...tiering.flags];
  if (flags.length === 0) return;
  const next: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) next[k] = v;
  Object.assign(next, tiering.env);
  next[MMAP_THRESHOLD_ENV] ??= String(MMAP_THRESHOLD_BYTES);
  next[HEAP_ENV] = 'applied';
  execve.call(process, process.execPath, [process.execPath, ...flags, ...process.execArgv, ...process.argv.slice(1)], next);
}
