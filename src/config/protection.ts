/**
 * The bootstrap's process-wide limits: Envoy's `overload_manager` (the downstream-connections and
 * fixed-heap resource monitors, and the actions they trigger) and `layered_runtime` static layers, where
 * Envoy reads `overload.global_downstream_max_connections` and where xsidecar reads its own keys.
 */
import { anyTypeName } from './extensions.js';
import type { Protection } from './model.js';
import { ConfigError, type ObjReader } from './reader.js';

/** Envoy's listener_filters_timeout default; a silent client is closed after it (see sniff.ts). */
export const DEFAULT_SNIFF_TIMEOUT_MS = 15_000;
export const DEFAULT_FRAME_TIMEOUT_MS = 30_000;

const MAX_CONNECTIONS_KEY = 'overload.global_downstream_max_connections';
/** Runtime keys of our own: integers, as Envoy's runtime values are. */
const RUNTIME_KEYS = {
  'xsidecar.sniff_timeout_ms': 'sniffTimeoutMs',
  'xsidecar.frame_timeout_ms': 'frameTimeoutMs',
  'xsidecar.buffer_budget_bytes': 'bufferBudgetBytes',
  'xsidecar.max_early_dials': 'maxEarlyDials',
} as const;

const HEAP_MONITOR = 'envoy.resource_monitors.fixed_heap';
const CONNECTIONS_MONITOR = 'envoy.resource_monitors.global_downstream_max_connections';
const STOP_ACCEPTING = ['envoy.overload_actions.stop_accepting_connections', 'envoy.overload_actions.reject_incoming_connections'];
/** Envoy stops keep-alive under pressure; for RPC connections the nearest thing is closing the idle ones. */
const SHED_IDLE = ['envoy.overload_actions.disable_http_keepalive', 'envoy.overload_actions.shrink_heap'];

/** Runtime layers flatten nested objects into dotted keys, as Envoy's static_layer does. */
function flatten(value: unknown, prefix: string, out: Map<string, unknown>): void {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, value);
}

function runtimeInt(key: string, v: unknown, path: string): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new ConfigError(`${path}["${key}"]`, `expected a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

function decodeRuntime(r: ObjReader | undefined, p: Record<string, number>): void {
  if (!r) return;
  for (const layer of r.objList('layers')) {
    layer.ignore('name', 'disk_layer', 'admin_layer', 'rtds_layer');
    const staticLayer = layer.raw('static_layer') ?? layer.raw('staticLayer');
    layer.done();
    if (staticLayer === undefined || staticLayer === null) continue;
    const keys = new Map<string, unknown>();
    flatten(staticLayer, '', keys);
    const at = layer.at('static_layer');
    for (const [key, v] of keys) {
      if (key === MAX_CONNECTIONS_KEY) p.maxDownstreamConnections = runtimeInt(key, v, at);
      else if (key in RUNTIME_KEYS) p[RUNTIME_KEYS[key as keyof typeof RUNTIME_KEYS]] = runtimeInt(key, v, at);
      // Other keys tune Envoy features (Istio's bootstrap sets several): not ours to warn about.
    }
  }
}

function threshold(trigger: ObjReader): number {
  const t = trigger.obj('threshold') ?? trigger.obj('scaled');
  const key = trigger.has('threshold') ? 'value' : 'saturation_threshold';
  const raw = t?.raw(key);
  if (typeof raw !== 'number' || raw <= 0 || raw > 1) throw new ConfigError(t ? t.at(key) : trigger.at('threshold'), 'expected a value in (0, 1]');
  t?.ignore('scaling_threshold');
  t?.done();
  return raw;
}

function decodeOverloadManager(r: ObjReader | undefined, p: Record<string, number>): void {
  if (!r) return;
  for (const m of r.objList('resource_monitors')) {
    const name = m.str('name', '');
    const typed = m.obj('typed_config');
    m.done();
    const type = typed ? anyTypeName(typed) ?? '' : '';
    if (name === CONNECTIONS_MONITOR || type.endsWith('DownstreamConnectionsConfig')) {
      p.maxDownstreamConnections = typed?.int('max_active_downstream_connections', 1, Number.MAX_SAFE_INTEGER) ?? p.maxDownstreamConnections!;
    } else if (name === HEAP_MONITOR || type.endsWith('FixedHeapConfig')) {
      p.maxHeapBytes = typed?.int('max_heap_size_bytes', 1, Number.MAX_SAFE_INTEGER) ?? p.maxHeapBytes!;
    } else {
      r.ctx.warnings.push(`${m.path}: resource monitor ${name || type || '(unnamed)'} is not implemented, ignored`);
      continue;
    }
    typed?.done();
  }
  for (const a of r.objList('actions')) {
    const name = a.requiredStr('name');
    const triggers = a.objList('triggers');
    a.ignore('typed_config');
    a.done();
    const heap = triggers.find((t) => t.str('name', '') === HEAP_MONITOR);
    for (const t of triggers) t.ignore('name');
    if (!heap || !(STOP_ACCEPTING.includes(name) || SHED_IDLE.includes(name))) {
      r.ctx.warnings.push(`${a.path}: overload action ${name} is implemented only for ${[...STOP_ACCEPTING, ...SHED_IDLE].join(', ')} on ${HEAP_MONITOR}, ignored`);
      continue;
    }
    const value = threshold(heap);
    heap.done();
    if (STOP_ACCEPTING.includes(name)) p.stopAcceptingAt = value;
    else p.shedIdleAt = value;
  }
  r.ignore('refresh_interval', 'buffer_factory_config', 'loadshed_points');
  r.done();
}

/** Reads `overload_manager` and `layered_runtime` from the bootstrap's root reader. */
export function decodeProtection(root: ObjReader): Protection {
  const p: Record<string, number> = { shedIdleAt: 0.9, stopAcceptingAt: 0.95, sniffTimeoutMs: DEFAULT_SNIFF_TIMEOUT_MS, frameTimeoutMs: DEFAULT_FRAME_TIMEOUT_MS };
  decodeRuntime(root.obj('layered_runtime'), p);
  decodeOverloadManager(root.obj('overload_manager'), p);
  return p as unknown as Protection;
}

export const defaultProtection = (): Protection => ({ shedIdleAt: 0.9, stopAcceptingAt: 0.95, sniffTimeoutMs: DEFAULT_SNIFF_TIMEOUT_MS, frameTimeoutMs: DEFAULT_FRAME_TIMEOUT_MS });
