/**
 * Incremental ADS (DeltaAggregatedResources), used when the bootstrap's ads_config says DELTA_GRPC.
 * Same order and same engine as the state-of-the-world client; on the wire, responses carry only what
 * changed plus removed names, subscriptions change by difference, and a re-opened stream tells the
 * server the versions it already has (initial_resource_versions) so nothing unchanged is resent.
 */
import type { AnyMessage } from './any.js';
import { AdsStream } from './ads-stream.js';
import { DELTA_METHOD } from './protos.js';
import type { IncomingResource } from './resources.js';
import { NACK_CODE } from './subscriptions.js';
import { KIND_ORDER, kindOfTypeUrl, type ResourceKind, TYPE_URL, WILDCARD } from './type-urls.js';

interface DeltaResource {
  readonly name: string;
  readonly version: string;
  readonly resource?: AnyMessage | null;
}

interface DeltaDiscoveryResponse extends Record<string, unknown> {
  readonly system_version_info: string;
  readonly resources: readonly DeltaResource[];
  readonly type_url: string;
  readonly removed_resources: readonly string[];
  readonly nonce: string;
}

interface DeltaType {
  wanted: boolean;
  names: Set<string>;
}

export class DeltaAdsClient extends AdsStream<DeltaDiscoveryResponse> {
  protected readonly api = 'DELTA_GRPC' as const;
  protected readonly method = DELTA_METHOD;
  protected readonly requestType = this.protos.DeltaDiscoveryRequest;
  protected readonly responseType = this.protos.DeltaDiscoveryResponse;
  private readonly types = new Map<ResourceKind, DeltaType>(KIND_ORDER.map((k) => [k, { wanted: false, names: new Set<string>() }]));

  private t(kind: ResourceKind): DeltaType {
    return this.types.get(kind)!;
  }

  /** The versions we hold, so a new stream only receives what changed meanwhile. */
  private initialVersions(kind: ResourceKind): Record<string, string> {
    if (kind === 'nametable') return {};
    const out: Record<string, string> = {};
    const names = this.t(kind).names;
    for (const [name, version] of this.engine.resourceVersions(kind)) {
      if (WILDCARD.has(kind) || names.has(name)) out[name] = version;
    }
    return out;
  }

  private subscribe(kind: ResourceKind): void {
    const t = this.t(kind);
    t.wanted = true;
    this.engine.subscribed(kind);
    // An empty subscribe list on a type's first request is the wildcard subscription.
    this.send({ type_url: TYPE_URL[kind], resource_names_subscribe: WILDCARD.has(kind) ? [] : [...t.names].sort(), initial_resource_versions: this.initialVersions(kind) });
  }

  protected streamStarted(): void {
    for (const kind of KIND_ORDER) {
      const t = this.t(kind);
      if (t.wanted && (WILDCARD.has(kind) || t.names.size > 0)) this.subscribe(kind);
    }
    if (!this.t('cluster').wanted) this.subscribe('cluster');
  }

  /** Returns whether a request was sent. */
  private setNames(kind: 'endpoint' | 'route', wanted: Set<string>): boolean {
    const t = this.t(kind);
    const add = [...wanted].filter((n) => !t.names.has(n)).sort();
    const remove = [...t.names].filter((n) => !wanted.has(n)).sort();
    if (add.length === 0 && remove.length === 0) return false;
    t.names = wanted;
    if (!t.wanted) {
      if (wanted.size === 0) return false;
      this.subscribe(kind);
      return true;
    }
    this.send({ type_url: TYPE_URL[kind], resource_names_subscribe: add, resource_names_unsubscribe: remove });
    return true;
  }

  protected syncNames(): void {
    if (this.t('cluster').wanted) this.setNames('endpoint', this.engine.wantedNames('endpoint'));
    if (this.t('listener').wanted) this.setNames('route', this.engine.wantedNames('route'));
  }

  protected onResponse(res: DeltaDiscoveryResponse): (() => void) | undefined {
    const kind = kindOfTypeUrl(res.type_url);
    if (!kind) {
      this.log.warn({ type: res.type_url }, 'xds: delta response for a type we did not ask for, ignored');
      return undefined;
    }
    const items = (res.resources ?? []).filter((r) => r.resource).map((r) => ({ any: r.resource!, name: r.name, version: r.version }));
    const handle = () => this.handle(kind, res, items);
    const ahead = kind === 'cluster' ? this.engine.endpointNamesAhead(items) : undefined;
    if (ahead && this.setNames('endpoint', ahead)) return handle;
    handle();
    return undefined;
  }

  private handle(kind: ResourceKind, res: DeltaDiscoveryResponse, items: IncomingResource[]): void {
    const nack = this.engine.handle(kind, { items, version: res.system_version_info ?? '', replaceAll: false, removed: res.removed_resources ?? [] });
    this.send(nack ? { type_url: res.type_url, response_nonce: res.nonce, error_detail: { code: NACK_CODE, message: nack } } : { type_url: res.type_url, response_nonce: res.nonce });
    if (kind === 'cluster') {
      this.setNames('endpoint', this.engine.wantedNames('endpoint'));
      if (!this.t('listener').wanted) this.subscribe('listener');
    }
    if (kind === 'listener') {
      this.setNames('route', this.engine.wantedNames('route'));
      if (!this.t('nametable').wanted) this.subscribe('nametable');
    }
  }
}
