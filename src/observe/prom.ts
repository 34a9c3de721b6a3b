/**
 * prom-client's metric classes, loaded file by file. Its index also loads every default metric, and
 * through the process CPU one `@opentelemetry/api` (51 modules, for exemplars we never use): about 4.5 MiB
 * of RSS in every pod for nothing (`node -e` requiring the index: 52.2 MiB; these files and the default
 * metrics we register: 47.6). The types are the package's own.
 */
import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';

const require = createRequire(import.meta.url);

export const Counter = require('prom-client/lib/counter') as typeof Prom.Counter;
export type Counter<T extends string = string> = Prom.Counter<T>;
export const Gauge = require('prom-client/lib/gauge') as typeof Prom.Gauge;
export type Gauge<T extends string = string> = Prom.Gauge<T>;
export const Registry = require('prom-client/lib/registry') as typeof Prom.Registry;
export type Registry = Prom.Registry;

/** prom-client's default metric of one name, registered on `registry` (lib/metrics/<name>.js). */
export function registerDefaultMetric(name: string, registry: Registry, config: object): void {
  (require(`prom-client/lib/metrics/${name}`) as (r: Registry, c: object) => void)(registry, config);
}
