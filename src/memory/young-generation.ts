/**
 * V8's young generation: small while the sidecar proxies, wide while it decodes a config push.
 *
 * Between pushes a small young generation keeps the pod's RSS down and costs the data path nothing
 * measurable (a request leaves almost nothing alive). A push is the opposite: tens of MiB allocated in a
 * few hundred milliseconds, much of it kept (the new config). With 2 MiB semi-spaces (the sidecar's bound
 * before), V8 scavenged about 27 times per full push of bench/xds-scale.ts's 1,000-service mesh and
 * promoted the rest into mark-compacts. Widened as here, Node 24, 100 full pushes a second apart: one push
 * 218 → 157 ms (median), RSS while pushing 131–176 → 146–214 MiB, RSS once compacted unchanged.
 *
 * V8 grows new space by its growth factor, which it reads each time it would grow; a factor of 1 holds it.
 * So: held from the start, let grow when a response arrives (widen), held again when the pushes have
 * settled (narrow), just before the memory-reducing full collection (memory/compact.ts) that shrinks new
 * space back to its initial size. That shrinking is what makes widening safe, and only a V8 that does
 * it may widen: Node 24's does at any memory-reducing collection; Node 20's (V8 11.3) only once
 * allocation has been low for about five seconds, which a proxying sidecar may never see, so a young
 * generation widened there would stay at 32 MiB for good. Node 20 is held only.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

/** V8 12 and later (Node 22, 24) shrink new space at a memory-reducing collection; 11.3 (Node 20) does not. */
export const V8_SHRINKS_NEW_SPACE = Number(process.versions.v8.split('.')[0]) >= 12;

type State = 'free' | 'held' | 'widened';
let state: State = 'free';
let widenable = false;

/** Holds new space at its size; `widenable`: this V8 shrinks it at a memory-reducing collection. */
export function holdYoungGeneration(opts: { widenable: boolean }): void {
  setFlagsFromString('--semi-space-growth-factor=1');
  state = 'held';
  widenable = opts.widenable;
}

/**
 * How far the old generation may grow past what the last mark-compact left, while widened (V8 chooses
 * between 1.1× and 4× by itself). With fewer scavenges, fewer mark-compacts come to clear the configs each
 * push leaves behind: left to V8, RSS between two compactions climbed by about 20 MiB per full push (to
 * 288 MiB over 7 pushes); held at 1.5× it stayed within 150–200 MiB (the held young generation's
 * 137–173), at a full push of 198 ms instead of 187 (250 held).
 */
const WIDENED_OLD_GROWTH_PERCENT = 50;

/** Lets new space grow (up to --max-semi-space-size), if it is held and can be shrunk again. */
export function widenYoungGeneration(): boolean {
  if (state !== 'held' || !widenable) return false;
  setFlagsFromString('--semi-space-growth-factor=2');
  setFlagsFromString(`--heap-growing-percent=${WIDENED_OLD_GROWTH_PERCENT}`);
  state = 'widened';
  return true;
}

/** Holds it again; the next memory-reducing collection shrinks it. True when it was widened. */
export function narrowYoungGeneration(): boolean {
  if (state !== 'widened') return false;
  setFlagsFromString('--semi-space-growth-factor=1');
  setFlagsFromString('--heap-growing-percent=0'); // V8's own choice again
  state = 'held';
  return true;
}

export function youngGenerationState(): State {
  return state;
}

/** For /server_info: whether it is held, and the bytes of new space V8 has now. */
export function youngGeneration(): { state: State; new_space: number } {
  return { state, new_space: getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0 };
}
