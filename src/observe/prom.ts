/**
 * prom-client's metric classes, imported file by file. Its index also loads every default metric, and
 * through the process CPU one `@opentelemetry/api` (51 modules, for exemplars we never use): about 4.5 MiB
 * of RSS in every pod for nothing (`node -e` requiring the index: 52.2 MiB; these files and the default
 * metrics we register: 47.6). Static imports, so that the bundle (scripts/bundle.mjs) carries them rather
 * than loading some twenty files from node_modules at start. The types are the package's own.
 */
import type * as Prom from 'prom-client';
import counter from 'prom-client/lib/counter.js';
import gauge from 'prom-client/lib/gauge.js';
import eventLoopLag from 'prom-client/lib/metrics/eventLoopLag.js';
import heapSizeAndUsed from 'prom-client/lib/metrics/heapSizeAndUsed.js';
import heapSpacesSizeAndUsed from 'prom-client/lib/metrics/heapSpacesSizeAndUsed.js';
import osMemoryHeap from 'prom-client/lib/metrics/osMemoryHeap.js';
import processHandles from 'prom-client/lib/metrics/processHandles.js';
import processMaxFileDescriptors from 'prom-client/lib/metrics/processMaxFileDescriptors.js';
import processOpenFileDescriptors from 'prom-client/lib/metrics/processOpenFileDescriptors.js';
import processRequests from 'prom-client/lib/metrics/processRequests.js';
import processResources from 'prom-client/lib/metrics/processResources.js';
import processStartTime from 'prom-client/lib/metrics/processStartTime.js';
import version from 'prom-client/lib/metrics/version.js';
import registry from 'prom-client/lib/registry.js';

export const Counter = counter as typeof Prom.Counter;
export type Counter<T extends string = string> = Prom.Counter<T>;
export const Gauge = gauge as typeof Prom.Gauge;
export type Gauge<T extends string = string> = Prom.Gauge<T>;
export const Registry = registry as typeof Prom.Registry;
export type Registry = Prom.Registry;

type DefaultMetric = (r: Registry, config: object) => void;

/** The default metrics the sidecar registers, in prom-client's order (observe/metrics.ts says which it leaves out, and why). */
const DEFAULT_METRICS = [
  processStartTime,
  osMemoryHeap,
  processOpenFileDescriptors,
  processMaxFileDescriptors,
  eventLoopLag,
  processResources,
  processHandles,
  processRequests,
  heapSizeAndUsed,
  heapSpacesSizeAndUsed,
  version,
] as DefaultMetric[];

/** Registers those default metrics on `registry`. */
export function registerDefaultMetrics(registry: Registry, config: object): void {
  for (const register of DEFAULT_METRICS) register(registry, config);
}
