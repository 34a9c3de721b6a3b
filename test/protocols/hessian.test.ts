/**
 * The shared Hessian 2.0 skipper against an independent encoder (hessian.js, as Node RPC peers use it) and
 * hand-written bytes for the forms hessian.js does not emit; then hostile input.
 */
import { createRequire } from 'node:module';
import fc from 'fast-check';
import t from 'tap';
import { BAD, MAX_DEPTH, type ClassTable, readScalar, readString, readStringMap, skipValue, stringBounds } from '../../protocols/hessian/skip.js';

interface Encoder {
  write(value: unknown): Encoder;
  get(): Buffer;
}
const hessian = createRequire(import.meta.url)('hessian.js') as { encode(value: unknown, version: '2.0'): Buffer; EncoderV2: new () => Encoder };
const enc = (v: unknown) => hessian.encode(v, '2.0');
const java = ($class: string, $: unknown) => ({ $class, $ });
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Where a value of `b` ends, the whole buffer being the message. */
const skip = (b: Buffer, classes: ClassTable = []) => skipValue(b, 0, b.length, classes);

const ints = [0, 1, -16, 47, 48, -17, 2047, -2048, 2048, -2049, 262143, -262144, 262144, -262145, 2 ** 31 - 1, -(2 ** 31)];
const longs = [0, -8, 15, 16, -9, 2047, -2048, 2048, 262143, -262144, 262144, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 53 - 1, -(2 ** 53)];
const doubles = [0, 1, 1.5, 2.5, -128, 127, 32767, -32768, 0.1, 3.14159, 1e300, -1e-300, Number.MAX_VALUE];
const strings = ['', 'a', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(1023), 'x'.repeat(1024), 'x'.repeat(32768), 'x'.repeat(32769),
  'y'.repeat(70000), 'héllo wörld', '中文字符', '😀', 'a😀b'.repeat(20000), '\u0000\u007f\u0080\u07ff\u0800\uffff'];
const binaries = [0, 1, 15, 16, 1023, 1024, 4093, 4094, 32768, 70000].map((n) => Buffer.alloc(n, 0xab));
const point = (x: number, y: number) => java('com.acme.Point', { x, y });
const shape = (name: string) => java('com.acme.Shape', { name, corners: [point(0, 0), point(1, 1)], tags: { a: 'b' }, when: new Date(1700000000000) });
const shared = point(7, 7);

const values: [string, unknown][] = [
  ['null', null], ['true', true], ['false', false],
  ...ints.map((n): [string, unknown] => [`int ${n}`, n]),
  ...longs.map((n): [string, unknown] => [`long ${n}`, java('long', n)]),
  ...doubles.map((n): [string, unknown] => [`double ${n}`, java('double', n)]),
  ...doubles.map((n): [string, unknown] => [`number ${n}`, n]),
  ...strings.map((s): [string, unknown] => [`string of ${s.length}`, s]),
  ...binaries.map((b): [string, unknown] => [`binary of ${b.length}`, b]),
  ['date ms', new Date(1700000000123)], ['date minutes', new Date(0)], ['date far', new Date(-1e13)],
  ['list', [1, 'two', 3.5, null, [true]]], ['empty list', []], ['long list', Array.from({ length: 300 }, (_, i) => i)],
  ['typed list', java('java.util.ArrayList', [1, 2, 3])], ['int array', java('[int', [1, 2])], ['string array', java('[java.lang.String', ['a', 'b'])],
  ['map', { a: 1, b: 'x', c: { d: [1, 2] } }], ['empty map', {}], ['Map', new Map<unknown, unknown>([[1, 'one'], ['k', [2]]])],
  ['typed map', java('java.util.HashMap', { a: 1 })],
  ['object', point(1, 2)], ['nested objects, one class', shape('sq')], ['objects of one class in a list', [shape('a'), shape('b'), point(3, 4)]],
  ['references', [shared, shared, { again: shared }]], ['enum-ish', java('com.acme.Color', { name: 'RED' })],
  ['object with a long field', java('com.acme.Account', { id: java('long', 2 ** 40), balance: java('double', 1.25), owner: null })],
];

t.test('skipValue steps exactly over what hessian.js writes', async (t) => {
  for (const [what, v] of values) {
    const b = enc(v);
    t.equal(skip(b), b.length, `${what} (${b.length} bytes)`);
  }
});

t.test('values concatenated in one message share one class table', async (t) => {
  const e = new hessian.EncoderV2();
  const parts = [point(1, 2), 'between', shape('a'), [point(5, 6), shape('b')], java('com.acme.Other', { p: point(0, 1) }), shared, { s: shared }];
  const ends: number[] = [];
  for (const p of parts) ends.push(e.write(p).get().length);
  const b = e.get();
  t.ok(b.includes(Buffer.from([0x60])) && b.indexOf('com.acme.Point') === b.lastIndexOf('com.acme.Point'), 'one class definition, reused');
  const classes: ClassTable = [];
  let pos = 0;
  const got: number[] = [];
  for (let i = 0; i < parts.length; i++) got.push((pos = skipValue(b, pos, b.length, classes)));
  t.same(got, ends, 'each value ends where the encoder left off');
  t.same(classes, [2, 4, 1], 'Point, Shape and Other, each defined once');
  t.equal(skipValue(b, ends[1]!, b.length, []), BAD, 'a later value alone does not know the classes defined before it');
});

// Hand-written: the forms hessian.js does not emit.
const hand: [string, string][] = [
  ['V typed fixed list', '56 04 5b696e74 92 91 92'],
  ['V with a type reference', '56 90 92 91 92'],
  ['X untyped fixed list', '58 93 91 03616263 4e'],
  ['X with a full int count', '58 49 00000002 91 92'],
  ['0x70 typed compact list of 0', '70 04 5b696e74'],
  ['0x73 typed compact list', '73 04 5b696e74 91 92 93'],
  ['0x7f untyped compact list of 7', '7f 91 92 93 94 95 96 97'],
  ['U typed variable list', '55 04 5b696e74 91 92 5a'],
  ['W untyped variable list', '57 91 5a'],
  ['R chunks, final S', '52 0002 6162 52 0001 63 53 0001 64'],
  ['R chunk, final short string', '52 0002 6162 01 63'],
  ['R chunk, final empty string', '52 0002 6162 00'],
  ['R chunk, final medium string', '52 0001 61 30 02 6263'],
  ['R chunk of a surrogate pair', '52 0002 f09f9880 00'],
  ['A chunk, final B', '41 0002 abcd 42 0001 ef'],
  ['A chunk, final short binary', '41 0002 abcd 21 ef'],
  ['A chunk, final empty binary', '41 0002 abcd 20'],
  ['A chunk, final medium binary', '41 0001 ab 34 02 cdef'],
  ['double 0.0', '5b'], ['double 1.0', '5c'], ['double as byte', '5d 80'], ['double as short', '5e 8000'], ['double as float', '5f 3f800000'],
  ['double', '44 400921f9f01b866e'],
  ['date in minutes', '4b 01b23c41'], ['date in ms', '4a 0000018bcfe56800'],
  ['long, three bytes (0x38)', '38 0000'], ['long, three bytes (0x3f)', '3f ffff'], ['long, one byte', 'e0'], ['long, two bytes', 'f8 00'],
  ['long as int', '59 80000000'], ['long', '4c 8000000000000000'],
  ['int, full', '49 7fffffff'], ['int, three bytes', 'd0 0000'], ['int, two bytes', 'cf ff'],
  ['medium string', '30 03 616263'], ['S string', '53 0003 616263'],
  ['medium binary', '37 ff ' + 'ab'.repeat(0x3ff)], ['B binary', '42 0003 010203'],
  ['typed map with a type reference', '4d 90 91 92 5a'],
  ['O object, int class reference', '43 01 50 91 01 78 4f 90 95'],
  ['class definition then a compact object', '43 01 50 92 01 78 01 79 60 91 92'],
  ['reference', '51 90'], ['reference, full int', '51 49 00000100'],
];

t.test('hand-written forms', async (t) => {
  for (const [what, h] of hand) {
    const b = hex(h);
    t.equal(skip(b), b.length, what);
  }
  // A reference after the class definitions of the message: 'O' refers by index.
  const two = hex('43 01 41 91 01 61 60 90  43 01 42 90 61  4f 91  4f 90 90');
  const classes: ClassTable = [];
  let pos = 0;
  const ends = [];
  for (let i = 0; i < 4; i++) ends.push((pos = skipValue(two, pos, two.length, classes)));
  t.same(ends, [8, 13, 15, 18], 'objects by index in a shared table');
  t.same(classes, [1, 0]);
});

t.test('the string readers', async (t) => {
  const next = { pos: 0 };
  for (const s of strings) {
    const b = Buffer.concat([enc(s), Buffer.from([0x91])]);
    t.equal(readString(b, 0, b.length, next), s, `readString of ${s.length} characters`);
    t.equal(next.pos, b.length - 1);
  }
  t.equal(readString(hex('52 0002 6162 01 63'), 0, 7, next), 'abc', 'a chunked string with a short final chunk');
  t.equal(readString(hex('4e'), 0, 1, next), null);
  t.equal(readString(hex('91'), 0, 1, next), undefined);
  t.same(stringBounds(hex('03 616263'), 0, 4), { start: 1, end: 4 });
  t.equal(stringBounds(hex('03 6162'), 0, 3), undefined, 'cut short');
  t.equal(readScalar(enc(java('long', 2 ** 40)), 0, 9, next), String(2 ** 40));
  t.equal(readScalar(hex('4c ffffffffffffffff'), 0, 9, next), '-1');
  t.equal(readScalar(enc(-262144), 0, 3, next), '-262144');
  t.equal(readScalar(enc(true), 0, 1, next), 'true');
  t.equal(readScalar(enc(1.5), 0, 5, next), undefined, 'doubles are no routing text');
  const m = enc({ group: 'blue', n: 7, big: java('long', 2 ** 35), ok: false, none: null, nested: { group: 'no' }, list: [1], tail: 'end' });
  t.same(Object.fromEntries(readStringMap(m, 0, m.length)!), { group: 'blue', n: '7', big: String(2 ** 35), ok: 'false', tail: 'end' });
  const typed = enc(java('java.util.HashMap', { k: 'v' }));
  t.same([...readStringMap(typed, 0, typed.length)!], [['k', 'v']], 'a typed map');
  t.equal(readStringMap(m, 0, m.length - 1), undefined, 'an unterminated map');
  t.equal(readStringMap(hex('91'), 0, 1), undefined, 'not a map');
});

t.test('truncation at every offset is BAD, never a throw or a shorter value', async (t) => {
  const all = [...values.map(([what, v]): [string, Buffer] => [what, enc(v)]), ...hand.map(([what, h]): [string, Buffer] => [what, hex(h)])];
  for (const [what, b] of all) {
    // Long values: every offset near both ends, a sample in between (each try walks the whole value).
    const cuts = Array.from({ length: b.length }, (_, i) => i).filter((i) => b.length < 5000 || i < 64 || i >= b.length - 64 || i % 997 === 0);
    let ok = true;
    for (const cut of cuts) {
      ok &&= skipValue(b, 0, cut) === BAD && skipValue(b.subarray(0, cut), 0, cut) === BAD;
    }
    t.ok(ok, `${what}: every proper prefix of ${b.length} bytes`);
  }
});

t.test('hostile input', async (t) => {
  for (const tag of [0x40, 0x45, 0x47, 0x50, 0x5a, 0x4f]) t.equal(skip(Buffer.from([tag, 0x90, 0x90])), BAD, `tag 0x${tag.toString(16)}`);
  t.equal(skip(Buffer.alloc(0)), BAD, 'nothing');
  t.equal(skipValue(hex('91'), 1, 1), BAD, 'at the end');
  t.equal(skipValue(hex('91 91'), 0, 1), 1, 'never past end');

  const nested = (n: number) => Buffer.concat([Buffer.alloc(n, 0x57), Buffer.from([0x4e]), Buffer.alloc(n, 0x5a)]);
  t.equal(skip(nested(MAX_DEPTH)), MAX_DEPTH * 2 + 1, `${MAX_DEPTH} nested lists are fine`);
  t.equal(skip(nested(MAX_DEPTH + 1)), BAD, 'one more is not');
  t.equal(skip(nested(100_000)), BAD, 'deep nesting ends without a stack overflow');
  const maps = Buffer.concat([Buffer.alloc(50_000, 0x48), Buffer.from([0x4e])]);
  t.equal(skip(maps), BAD, 'nested maps too');
  const defs = Buffer.concat([Buffer.from('430090'.repeat(200_000), 'hex'), Buffer.from([0x60])]);
  const defined: ClassTable = [];
  t.equal(skip(defs, defined), defs.length, 'a chain of 200,000 class definitions, then an object: stepped over without recursing');
  t.equal(defined.length, 200_000);
  t.equal(skip(defs.subarray(0, -1)), BAD, 'and without its object');
  const objects = Buffer.concat([hex('43 00 91 00'), Buffer.alloc(100_000, 0x60), Buffer.from([0x4e])]);
  t.equal(skip(objects), BAD, 'objects whose field is an object whose field...');

  t.equal(skip(hex('57 91 92')), BAD, 'unterminated W');
  t.equal(skip(hex('55 00 91')), BAD, 'unterminated U');
  t.equal(skip(hex('48 01 61 91')), BAD, 'unterminated H');
  t.equal(skip(hex('48 01 61')), BAD, 'a key without a value');
  t.equal(skip(hex('58 49 7fffffff 91')), BAD, 'X count beyond the buffer');
  t.equal(skip(hex('58 49 ffffffff')), BAD, 'a negative count');
  t.equal(skip(hex('56 00 d5 0000 91')), BAD, 'V count beyond the buffer');
  t.equal(skip(hex('7f 91 92')), BAD, 'a compact list with fewer items');
  t.equal(skip(hex('43 01 50 49 7fffffff 60')), BAD, 'a class with more fields than bytes');
  t.equal(skip(hex('43 01 50 91 01 78 61 91')), BAD, 'an object of an undefined class');
  t.equal(skip(hex('4f 49 7fffffff 91')), BAD, 'a class reference out of range');
  t.equal(skip(hex('4f 4e')), BAD, 'a class reference that is no int');
  t.equal(skip(hex('53 ffff 61')), BAD, 'a string longer than the buffer');
  t.equal(skip(hex('52 0001 61 91')), BAD, 'a chunked string ending in a non-string');
  t.equal(skip(hex('41 0001 61 30 01 62')), BAD, 'a chunked binary ending in a string');
  t.equal(skip(hex('02 f0 9f')), BAD, 'a surrogate pair cut short');
  t.equal(skip(hex('01 f09f9880')), BAD, 'a surrogate pair is two characters, not one');
  t.equal(skip(hex('56 91')), BAD, 'a type then nothing');
  t.equal(skip(hex('4d 91')), BAD, 'a typed map with no end');
});

t.test('property: random bytes never throw; BAD or an end within (pos, end]', async (t) => {
  const tagged = fc.tuple(fc.constantFrom(0x43, 0x48, 0x4d, 0x4f, 0x52, 0x41, 0x55, 0x56, 0x57, 0x58, 0x60, 0x70, 0x7a), fc.uint8Array({ maxLength: 200 }))
    .map(([tag, rest]) => Buffer.concat([Buffer.from([tag]), rest]));
  const bytes = fc.oneof(fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), tagged);
  fc.assert(
    fc.property(bytes, fc.nat(), fc.nat(), (b, p, e) => {
      const end = b.length === 0 ? 0 : e % (b.length + 1);
      const pos = end === 0 ? 0 : p % end;
      const classes: ClassTable = [];
      let at = pos;
      // Step over values until one is BAD: each step must move forward and stay within end.
      for (;;) {
        const next = skipValue(b, at, end, classes);
        if (next === BAD) break;
        if (!(next > at && next <= end)) return false;
        at = next;
      }
      readStringMap(b, pos, end);
      readScalar(b, pos, end, { pos: 0 });
      return true;
    }),
    { numRuns: 20000 },
  );
  t.pass('20000 runs');
});

t.test('property: mutated encodings never throw', async (t) => {
  const seeds = values.map(([, v]) => enc(v)).filter((b) => b.length < 2000);
  fc.assert(
    fc.property(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (seed, edits) => {
      const b = Buffer.from(seed);
      for (const [at, v] of edits) b[at % b.length] = v;
      const r = skipValue(b, 0, b.length);
      return r === BAD || (r > 0 && r <= b.length);
    }),
    { numRuns: 20000 },
  );
  t.pass('20000 runs');
});
