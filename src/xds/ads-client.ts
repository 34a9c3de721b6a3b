/**
 * State-of-the-world ADS (StreamAggregatedResources), in Envoy's order: CDS (wildcard), EDS for the EDS
 * clusters, LDS (wildcard), RDS for the listeners' routes, then Istio's NameTable. Every response is
 * ACKed or NACKed before any follow-up request, and EDS/RDS names follow the accepted config; the one
 * exception is asking for a CDS response's endpoints before decoding it (eds-ahead.ts).
 */
import type { AnyMessage } from './any.js';
import { AdsStream } from './ads-stream.js';
import { SOTW_METHOD } from './protos.js';
import { SotwSubscriptions } from './subscriptions.js';
import type { IncomingResource } from './resources.js';
import { KIND_API, kindOfTypeUrl, type ResourceKind, WILDCARD } from './type-urls.js';

interface DiscoveryResponse extends Record<string, unknown> {
  readonly version_info: string;
  readonly resources: readonly AnyMessage[];
  readonly type_url: string;
  readonly nonce: string;
}

export class AdsClient extends AdsStream<DiscoveryResponse> {
  protected readonly api = 'GRPC' as const;
  protected readonly method = SOTW_METHOD;
  protected readonly requestType = this.protos.DiscoveryRequest;
  protected readonly responseType = this.protos.DiscoveryResponse;
  private readonly subs = new SotwSubscriptions();

  protected streamStarted(): void {
    const requests = this.subs.streamStarted();
    if (!this.subs.isWatched('cluster')) {
      requests.push(this.subs.watch('cluster')!);
      this.engine.subscribed('cluster');
    }
    if (requests.length > 1) this.log.info({ resubscribe: requests.map((r) => ({ type: r.type_url, version: r.version_info, names: r.resource_names.length })) }, 'xds: re-subscribing');
    for (const r of requests) this.send({ ...r });
  }

  protected onResponse(res: DiscoveryResponse): (() => void) | undefined {
    const kind = kindOfTypeUrl(res.type_url);
    if (!kind) {
      this.log.warn({ type: res.type_url }, 'xds: response for a type we did not ask for, ignored');
      return undefined;
    }
    this.subs.received(kind, res.nonce);
    const items = (res.resources ?? []).map((any) => ({ any }));
    const handle = () => this.handle(kind, res, items);
    if (kind === 'cluster') {
      const names = this.engine.endpointNamesAhead(items);
      const ahead = names && this.subs.setNames('endpoint', names);
      if (ahead) {
        this.send({ ...ahead });
        return handle;
      }
    }
    handle();
    return undefined;
  }

  private handle(kind: ResourceKind, res: DiscoveryResponse, items: IncomingResource[]): void {
    const nack = this.engine.handle(kind, {
      items,
      version: res.version_info ?? '',
      replaceAll: WILDCARD.has(kind),
    });
    this.send(nack ? { ...this.subs.nack(kind, nack) } : { ...this.subs.ack(kind, res.version_info ?? '') });
    this.log.debug({ type: KIND_API[kind], version: res.version_info, nonce: res.nonce, nack: !!nack }, nack ? 'xds: NACK' : 'xds: ACK');
    if (kind === 'cluster') {
      this.send(this.copy(this.subs.setNames('endpoint', this.engine.wantedNames('endpoint'))));
      if (!this.subs.isWatched('listener')) {
        this.send({ ...this.subs.watch('listener')! });
        this.engine.subscribed('listener');
      }
    }
    if (kind === 'listener') {
      this.send(this.copy(this.subs.setNames('route', this.engine.wantedNames('route'))));
      if (!this.subs.isWatched('nametable')) this.send({ ...this.subs.watch('nametable')! });
    }
  }

  protected syncNames(): void {
    if (this.subs.isWatched('cluster')) this.send(this.copy(this.subs.setNames('endpoint', this.engine.wantedNames('endpoint'))));
    if (this.subs.isWatched('listener')) this.send(this.copy(this.subs.setNames('route', this.engine.wantedNames('route'))));
  }

  private copy(r: object | undefined): Record<string, unknown> | undefined {
    return r ? { ...r } : undefined;
  }
}
