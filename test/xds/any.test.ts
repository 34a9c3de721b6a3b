/**
 * Any unpacking and proto3 JSON: every Istio fixture goes JSON -> protobuf bytes -> plain object ->
 * config model, and must decode to the same model as the JSON itself.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { decodeCluster, decodeLoadAssignment } from '../../src/config/cluster.js';
import { decodeListener } from '../../src/config/listener.js';
import type { Listener, TcpProxyConfig } from '../../src/config/model.js';
import { newContext } from '../../src/config/reader.js';
import { decodeRouteConfiguration } from '../../src/config/route.js';
import { type AnyMessage, unpackAny, UnpackError } from '../../src/xds/any.js';
import { fromProto3Json, ProtoJsonError } from '../../src/xds/proto-json.js';
import { loadXdsProtos } from '../../src/xds/protos.js';
import { decodeResources } from '../../src/xds/resources.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';
import { istioFixtureSet, type Json, readFixture } from './harness.js';

const protos = loadXdsProtos();
const AnyType = protos.root.lookupType('google.protobuf.Any');
t.comment(`client protos parsed in ${protos.loadMs.toFixed(0)} ms (${protos.root.files.length} files)`);

/** What the wire carries: the Any as a protobuf message, through real encode/decode. */
function wire(json: Json, unknown?: Set<string>): AnyMessage {
  const msg = fromProto3Json(AnyType, json, { onUnknownAny: (u) => unknown?.add(u) });
  return AnyType.decode(AnyType.encode(msg).finish()) as unknown as AnyMessage;
}

/** The model without the raw copies (those differ in form, by design). */
function model(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(model);
  if (v && typeof v === 'object' && !(v instanceof RegExp)) {
    return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'raw' && k !== 'path').map(([k, x]) => [k, model(x)]));
  }
  return v instanceof RegExp ? v.source : v;
}

const decoders: Record<string, (v: unknown) => unknown> = {
  [TYPE_URL.listener]: (v) => decodeListener(v, '', newContext()),
  [TYPE_URL.cluster]: (v) => decodeCluster(v, '', newContext()),
  [TYPE_URL.endpoint]: (v) => decodeLoadAssignment(v, '', newContext()),
  [TYPE_URL.route]: (v) => decodeRouteConfiguration(v, '', newContext()),
};

t.test('every Istio fixture decodes to the same model from protobuf as from proto3 JSON', async (t) => {
  const unknown = new Set<string>();
  for (const json of istioFixtureSet()) {
    const type = String(json['@type']);
    const u = unpackAny(protos, wire(json, unknown));
    t.equal(u.typeUrl, type);
    if (type === TYPE_URL.nametable) {
      t.same(u.plain, { table: json.table }, 'NameTable');
      continue;
    }
    t.equal(u.name, json.name ?? json.cluster_name, `name of ${u.name}`);
    t.same(model(decoders[type]!(u.plain)), model(decoders[type]!(json)), `${type.split('.').pop()} ${u.name}`);
  }
  t.ok(unknown.has('type.googleapis.com/stats.PluginConfig'), 'fixtures carry Istio filter types the client does not load');
});

t.test('well-known types come out as proto3 JSON', async (t) => {
  const tcp = unpackAny(protos, wire(readFixture('istio/istio-1.18-sidecar-deathstarbench/listener_10.68.54.170_27017_tcp.json')));
  t.equal(tcp.plain.bind_to_port, false, 'BoolValue false is false, not {}');
  t.equal(decodeListener(tcp.plain, '', newContext()).bindToPort, false);
  const stats = ((tcp.plain.filter_chains as Json[])[0]!.filters as Json[])[0]!;
  t.same(stats.typed_config, { '@type': 'type.googleapis.com/stats.PluginConfig' }, 'an Any of a type we do not load keeps its type URL');
  const tp = decodeListener(tcp.plain, '', newContext()).filterChains[0]!.filters[0] as TcpProxyConfig;
  t.equal(tp.cluster, 'outbound|27017||mongodb-user.hr2.svc.cluster.local', 'a known Any (TcpProxy) is expanded');

  const cla = unpackAny(protos, wire(readFixture('istio/istio-1.18-sidecar-deathstarbench/cla_outbound_9080_reviews.json'))).plain;
  const ep = ((cla.endpoints as Json[])[0]!.lb_endpoints as Json[])[0]!;
  t.same(ep.metadata, { filter_metadata: { istio: { workload: 'reviews-v1;default;reviews;v1;Kubernetes' }, 'envoy.transport_socket_match': { tlsMode: 'istio' } } }, 'Struct is plain JSON');
  t.equal(ep.load_balancing_weight, 1, 'UInt32Value is a bare number');
  t.same(cla.policy, { overprovisioning_factor: 140 });

  const route = unpackAny(protos, wire(readFixture('istio/istio-1.18-sidecar-deathstarbench/route_9080.json'))).plain;
  const action = (((route.virtual_hosts as Json[])[0]!.routes as Json[])[0]!.route as Json);
  t.equal(action.timeout, '0s', 'Duration 0 is "0s"');
  t.match((action.retry_policy as Json).per_try_timeout, undefined);

  const cluster = unpackAny(protos, wire(readFixture('istio/istio-1.18-sidecar-deathstarbench/cluster_outbound_9080_reviews.json'))).plain;
  t.equal(cluster.connect_timeout, '10s');
  t.equal(cluster.lb_policy, 'LEAST_REQUEST', 'enums by name');
  t.equal(((cluster.circuit_breakers as Json).thresholds as Json[])[0]!.max_connections, 4294967295);
});

t.test('an Any of an unloaded type keeps its bytes', async (t) => {
  const body = Buffer.from([8, 1, 18, 3, 97, 98, 99]).toString('base64');
  const l = {
    '@type': TYPE_URL.listener,
    name: 'x',
    address: { socket_address: { address: '127.0.0.1', port_value: 1 } },
    filter_chains: [{ filters: [{ name: 'mystery', typed_config: { '@type': 'type.googleapis.com/acme.Mystery', value: body } }, { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 's', cluster: 'c' } }] }],
  };
  const plain = unpackAny(protos, wire(l)).plain;
  const filters = (plain.filter_chains as Json[])[0]!.filters as Json[];
  t.same(filters[0]!.typed_config, { '@type': 'type.googleapis.com/acme.Mystery', value: body }, 'base64 body survives, and re-encodes to the same bytes');
  const ctx = newContext();
  const decoded = decodeListener(plain, '', ctx) as Listener;
  t.equal(decoded.filterChains[0]!.filters.length, 1, 'the unknown filter is skipped');
  t.match(ctx.warnings, [/filters\[0\]: filter mystery \(acme.Mystery\) is not implemented, skipped/]);
});

t.test('bad proto3 JSON is refused with the field path', async (t) => {
  const l = readFixture('istio/istio-1.18-sidecar-deathstarbench/listener_virtualOutbound.json');
  const bad = JSON.parse(JSON.stringify(l)) as Json;
  ((bad.filter_chains as Json[])[1]!.filters as Json[])[1]!.nmae = 'typo';
  t.throws(() => wire(bad), new ProtoJsonError('filter_chains[1].filters[1].nmae', 'unknown field of envoy.config.listener.v3.Filter'));
  const dur = JSON.parse(JSON.stringify(l)) as Json;
  dur.listener_filters_timeout = '5 seconds';
  t.throws(() => wire(dur), { path: 'listener_filters_timeout', message: /expected a duration such as "1.5s", got "5 seconds"/ });
  t.throws(() => wire({ '@type': TYPE_URL.cluster, name: 'c', type: 'SOMETIMES' }), { path: 'type', message: /expected one of STATIC, STRICT_DNS/ });
  t.throws(() => wire({ '@type': TYPE_URL.cluster, name: 7 }), { path: 'name', message: /expected a string, got 7/ });
});

t.test('undecodable or mistyped resources become failures naming them, not exceptions', async (t) => {
  const good = wire({ '@type': TYPE_URL.cluster, name: 'ok', type: 'STATIC' });
  const corrupt: AnyMessage = { type_url: TYPE_URL.cluster, value: Buffer.from([0x0a, 0xff, 0x01]) };
  const wrongType = wire({ '@type': TYPE_URL.listener, name: 'l' });
  const invalid = wire({ '@type': TYPE_URL.cluster, name: 'bad-eds', type: 'EDS', connect_timeout: '1s', cluster_type: { name: 'custom' } });
  const r = decodeResources(protos, 'cluster', [{ any: good }, { any: corrupt }, { any: wrongType }, { any: invalid }], new Map(), 'v1', 'now');
  t.same(r.resources.map((x) => x.name), ['ok']);
  t.match(r.failures.map((f) => f.message), [
    /^Cluster "#1": cannot decode type.googleapis.com\/envoy.config.cluster.v3.Cluster: /,
    /^Cluster "#2": resource of type type.googleapis.com\/envoy.config.listener.v3.Listener in a type.googleapis.com\/envoy.config.cluster.v3.Cluster response$/,
    /^Cluster "bad-eds": cluster_type: custom cluster types are not supported$/,
  ]);
  t.type(new UnpackError('x'), Error);
});

t.test('string fields are read by our UTF-8 decoder: multi-byte text comes through, invalid UTF-8 is refused', async (t) => {
  const name = 'outbound|9080||reviews.默认.svc.cluster.local — é';
  const r = decodeResources(protos, 'cluster', [{ any: wire({ '@type': TYPE_URL.cluster, name, type: 'STATIC' }) }], new Map(), 'v1', 'now');
  t.same(r.resources.map((x) => x.name), [name], 'multi-byte UTF-8 comes through');
  // Cluster.name (field 1) holding 0xc3 0x28: a lead byte without its continuation.
  const bad: AnyMessage = { type_url: TYPE_URL.cluster, value: Buffer.from([0x0a, 0x02, 0xc3, 0x28]) };
  const f = decodeResources(protos, 'cluster', [{ any: bad }], new Map(), 'v1', 'now');
  t.match(f.failures.map((x) => x.message), [/^Cluster "#0": cannot decode .*not valid UTF-8/]);
});

t.test('a resource keeps its bytes, not its JSON: raw is made again when read, and old generations are freed', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const clusters = istioFixtureSet().filter((j) => j['@type'] === TYPE_URL.cluster);
  t.ok(clusters.length > 3, 'Istio clusters to decode');
  const items = clusters.map((json) => ({ any: wire(json) }));
  const first = decodeResources(protos, 'cluster', items, new Map(), 'v1', 'now').resources;
  for (const r of first) {
    t.same(r.raw, unpackAny(protos, items[first.indexOf(r)]!.any).plain, `${r.name}: raw is the proto3 JSON of what came`);
    t.same((r.config as { raw: unknown }).raw, r.raw, `${r.name}: the model's raw too`);
  }
  // The data path reads these models per connection and per request: they must stay fast-properties
  // objects (redefining `raw` as a getter on the decoded object made each one a dictionary).
  setFlagsFromString('--allow-natives-syntax');
  const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (o: unknown) => boolean;
  t.ok(first.every((r) => hasFastProperties(r.config) && hasFastProperties(r)), 'models and resources keep fast properties');
  // Generation after generation, each decoded against the one before (as the xDS engine does) with every
  // resource changed: once replaced, a generation must be garbage. A getter made inside decodeResources
  // would hold its scope, and through `previous` every earlier generation.
  let previous = new Map(first.map((r) => [r.name, r]));
  const firstGone = new WeakRef(first[0]!);
  first.length = 0;
  for (let g = 2; g <= 4; g++) {
    const changed = clusters.map((json) => ({ any: wire({ ...json, connect_timeout: `${g}s` }) }));
    previous = new Map(decodeResources(protos, 'cluster', changed, previous, `v${g}`, 'now').resources.map((r) => [r.name, r]));
  }
  await new Promise((r) => setImmediate(r));
  gc();
  t.equal(firstGone.deref(), undefined, 'the first generation was collected');
  t.equal(previous.size, clusters.length);
});
