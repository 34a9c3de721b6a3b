/**
 * Request deadlines without a timer per request: items are bucketed by deadline at a fixed resolution
 * and one timer sweeps the due buckets. A bucket is an append-only array with a count of items still
 * scheduled: removing an item only marks it (a Set would reallocate as it shrinks), and the bucket is
 * dropped once nothing in it is scheduled — kept until its deadline (30 s out by default) it would
 * outlive thousands of requests and make every garbage collection copy it.
 */
export interface HasDeadline {
  deadline: number;
  /** The bucket key while scheduled, else -1. */
  bucket: number;
}

interface Bucket<T> {
  readonly items: T[];
  live: number;
}

export class Deadlines<T extends HasDeadline> {
  private readonly buckets = new Map<number, Bucket<T>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly onExpire: (item: T) => void,
    private readonly resolutionMs = 5,
  ) {}

  add(item: T): void {
    const key = Math.ceil(item.deadline / this.resolutionMs);
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { items: [], live: 0 }));
    b.items.push(item);
    b.live++;
    item.bucket = key;
    this.timer ??= setInterval(this.sweep, this.resolutionMs).unref();
  }

  remove(item: T): void {
    const key = item.bucket;
    if (key < 0) return;
    item.bucket = -1;
    const b = this.buckets.get(key);
    if (b && --b.live === 0) this.buckets.delete(key);
  }

  private readonly sweep = () => {
    const now = Math.floor(Date.now() / this.resolutionMs);
    this.buckets.forEach((b, key) => {
      if (key > now) return;
      this.buckets.delete(key);
      for (const item of b.items) {
        // Items removed (answered) since, or moved to a later bucket by a retry, are not due.
        if (item.bucket !== key) continue;
        item.bucket = -1;
        this.onExpire(item);
      }
    });
    if (this.buckets.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  };
}
