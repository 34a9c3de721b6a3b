/**
 * Request deadlines without a timer per request: items are bucketed by deadline at a fixed resolution
 * and one timer sweeps the due buckets. A bucket is an append-only array with a count of items still
 * scheduled: removing an item only marks it (a Set would reallocate as it shrinks), and the bucket is
 * dropped once nothing in it is scheduled — kept until its deadline (30 s out by default) it would
 * outlive thousands of requests and make every garbage collection copy it.
 *
 * The timer is set for the earliest bucket, not ticking at the resolution: under steady load every request
 * is answered long before its deadline, and a 5 ms tick would wake the proxy 200 times a second for nothing.
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
  /** The bucket key the timer is set for. */
  private armedFor = Infinity;

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
    if (key < this.armedFor) this.arm(key);
  }

  remove(item: T): void {
    const key = item.bucket;
    if (key < 0) return;
    item.bucket = -1;
    const b = this.buckets.get(key);
    if (b && --b.live === 0) this.buckets.delete(key);
  }

  /** Number of buckets holding scheduled items (for tests). */
  get size(): number {
    return this.buckets.size;
  }

  private arm(key: number): void {
    clearTimeout(this.timer);
    this.armedFor = key;
    this.timer = setTimeout(this.sweep, Math.max(0, key * this.resolutionMs - Date.now())).unref();
  }

  private readonly sweep = () => {
    this.timer = undefined;
    this.armedFor = Infinity;
    const now = Math.floor(Date.now() / this.resolutionMs);
    let next = Infinity;
    this.buckets.forEach((b, key) => {
      if (key > now) {
        if (key < next) next = key;
        return;
      }
      this.buckets.delete(key);
      for (const item of b.items) {
        // Items removed (answered) since, or moved to a later bucket by a retry, are not due.
        if (item.bucket !== key) continue;
        item.bucket = -1;
        this.onExpire(item);
      }
    });
    // onExpire may have scheduled (a retry) and armed the timer already.
    if (next < this.armedFor) this.arm(next);
  };
}
