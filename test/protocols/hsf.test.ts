import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import t from 'tap';
import { CodecError, NEED_MORE, type ErrorKind, type Frame } from '../../protocols/codec.js';
import { hsfCodec } from '../../protocols/hsf/index.js';
import { codecs, findCodec } from '../../protocols/registry.js';
import { fixture } from '../helpers/paths.js';
import { hmap, hstr, hsfHeartbeat as heartbeat, hsfRequest as request, hsfResponse as response } from '../helpers/hsf.js';

const MAX = 1 << 20;
const capture = readFileSync(fixture('hsf', 'request-sayHello.bin'));

const decodeFrame = (buf: Buffer, max = MAX): Frame => {
  const r = hsfCodec.decode(buf, max);
  if (r === NEED_MORE || r instanceof CodecError) throw new Error(`expected a frame, got ${String(r)}`);
  return r;
};
const errorOf = (buf: Buffer, max = MAX): CodecError => {
  const r = hsfCodec.decode(buf, max);
  if (!(r instanceof CodecError)) throw new Error(`expected a CodecError, got ${String(r)}`);
  return r;
};

/** The total length the layout declares, or undefined until the header is there. */
function declaredLength(b: Buffer): number | undefined {
  if (b[0] === 0x0c) return 18;
  if (b[2] === 1) return b.length < 20 ? undefined : 20 + b.readUInt32BE(16);
  if (b.length < 31) return undefined;
  const n = b.readUInt32BE(27);
  if (b.length < 35 + 8 * n) return undefined;
  let total = 35 + 8 * n + b.readUInt32BE(19) + b.readUInt32BE(23);
  for (let i = 0; i <= 2 * n; i++) total += b.readUInt32BE(31 + 4 * i);
  return total;
}

t.test('the capture decodes field by field', async (t) => {
  // Offsets checked by hand against the bytes: 0e 01 00 04 | 00 00 03 | id 0 | 000007d0 | 2d | 08 | 01 | 10 | 06 | 8f.
  t.same([...capture.subarray(0, 7)], [0x0e, 1, 0, 4, 0, 0, 3], 'magic, version, type, serialization, extension');
  t.equal(capture.readUInt32BE(19), 45, 'service-name length');
  t.equal(capture.readUInt32BE(23), 8, 'method-name length');
  t.equal(capture.readUInt32BE(27), 1, 'one argument');
  t.equal(capture.readUInt32BE(31), 16, 'java.lang.String');
  t.equal(capture.readUInt32BE(35), 6, 'hessian "world"');
  t.equal(capture.readUInt32BE(39), 143, 'properties');
  t.equal(43 + 45 + 8 + 16 + 6 + 143, 261, 'the lengths account for every byte');
  t.equal(capture.toString('latin1', 43 + 45 + 8, 43 + 45 + 8 + 16), 'java.lang.String');

  const f = decodeFrame(capture);
  t.equal(f.raw.length, 261);
  t.equal(f.raw.buffer, capture.buffer, 'raw is a view, not a copy');
  t.equal(f.kind, 'request');
  t.equal(f.heartbeat, false);
  t.equal(f.requestId, 0);
  t.equal(f.timeoutMs, 2000);
  t.equal(f.status, undefined);
  t.equal(f.ok, true);
  t.equal(f.header('service'), 'com.test.pandora.hsf.HelloService:1.0.0.daily');
  t.equal(f.header('interface'), 'com.test.pandora.hsf.HelloService');
  t.equal(f.header('version'), '1.0.0.daily');
  t.equal(f.header('method'), 'sayHello');
  t.equal(f.header('group'), 'HSF1', 'from target_group in the properties');
  t.equal(f.header('target_group'), 'HSF1');
  t.equal(f.header('Consumer-AppName'), 'hsf-server-demo');
  t.equal(f.header('_TID'), undefined, 'a null property is absent');
  t.equal(f.header('eagleeye_context'), undefined, 'a nested map is no routing text');
  t.equal(f.header('traceId'), undefined, 'keys of a nested map are not properties');
  t.equal(f.header('nope'), undefined);
});

t.test('frames built from the layout', async (t) => {
  const raw = request({
    id: 0xfffffffffn + 5n, timeout: 1500, service: 'com.acme.Greeter:2.0:x', method: 'hello',
    types: ['java.lang.String', 'int', 'com.acme.Big'], args: [hstr('a'), Buffer.from([0x95]), Buffer.alloc(300, 0x4e)],
    props: hmap({ target_group: 'blue', zone: 'gz', 'Consumer-AppName': 'me' }),
  });
  const f = decodeFrame(Buffer.concat([raw, capture]));
  t.equal(f.raw.length, raw.length, 'cut at its own end');
  t.equal(f.requestId, 0xfffffffffn + 5n, 'ids over 32 bits come back as bigints');
  t.equal(f.timeoutMs, 1500);
  t.equal(f.header('service'), 'com.acme.Greeter:2.0:x');
  t.equal(f.header('interface'), 'com.acme.Greeter');
  t.equal(f.header('version'), '2.0:x', 'everything after the first colon');
  t.equal(f.header('method'), 'hello');
  t.equal(f.header('group'), 'blue');
  t.equal(f.header('zone'), 'gz');

  const bare = decodeFrame(request({ service: 'NoVersion', types: [], props: Buffer.alloc(0) }));
  t.equal(bare.header('interface'), 'NoVersion');
  t.equal(bare.header('version'), undefined);
  t.equal(bare.header('group'), undefined, 'no properties at all');
  t.equal(bare.timeoutMs, undefined, 'timeout 0 is none');
  const empty = decodeFrame(request({ service: '', method: '' }));
  t.equal(empty.header('service'), undefined);
  t.equal(empty.header('method'), undefined);
  t.equal(empty.header('interface'), undefined);
  const notMap = decodeFrame(request({ props: Buffer.from([0xac, 0xed, 0, 5]), serialization: 2 }));
  t.equal(notMap.header('group'), undefined, 'properties that are not a hessian2 map yield nothing');
  t.equal(notMap.header('method'), 'greet');

  const res = decodeFrame(response(9n, 0, hstr('hello')));
  t.same([res.kind, res.heartbeat, res.requestId, res.status, res.ok, res.timeoutMs, res.raw.length], ['response', false, 9, 0, true, undefined, 26]);
  t.equal(res.header('service'), undefined);
  const failed = decodeFrame(response(2n ** 64n - 1n, 60, Buffer.alloc(0)));
  t.same([failed.status, failed.ok, failed.requestId], [60, false, 2n ** 64n - 1n]);

  const hb = decodeFrame(heartbeat(42n, 0, 3000));
  t.same([hb.kind, hb.heartbeat, hb.requestId, hb.timeoutMs, hb.status, hb.raw.length], ['request', true, 42, 3000, undefined, 18]);
  const pong = decodeFrame(heartbeat(42n, 1));
  t.same([pong.kind, pong.heartbeat, pong.ok], ['response', true, true]);
});

t.test('need-more at every split offset, then the whole frame', async (t) => {
  const frames = [capture, request(), response(3n, 0, hstr('x')), heartbeat(5n), request({ types: [], props: Buffer.alloc(0) })];
  for (const raw of frames) {
    let ok = true;
    for (let i = 0; i < raw.length; i++) ok &&= hsfCodec.decode(raw.subarray(0, i), MAX) === NEED_MORE;
    t.ok(ok, `every proper prefix of a ${raw.length}-byte frame`);
    t.equal(decodeFrame(raw).raw.length, raw.length);
  }
  const all = Buffer.concat(frames);
  let ok = true;
  for (let cut = 0; cut <= all.length; cut++) ok &&= reframe([all.subarray(0, cut), all.subarray(cut)]).length === frames.length;
  t.ok(ok, `five frames split at each of ${all.length + 1} offsets come back whole`);
});

t.test('too large', async (t) => {
  const e = errorOf(capture, 260);
  t.equal(e.reason, 'too-large');
  t.match(e.message, /261 bytes/);
  const req = e.request!;
  t.same([req.kind, req.requestId, req.timeoutMs], ['request', 0, 2000]);
  t.equal(req.header('service'), undefined, 'no routing from a header cut short');
  t.equal(req.header('group'), undefined);
  t.equal(decodeFrame(capture, 261).raw.length, 261, 'the limit is inclusive');
  const reply = decodeFrame(hsfCodec.errorResponse(req, 'frame-too-large', 'limit 260')!);
  t.same([reply.kind, reply.requestId, reply.status], ['response', 0, 41]);

  // Known from the first 31 bytes alone: no need to wait for the rest.
  const huge = request({ id: 77n });
  huge.writeUInt32BE(0xffffffff, 19);
  const h = errorOf(huge.subarray(0, 31));
  t.equal(h.reason, 'too-large');
  t.equal(h.request?.requestId, 77);
  const manyArgs = request();
  manyArgs.writeUInt32BE(0xffffffff, 27);
  t.equal(errorOf(manyArgs.subarray(0, 31)).reason, 'too-large', 'a huge argument count is refused before its 8N bytes');
  manyArgs.writeUInt32BE(Math.floor((MAX - 35) / 8) + 1, 27);
  t.equal(errorOf(manyArgs.subarray(0, 31)).reason, 'too-large', 'one argument more than the limit allows');
  for (const at of [31, 35, 39]) {
    const b = request();
    b.writeUInt32BE(0xffffffff, at);
    const r = errorOf(b);
    t.equal(r.reason, 'too-large', `a huge length at ${at}`);
    t.ok(r.request, 'answerable');
  }
  const lengths = request({ types: ['a', 'b', 'c'] });
  for (let i = 0; i < 7; i++) lengths.writeUInt32BE(0xffffffff, 31 + 4 * i);
  t.equal(errorOf(lengths, 2 ** 34).reason, 'too-large', 'u32 lengths add up, they never wrap');
  const res = errorOf(response(1n, 0, Buffer.alloc(100)), 50);
  t.ok(res.reason === 'too-large' && res.request === undefined, 'no reply to a response');
  t.equal(errorOf(heartbeat(1n), 10).request, undefined, 'nor to a heartbeat');
});

t.test('malformed', async (t) => {
  const bad = (b: number[]) => {
    const r = hsfCodec.decode(Buffer.from(b), MAX);
    return r instanceof CodecError && r.reason === 'malformed';
  };
  t.ok(bad([0x01]), 'bolt is not hsf');
  t.ok(bad([0x0e, 2]), 'version');
  t.ok(bad([0x0e, 1, 2]), 'type');
  t.ok(bad([0x0c, 2]), 'heartbeat type');
  t.ok(bad([0x0c, 0, 0]), 'heartbeat version');
  t.equal(hsfCodec.decode(Buffer.from([0x0e, 1]), MAX), NEED_MORE);
  t.equal(hsfCodec.decode(Buffer.alloc(0), MAX), NEED_MORE);
});

t.test('setRequestId patches the u64 in place', async (t) => {
  const copy = Buffer.from(capture);
  hsfCodec.setRequestId(decodeFrame(copy).raw, 0xdeadbeef);
  t.equal(decodeFrame(copy).requestId, 0xdeadbeef);
  t.same(copy.subarray(15), capture.subarray(15), 'nothing after the id changed');
  t.same(copy.subarray(0, 11), capture.subarray(0, 11), 'nor before its low half');
  hsfCodec.setRequestId(copy, 2 ** 32 + 7);
  t.equal(decodeFrame(copy).requestId, 2n ** 32n + 7n, 'numbers above 32 bits keep their high half');
  hsfCodec.setRequestId(copy, 0x0123456789abcdefn);
  t.equal(copy.readBigUInt64BE(7), 0x0123456789abcdefn);
  hsfCodec.setRequestId(copy, 0);
  t.same(copy, capture, 'round trip');
  const res = response(1n, 0, hstr('ok'));
  hsfCodec.setRequestId(res, 1234);
  t.equal(res.readBigUInt64BE(8), 1234n, 'responses keep their id at 8');
  t.equal(res.readUInt32BE(16), 3, 'and their body length');
  const hb = heartbeat(1n, 0, 500);
  hsfCodec.setRequestId(hb, 5);
  t.same([hb.readBigUInt64BE(6), hb.readUInt32BE(14)], [5n, 500], 'heartbeats at 6');
});

t.test('heartbeat reply and keepalive', async (t) => {
  const ka = hsfCodec.keepalive(99);
  t.same(ka, heartbeat(99n), 'keepalive: type request, version 1, timeout 0');
  const hb = decodeFrame(heartbeat(0x1_0000_0001n, 0, 3000));
  const reply = hsfCodec.heartbeatReply(hb);
  const r = decodeFrame(reply);
  t.same([r.kind, r.heartbeat, r.requestId, r.ok, reply.length], ['response', true, 0x1_0000_0001n, true, 18]);
  t.same([...reply.subarray(0, 3)], [0x0c, 1, 1], 'magic, type response, version');
  t.same(decodeFrame(hsfCodec.keepalive(2n ** 40n)).requestId, 2n ** 40n);
});

t.test('errorResponse', async (t) => {
  const req = decodeFrame(Buffer.concat([request({ id: 2n ** 33n + 1n, serialization: 7, ext: [1, 2, 3] })]));
  const expected: Record<ErrorKind, number> = {
    'no-route': 60, 'no-healthy-upstream': 81, 'connect-failure': 82, 'upstream-reset': 80,
    timeout: 31, overflow: 100, 'frame-too-large': 41, 'codec-error': 40,
  };
  const seen = new Set<number>();
  for (const [kind, status] of Object.entries(expected) as [ErrorKind, number][]) {
    const raw = hsfCodec.errorResponse(req, kind, 'why')!;
    const f = decodeFrame(raw);
    t.equal(f.raw.length, raw.length, `${kind}: one whole frame`);
    t.same([f.kind, f.heartbeat, f.requestId, f.status, f.ok], ['response', false, 2n ** 33n + 1n, status, false], `${kind} -> ${status}`);
    t.same([...raw.subarray(4, 8)], [7, 1, 2, 3], 'serialization and extension bytes kept');
    const body = raw.subarray(20);
    const text = `xsidecar ${kind}: why`;
    const short = text.length < 32;
    t.equal(short ? body[0] : ((body[0]! - 0x30) << 8) | body[1]!, text.length, 'a hessian2 string of that many characters');
    t.equal(body.toString('utf8', short ? 1 : 2), text);
    seen.add(status);
  }
  t.equal(seen.size, 8, 'one status per reason');
  const long = decodeFrame(hsfCodec.errorResponse(req, 'timeout', 'é'.repeat(70000) + '😀')!).raw;
  t.same([long[20], long.readUInt16BE(21)], [0x53, 4000], 'long reasons are cut to one S chunk of 4000 characters');
  t.equal(long.length, 20 + 3 + 'xsidecar timeout: '.length + 2 * (4000 - 'xsidecar timeout: '.length));
  const mid = decodeFrame(hsfCodec.errorResponse(req, 'timeout', 'x'.repeat(100))!).raw;
  t.equal(((mid[20]! - 0x30) << 8) | mid[21]!, 118, 'medium strings in the two-byte form');
  t.equal(hsfCodec.errorResponse(decodeFrame(response(1n, 0, Buffer.alloc(0))), 'no-route', 'x'), null, 'no reply to a response');
  t.equal(hsfCodec.errorResponse(decodeFrame(heartbeat(1n)), 'no-route', 'x'), null, 'heartbeats are answered otherwise');
});

t.test('match and registry', async (t) => {
  t.equal(hsfCodec.match(capture), 'yes');
  t.equal(hsfCodec.match(response(1n, 0, Buffer.alloc(0))), 'yes');
  t.equal(hsfCodec.match(heartbeat(1n)), 'yes');
  t.equal(hsfCodec.match(heartbeat(1n, 1)), 'yes');
  t.equal(hsfCodec.match(Buffer.alloc(0)), 'need-more');
  t.equal(hsfCodec.match(Buffer.from([0x0e, 1])), 'need-more');
  t.equal(hsfCodec.match(Buffer.from([0x0c])), 'need-more');
  t.equal(hsfCodec.match(Buffer.from([0x0e, 2])), 'no', 'version');
  t.equal(hsfCodec.match(Buffer.from([0x0e, 1, 5])), 'no', 'type');
  t.equal(hsfCodec.match(Buffer.from([0x0c, 0, 2])), 'no', 'heartbeat version');
  t.equal(hsfCodec.match(Buffer.from([0x0c, 3])), 'no', 'heartbeat type');
  t.equal(hsfCodec.match(Buffer.from('GET / HTTP/1.1')), 'no');
  t.equal(hsfCodec.match(Buffer.from([0xda, 0xbb, 0xc2, 0])), 'no', 'dubbo');
  t.equal(hsfCodec.match(Buffer.from([1, 1, 0, 1])), 'no', 'bolt');
  t.equal(hsfCodec.match(Buffer.from([0x16, 3, 1])), 'no', 'tls');
  t.equal(hsfCodec.poolMode, 'multiplex');
  t.equal(findCodec('hsf'), hsfCodec);
  t.ok(codecs.includes(hsfCodec));
  for (const other of codecs.filter((c) => c !== hsfCodec)) {
    t.equal(other.match(capture), 'no', `${other.name} does not claim HSF`);
    t.equal(other.match(heartbeat(1n)), 'no', `${other.name} does not claim an HSF heartbeat`);
  }
});

// Properties: decode is total, exact, and frames a byte stream however it is cut.

/** What an engine does: append each chunk, take every complete frame off the front. */
function reframe(chunks: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let buf = Buffer.alloc(0);
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const r = hsfCodec.decode(buf, MAX);
      if (r === NEED_MORE) break;
      if (r instanceof CodecError) throw r;
      out.push(r.raw);
      buf = buf.subarray(r.raw.length);
    }
  }
  if (buf.length) throw new Error(`${buf.length} bytes left over`);
  return out;
}

const NAMES = ['service', 'method', 'version', 'group', 'interface', 'zone', 'x'];

function checkResult(buf: Buffer, max = MAX): boolean {
  const r = hsfCodec.decode(buf, max);
  if (r === NEED_MORE) return true;
  if (r instanceof CodecError) {
    if (r.request) hsfCodec.errorResponse(r.request, 'frame-too-large', 'x');
    return r.reason === 'malformed' || r.reason === 'too-large';
  }
  for (const name of NAMES) r.header(name);
  const copy = Buffer.from(r.raw);
  hsfCodec.setRequestId(copy, 12345);
  hsfCodec.errorResponse(r, 'no-route', 'x');
  if (r.heartbeat) hsfCodec.heartbeatReply(r);
  return r.raw.length === declaredLength(buf) && r.raw.length <= buf.length && r.raw.length <= max && r.raw.buffer === buf.buffer;
}

t.test('property: random bytes never throw and never mis-frame', async (t) => {
  const head = fc.constantFrom([], [0x0e], [0x0e, 1, 0], [0x0e, 1, 1], [0x0c, 0, 1], [0x0c, 1, 1]);
  fc.assert(
    fc.property(head, fc.uint8Array({ maxLength: 160 }), fc.integer({ min: 0, max: 300 }), (h, bytes, max) => {
      const buf = Buffer.concat([Buffer.from(h), bytes]);
      return checkResult(buf) && checkResult(buf, max) && ['yes', 'no', 'need-more'].includes(hsfCodec.match(buf));
    }),
    { numRuns: 5000 },
  );
  t.pass('5000 runs');
});

t.test('property: mutated frames never throw and never mis-frame', async (t) => {
  const frame = fc.constantFrom(capture, request(), response(1n, 0, hstr('x')), heartbeat(3n));
  const edit = fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }));
  const extreme = fc.tuple(fc.constantFrom(19, 23, 27, 31, 35, 39, 16), fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 261));
  fc.assert(
    fc.property(frame, fc.array(edit, { maxLength: 6 }), fc.array(extreme, { maxLength: 2 }), fc.nat({ max: 400 }), (f, edits, lengths, cut) => {
      const buf = Buffer.from(f);
      for (const [at, v] of edits) buf[at % buf.length] = v;
      for (const [at, v] of lengths) if (at + 4 <= buf.length) buf.writeUInt32BE(v, at);
      return checkResult(buf) && checkResult(buf.subarray(0, cut)) && checkResult(buf, cut);
    }),
    { numRuns: 5000 },
  );
  t.pass('5000 runs');
});

const arbFrame: fc.Arbitrary<Buffer> = fc.oneof(
  fc.record({
    id: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    timeout: fc.nat(),
    serialization: fc.integer({ min: 0, max: 255 }),
    service: fc.string({ maxLength: 30 }),
    method: fc.string({ maxLength: 10 }),
    types: fc.array(fc.string({ maxLength: 12 }), { maxLength: 4 }),
    props: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }).map(hmap),
  }).map((r) => request({ ...r, args: r.types.map((s) => hstr(s)) })),
  fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 40 }))
    .map(([id, status, body]) => response(id, status, Buffer.from(body))),
  fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(0, 1), fc.nat()).map(([id, type, to]) => heartbeat(id, type, to)),
);

t.test('property: concatenated frames come back whole and in order, however split', async (t) => {
  fc.assert(
    fc.property(fc.array(arbFrame, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, cuts) => {
      const all = Buffer.concat(frames);
      const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
      const chunks = [0, ...points].map((p, i, a) => all.subarray(p, a[i + 1] ?? all.length));
      const got = reframe(chunks);
      return got.length === frames.length && got.every((g, i) => g.equals(frames[i]!));
    }),
    { numRuns: 2000 },
  );
  t.pass('2000 runs');
});

t.test('property: headers of built requests read back', async (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 20 }), fc.string({ minLength: 1, maxLength: 10 }), fc.string({ minLength: 1, maxLength: 12 }), (iface, version, group) => {
      const service = `${iface.replace(/:/g, '')}:${version}`;
      const f = decodeFrame(request({ service, method: 'm', props: hmap({ target_group: group }) }));
      return f.header('service') === service && f.header('interface') === (iface.replace(/:/g, '') || undefined) &&
        f.header('version') === version && f.header('group') === group;
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 runs');
});
