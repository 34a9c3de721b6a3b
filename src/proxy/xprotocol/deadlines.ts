/**
 * Request deadlines without a timer per request: items are bucketed by deadline at a fixed resolution
 * and one timer sweeps the due buckets. Adding and removing are O(1), and a bucket is dropped as soon as
 * it empties — a bucket kept until its deadline (30 s out by default) would outlive thousands of requests
 * and make every garbage collection copy it.
 */
export interface HasDeadline {
  deadline: number;
  /** The bucket key while scheduled, else -1. */
  bucket: number;
}

export class Deadlines<T extends HasDeadline> {
  private readonly buckets = new Map<number, Set<T>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly onExpire: (item: T) => void,
    private readonly resolutionMs = 5,
  ) {}

  add(item: T): void {
    const key = Math.ceil(item.deadline / this.resolutionMs);
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = new Set()));
    b.add(item);
    item.bucket = key;
    this.timer ??= setInterval(this.sweep, this.resolutionMs).unref();
  }

  remove(item: T): void {
    const key = item.bucket;
    item.bucket = -1;
    const b = this.buckets.get(key);
    if (!b) return;
    b.delete(item);
    if (b.size === 0) this.buckets.delete(key);
  }

  private readonly sweep = () => {
    const now = Math.floor(Date.now() / this.resolutionMs);
    for (const [key, items] of this.buckets) {
      if (key > now) continue;
      this.buckets.delete(key);
      for (const item of items) {
        item.bucket = -1;
        this.onExpire(item);
      }
    }
    if (this.buckets.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  };
}
