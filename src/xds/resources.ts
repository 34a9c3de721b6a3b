/**
 * From the Any-wrapped resources of one response to decoded config, with an error per bad resource
 * that names it and the field at fault. A resource whose bytes did not change since the last accepted
 * version is reused as it was, without being decoded when its bytes begin with its name, as istiod's do
 * (its full pushes resend everything).
 */
import { decodeCluster, decodeLoadAssignment } from '../config/cluster.js';
import { decodeListener } from '../config/listener.js';
import type { Cluster, ClusterLoadAssignment, Listener } from '../config/model.js';
import { ConfigError, newContext } from '../config/reader.js';
import { fromSource, sameBytes } from '../config/source.js';
import { decodeRouteConfiguration } from '../config/route.js';
import { type AnyMessage, leadingName, unpackAny, UnpackError } from './any.js';
import { claFromWire } from './cla-wire.js';
import { clusterFromWire } from './cluster-wire.js';
import { HeldBytes } from './held-bytes.js';
import type { XdsProtos } from './protos.js';
import { asBuffer } from './wire-json.js';
import { type ConfigKind, KIND_LABEL, TYPE_URL } from './type-urls.js';

export interface Resource<T = unknown> {
  readonly name: string;
  /** Proto3 JSON, snake_case, for /config_dump: decoded again from the resource's bytes on each read. */
  readonly raw: Record<string, unknown>;
  /** The decoded model object (Listener, Cluster, ClusterLoadAssignment, RouteConfiguration). */
  readonly config: T;
  readonly warnings: readonly string[];
  /** version_info of the response (SotW) or the resource's own version (delta) that last changed it. */
  readonly version: string;
  readonly lastUpdated: string;
  /** The resource's bytes, from which `raw` is made (absent: not from xDS). */
  readonly bytes?: HeldBytes;
}

export interface ResourceFailure {
  readonly name: string;
  readonly raw?: unknown;
  readonly message: string;
}

export interface IncomingResource {
  readonly any: AnyMessage;
  /** Delta only: the name and version the server gave the resource. */
  readonly name?: string;
  readonly version?: string;
}

const DECODERS: Record<ConfigKind, (plain: Record<string, unknown>, ctx: ReturnType<typeof newContext>) => unknown> = {
  cluster: (p, ctx) => decodeCluster(p, '', ctx),
  endpoint: (p, ctx) => decodeLoadAssignment(p, '', ctx),
  listener: (p, ctx) => decodeListener(p, '', ctx),
  route: (p, ctx) => decodeRouteConfiguration(p, '', ctx),
};

/** The model read straight from the bytes (cla-wire.ts, cluster-wire.ts) and its name, its warnings added to `ctx`; undefined: the general way. */
function fromWire(protos: XdsProtos, kind: ConfigKind, bytes: Uint8Array, ctx: ReturnType<typeof newContext>): { name: string; config: ClusterLoadAssignment | Cluster } | undefined {
  if (kind === 'endpoint') {
    const cla = claFromWire(bytes);
    return cla && { name: cla.clusterName, config: cla };
  }
  if (kind !== 'cluster') return undefined;
  const read = clusterFromWire(protos, bytes);
  if (!read) return undefined;
  ctx.warnings.push(...read.warnings);
  return { name: read.cluster.name, config: read.cluster };
}

/**
 * A Resource whose proto3 JSON (its `raw`, and its model's) is made again from its bytes when read: what
 * /config_dump shows is what came, and nothing but the bytes is kept, where they arrived (held-bytes.ts).
 * Built here, at module level, so that `plain` holds only what it names: made inside decodeResources it
 * would hold its scope, and through `previous` every earlier generation of the config.
 */
function sourced(protos: XdsProtos, typeUrl: string, value: Uint8Array, r: Omit<Resource, 'raw' | 'bytes'>): Resource {
  const bytes = new HeldBytes(asBuffer(value));
  const plain = () => unpackAny(protos, { type_url: typeUrl, value: bytes.view }).plain;
  return fromSource({ ...r, bytes, config: fromSource(r.config as object, bytes, plain) }, bytes, plain);
}

/** `Listener "virtualInbound": filter_chains[2].filters: no terminal network filter …` */
export function failureMessage(kind: ConfigKind, name: string, e: unknown): string {
  const label = `${KIND_LABEL[kind]} "${name}"`;
  if (e instanceof ConfigError) return e.path ? `${label}: ${e.path}: ${e.detail}` : `${label}: ${e.detail}`;
  return `${label}: ${(e as Error).message}`;
}

export function decodeResources(
  protos: XdsProtos,
  kind: ConfigKind,
  items: readonly IncomingResource[],
  previous: ReadonlyMap<string, Resource>,
  version: string,
  now: string,
): { resources: Resource[]; failures: ResourceFailure[] } {
  const resources: Resource[] = [];
  const failures: ResourceFailure[] = [];
  const seen = new Set<string>();
  const typeUrl = TYPE_URL[kind];
  items.forEach((item, i) => {
    let name = item.name ?? `#${i}`;
    let raw: Record<string, unknown> | undefined;
    let direct: ReturnType<typeof fromWire>;
    try {
      // The bytes name the resource, so bytes equal to those of the resource accepted under the name they
      // begin with are that resource: a full push that resends the mesh costs a comparison per unchanged
      // resource, before anything is decoded. (A SHA-1 digest of each was 5 % of the CPU of a full push, Node 24.)
      const prior = item.any.type_url === typeUrl ? previous.get(item.name ?? leadingName(item.any.value) ?? '') : undefined;
      const known = prior?.bytes && sameBytes(prior.bytes, item.any.value) ? prior : undefined;
      if (known) {
        name = known.name;
        if (seen.has(name)) throw new UnpackError(`appears twice in one response`);
        seen.add(name);
        resources.push(known);
        return;
      }
      // istiod's endpoints and clusters are read straight from the wire; any other shape, and every other kind, the general way.
      const ctx = newContext();
      direct = item.any.type_url === typeUrl ? fromWire(protos, kind, item.any.value, ctx) : undefined;
      let inner: string;
      if (direct) inner = direct.name;
      else {
        const unpacked = unpackAny(protos, item.any, typeUrl);
        inner = unpacked.name;
        raw = unpacked.plain;
      }
      if (!inner) throw new ConfigError(kind === 'endpoint' ? 'cluster_name' : 'name', 'is required');
      if (item.name !== undefined && item.name !== inner) throw new UnpackError(`delta resource name "${item.name}" differs from the resource's own "${inner}"`);
      name = inner;
      if (seen.has(name)) throw new UnpackError(`appears twice in one response`);
      seen.add(name);
      // Bytes that do not begin with their name (istiod's do) are read to learn it: equal to the bytes
      // accepted under it, they are still that resource, with the version and warming clock it has.
      const same = previous.get(name);
      if (same !== prior && same?.bytes && sameBytes(same.bytes, item.any.value)) {
        resources.push(same);
        return;
      }
      const config = direct?.config ?? DECODERS[kind](raw!, ctx);
      resources.push(sourced(protos, typeUrl, item.any.value, { name, config, warnings: ctx.warnings, version: item.version ?? version, lastUpdated: now }));
    } catch (e) {
      if (!(e instanceof ConfigError) && !(e instanceof UnpackError)) throw e;
      // Read directly, it has no proto3 JSON yet: a rejection shows it (config_dump's failed_configuration)
      // when the general decoder can make one.
      if (direct) raw = rawOrUndefined(protos, item.any, typeUrl);
      failures.push({ name, raw, message: failureMessage(kind, name, e) });
    }
  });
  return { resources, failures };
}

function rawOrUndefined(protos: XdsProtos, any: AnyMessage, typeUrl: string): Record<string, unknown> | undefined {
  try {
    return unpackAny(protos, any, typeUrl).plain;
  } catch (e) {
    if (e instanceof UnpackError) return undefined;
    throw e;
  }
}

export interface Statics {
  readonly listeners: readonly Listener[];
  readonly clusters: readonly Cluster[];
}

/** Checks that need the whole set: names shared with static resources, two listeners on one address. */
export function crossCheck(kind: ConfigKind, merged: ReadonlyMap<string, Resource>, statics: Statics): ResourceFailure[] {
  const failures: ResourceFailure[] = [];
  if (kind === 'cluster') {
    for (const c of statics.clusters) {
      const r = merged.get(c.name);
      if (r) failures.push({ name: r.name, raw: r.raw, message: `${KIND_LABEL.cluster} "${r.name}": name: a static cluster has this name` });
    }
  }
  if (kind === 'listener') {
    const bound = new Map<string, string>();
    for (const l of statics.listeners) if (l.bindToPort) bound.set(`${l.address.address}:${l.address.port}`, `static listener "${l.name}"`);
    for (const l of statics.listeners) {
      const r = merged.get(l.name);
      if (r) failures.push({ name: r.name, raw: r.raw, message: `${KIND_LABEL.listener} "${r.name}": name: a static listener has this name` });
    }
    for (const r of merged.values()) {
      const l = r.config as Listener;
      if (!l.bindToPort) continue;
      const key = `${l.address.address}:${l.address.port}`;
      const other = bound.get(key);
      if (other) failures.push({ name: r.name, raw: r.raw, message: `${KIND_LABEL.listener} "${r.name}": address: ${key} is already used by ${other}` });
      else bound.set(key, `listener "${r.name}"`);
    }
  }
  return failures;
}
