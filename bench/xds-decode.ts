/**
 * The xDS client's own cost of a full push, in process and without the wire: the mesh of
 * bench/xds-scale.ts is encoded once into the four DiscoveryResponses istiod would send (CDS, EDS, LDS,
 * RDS), then pushed again and again through what the ADS client does with a response (protobuf decode of
 * the DiscoveryResponse, the EDS names asked ahead, XdsEngine.handle: decode, accept, rebuild the
 * Snapshot), the two rounds alternating so that every resource changes each time, as in xds-scale's
 * "full push" row. No gRPC, no test server and no second process share the CPU, so the time and the
 * garbage collection per push are steadier than xds-scale's, which measures the whole path; a change to
 * the decoding is weighed here first.
 *
 *   node dist/bench/xds-decode.js [--services 1000] [--pushes 40] [--warmup 5] [--unchanged]
 *
 * Runs with the sidecar's heap defaults (src/cli/heap.ts): it re-executes itself with them (on Node 20
 * through libc's execve, from the commit after 41d4c19; before, Node 20 ran with V8's four workers).
 * `--unchanged` pushes the same round every time (the path that compares bytes). Prints one line of JSON: medians per
 * push of wall time, CPU time (all threads), time in GC, scavenges and full GCs. For comparing builds,
 * not for a sidecar's absolute push time: here nothing widens the young generation for a push
 * (memory/young-generation.ts), so on Node 24 this scavenges about 28 times per full push where the
 * sidecar, widened, scavenges about 10 (--trace-gc over 10 pushes).
 */
import { applyHeapDefaults } from '../src/cli/heap.js';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { setImmediate as turn } from 'node:timers/promises';
import { getHeapStatistics } from 'node:v8';
import type protobuf from 'protobufjs';
import pino from 'pino';
import { fromProto3Json } from '../src/xds/proto-json.js';
import { DUMP_PROTOS, loadXdsProtos } from '../src/xds/protos.js';
import { XdsEngine } from '../src/xds/engine.js';
import type { AnyMessage } from '../src/xds/any.js';
import { KIND_ORDER, type ConfigKind, kindOfTypeUrl, TYPE_URL, WILDCARD } from '../src/xds/type-urls.js';
import { generateMesh } from './xds-mesh.js';

applyHeapDefaults();

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '1000' },
    pushes: { type: 'string', default: '40' },
    warmup: { type: 'string', default: '5' },
    unchanged: { type: 'boolean', default: false },
  },
});
const SERVICES = Number(values.services);
const PUSHES = Number(values.pushes);
const WARMUP = Number(values.warmup);
const KINDS = KIND_ORDER.filter((k): k is ConfigKind => k !== 'nametable');

const encoding = loadXdsProtos(DUMP_PROTOS);
const AnyType = encoding.root.lookupType('google.protobuf.Any');
const client = loadXdsProtos();

/** One round of the mesh as the four DiscoveryResponses' bytes, in push order. */
function responses(round: number): Map<ConfigKind, Uint8Array> {
  const byKind = new Map<ConfigKind, AnyMessage[]>(KINDS.map((k) => [k, []]));
  for (const json of generateMesh(SERVICES, round, { outbound: 15001, inbound: 15006 })) {
    const kind = kindOfTypeUrl(String(json['@type'])) as ConfigKind;
    byKind.get(kind)!.push(fromProto3Json(AnyType, json) as unknown as AnyMessage);
  }
  return new Map(
    [...byKind].map(([kind, resources]) => {
      const type = encoding.DiscoveryResponse;
      const bytes = type.encode(type.fromObject({ version_info: `r${round}`, type_url: TYPE_URL[kind], nonce: `${kind}-${round}`, resources })).finish();
      return [kind, bytes];
    }),
  );
}

const rounds = [responses(0), responses(1)];
const pushBytes = [...rounds[0]!.values()].reduce((n, b) => n + b.length, 0);

/** Resolves the wait of the push under way when its Snapshot is published. */
let built: (() => void) | undefined;
const engine = new XdsEngine({
  protos: client,
  statics: { listeners: [], clusters: [] },
  warming: { edsMs: 0, rdsMs: 0 },
  fetchTimeoutMs: { cluster: 0, listener: 0 },
  publish: async () => built?.(),
  log: pino({ level: 'silent' }),
});

let gcMs = 0;
let scavenges = 0;
let fulls = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) scavenges++;
    else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) fulls++;
  }
}).observe({ entryTypes: ['gc'] });

/** What the ADS client does with one response: decode it, ask for the EDS names ahead (CDS), handle it. */
function receive(kind: ConfigKind, bytes: Uint8Array, type: protobuf.Type): void {
  const res = type.decode(bytes) as unknown as { version_info: string; resources: AnyMessage[] };
  const items = res.resources.map((any) => ({ any }));
  if (kind === 'cluster') engine.endpointNamesAhead(items);
  const nack = engine.handle(kind, { items, version: res.version_info, replaceAll: WILDCARD.has(kind) });
  if (nack) throw new Error(`NACK: ${nack}`);
}

interface Sample {
  ms: number;
  /** Handling each response (decode and accept; the Snapshot is built after the last). */
  kindMs: Partial<Record<ConfigKind, number>>;
  /** CPU of the whole process (V8's helper threads too) from the push's start to its GC entries' delivery. */
  cpuMs: number;
  gcMs: number;
  scavenges: number;
  fulls: number;
}

const samples: Sample[] = [];
for (let i = 0; i < WARMUP + PUSHES; i++) {
  const round = rounds[values.unchanged ? 0 : i % 2]!;
  await turn(); // GC entries of the last push are delivered
  const before = { gcMs, scavenges, fulls };
  const cpu = process.cpuUsage();
  const started = performance.now();
  const kindMs: Partial<Record<ConfigKind, number>> = {};
  const published = new Promise<void>((r) => (built = r));
  for (const kind of KINDS) {
    const at = performance.now();
    receive(kind, round.get(kind)!, client.DiscoveryResponse);
    kindMs[kind] = performance.now() - at;
  }
  await published; // the Snapshot is built once the responses at hand are handled (engine.ts, rebuild)
  const ms = performance.now() - started;
  await turn();
  const used = process.cpuUsage(cpu);
  if (i >= WARMUP) samples.push({ ms, kindMs, cpuMs: (used.user + used.system) / 1000, gcMs: gcMs - before.gcMs, scavenges: scavenges - before.scavenges, fulls: fulls - before.fulls });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round1 = (n: number) => Math.round(n * 10) / 10;
console.log(
  JSON.stringify({
    node: process.version,
    services: SERVICES,
    pushes: PUSHES,
    unchanged: values.unchanged,
    pushMiB: round1(pushBytes / 1048576),
    ms: round1(median(samples.map((s) => s.ms))),
    perKindMs: Object.fromEntries(KINDS.map((k) => [k, round1(median(samples.map((s) => s.kindMs[k]!)))])),
    cpuMs: round1(median(samples.map((s) => s.cpuMs))),
    gcMs: round1(median(samples.map((s) => s.gcMs))),
    scavenges: median(samples.map((s) => s.scavenges)),
    fullGcs: median(samples.map((s) => s.fulls)),
    heapUsedMiB: round1(getHeapStatistics().used_heap_size / 1048576),
  }),
);
