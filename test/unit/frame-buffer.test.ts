import { readFileSync } from 'node:fs';
import t from 'tap';
import { boltCodec } from '../../protocols/bolt/index.js';
import { NEED_MORE } from '../../protocols/codec.js';
import { FrameBuffer } from '../../src/proxy/xprotocol/frame-buffer.js';
import { fixture } from '../helpers/paths.js';

const request = readFileSync(fixture('bolt', 'request-plus.bin'));
const response = readFileSync(fixture('bolt', 'response-plus.bin'));

t.test('frames split anywhere come out whole, and stay intact as more bytes arrive', async (t) => {
  const frames = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? response : request));
  const stream = Buffer.concat(frames);
  for (const maxChunk of [1, 7, 64, 300, 5000]) {
    const fb = new FrameBuffer();
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
    t.equal(out.length, frames.length, `all frames decoded with chunks up to ${maxChunk} bytes`);
    t.ok(out.every((raw, i) => raw.equals(frames[i]!)), 'every frame handed out still holds its own bytes');
  }
});

t.test('a chunk that holds whole frames is used in place', async (t) => {
  const fb = new FrameBuffer();
  const chunk = Buffer.concat([request, response]);
  t.equal(fb.append(chunk), chunk, 'no copy');
});
