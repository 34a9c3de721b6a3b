import { readFileSync } from 'node:fs';
import t from 'tap';
import { boltCodec } from '../../protocols/bolt/index.js';
import { dubboCodec } from '../../protocols/dubbo/index.js';
import { NEED_MORE } from '../../protocols/codec.js';
import { FrameBuffer } from '../../src/proxy/xprotocol/frame-buffer.js';
import { fixture } from '../helpers/paths.js';

const request = readFileSync(fixture('bolt', 'request-plus.bin'));
const response = readFileSync(fixture('bolt', 'response-plus.bin'));

t.test('frames split anywhere come out whole, and stay intact as more bytes arrive', async (t) => {
  const frames = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? response : request));
  const stream = Buffer.concat(frames);
  for (const [maxChunk, frameLength] of [1, 7, 64, 300, 5000].flatMap((n) => [[n, undefined], [n, boltCodec.frameLength]] as const)) {
    const fb = new FrameBuffer(frameLength);
    const out: Buffer[] = [];
    let seed = maxChunk;
    for (let at = 0; at < stream.length; ) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const n = Math.min(stream.length - at, 1 + (seed % maxChunk));
      let buf = fb.append(Buffer.from(stream.subarray(at, at + n))); // a fresh buffer, as a socket read gives
      at += n;
      for (;;) {
        const f = boltCodec.decode(buf, 1 << 20);
        if (f === NEED_MORE || f instanceof Error) break;
        out.push(f.raw);
        buf = buf.subarray(f.raw.length);
        fb.consume(f.raw.length);
      }
    }
    t.equal(out.length, frames.length, `all frames decoded with chunks up to ${maxChunk} bytes${frameLength ? ', growing to declared lengths' : ''}`);
    t.ok(out.every((raw, i) => raw.equals(frames[i]!)), 'every frame handed out still holds its own bytes');
  }
});

t.test('a chunk that holds whole frames is used in place', async (t) => {
  const fb = new FrameBuffer();
  const chunk = Buffer.concat([request, response]);
  t.equal(fb.append(chunk), chunk, 'no copy');
});

/** The Bolt v1 request of the fixture with `extra` more bytes of content (the content is the frame's tail). */
function bigRequest(extra: number): Buffer {
  const big = Buffer.concat([request, Buffer.alloc(extra, 7)]);
  big.writeInt32BE(request.readInt32BE(18) + extra, 18);
  return big;
}

t.test('a large frame arriving in reads grows toward its declared length and ends in a buffer of its size', async (t) => {
  const big = bigRequest(3 * 1024 * 1024);
  t.equal(boltCodec.frameLength!(big.subarray(0, 21)), -1, 'unknown before the lengths are there');
  t.equal(boltCodec.frameLength!(big.subarray(0, 22)), big.length, 'declared once they are');
  const grow = (frameLength?: (b: Buffer) => number) => {
    const fb = new FrameBuffer(frameLength);
    let frame: Buffer | undefined;
    const sizes: number[] = [];
    for (let at = 0; at < big.length; at += 65536) {
      const buf = fb.append(Buffer.from(big.subarray(at, at + 65536)));
      if (fb.retained !== sizes.at(-1)) sizes.push(fb.retained);
      const f = boltCodec.decode(buf, 1 << 30);
      if (f !== NEED_MORE && !(f instanceof Error)) frame = f.raw;
    }
    return { frame, sizes };
  };
  const declared = grow(boltCodec.frameLength);
  t.ok(declared.frame?.equals(big), 'the frame comes out whole');
  t.equal(declared.sizes.at(-1), big.length, 'its last buffer is exactly the frame\'s size');
  t.ok(declared.sizes.length <= 6, `few buffers on the way (${declared.sizes.join(', ')})`);
  const doubling = grow();
  t.ok(doubling.frame?.equals(big), 'without the codec\'s length it comes out whole too');
  t.ok(doubling.sizes.at(-1)! > big.length && doubling.sizes.length > declared.sizes.length, `by doubling, past its size (${doubling.sizes.join(', ')})`);
});

t.test('a chunk that completes a large frame and begins the next is held in exactly what it needs', async (t) => {
  const big = bigRequest(1024 * 1024);
  const fb = new FrameBuffer(boltCodec.frameLength);
  fb.append(Buffer.from(big.subarray(0, 600_000)));
  fb.append(Buffer.from(big.subarray(600_000, 700_000)));
  const rest = Buffer.concat([big.subarray(700_000), request.subarray(0, 10)]);
  const buf = fb.append(rest);
  t.equal(fb.retained, big.length + 10, 'the frame plus the next one\'s first bytes, not twice the frame');
  const f = boltCodec.decode(buf, 1 << 30);
  t.ok(f !== NEED_MORE && !(f instanceof Error) && f.raw.equals(big), 'the frame decodes');
});

t.test('a few header bytes do not reserve the whole declared frame', async (t) => {
  const big = bigRequest(30 * 1024 * 1024);
  const fb = new FrameBuffer(boltCodec.frameLength);
  fb.append(Buffer.from(big.subarray(0, 30)));
  fb.append(Buffer.from(big.subarray(30, 31)));
  t.ok(fb.retained <= 4096, `${fb.retained} bytes held for 31 received of a ${big.length}-byte frame`);
});

t.test('Bolt declares a request\'s and a response\'s length in its fixed header', async (t) => {
  for (const [name, frame] of [['request', request], ['response', response]] as const) {
    const fixed = name === 'request' ? 22 : 20;
    for (let n = 1; n < fixed; n++) t.equal(boltCodec.frameLength!(frame.subarray(0, n)), -1, `${name}: unknown with ${n} bytes`);
    t.equal(boltCodec.frameLength!(frame.subarray(0, fixed)), frame.length, `${name}: its length once the fixed header is there`);
  }
});

t.test('Dubbo declares its length in the 16-byte header', async (t) => {
  for (const name of ['request-attachments.bin', 'response-ok-value-attachments.bin']) {
    const frame = readFileSync(fixture('dubbo', name));
    t.equal(dubboCodec.frameLength!(frame.subarray(0, 15)), -1, `${name}: unknown before the header is whole`);
    t.equal(dubboCodec.frameLength!(frame.subarray(0, 16)), frame.length, `${name}: its length from the header`);
  }
});
