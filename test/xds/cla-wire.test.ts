/**
 * istiod's ClusterLoadAssignments read straight from the wire (cla-wire.ts) make exactly the model the
 * general decoder makes of the same bytes; every other shape, and any bad bytes, are left to the general
 * decoder, which accepts them or names what is wrong.
 */
import t from 'tap';
import { decodeLoadAssignment } from '../../src/config/cluster.js';
import type { ClusterLoadAssignment } from '../../src/config/model.js';
import { newContext } from '../../src/config/reader.js';
import { unpackAny } from '../../src/xds/any.js';
import { claFromWire } from '../../src/xds/cla-wire.js';
import { fromProto3Json } from '../../src/xds/proto-json.js';
import { loadXdsProtos } from '../../src/xds/protos.js';
import { decodeResources } from '../../src/xds/resources.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';
import { prng } from '../helpers/prng.js';
import { DSB, type Json, readFixture } from './harness.js';

const client = loadXdsProtos();
const ClaType = client.root.lookupType('envoy.config.endpoint.v3.ClusterLoadAssignment');
const claBytes = (json: Json): Buffer => Buffer.from(ClaType.encode(fromProto3Json(ClaType, json)).finish());

/** The general way: bytes to proto3 JSON to the model; undefined when it refuses them or warns. */
function generally(bytes: Uint8Array): ClusterLoadAssignment | undefined {
  try {
    const { plain, name } = unpackAny(client, { type_url: TYPE_URL.endpoint, value: bytes });
    const ctx = newContext();
    const cla = decodeLoadAssignment(plain, '', ctx);
    return name && ctx.warnings.length === 0 ? cla : undefined;
  } catch {
    return undefined;
  }
}

const modelOf = (c: ClusterLoadAssignment | undefined) => c && { clusterName: c.clusterName, endpoints: c.endpoints };

const fixtures = ['cla_outbound_9080_reviews.json', 'cla_outbound_8080_alertmanager-main_3eps.json'].map((f) => {
  const { '@type': _type, ...json } = readFixture(DSB, f);
  return json as Json;
});

const lb = (address: string, extra: Json = {}): Json => ({
  endpoint: { address: { socket_address: { address, port_value: 9080 } }, health_check_config: {} },
  health_status: 'HEALTHY',
  metadata: { filter_metadata: { istio: { workload: 'reviews-v1;default;reviews;v1;Kubernetes' }, 'envoy.transport_socket_match': { tlsMode: 'istio' } } },
  load_balancing_weight: 1,
  ...extra,
});

/** Shapes istiod sends, and the edges of what is read directly. */
const made: Json[] = [
  {
    cluster_name: 'outbound|9080|v1|reviews.default.svc.cluster.local',
    endpoints: [
      { locality: { region: 'us-east1', zone: 'b', sub_zone: 'r1' }, lb_endpoints: [lb('10.0.0.1'), lb('10.0.0.2', { health_status: 'DRAINING', load_balancing_weight: 7 })], load_balancing_weight: 2, priority: 0 },
      { locality: {}, lb_endpoints: [lb('fd00::1', { metadata: { filter_metadata: { istio: { workload: 'w;ns;c;v;K' } } } }), lb('10.0.1.1', { metadata: undefined, load_balancing_weight: undefined })], priority: 3, proximity: 1 },
      { lb_endpoints: [lb('10.0.2.1', { endpoint: { address: { socket_address: { address: '10.0.2.1', port_value: 1 } }, hostname: 'pod-a.ns' } })], priority: 127 },
    ],
    policy: { overprovisioning_factor: 140 },
  },
  { cluster_name: 'outbound|80||empty.ns.svc.cluster.local' },
  { cluster_name: 'outbound|80||meta.ns.svc.cluster.local', endpoints: [{ lb_endpoints: [lb('10.1.0.1', { metadata: { filter_metadata: { 'envoy.transport_socket_match': {}, istio: {} } } })] }] },
];

t.test('istiod\'s endpoints are read directly, into the model the general decoder makes', async (t) => {
  for (const json of [...fixtures, ...made]) {
    const bytes = claBytes(json);
    const direct = claFromWire(bytes);
    t.ok(direct, `${json.cluster_name as string}: read directly`);
    t.strictSame(modelOf(direct), modelOf(generally(bytes)), `${json.cluster_name as string}: the same model`);
  }
  const [a, b] = claFromWire(claBytes(made[0]!))!.endpoints;
  t.equal(a!.transportSocketMatch, b!.transportSocketMatch, 'one shared socket match object');
  t.equal(a!.workload, b!.workload, 'and one workload string');
  t.equal(claFromWire(claBytes(made[0]!))!.endpoints.map((e) => e.priority).join(','), '0,0,3,3,127', 'a locality\'s priority, which follows its endpoints on the wire');
});

t.test('bytes that merge (a message sent twice) read as the general decoder reads them, or are left to it', async (t) => {
  const x = claBytes({ cluster_name: 'x', endpoints: [{ lb_endpoints: [lb('10.0.0.1')] }] });
  const y = claBytes({ cluster_name: 'y', endpoints: [{ lb_endpoints: [lb('10.0.0.2')], priority: 2 }] });
  const both = Buffer.concat([x, y]);
  t.strictSame(modelOf(claFromWire(both)), modelOf(generally(both)), 'name: the last; endpoints: all');
  const policyTwice = Buffer.concat([claBytes(made[0]!), claBytes({ cluster_name: 'z', policy: { overprovisioning_factor: 100 } })]);
  t.equal(claFromWire(policyTwice), undefined, 'policy twice (a merge): the general decoder');
  t.ok(generally(policyTwice), 'which accepts it');
});

t.test('what is not read directly is left to the general decoder, which accepts it or says what is wrong', async (t) => {
  const one = (entry: Json, extra: Json = {}): Json => ({ cluster_name: 'c', endpoints: [{ lb_endpoints: [entry], ...extra }] });
  const other: [string, Json, RegExp | undefined][] = [
    ['port 0', one(lb('10.0.0.1', { endpoint: { address: { socket_address: { address: '10.0.0.1' } } } })), /port_value: expected 1\.\.65535, got 0/],
    ['a hostname', one(lb('reviews.default')), /expected an IP address, got "reviews\.default"/],
    ['priority 200', one(lb('10.0.0.1'), { priority: 200 }), /priority/],
    ['weight 0', one(lb('10.0.0.1', { load_balancing_weight: 0 })), /load_balancing_weight/],
    ['a named endpoint', one({ endpoint_name: 'ep' }), /endpoint: is required/],
    ['a number in the metadata', one(lb('10.0.0.1', { metadata: { filter_metadata: { 'envoy.transport_socket_match': { port: 8080 } } } })), undefined],
    ['another filter\'s metadata', one(lb('10.0.0.1', { metadata: { filter_metadata: { other: { k: 'v' } } } })), undefined],
    ['typed metadata', one(lb('10.0.0.1', { metadata: { typed_filter_metadata: { x: { '@type': 'type.googleapis.com/envoy.config.core.v3.Locality', region: 'r' } } } })), undefined],
    ['an active health check port', one(lb('10.0.0.1', { endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 80 } }, health_check_config: { port_value: 81 } } })), undefined],
    ['locality metadata', one(lb('10.0.0.1'), { metadata: { filter_metadata: { a: {} } } }), undefined],
  ];
  for (const [what, json, error] of other) {
    const bytes = claBytes(json);
    t.equal(claFromWire(bytes), undefined, `${what}: not read directly`);
    const { resources, failures } = decodeResources(client, 'endpoint', [{ any: { type_url: TYPE_URL.endpoint, value: bytes } }], new Map(), 'v1', new Date().toISOString());
    if (error) t.match(failures[0]?.message, error, `${what}: refused, and why`);
    else {
      t.equal(resources.length, 1, `${what}: accepted the general way`);
      t.strictSame(modelOf(resources[0]!.config as ClusterLoadAssignment), modelOf(generally(bytes) ?? decodeLoadAssignment(unpackAny(client, { type_url: TYPE_URL.endpoint, value: bytes }).plain, '', newContext())));
    }
  }
  const tsm = claFromWire(claBytes(one(lb('10.0.0.1', { metadata: { filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' } } } }))));
  const general = decodeLoadAssignment(unpackAny(client, { type_url: TYPE_URL.endpoint, value: claBytes(one(lb('10.0.0.2', { metadata: { filter_metadata: { 'envoy.transport_socket_match': { tlsMode: 'istio' } } } }))) }).plain, '', newContext());
  t.equal(tsm!.endpoints[0]!.transportSocketMatch, general.endpoints[0]!.transportSocketMatch, 'both ways share one socket match object');
});

t.test('decoded through decodeResources: /config_dump still shows the resource as it came', async (t) => {
  const bytes = claBytes(fixtures[1]!);
  const { resources, failures } = decodeResources(client, 'endpoint', [{ any: { type_url: TYPE_URL.endpoint, value: bytes } }], new Map(), 'v1', new Date().toISOString());
  t.equal(failures.length, 0);
  t.equal(resources[0]!.name, fixtures[1]!.cluster_name);
  t.strictSame(resources[0]!.raw, unpackAny(client, { type_url: TYPE_URL.endpoint, value: bytes }).plain);
  t.equal((resources[0]!.config as ClusterLoadAssignment).endpoints.length, 3);
});

t.test('corrupted copies: never a throw; whatever is read directly is what the general decoder makes', async (t) => {
  const good = claBytes(made[0]!);
  const seed = Number(process.env.CLA_FUZZ_SEED ?? 0x5eed);
  const rand = prng(seed);
  const below = (n: number) => Math.floor(rand() * n);
  let direct = 0;
  const differ: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(good);
    for (let k = 0; k < 1 + (i % 3); k++) b[below(b.length)] = below(256);
    const bytes = i % 2 ? b : b.subarray(0, 1 + below(b.length));
    const read = claFromWire(bytes);
    if (read === undefined) continue;
    direct++;
    if (JSON.stringify(modelOf(read)) !== JSON.stringify(modelOf(generally(bytes)))) differ.push(i);
  }
  t.ok(direct > 100, `${direct} of 3000 corrupted copies still read directly (seed ${seed})`);
  t.strictSame(differ, [], 'and each of those is what the general decoder makes');
});

// ------------------------------------------------------------------------------ hand-made wire bytes

const varint = (n: number): Buffer => {
  const out: number[] = [];
  while (n > 127) {
    out.push((n & 127) | 128);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
};
/** A length-delimited field. */
const field = (n: number, ...parts: Buffer[]): Buffer => {
  const body = Buffer.concat(parts);
  return Buffer.concat([varint((n << 3) | 2), varint(body.length), body]);
};
const num = (n: number, v: number): Buffer => Buffer.concat([varint(n << 3), varint(v)]);
const str = (n: number, s: string): Buffer => field(n, Buffer.from(s));

const socketAddress = (ip: string) => field(1, str(2, ip), num(3, 8080)); // Address.socket_address
const endpoint = (...extra: Buffer[]) => field(1, field(1, socketAddress('10.0.0.1')), ...extra); // LbEndpoint.endpoint
const structOf = (k: string, v: string) => field(1, str(1, k), field(2, str(3, v))); // Struct.fields entry
const filterMetadata = (key: Buffer | undefined, struct: Buffer | undefined) => field(1, ...(key ? [key] : []), ...(struct ? [field(2, struct)] : []));
const claOf = (...lbEndpoint: Buffer[]) => Buffer.concat([str(1, 'c'), field(2, field(2, ...lbEndpoint))]);

t.test('hand-made bytes: what merges or is out of the ordinary is left to the general decoder; last-wins reads as it does', async (t) => {
  const istio = filterMetadata(str(1, 'istio'), structOf('workload', 'w;ns;c;v;K'));
  const cases: [string, Buffer, 'direct' | 'general'][] = [
    ['an endpoint as istiod sends it', claOf(endpoint(), num(2, 1), field(3, istio)), 'direct'],
    ['health_check_config twice (a merge)', claOf(field(1, field(1, socketAddress('10.0.0.1')), field(2), field(2))), 'general'],
    ['endpoint twice (a merge)', claOf(endpoint(), endpoint()), 'general'],
    ['metadata twice (a merge)', claOf(endpoint(), field(3, istio), field(3, istio)), 'general'],
    ['load_balancing_weight twice (a merge)', claOf(endpoint(), field(4, num(1, 2)), field(4, num(1, 3))), 'general'],
    ['socket_address twice (a merge)', claOf(field(1, field(1, socketAddress('10.0.0.1'), socketAddress('10.0.0.2')))), 'general'],
    ['locality twice (a merge)', Buffer.concat([str(1, 'c'), field(2, field(1, str(1, 'r')), field(1, str(2, 'z')), field(2, endpoint()))]), 'general'],
    ["a metadata entry without its key (key '', as another filter's)", claOf(endpoint(), field(3, filterMetadata(undefined, structOf('workload', 'w')))), 'general'],
    ['a metadata entry without its value (istio: {})', claOf(endpoint(), field(3, filterMetadata(str(1, 'istio'), undefined))), 'direct'],
    ['istio twice in one map: the last wins', claOf(endpoint(), field(3, istio, filterMetadata(str(1, 'istio'), structOf('workload', 'second')))), 'direct'],
    ['health HEALTHY, then UNKNOWN (0): the last wins', claOf(endpoint(), num(2, 1), num(2, 0)), 'direct'],
    ['priority as a length-delimited field (a wrong wire type, skipped by the general decoder)', Buffer.concat([str(1, 'c'), field(2, field(2, endpoint()), field(5))]), 'general'],
    ['a Value that is a number', claOf(endpoint(), field(3, filterMetadata(str(1, 'istio'), field(1, str(1, 'workload'), field(2, Buffer.from([0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f])))))), 'general'],
  ];
  for (const [what, bytes, way] of cases) {
    const read = claFromWire(bytes);
    const general = generally(bytes);
    t.ok(general, `${what}: the general decoder accepts it`);
    if (way === 'direct') t.strictSame(modelOf(read), modelOf(general), `${what}: read directly, the same model`);
    else t.equal(read, undefined, `${what}: left to the general decoder`);
  }
  t.equal(claFromWire(claOf(endpoint(), field(3, istio, filterMetadata(str(1, 'istio'), structOf('workload', 'second')))))!.endpoints[0]!.workload, 'second');
});

t.test('a resource read directly and then rejected still shows what it was', async (t) => {
  const bytes = claBytes(fixtures[1]!);
  const now = new Date().toISOString();
  const twice = decodeResources(client, 'endpoint', [{ any: { type_url: TYPE_URL.endpoint, value: bytes } }, { any: { type_url: TYPE_URL.endpoint, value: bytes } }], new Map(), 'v1', now);
  t.equal(twice.resources.length, 1);
  t.match(twice.failures[0]?.message, /appears twice in one response/);
  t.equal((twice.failures[0]?.raw as Json | undefined)?.cluster_name, fixtures[1]!.cluster_name, 'with its proto3 JSON, for config_dump\'s failed_configuration');
  const renamed = decodeResources(client, 'endpoint', [{ name: 'other', any: { type_url: TYPE_URL.endpoint, value: bytes } }], new Map(), 'v1', now);
  t.match(renamed.failures[0]?.message, /differs from the resource's own/);
  t.equal((renamed.failures[0]?.raw as Json | undefined)?.cluster_name, fixtures[1]!.cluster_name);
});
