/**
 * The young generation's size over a sidecar's life. Held small, as the data path needs: it allocates
 * little per request and little of it survives, so small scavenges are cheap and RSS stays low. But an
 * xDS push is the opposite: decoding a mesh's config allocates tens of MiB, and all of the new config
 * survives. In a small young generation every scavenge copies what survives so far, and there are
 * hundreds of them per push: on the 1,000-service mesh of bench/xds-scale.ts (Node 24) a full push spent
 * about as long in scavenges as in decoding. So while a push is decoded the young generation may grow (up
 * to the flags' maximum), and it is held again as soon as the push is applied; the memory-reducing
 * collection after the config settles (compact.ts) shrinks it back to where it started.
 *
 * V8 reads its semi-space growth factor each time it would grow the young generation, so holding it is
 * a factor of 1 and letting it grow is V8's own 2. Only where a memory-reducing collection shrinks it
 * back: Node 24's V8 does; Node 20's (11.3) keeps what it grew to, so there it is held throughout.
 */
import { setFlagsFromString } from 'node:v8';

const HOLD = '--semi-space-growth-factor=1';
const GROW = '--semi-space-growth-factor=8';

let widens = false;
let wide = false;

/** Holds the young generation at its size; `widensForConfig`: it may grow while a push is decoded. */
export function holdYoungGenerationSize(opts: { widensForConfig: boolean }): void {
  setFlagsFromString(HOLD);
  widens = opts.widensForConfig;
}

/** Runs `work` (decoding and applying a push) with the young generation free to grow, when it may. */
export function withYoungGenerationWidened<T>(work: () => T): T {
  if (!widens || wide) return work();
  wide = true;
  setFlagsFromString(GROW);
  try {
    return work();
  } finally {
    setFlagsFromString(HOLD);
    wide = false;
  }
}
