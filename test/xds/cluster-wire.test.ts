/**
 * istiod's Clusters read straight from the wire (cluster-wire.ts) make exactly the model, and the warnings,
 * the general decoder makes of the same bytes; every other shape, and any bad bytes, are left to the
 * general decoder, which accepts them or names what is wrong.
 */
import t from 'tap';
import { decodeCluster } from '../../src/config/cluster.js';
import type { Cluster } from '../../src/config/model.js';
import { newContext } from '../../src/config/reader.js';
import { unpackAny } from '../../src/xds/any.js';
import { clusterFromWire } from '../../src/xds/cluster-wire.js';
import { loadXdsProtos } from '../../src/xds/protos.js';
import { decodeResources } from '../../src/xds/resources.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';
import { prng } from '../helpers/prng.js';
import { DSB, encodeAny, type Json, readFixture } from './harness.js';

const client = loadXdsProtos();
const bytesOf = (json: Json): Uint8Array => encodeAny({ '@type': TYPE_URL.cluster, ...json }).value;

/** The general way: bytes to proto3 JSON to the model, with its warnings; undefined when it refuses them. */
function generally(bytes: Uint8Array): { cluster: Cluster; warnings: string[] } | undefined {
  try {
    const { plain, name } = unpackAny(client, { type_url: TYPE_URL.cluster, value: bytes });
    const ctx = newContext();
    const cluster = decodeCluster(plain, '', ctx);
    return name ? { cluster, warnings: ctx.warnings } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The model as data, in its key order (a key set to undefined included), without `raw` (which the direct
 * reader leaves to resources.ts).
 */
const modelOf = (r: { cluster: Cluster; warnings: string[] } | undefined) =>
  r && JSON.stringify({ ...r.cluster, raw: '', warnings: r.warnings }, (_k, v: unknown) => (v === undefined ? '(undefined)' : v));

const varint = (n: number): Buffer => {
  const out: number[] = [];
  for (; n > 127; n >>>= 7) out.push((n & 127) | 128);
  out.push(n);
  return Buffer.from(out);
};
/** A length-delimited field. */
const field = (n: number, ...parts: Buffer[]): Buffer => {
  const body = Buffer.concat(parts);
  return Buffer.concat([varint((n << 3) | 2), varint(body.length), body]);
};
const str = (n: number, s: string): Buffer => field(n, Buffer.from(s));
/** A google.protobuf.Struct's fields entry: key, then the Value's bytes. */
const structEntry = (key: string, value: Buffer) => field(1, str(1, key), field(2, value));
/** A Struct holding a Struct … `levels` deep, then a string. */
function nestedStruct(levels: number): Buffer {
  let struct = structEntry('k', str(3, 'x'));
  for (let i = 1; i < levels; i++) struct = structEntry('k', field(5, struct));
  return struct;
}

/** metadata.filter_metadata with a Struct `levels` deep. */
const deepMetadata = (levels: number): Json => {
  let v: unknown = 'x';
  for (let i = 0; i < levels; i++) v = { k: v };
  return { filter_metadata: { a: v as Json } };
};

const reviews = readFixture(DSB, 'cluster_outbound_9080_reviews.json');
const fixtures = ['cluster_outbound_9080_reviews.json', 'cluster_BlackHoleCluster.json', 'cluster_PassthroughCluster.json', 'cluster_InboundPassthroughClusterIpv4.json', 'cluster_inbound_8083__.json'].map((f) => readFixture(DSB, f));

/** The reviews cluster with its mTLS context changed by `edit`. */
function withTls(edit: (tls: Json) => void): Json {
  const c = structuredClone(reviews);
  edit(((c.transport_socket_matches as Json[])[0]!.transport_socket as Json).typed_config as Json);
  return c;
}
const common = (tls: Json) => tls.common_tls_context as Json;

/** Shapes istiod sends (DestinationRules' traffic policies among them), and the edges of what is read directly. */
const direct: [string, Json][] = [
  ['istiod\'s outbound EDS cluster', reviews],
  ['a subset cluster with outlier detection and a connection pool', {
    ...structuredClone(reviews),
    name: 'outbound|9080|v2|reviews.default.svc.cluster.local',
    lb_policy: 'RANDOM',
    outlier_detection: { consecutive_5xx: 3, interval: '5s', base_ejection_time: '30s', max_ejection_percent: 50 },
    circuit_breakers: { thresholds: [{ max_connections: 100, max_pending_requests: 10, max_requests: 1000, max_retries: 3 }] },
    max_requests_per_connection: 10,
    per_connection_buffer_limit_bytes: 32768,
  }],
  ['outlier detection with a field the model does not know (a warning, the same)', {
    ...structuredClone(reviews),
    circuit_breakers: { thresholds: [{ priority: 'HIGH', max_connections: 1 }, { max_connections: 7, max_connection_pools: 2 }], per_host_thresholds: [{ max_connections: 1 }] },
    outlier_detection: { consecutive_5xx: 2, enforcing_local_origin_success_rate: 50 },
  }],
  ['a connect timeout with a fraction', { ...structuredClone(reviews), connect_timeout: '1.250s' }],
  ['no connect timeout, round robin, CLUSTER_PROVIDED', { name: 'a', type: 'EDS', lb_policy: 'CLUSTER_PROVIDED' }],
  ['a STATIC cluster with nothing else', { name: 'static-nothing' }],
  ['SANs of every kind but a regex, TLS 1.3 only', withTls((tls) => {
    common(tls).tls_params = { tls_minimum_protocol_version: 'TLSv1_3', tls_maximum_protocol_version: 'TLSv1_3' };
    (common(tls).combined_validation_context as Json).default_validation_context = {
      match_subject_alt_names: [{ exact: 'spiffe://a' }, { prefix: 'spiffe://b/', ignore_case: true }, { suffix: '/sa/c' }, { contains: 'd' }],
    };
  })],
  ['no SNI, no ALPN, no tls_params', withTls((tls) => {
    delete tls.sni;
    delete common(tls).alpn_protocols;
    delete common(tls).tls_params;
  })],
  ['metadata nested deep, within the general decoder\'s limit', { name: 'deep', metadata: deepMetadata(45) }],
  ['a connect timeout of 2^31 - 1 seconds', { name: 'long', connect_timeout: '2147483647s' }],
  ['a match without keys and a socket without a typed config', { name: 'm', transport_socket_matches: [{ match: {}, transport_socket: { name: 'envoy.transport_sockets.raw_buffer' } }, { name: 'x' }] }],
];

t.test('istiod\'s clusters are read directly, into the model and warnings the general decoder makes', async (t) => {
  for (const [what, json] of direct) {
    const bytes = bytesOf(json);
    const read = clusterFromWire(client, bytes);
    t.ok(read, `${what}: read directly`);
    t.equal(modelOf(read), modelOf(generally(bytes)), `${what}: the same model and warnings`);
  }
  const warned = clusterFromWire(client, bytesOf(direct[2]![1]))!;
  t.strictSame(warned.warnings, ['outlier_detection.enforcing_local_origin_success_rate: unknown field, ignored'], 'a warning from a part decoded the general way');
  t.same(clusterFromWire(client, bytesOf(direct[2]![1]))!.warnings, warned.warnings, 'and again when its bytes are remembered');
  const tls = clusterFromWire(client, bytesOf(reviews))!.cluster.transportSocketMatches![0]!.tls!;
  t.equal(tls.sni, 'outbound_.9080_._.reviews.default.svc.cluster.local');
  t.strictSame([tls.certificateSecret, tls.validationSecret, tls.alpn], ['default', 'ROOTCA', ['istio-peer-exchange', 'istio']]);
  for (const json of fixtures) {
    const bytes = bytesOf(json);
    const read = clusterFromWire(client, bytes);
    if (read) t.equal(modelOf(read), modelOf(generally(bytes)), `fixture ${json.name as string}: read directly, the same`);
    else t.ok(generally(bytes), `fixture ${json.name as string}: left to the general decoder, which accepts it`);
  }
});

t.test('what is not read directly is left to the general decoder, which accepts it or says what is wrong', async (t) => {
  const other: [string, Json, RegExp | undefined][] = [
    ['no name', { type: 'EDS' }, /name: is required/],
    ['a custom cluster type', { name: 'c', cluster_type: { name: 'envoy.clusters.aggregate' } }, /custom cluster types/],
    ['a RING_HASH policy', { name: 'c', lb_policy: 'RING_HASH' }, undefined],
    ['a load assignment', { name: 'c', load_assignment: { cluster_name: 'c', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 80 } } } }] }] } }, undefined],
    ['a negative interval', { name: 'c', outlier_detection: { interval: '-1s' } }, /outlier_detection\.interval: must be positive/],
    ['a regex SAN', withTls((tls) => ((common(tls).combined_validation_context as Json).default_validation_context = { match_subject_alt_names: [{ safe_regex: { regex: 'spiffe://.*' } }] })), undefined],
    ['two certificates', withTls((tls) => (common(tls).tls_certificate_sds_secret_configs = [{ name: 'default' }, { name: 'other' }])), undefined],
    ['a certificate file', withTls((tls) => (common(tls).tls_certificates = [{ certificate_chain: { filename: '/etc/cert.pem' } }])), undefined],
    ['a plain validation context', withTls((tls) => (common(tls).validation_context = { trusted_ca: { filename: '/etc/ca.pem' } })), undefined],
    ['a DownstreamTlsContext', withTls((tls) => {
      tls['@type'] = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
      delete tls.sni;
    }), undefined],
    ['a number in a socket match', { name: 'c', transport_socket_matches: [{ name: 'm', match: { port: 8080 } }] }, undefined],
    ['its own transport socket', { name: 'c', transport_socket: { name: 'envoy.transport_sockets.raw_buffer' } }, undefined],
    ['typed extension protocol options', fixtures[4]!, undefined],
    ['a connect timeout past 2^32 seconds (an int64 the low 32 bits would misread)', { name: 'c', connect_timeout: '4294967297s' }, undefined],
  ];
  const now = new Date().toISOString();
  for (const [what, json, error] of other) {
    const bytes = bytesOf(json);
    t.equal(clusterFromWire(client, bytes), undefined, `${what}: not read directly`);
    const { resources, failures } = decodeResources(client, 'cluster', [{ any: { type_url: TYPE_URL.cluster, value: bytes } }], new Map(), 'v1', now);
    if (error) t.match(failures[0]?.message, error, `${what}: refused, and why`);
    else t.equal(resources.length, 1, `${what}: accepted the general way${failures[0] ? `: ${failures[0].message}` : ''}`);
  }
  // Hand-made bytes: an encoder would not write these.
  const handMade: [string, Buffer, RegExp | undefined][] = [
    ['a socket match keyed __proto__ (the general decoder drops the key)', Buffer.concat([str(1, 'c'), field(43, str(1, 'm'), field(2, structEntry('__proto__', str(3, 'x'))))]), undefined],
    ['metadata nested past the limit, counted from the top of the cluster', Buffer.concat([str(1, 'c'), field(25, field(1, str(1, 'a'), field(2, nestedStruct(50))))]), /nested more than 100 deep/],
  ];
  for (const [what, bytes, error] of handMade) {
    t.equal(clusterFromWire(client, bytes), undefined, `${what}: not read directly`);
    const { resources, failures } = decodeResources(client, 'cluster', [{ any: { type_url: TYPE_URL.cluster, value: bytes } }], new Map(), 'v1', now);
    if (error) t.match(failures[0]?.message, error, `${what}: refused, and why`);
    else t.strictSame((resources[0]!.config as Cluster).transportSocketMatches![0]!.match, {}, `${what}: accepted the general way, the key dropped`);
  }
  const shallower = Buffer.concat([str(1, 'c'), field(25, field(1, str(1, 'a'), field(2, nestedStruct(49))))]);
  t.ok(clusterFromWire(client, shallower), 'one level less: read directly');
  t.ok(generally(shallower), 'and accepted the general way');
  const big = decodeResources(client, 'cluster', [{ any: { type_url: TYPE_URL.cluster, value: bytesOf(other[13]![1]) } }], new Map(), 'v1', now);
  t.equal((big.resources[0]!.config as Cluster).connectTimeoutMs, 4294967297000, 'the int64 read whole');
});

t.test('decoded through decodeResources: the model, its warnings, and the resource as it came for /config_dump', async (t) => {
  const bytes = bytesOf(direct[2]![1]);
  const { resources, failures } = decodeResources(client, 'cluster', [{ any: { type_url: TYPE_URL.cluster, value: bytes } }], new Map(), 'v1', new Date().toISOString());
  t.equal(failures.length, 0);
  t.strictSame(resources[0]!.warnings, generally(bytes)!.warnings);
  t.strictSame(resources[0]!.raw, unpackAny(client, { type_url: TYPE_URL.cluster, value: bytes }).plain);
  t.equal((resources[0]!.config as Cluster).circuitBreakers.maxConnections, 7);
});

t.test('corrupted copies: never a throw; whatever is read directly is what the general decoder makes', async (t) => {
  const seed = Number(process.env.CLUSTER_FUZZ_SEED ?? 0xc105);
  const rand = prng(seed);
  const below = (n: number) => Math.floor(rand() * n);
  let read = 0;
  const differ: number[] = [];
  for (const [i, good] of [bytesOf(reviews), bytesOf(direct[1]![1])].entries()) {
    for (let n = 0; n < 1500; n++) {
      const b = Buffer.from(good);
      for (let k = 0; k < 1 + (n % 3); k++) b[below(b.length)] = below(256);
      const bytes = n % 2 ? b : b.subarray(0, 1 + below(b.length));
      const direct = clusterFromWire(client, bytes);
      if (direct === undefined) continue;
      read++;
      if (modelOf(direct) !== modelOf(generally(bytes))) differ.push(i * 1500 + n);
    }
  }
  t.ok(read > 100, `${read} of 3000 corrupted copies still read directly (seed ${seed})`);
  t.strictSame(differ, [], 'and each of those is what the general decoder makes');
});

t.test('a socket match is read once per distinct bytes: the same bytes give the same object, a nameless one still its own place', async (t) => {
  const matches = reviews.transport_socket_matches as Json[];
  const a = clusterFromWire(client, bytesOf({ ...reviews, name: 'outbound|9080||a.default.svc.cluster.local' }))!;
  const b = clusterFromWire(client, bytesOf({ ...reviews, name: 'outbound|9080||b.default.svc.cluster.local', connect_timeout: '3s' }))!;
  t.equal(a.cluster.transportSocketMatches![0], b.cluster.transportSocketMatches![0], "Istio's mTLS match, read for the first cluster, is the second's");
  t.equal(a.cluster.transportSocketMatches![0]!.tls?.sni, 'outbound_.9080_._.reviews.default.svc.cluster.local');
  const otherSni = structuredClone(matches[0]!);
  ((otherSni.transport_socket as Json).typed_config as Json).sni = 'outbound_.9080_._.ratings.default.svc.cluster.local';
  const c = clusterFromWire(client, bytesOf({ ...reviews, transport_socket_matches: [otherSni, matches[1]!] }))!;
  t.not(c.cluster.transportSocketMatches![0], a.cluster.transportSocketMatches![0], 'other bytes: read anew');
  t.equal(c.cluster.transportSocketMatches![0]!.tls?.sni, 'outbound_.9080_._.ratings.default.svc.cluster.local');

  const nameless = { ...matches[1]!, name: '' };
  const first = bytesOf({ ...reviews, transport_socket_matches: [nameless, matches[0]!] });
  const second = bytesOf({ ...reviews, transport_socket_matches: [matches[0]!, nameless] });
  t.same(clusterFromWire(client, first)!.cluster.transportSocketMatches!.map((m) => m.name), ['match-0', 'tlsMode-istio']);
  t.same(clusterFromWire(client, second)!.cluster.transportSocketMatches!.map((m) => m.name), ['tlsMode-istio', 'match-1'], 'the same bytes at another place');
  for (const bytes of [first, second]) t.equal(modelOf(clusterFromWire(client, bytes)), modelOf(generally(bytes)), 'as the general decoder makes it');
});
