/**
 * The Bolt codec against real sofa-rpc-node peers, each in its own process: the peers talk to each other
 * directly, then through a tiny relay built on the codec that forwards some calls (rewriting ids, as the
 * engine will) and answers the others with `errorResponse`, which the real client must turn into clean,
 * readable rejections.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { CodecError, NEED_MORE, type ErrorKind, type Frame, type RequestId } from '../../protocols/codec.js';
import { boltCodec } from '../../protocols/bolt/index.js';
import { fixture, repoRoot } from '../helpers/paths.js';

type Test = Pick<typeof t, 'ok' | 'fail' | 'teardown'>;
const SERVICE = 'com.nodejs.test.TestService:1.0';
const peer = (file: string) => resolve(repoRoot, 'dist/test/peers', file);

function spawnPeer(t: Test, file: string, args: string[]): { child: ChildProcess; stderr: () => string } {
  const child = spawn(process.execPath, [peer(file), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  t.teardown(() => void child.kill());
  return { child, stderr: () => err };
}

async function startServer(t: Test, name: string): Promise<number> {
  const { child, stderr } = spawnPeer(t, 'bolt-server.js', ['--host', '127.0.0.1', '--port', '0', '--name', name]);
  const lines = createInterface({ input: child.stdout! });
  const timer = setTimeout(() => child.kill(), 10000);
  const [line] = (await Promise.race([once(lines, 'line'), once(child, 'exit')])) as [string];
  clearTimeout(timer);
  if (typeof line !== 'string') throw new Error(`bolt-server did not start: ${stderr()}`);
  const ready = JSON.parse(line) as { ready: boolean; port: number };
  t.ok(ready.ready, `server ${name} ready on ${ready.port}`);
  return ready.port;
}

interface Result {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
  batch?: { total: number; succeeded: number; failed: number; results: Record<string, number> };
}

function startClient(t: Test, port: number, flags: string[] = []) {
  const { child, stderr } = spawnPeer(t, 'bolt-client.js', ['--server', `127.0.0.1:${port}`, ...flags]);
  const waiting = new Map<number, (r: Result) => void>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const r = JSON.parse(line) as Result;
    waiting.get(r.id)?.(r);
    waiting.delete(r.id);
  });
  let next = 0;
  const send = (cmd: { method: string; args?: unknown[]; timeout?: number; batch?: number; concurrency?: number }) => {
    const id = ++next;
    child.stdin!.write(JSON.stringify({ id, service: SERVICE, ...cmd }) + '\n');
    return new Promise<Result>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to ${cmd.method}: ${stderr()}`)), 15000);
      waiting.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
  };
  const call = (method: string, args: unknown[] = []) => send({ method, args, timeout: 3000 });
  return Object.assign(call, { send });
}

/** Feeds socket chunks to the codec and hands out complete frames, as the engine does. */
function framer(onFrame: (f: Frame) => void, onError: (e: Error) => void) {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      const r = boltCodec.decode(buf, 1 << 20);
      if (r === NEED_MORE) return;
      if (r instanceof CodecError) return onError(r);
      buf = buf.subarray(r.raw.length);
      onFrame(r);
    }
  };
}

/** A one-connection-per-connection relay: `answer` may reply locally, otherwise the frame goes upstream. */
async function startRelay(t: Test, upstream: number, answer: (f: Frame) => Buffer | null): Promise<{ port: number; seen: Frame[] }> {
  const seen: Frame[] = [];
  const server = createServer((down) => {
    const up = createConnection(upstream, '127.0.0.1');
    const ids = new Map<RequestId, RequestId>();
    let next = 1_000_000;
    const fail = (e: Error) => {
      t.fail(`relay: ${e.message}`);
      down.destroy();
    };
    down.on('data', framer((f) => {
      seen.push(f);
      if (f.kind === 'request' && f.heartbeat) return void down.write(boltCodec.heartbeatReply(f));
      const local = answer(f);
      if (local) return void down.write(local);
      const id = next++;
      if (f.kind === 'request') ids.set(id, f.requestId);
      boltCodec.setRequestId(f.raw, id);
      up.write(f.raw);
    }, fail));
    up.on('data', framer((f) => {
      const original = ids.get(f.requestId);
      if (original === undefined) return;
      ids.delete(f.requestId);
      boltCodec.setRequestId(f.raw, original);
      down.write(f.raw);
    }, fail));
    const close = (s: Socket) => () => void s.destroy();
    down.on('close', close(up)).on('error', () => {});
    up.on('close', close(down)).on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => void server.close());
  return { port: (server.address() as AddressInfo).port, seen };
}

t.test('real client and server, directly', async (t) => {
  const port = await startServer(t, 'alpha');
  for (const flags of [[], ['--bolt2'], ['--bolt2', '--crc']]) {
    const call = startClient(t, port, flags);
    const mode = flags.join(' ') || 'v1';
    t.same(await call('plus', [1, 2]), { id: 1, ok: true, result: 3 }, `${mode}: plus(1, 2)`);
    t.same(await call('whoami'), { id: 2, ok: true, result: 'alpha' }, `${mode}: whoami`);
    const failed = await call('fail', ['boom']);
    t.equal(failed.ok, false);
    t.match(failed.error, /boom/, `${mode}: the server's own error reply`);
    const { batch } = await call.send({ method: 'whoami', batch: 40, concurrency: 8 });
    t.match(batch, { total: 40, succeeded: 40, failed: 0, results: { '"alpha"': 40 } }, `${mode}: batch`);
  }
});

t.test('the real server understands our frames', async (t) => {
  const port = await startServer(t, 'beta');
  const socket = createConnection(port, '127.0.0.1');
  t.teardown(() => void socket.destroy());
  const frames: Frame[] = [];
  const got = new Promise<void>((resolve, reject) => {
    socket.on('data', framer((f) => {
      frames.push(f);
      if (frames.length === 2) resolve();
    }, reject));
  });
  // The captured request replayed as is, then our keepalive.
  socket.write(Buffer.concat([readFileSync(fixture('bolt', 'request-plus.bin')), boltCodec.keepalive(42)]));
  await got;
  const [plus, ack] = frames.sort((a, b) => Number(a.requestId) - Number(b.requestId));
  t.equal(plus.kind, 'response');
  t.equal(plus.requestId, 2);
  t.equal(plus.status, 0);
  t.equal(ack.heartbeat, true);
  t.equal(ack.kind, 'response');
  t.equal(ack.requestId, 42);
  t.equal(ack.status, 0);
});

t.test('the real client rejects our error replies cleanly', async (t) => {
  const port = await startServer(t, 'gamma');
  const kinds: ErrorKind[] = [
    'no-route',
    'no-healthy-upstream',
    'connect-failure',
    'upstream-reset',
    'timeout',
    'overflow',
    'frame-too-large',
    'codec-error',
  ];
  // Calls named after an ErrorKind are answered by the relay; the rest reach the server.
  const relay = await startRelay(t, port, (f) => {
    const method = f.header('method') as ErrorKind;
    return kinds.includes(method) ? boltCodec.errorResponse(f, method, `relay refused ${method}`) : null;
  });
  for (const flags of [[], ['--bolt2'], ['--bolt2', '--crc']]) {
    const mode = flags.join(' ') || 'v1';
    const call = startClient(t, relay.port, flags);
    const before = relay.seen.length;
    t.same(await call('plus', [2, 3]), { id: 1, ok: true, result: 5 }, `${mode}: plus relayed with rewritten ids`);
    for (const kind of kinds) {
      const r = await call(kind);
      t.equal(r.ok, false, `${mode}: ${kind} rejected`);
      t.match(r.error, `xsidecar ${kind}: relay refused ${kind}`, `${mode}: ${kind} reason readable`);
    }
    t.same(await call('whoami'), { id: kinds.length + 2, ok: true, result: 'gamma' }, `${mode}: connection still good`);
    const first = relay.seen[before];
    t.equal(first.header('service'), SERVICE, `${mode}: service read from the real client's frame`);
    t.equal(first.header('method'), 'plus');
    t.equal(first.timeoutMs, 3000);
    t.same([...first.raw.subarray(0, 2)], flags.length ? [2, 2] : [1, 1], `${mode}: wire version`);
    t.equal(first.raw[11] === 1, flags.includes('--crc'), `${mode}: CRC switch`);
  }
});
