/**
 * Where an xDS resource's model came from, without keeping it: the digest of the resource's bytes (equal
 * digests, equal configs) and a way to make its proto3 JSON again when /config_dump asks. Kept, that
 * JSON took more heap than the model itself (26 of 34 MiB for a mesh of 1,000 services).
 */

/**
 * `raw` is a getter on the prototype, the way to make it with the object stays in private fields: a getter
 * defined on each object (its own closure) gives every object a map of its own, and V8 turns them into
 * dictionary-mode objects — which the data path reads per connection and per request.
 */
class Sourced {
  readonly #digest: string;
  readonly #plain: () => unknown;

  constructor(fields: object, digest: string, plain: () => unknown) {
    this.#digest = digest;
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

  static digestOf(o: unknown): string | undefined {
    return o instanceof Sourced ? o.#digest : undefined;
  }
}

/** `config`'s fields (a `raw` among them is dropped), with a `raw` made by `plain` when read; remembers the digest. */
export function fromSource<F extends object, R>(config: F, digest: string, plain: () => R): Omit<F, 'raw'> & { readonly raw: R } {
  return new Sourced(config, digest, plain) as unknown as Omit<F, 'raw'> & { readonly raw: R };
}

/** Same config: by the digests of their bytes when both came from xDS, else by their JSON. */
export function sameSource(a: { readonly raw: unknown }, b: { readonly raw: unknown }): boolean {
  if (a === b) return true;
  const da = Sourced.digestOf(a);
  const db = Sourced.digestOf(b);
  if (da !== undefined && db !== undefined) return da === db;
  return JSON.stringify(a.raw) === JSON.stringify(b.raw);
}
