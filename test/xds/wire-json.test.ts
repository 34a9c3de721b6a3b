/**
 * The one-pass protobuf → proto3 JSON reader against protobufjs's decode + toObject (the form every
 * config decoder and /config_dump was written for): equal on every Istio fixture, on a mesh-sized set of
 * generated resources and on every scalar and well-known type; stricter, with a WireError, on bad bytes.
 */
import { randomBytes } from 'node:crypto';
import protobuf from 'protobufjs';
import t from 'tap';
import { fromProto3Json, TO_OBJECT } from '../../src/xds/proto-json.js';
import { DUMP_PROTOS, loadXdsProtos } from '../../src/xds/protos.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';
import { WireError, wireToJson } from '../../src/xds/wire-json.js';
import { istioFixtureSet, type Json, readFixture } from './harness.js';

const client = loadXdsProtos();
const full = loadXdsProtos(DUMP_PROTOS);
const AnyType = full.root.lookupType('google.protobuf.Any');

/** An xDS resource's Any bytes, as the test ADS server sends them (typed configs expanded). */
const encodeAny = (json: Json) => fromProto3Json(AnyType, json, { onUnknownAny: () => undefined }) as unknown as { type_url: string; value: Uint8Array };

/** What protobufjs makes of the same bytes, through our proto3 JSON readers. */
const viaProtobufjs = (type: protobuf.Type, bytes: Uint8Array) => type.toObject(type.decode(bytes), TO_OBJECT);

t.test('every Istio fixture reads the same as through protobufjs, with the client schema and the wider one', async (t) => {
  for (const protos of [client, full]) {
    let n = 0;
    for (const json of istioFixtureSet()) {
      const any = encodeAny(json);
      const type = protos.typeOf(any.type_url)!;
      t.strictSame(wireToJson(type, any.value), viaProtobufjs(type, any.value), `${any.type_url.split('.').pop()} ${String(json.name ?? json.cluster_name ?? '')}`);
      n++;
    }
    t.ok(n > 10, `${n} fixtures compared`);
  }
});

t.test('resources shaped as the scale bench makes them, with every field varied', async (t) => {
  const cluster = readFixture('istio/istio-1.18-sidecar-deathstarbench/cluster_outbound_9080_reviews.json');
  const cla = readFixture('istio/istio-1.18-sidecar-deathstarbench/cla_outbound_9080_reviews.json');
  for (let i = 0; i < 50; i++) {
    const c = { ...structuredClone(cluster), name: `outbound|${9000 + i}||svc-${i}.ns.svc.cluster.local`, connect_timeout: `${i}.${String(i * 7).padStart(3, '0')}s` };
    const e = structuredClone(cla);
    (e.endpoints as Json[])[0]!.lb_endpoints = Array.from({ length: i % 7 }, (_, k) => ({ endpoint: { address: { socket_address: { address: `10.0.${i}.${k}`, port_value: 9000 + k } } }, load_balancing_weight: k + 1, metadata: { filter_metadata: { istio: { workload: `w${k};ns;svc;v${k}` }, list: { l: [k, 'x', true, null, { n: [] }] } } } }));
    for (const json of [c, e]) {
      const any = encodeAny(json);
      const type = client.typeOf(any.type_url)!;
      t.strictSame(wireToJson(type, any.value), viaProtobufjs(type, any.value));
    }
  }
});

// A schema with every scalar, packed and unpacked lists, maps, enums and the well-known types, parsed into
// a copy of the client's root (which has the well-known types and our proto3 JSON readers installed).
const root = loadXdsProtos().root;
protobuf.parse(
  `syntax = "proto3";
   package xtest;
   enum Color { RED = 0; GREEN = 1; NEG = -2; }
   message All {
     double d = 1; float f = 2; int32 i32 = 3; uint32 u32 = 4; sint32 s32 = 5; fixed32 f32 = 6; sfixed32 sf32 = 7;
     int64 i64 = 8; uint64 u64 = 9; sint64 s64 = 10; fixed64 f64 = 11; sfixed64 sf64 = 12;
     bool b = 13; string s = 14; bytes by = 15; Color c = 16; All child = 17;
     repeated int32 packed = 18; repeated int32 unpacked = 19 [packed = false]; repeated string names = 20;
     repeated Color colors = 21; repeated All children = 22;
     map<string, int64> counts = 23; map<int32, All> by_id = 24; map<bool, Color> flags = 25;
     google.protobuf.Duration dur = 30; google.protobuf.Timestamp ts = 31; google.protobuf.Struct st = 32;
     google.protobuf.Value val = 33; google.protobuf.ListValue lv = 34;
     google.protobuf.Any any = 36; repeated google.protobuf.Any anys = 37;
     google.protobuf.BoolValue bw = 40; google.protobuf.Int64Value i64w = 41; google.protobuf.UInt32Value u32w = 42;
     google.protobuf.StringValue sw = 43; google.protobuf.BytesValue byw = 44; google.protobuf.DoubleValue dw = 45;
     google.protobuf.FloatValue fw = 46; google.protobuf.UInt64Value u64w = 47; google.protobuf.Int32Value i32w = 48;
     oneof pick { string one = 50; All other = 51; }
   }`,
  root,
  { keepCase: true },
);
root.resolveAll();
const All = root.lookupType('xtest.All');
const Wkt = (name: string) => root.lookupType(`google.protobuf.${name}`);
const packAny = (type: protobuf.Type, value: object) => ({ type_url: `type.googleapis.com/${type.fullName.slice(1)}`, value: type.encode(type.fromObject(value)).finish() });

t.test('scalars, lists, maps, enums and well-known types read the same as through protobufjs', async (t) => {
  const D = (s: string) => Wkt('Duration').fromObject({ seconds: s, nanos: 0 });
  const cases: Record<string, object> = {
    empty: {},
    extremes: { d: 1.5, f: 0.1, i32: -2147483648, u32: 4294967295, s32: -7, f32: 4294967295, sf32: -1, i64: '-9223372036854775808', u64: '18446744073709551615', s64: '-9223372036854775807', f64: '18446744073709551615', sf64: '-9223372036854775808', b: true, s: 'ascii', by: Buffer.from([0, 255, 1]) },
    'small 64-bit values on the Number path': { i64: '-1', u64: '562949953421311', s64: '-281474976710656', f64: '1', sf64: '-2' },
    'non-finite doubles': { d: Infinity, f: -Infinity },
    'NaN double': { d: NaN },
    'multi-byte text': { s: 'é — 默认 😀', names: ['a', 'b', '默'] },
    enums: { c: 2, colors: [0, 1, 7] },
    'negative enum': { c: -2 },
    lists: { packed: [1, -1, 300, 2147483647], unpacked: [5, -5], children: [{ s: 'a' }, {}, { child: { i32: 1 } }] },
    maps: { counts: { a: '1', __proto__x: '2', '': '0' }, by_id: { '7': { s: 'x' }, '-1': {} }, flags: { true: 1, false: 0 } },
    'durations and timestamps': { dur: { seconds: '-3', nanos: -500000000 }, ts: { seconds: '1700000000', nanos: 123000000 } },
    'struct, value, list value': {
      // Messages, not objects: fromObject takes them as they are (our readers changed toObject's form).
      st: fromProto3Json(Wkt('Struct'), { a: 1, b: 'x', c: true, d: null, e: [1, [2], { f: {} }], g: { h: -0.5 } }),
      val: fromProto3Json(Wkt('Value'), [1, 'two', null]),
      lv: fromProto3Json(Wkt('ListValue'), [{ k: 'v' }, []]),
    },
    'empty value and struct': { val: {}, st: {}, lv: {} },
    wrappers: { bw: { value: false }, i64w: { value: '-5' }, u32w: {}, sw: { value: 'w' }, byw: { value: Buffer.from('hi') }, dw: { value: 2.5 }, fw: {}, u64w: { value: '18446744073709551615' }, i32w: { value: -3 } },
    anys: {
      any: packAny(All, { s: 'inner', any: packAny(Wkt('Duration'), D('5')) }),
      anys: [packAny(Wkt('Duration'), D('1')), packAny(Wkt('Struct'), fromProto3Json(Wkt('Struct'), { k: [1] })), { type_url: 'type.googleapis.com/acme.Unknown', value: Buffer.from([8, 1]) }, { type_url: 'type.googleapis.com/acme.Empty', value: Buffer.alloc(0) }, { type_url: '', value: Buffer.from([8, 1]) }, packAny(Wkt('BoolValue'), {})],
    },
    'oneof member': { other: { one: 'nested' } },
  };
  for (const [name, value] of Object.entries(cases)) {
    const bytes = All.encode(All.fromObject(value)).finish();
    t.strictSame(wireToJson(All, bytes), viaProtobufjs(All, bytes), name);
  }
  const maps = wireToJson(All, All.encode(All.fromObject({ counts: { a: '1' } })).finish());
  t.same(maps, { counts: { a: '1' } });
});

/** Hand-made bytes: a tag, then whatever follows. */
const tag = (id: number, wireType: number) => [...encodeLength((id << 3) | wireType)];

t.test('what protobufjs reads leniently or not at all', async (t) => {
  // A map key "__proto__" is data: it must not set the object's prototype.
  const entry = Buffer.from([...tag(1, 2), 9, ...Buffer.from('__proto__'), ...tag(2, 0), 5]);
  const withProto = wireToJson(All, Buffer.from([...tag(23, 2), entry.length, ...entry]));
  const counts = withProto.counts as Record<string, unknown>;
  t.equal(Object.getPrototypeOf(counts), Object.prototype);
  t.same(Object.keys(counts), ['__proto__']);
  t.equal(Object.getOwnPropertyDescriptor(counts, '__proto__')?.value, '5');
  // An entry without its value has the value type's default; without its key, the key's.
  const noValue = wireToJson(All, Buffer.from([...tag(24, 2), 2, ...tag(1, 0), 7, ...tag(23, 2), 0]));
  t.same(noValue, { by_id: { '7': {} }, counts: { '': '0' } });
  // Unknown fields of every wire type are skipped, a proto2 group included.
  const unknown = Buffer.from([...tag(99, 0), 0xff, 0x01, ...tag(98, 1), 1, 2, 3, 4, 5, 6, 7, 8, ...tag(97, 5), 1, 2, 3, 4, ...tag(96, 2), 2, 0, 0, ...tag(95, 3), ...tag(1, 0), 1, ...tag(95, 4), ...tag(14, 2), 1, 0x41]);
  t.same(wireToJson(All, unknown), { s: 'A' });
});

/** A length-delimited field: tag, length, bytes. */
const ld = (id: number, bytes: number[]) => [...tag(id, 2), ...encodeLength(bytes.length), ...bytes];

t.test('bytes no encoder of ours writes, read as protobufjs 8 reads them', async (t) => {
  const S = (id: number, text: string) => ld(id, [...Buffer.from(text)]);
  const cases: Record<string, number[]> = {
    'plain scalars at their default are left out': [...tag(3, 0), 0, ...S(14, ''), ...tag(16, 0), 0, ...tag(13, 0), 0, ...tag(8, 0), 0, ...tag(1, 1), 0, 0, 0, 0, 0, 0, 0, 0],
    'a later default clears an earlier value': [...tag(3, 0), 5, ...tag(3, 0), 0, ...S(14, 'x'), ...S(14, '')],
    'a negative zero double is kept': [...tag(1, 1), 0, 0, 0, 0, 0, 0, 0, 0x80],
    'a wrapper at its default is present': ld(40, [...tag(1, 0), 0]),
    'the last member of a oneof wins': [...S(50, 'a'), ...ld(51, [])],
    'the last member of a oneof wins, the other way': [...ld(51, [...tag(3, 0), 1]), ...S(50, 'b')],
    'a message sent twice is merged': [...ld(17, [...tag(3, 0), 5]), ...ld(17, [...tag(4, 0), 7])],
    'a Duration sent twice is merged': [...ld(30, [...tag(1, 0), 5]), ...ld(30, [...tag(2, 0), 1])],
    'an Any sent twice is merged': [...ld(36, S(1, 'type.googleapis.com/google.protobuf.Duration').concat(ld(2, [...tag(1, 0), 3]))), ...ld(36, S(1, 'type.googleapis.com/google.protobuf.UInt32Value'))],
    'a map value sent twice in one entry is merged': ld(24, [...tag(1, 0), 1, ...ld(2, [...tag(3, 0), 1]), ...ld(2, [...tag(4, 0), 2])]),
    'a known field with another wire type is skipped': [...tag(14, 0), 1, ...tag(3, 2), 1, 0, ...ld(23, [...tag(1, 0), 1]), ...S(14, 'kept')],
    'a Value with two kinds keeps the last': ld(33, [...S(3, 'text'), ...tag(2, 1), 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    const buf = Buffer.from(bytes);
    t.strictSame(wireToJson(All, buf), viaProtobufjs(All, buf), name);
  }
  t.same(wireToJson(All, Buffer.from(cases['a message sent twice is merged']!)), { child: { i32: 5, u32: 7 } });
  t.same(wireToJson(All, Buffer.from(cases['the last member of a oneof wins']!)), { other: {} });
  t.same(wireToJson(All, Buffer.from(cases['a later default clears an earlier value']!)), {});
  // A Timestamp past what a Date can hold is the bytes' fault too.
  const seconds: number[] = [];
  for (let n = 2n ** 45n; n > 0n; n >>= 7n) seconds.push(Number(n & 127n) | (n >= 128n ? 128 : 0));
  t.throws(() => wireToJson(All, Buffer.from(ld(31, [...tag(1, 0), ...seconds]))), { name: 'WireError', message: /Invalid time value/ });
});

t.test('bad bytes are a WireError that says what is wrong, never another error or a crash', async (t) => {
  const bad: [string, number[], RegExp][] = [
    ['a length past the end', [...tag(14, 2), 5, 0x41], /runs past the end/],
    ['a truncated varint', [...tag(3, 0), 0x80], /runs past the end/],
    ['a varint over 10 bytes', [...tag(3, 0), ...Array(10).fill(0x80), 1], /longer than 10 bytes/],
    ['field number 0', [0, 1], /field number 0/],
    ['wire type 7', [...tag(99, 7)], /invalid wire type 7/],
    ['invalid UTF-8', [...tag(14, 2), 2, 0xc3, 0x28], /not valid UTF-8/],
    ['a fixed64 cut short', [...tag(11, 1), 1, 2, 3], /runs past the end/],
    ['an unterminated group', [...tag(95, 3), ...tag(1, 0), 1], /runs past the end/],
  ];
  for (const [name, bytes, message] of bad) t.throws(() => wireToJson(All, Buffer.from(bytes)), { name: 'WireError', message }, name);
  // Nesting deeper than any real config ends in an error, not a stack overflow.
  let deep: Uint8Array = Buffer.alloc(0);
  for (let i = 0; i < 150; i++) deep = Buffer.concat([Buffer.from([...tag(17, 2)]), encodeLength(deep.length), deep]);
  t.throws(() => wireToJson(All, deep), { name: 'WireError', message: /nested more than 100 deep/ });
  // Random corruption of a real cluster: either it reads, or it is a WireError.
  const cluster = encodeAny(readFixture('istio/istio-1.18-sidecar-deathstarbench/cluster_outbound_9080_reviews.json'));
  const type = client.typeOf(TYPE_URL.cluster)!;
  let failed = 0;
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.from(cluster.value);
    const flips = randomBytes(4);
    for (let k = 0; k < 1 + (flips[0]! % 3); k++) b[flips.readUInt16LE(1) % b.length] = flips[3]! ^ k;
    try {
      wireToJson(type, i % 2 ? b : b.subarray(0, b.length - 1 - (i % 50)));
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      failed++;
    }
  }
  t.ok(failed > 0, `${failed} of 2000 corrupted copies refused, the rest read`);
});

function encodeLength(n: number): Buffer {
  const out: number[] = [];
  for (; n >= 128; n >>>= 7) out.push((n & 127) | 128);
  out.push(n);
  return Buffer.from(out);
}
