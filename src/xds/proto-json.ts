/**
 * Proto3 JSON <-> protobufjs, for the parts protobufjs does not do the way xDS needs.
 *
 * Reading (protobuf -> plain objects): protobufjs's generated toObject is fast but leaves the well-known
 * types in their wire shape: a BoolValue `false` becomes `{}`, a Duration `{seconds: "10"}`, a Struct
 * `{fields: {k: {string_value}}}`, and an Any whose type we did not load `{type_url, value}`. We patch
 * those few types on our own Root (never protobufjs's global wrappers, which other code shares) so every
 * resource comes out in proto3 JSON form with snake_case names — the form the config decoders and
 * /config_dump speak.
 *
 * Writing (JSON -> protobuf): a small path-tracking converter, because protobufjs's fromObject does not
 * accept "0s" durations, Struct as plain JSON, wrappers as bare values or Anys of types it does not know.
 */
import protobuf from 'protobufjs';

type Type = protobuf.Type;
type Plain = Record<string, unknown>;
type ToObject = (message: protobuf.Message, options?: protobuf.IConversionOptions, depth?: number) => Plain;

/** Enums as names, 64-bit integers as decimal strings, bytes as base64, Anys expanded. */
export const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, bytes: String, json: true };

const isPlain = (v: unknown): v is Plain => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
const own = (m: object, k: string) => Object.prototype.hasOwnProperty.call(m, k);
const lookupType = (root: protobuf.Root, name: string): Type | undefined => {
  const t = root.lookup(name);
  return t instanceof protobuf.Type ? t : undefined;
};
const messageName = (typeUrl: string) => typeUrl.slice(typeUrl.lastIndexOf('/') + 1);

const EMPTY = new Uint8Array(0);

/** Each wrapper type's value when its message is empty. */
export const WRAPPER_DEFAULTS: Record<string, unknown> = {
  '.google.protobuf.DoubleValue': 0,
  '.google.protobuf.FloatValue': 0,
  '.google.protobuf.Int64Value': '0',
  '.google.protobuf.UInt64Value': '0',
  '.google.protobuf.Int32Value': 0,
  '.google.protobuf.UInt32Value': 0,
  '.google.protobuf.BoolValue': false,
  '.google.protobuf.StringValue': '',
  '.google.protobuf.BytesValue': '',
};

/** Types whose proto3 JSON form is not an object of their fields; inside an Any they sit under "value". */
const JSON_SCALAR_TYPES = new Set([
  ...Object.keys(WRAPPER_DEFAULTS),
  '.google.protobuf.Duration',
  '.google.protobuf.Timestamp',
  '.google.protobuf.Struct',
  '.google.protobuf.Value',
  '.google.protobuf.ListValue',
  '.google.protobuf.FieldMask',
]);

// ---------------------------------------------------------------------------------------------- reading

export function durationString(seconds: unknown, nanos: unknown): string {
  const s = BigInt(String(seconds ?? 0));
  const n = Number(nanos ?? 0);
  const negative = s < 0n || n < 0;
  const abs = (negative ? -s : s).toString();
  const frac = Math.abs(n);
  if (frac === 0) return `${negative ? '-' : ''}${abs}s`;
  let digits = String(frac).padStart(9, '0');
  digits = digits.endsWith('000000') ? digits.slice(0, 3) : digits.endsWith('000') ? digits.slice(0, 6) : digits;
  return `${negative ? '-' : ''}${abs}.${digits}s`;
}

export function timestampString(seconds: unknown, nanos: unknown): string {
  const ms = Number(String(seconds ?? 0)) * 1000 + Math.floor(Number(nanos ?? 0) / 1e6);
  const iso = new Date(ms).toISOString();
  return Number(nanos ?? 0) === 0 ? iso.replace('.000Z', 'Z') : iso;
}

// protobufjs defines the well-known types from its own bundled descriptors, where Value's fields are
// camelCase (stringValue) whatever keepCase says; accept both spellings. Struct values are a large part
// of Istio's resources (metadata), so the spellings are written out rather than converted per value.
export const VALUE_KINDS = [
  ['number_value', 'numberValue'],
  ['string_value', 'stringValue'],
  ['bool_value', 'boolValue'],
  ['struct_value', 'structValue'],
  ['list_value', 'listValue'],
] as const;

function valueToJs(v: Plain | undefined): unknown {
  if (!v) return null;
  for (const [snake, camel] of VALUE_KINDS) {
    const key = own(v, snake) ? snake : own(v, camel) ? camel : undefined;
    if (key === undefined) continue;
    const x = v[key];
    if (snake === 'number_value') return Number.isFinite(x) ? x : String(x);
    if (snake === 'struct_value') return structToJs(x as Plain);
    if (snake === 'list_value') return ((x as Plain).values as Plain[] | undefined)?.map(valueToJs) ?? [];
    return x;
  }
  return null;
}

function structToJs(s: Plain | undefined): Plain {
  const out: Plain = {};
  const fields = (s?.fields ?? {}) as Record<string, Plain>;
  for (const k of Object.keys(fields)) out[k] = valueToJs(fields[k]);
  return out;
}

/**
 * Makes toObject on `root` produce proto3 JSON for the well-known types. Call once, after loading; the
 * generated toObject of every other type calls these through its resolved field types.
 */
export function installProto3JsonReaders(root: protobuf.Root): void {
  const patch = (name: string, fn: (type: Type) => ToObject) => {
    const t = lookupType(root, name);
    if (!t) return;
    t.setup();
    (t as unknown as { toObject: ToObject }).toObject = fn(t);
  };
  for (const [name, fallback] of Object.entries(WRAPPER_DEFAULTS)) {
    patch(name, (t) => {
      const generated = t.toObject.bind(t) as ToObject;
      return ((m: protobuf.Message, o?: protobuf.IConversionOptions) => {
        const v = generated(m, o).value;
        return (v === undefined ? fallback : v) as Plain;
      }) as ToObject;
    });
  }
  patch('.google.protobuf.Duration', () => ((m: Plain) => durationString(m.seconds, m.nanos)) as unknown as ToObject);
  patch('.google.protobuf.Timestamp', () => ((m: Plain) => timestampString(m.seconds, m.nanos)) as unknown as ToObject);
  patch('.google.protobuf.Struct', () => ((m: Plain) => structToJs(m)) as unknown as ToObject);
  patch('.google.protobuf.Value', () => ((m: Plain) => valueToJs(m)) as unknown as ToObject);
  patch('.google.protobuf.ListValue', () => ((m: Plain) => (m.values as Plain[] | undefined)?.map(valueToJs) ?? []) as unknown as ToObject);
  patch('.google.protobuf.FieldMask', () => ((m: Plain) => ((m.paths as string[] | undefined) ?? []).join(',')) as unknown as ToObject);
  patch('.google.protobuf.Any', () => {
    const cache = new Map<string, Type | undefined>();
    return ((m: Plain, o?: protobuf.IConversionOptions, depth = 0) => {
      const url = typeof m.type_url === 'string' ? m.type_url : '';
      if (!url) return {};
      const value = (m.value as Uint8Array | undefined) ?? EMPTY;
      const name = messageName(url);
      if (!cache.has(name)) cache.set(name, lookupType(root, name));
      const inner = cache.get(name);
      // A type we did not load (istio.stats, metadata exchange, …): keep its bytes so nothing is lost.
      if (!inner) return value.length ? { '@type': url, value: protobuf.util.base64.encode(value, 0, value.length) } : { '@type': url };
      const body: unknown = (inner as unknown as { toObject: ToObject }).toObject(inner.decode(value), o ?? TO_OBJECT, depth + 1);
      return JSON_SCALAR_TYPES.has(inner.fullName) ? { '@type': url, value: body } : { '@type': url, ...(body as Plain) };
    }) as unknown as ToObject;
  });
}

// ---------------------------------------------------------------------------------------------- writing

export class ProtoJsonError extends Error {
  constructor(
    readonly path: string,
    readonly detail: string,
  ) {
    super(path ? `${path}: ${detail}` : detail);
    this.name = 'ProtoJsonError';
  }
}

export interface FromJsonOptions {
  /** Drop object members that are not fields instead of failing (config written for a newer Envoy). */
  readonly ignoreUnknownFields?: boolean;
  /** Called for an Any whose type is not loaded; its fields cannot be encoded and are dropped. */
  readonly onUnknownAny?: (typeUrl: string, path: string) => void;
}

const at = (path: string, key: string | number) => (typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key);
const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

const fieldIndexes = new WeakMap<Type, Map<string, protobuf.Field>>();
function fieldIndex(type: Type): Map<string, protobuf.Field> {
  let index = fieldIndexes.get(type);
  if (!index) {
    index = new Map();
    for (const f of type.fieldsArray) {
      index.set(f.name, f);
      index.set(camel(f.name), f);
    }
    fieldIndexes.set(type, index);
  }
  return index;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return typeof v === 'string' ? JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v) : String(v);
}

const DURATION = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/;

/** The Value message's field names in this root (see `field` above). */
const valueFieldNames = new WeakMap<protobuf.Root, Record<string, string>>();
function valueNames(root: protobuf.Root): Record<string, string> {
  let names = valueFieldNames.get(root);
  if (!names) {
    const t = lookupType(root, '.google.protobuf.Value');
    names = {};
    for (const snakeName of ['null_value', 'number_value', 'string_value', 'bool_value', 'struct_value', 'list_value']) {
      names[snakeName] = t?.fields[snakeName] ? snakeName : camel(snakeName);
    }
    valueFieldNames.set(root, names);
  }
  return names;
}

function jsValue(v: unknown, path: string, n: Record<string, string>): Plain {
  if (v === null) return { [n.null_value!]: 0 };
  if (typeof v === 'number') return { [n.number_value!]: v };
  if (typeof v === 'string') return { [n.string_value!]: v };
  if (typeof v === 'boolean') return { [n.bool_value!]: v };
  if (Array.isArray(v)) return { [n.list_value!]: { values: v.map((x, i) => jsValue(x, at(path, i), n)) } };
  if (isPlain(v)) return { [n.struct_value!]: jsStruct(v, path, n) };
  throw new ProtoJsonError(path, `cannot be a google.protobuf.Value: ${describe(v)}`);
}

function jsStruct(v: unknown, path: string, n: Record<string, string>): Plain {
  if (!isPlain(v)) throw new ProtoJsonError(path, `expected an object (google.protobuf.Struct), got ${describe(v)}`);
  const fields: Plain = {};
  for (const [k, x] of Object.entries(v)) fields[k] = jsValue(x, at(path, k), n);
  return { fields };
}

type Special = (type: Type, json: unknown, opts: FromJsonOptions, path: string) => unknown;

const SPECIAL: Record<string, Special> = {
  '.google.protobuf.Struct': (t, json, _o, path) => jsStruct(json, path, valueNames(t.root as protobuf.Root)),
  '.google.protobuf.Value': (t, json, _o, path) => jsValue(json, path, valueNames(t.root as protobuf.Root)),
  '.google.protobuf.ListValue': (t, json, _o, path) => {
    if (!Array.isArray(json)) throw new ProtoJsonError(path, `expected a list, got ${describe(json)}`);
    return { values: json.map((x, i) => jsValue(x, at(path, i), valueNames(t.root as protobuf.Root))) };
  },
  '.google.protobuf.Duration': (t, json, o, path) => {
    if (isPlain(json)) return convertFields(t, json, o, path);
    const m = typeof json === 'string' ? DURATION.exec(json.trim()) : null;
    if (!m) throw new ProtoJsonError(path, `expected a duration such as "1.5s", got ${describe(json)}`);
    const sign = m[1] ? -1 : 1;
    return { seconds: `${m[1] ?? ''}${m[2]}`, nanos: sign * Number((m[3] ?? '').padEnd(9, '0')) };
  },
  '.google.protobuf.Timestamp': (t, json, o, path) => {
    if (isPlain(json)) return convertFields(t, json, o, path);
    const ms = typeof json === 'string' ? Date.parse(json) : NaN;
    if (Number.isNaN(ms)) throw new ProtoJsonError(path, `expected an RFC 3339 timestamp, got ${describe(json)}`);
    const frac = /\.(\d{1,9})/.exec(json as string)?.[1] ?? '';
    return { seconds: String(Math.floor(ms / 1000)), nanos: Number(frac.padEnd(9, '0')) };
  },
  '.google.protobuf.FieldMask': (_t, json, _o, path) => {
    if (typeof json !== 'string') throw new ProtoJsonError(path, `expected a field mask string, got ${describe(json)}`);
    return { paths: json.split(',').filter(Boolean).map(snake) };
  },
  '.google.protobuf.Any': (t, json, o, path) => {
    if (!isPlain(json)) throw new ProtoJsonError(path, `expected an object with "@type", got ${describe(json)}`);
    const url = json['@type'] ?? json.type_url ?? json.typeUrl;
    if (typeof url !== 'string' || !url) throw new ProtoJsonError(at(path, '@type'), 'is required in an Any');
    const inner = lookupType(t.root as protobuf.Root, messageName(url));
    if (!inner) {
      o.onUnknownAny?.(url, path);
      const raw = json.value;
      return { type_url: url, value: typeof raw === 'string' ? Buffer.from(raw, 'base64') : new Uint8Array(0) };
    }
    let body: unknown = json.value;
    if (!JSON_SCALAR_TYPES.has(inner.fullName)) {
      body = Object.fromEntries(Object.entries(json).filter(([k]) => k !== '@type'));
    }
    const message = inner.fromObject(convertMessage(inner, body, o, path) as Plain);
    return { type_url: url, value: inner.encode(message).finish() };
  },
};
for (const [name] of Object.entries(WRAPPER_DEFAULTS)) {
  SPECIAL[name] = (_t, json) => (isPlain(json) && 'value' in json ? { value: json.value } : { value: json });
}

function convertScalar(field: protobuf.Field, v: unknown, path: string): unknown {
  const bad = (want: string) => new ProtoJsonError(path, `expected ${want}, got ${describe(v)}`);
  switch (field.type) {
    case 'string':
      if (typeof v !== 'string') throw bad('a string');
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw bad('true or false');
      return v;
    case 'bytes':
      if (typeof v !== 'string') throw bad('base64 bytes');
      return v;
    case 'double':
    case 'float':
      if (typeof v === 'number' || (typeof v === 'string' && (v === 'NaN' || /Infinity$/.test(v) || !Number.isNaN(Number(v))))) return Number(v);
      throw bad('a number');
    default: // the integer types; 64-bit ones may come as strings
      if ((typeof v === 'number' && Number.isInteger(v)) || (typeof v === 'string' && /^-?\d+$/.test(v))) return v;
      throw bad(`an integer (${field.type})`);
  }
}

function convertValue(field: protobuf.Field, v: unknown, o: FromJsonOptions, path: string): unknown {
  const rt = field.resolve().resolvedType;
  if (rt instanceof protobuf.Type) return convertMessage(rt, v, o, path);
  if (rt instanceof protobuf.Enum) {
    if (typeof v === 'string' && v in rt.values) return v;
    if (typeof v === 'number' && Number.isInteger(v)) return v;
    throw new ProtoJsonError(path, `expected one of ${Object.keys(rt.values).join(', ')}, got ${describe(v)}`);
  }
  return convertScalar(field, v, path);
}

function convertFields(type: Type, json: Plain, o: FromJsonOptions, path: string): Plain {
  const index = fieldIndex(type);
  const out: Plain = {};
  for (const [key, v] of Object.entries(json)) {
    if (key === '@type') continue; // a resource file names its own type
    const field = index.get(key);
    if (!field) {
      if (o.ignoreUnknownFields) continue;
      throw new ProtoJsonError(at(path, key), `unknown field of ${type.fullName.slice(1)}`);
    }
    if (v === null || v === undefined) continue;
    const p = at(path, key);
    if (field.map) {
      if (!isPlain(v)) throw new ProtoJsonError(p, `expected an object (map), got ${describe(v)}`);
      out[field.name] = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, convertValue(field, x, o, at(p, k))]));
    } else if (field.repeated) {
      if (!Array.isArray(v)) throw new ProtoJsonError(p, `expected a list, got ${describe(v)}`);
      out[field.name] = v.map((x, i) => convertValue(field, x, o, at(p, i)));
    } else {
      out[field.name] = convertValue(field, v, o, p);
    }
  }
  return out;
}

function convertMessage(type: Type, json: unknown, o: FromJsonOptions, path: string): unknown {
  const special = SPECIAL[type.fullName];
  if (special) return special(type, json, o, path);
  if (!isPlain(json)) throw new ProtoJsonError(path, `expected an object (${type.fullName.slice(1)}), got ${describe(json)}`);
  return convertFields(type, json, o, path);
}

/** Proto3 JSON (snake_case or lowerCamelCase) to a message of `type`; errors name the field path. */
export function fromProto3Json(type: Type, json: unknown, opts: FromJsonOptions = {}): protobuf.Message {
  return type.fromObject(convertMessage(type, json, opts, '') as Plain);
}

/** A message as proto3 JSON with the field names of the .proto files. */
export function toProto3Json(type: Type, message: protobuf.Message): Plain {
  return type.toObject(message, TO_OBJECT) as Plain;
}
