/**
 * The x-protocol engine with real Dubbo peers (apache-dubbo-service providers, apache-dubbo-consumer and
 * dubbo2.js consumers), each in its own process, on loopback: per-request balancing, routing by interface,
 * method, version, group and a custom attachment, weights, heartbeats both ways, oneway, native errors
 * (timeout, no route, dead upstream, oversized), a provider killed under load, hostile bytes.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import t from 'tap';
import { CodecError, type Frame, NEED_MORE } from '../../protocols/codec.js';
import { dubboCodec } from '../../protocols/dubbo/index.js';
import { DubboClient, type DubboClientKind, type DubboProvider, startDubboProvider } from '../helpers/dubbo.js';
import { fixture } from '../helpers/paths.js';
import { type LocalSidecar, startLocalSidecar, whenAtLeast } from '../helpers/sidecar.js';

const ep = (port: number) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } });
const cluster = (name: string, ports: number[]) => ({ name, type: 'STATIC', connect_timeout: '1s', lb_policy: 'ROUND_ROBIN', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: ports.map(ep) }] } });
const xproto = (extra: object) => ({ name: 'xsidecar.filters.network.xprotocol', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'dubbo', ...extra } });
const listener = (name: string, filter: object) => ({ name, address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [filter] }] });
const header = (name: string, exact: string) => ({ name, string_match: { exact } });
const to = (c: string, ...headers: object[]) => ({ match: { prefix: '/', headers }, route: { cluster: c } });

function bootstrap(a: DubboProvider, b: DubboProvider) {
  return {
    static_resources: {
      clusters: [cluster('a', [a.port]), cluster('b', [b.port]), cluster('both', [a.port, b.port]), cluster('dead', [1])],
      listeners: [
        listener('rpc', xproto({
          route_config: {
            name: 'rpc',
            virtual_hosts: [
              // The interface is the virtual host's domain (DNS universal addressing names it too).
              { name: 'role', domains: ['com.example.RoleService'], routes: [to('b', header('group', 'admin')), to('a')] },
              {
                name: 'default',
                domains: ['*'],
                routes: [
                  to('b', header('version', '2.0.0')),
                  to('b', header('x-tenant', 'acme')),
                  to('a', header('method', 'whoami')),
                  to('both'),
                ],
              },
            ],
          },
        })),
        listener('weighted', xproto({ route_config: { virtual_hosts: [{ name: 'w', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: 'a', weight: 80 }, { name: 'b', weight: 20 }] } } }] }] } })),
        listener('deadline', xproto({ route_config: { virtual_hosts: [{ name: 't', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'a', timeout: '0.5s' } }] }] } })),
        listener('unrouted', xproto({ route_config: { virtual_hosts: [{ name: 'x', domains: ['com.example.Nothing'], routes: [to('a')] }] } })),
        listener('small', xproto({ protocol: 'dubbo', cluster: 'both', max_frame_bytes: 2048 })),
        listener('dead', xproto({ cluster: 'dead' })),
        listener('tcp', { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'tcp', cluster: 'both' } }),
      ],
    },
  };
}

/** Every frame a raw socket received. */
function framesOf(chunks: Buffer[]): Frame[] {
  let buf = Buffer.concat(chunks);
  const out: Frame[] = [];
  for (;;) {
    const f = dubboCodec.decode(buf, 1 << 20);
    if (f === NEED_MORE || f instanceof CodecError) return out;
    out.push(f);
    buf = buf.subarray(f.raw.length);
  }
}

t.test('dubbo through the x-protocol engine', async (t) => {
  // B probes idle connections every 400 ms and drops one silent for 1.2 s: the sidecar must answer.
  const a = await startDubboProvider('A');
  const b = await startDubboProvider('B', { heartbeatMs: 400 });
  const sidecar: LocalSidecar = await startLocalSidecar('dubbo-engine', bootstrap(a, b));
  const listeners = (await (await fetch(`http://${sidecar.admin}/listeners?format=json`)).json()) as { listener_statuses: { name: string; local_address: { socket_address: { address: string } } }[] };
  // The admin lists each listener's bound address as HOST:PORT.
  const addr = (name: string) => {
    const [address, port] = listeners.listener_statuses.find((l) => l.name === name)!.local_address.socket_address.address.split(':');
    return { address: address!, port_value: Number(port) };
  };
  const clients: DubboClient[] = [];
  const client = (name: string, kind: DubboClientKind = 'apache') => {
    const { address, port_value } = addr(name);
    const c = DubboClient.local(kind, address, port_value);
    clients.push(c);
    return c;
  };
  const raw = async (name: string) => {
    const { address, port_value } = addr(name);
    const sock = connect(port_value, address);
    const chunks: Buffer[] = [];
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => undefined);
    await new Promise((r) => sock.once('connect', r));
    return { sock, chunks };
  };
  t.teardown(() => {
    clients.forEach((c) => c.proc.kill('SIGKILL'));
    [a.proc, b.proc, sidecar.proc].forEach((p) => p.kill('SIGKILL'));
  });

  t.test('200 concurrent calls on one consumer connection are spread over both providers', async (t) => {
    const r = await client('rpc').run({ method: 'getUser', args: ['42'], calls: 200, concurrency: 50 });
    t.equal(r.ok, 200, JSON.stringify(r.errors));
    t.same(r.results, { 'user:42@A': 100, 'user:42@B': 100 }, 'round robin per request, not per connection');
    t.equal(await sidecar.metric('xsidecar_downstream_cx_total', 'listener="rpc"'), 1, 'all of it on one downstream connection');
  });

  t.test('routing by interface, group, version, method and a custom attachment', async (t) => {
    const c = client('rpc');
    const role = await c.run({ service: 'com.example.RoleService', method: 'getRole', args: ['r'], calls: 10 });
    t.same(role.results, { 'role:r@A': 10 }, `the interface's virtual host: ${JSON.stringify(role.errors)}`);
    const admin = await c.run({ service: 'com.example.RoleService', group: 'admin', method: 'getRole', args: ['r'], calls: 10 });
    t.same(admin.results, { 'admin-role:r@B': 10 }, 'group admin (an attachment) goes to b');
    const v2 = await c.run({ version: '2.0.0', method: 'getUser', args: ['7'], calls: 10 });
    t.same(v2.results, { 'user-v2:7@B': 10 }, 'version 2.0.0 goes to b');
    const who = await c.run({ method: 'whoami', calls: 10 });
    t.same(who.results, { A: 10 }, 'method whoami goes to a');
    const tenant = await c.run({ method: 'getUser', args: ['t'], attachments: { 'x-tenant': 'acme' }, calls: 10 });
    t.same(tenant.results, { 'user:t@B': 10 }, 'attachment x-tenant=acme goes to b');
    const echoed = await c.run({ method: 'echoAttachments', args: ['x'], attachments: { 'x-tenant': 'acme', 'x-trace-id': 'abc' } });
    t.match(JSON.parse(Object.keys(echoed.results)[0]!), { 'x-tenant': 'acme', 'x-trace-id': 'abc' }, 'bodies and attachments pass through untouched');
  });

  t.test('dubbo2.js through the sidecar', async (t) => {
    const r = await client('rpc', 'dubbo2js').run({ method: 'getUser', args: ['9'], calls: 100, concurrency: 20 });
    t.equal(r.ok, 100, JSON.stringify(r.errors));
    t.same(r.results, { 'user:9@A': 50, 'user:9@B': 50 });
  });

  t.test('weighted clusters split 80/20 within a few percent over 2,000 calls', async (t) => {
    const r = await client('weighted').run({ method: 'whoami', calls: 2000, concurrency: 50 });
    t.equal(r.ok, 2000, JSON.stringify(r.errors));
    const shareA = (r.results.A ?? 0) / 2000;
    t.ok(shareA > 0.75 && shareA < 0.85, `share of A is ${shareA}`);
  });

  t.test('heartbeats: a caller\'s answered locally with its id, a provider\'s answered upstream', async (t) => {
    const before = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const { sock, chunks } = await raw('rpc');
    sock.write(readFileSync(fixture('dubbo', 'synthetic-heartbeat-request-id777.bin')));
    sock.write(readFileSync(fixture('dubbo', 'heartbeat-request.bin')));
    await whenAtLeast(async () => framesOf(chunks).length, 2);
    const [r777, r0] = framesOf(chunks);
    t.same([r777!.raw[2], r777!.status, r777!.requestId, r777!.heartbeat], [0x22, 20, 777, true], 'event response, status OK, the caller’s id');
    t.equal(r0!.requestId, 0);
    t.equal(await sidecar.metric('xsidecar_cluster_upstream_rq_total'), before, 'nothing was forwarded upstream');
    sock.destroy();
    // B has had idle upstream connections from the sidecar since the subtests above; it probes them every
    // 400 ms and would drop one silent for 1.2 s. Wait for several of its probes.
    const [sent, received] = [b.heartbeats('sent'), b.heartbeats('received')];
    await whenAtLeast(async () => b.heartbeats('sent'), sent + 5);
    // B logs a probe when it sends it and an answer when it reads it: wait for five new answers, not only
    // five new probes (a busy machine had logged 3 answers when the fifth probe was logged).
    const answered = await whenAtLeast(async () => b.heartbeats('received'), received + 5).catch(() => b.heartbeats('received'));
    t.ok(answered >= received + 5, `the sidecar answered B's new heartbeats (${answered - received} answers to ${b.heartbeats('sent') - sent} probes)`);
    t.equal(b.heartbeats('idle-close'), 0, 'B never closed a sidecar connection as silent');
    const still = await client('rpc').run({ version: '2.0.0', calls: 5 });
    t.equal(still.ok, 5, 'the upstream connection is still good');
  });

  t.test('oneway: forwarded, never answered, and the provider\'s stray reply goes nowhere', async (t) => {
    const { sock, chunks } = await raw('rpc');
    const late = await sidecar.metric('xsidecar_rpc_late_responses_total');
    sock.write(readFileSync(fixture('dubbo', 'synthetic-oneway-request.bin'))); // id 779
    sock.write(readFileSync(fixture('dubbo', 'request-attachments.bin'))); // id 1, x-tenant=acme → b
    await whenAtLeast(async () => framesOf(chunks).length, 1);
    await whenAtLeast(() => sidecar.metric('xsidecar_cluster_upstream_rq_oneway_total'), 1);
    await whenAtLeast(() => sidecar.metric('xsidecar_rpc_late_responses_total'), late + 1); // the npm provider answers oneway
    await new Promise((r) => setTimeout(r, 200));
    const got = framesOf(chunks);
    t.same(got.map((f) => [f.requestId, f.status, f.heartbeat]), [[1, 20, false]], 'only the two-way request was answered, with its own id');
    sock.destroy();
  });

  t.test('the route\'s timeout, shorter than the caller\'s, answers with status 31 at once', async (t) => {
    const c = client('deadline');
    t.equal((await c.run({ method: 'whoami' })).ok, 1, 'connected before the clock starts');
    const r = await c.run({ method: 'sleep', args: [3000], timeout: 10_000 });
    t.equal(r.failed, 1);
    t.ok(r.elapsedMs < 2500, `answered after ${r.elapsedMs} ms, not at the caller's 10 s`);
    t.match(Object.keys(r.errors)[0], /xsidecar timeout/);
    t.same(r.errorTypes, { DubboServiceError: 1 }, 'a Dubbo error response, not the consumer\'s own timeout');
  });

  t.test('no route, a dead upstream and an oversized frame get Dubbo errors, never a hang', async (t) => {
    const unrouted = await client('unrouted').run({ method: 'getUser' });
    t.match(Object.keys(unrouted.errors)[0], /xsidecar no-route/);
    t.same(unrouted.errorTypes, { DubboServiceError: 1 });
    const dead = await client('dead').run({ method: 'getUser' });
    t.match(Object.keys(dead.errors)[0], /xsidecar connect-failure/);
    const big = await client('small').run({ method: 'getUser', args: ['x'.repeat(5000)] });
    t.match(Object.keys(big.errors)[0], /xsidecar frame-too-large/);
    t.ok(big.elapsedMs < 2500, `answered in ${big.elapsedMs} ms`);
    t.equal(await sidecar.metric('xsidecar_rpc_codec_errors_total', 'protocol="dubbo",reason="too-large"'), 1);
    // The statuses themselves, as a raw caller sees them.
    const { sock, chunks } = await raw('unrouted');
    sock.write(readFileSync(fixture('dubbo', 'request-attachments.bin')));
    await whenAtLeast(async () => framesOf(chunks).length, 1);
    t.same([framesOf(chunks)[0]!.status, framesOf(chunks)[0]!.requestId], [60, 1], 'service not found, with the caller\'s id');
    sock.destroy();
  });

  t.test('garbage after a valid frame closes only that connection', async (t) => {
    const good = client('rpc');
    t.equal((await good.run({ method: 'whoami' })).ok, 1);
    const { sock, chunks } = await raw('rpc');
    sock.write(readFileSync(fixture('dubbo', 'request-dubbo2js.bin')));
    sock.write(Buffer.from('GET / HTTP/1.1\r\nhost: this is not dubbo\r\n\r\n'));
    await new Promise((r) => sock.once('close', r));
    t.same(framesOf(chunks).map((f) => [f.requestId, f.status]), [[1, 20]], 'the request before the garbage was still answered');
    t.ok((await sidecar.metric('xsidecar_rpc_codec_errors_total', 'protocol="dubbo",direction="downstream",reason="malformed"')) >= 1);
    t.equal((await good.run({ method: 'whoami', calls: 5 })).ok, 5, 'other connections are unaffected');
  });

  t.test('a provider killed under load: only in-flight calls fail, each with a Dubbo error, then all succeed', async (t) => {
    const c = client('tcp');
    const warm = await c.run({ method: 'getUser', calls: 2 });
    t.equal(warm.ok, 2, `connected before the load starts: ${JSON.stringify(warm)}`);
    const load = c.run({ method: 'getUser', args: ['k'], durationMs: 4000, concurrency: 20 });
    await whenAtLeast(async () => c.progress(), 300);
    b.proc.kill('SIGKILL');
    const r = await load;
    t.ok((r.results['user:k@A'] ?? 0) > 0 && (r.results['user:k@B'] ?? 0) > 0, `both served before the kill: ${JSON.stringify(r.results)}`);
    t.ok(r.failed <= 20, `at most the in-flight calls failed (${r.failed}: ${JSON.stringify(r.errors)})`);
    for (const msg of Object.keys(r.errors)) t.match(msg, /xsidecar (upstream-reset|connect-failure)/, 'failures are Dubbo errors from the sidecar');
    t.same(Object.keys(r.errorTypes), r.failed ? ['DubboServiceError'] : [], 'never the consumer\'s own timeout');
    t.ok(r.okAfterLastFailure > 100, `everything after the burst succeeded (${r.okAfterLastFailure})`);
    const after = await c.run({ method: 'getUser', args: ['z'], calls: 100, concurrency: 10 });
    t.same(after.results, { 'user:z@A': 100 }, 'every later call went to the surviving provider');
  });
});
