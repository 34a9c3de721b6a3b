/**
 * In-flight requests by upstream id. We choose the ids, sequentially, so a power-of-two slot array
 * indexed by `id & mask` finds them without hashing, and unlike a Map it does not reallocate its storage
 * as requests come and go (which showed up as garbage-collection pauses).
 */
export class IdTable<T> {
  private slots: (T | undefined)[] = new Array<T | undefined>(64);
  private ids = new Float64Array(64);
  private count = 0;
  private next = 0;

  get size(): number {
    return this.count;
  }

  /** A fresh 32-bit id (never 0) whose slot is free; `reserved` is skipped too. */
  allocate(reserved = -1): number {
    if (this.count * 2 >= this.slots.length) this.grow();
    const mask = this.slots.length - 1;
    let id = this.next;
    do id = (id + 1) >>> 0 || 1;
    while (this.slots[id & mask] !== undefined || id === reserved);
    this.next = id;
    return id;
  }

  set(id: number, value: T): void {
    const i = id & (this.slots.length - 1);
    this.slots[i] = value;
    this.ids[i] = id;
    this.count++;
  }

  get(id: number): T | undefined {
    const i = id & (this.slots.length - 1);
    return this.ids[i] === id ? this.slots[i] : undefined;
  }

  delete(id: number): boolean {
    const i = id & (this.slots.length - 1);
    if (this.ids[i] !== id || this.slots[i] === undefined) return false;
    this.slots[i] = undefined;
    this.count--;
    return true;
  }

  /** Removes and returns everything (a connection closing with requests in flight). */
  drain(): T[] {
    const out = this.slots.filter((v): v is T => v !== undefined);
    this.slots.fill(undefined);
    this.count = 0;
    return out;
  }

  private grow(): void {
    const old = this.slots;
    const oldIds = this.ids;
    this.slots = new Array<T | undefined>(old.length * 2);
    this.ids = new Float64Array(old.length * 2);
    const mask = this.slots.length - 1;
    for (let i = 0; i < old.length; i++) {
      const v = old[i];
      if (v === undefined) continue;
      // Ids in distinct slots differ modulo the old size, so they differ modulo the new one too.
      this.slots[oldIds[i]! & mask] = v;
      this.ids[oldIds[i]! & mask] = oldIds[i]!;
    }
  }
}
