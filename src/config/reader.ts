/**
 * A small path-tracking reader over proto3-JSON-shaped plain objects. Both config sources feed it: a
 * static bootstrap parsed from YAML/JSON (snake_case, durations as "1.5s", Any as {"@type": …}) and xDS
 * resources decoded by protobufjs (durations as {seconds, nanos}, int64 as strings, wrappers as {value}).
 * Every error names the field path, so a user can find the line to fix.
 */

export class ConfigError extends Error {
  constructor(
    readonly path: string,
    readonly detail: string,
  ) {
    super(`${path}: ${detail}`);
    this.name = 'ConfigError';
  }
}

/** Collects warnings (unknown fields, skipped extensions) instead of failing on them. */
export interface DecodeContext {
  warnings: string[];
}

export const newContext = (): DecodeContext => ({ warnings: [] });

type Plain = Record<string, unknown>;

// Field names are few and repeat across thousands of xDS resources: convert each once.
const memo = (f: (s: string) => string) => {
  const cache = new Map<string, string>();
  return (s: string) => {
    let v = cache.get(s);
    if (v === undefined) cache.set(s, (v = f(s)));
    return v;
  };
};
const camel = memo((snake: string) => snake.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()));
const snake = memo((name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`));

const isPlain = (v: unknown): v is Plain => typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);

/** int64/uint64 arrive as numbers, decimal strings or protobufjs Long objects. */
function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  if (typeof v === 'bigint') return Number(v);
  if (isPlain(v) && typeof v.low === 'number' && typeof v.high === 'number') return v.high * 2 ** 32 + (v.low >>> 0);
  return undefined;
}

export class ObjReader {
  // Arrays, not Sets: a mesh's push makes some 100,000 readers, each reading a few fields; a Set per
  // reader was a fifth of the model's decode time. done() searches them once per field present.
  private readonly seen: string[] = [];
  private ignored: (readonly string[])[] | undefined;
  // A nested reader's path is made only when asked for (errors, warnings): most readers never need one.
  #path: string | undefined;
  readonly #parent: ObjReader | undefined;
  readonly #name: string;
  readonly #index: number;

  constructor(value: Plain, path: string, ctx: DecodeContext);
  constructor(value: Plain, path: undefined, ctx: DecodeContext, parent: ObjReader, name: string, index: number);
  constructor(
    readonly value: Plain,
    path: string | undefined,
    readonly ctx: DecodeContext,
    parent?: ObjReader,
    name = '',
    index = -1,
  ) {
    this.#path = path;
    this.#parent = parent;
    this.#name = name;
    this.#index = index;
  }

  get path(): string {
    if (this.#path === undefined) {
      const at = this.#parent!.at(this.#name);
      this.#path = this.#index < 0 ? at : `${at}[${this.#index}]`;
    }
    return this.#path;
  }

  static of(value: unknown, path: string, ctx: DecodeContext): ObjReader {
    if (!isPlain(value)) throw new ConfigError(path, `expected an object, got ${describe(value)}`);
    return new ObjReader(value, path, ctx);
  }

  private child(value: unknown, name: string, index: number): ObjReader {
    const r = new ObjReader(value as Plain, undefined, this.ctx, this, name, index);
    if (!isPlain(value)) throw new ConfigError(r.path, `expected an object, got ${describe(value)}`);
    return r;
  }

  at(name: string): string {
    return this.path ? `${this.path}.${name}` : name;
  }

  /** proto3 JSON allows both lowerCamelCase and the original field name (done() matches either). */
  raw(name: string): unknown {
    this.seen.push(name);
    const v = this.value[name];
    return v !== undefined ? v : this.value[camel(name)];
  }

  has(name: string): boolean {
    const v = this.raw(name);
    return v !== undefined && v !== null;
  }

  /** Marks fields as understood-but-unused so they do not produce warnings. */
  ignore(...names: string[]): this {
    (this.ignored ??= []).push(names);
    return this;
  }

  str(name: string): string | undefined;
  str(name: string, fallback: string): string;
  str(name: string, fallback?: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null || v === '') return fallback;
    if (typeof v !== 'string') throw new ConfigError(this.at(name), `expected a string, got ${describe(v)}`);
    return v;
  }

  requiredStr(name: string): string {
    const v = this.str(name);
    if (v === undefined) throw new ConfigError(this.at(name), 'is required');
    return v;
  }

  bool(name: string, fallback = false): boolean {
    let v = this.raw(name);
    if (isPlain(v) && 'value' in v) v = v.value; // google.protobuf.BoolValue
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new ConfigError(this.at(name), `expected true or false, got ${describe(v)}`);
    return v;
  }

  /** An integer in [min, max]; wrappers ({value: n}) and int64 strings are accepted. */
  int(name: string, min: number, max: number): number | undefined {
    let v = this.raw(name);
    if (isPlain(v) && 'value' in v && Object.keys(v).length === 1) v = v.value;
    if (v === undefined || v === null) return undefined;
    const n = toNumber(v);
    if (n === undefined || !Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(this.at(name), `expected ${min}..${max}, got ${describe(v)}`);
    }
    return n;
  }

  /** A google.protobuf.Duration, in milliseconds. */
  durationMs(name: string): number | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    const ms = parseDurationMs(v);
    if (ms === undefined) throw new ConfigError(this.at(name), `expected a duration such as "1.5s", got ${describe(v)}`);
    return ms;
  }

  enumOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'number' && allowed[v] !== undefined) return allowed[v]; // protobuf numeric enums
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      throw new ConfigError(this.at(name), `expected one of ${allowed.join(', ')}, got ${describe(v)}`);
    }
    return v as T;
  }

  obj(name: string): ObjReader | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    return this.child(v, name, -1);
  }

  requiredObj(name: string): ObjReader {
    const o = this.obj(name);
    if (!o) throw new ConfigError(this.at(name), 'is required');
    return o;
  }

  /** Items of a repeated field, each with its indexed path. */
  list(name: string): { value: unknown; path: string }[] {
    const v = this.array(name);
    const at = v.length ? this.at(name) : '';
    return v.map((value, i) => ({ value, path: `${at}[${i}]` }));
  }

  objList(name: string): ObjReader[] {
    return this.array(name).map((value, i) => this.child(value, name, i));
  }

  private array(name: string): readonly unknown[] {
    const v = this.raw(name);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new ConfigError(this.at(name), `expected a list, got ${describe(v)}`);
    return v;
  }

  private wasRead(name: string): boolean {
    if (this.seen.includes(name)) return true;
    for (const list of this.ignored ?? []) if (list.includes(name)) return true;
    return false;
  }

  /** Warns about every field nobody asked for. Call once the message is fully read. */
  done(): void {
    let camelSeen: Set<string> | undefined;
    for (const key of Object.keys(this.value)) {
      if (key === '@type' || this.wasRead(key)) continue;
      const snakeKey = snake(key);
      if (snakeKey !== key && this.wasRead(snakeKey)) continue;
      // snake() does not undo camel() before a digit (consecutive_5xx → consecutive5xx): compare forwards.
      camelSeen ??= new Set([...this.seen, ...(this.ignored ?? []).flat()].map(camel));
      if (camelSeen.has(key)) continue;
      this.ctx.warnings.push(`${this.at(key)}: unknown field, ignored`);
    }
  }
}

export function parseDurationMs(v: unknown): number | undefined {
  if (typeof v === 'string') {
    const m = /^(-?\d+(?:\.\d+)?)s$/.exec(v.trim());
    return m ? Math.round(Number(m[1]) * 1000) : undefined;
  }
  if (isPlain(v)) {
    const seconds = toNumber(v.seconds ?? 0);
    const nanos = toNumber(v.nanos ?? 0);
    if (seconds === undefined || nanos === undefined) return undefined;
    return seconds * 1000 + Math.round(nanos / 1e6);
  }
  return undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'object') return 'an object';
  return String(v);
}
