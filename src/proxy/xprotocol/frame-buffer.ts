/**
 * The bytes read but not yet decoded. A chunk that starts on a frame boundary is used as it is (no
 * copy); a partial frame is kept in a buffer that grows geometrically, up to the frame's declared length
 * when the codec can say it (`frameLength`), so a large frame arriving in many reads is copied O(n) times
 * in total rather than once per read, and its last buffer is the frame's size. Frames already handed out
 * are views into memory before `start`, which is never written again.
 */
export class FrameBuffer {
  private buf: Buffer | undefined;
  private start = 0;
  private end = 0;

  /** `frameLength`: the codec's, for the partial frame at the front (see Codec.frameLength). */
  constructor(private readonly frameLength?: (buf: Buffer) => number) {}

  /** Adds a chunk and returns every byte not yet consumed. */
  append(chunk: Buffer): Buffer {
    if (!this.buf || this.start === this.end) {
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      return chunk;
    }
    const pending = this.end - this.start;
    const needed = pending + chunk.length;
    // A chunk used in place has no spare room (end === its length), so it is never written into.
    if (this.buf.length - this.end < chunk.length) {
      const grown = Buffer.allocUnsafe(this.grownSize(pending, needed));
      this.buf.copy(grown, 0, this.start, this.end);
      this.buf = grown;
      this.start = 0;
      this.end = pending;
    }
    chunk.copy(this.buf, this.end);
    this.end += chunk.length;
    return this.buf.subarray(this.start, this.end);
  }

  private grownSize(pending: number, needed: number): number {
    const declared = this.frameLength?.(this.buf!.subarray(this.start, this.end)) ?? -1;
    if (declared < 0) return Math.max(needed, 2 * pending, 4096);
    // The chunk completes the frame (and may begin the next): exactly what is there, not a doubling.
    if (declared <= needed) return needed;
    // Toward the declared length, at most four times what has arrived: a few header bytes must not
    // reserve a whole frame (the budget charges what is allocated), and four times leaves a third of
    // doubling's superseded buffers as garbage.
    return Math.min(declared, Math.max(needed, 4 * pending, 4096));
  }

  /** Marks `n` bytes at the front as decoded. */
  consume(n: number): void {
    this.start += n;
    // Nothing left: let go of the memory now rather than at the next read (a large frame's buffer would
    // otherwise stay pinned for as long as its connection stays idle).
    if (this.start === this.end) this.buf = undefined;
  }

  /** Bytes read but not yet decoded (a partial frame). */
  get pending(): number {
    return this.end - this.start;
  }

  /** Memory this buffer keeps alive for its partial frame: the whole allocation, not only the bytes used. */
  get retained(): number {
    return this.buf && this.start < this.end ? this.buf.length : 0;
  }

  /** Drops the partial frame (its connection is being closed). */
  clear(): void {
    this.buf = undefined;
    this.start = this.end = 0;
  }
}
