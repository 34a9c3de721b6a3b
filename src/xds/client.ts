/**
 * The xDS entry point for server/: from a bootstrap (and the pod's environment) to a running client that
 * publishes Snapshots. xds/ only produces Snapshots; whoever calls this applies them.
 */
import type { Bootstrap } from '../config/model.js';
import type { Logger } from '../observe/log.js';
import { AdsClient } from './ads-client.js';
import type { XdsClient } from './ads-stream.js';
import type { BackoffOptions } from './backoff.js';
import { DeltaAdsClient } from './delta-client.js';
import type { NameTable } from './engine.js';
import { buildNodeIdentity, type Env } from './node-identity.js';
import type { Published } from './snapshot-builder.js';
import { resolveXdsTarget, type XdsIdentity } from './target.js';

export { expandOpaqueAnys } from './any.js';
export type { XdsClient, XdsClientStatus } from './ads-stream.js';
export type { NameTable, NameInfo } from './engine.js';
export type { Published } from './snapshot-builder.js';
export type { XdsIdentity } from './target.js';

/** Envoy's default initial_fetch_timeout, used when the bootstrap's config source does not set one. */
const ENVOY_INITIAL_FETCH_TIMEOUT_MS = 15_000;

export interface CreateXdsOptions {
  readonly bootstrap: Bootstrap;
  /** --xds-address: replaces the address from the bootstrap (its TLS settings stay). */
  readonly address?: string;
  readonly env: Env;
  readonly version: string;
  readonly publish: (p: Published) => Promise<void>;
  readonly onNameTable?: (t: NameTable) => void;
  /** Called as each response arrives, before it is decoded. */
  readonly onResponse?: () => void;
  readonly log: Logger;
  readonly backoff?: BackoffOptions;
  /** The workload identity, for mTLS to istiod's secure port. */
  readonly identity?: XdsIdentity;
}

/** Whether this bootstrap's xDS connection uses the workload certificate (so it must wait for it). */
export function xdsNeedsIdentity(bootstrap: Bootstrap, address?: string): boolean {
  return !!resolveXdsTarget(bootstrap, address).tls?.workloadIdentity;
}

export function createXdsClient(o: CreateXdsOptions): XdsClient {
  const { node, warnings } = buildNodeIdentity({ rawNode: (o.bootstrap.raw as { node?: unknown } | undefined)?.node, env: o.env, version: o.version });
  for (const w of warnings) o.log.warn(w);
  const resolved = resolveXdsTarget(o.bootstrap, o.address);
  const target = resolved.tls?.workloadIdentity && o.identity ? { ...resolved, tls: { ...resolved.tls, identity: o.identity } } : resolved;
  const dyn = o.bootstrap.dynamicResources;
  const cds = dyn?.cdsConfig?.initialFetchTimeoutMs ?? ENVOY_INITIAL_FETCH_TIMEOUT_MS;
  const lds = dyn?.ldsConfig?.initialFetchTimeoutMs ?? ENVOY_INITIAL_FETCH_TIMEOUT_MS;
  const options = {
    node,
    target,
    statics: { listeners: o.bootstrap.listeners, clusters: o.bootstrap.clusters },
    // Envoy warms EDS clusters by their eds_config and RDS listeners by their rds config_source; Istio
    // gives every one of those the same timeout as CDS/LDS, so the bootstrap's values stand for them.
    warming: { edsMs: cds, rdsMs: lds },
    fetchTimeoutMs: { cluster: cds, listener: lds },
    publish: o.publish,
    onNameTable: o.onNameTable,
    onResponse: o.onResponse,
    log: o.log,
    backoff: o.backoff,
  };
  return dyn?.adsConfig?.apiType === 'DELTA_GRPC' ? new DeltaAdsClient(options) : new AdsClient(options);
}
