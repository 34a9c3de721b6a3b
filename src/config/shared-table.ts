/**
 * A bounded table of values many config objects would otherwise each hold a copy of (a workload label, a
 * socket match, an endpoint's metadata), so each is held once. When full it starts afresh rather than
 * turning newcomers away: after churn it would otherwise hold only stale entries and share nothing. Keys
 * longer than `maxKeyLength` are not kept, so the table never holds more than entries × that length.
 */
export class SharedTable<V> {
  readonly #values = new Map<string, V>();

  constructor(
    private readonly maxEntries: number,
    readonly maxKeyLength: number,
  ) {}

  get(key: string): V | undefined {
    return this.#values.get(key);
  }

  /** Keeps `value` under `key` (when the key is short enough) and returns it. */
  keep(key: string, value: V): V {
    if (key.length > this.maxKeyLength) return value;
    if (this.#values.size >= this.maxEntries) this.#values.clear();
    this.#values.set(key, value);
    return value;
  }
}
