/**
 * The part of the xDS client that does not care about the wire: decodes what a response carries,
 * accepts or rejects it, says which EDS/RDS names are needed, and publishes a new Snapshot whenever the
 * config in force changes — one at a time, in order, the first only once the config is complete. The
 * state-of-the-world and delta stream clients both drive it.
 */
import type { Logger } from '../observe/log.js';
import { metrics } from '../observe/metrics.js';
import { leadingName, unpackAny } from './any.js';
import type { Cluster, Listener } from '../config/model.js';
import { ConfigState, edsNameOf, type Rejection, routeNamesOf } from './config-state.js';
import type { XdsProtos } from './protos.js';
import { edsNamesAhead } from './eds-ahead.js';
import { type HeldBytes, repack } from './held-bytes.js';
import { decodeResources, type IncomingResource, type Resource, type Statics } from './resources.js';
import { type BuildResult, type Published, SnapshotBuilder, type WarmingPolicy } from './snapshot-builder.js';
import { type ConfigKind, KIND_API, type ResourceKind, TYPE_URL } from './type-urls.js';

export interface NameInfo {
  readonly ips: readonly string[];
  readonly registry?: string;
  readonly shortname?: string;
  readonly namespace?: string;
}

/** istio.networking.nds.v1.NameTable: hostname -> addresses, for the DNS proxy. */
export interface NameTable {
  readonly table: Readonly<Record<string, NameInfo>>;
}

export interface XdsStatus {
  /** The first complete config has been applied. */
  readonly ready: boolean;
  readonly versions: Readonly<Partial<Record<ConfigKind, string>>>;
  readonly rejected: Readonly<Record<ConfigKind, readonly Rejection[]>>;
  readonly warming: { readonly clusters: readonly Resource[]; readonly listeners: readonly Resource[] };
}

export interface EngineOptions {
  readonly protos: XdsProtos;
  readonly statics: Statics;
  readonly warming: WarmingPolicy;
  /** initial_fetch_timeout of CDS and LDS in ms: after it, the type counts as answered. 0: wait for ever. */
  readonly fetchTimeoutMs: { readonly cluster: number; readonly listener: number };
  /** Applies a Snapshot; called serially, never twice at once. */
  readonly publish: (p: Published) => Promise<void>;
  readonly onNameTable?: (t: NameTable) => void;
  /** How long responses handled turn after turn may hold back their Snapshot (ms; COALESCE_MS, for tests). */
  readonly coalesceMs?: number;
  /** A build changed what is warming (a warming timeout, what it waited for arrived): the EDS/RDS names wanted may have changed. */
  readonly onWantedNamesChanged?: () => void;
  readonly log: Logger;
}

export interface ResponseInput {
  readonly items: readonly IncomingResource[];
  readonly version: string;
  readonly replaceAll: boolean;
  readonly removed?: readonly string[];
}

/**
 * How long responses handled turn after turn may hold back the Snapshot they make, from when the first of
 * them queued it (the last one's handling and a turn of the loop come on top): a full push of the
 * 1,000-service mesh is handled in 100–200 ms, so its four responses make one Snapshot, not three; a
 * slower push makes two. NameTable responses do not count: istiod sends them after the rest.
 */
const COALESCE_MS = 250;

export class XdsEngine {
  private readonly state: ConfigState;
  private readonly builder: SnapshotBuilder;
  private lastBuild: BuildResult | undefined;
  private published: Published | undefined;
  private everPublished = false;
  private applied = false;
  private firstResponseAt: number | undefined;
  private pending: Published | undefined;
  private applying = false;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private readonly fetchTimers = new Map<ConfigKind, NodeJS.Timeout>();
  private stopped = false;
  /** A rebuild is queued (see rebuild). */
  private rebuildQueued: NodeJS.Immediate | undefined;
  /** Responses handled so far, and how many when the queued rebuild last looked (NaN: not yet); when it was first queued. */
  private responsesHandled = 0;
  private responsesSeen = NaN;
  private rebuildSince = 0;
  nameTable: NameTable | undefined;

  constructor(private readonly opts: EngineOptions) {
    this.state = new ConfigState(opts.statics);
    this.builder = new SnapshotBuilder(opts.warming);
  }

  /** The first response of any type starts the "first response to ready" clock. */
  noteResponse(): void {
    this.firstResponseAt ??= performance.now();
  }

  /** A CDS or LDS subscription started: its initial_fetch_timeout runs from now. */
  subscribed(kind: ResourceKind): void {
    if (kind !== 'cluster' && kind !== 'listener') return;
    const ms = this.opts.fetchTimeoutMs[kind];
    if (ms <= 0 || this.fetchTimers.has(kind) || this.state.isInitialized(kind)) return;
    this.fetchTimers.set(
      kind,
      setTimeout(() => {
        if (this.state.isInitialized(kind)) return;
        this.opts.log.warn({ type: KIND_API[kind], timeoutMs: ms }, 'xds: initial fetch timed out, going on without it');
        this.state.markInitialized(kind);
        this.rebuild();
      }, ms).unref(),
    );
  }

  /** Accepts or rejects one response; returns the NACK message when rejected. */
  handle(kind: ResourceKind, input: ResponseInput): string | undefined {
    if (kind === 'nametable') return this.handleNameTable(input);
    this.responsesHandled++;
    const now = new Date().toISOString();
    const before = this.state.active[kind];
    const decoded = decodeResources(this.opts.protos, kind, input.items, before, input.version, now);
    const nack = this.state.update(kind, { ...decoded, removed: input.removed, replaceAll: input.replaceAll }, input.version, now);
    if (kind === 'cluster' || kind === 'listener') this.state.markInitialized(kind);
    const api = KIND_API[kind];
    metrics.xdsUpdates.inc({ type: kind, result: nack ? 'rejected' : 'accepted' });
    if (nack) {
      this.opts.log.warn({ type: api, version: input.version, rejected: decoded.failures.length || 1, error: nack }, 'xds: update rejected, previous config stays');
      if (!this.everPublished) this.rebuild(); // a rejected first response still completes the initial fetch
      return nack;
    }
    // Keep only what the config refers to: a removed cluster's endpoints go, and so does a late answer
    // for a name that was unsubscribed meanwhile.
    if (kind === 'cluster' || kind === 'endpoint') this.state.retain('endpoint', this.wantedNames('endpoint'));
    if (kind === 'listener' || kind === 'route') this.state.retain('route', this.wantedNames('route'));
    this.packHeldBytes(kind);
    const fresh = decoded.resources.filter((r) => before.get(r.name) !== r);
    const warnings = fresh.flatMap((r) => r.warnings.map((w) => `${r.name}: ${w}`));
    this.opts.log.info(
      { type: api, version: input.version, resources: this.state.active[kind].size, changed: fresh.length, removed: input.removed?.length, warnings: warnings.length, sample: warnings.slice(0, 3) },
      'xds: update accepted',
    );
    if (warnings.length > 0) this.opts.log.debug({ type: api, warnings }, 'xds: warnings');
    this.rebuild();
    return undefined;
  }

  /**
   * Each accepted resource's bytes stay in its response's buffer (held-bytes.ts): buffers now mostly dead
   * are packed. That is the kind just handled, and the endpoints or routes it may have retained out. The
   * old version of a warming cluster or listener counts too: it serves until the new one is warm, which
   * may be for ever.
   */
  private packHeldBytes(kind: ConfigKind): void {
    const kinds: ConfigKind[] = kind === 'cluster' ? ['cluster', 'endpoint'] : kind === 'listener' ? ['listener', 'route'] : [kind];
    for (const k of kinds) {
      const held = new Set<HeldBytes | undefined>();
      for (const r of this.state.active[k].values()) held.add(r.bytes);
      for (const r of this.servingWhileWarming(k)) held.add(r.bytes);
      repack(held);
    }
  }

  /** The old versions in force of the clusters or listeners warming at the last build. */
  private servingWhileWarming(kind: ConfigKind): Resource[] {
    const build = this.lastBuild;
    if (!build || (kind !== 'cluster' && kind !== 'listener')) return [];
    const live = build.published.resources[kind];
    return build.warming[kind === 'cluster' ? 'clusters' : 'listeners'].flatMap((w) => live.get(w.name) ?? []);
  }

  private handleNameTable(input: ResponseInput): string | undefined {
    const table: Record<string, NameInfo> = {};
    try {
      for (const item of input.items) {
        const plain = unpackAny(this.opts.protos, item.any, TYPE_URL.nametable).plain as { table?: Record<string, NameInfo> };
        Object.assign(table, plain.table ?? {});
      }
    } catch (e) {
      return `NameTable: ${(e as Error).message}`;
    }
    this.nameTable = { table };
    this.opts.log.info({ type: 'NDS', version: input.version, hosts: Object.keys(table).length }, 'xds: name table received');
    try {
      this.opts.onNameTable?.(this.nameTable);
    } catch (e) {
      this.opts.log.error({ err: (e as Error).message }, 'xds: name table listener failed');
    }
    return undefined;
  }

  /**
   * EDS and RDS names needed: those of the accepted config, plus those of the live one — a cluster or
   * listener whose new version is warming still serves with its old version, which needs its endpoints
   * and routes until it is replaced. The live config is the accepted one but for those old versions, so
   * only they are added: read from the last build, which may precede the responses just handled (see
   * rebuild), a removed cluster's names are not wanted from the moment it is removed.
   */
  wantedNames(kind: 'endpoint' | 'route'): Set<string> {
    if (kind === 'endpoint') {
      const names = this.state.edsNames();
      for (const r of this.servingWhileWarming('cluster')) if ((r.config as Cluster).type === 'EDS') names.add(edsNameOf(r.config as Cluster));
      return names;
    }
    const names = this.state.rdsNames();
    for (const r of this.servingWhileWarming('listener')) for (const n of routeNamesOf(r.config as Listener)) names.add(n);
    return names;
  }

  /**
   * What to ask EDS for before a CDS response is decoded: the names wanted now plus those its new clusters
   * appear to use, so istiod prepares them while we decode (eds-ahead.ts). What is wanted after the
   * response is handled corrects it. Undefined when the response names no cluster we do not have: a push
   * that changes known clusters asks for a changed EDS name once handled, as it did before reading ahead,
   * and reading every cluster ahead was 7 % of a full push of the 1,000-service mesh (CPU profile, Node 24).
   */
  endpointNamesAhead(clusters: readonly IncomingResource[]): Set<string> | undefined {
    const known = this.state.active.cluster;
    const fresh = clusters.filter((c) => c.any.type_url === TYPE_URL.cluster && !known.has(c.name ?? leadingName(c.any.value) ?? ''));
    if (fresh.length === 0) return undefined;
    const names = this.wantedNames('endpoint');
    for (const n of edsNamesAhead(fresh.map((c) => c.any))) names.add(n);
    return names;
  }

  /** Accepted resources and their own versions (delta's initial_resource_versions). */
  resourceVersions(kind: ConfigKind): Map<string, string> {
    return new Map([...this.state.active[kind].values()].map((r) => [r.name, r.version]));
  }

  /**
   * Builds the next Snapshot once the responses at hand are handled, not after each: a push's responses
   * arrive together, and each built and applied a Snapshot of the whole mesh only for the next to replace
   * it (on the 1,000-service mesh of bench/xds-scale.ts, building and applying were a fifth of what a full
   * push allocated). The next response of a push is read from the socket only in the event loop's next
   * poll phase, after the immediates queued while this one was handled (it arrived while this one was
   * decoded): so the build waits until a whole turn of the loop has brought no response, up to
   * COALESCE_MS after it was first queued. A lone response is built two immediates later instead of one.
   * What is warming changes only here (a warming timeout, what a resource waited for arrived), and with it
   * the old versions whose EDS/RDS names are still wanted: then the names are brought in line.
   */
  private rebuild(): void {
    if (this.stopped || this.rebuildQueued) return;
    this.responsesSeen = NaN;
    this.rebuildSince = performance.now();
    this.queueRebuild();
  }

  private queueRebuild(): void {
    this.rebuildQueued = setImmediate(() => {
      this.rebuildQueued = undefined;
      if (this.stopped) return;
      if (this.responsesSeen !== this.responsesHandled && performance.now() - this.rebuildSince < (this.opts.coalesceMs ?? COALESCE_MS)) {
        this.responsesSeen = this.responsesHandled;
        this.queueRebuild();
        return;
      }
      const before = this.lastBuild?.warming;
      this.buildAndPublish();
      if (!sameWarming(before, this.lastBuild!.warming)) this.opts.onWantedNamesChanged?.();
    });
  }

  private buildAndPublish(): void {
    const result = this.builder.build(this.state, this.published, Date.now());
    this.lastBuild = result;
    clearTimeout(this.deadlineTimer);
    if (result.nextDeadline !== undefined) {
      this.deadlineTimer = setTimeout(() => this.rebuild(), Math.max(0, result.nextDeadline - Date.now()) + 1).unref();
    }
    // Before the first complete config nothing is published: the static config keeps serving and /ready says 503.
    if (!this.everPublished && !result.complete) return;
    this.everPublished = true;
    this.published = result.published;
    this.pending = result.published;
    if (!this.applying) void this.applyPending();
  }

  private async applyPending(): Promise<void> {
    this.applying = true;
    while (this.pending && !this.stopped) {
      const p = this.pending;
      this.pending = undefined;
      try {
        await this.opts.publish(p);
      } catch (e) {
        this.opts.log.error({ err: (e as Error).message }, 'xds: applying a snapshot failed');
      }
      if (!this.applied) {
        this.applied = true;
        const s = p.snapshot;
        this.opts.log.info(
          {
            sinceFirstResponseMs: this.firstResponseAt === undefined ? undefined : Math.round(performance.now() - this.firstResponseAt),
            listeners: s.listeners.size,
            clusters: s.clusters.size,
            endpoints: s.endpoints.size,
            routes: s.routes.size,
            versions: p.versions,
          },
          'xds: first complete config applied',
        );
      }
    }
    this.applying = false;
  }

  status(): XdsStatus {
    const rejected = Object.fromEntries(Object.entries(this.state.rejected).map(([k, m]) => [k, [...m.values()]])) as Record<ConfigKind, Rejection[]>;
    return {
      ready: this.applied,
      versions: { ...this.state.versions },
      rejected,
      warming: this.lastBuild?.warming ?? { clusters: [], listeners: [] },
    };
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.deadlineTimer);
    clearImmediate(this.rebuildQueued);
    for (const t of this.fetchTimers.values()) clearTimeout(t);
  }
}

type Warming = BuildResult['warming'];
const sameList = (a: readonly Resource[], b: readonly Resource[]) => a.length === b.length && a.every((r, i) => r === b[i]);
const sameWarming = (a: Warming | undefined, b: Warming) => sameList(a?.clusters ?? [], b.clusters) && sameList(a?.listeners ?? [], b.listeners);
