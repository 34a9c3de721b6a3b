/**
 * Telemetry's start-up settings: this pod's identity (the same node metadata istiod would see, from a
 * static bootstrap too) and the switches from the command line and the bootstrap's `stats_config`.
 */
import type { Bootstrap } from '../config/model.js';
import { configureTelemetry } from '../observe/istio/telemetry.js';
import { buildNodeIdentity, type Env } from '../xds/node-identity.js';

export interface TelemetryFlags {
  /** false: no istio_* or xsidecar_rpc_* per-request metrics (`--no-istio-metrics`). */
  readonly istioMetrics?: boolean;
  /** `--access-log PATH|-`. */
  readonly accessLog?: string;
  /** `--rpc-stats-max-methods N` (default 500). */
  readonly maxRpcMethods?: number;
}

/**
 * The node metadata with ISTIO_META_* applied, as buildNodeIdentity makes it for istiod. A static
 * bootstrap may carry no id of istiod's shape and no POD_* environment: its metadata is still this pod's.
 */
export function nodeMetadata(bootstrap: Bootstrap, env: Env, version: string): Readonly<Record<string, unknown>> {
  const rawNode = (bootstrap.raw as { node?: Record<string, unknown> } | undefined)?.node ?? {};
  try {
    return buildNodeIdentity({ rawNode, env, version }).node.metadata;
  } catch {
    const id = 'sidecar~0.0.0.0~unknown.unknown~unknown.svc.cluster.local';
    try {
      const m = { ...buildNodeIdentity({ rawNode: { ...rawNode, id }, env, version }).node.metadata };
      // Placeholders of the synthetic id, not facts about this pod.
      for (const k of ['NAMESPACE', 'NAME', 'INSTANCE_IPS'] as const) if (m[k] === 'unknown' || m[k] === '0.0.0.0') delete m[k];
      return m;
    } catch {
      return bootstrap.node.metadata;
    }
  }
}

/** Envoy's `stats_config.stats_matcher.reject_all: true` turns the per-request metrics off too. */
function rejectAll(bootstrap: Bootstrap): boolean {
  const sc = (bootstrap.raw as { stats_config?: Record<string, unknown>; statsConfig?: Record<string, unknown> } | undefined) ?? {};
  const cfg = sc.stats_config ?? sc.statsConfig;
  const m = (cfg?.stats_matcher ?? cfg?.statsMatcher) as { reject_all?: unknown; rejectAll?: unknown } | undefined;
  return m?.reject_all === true || m?.rejectAll === true;
}

export function setUpTelemetry(bootstrap: Bootstrap, metadata: Readonly<Record<string, unknown>>, flags: TelemetryFlags | undefined): void {
  configureTelemetry({
    nodeMetadata: metadata,
    enabled: flags?.istioMetrics !== false && !rejectAll(bootstrap),
    maxRpcMethods: flags?.maxRpcMethods,
    accessLog: flags?.accessLog,
  });
}
