/**
 * Where an xDS resource's model came from, without keeping it: the resource's bytes, kept anyway (equal
 * bytes, equal configs), and a way to make its proto3 JSON again from them when /config_dump asks. Kept,
 * that JSON took more heap than the model itself (26 of 34 MiB for a mesh of 1,000 services).
 */

/** The bytes a model was read from; `view` may move (src/xds/held-bytes.ts), the bytes stay the same. */
export interface SourceBytes {
  readonly view: Uint8Array;
}

/**
 * `raw` is a getter on the prototype, the way to make it with the object stays in private fields: a getter
 * defined on each object (its own closure) gives every object a map of its own, and V8 turns them into
 * dictionary-mode objects — which the data path reads per connection and per request.
 */
class Sourced {
  readonly #bytes: SourceBytes;
  readonly #plain: () => unknown;

  constructor(fields: object, bytes: SourceBytes, plain: () => unknown) {
    this.#bytes = bytes;
    this.#plain = plain;
    Object.assign(this, fields);
  }

  get raw(): unknown {
    return this.#plain();
  }

  /**
   * A `raw` among the fields Object.assign copies lands here and is dropped: copying the fields without
   * it first was one more copy of every resource and model in each push.
   */
  set raw(_ignored: unknown) {}

  static bytesOf(o: unknown): SourceBytes | undefined {
    return o instanceof Sourced ? o.#bytes : undefined;
  }
}

/** `config`'s fields (a `raw` among them is dropped), with a `raw` made by `plain` when read; remembers the bytes. */
export function fromSource<F extends object, R>(config: F, bytes: SourceBytes, plain: () => R): Omit<F, 'raw'> & { readonly raw: R } {
  return new Sourced(config, bytes, plain) as unknown as Omit<F, 'raw'> & { readonly raw: R };
}

/** Whether `bytes` are the bytes `source` holds. */
export const sameBytes = (source: SourceBytes, bytes: Uint8Array): boolean => Buffer.compare(source.view, bytes) === 0;

/** Same config: by their bytes when both came from xDS, else by their JSON. */
export function sameSource(a: { readonly raw: unknown }, b: { readonly raw: unknown }): boolean {
  if (a === b) return true;
  const ba = Sourced.bytesOf(a);
  const bb = Sourced.bytesOf(b);
  if (ba !== undefined && bb !== undefined) return sameBytes(ba, bb.view);
  return JSON.stringify(a.raw) === JSON.stringify(b.raw);
}
