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
 * - `--max-semi-space-size`: how far the young generation may grow during a config push. Between pushes
 *   it is held at its initial size (memory/young-generation.ts): scavenges are more frequent but short,
 *   and the data path allocates little per request, so CPU per request does not move measurably.
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
 * the defaults off. They are applied by replacing the process image (`process.execve` from Node 22.15 and
 * 23.11, libc's execve through koffi before: sys/replace-process.ts): no second process stays behind, as
 * a supervising parent would. Where neither exists (koffi without a build for the platform) the old
 * generation keeps V8's default (set NODE_OPTIONS) and the young generation is held at its initial size
 * (holdYoungGenerationByDefault).
 */
import { totalmem } from 'node:os';
import { MMAP_THRESHOLD_BYTES, MMAP_THRESHOLD_ENV } from '../memory/mmap-threshold.js';
import { holdYoungGeneration, V8_SHRINKS_NEW_SPACE } from '../memory/young-generation.js';
import { cpuBudget } from '../sys/cpus.js';
import { processReplacer, type ReplaceProcess } from '../sys/replace-process.js';
import { hasFlag, startupTiering } from '../sys/tiering.js';

export const HEAP_ENV = 'XSIDECAR_HEAP_DEFAULTS';
/** HEAP_ENV after the re-exec: applied, and the young generation's bound is ours, to hold (and widen, where V8 shrinks it again). */
const APPLIED_WITH_YOUNG = 'applied-young';
/**
 * MiB: the young generation's bound while a push is decoded (it is held smaller between pushes). V8's
 * own on 64-bit Node 20; on Node 24 it is 64 MiB and more, which a push reached (128 MiB of new space).
 * A semi-space costs up to three times its size (two semi-spaces and as much of new large objects), so
 * in a container it is also held to 1/64 of the limit (16 MiB from 1 GiB, Istio's default; 2 MiB at 128
 * MiB): with three quarters of the limit for the old generation, the rest must still fit.
 */
export const SEMI_SPACE_MIB = 16;
const MIN_SEMI_SPACE_MIB = 2;
const MIB = 1024 * 1024;

/** The flags with which an operator takes the young generation over: then it is left to V8 and them. */
const YOUNG_GENERATION_FLAGS = ['--max-semi-space-size', '--semi-space-growth-factor', '--heap-growing-percent'];
export const ownsYoungGeneration = (given: readonly string[]) => !YOUNG_GENERATION_FLAGS.some((f) => hasFlag(given, f));

/** The semi-space bound for a container limit (bytes; undefined: none). */
export const semiSpaceMib = (limitBytes: number | undefined) =>
  limitBytes === undefined ? SEMI_SPACE_MIB : Math.max(MIN_SEMI_SPACE_MIB, Math.min(SEMI_SPACE_MIB, Math.floor(limitBytes / MIB / 64)));

/** The container's memory limit in bytes, or undefined when there is none (or it is above the machine's RAM). */
export function containerLimit(constrained = process.constrainedMemory?.(), total = totalmem()): number | undefined {
  if (!constrained || !Number.isFinite(constrained) || constrained <= 0 || constrained >= total) return undefined;
  return constrained;
}

/** The heap flags to add, given what is already set. */
export function heapFlags(limitBytes: number | undefined, given: readonly string[]): string[] {
  const flags: string[] = [];
  if (ownsYoungGeneration(given)) flags.push(`--max-semi-space-size=${semiSpaceMib(limitBytes)}`);
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
 * 212 → 189 ms (median) with one worker; Node 20 (given in NODE_OPTIONS, before it was re-executed
 * too) 263 → 236 ms, ready 510 → 432 ms. CPU per request on the Bolt data path did not move beyond its noise (three A/Bs:
 * +4, −2, +1 % closed loop).
 */
export function poolFlags(cpus: number, given: readonly string[]): string[] {
  if (hasFlag(given, '--v8-pool-size')) return [];
  const pool = Math.max(1, Math.min(NODE_POOL_SIZE, cpus - 1));
  return pool < NODE_POOL_SIZE ? [`--v8-pool-size=${pool}`] : [];
}

/**
 * Holds the young generation where it starts, unless the operator took it over: where the process cannot
 * be re-executed with the size flags, and in the re-executed image. Unheld, Node 20 grows new space to 32
 * MiB: on the 1,000-service mesh of bench/xds-scale.ts, 27.6 MiB of young generation was resident at ready
 * (RSS 121 MiB; 98 held). Its V8 cannot be trusted to shrink it again, so there it stays held during
 * pushes too (`widenable`: see memory/young-generation.ts), at the cost of more scavenges: a whole-mesh
 * decode 146 → 188 ms warm in-process. The factor is set at run time: on the command line V8 raises 1 to
 * its minimum of 2 at start-up, and at run time it is not checked again.
 */
export function holdYoungGenerationByDefault(given: readonly string[], widenable: boolean): boolean {
  if (!ownsYoungGeneration(given)) return false;
  holdYoungGeneration({ widenable });
  return true;
}

/**
 * Re-executes this process with the heap defaults when they are missing and it can (else holds the young
 * generation where it starts); returns only when nothing needs to change (or cannot be changed).
 * `replacer`: how (sys/replace-process.ts); a parameter for the tests of the paths without one.
 */
export function applyHeapDefaults(env: NodeJS.ProcessEnv = process.env, replacer: () => ReplaceProcess | undefined = processReplacer): void {
  if (env[HEAP_ENV] === APPLIED_WITH_YOUNG) holdYoungGeneration({ widenable: V8_SHRINKS_NEW_SPACE });
  if (env[HEAP_ENV] === 'off' || env[HEAP_ENV] === 'applied' || env[HEAP_ENV] === APPLIED_WITH_YOUNG) return;
  const given = [...process.execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean)];
  const tiering = startupTiering(given);
  const flags = [...heapFlags(containerLimit(), given), ...poolFlags(cpuBudget(), given), ...tiering.flags];
  // No flags to add means the operator gave the young generation's: nothing to hold either.
  if (flags.length === 0) return;
  // Only now: on Node 20 this loads koffi, which a sidecar that is not re-executed should not carry.
  const replace = replacer();
  if (replace) {
    const next: Record<string, string> = {};
    for (const [k, v] of Object.entries(env)) if (v !== undefined) next[k] = v;
    Object.assign(next, tiering.env);
    next[MMAP_THRESHOLD_ENV] ??= String(MMAP_THRESHOLD_BYTES);
    // The bound heapFlags added is for pushes only: the new image holds the young generation below it.
    next[HEAP_ENV] = ownsYoungGeneration(given) ? APPLIED_WITH_YOUNG : 'applied';
    try {
      replace(process.execPath, [process.execPath, ...flags, ...process.execArgv, ...process.argv.slice(1)], next);
    } catch {
      // libc's execve refused (a seccomp profile, say). process.execve aborts instead.
    }
  }
  // Not replaced (no way to, or refused): run as started, as where the flags cannot be given.
  holdYoungGenerationByDefault(given, false);
}
