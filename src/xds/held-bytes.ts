/**
 * The bytes of each accepted resource, kept so that /config_dump shows what came (resources.ts). They stay
 * where they arrived: a view into the buffer of the response that brought them. Copied out one by one, as a
 * string per resource, they cost a fifth of a full push of the 1,000-service mesh on Node 24 (in process,
 * bench/xds-decode.ts) and a third of what each push promoted to V8's old generation; a copy per resource
 * in Buffers of their own would instead scatter thousands of small blocks through malloc's arenas.
 *
 * A view keeps its whole buffer, so the buffers are repacked: after each accepted response, the bytes still
 * held in a buffer mostly dead (a push that changed two clusters of two thousand keeps two resources of its
 * response), or in a small one (delta's one-resource responses, views into Node's shared 8 KiB pool), are
 * copied together into one fresh buffer. What is held stays under twice the live bytes plus one small buffer.
 */

/** Below this a buffer is small: glibc serves it from its arenas, where many of them would fragment. */
export const SMALL_BUFFER = 64 * 1024;

export class HeldBytes {
  #view: Buffer;

  constructor(view: Buffer) {
    this.#view = view;
  }

  get view(): Buffer {
    return this.#view;
  }

  /** Points at the same bytes in `arena` from `offset` (repack's copy). */
  moveTo(arena: Buffer, offset: number): void {
    this.#view = arena.subarray(offset, offset + this.#view.byteLength);
  }
}

export interface HeldStats {
  /** Distinct buffers the views point into, and their total size. */
  readonly buffers: number;
  readonly bufferBytes: number;
  /** The bytes the views themselves cover. */
  readonly liveBytes: number;
}

/** The bytes each buffer still holds for the views. */
function liveByBuffer(held: Iterable<HeldBytes | undefined>): Map<ArrayBufferLike, number> {
  const live = new Map<ArrayBufferLike, number>();
  for (const h of held) if (h) live.set(h.view.buffer, (live.get(h.view.buffer) ?? 0) + h.view.byteLength);
  return live;
}

const sparse = (buffer: ArrayBufferLike, live: number) => live * 2 < buffer.byteLength;

/**
 * Copies the views held in mostly dead or small buffers into one fresh buffer; returns the bytes copied.
 * A lone small buffer they fill already (the last repack's) is left as it is. `held` is read twice.
 */
export function repack(held: Iterable<HeldBytes | undefined>): number {
  const moving = new Map([...liveByBuffer(held)].filter(([buffer, live]) => sparse(buffer, live) || buffer.byteLength < SMALL_BUFFER));
  if (moving.size === 0) return 0;
  if (moving.size === 1) {
    const [[buffer, live]] = moving;
    if (!sparse(buffer, live)) return 0;
  }
  let total = 0;
  for (const live of moving.values()) total += live;
  const arena = Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (const h of held) {
    if (!h || !moving.has(h.view.buffer)) continue;
    h.view.copy(arena, at);
    h.moveTo(arena, at);
    at += h.view.byteLength;
  }
  return total;
}

export function heldStats(held: Iterable<HeldBytes | undefined>): HeldStats {
  let bufferBytes = 0, liveBytes = 0;
  const buffers = liveByBuffer(held);
  for (const [buffer, live] of buffers) {
    bufferBytes += buffer.byteLength;
    liveBytes += live;
  }
  return { buffers: buffers.size, bufferBytes, liveBytes };
}
