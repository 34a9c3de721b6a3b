import { readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import t from 'tap';
import { CodecError, NEED_MORE, type ErrorKind, type Frame } from '../../protocols/codec.js';
import { boltCodec } from '../../protocols/bolt/index.js';
import { codecs, findCodec } from '../../protocols/registry.js';
import { fixture } from '../helpers/paths.js';

const MAX = 1 << 20;
const requestPlus = readFileSync(fixture('bolt', 'request-plus.bin'));
const responsePlus = readFileSync(fixture('bolt', 'response-plus.bin'));

const decodeFrame = (buf: Buffer, max = MAX): Frame => {
  const r = boltCodec.decode(buf, max);
  if (r === NEED_MORE || r instanceof CodecError) throw new Error(`expected a frame, got ${String(r)}`);
  return r;
};

/** An independent Bolt encoder, written from the sofa-bolt layout, for frames the fixtures do not cover. */
interface Spec {
  proto?: 1 | 2;
  ver1?: number;
  crc?: boolean;
  type?: number;
  cmd?: number;
  id?: number;
  codec?: number;
  timeout?: number;
  status?: number;
  cls?: string;
  headers?: Record<string, string>;
  body?: Buffer;
}

function headerMap(headers: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(headers)) {
    const kb = Buffer.from(k);
    const vb = Buffer.from(v);
    const p = Buffer.alloc(8 + kb.length + vb.length);
    p.writeInt32BE(kb.length, 0);
    kb.copy(p, 4);
    p.writeInt32BE(vb.length, 4 + kb.length);
    vb.copy(p, 8 + kb.length);
    parts.push(p);
  }
  return Buffer.concat(parts);
}

function build(spec: Spec): Buffer {
  const { proto = 1, ver1 = 1, crc = false, type = 1, cmd = type === 0 ? 2 : 1, id = 1, codec = 1 } = spec;
  const cls = Buffer.from(spec.cls ?? '');
  const hdr = headerMap(spec.headers ?? {});
  const body = spec.body ?? Buffer.alloc(0);
  const head: number[] = [proto];
  if (proto === 2) head.push(ver1);
  head.push(type, cmd >> 8, cmd & 0xff, 1);
  const h = Buffer.alloc((proto === 2 ? 24 : 22) - (type === 0 ? 2 : 0));
  Buffer.from(head).copy(h);
  let p = head.length;
  p = h.writeUInt32BE(id, p);
  h[p++] = codec;
  if (proto === 2) h[p++] = crc ? 1 : 0;
  p = type === 0 ? h.writeUInt16BE(spec.status ?? 0, p) : h.writeInt32BE(spec.timeout ?? 0, p);
  p = h.writeInt16BE(cls.length, p);
  p = h.writeInt16BE(hdr.length, p);
  h.writeInt32BE(body.length, p);
  const frame = Buffer.concat([h, cls, hdr, body]);
  if (!(proto === 2 && ver1 === 2 && crc)) return frame;
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32BE(crc32(frame));
  return Buffer.concat([frame, trailer]);
}

const crcOk = (raw: Buffer) => crc32(raw.subarray(0, raw.length - 4)) === raw.readUInt32BE(raw.length - 4);

/** The frame length the header declares (sofa-bolt's rule), or undefined until the fixed header is there. */
function declaredLength(b: Buffer): number | undefined {
  const s = b[0] === 2 ? 1 : 0;
  const response = b[1 + s] === 0;
  const fixed = (response ? 20 : 22) + 2 * s;
  if (b.length < fixed) return undefined;
  const at = fixed - 8;
  const crc = s === 1 && b[1] === 2 && (b[11] & 1) === 1 ? 4 : 0;
  return fixed + b.readInt16BE(at) + b.readInt16BE(at + 2) + b.readInt32BE(at + 4) + crc;
}

t.test('decodes the captured sofa-rpc-node request', async (t) => {
  const f = decodeFrame(requestPlus);
  t.equal(f.kind, 'request');
  t.equal(f.heartbeat, false);
  t.equal(f.requestId, 2);
  t.equal(f.timeoutMs, 5000);
  t.equal(f.status, undefined);
  t.equal(f.ok, true);
  t.equal(f.raw.length, 351);
  t.equal(f.raw.buffer, requestPlus.buffer, 'raw is a view, not a copy');
  t.equal(f.raw.byteOffset, requestPlus.byteOffset);
  t.equal(f.header('service'), 'com.nodejs.test.TestService:1.0');
  t.equal(f.header('method'), 'plus', 'from the hessian body: sofa-rpc-node sends no method header');
  t.equal(f.header('method'), 'plus', 'cached');
  t.equal(f.header('interface'), 'com.nodejs.test.TestService');
  t.equal(f.header('version'), '1.0');
  t.equal(f.header('group'), undefined);
  t.equal(f.header('sofa_head_method_name'), undefined);
  t.equal(f.header('nope'), undefined);
});

t.test('decodes the captured sofa-rpc-node response', async (t) => {
  const f = decodeFrame(responsePlus);
  t.equal(f.kind, 'response');
  t.equal(f.heartbeat, false);
  t.equal(f.requestId, 2);
  t.equal(f.timeoutMs, undefined);
  t.equal(f.status, 0);
  t.equal(f.ok, true);
  t.equal(f.raw.length, 164);
  t.equal(f.header('service'), undefined);
  t.equal(f.header('method'), undefined, 'no body peek on responses');
});

t.test('a frame followed by more bytes is cut at its own end', async (t) => {
  const both = Buffer.concat([requestPlus, responsePlus]);
  const f = decodeFrame(both);
  t.equal(f.raw.length, 351);
  t.equal(f.raw.buffer, both.buffer);
  t.same(decodeFrame(both.subarray(f.raw.length)).raw, responsePlus);
});

t.test('setRequestId patches in place and round-trips', async (t) => {
  const copy = Buffer.from(requestPlus);
  const f = decodeFrame(copy);
  boltCodec.setRequestId(f.raw, 0xdeadbeef);
  t.equal(decodeFrame(copy).requestId, 0xdeadbeef);
  t.same(copy.subarray(9), requestPlus.subarray(9), 'only the id bytes changed');
  boltCodec.setRequestId(f.raw, 2n);
  t.same(copy, requestPlus);
  const res = Buffer.from(responsePlus);
  boltCodec.setRequestId(res, 77);
  t.equal(decodeFrame(res).requestId, 77);
  boltCodec.setRequestId(res, 2 ** 32 + 5);
  t.equal(decodeFrame(res).requestId, 5, 'ids are 32 bits');
});

t.test('v2 without CRC', async (t) => {
  const raw = build({
    proto: 2,
    ver1: 1,
    crc: true, // the switch bit counts only with ver1 = 2
    id: 9,
    timeout: 1500,
    cls: 'com.alipay.sofa.rpc.core.request.SofaRequest',
    headers: { sofa_head_target_service: 'com.acme.Foo:2.0:blue', sofa_head_method_name: 'hello', zone: 'gz' },
    body: Buffer.from('body'),
  });
  const f = decodeFrame(Buffer.concat([raw, Buffer.from([1, 2, 3])]));
  t.equal(f.raw.length, raw.length);
  t.equal(f.raw.length, 24 + 44 + raw.readInt16BE(18) + 4);
  t.equal(f.kind, 'request');
  t.equal(f.requestId, 9);
  t.equal(f.timeoutMs, 1500);
  t.equal(f.header('service'), 'com.acme.Foo:2.0:blue');
  t.equal(f.header('interface'), 'com.acme.Foo');
  t.equal(f.header('version'), '2.0');
  t.equal(f.header('group'), 'blue');
  t.equal(f.header('method'), 'hello');
  t.equal(f.header('zone'), 'gz');
  boltCodec.setRequestId(f.raw, 10);
  t.equal(decodeFrame(f.raw).requestId, 10);
});

t.test('v2 with CRC', async (t) => {
  const raw = build({ proto: 2, ver1: 2, crc: true, type: 2, id: 3, headers: { service: 'a.B:1.0' }, body: Buffer.alloc(50, 7) });
  const f = decodeFrame(raw);
  t.equal(f.raw.length, 24 + raw.readInt16BE(18) + 50 + 4, 'the trailer belongs to the frame');
  t.equal(f.kind, 'oneway');
  t.equal(f.timeoutMs, undefined);
  t.equal(f.header('service'), 'a.B:1.0');
  boltCodec.setRequestId(f.raw, 123456);
  t.equal(decodeFrame(raw).requestId, 123456);
  t.ok(crcOk(raw), 'CRC recomputed after the id patch');
  let more = true;
  for (let i = 0; i < raw.length; i++) more &&= boltCodec.decode(raw.subarray(0, i), MAX) === NEED_MORE;
  t.ok(more, 'need-more until the trailer is there');

  const corrupt = Buffer.from(raw);
  corrupt[30] ^= 0xff;
  boltCodec.setRequestId(corrupt, 1);
  t.equal(decodeFrame(corrupt).requestId, 1);
  t.notOk(crcOk(corrupt), 'a frame that arrived corrupted is not re-signed');

  const res = build({ proto: 2, ver1: 2, crc: true, type: 0, status: 0x10, id: 4 });
  const r = decodeFrame(res);
  t.equal(r.kind, 'response');
  t.equal(r.status, 0x10);
  t.equal(r.ok, false);
  t.equal(r.raw.length, 22 + 4);
});

t.test('heartbeats', async (t) => {
  const ka = boltCodec.keepalive(7);
  const hb = decodeFrame(ka);
  t.equal(ka.length, 22);
  t.equal(hb.kind, 'request');
  t.equal(hb.heartbeat, true);
  t.equal(hb.requestId, 7);
  t.equal(hb.timeoutMs, undefined);
  t.equal(hb.header('service'), undefined);
  const ack = decodeFrame(boltCodec.heartbeatReply(hb));
  t.equal(ack.kind, 'response');
  t.equal(ack.heartbeat, true);
  t.equal(ack.requestId, 7);
  t.equal(ack.status, 0);
  t.equal(ack.raw.length, 20);

  // What sofa-rpc-node sends when idle: v1, timeout 3000, no class, header or content.
  const nodeHb = Buffer.from('0101000001000000090100000bb80000000000000000', 'hex');
  const f = decodeFrame(nodeHb);
  t.equal(f.heartbeat, true);
  t.equal(f.timeoutMs, 3000);
  t.same(boltCodec.heartbeatReply(f), Buffer.from('0100000001000000090100000000000000000000', 'hex'), 'what sofa-rpc-node answers');

  const v2 = decodeFrame(build({ proto: 2, ver1: 2, crc: true, cmd: 0, id: 8 }));
  t.equal(v2.heartbeat, true);
  const reply = boltCodec.heartbeatReply(v2);
  t.same([...reply.subarray(0, 3)], [2, 2, 0], 'proto, ver1, response');
  t.equal(reply[11], 1, 'switch kept');
  t.equal(reply.length, 22 + 4);
  t.ok(crcOk(reply));
  t.equal(decodeFrame(reply).requestId, 8);
});

t.test('need-more at every split offset', async (t) => {
  const frames = [requestPlus, responsePlus, boltCodec.keepalive(1), build({ proto: 2, ver1: 2, crc: true, body: Buffer.alloc(3) })];
  for (const raw of frames) {
    let ok = true;
    for (let i = 0; i < raw.length; i++) ok &&= boltCodec.decode(raw.subarray(0, i), MAX) === NEED_MORE;
    t.ok(ok, `every proper prefix of a ${raw.length}-byte frame`);
  }
});

t.test('too large', async (t) => {
  const r = boltCodec.decode(requestPlus.subarray(0, 22), 300);
  if (!(r instanceof CodecError)) {
    t.fail('expected a CodecError');
    return;
  }
  t.equal(r.reason, 'too-large');
  t.match(r.message, /351 bytes/);
  const req = r.request!;
  t.equal(req.kind, 'request');
  t.equal(req.requestId, 2);
  t.equal(req.timeoutMs, 5000);
  t.equal(req.header('service'), undefined);
  t.equal(req.header('method'), undefined);
  const reply = decodeFrame(boltCodec.errorResponse(req, 'frame-too-large', 'limit 300')!);
  t.equal(reply.requestId, 2);
  t.equal(reply.status, 0x09);
  t.equal(boltCodec.decode(requestPlus, 351) instanceof CodecError, false, 'the limit is inclusive');
  t.equal(boltCodec.decode(requestPlus.subarray(0, 21), 300), NEED_MORE, 'needs the fixed header first');
  const res = boltCodec.decode(responsePlus, 100);
  t.ok(res instanceof CodecError && res.reason === 'too-large' && res.request === undefined, 'no reply to a response');
  const oneway = Buffer.from(requestPlus);
  oneway[1] = 2;
  const ow = boltCodec.decode(oneway, 100);
  t.ok(ow instanceof CodecError && ow.request === undefined, 'no reply to a oneway');
});

t.test('malformed', async (t) => {
  const bad = (b: Buffer) => {
    const r = boltCodec.decode(b, MAX);
    return r instanceof CodecError && r.reason === 'malformed';
  };
  t.ok(bad(Buffer.from([3])), 'protocol code');
  t.ok(bad(Buffer.from([0x16, 3, 1])), 'TLS is not Bolt');
  t.ok(bad(Buffer.from([1, 3])), 'type');
  t.ok(bad(Buffer.from([2, 9])), 'v2 version');
  t.ok(bad(Buffer.from([2, 2, 5])), 'v2 type');
  for (const at of [14, 16, 18]) {
    const b = Buffer.from(requestPlus);
    b[at] = 0x80;
    t.ok(bad(b), `negative length at ${at}`);
  }
  t.equal(boltCodec.decode(Buffer.alloc(0), MAX), NEED_MORE);
});

t.test('errorResponse', async (t) => {
  const req = decodeFrame(requestPlus);
  const expected: Record<ErrorKind, number> = {
    'no-route': 0x06,
    'no-healthy-upstream': 0x10,
    'connect-failure': 0x10,
    'upstream-reset': 0x02,
    timeout: 0x07,
    overflow: 0x04,
    'frame-too-large': 0x09,
    'codec-error': 0x09,
  };
  for (const [kind, status] of Object.entries(expected) as [ErrorKind, number][]) {
    const raw = boltCodec.errorResponse(req, kind, 'why')!;
    const f = decodeFrame(raw);
    t.equal(f.raw.length, raw.length, `${kind}: one whole frame`);
    t.equal(f.kind, 'response');
    t.equal(f.heartbeat, false);
    t.equal(f.requestId, 2);
    t.equal(f.status, status, `${kind} -> ${status}`);
    t.equal(f.ok, false);
    t.equal(raw[9], 1, 'codec kept');
    t.ok(raw.includes(`xsidecar ${kind}: why`), 'reason in the body');
  }
  const long = decodeFrame(boltCodec.errorResponse(req, 'timeout', 'x'.repeat(70000) + '😀')!);
  t.ok(long.raw.length < 5000, 'long reasons are cut');

  const oneway = Buffer.from(requestPlus);
  oneway[1] = 2;
  t.equal(boltCodec.errorResponse(decodeFrame(oneway), 'no-route', 'x'), null);
  t.equal(boltCodec.errorResponse(decodeFrame(responsePlus), 'no-route', 'x'), null);

  const v2 = decodeFrame(build({ proto: 2, ver1: 2, crc: true, id: 5, codec: 11, headers: { service: 'a:1' } }));
  const raw = boltCodec.errorResponse(v2, 'overflow', 'busy')!;
  t.same([...raw.subarray(0, 3)], [2, 2, 0]);
  t.equal(raw[10], 11, 'protobuf codec kept');
  t.equal(raw[11], 1, 'switch kept');
  t.ok(crcOk(raw));
  const pb = decodeFrame(raw);
  t.equal(pb.status, 0x04);
  t.equal(pb.requestId, 5);
  t.equal(pb.header('sofa_head_response_error'), 'true');
  t.equal(raw.subarray(raw.length - 4 - 'xsidecar overflow: busy'.length, raw.length - 4).toString(), 'xsidecar overflow: busy');
});

t.test('match and registry', async (t) => {
  t.equal(boltCodec.match(requestPlus), 'yes');
  t.equal(boltCodec.match(responsePlus), 'yes');
  t.equal(boltCodec.match(build({ proto: 2, ver1: 2 })), 'yes');
  t.equal(boltCodec.match(Buffer.alloc(0)), 'need-more');
  t.equal(boltCodec.match(requestPlus.subarray(0, 3)), 'need-more');
  t.equal(boltCodec.match(Buffer.from('GET / HTTP/1.1')), 'no');
  t.equal(boltCodec.match(Buffer.from([0xda, 0xbb, 0xc2, 0])), 'no', 'dubbo');
  t.equal(boltCodec.match(Buffer.from([1, 7, 0, 1])), 'no', 'bad type');
  t.equal(boltCodec.match(Buffer.from([2, 3, 1, 0, 1])), 'no', 'bad ver1');
  t.equal(boltCodec.match(Buffer.from([1, 1, 9, 1])), 'no', 'implausible command code');
  t.equal(boltCodec.poolMode, 'multiplex');
  t.equal(findCodec('bolt'), boltCodec);
  t.equal(findCodec('nope'), undefined);
  t.ok(codecs.includes(boltCodec));
});

t.test('method peek', async (t) => {
  // Hessian 2.0 form, as a Java hessian writer would: 'C' type fields names, then a compact instance ref.
  const str = (s: string) =>
    Buffer.concat([Buffer.from(s.length < 32 ? [s.length] : [0x30 + (s.length >> 8), s.length & 0xff]), Buffer.from(s)]);
  const body = Buffer.concat([
    Buffer.from([0x43]), str('com.alipay.sofa.rpc.core.request.SofaRequest'), Buffer.from([0x92]),
    str('methodName'), str('targetAppName'), Buffer.from([0x60]), str('sayHélló'), str('app'),
  ]);
  t.equal(decodeFrame(build({ body })).header('method'), 'sayHélló');
  const other = Buffer.from(body);
  other[other.indexOf('methodName')] = 0x4e;
  t.equal(decodeFrame(build({ body: other })).header('method'), undefined, 'only a first field named methodName');
  t.equal(decodeFrame(build({ body, codec: 11 })).header('method'), undefined, 'hessian only');
  t.equal(decodeFrame(build({ body, headers: { sofa_head_method_name: 'm' } })).header('method'), 'm', 'the header wins');
  const valueEnd = body.lastIndexOf('app') - 1;
  let exact = true;
  for (let i = 0; i < body.length; i++) {
    exact &&= decodeFrame(build({ body: body.subarray(0, i) })).header('method') === (i < valueEnd ? undefined : 'sayHélló');
  }
  t.ok(exact, 'a body cut before the end of the value yields nothing');
});

// Properties: decode is total, exact, and frames a byte stream however it is cut.

const checkResult = (buf: Buffer, max = MAX) => {
  const r = boltCodec.decode(buf, max);
  if (r === NEED_MORE || r instanceof CodecError) return true;
  for (const name of ['service', 'method', 'version', 'group', 'x']) r.header(name);
  return r.raw.length === declaredLength(buf) && r.raw.length <= buf.length && r.raw.buffer === buf.buffer;
};

t.test('property: random bytes never throw and never mis-frame', async (t) => {
  const head = fc.oneof(fc.constant([1]), fc.constant([2, 1]), fc.constant([2, 2]), fc.constant([]));
  fc.assert(
    fc.property(head, fc.uint8Array({ maxLength: 120 }), fc.integer({ min: 0, max: 200 }), (h, bytes, max) => {
      const buf = Buffer.concat([Buffer.from(h), bytes]);
      return checkResult(buf) && checkResult(buf, max) && ['yes', 'no', 'need-more'].includes(boltCodec.match(buf));
    }),
    { numRuns: 5000 },
  );
  t.pass('5000 runs');
});

t.test('property: mutated real frames never throw and never mis-frame', async (t) => {
  const frame = fc.constantFrom(requestPlus, responsePlus, build({ proto: 2, ver1: 2, crc: true, headers: { a: 'b' } }));
  const edit = fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }));
  fc.assert(
    fc.property(frame, fc.array(edit, { minLength: 1, maxLength: 6 }), fc.nat({ max: 400 }), (f, edits, cut) => {
      const buf = Buffer.from(f);
      for (const [at, v] of edits) buf[at % buf.length] = v;
      const r = checkResult(buf) && checkResult(buf.subarray(0, cut));
      const frame = boltCodec.decode(buf, MAX);
      if (frame !== NEED_MORE && !(frame instanceof CodecError)) {
        boltCodec.setRequestId(frame.raw, 99);
        boltCodec.errorResponse(frame, 'no-route', 'x');
        if (frame.kind === 'request') boltCodec.heartbeatReply(frame);
      }
      return r;
    }),
    { numRuns: 5000 },
  );
  t.pass('5000 runs');
});

const arbFrame: fc.Arbitrary<Buffer> = fc
  .record({
    proto: fc.constantFrom(1 as const, 2 as const),
    ver1: fc.constantFrom(1, 2),
    crc: fc.boolean(),
    type: fc.constantFrom(0, 1, 2),
    cmd: fc.constantFrom(0, 1, 2),
    id: fc.nat(),
    timeout: fc.integer({ min: -1, max: 100000 }),
    status: fc.integer({ min: 0, max: 0x12 }),
    cls: fc.string({ maxLength: 20 }),
    headers: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
    body: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
  })
  .map(build);

/** What an engine does: append each chunk, take every complete frame off the front. */
function reframe(chunks: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let buf = Buffer.alloc(0);
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const r = boltCodec.decode(buf, MAX);
      if (r === NEED_MORE) break;
      if (r instanceof CodecError) throw r;
      out.push(r.raw);
      buf = buf.subarray(r.raw.length);
    }
  }
  if (buf.length) throw new Error(`${buf.length} bytes left over`);
  return out;
}

t.test('property: concatenated frames come back whole and in order, however split', async (t) => {
  fc.assert(
    fc.property(fc.array(arbFrame, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, cuts) => {
      const all = Buffer.concat(frames);
      const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
      const chunks = [0, ...points].map((p, i, a) => all.subarray(p, a[i + 1] ?? all.length));
      const got = reframe(chunks);
      return got.length === frames.length && got.every((g, i) => g.equals(frames[i]));
    }),
    { numRuns: 2000 },
  );
  const all = Buffer.concat([requestPlus, responsePlus, boltCodec.keepalive(3), build({ proto: 2, ver1: 2, crc: true })]);
  let ok = true;
  for (let i = 0; i <= all.length; i++) {
    const got = reframe([all.subarray(0, i), all.subarray(i)]);
    ok &&= got.length === 4 && Buffer.concat(got).equals(all);
  }
  t.ok(ok, `real frames split at each of ${all.length + 1} offsets`);
});
