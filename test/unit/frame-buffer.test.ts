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

t.test('a large frame arriving in reads is gathered in one buffer of its declared length', async (t) => {
  const big = bigRequest(3 * 1024 * 1024);
  t.equal(boltCodec.frameLength!(big.subarray(0, 21)), -1, 'unknown before the lengths are there');
  t.equal(boltCodec.frameLength!(big.subarray(0, 22)), big.length, 'declared once they are');
  for (const frameLength of [boltCodec.frameLength, undefined]) {
    const fb = new FrameBuffer(frameLength);
    let frame: Buffer | undefined;
    const sizes = new Set<number>();
    for (let at = 0; at < big.length; at += 65536) {
      const buf = fb.append(Buffer.from(big.subarray(at, at + 65536)));
      sizes.add(fb.retained);
      const f = boltCodec.decode(buf, 1 << 30);
      if (f !== NEED_MORE && !(f instanceof Error)) frame = f.raw;
    }
    t.ok(frame?.equals(big), 'the frame comes out whole');
    if (frameLength) t.same([...sizes].filter((n) => n > 65536), [big.length], 'one buffer, exactly the frame\'s size');
    else t.ok([...sizes].filter((n) => n > 65536).length > 3, 'without the codec\'s length: a doubling series');
  }
});

t.test('Dubbo declares its length in the 16-byte header', async (t) => {
  for (const name of ['request-attachments.bin', 'response-ok-value-attachments.bin']) {
    const frame = readFileSync(fixture('dubbo', name));
    t.equal(dubboCodec.frameLength!(frame.subarray(0, 15)), -1, `${name}: unknown before the header is whole`);
    t.equal(dubboCodec.frameLength!(frame.subarray(0, 16)), frame.length, `${name}: its length from the header`);
  }
});
