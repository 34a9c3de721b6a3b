/**
 * Jittered exponential backoff for re-opening the ADS stream. The jitter matters: when istiod restarts,
 * every sidecar in the mesh loses its stream at the same instant, and without it they would all come
 * back in lock-step and hit the new istiod together.
 */
export interface BackoffOptions {
  readonly baseMs: number;
  readonly maxMs: number;
  /** Injected for tests; defaults to Math.random. */
  readonly random?: () => number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 30_000 };

export class Backoff {
  private attempt = 0;

  constructor(private readonly opts: BackoffOptions = DEFAULT_BACKOFF) {}

  /** The next delay: uniformly random in [ceiling/2, ceiling], the ceiling doubling up to maxMs. */
  next(): number {
    const ceiling = Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const r = (this.opts.random ?? Math.random)();
    return Math.round(ceiling / 2 + (ceiling / 2) * r);
  }

  /** A stream that delivered a response was healthy: the next failure starts from the base again. */
  reset(): void {
    this.attempt = 0;
  }
}
