/**
 * Codec fuzzer: every codec in the registry against random bytes, mutated real frames and frames split
 * at random offsets. A failure is a throw, a frame whose raw is longer than the input, or a decode (or a
 * header read) taking over 50 ms. Prints cases/s and failures per codec; exits 1 on any failure.
 *
 *   npm run fuzz                      # 1,000,000 cases per codec
 *   FUZZ_CASES=100000 FUZZ_SEED=42 npm run fuzz
 *   FUZZ_CODECS=hsf,dubbo npm run fuzz
 */
import { readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { type Codec, CodecError, type ErrorKind, type Frame, NEED_MORE, type RequestId } from '../protocols/codec.js';
import { codecs } from '../protocols/registry.js';
import { fixture } from './fixtures.js';

const CASES = Number(process.env.FUZZ_CASES ?? 1_000_000);
const SLOW_MS = 50;
const SAMPLES = 6;
const ONLY = process.env.FUZZ_CODECS?.split(',');

// xorshift32: fast, and a seed reproduces a run.
let state = (Number(process.env.FUZZ_SEED ?? Date.now()) >>> 0) || 1;
const seed = state;
const rnd = (): number => {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 4294967296;
};
const int = (n: number) => Math.floor(rnd() * n);
const pick = <T>(a: readonly T[]): T => a[int(a.length)]!;
const randomBytes = (n: number) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
};

const KINDS: ErrorKind[] = ['no-route', 'no-healthy-upstream', 'connect-failure', 'upstream-reset', 'timeout', 'overflow', 'frame-too-large', 'codec-error'];
const NAMES = ['service', 'method', 'version', 'group', 'interface', 'path', 'target_group', 'zone', 'dubbo', 'timeout', 'sofa_head_method_name', ''];
const LIMITS = [16, 64, 300, 4096, 1 << 20, 16 << 20, 2 ** 31 - 1];
const EXTREMES = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const BYTES = [0, 1, 0x7f, 0x80, 0xff, 0x4e, 0x5a, 0x43, 0x48, 0x52, 0x53];

/** The frames of test/fixtures/<codec>/*.bin, plus what the codec itself writes (keepalives, replies). */
function seedsOf(codec: Codec): Buffer[] {
  const seeds: Buffer[] = [];
  try {
    for (const f of readdirSync(fixture(codec.name)).filter((n) => n.endsWith('.bin')).sort()) seeds.push(readFileSync(fixture(codec.name, f)));
  } catch {
    // no fixtures: the codec's own frames below still seed it
  }
  const ka = codec.keepalive(7);
  seeds.push(ka);
  const hb = codec.decode(ka, 1 << 20);
  if (hb !== NEED_MORE && !(hb instanceof CodecError)) seeds.push(codec.heartbeatReply(hb));
  for (const s of [...seeds]) {
    const f = codec.decode(s, 1 << 20);
    if (f === NEED_MORE || f instanceof CodecError || f.kind !== 'request' || f.heartbeat) continue;
    const err = codec.errorResponse(f, 'no-route', 'fuzz seed');
    if (err) seeds.push(err);
  }
  return seeds;
}

/** One input: random bytes, a mutated seed, or a seed (or two) cut short. */
function input(seeds: Buffer[]): Buffer {
  const s = pick(seeds);
  switch (int(7)) {
    case 0: {
      // Random bytes, often behind a real frame's first bytes so they get past the magic.
      const head = rnd() < 0.7 ? s.subarray(0, 1 + int(Math.min(s.length, 12))) : Buffer.alloc(0);
      return Buffer.concat([head, randomBytes(int(200))]);
    }
    case 1: {
      const b = Buffer.from(s);
      for (let n = 1 + int(8); n > 0 && b.length > 0; n--) {
        const at = int(b.length);
        b[at] = b[at]! ^ (1 << int(8));
      }
      return b;
    }
    case 2: {
      const b = Buffer.from(s);
      for (let n = 1 + int(6); n > 0 && b.length > 0; n--) b[int(b.length)] = rnd() < 0.5 ? pick(BYTES) : int(256);
      return b;
    }
    case 3:
      return s.subarray(0, int(s.length + 1));
    case 4: {
      const at = int(s.length + 1);
      return Buffer.concat([s.subarray(0, at), randomBytes(1 + int(16)), s.subarray(at)]);
    }
    case 5: {
      // Length and count fields: every codec keeps them in its first 64 bytes.
      const b = Buffer.from(s);
      for (let n = 1 + int(3); n > 0; n--) {
        const at = int(Math.min(b.length, 64));
        const v = pick(EXTREMES);
        if (rnd() < 0.7 && at + 4 <= b.length) b.writeUInt32BE(v >>> 0, at);
        else if (at + 2 <= b.length) b.writeUInt16BE(v & 0xffff, at);
      }
      return b;
    }
    default: {
      // Two frames back to back, cut anywhere.
      const two = Buffer.concat([s, pick(seeds)]);
      return two.subarray(0, int(two.length + 1));
    }
  }
}

interface Report {
  cases: number;
  frames: number;
  needMore: number;
  malformed: number;
  tooLarge: number;
  failures: number;
  kinds: Map<string, number>;
  samples: string[];
}

/** Counts a failure, keeping a hex sample of the first few of each kind (its first two words). */
function fail(r: Report, why: string, buf: Buffer, max: number): void {
  r.failures++;
  const kind = why.split(' ').slice(0, 2).join(' ');
  const seen = (r.kinds.get(kind) ?? 0) + 1;
  r.kinds.set(kind, seen);
  if (seen <= 2 && r.samples.length < SAMPLES) r.samples.push(`${why} (limit ${max}, ${buf.length} bytes): ${buf.subarray(0, 96).toString('hex')}`);
}

const randomId = (): RequestId => (rnd() < 0.2 ? BigInt(int(2 ** 31)) * BigInt(int(2 ** 31)) : int(2 ** 32));

/** Everything the engine may do with a decoded frame. */
function useFrame(codec: Codec, f: Frame): void {
  const copy = Buffer.from(f.raw);
  codec.setRequestId(copy, randomId());
  if (f.kind === 'response') {
    codec.grpcStatus(f);
    return;
  }
  if (f.heartbeat) codec.heartbeatReply(f);
  else codec.errorResponse(f, pick(KINDS), 'fuzz');
}

/** How long reading every routing header takes, in ms. */
function headers(f: Frame, extra: string): number {
  const t0 = performance.now();
  for (const name of NAMES) f.header(name);
  f.header(extra);
  return performance.now() - t0;
}

/** Decodes `buf`, checking the outcome; returns the frame length consumed, or 0 to stop. */
function step(codec: Codec, r: Report, buf: Buffer, max: number): number {
  let t0 = performance.now();
  const out = codec.decode(buf, max);
  let took = performance.now() - t0;
  if (took > SLOW_MS) {
    // A GC pause is not the codec's: only a decode that is slow again counts.
    t0 = performance.now();
    codec.decode(buf, max);
    if (performance.now() - t0 > SLOW_MS) {
      fail(r, `decode took ${took.toFixed(1)} ms`, buf, max);
      return 0;
    }
  }
  if (out === NEED_MORE) {
    r.needMore++;
    return 0;
  }
  if (out instanceof CodecError) {
    if (out.reason === 'too-large') r.tooLarge++;
    else r.malformed++;
    if (out.request) codec.errorResponse(out.request, 'frame-too-large', out.message);
    return 0;
  }
  r.frames++;
  if (out.raw.length > buf.length || out.raw.length === 0) {
    fail(r, `frame of ${out.raw.length} bytes from ${buf.length}`, buf, max);
    return 0;
  }
  const extra = randomBytes(1 + int(10)).toString('latin1');
  took = headers(out, extra);
  // Slow twice (on a fresh frame, as headers are cached) or it was the scheduler, not the codec.
  if (took > SLOW_MS && headers(codec.decode(buf, max) as Frame, extra) > SLOW_MS) fail(r, `headers took ${took.toFixed(1)} ms`, buf, max);
  useFrame(codec, out);
  return out.raw.length;
}

function fuzz(codec: Codec): Report {
  const seeds = seedsOf(codec);
  const r: Report = { cases: 0, frames: 0, needMore: 0, malformed: 0, tooLarge: 0, failures: 0, kinds: new Map(), samples: [] };
  for (; r.cases < CASES; r.cases++) {
    const buf = input(seeds);
    const max = pick(LIMITS);
    try {
      const m = codec.match(buf);
      if (m !== 'yes' && m !== 'no' && m !== 'need-more') fail(r, `match said ${String(m)}`, buf, max);
      // Like the engine: take frames off the front until one is incomplete or bad.
      let rest = buf;
      for (let i = 0; i < 8 && rest.length > 0; i++) {
        const used = step(codec, r, rest, max);
        if (used === 0) break;
        rest = rest.subarray(used);
      }
    } catch (err) {
      fail(r, `threw ${(err as Error).stack?.split('\n').slice(0, 3).join(' | ')}`, buf, max);
    }
  }
  return r;
}

let failed = false;
console.log(`fuzz: ${CASES} cases per codec, seed ${seed} (FUZZ_SEED=${seed} reproduces this run)`);
for (const codec of codecs.filter((c) => !ONLY || ONLY.includes(c.name))) {
  const started = performance.now();
  const r = fuzz(codec);
  const secs = (performance.now() - started) / 1000;
  console.log(
    `${codec.name.padEnd(6)} ${r.cases} cases in ${secs.toFixed(1)} s = ${Math.round(r.cases / secs).toLocaleString('en-US')} cases/s; ` +
      `outcomes: ${r.frames} frames, ${r.needMore} need-more, ${r.malformed} malformed, ${r.tooLarge} too-large; failures: ${r.failures}` +
      (r.failures ? ` (${[...r.kinds].map(([k, n]) => `${n} ${k}`).join(', ')})` : ''),
  );
  for (const s of r.samples) console.log(`  ${s}`);
  failed ||= r.failures > 0;
}
process.exit(failed ? 1 : 0);
