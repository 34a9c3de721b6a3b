/** The write batch on real loopback sockets: one write per socket per round, order kept, congestion reported. */
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { setImmediate as nextRound } from 'node:timers/promises';
import t from 'tap';
import { type Throttle, WriteBatch, whenDrained } from '../../src/proxy/xprotocol/batch.js';

/** A connected pair: `a` is ours to write, `b` is the peer, paused until the test reads it. */
async function pair(): Promise<{ a: Socket; b: Socket; close(): void }> {
  const server = createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const a = connect((server.address() as { port: number }).port, '127.0.0.1');
  await once(a, 'connect');
  const [b] = (await accepted) as [Socket];
  return { a, b, close: () => (a.destroy(), b.destroy(), server.close()) };
}

async function readAll(b: Socket, bytes: number): Promise<Buffer> {
  const got: Buffer[] = [];
  let n = 0;
  b.on('data', (c: Buffer) => (got.push(c), (n += c.length)));
  b.resume();
  while (n < bytes) await once(b, 'data');
  return Buffer.concat(got);
}

/** Counts the socket's write() calls, the thing batching exists to reduce. */
function countWrites(s: Socket): { n: number } {
  const c = { n: 0 };
  const write = s.write.bind(s) as (...a: unknown[]) => boolean;
  s.write = ((...a: unknown[]) => (c.n++, write(...a))) as Socket['write'];
  return c;
}

t.test('frames written in one round leave as one write, in order', async (t) => {
  const { a, b, close } = await pair();
  t.teardown(close);
  const batch = new WriteBatch();
  const writes = countWrites(a);
  const frames = ['one|', 'two|', 'three|'].map((s) => Buffer.from(s));
  for (const f of frames) batch.write(a, f);
  t.equal(writes.n, 0, 'nothing is written before the round ends');
  await nextRound();
  t.equal(writes.n, 1, 'one write for three frames');
  batch.write(a, Buffer.from('four|'));
  await nextRound();
  t.equal(writes.n, 2, 'the next round writes again');
  t.equal((await readAll(b, 19)).toString(), 'one|two|three|four|');
});

t.test('a round larger than the coalescing limit is written whole and in order', async (t) => {
  const { a, b, close } = await pair();
  t.teardown(close);
  const batch = new WriteBatch();
  const frames = Array.from({ length: 5 }, (_, i) => Buffer.alloc(40_000, 65 + i));
  for (const f of frames) batch.write(a, f);
  await nextRound();
  t.same(await readAll(b, 200_000), Buffer.concat(frames));
});

t.test('flush() sends at once, e.g. before end()', async (t) => {
  const { a, b, close } = await pair();
  t.teardown(close);
  const batch = new WriteBatch();
  batch.write(a, Buffer.from('last words'));
  batch.flush();
  a.end();
  t.equal((await readAll(b, 10)).toString(), 'last words');
});

t.test('a socket still congested after the flush pauses everyone who wrote to it; a destroyed one is skipped', async (t) => {
  const { a, close } = await pair();
  t.teardown(close);
  const batch = new WriteBatch();
  const told: string[] = [];
  const throttle = (name: string): Throttle => ({ pauseFor: (s) => told.push(s === a ? name : 'another socket') });
  const writer = throttle('writer');
  const other = throttle('other');
  // The peer never reads: 64 MiB cannot all fit in the kernel's buffers.
  for (let i = 0; i < 64; i++) batch.write(a, Buffer.alloc(1 << 20), i % 2 ? writer : other);
  await nextRound();
  t.ok(a.writableNeedDrain, 'congested');
  t.same([...new Set(told)].sort(), ['other', 'writer'], 'everyone who wrote to it is paused');

  told.length = 0;
  batch.write(a, Buffer.alloc(10), writer);
  batch.write(a, Buffer.alloc(10), writer);
  await nextRound();
  t.same(told, ['writer'], 'the same writer twice in a row is told once');

  const { a: gone, close: close2 } = await pair();
  close2();
  await once(gone, 'close');
  told.length = 0;
  batch.write(gone, Buffer.from('lost'), writer);
  await nextRound();
  t.same(told, [], 'a destroyed socket neither writes nor throttles');
});

t.test('callers waiting for one socket to drain share one listener pair, and are all released', async (t) => {
  const { a, b, close } = await pair();
  t.teardown(close);
  let released = 0;
  while (a.write(Buffer.alloc(1 << 20)));
  for (let i = 0; i < 64; i++) whenDrained(a, () => released++);
  t.equal(a.listenerCount('drain'), 1, 'one drain listener for 64 waiters');
  t.equal(released, 0, 'nobody released while congested');
  b.resume();
  await once(a, 'drain');
  t.equal(released, 64, 'all released on drain');
  t.equal(a.listenerCount('drain'), 0, 'and the listener removed');
  whenDrained(a, () => released++);
  a.destroy();
  await once(a, 'close');
  t.equal(released, 65, 'a close releases too');
});
