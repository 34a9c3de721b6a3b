/**
 * Request deadlines without a timer per request: items are bucketed by deadline at a fixed resolution
 * and one timer sweeps the due buckets. Adding and removing are O(1).
 */
export interface HasDeadline {
  deadline: number;
  bucket: Set<HasDeadline> | undefined;
}

export class Deadlines<T extends HasDeadline> {
  private readonly buckets = new Map<number, Set<HasDeadline>>();
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
    item.bucket = b;
    this.timer ??= setInterval(this.sweep, this.resolutionMs).unref();
  }

  remove(item: T): void {
    item.bucket?.delete(item);
    item.bucket = undefined;
  }

  private readonly sweep = () => {
    const now = Math.floor(Date.now() / this.resolutionMs);
    for (const [key, items] of this.buckets) {
      if (key > now && items.size > 0) continue;
      this.buckets.delete(key);
      for (const item of items) {
        item.bucket = undefined;
        this.onExpire(item as T);
      }
    }
    if (this.buckets.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  };
}
