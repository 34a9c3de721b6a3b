/**
 * The Dubbo test peers, with no sidecar: the real apache-dubbo-service provider answers both real
 * consumers (apache-dubbo-consumer and dubbo2.js) over one connection each, and a hand-built provider on a
 * raw socket shows how each consumer surfaces what only the sidecar will send: error statuses, heartbeat
 * requests, heartbeat replies with id 0, and a heartbeat sharing a TCP read with a response.
 */
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import t from 'tap';
import { peer, type Proc } from '../helpers/netns.js';
import type { DubboClientKind, DubboOutcome } from '../helpers/dubbo.js';
import { spawnLocal } from '../helpers/sidecar.js';

type Client = DubboClientKind;
const CLIENTS: Client[] = ['apache', 'dubbo2js'];
type Test = Pick<typeof t, 'teardown'>;
type Outcome = DubboOutcome & { id?: unknown };

interface Provider {
  proc: Proc;
  port: number;
  /** Connections the provider has accepted so far. */
  connections(): number;
}

async function startProvider(t: Test, name: string, extra: string[] = []): Promise<Provider> {
  const proc = spawnLocal(peer('dubbo-provider'), ['--host', '127.0.0.1', '--port', '0', '--name', name, ...extra], `dubbo-provider ${name}`);
  t.teardown(() => proc.kill('SIGKILL'));
  const { port } = await proc.waitJson<{ ready?: boolean; port: number }>((o) => o.ready === true);
  const connections = () => proc.lines.filter((l) => l.startsWith('{"connection"')).length;
  return { proc, port, connections };
}

/** Runs the consumer once and returns its result line. */
async function consume(t: Test, client: Client, port: number, flags: Record<string, string | number | object> = {}): Promise<Outcome> {
  const args = ['--client', client, '--port', String(port)];
  for (const [k, v] of Object.entries(flags)) args.push(`--${k}`, typeof v === 'object' ? JSON.stringify(v) : String(v));
  const proc = spawnLocal(peer('dubbo-consumer'), args, `dubbo-consumer ${client}`);
  t.teardown(() => proc.kill('SIGKILL'));
  return proc.waitJson<Outcome>((o) => typeof o.ok === 'number' && !('progress' in o), 60_000);
}

t.test('consumers against the real provider', async (t) => {
  const a = await startProvider(t, 'A');

  for (const client of CLIENTS) {
    t.test(client, async (t) => {
      t.test('calls are answered by the provider, all over one connection', async (t) => {
        const before = a.connections();
        const r = await consume(t, client, a.port, { args: ['42'], calls: 20, concurrency: 5 });
        t.same([r.ok, r.failed, r.results], [20, 0, { 'user:42@A': 20 }], JSON.stringify(r.errors));
        t.equal(a.connections() - before, 1, 'one connection');
      });

      t.test('attachments reach the provider', async (t) => {
        const r = await consume(t, client, a.port, { method: 'echoAttachments', args: ['x'], attachments: { 'x-tenant': 'acme', 'x-trace-id': 'trace-0001' } });
        t.equal(r.ok, 1, JSON.stringify(r.errors));
        const seen = JSON.parse(Object.keys(r.results)[0]!) as Record<string, unknown>;
        t.match(seen, { 'x-tenant': 'acme', 'x-trace-id': 'trace-0001', interface: 'com.example.UserService', path: 'com.example.UserService', version: '1.0.0' });
        t.equal(seen.application, client === 'apache' ? 'dubbo-js' : 'dubbo2.js', 'each client names itself');
      });

      t.test('the group picks the export at the provider', async (t) => {
        const admin = await consume(t, client, a.port, { service: 'com.example.RoleService', group: 'admin', method: 'getRole', args: ['root'] });
        t.same(admin.results, { 'admin-role:root@A': 1 }, JSON.stringify(admin.errors));
        const plain = await consume(t, client, a.port, { service: 'com.example.RoleService', method: 'getRole', args: ['root'] });
        t.same(plain.results, { 'role:root@A': 1 }, JSON.stringify(plain.errors));
      });

      t.test('the version picks the export at the provider', async (t) => {
        const v2 = await consume(t, client, a.port, { version: '2.0.0', args: ['7'] });
        t.same(v2.results, { 'user-v2:7@A': 1 }, JSON.stringify(v2.errors));
        const missing = await consume(t, client, a.port, { version: '9.9.9', args: ['7'] });
        t.equal(missing.failed, 1);
        t.match(Object.keys(missing.errors)[0], /SERVICE_NOT_FOUND#Service not found with com\.example\.UserService and getUser, group:, version:9\.9\.9/);
      });

      t.test('a thrown error comes back as an error with its message', async (t) => {
        const r = await consume(t, client, a.port, { method: 'fail', args: ['bad thing'] });
        t.same([r.ok, r.errors], [0, { 'bad thing': 1 }]);
        t.same(r.errorTypes, client === 'apache' ? { DubboServiceError: 1 } : { DubboDecodeError: 1 });
      });

      t.test('a slow answer is the consumer\'s own timeout', async (t) => {
        const r = await consume(t, client, a.port, { method: 'sleep', args: ['3000'], timeout: 500 });
        t.equal(r.failed, 1);
        t.same(r.errors, client === 'apache' ? { 'invoke com.example.UserService#sleep?group=&version=1.0.0': 1 } : { 'remote invoke timeout': 1 });
      });

      t.test('200 concurrent calls over one connection', async (t) => {
        const before = a.connections();
        const r = await consume(t, client, a.port, { method: 'whoami', calls: 200, concurrency: 200, timeout: 20_000 });
        t.same([r.ok, r.failed, r.results], [200, 0, { A: 200 }], JSON.stringify(r.errors));
        t.equal(a.connections() - before, 1, 'one connection');
      });
    });
  }

  t.test('--duration-ms keeps calling and reports progress', async (t) => {
    const proc = spawnLocal(peer('dubbo-consumer'), ['--client', 'apache', '--port', String(a.port), '--method', 'whoami', '--concurrency', '4', '--duration-ms', '1000']);
    t.teardown(() => proc.kill('SIGKILL'));
    await proc.waitJson<{ progress?: boolean }>((o) => o.progress === true);
    const r = await proc.waitJson<Outcome>((o) => typeof o.ok === 'number' && !('progress' in o));
    t.ok(r.ok > 0, `${r.ok} calls`);
    t.same([r.failed, Object.keys(r.results)], [0, ['A']]);
  });

  t.test('--stdin runs commands on one connection and answers each by id', async (t) => {
    const before = a.connections();
    const proc = spawnLocal(peer('dubbo-consumer'), ['--client', 'dubbo2js', '--port', String(a.port), '--stdin']);
    t.teardown(() => proc.kill('SIGKILL'));
    proc.child.stdin!.write(JSON.stringify({ id: 1, method: 'whoami', calls: 10, concurrency: 5 }) + '\n');
    proc.child.stdin!.write(JSON.stringify({ id: 2, service: 'com.example.RoleService', group: 'admin', method: 'getRole', args: ['x'] }) + '\n');
    proc.child.stdin!.write(JSON.stringify({ id: 3, calls: 'many' }) + '\n');
    const [one, two, three] = await Promise.all([1, 2, 3].map((id) => proc.waitJson<Outcome & { error?: string }>((o) => o.id === id)));
    t.same(one!.results, { A: 10 });
    t.same(two!.results, { 'admin-role:x@A': 1 });
    t.match(three!.error, /calls must be an integer/, 'a bad command gets a clear error and the rest go on');
    proc.child.stdin!.end();
    t.equal(await proc.exited, 0, 'exits when stdin ends');
    t.equal(a.connections() - before, 1, 'one connection');
  });

  t.test('bad flags are a clear error', async (t) => {
    const proc = spawnLocal(peer('dubbo-consumer'), ['--client', 'apache', '--port', String(a.port), '--args', '{nope']);
    t.equal(await proc.exited, 2);
    t.match(proc.lines.join('\n'), /args is not JSON/);
  });

  t.test('the provider survives resets, garbage and undecodable bodies', async (t) => {
    const reset = connect(a.port, '127.0.0.1');
    await once(reset, 'connect');
    reset.write(Buffer.from([0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0]));
    reset.resetAndDestroy();
    const garbage = connect(a.port, '127.0.0.1');
    garbage.on('error', () => {});
    await once(garbage, 'connect');
    // A valid header whose body is not hessian: the package's decode throws into a promise nobody awaits.
    garbage.write(frame(0xc2, 0, 9, Buffer.from([0xff, 0xfe, 0xfd, 0xfc])));
    garbage.write(Buffer.from('not dubbo at all, not at all'));
    await new Promise((r) => setTimeout(r, 300));
    garbage.destroy();
    const r = await consume(t, 'apache', a.port, { method: 'whoami' });
    t.same(r.results, { A: 1 }, 'still serving');
    t.match(a.proc.lines.join('\n'), /unanswered request/, 'the undecodable body was logged, not fatal');
    t.equal(a.proc.child.exitCode, null);
  });
});

// ---- a hand-built provider ----

/** A hessian2 string as Java writes it (ASCII only: the length counts characters). */
function hessianString(s: string): Buffer {
  const text = Buffer.from(s, 'latin1');
  if (s.length < 32) return Buffer.concat([Buffer.from([s.length]), text]);
  if (s.length < 1024) return Buffer.concat([Buffer.from([0x30 + (s.length >> 8), s.length & 0xff]), text]);
  return Buffer.concat([Buffer.from([0x53, s.length >> 8, s.length & 0xff]), text]);
}

/** magic 0xdabb, flag, status, id u64, body length u32, body. */
function frame(flag: number, status: number, id: bigint | number, body: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt16BE(0xdabb, 0);
  h[2] = flag;
  h[3] = status;
  h.writeBigUInt64BE(BigInt(id), 4);
  h.writeUInt32BE(body.length, 12);
  return Buffer.concat([h, body]);
}
const NULL = Buffer.from([0x4e]);
/** Status 20, body flag 1 (RESPONSE_VALUE) and a string. */
const okResponse = (id: bigint, value: string) => frame(0x02, 20, id, Buffer.concat([Buffer.from([0x91]), hessianString(value)]));

interface Seen {
  flag: number;
  id: bigint;
}

/** Answers every two-way request with `answer`; records the flag and id of every frame the consumer sent. */
async function rawProvider(t: Test, answer: (socket: Socket, id: bigint) => void) {
  const seen: Seen[] = [];
  const server = createServer((socket) => {
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
        const f = buf.subarray(0, 16 + buf.readUInt32BE(12));
        buf = buf.subarray(f.length);
        const flag = f[2]!;
        const id = f.readBigUInt64BE(4);
        seen.push({ flag, id });
        if ((flag & 0xe0) === 0xc0) answer(socket, id);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => void server.close());
  return { port: (server.address() as AddressInfo).port, seen };
}

t.test('error statuses are surfaced at once with their message', async (t) => {
  const cases: [number, string][] = [
    [31, 'upstream request timeout after 1000 ms'],
    [40, 'frame too large'],
    [60, 'no route for com.example.UserService getUser'],
    [80, 'no healthy upstream'],
    [100, 'too many requests in flight: ' + 'x'.repeat(1000)],
  ];
  for (const [status, message] of cases) {
    const raw = await rawProvider(t, (socket, id) => socket.write(frame(0x02, status, id, hessianString(message))));
    for (const client of CLIENTS) {
      const r = await consume(t, client, raw.port, { args: ['1'], timeout: 30_000 });
      t.equal(r.failed, 1, `${client} status ${status} fails the call`);
      const [got] = Object.keys(r.errors);
      if (client === 'apache') {
        t.same([got, r.errorTypes], [message, { DubboServiceError: 1 }], `apache status ${status}: the decoded string`);
      } else {
        // dubbo2.js reads the raw body as UTF-8: hessian's length prefix stays in front of the text.
        t.ok(got?.endsWith(message) && got.length <= message.length + 3, `dubbo2js status ${status}: the text behind the hessian prefix (${got?.slice(0, 40)})`);
        t.same(r.errorTypes, { DubboDecodeError: 1 });
      }
    }
  }
});

t.test('error bodies the consumers read badly', async (t) => {
  const nullBody = await rawProvider(t, (socket, id) => socket.write(frame(0x02, 80, id, NULL)));
  t.same((await consume(t, 'apache', nullBody.port, { args: ['1'] })).errors, { null: 1 }, 'apache: a null body is the message "null"');
  t.same((await consume(t, 'dubbo2js', nullBody.port, { args: ['1'] })).errors, { N: 1 }, 'dubbo2js: the raw byte');

  // An error status must carry a string: apache-dubbo-consumer decodes the empty body inside its socket
  // handler, and the exception kills the consumer process.
  const empty = await rawProvider(t, (socket, id) => socket.write(frame(0x02, 80, id, Buffer.alloc(0))));
  const proc = spawnLocal(peer('dubbo-consumer'), ['--client', 'apache', '--port', String(empty.port), '--args', '["1"]']);
  t.teardown(() => proc.kill('SIGKILL'));
  t.equal(await proc.exited, 1, 'apache consumer crashes on an empty error body');
  t.match(proc.lines.join('\n'), /hessian read got an unexpect code|Cannot read properties of undefined/);

  // The response flag must be exactly 0x02: apache compares the whole flag byte with the serialization id.
  const twoWay = await rawProvider(t, (socket, id) => socket.write(frame(0x42, 20, id, Buffer.concat([Buffer.from([0x91]), hessianString('fine')]))));
  t.same((await consume(t, 'apache', twoWay.port, { args: ['1'] })).errors, { 'only support hessian serialization': 1 }, 'apache rejects flag 0x42');
  t.same((await consume(t, 'dubbo2js', twoWay.port, { args: ['1'] })).results, { fine: 1 }, 'dubbo2js ignores the flag');
});

t.test('heartbeats toward the consumers', async (t) => {
  for (const client of CLIENTS) {
    // A heartbeat request (0xe2), a spec heartbeat reply (0x22, status 20, id 0) and the npm provider's
    // (0x62, status 0, id 0), each in its own write, then the answer. Should a slow machine merge two writes
    // into one read, the last heartbeat releases dubbo2.js's stall (see below) so the answer still lands.
    const separate = await rawProvider(t, (socket, id) => {
      const writes = [frame(0xe2, 0, 555, NULL), frame(0x22, 20, 0, NULL), frame(0x62, 0, 0, NULL), okResponse(id, 'after heartbeats'), frame(0x22, 20, 0, NULL)];
      writes.forEach((w, i) => setTimeout(() => socket.writable && socket.write(w), i * 100));
    });
    const r = await consume(t, client, separate.port, { args: ['1'], timeout: 10_000 });
    t.same(r.results, { 'after heartbeats': 1 }, `${client}: heartbeat frames are skipped, the answer still lands`);
    t.same(separate.seen.map((s) => s.flag), [0xc2], `${client} never answers a heartbeat request`);

    // A heartbeat reply and the answer in ONE write (one TCP read on loopback).
    const coalesced = await rawProvider(t, (socket, id) => socket.write(Buffer.concat([frame(0x22, 20, 0, NULL), okResponse(id, 'coalesced')])));
    const c = await consume(t, client, coalesced.port, { args: ['1'], timeout: 1500 });
    if (client === 'apache') {
      t.same(c.results, { coalesced: 1 }, 'apache reads both frames');
    } else {
      // The known dubbo2.js stall: it drops the rest of a read after an event frame until more bytes come.
      t.same([c.ok, c.errors], [0, { 'remote invoke timeout': 1 }], 'dubbo2js stalls on a heartbeat and an answer in one read');
    }
    // The answer first and the heartbeat after it is fine for both.
    const after = await rawProvider(t, (socket, id) => socket.write(Buffer.concat([okResponse(id, 'first'), frame(0x22, 20, 0, NULL)])));
    t.same((await consume(t, client, after.port, { args: ['1'] })).results, { first: 1 }, `${client}: answer then heartbeat in one read`);
  }
});

t.test('heartbeats from the provider', async (t) => {
  const p = await startProvider(t, 'H', ['--heartbeat-ms', '300']);
  const events = (remote: string, kind: string) => p.proc.lines.filter((l) => l.includes(`"heartbeat":"${kind}"`) && l.includes(`"remote":"${remote}"`)).length;

  // A heartbeat request is answered with the package's non-conformant reply: flag 0x62, status 0, id 0.
  const asker = connect(p.port, '127.0.0.1');
  await once(asker, 'connect');
  const askerName = `127.0.0.1:${asker.localPort}`;
  asker.write(frame(0xe2, 0, 777, NULL));
  const [reply] = (await once(asker, 'data')) as [Buffer];
  t.same([...reply.subarray(0, 16)], [...frame(0x62, 0, 0, NULL).subarray(0, 16)], 'reply header: 0x62, status 0, id 0, body 1');
  await p.proc.waitFor((l) => l.includes('"heartbeat":"received"') && l.includes(askerName));
  asker.destroy();

  // A silent connection gets idle heartbeats, then is closed after three intervals without a read.
  const silent = connect(p.port, '127.0.0.1');
  await once(silent, 'connect');
  const silentName = `127.0.0.1:${silent.localPort}`;
  const frames: Buffer[] = [];
  silent.on('data', (d: Buffer) => frames.push(d));
  await once(silent, 'close');
  t.ok(events(silentName, 'sent') >= 1, 'idle heartbeats were sent');
  t.equal(events(silentName, 'idle-close'), 1, 'then the provider closed it as idle');
  const bytes = Buffer.concat(frames);
  t.ok(bytes.length >= 17 && bytes.length % 17 === 0, `only 17-byte heartbeats came (${bytes.length} bytes)`);
  t.same([...bytes.subarray(0, 17)], [...frame(0x62, 0, 0, NULL)], 'each one 0x62, status 0, id 0, null body');
});
