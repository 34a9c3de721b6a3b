/**
 * Hostile and overloaded callers against a real sidecar process, with a real sofa-rpc-node provider and
 * client in processes of their own, on loopback. Every timer is shortened through the config (runtime
 * keys and the x-protocol filter), so each shape is closed within seconds: silent, one byte, a partial
 * header, one byte at a time (slowloris), idle RPC and idle L4-fallback connections; partial frames and
 * callers that never read stay within the buffer budget while a good client's calls keep succeeding; the
 * global connection limit refuses cleanly, silent callers make room for new ones, and admin stays up.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import t from 'tap';
import { boltCodec } from '../../protocols/bolt/index.js';
import { peer, Proc, writeTemp } from '../helpers/netns.js';
import { cliPath, fixture } from '../helpers/paths.js';
import { BoltClient, type LocalSidecar, spawnLocal, startBoltServer, startLocalSidecar, whenAtLeast } from '../helpers/sidecar.js';

const run = promisify(execFile);
const request = readFileSync(fixture('bolt', 'request-plus.bin'));
const MIB = 1024 * 1024;

const SNIFF_MS = 1000;
const FRAME_MS = 1500;
const IDLE_MS = 1500;
const BUDGET = 8 * MIB;

const ep = (port: number) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } });
const cluster = (name: string, port: number) => ({ name, type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [ep(port)] }] } });
const xproto = (extra: object) => ({ name: 'xsidecar.filters.network.xprotocol', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'rpc', ...extra } });
const listener = (name: string, filter: object, extra: object = {}) => ({ name, address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [filter] }], ...extra });
const tcpProxy = (clusterName: string) => ({ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'tcp', cluster: clusterName } });

/** A Bolt request declaring a body `extra` bytes longer than the one it carries: it never completes. */
function partialRequest(extra: number): Buffer {
  const declared = Buffer.from(request);
  declared.writeInt32BE(declared.readInt32BE(18) + extra, 18); // content length of a Bolt v1 request
  return Buffer.concat([declared, Buffer.alloc(extra - 1)]);
}

async function addresses(sidecar: LocalSidecar): Promise<(name: string) => { host: string; port: number }> {
  const l = (await (await fetch(`http://${sidecar.admin}/listeners?format=json`)).json()) as { listener_statuses: { name: string; local_address: { socket_address: { address: string } } }[] };
  return (name) => {
    const [host, port] = l.listener_statuses.find((s) => s.name === name)!.local_address.socket_address.address.split(':');
    return { host: host!, port: Number(port) };
  };
}

interface Conn {
  readonly sock: Socket;
  /** Resolves with ms from connect to close. */
  readonly closed: Promise<number>;
  received: number;
}

async function open(at: { host: string; port: number }): Promise<Conn> {
  const sock = connect(at);
  sock.on('error', () => undefined);
  const conn = { sock, received: 0, closed: undefined as unknown as Promise<number> };
  sock.on('data', (d) => (conn.received += d.length));
  await new Promise((r) => sock.once('connect', r));
  const started = Date.now();
  (conn as { closed: Promise<number> }).closed = new Promise((r) => sock.once('close', () => r(Date.now() - started)));
  t.teardown(() => void sock.destroy());
  return conn;
}

const within = (p: Promise<number>, ms: number) => Promise.race([p, sleep(ms).then(() => Infinity)]);

t.test('hostile callers', async (t) => {
  const a = await startBoltServer('A');
  const echo = spawnLocal(peer('echo-server'), ['echo', '127.0.0.1', '0'], 'echo');
  const echoPort = (await echo.waitJson<{ port: number }>((o) => 'port' in o)).port;
  const sidecar = await startLocalSidecar('hostile', {
    layered_runtime: { layers: [{ name: 'static', static_layer: { 'xsidecar.sniff_timeout_ms': SNIFF_MS, 'xsidecar.frame_timeout_ms': FRAME_MS, 'xsidecar.buffer_budget_bytes': BUDGET } }] },
    static_resources: {
      clusters: [cluster('a', a.port), cluster('echo', echoPort)],
      listeners: [
        listener('rpc', xproto({ cluster: 'a' })),
        listener('idle', xproto({ cluster: 'a', idle_timeout: `${IDLE_MS / 1000}s` })),
        listener('hcm', {
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
            stat_prefix: 'h',
            common_http_protocol_options: { idle_timeout: `${IDLE_MS / 1000}s` },
            route_config: { virtual_hosts: [{ name: 'x', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'echo' } }] }] },
          },
        }),
        // Large frames allowed (32 MiB per connection) and no frame timeout: only the budget stops them.
        listener('big', xproto({ protocol: 'bolt', cluster: 'a', max_frame_bytes: 32 * MIB, frame_timeout: '0s' }), { per_connection_buffer_limit_bytes: 32 * MIB }),
      ],
    },
  });
  const addr = await addresses(sidecar);
  const good = BoltClient.local(`${addr('rpc').host}:${addr('rpc').port}`);
  t.teardown(() => {
    good.proc.kill('SIGKILL');
    [a.proc, echo, sidecar.proc].forEach((p) => p.kill('SIGKILL'));
  });
  t.ok((await good.call('plus', [1, 2])).ok, 'the good client works before the attack');
  const closedBy = (reason: string, listenerName = 'rpc') => sidecar.metric('xsidecar_downstream_cx_closed_total', `listener="${listenerName}",reason="${reason}"`);

  t.test('slow first bytes: silent and one-byte callers are closed after the sniff timeout', async (t) => {
    const silent = await open(addr('rpc'));
    const oneByte = await open(addr('rpc'));
    oneByte.sock.write(Buffer.from([0x01])); // Bolt v1's first byte: the sniffer needs more
    for (const [name, c] of [['silent', silent], ['one byte', oneByte]] as const) {
      const ms = await within(c.closed, SNIFF_MS + 10_000);
      t.ok(ms >= SNIFF_MS - 50 && ms < Infinity, `${name}: closed after ${ms} ms (sniff timeout ${SNIFF_MS} ms)`);
    }
    t.equal(await closedBy('sniff_timeout'), 2, 'both counted as sniff timeouts');
  });

  t.test('slow frames: a partial header and a slowloris caller are closed after the frame timeout', async (t) => {
    const header = await open(addr('rpc'));
    header.sock.write(request.subarray(0, 10));
    const slowloris = await open(addr('rpc'));
    let i = 0;
    const drip = setInterval(() => slowloris.sock.write(request.subarray(i, ++i)), 100);
    t.teardown(() => clearInterval(drip));
    for (const [name, c] of [['partial header', header], ['slowloris', slowloris]] as const) {
      const ms = await within(c.closed, FRAME_MS + 10_000);
      t.ok(ms >= FRAME_MS - 50 && ms < Infinity, `${name}: closed after ${ms} ms (frame timeout ${FRAME_MS} ms)`);
    }
    clearInterval(drip);
    t.ok(i < request.length, `the slowloris frame never completed (${i} of ${request.length} bytes sent)`);
    t.equal(await closedBy('frame_timeout'), 2, 'both counted as frame timeouts');
  });

  t.test('idle connections: an RPC caller with nothing in flight, and the HTTP chain L4 fallback', async (t) => {
    const rpc = await open(addr('idle'));
    rpc.sock.write(request);
    await whenAtLeast(async () => rpc.received, 1, 10_000);
    const l4 = await open(addr('hcm'));
    l4.sock.write('not rpc at all\n');
    await whenAtLeast(async () => l4.received, 15, 10_000);
    for (const [name, c] of [['idle rpc', rpc], ['idle L4 fallback', l4]] as const) {
      const ms = await within(c.closed, IDLE_MS + 10_000);
      t.ok(ms >= IDLE_MS - 50 && ms < Infinity, `${name}: closed after ${ms} ms (idle timeout ${IDLE_MS} ms)`);
    }
    t.equal(await closedBy('idle_timeout', 'idle'), 1, 'the RPC one counted as an idle timeout');
    t.equal(await sidecar.metric('xsidecar_tcp_idle_timeout_total', 'cluster="echo"'), 1, 'the L4 one counted by the relay');
  });

  t.test('a frame larger than the buffer limit gets a Bolt error instead of being held', async (t) => {
    const big = BoltClient.local(`${addr('rpc').host}:${addr('rpc').port}`);
    t.teardown(() => big.proc.kill('SIGKILL'));
    const r = await big.call('echo', ['x'.repeat(MIB + 1000)]);
    t.notOk(r.ok);
    t.match(r.error, /xsidecar frame-too-large/);
    t.ok(await sidecar.metric('xsidecar_rpc_codec_errors_total', 'reason="too-large"') >= 1, 'counted as too large');
    t.ok((await good.call('plus', [2, 2])).ok, 'other callers carry on');
  });

  t.test('partial frames past the budget: the largest are closed, the good client is untouched', async (t) => {
    const N = 10;
    const each = 3 * MIB;
    const calls = good.batch('plus', 400, 4, { args: [1, 1] });
    const conns = await Promise.all(Array.from({ length: N }, () => open(addr('big'))));
    for (const c of conns) c.sock.write(partialRequest(each));
    const closed = await whenAtLeast(() => closedBy('buffer_budget', 'big'), N - Math.floor(BUDGET / each), 30_000).catch(async (e: Error) => {
      throw new Error(`${e.message}; closed on "big" by reason: ${JSON.stringify(await Promise.all(['sniff_timeout', 'frame_timeout', 'idle_timeout', 'heap_pressure'].map((r) => closedBy(r, 'big'))))}`);
    });
    t.ok(closed >= N - Math.floor(BUDGET / each), `${closed} of ${N} closed for the budget`);
    let peak = 0;
    for (let i = 0; i < 10; i++) {
      peak = Math.max(peak, await sidecar.metric('xsidecar_overload_buffered_bytes'));
      await sleep(100);
    }
    t.ok(peak <= BUDGET, `held ${peak} bytes after enforcement (budget ${BUDGET})`);
    const open_ = conns.filter((c) => !c.sock.destroyed && c.sock.readyState === 'open').length;
    t.ok(open_ >= 1, `${open_} partial-frame connections within the budget stay open`);
    const r = await calls;
    t.equal(r.succeeded, 400, `the good client saw no failure (${JSON.stringify(r.errors)})`);
  });

  t.test('a caller that never reads stops being read at the buffer limit, then idles out', async (t) => {
    const bolt = (await import('node:module')).createRequire(import.meta.url)('sofa-bolt-node/lib/protocol') as { requestEncode(id: number, req: object, options: object): Buffer };
    const SERVICE = 'com.nodejs.test.TestService:1.0';
    const one = bolt.requestEncode(1, { serverSignature: SERVICE, methodName: 'echo', args: [{ $class: 'java.lang.String', $: 'y'.repeat(16 * 1024) }], requestProps: { service: SERVICE }, timeout: 60_000 }, { protocolType: 'bolt', codecType: 'hessian2', boltVersion: 1, crcEnable: false });
    const N = 4000;
    const all = Buffer.alloc(one.length * N);
    for (let i = 0; i < N; i++) {
      one.copy(all, i * one.length);
      boltCodec.setRequestId(all.subarray(i * one.length, (i + 1) * one.length), i + 1);
    }
    const before = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const c = await open(addr('idle'));
    c.sock.pause();
    c.sock.write(all);
    let peak = 0;
    let last = -1;
    for (let i = 0; i < 20; i++) {
      await sleep(100);
      peak = Math.max(peak, await sidecar.metric('xsidecar_overload_buffered_bytes'));
      last = (await sidecar.metric('xsidecar_cluster_upstream_rq_total')) - before;
    }
    t.ok(last < N / 4, `forwarded ${last} of ${N} requests, then stopped reading the caller`);
    t.ok(peak <= BUDGET, `held at most ${peak} bytes (budget ${BUDGET})`);
    t.ok((await good.call('plus', [3, 3])).ok, 'meanwhile the good client is served');
    const ms = await within(c.closed, 30_000);
    t.ok(ms < Infinity, `closed after ${ms} ms once nothing was in flight (idle timeout)`);
  });
});

t.test('the global connection limit', async (t) => {
  const echo = spawnLocal(peer('echo-server'), ['echo', '127.0.0.1', '0'], 'echo');
  const echoPort = (await echo.waitJson<{ port: number }>((o) => 'port' in o)).port;
  const a = await startBoltServer('L');
  const banner = spawnLocal(peer('banner-server'), ['127.0.0.1', '0'], 'banner');
  const bannerPort = (await banner.waitJson<{ port: number }>((o) => 'port' in o)).port;
  const LIMIT = 20;
  const sidecar = await startLocalSidecar('limited', {
    layered_runtime: { layers: [{ name: 'static', static_layer: { 'xsidecar.max_early_dials': 2, 'xsidecar.sniff_timeout_ms': 3000 } }] },
    overload_manager: {
      resource_monitors: [{ name: 'envoy.resource_monitors.global_downstream_max_connections', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig', max_active_downstream_connections: LIMIT } }],
    },
    static_resources: {
      clusters: [cluster('echo', echoPort), cluster('a', a.port), cluster('banner', bannerPort)],
      listeners: [
        listener('l4', tcpProxy('echo')),
        listener('rpc', xproto({ cluster: 'a', sniff_timeout: '60s' })),
        listener('quiet', xproto({ cluster: 'a' })),
        listener('banner', xproto({ cluster: 'banner' })),
      ],
    },
  });
  t.teardown(() => [echo, a.proc, banner, sidecar.proc].forEach((p) => p.kill('SIGKILL')));
  const addr = await addresses(sidecar);

  t.test('a server-first protocol works through a sniffing chain; early dials are capped', async (t) => {
    const text = (c: Conn) => {
      let got = '';
      c.sock.on('data', (d) => (got += d));
      return () => got;
    };
    const first = await open(addr('banner'));
    const said = text(first);
    await whenAtLeast(async () => said().length, 24, 10_000);
    t.equal(said(), '220 banner-server ready\n', 'the server spoke first, through the sidecar');
    first.sock.write('hello');
    await whenAtLeast(async () => said().length, 29, 10_000);
    t.equal(said().slice(24), 'hello', 'then bytes flow both ways at L4');
    first.sock.destroy();
    await first.closed;
    // Two silent callers take both early-dial slots; a third caller is not dialled for.
    const silent = [await open(addr('quiet')), await open(addr('quiet'))];
    await whenAtLeast(() => sidecar.metric('xsidecar_sniff_early_dials_active'), 2, 10_000);
    const third = await open(addr('banner'));
    const heard = text(third);
    await whenAtLeast(() => sidecar.metric('xsidecar_sniff_early_dial_skipped_total'), 1, 10_000);
    t.equal(await sidecar.metric('xsidecar_sniff_early_dials_active'), 2, 'no more than max_early_dials at once');
    t.ok((await within(third.closed, 15_000)) < Infinity, 'the caller beyond the cap waited for the sniff timeout');
    t.equal(heard(), '', 'and was never dialled for');
    for (const c of silent) t.ok((await within(c.closed, 15_000)) < Infinity, 'the silent ones are closed by the sniff timeout too');
    t.equal(await sidecar.metric('xsidecar_sniff_early_dials_active'), 0, 'and their dials are released');
  });

  t.test('at the limit new connections are closed at once; admin stays reachable; room comes back', async (t) => {
    const held = await Promise.all(Array.from({ length: LIMIT }, () => open(addr('l4'))));
    for (const c of held) c.sock.write('x');
    await whenAtLeast(async () => held.filter((c) => c.received > 0).length, LIMIT, 20_000);
    const refused = await Promise.all(Array.from({ length: 5 }, () => open(addr('l4'))));
    for (const c of refused) t.ok((await within(c.closed, 5000)) < Infinity, 'closed at once');
    t.equal(refused.reduce((n, c) => n + c.received, 0), 0, 'refused connections carried nothing');
    t.equal(await sidecar.metric('xsidecar_overload_refused_total', 'reason="max_connections"'), 5, 'each refusal counted');
    const ready = await fetch(`http://${sidecar.admin}/ready`);
    t.equal(await ready.text(), 'LIVE\n', 'admin answers');
    held[0]!.sock.destroy();
    await held[0]!.closed;
    await sleep(200);
    const next = await open(addr('l4'));
    next.sock.write('again');
    await whenAtLeast(async () => next.received, 5, 10_000);
    t.pass('a freed slot is usable again');
    for (const c of [...held, next]) c.sock.destroy();
  });

  t.test('silent callers at the limit make room for a caller with something to say', async (t) => {
    await sleep(300);
    const silent = await Promise.all(Array.from({ length: LIMIT }, () => open(addr('rpc'))));
    await sleep(300);
    const client = BoltClient.local(`${addr('rpc').host}:${addr('rpc').port}`);
    t.teardown(() => client.proc.kill('SIGKILL'));
    const r = await client.call('plus', [20, 22], { timeout: 10_000 });
    t.same([r.ok, r.result], [true, 42], 'the new caller got in and was answered');
    t.ok((await sidecar.metric('xsidecar_downstream_cx_closed_total', 'reason="evicted"')) >= 1, 'a silent caller was evicted for it');
    t.ok(silent.some((c) => c.sock.destroyed || c.sock.readyState === 'closed'), 'one of the silent ones is gone');
  });
});

t.test('check: bad files are named, binary is never echoed, static routes must name known clusters', async (t) => {
  const check = async (content: string | Buffer) => {
    const file = writeTemp(`check-${Math.random().toString(36).slice(2)}.yaml`, '');
    writeFileSync(file, content);
    try {
      const r = await run(process.execPath, [cliPath, 'check', '-c', file]);
      return { code: 0, out: r.stdout + r.stderr, file };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, out: err.stdout + err.stderr, file };
    }
  };
  const empty = await check('');
  t.same([empty.code, empty.out.trim()], [1, `error: ${empty.file}: empty file`]);
  const comments = await check('# nothing here\n');
  t.same([comments.code, comments.out.trim()], [1, `error: ${comments.file}: empty file`]);
  const list = await check('- a\n- b\n');
  t.equal(list.code, 1);
  t.match(list.out, `${list.file}: expected a bootstrap object`);
  const random = Buffer.alloc(1 * MIB);
  for (let i = 0; i < random.length; i++) random[i] = (i * 2654435761) >>> 24;
  const binary = await check(random);
  t.equal(binary.code, 1);
  t.match(binary.out, `${binary.file}: not a text file`);
  t.ok(binary.out.length < 300 && /^[\x20-\x7e\n]*$/.test(binary.out), `only a short printable message: ${JSON.stringify(binary.out)}`);
  const route = await check(JSON.stringify({
    static_resources: {
      clusters: [cluster('a', 1)],
      listeners: [listener('rpc', xproto({ route_config: { virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'a' } }, { match: { prefix: '/x' }, route: { weighted_clusters: { clusters: [{ name: 'a', weight: 1 }, { name: 'nope', weight: 1 }] } } }] }] } }))],
    },
  }));
  t.equal(route.code, 1);
  t.match(route.out, 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1].route.weighted_clusters.clusters[1].name: unknown cluster "nope"');
});

t.test('the default connection limit follows RLIMIT_NOFILE, raised to its hard limit at start', async (t) => {
  const echo = spawnLocal(peer('echo-server'), ['echo', '127.0.0.1', '0'], 'echo');
  const echoPort = (await echo.waitJson<{ port: number }>((o) => 'port' in o)).port;
  const file = writeTemp('nofile.json', {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    static_resources: { clusters: [cluster('echo', echoPort)], listeners: [listener('l4', tcpProxy('echo'))] },
  });
  // Soft 100, hard 200: raised to 200, the ceiling is (200 - 64 reserved) / 2 = 68 connections.
  const proc = new Proc(spawn('prlimit', ['--nofile=100:200', process.execPath, cliPath, 'run', '-c', file, '--health-port', '0', '--prometheus-port', '0'], { stdio: ['pipe', 'pipe', 'pipe'] }), 'sidecar nofile');
  t.teardown(() => [echo, proc].forEach((p) => p.kill('SIGKILL')));
  const info = await proc.waitJson<{ msg?: string; maxConnections: number; nofile: number; nofileWas: number }>((o) => o.msg === 'overload manager');
  // Node itself raises the soft limit at start-up, so it may already be 200 when the sidecar looks.
  t.same([info.nofile, info.maxConnections], [200, 68], `soft limit at the hard one (it was ${info.nofileWas} when the sidecar looked); the limit derived from it`);
  const started = await proc.waitJson<{ msg?: string; admin: string; listeners: { name: string; address: string }[] }>((o) => o.msg === 'xsidecar started');
  const [host, port] = started.listeners[0]!.address.split(':');
  const conns = await Promise.all(Array.from({ length: 80 }, () => open({ host: host!, port: Number(port) })));
  for (const c of conns) c.sock.write('x');
  await whenAtLeast(async () => conns.filter((c) => c.received > 0).length, 68, 20_000);
  await sleep(500);
  t.equal(conns.filter((c) => c.received > 0).length, 68, '68 relayed');
  t.equal(conns.filter((c) => c.sock.destroyed).length, 12, 'the other 12 closed at once');
  t.equal(await (await fetch(`http://${started.admin}/ready`)).text(), 'LIVE\n', 'admin still answers: its descriptors were kept back');
  t.notOk(proc.lines.some((l) => l.includes('EMFILE')), 'descriptors never ran out');
});
