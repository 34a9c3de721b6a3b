import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import t from 'tap';
import { CodecError, NEED_MORE, type ErrorKind, type Frame } from '../../protocols/codec.js';
import { dubboCodec } from '../../protocols/dubbo/index.js';
import { argumentCount } from '../../protocols/dubbo/frame.js';
import { readString } from '../../protocols/hessian/skip.js';
import { findCodec } from '../../protocols/registry.js';
import { fixture } from '../helpers/paths.js';

const MAX = 1 << 20;
const bin = (name: string) => readFileSync(fixture('dubbo', `${name}.bin`));

const decodeFrame = (buf: Buffer, max = MAX): Frame => {
  const r = dubboCodec.decode(buf, max);
  if (r === NEED_MORE || r instanceof CodecError) throw new Error(`expected a frame, got ${String(r)}`);
  return r;
};

/** Every frame in a buffer of frames back to back. */
function frames(buf: Buffer): Frame[] {
  const out: Frame[] = [];
  while (buf.length > 0) {
    const f = decodeFrame(buf);
    out.push(f);
    buf = buf.subarray(f.raw.length);
  }
  return out;
}

// ---- an independent hessian2 writer, from the Hessian 2.0 spec, for bodies the fixtures do not cover ----
const hStr = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  if (s.length < 32) return Buffer.concat([Buffer.from([s.length]), b]);
  return Buffer.concat([Buffer.from([0x53, s.length >> 8, s.length & 0xff]), b]);
};
const hInt = (n: number) => {
  const b = Buffer.alloc(5);
  b[0] = 0x49;
  b.writeInt32BE(n, 1);
  return b;
};
const hMap = (entries: [Buffer, Buffer][]) => Buffer.concat([Buffer.from([0x48]), ...entries.flat(), Buffer.from([0x5a])]);

interface Req {
  flag?: number;
  id?: bigint;
  path?: string;
  version?: string;
  method?: string;
  desc?: string;
  args?: Buffer[];
  attachments?: Record<string, Buffer>;
}

function request(r: Req = {}): Buffer {
  const body = Buffer.concat([
    hStr('2.0.2'),
    hStr(r.path ?? 'com.example.UserService'),
    hStr(r.version ?? '1.0.0'),
    hStr(r.method ?? 'getUser'),
    hStr(r.desc ?? 'Ljava/lang/String;'),
    ...(r.args ?? [hStr('42')]),
    hMap(Object.entries(r.attachments ?? {}).map(([k, v]) => [hStr(k), v])),
  ]);
  const head = Buffer.alloc(16);
  head.writeUInt16BE(0xdabb, 0);
  head[2] = r.flag ?? 0xc2;
  head.writeBigUInt64BE(r.id ?? 7n, 4);
  head.writeUInt32BE(body.length, 12);
  return Buffer.concat([head, body]);
}

t.test('registered, sniffed by its magic', async (t) => {
  t.equal(findCodec('dubbo'), dubboCodec);
  t.equal(dubboCodec.poolMode, 'multiplex');
  t.equal(dubboCodec.match(Buffer.from([0xda, 0xbb, 0xc2])), 'yes');
  t.equal(dubboCodec.match(Buffer.from([0xda])), 'need-more');
  t.equal(dubboCodec.match(Buffer.alloc(0)), 'need-more');
  t.equal(dubboCodec.match(Buffer.from([0xda, 0xbc])), 'no');
  t.equal(dubboCodec.match(Buffer.from('GET / HTTP/1.1')), 'no');
  t.equal(dubboCodec.match(bin('request-attachments')), 'yes');
});

t.test('a captured request: routing headers from the leading strings and the attachments', async (t) => {
  const f = decodeFrame(bin('request-attachments'));
  t.equal(f.raw.length, 228);
  t.equal(f.kind, 'request');
  t.equal(f.heartbeat, false);
  t.equal(f.requestId, 1);
  t.equal(f.status, undefined);
  t.equal(f.timeoutMs, 1000, 'the timeout attachment is a hessian int from this client');
  t.equal(f.header('service'), 'com.example.UserService');
  t.equal(f.header('interface'), 'com.example.UserService');
  t.equal(f.header('method'), 'getUser');
  t.equal(f.header('version'), '1.0.0');
  t.equal(f.header('group'), undefined);
  t.equal(f.header('x-tenant'), 'acme');
  t.equal(f.header('x-trace-id'), 'trace-0001');
  t.equal(f.header('application'), 'dubbo-js');
  t.equal(f.header('nope'), undefined);
});

t.test('group, dubbo2.js and the primitive-descriptor capture', async (t) => {
  const g = decodeFrame(bin('request-group-admin'));
  t.equal(g.header('group'), 'admin');
  t.equal(g.header('service'), 'com.example.RoleService');
  t.equal(g.timeoutMs, 3000);
  t.equal(g.requestId, 101);
  const d = decodeFrame(bin('request-dubbo2js'));
  t.equal(d.header('method'), 'getUser');
  t.equal(d.header('application'), 'dubbo2.js');
  // Java counts I as one argument (the npm provider miscounts it): the attachments are still found.
  const p = decodeFrame(bin('request-primitive-I-String'));
  t.equal(p.header('method'), 'echoAttachments');
  t.equal(p.header('x-k'), 'v');
  t.equal(p.timeoutMs, 2000);
});

t.test('descriptor argument counts', async (t) => {
  t.equal(argumentCount(''), 0);
  t.equal(argumentCount('Ljava/lang/String;'), 1);
  t.equal(argumentCount('Ljava/lang/String;I[J'), 3);
  t.equal(argumentCount('[[Ljava/lang/Object;ZB'), 3);
  t.equal(argumentCount('Ljava/lang/String'), -1, 'an unterminated class name');
  t.equal(argumentCount('Q'), -1);
});

t.test('attachments after arguments of every shape (objects with class definitions, lists, maps)', async (t) => {
  // class def C "com.x.User" 2 fields [name, age], object 0x60 "bob" 30, then another object of the same class
  const classDef = Buffer.concat([Buffer.from([0x43]), hStr('com.x.User'), Buffer.from([0x92]), hStr('name'), hStr('age')]);
  const obj = Buffer.concat([classDef, Buffer.from([0x60]), hStr('bob'), Buffer.from([0x90 + 30])]);
  const obj2 = Buffer.concat([Buffer.from([0x60]), hStr('amy'), Buffer.from([0x90 + 31])]);
  const list = Buffer.concat([Buffer.from([0x7a]), hInt(1), hInt(2)]); // fixed untyped list of 2
  const map = hMap([[hStr('k'), hStr('v'.repeat(40))]]);
  const f = decodeFrame(request({
    desc: 'Lcom/x/User;Lcom/x/User;Ljava/util/List;Ljava/util/Map;J',
    args: [obj, obj2, list, map, Buffer.from([0xe0])],
    attachments: { group: hStr('blue'), timeout: hStr('250'), interface: hStr('com.x.Iface'), 'x-n': hInt(-5), 'x-bool': Buffer.from([0x54]), 'x-obj': map },
  }));
  t.equal(f.header('group'), 'blue');
  t.equal(f.timeoutMs, 250, 'a string timeout, as Java 2.6 sends it');
  t.equal(f.header('interface'), 'com.x.Iface', 'interface is the attachment when present');
  t.equal(f.header('service'), 'com.example.UserService', 'service stays the path');
  t.equal(f.header('x-n'), '-5');
  t.equal(f.header('x-bool'), 'true');
  t.equal(f.header('x-obj'), undefined, 'a map value is not a routing string');
});

t.test('a body that lies is not routed on, and never throws', async (t) => {
  const broken = request({ desc: 'Ljava/lang/String;Ljava/lang/String;', args: [hStr('only one')] });
  const f = decodeFrame(broken);
  t.equal(f.header('method'), 'getUser', 'the leading strings are still read');
  t.equal(f.header('group'), undefined);
  t.equal(f.timeoutMs, undefined);
  const garbage = request({ args: [Buffer.from([0xff, 0xff])] });
  garbage[16] = 0x7f; // the dubbo version is no longer a string
  t.equal(decodeFrame(garbage).header('service'), undefined);
});

t.test('another serialization: framed and forwarded, no headers', async (t) => {
  const f = decodeFrame(request({ flag: 0xc6 })); // id 6 (fastjson)
  t.equal(f.kind, 'request');
  t.equal(f.header('service'), undefined);
  t.equal(f.header('method'), undefined);
  t.equal(f.timeoutMs, undefined);
});

t.test('heartbeats, oneway and responses', async (t) => {
  const hb = decodeFrame(bin('heartbeat-request'));
  t.ok(hb.heartbeat);
  t.equal(hb.kind, 'request');
  t.equal(hb.header('service'), undefined);
  const reply = decodeFrame(dubboCodec.heartbeatReply(decodeFrame(bin('synthetic-heartbeat-request-id777'))));
  t.equal(reply.raw[2], 0x22, 'event | hessian2, as Java answers');
  t.equal(reply.status, 20);
  t.equal(reply.requestId, 777, 'the caller’s own id');
  t.same([...reply.raw.subarray(12)], [0, 0, 0, 1, 0x4e]);
  // The npm provider answers with id 0 and status 0: still a healthy heartbeat.
  const npm = decodeFrame(bin('heartbeat-response'));
  t.ok(npm.heartbeat);
  t.equal(npm.kind, 'response');
  t.ok(npm.ok);
  const ka = decodeFrame(dubboCodec.keepalive(99));
  t.ok(ka.heartbeat);
  t.equal(ka.kind, 'request');
  t.equal(ka.raw[2], 0xe2);
  t.equal(ka.requestId, 99);
  const ow = decodeFrame(bin('synthetic-oneway-request'));
  t.equal(ow.kind, 'oneway');
  t.equal(dubboCodec.errorResponse(ow, 'no-route', 'x'), null, 'oneway is never answered');
  const notFound = decodeFrame(bin('response-status60-service-not-found'));
  t.equal(notFound.status, 60);
  t.notOk(notFound.ok);
  const fine = decodeFrame(bin('response-ok-value-attachments'));
  t.ok(fine.ok);
  t.equal(fine.header('service'), undefined, 'responses carry no routing headers');
});

t.test('coalesced frames and frames split at every offset', async (t) => {
  t.same(frames(bin('requests-coalesced-4')).map((f) => f.requestId), [2, 3, 4, 5]);
  t.same(frames(bin('responses-coalesced-4')).map((f) => f.requestId), [2, 3, 4, 5]);
  for (const name of ['request-attachments', 'response-exception', 'heartbeat-request']) {
    const whole = bin(name);
    for (let i = 0; i < whole.length; i++) {
      if (dubboCodec.decode(whole.subarray(0, i), MAX) !== NEED_MORE) t.fail(`${name}: a frame from ${i} bytes`);
    }
    t.equal(decodeFrame(whole).raw.length, whole.length);
  }
});

t.test('ids: 64 bits from callers, patched in place', async (t) => {
  const big = request({ id: 0x1234_5678_9abc_def0n });
  const f = decodeFrame(big);
  t.equal(f.requestId, 0x1234_5678_9abc_def0n, 'ids past 32 bits stay exact');
  dubboCodec.setRequestId(f.raw, 5);
  t.equal(big.readBigUInt64BE(4), 5n, 'patched in the caller’s buffer, no copy');
  dubboCodec.setRequestId(f.raw, 0xffff_ffff);
  t.equal(decodeFrame(big).requestId, 0xffff_ffff);
  dubboCodec.setRequestId(f.raw, f.requestId);
  t.equal(big.readBigUInt64BE(4), 0x1234_5678_9abc_def0n);
  t.equal(decodeFrame(big).header('method'), 'getUser', 'the body is untouched');
});

t.test('native errors: the status per reason and the reason as a hessian2 string', async (t) => {
  const req = decodeFrame(request({ id: 0xfedc_ba98_7654_3210n }));
  const want: Record<ErrorKind, number> = {
    'no-route': 60, 'no-healthy-upstream': 80, 'connect-failure': 80, 'upstream-reset': 80,
    timeout: 31, overflow: 100, 'frame-too-large': 40, 'codec-error': 40,
  };
  for (const [kind, status] of Object.entries(want) as [ErrorKind, number][]) {
    const raw = dubboCodec.errorResponse(req, kind, `because ${'é'.repeat(40)}`)!;
    const r = decodeFrame(raw);
    t.equal(r.kind, 'response');
    t.equal(r.status, status, kind);
    t.notOk(r.ok);
    t.equal(r.raw[2], 0x02, 'a response (no request bit), hessian2');
    t.equal(r.requestId, 0xfedc_ba98_7654_3210n);
    const text = readString(raw, 16, raw.length, { pos: 0 });
    t.equal(text, `xsidecar ${kind}: because ${'é'.repeat(40)}`);
  }
  t.equal(dubboCodec.errorResponse(decodeFrame(bin('heartbeat-request')), 'timeout', 'x'), null);
});

t.test('bad frames: clear errors, and an oversized request still answerable', async (t) => {
  const wrongMagic = dubboCodec.decode(Buffer.from('dabc0000', 'hex'), MAX);
  t.ok(wrongMagic instanceof CodecError && wrongMagic.reason === 'malformed');
  const negative = Buffer.from(bin('request-attachments'));
  negative.writeInt32BE(-1, 12);
  const n = dubboCodec.decode(negative, MAX);
  t.ok(n instanceof CodecError && n.reason === 'malformed' && /body length/.test(n.message));
  const huge = Buffer.from(bin('request-attachments').subarray(0, 16));
  huge.writeUInt32BE(0x7fff_ffff, 12);
  const big = dubboCodec.decode(huge, MAX);
  t.ok(big instanceof CodecError && big.reason === 'too-large');
  const answer = (big as CodecError).request!;
  t.equal(answer.requestId, 1);
  t.equal(decodeFrame(dubboCodec.errorResponse(answer, 'frame-too-large', 'too big')!).status, 40);
});

t.test('property: random and mutated bytes never throw, frames never overrun the input', async (t) => {
  const seeds = ['request-attachments', 'request-group-admin', 'response-exception', 'heartbeat-request', 'synthetic-oneway-request'].map(bin);
  const check = (buf: Buffer) => {
    const r = dubboCodec.decode(buf, 4096);
    if (r === NEED_MORE || r instanceof CodecError) return true;
    if (r.raw.length > buf.length) return false;
    for (const h of ['service', 'method', 'version', 'group', 'interface', 'x-tenant', 'timeout']) r.header(h);
    void r.timeoutMs;
    dubboCodec.errorResponse(r, 'timeout', 'x');
    return true;
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (a) => check(Buffer.from(a))), { numRuns: 3000 });
  fc.assert(
    fc.property(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), (i, edits) => {
      const buf = Buffer.from(seeds[i]!);
      for (const [at, v] of edits) buf[16 + (at % Math.max(1, buf.length - 16))] = v; // keep the header: reach the body readers
      return check(buf);
    }),
    { numRuns: 5000 },
  );
  t.pass('8,000 cases');
});
