/**
 * The x-protocol engine with real sofa-rpc-node peers, each in its own process, on loopback: per-request
 * load balancing, routing by interface and method, weights, local heartbeats, timeouts, oversized and
 * garbage frames, a dead upstream and a provider killed under load.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import t from 'tap';
import { boltCodec } from '../../protocols/bolt/index.js';
import { NEED_MORE } from '../../protocols/codec.js';
import { fixture } from '../helpers/paths.js';
import { BoltClient, type BoltServer, type LocalSidecar, startBoltServer, startLocalSidecar, whenAtLeast } from '../helpers/sidecar.js';

const ep = (port: number) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } });
const cluster = (name: string, ports: number[], lb = 'ROUND_ROBIN') => ({ name, type: 'STATIC', connect_timeout: '1s', lb_policy: lb, load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: ports.map(ep) }] } });
const xproto = (extra: object) => ({ name: 'xsidecar.filters.network.xprotocol', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'rpc', ...extra } });
const listener = (name: string, filter: object) => ({ name, address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [filter] }] });
/** Polls until `read` returns `want` (or 3 s pass) and returns the last value. */
async function eventually(read: () => Promise<number>, want: number): Promise<number> {
  let v = await read();
  for (let i = 0; i < 60 && v !== want; i++) v = await new Promise((r) => setTimeout(r, 50)).then(read);
  return v;
}
const header = (name: string, exact: string) => ({ name, string_match: { exact } });

function bootstrap(a: BoltServer, b: BoltServer, deadPort: number) {
  return {
    static_resources: {
      clusters: [cluster('a', [a.port]), cluster('b', [b.port]), cluster('both', [a.port, b.port]), cluster('dead', [deadPort])],
      listeners: [
        listener('rpc', xproto({
          route_config: {
            name: 'rpc',
            virtual_hosts: [
              { name: 'other-interface', domains: ['com.nodejs.test.OtherService:1.0'], routes: [{ match: { prefix: '/' }, route: { cluster: 'b' } }] },
              {
                name: 'default',
                domains: ['*'],
                routes: [
                  { match: { prefix: '/', headers: [header('method', 'whereami')] }, route: { cluster: 'a' } },
                  { match: { prefix: '/' }, route: { cluster: 'both' } },
                ],
              },
            ],
          },
        })),
        listener('weighted', xproto({ route_config: { virtual_hosts: [{ name: 'w', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: 'a', weight: 80 }, { name: 'b', weight: 20 }] } } }] }] } })),
        listener('small', xproto({ cluster: 'both', max_frame_bytes: 2048 })),
        listener('dead', xproto({ cluster: 'dead' })),
        listener('tcp', { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'tcp', cluster: 'both' } }),
        listener('hcm-unrouted', {
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', stat_prefix: 'h', route_config: { virtual_hosts: [{ name: 'x', domains: ['nothing.example'], routes: [{ match: { prefix: '/' }, route: { cluster: 'a' } }] }] } },
        }),
      ],
    },
  };
}

t.test('bolt through the x-protocol engine', async (t) => {
  const a = await startBoltServer('A');
  const b = await startBoltServer('B');
  const sidecar: LocalSidecar = await startLocalSidecar('bolt-engine', bootstrap(a, b, 1));
  const listeners = (await (await fetch(`http://${sidecar.admin}/listeners?format=json`)).json()) as { listener_statuses: { name: string; local_address: { socket_address: { address: string } } }[] };
  const addr = (name: string) => listeners.listener_statuses.find((l) => l.name === name)!.local_address.socket_address.address;
  const clients: BoltClient[] = [];
  const client = (name: string) => {
    const c = BoltClient.local(addr(name));
    clients.push(c);
    return c;
  };
  t.teardown(() => {
    clients.forEach((c) => c.proc.kill('SIGKILL'));
    [a.proc, b.proc, sidecar.proc].forEach((p) => p.kill('SIGKILL'));
  });

  t.test('concurrent calls on one connection are balanced per request across both providers', async (t) => {
    const c = client('rpc');
    const r = await c.batch('whoami', 200, 20);
    t.equal(r.succeeded, 200, JSON.stringify(r.errors));
    t.same(r.results, { '"A"': 100, '"B"': 100 }, 'round robin per request, not per connection');
    t.equal(await sidecar.metric('xsidecar_downstream_cx_total', 'listener="rpc"'), 1, 'all of it on one downstream connection');
  });

  t.test('routing by method and by interface', async (t) => {
    const c = client('rpc');
    const byMethod = await c.batch('whereami', 40, 8);
    t.same(byMethod.results, { '"A"': 40 }, 'method whereami is routed to cluster a');
    const byInterface = await c.batch('whoami', 40, 8, { service: 'com.nodejs.test.OtherService:1.0' });
    t.same(byInterface.results, { '"other:B"': 40 }, 'interface OtherService is routed to cluster b by its virtual host domain');
    const plus = await c.call('plus', [2, 3]);
    t.same([plus.ok, plus.result], [true, 5], 'bodies pass through untouched');
  });

  t.test('weighted clusters split 80/20 within a few percent over 2,000 calls', async (t) => {
    const r = await client('weighted').batch('whoami', 2000, 50);
    t.equal(r.succeeded, 2000, JSON.stringify(r.errors));
    const shareA = (r.results['"A"'] ?? 0) / 2000;
    t.ok(shareA > 0.75 && shareA < 0.85, `share of A is ${shareA}`);
  });

  t.test('heartbeats are answered locally; garbage after a valid frame closes only that connection', async (t) => {
    const before = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    // Idle sofa-rpc-node clients of the earlier subtests send heartbeats of their own after 30 s.
    const heartbeatsBefore = await sidecar.metric('xsidecar_rpc_heartbeats_answered_total');
    const [host, port] = addr('rpc').split(':');
    const sock = connect(Number(port), host);
    const chunks: Buffer[] = [];
    sock.on('data', (d) => chunks.push(d));
    await new Promise((r) => sock.once('connect', r));
    sock.write(boltCodec.keepalive(77));
    await new Promise((r) => setTimeout(r, 200));
    sock.write(Buffer.from('this is not bolt at all'));
    await new Promise((r) => sock.once('close', r));
    const reply = boltCodec.decode(Buffer.concat(chunks), 1 << 20);
    t.not(reply, NEED_MORE);
    if (reply === NEED_MORE || reply instanceof Error) return;
    t.same([reply.kind, reply.heartbeat, reply.requestId, reply.status], ['response', true, 77, 0], 'heartbeat ack with the same id');
    t.ok((await sidecar.metric('xsidecar_rpc_heartbeats_answered_total')) >= heartbeatsBefore + 1, 'the heartbeat was counted');
    t.equal(await sidecar.metric('xsidecar_cluster_upstream_rq_total'), before, 'nothing was forwarded upstream');
    t.equal(await sidecar.metric('xsidecar_rpc_codec_errors_total', 'direction="downstream",reason="malformed"'), 1, 'the garbage was counted');
    const still = await clients[0]!.call('plus', [1, 1]);
    t.ok(still.ok, 'other connections are unaffected');
  });

  t.test('a caller that half-closes right after its request still gets the response', async (t) => {
    const [host, port] = addr('rpc').split(':');
    const sock = connect({ port: Number(port), host, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    sock.on('data', (d) => chunks.push(d));
    sock.on('connect', () => sock.end(readFileSync(fixture('bolt', 'request-plus.bin'))));
    await new Promise((r) => sock.once('end', r));
    sock.destroy();
    const reply = boltCodec.decode(Buffer.concat(chunks), 1 << 20);
    if (reply === NEED_MORE || reply instanceof Error) return t.fail(`no whole response before the close (${Buffer.concat(chunks).length} bytes)`);
    t.same([reply.kind, reply.ok], ['response', true], 'answered, then closed');
  });

  t.test('the request deadline is enforced by the sidecar', async (t) => {
    const c = client('rpc');
    t.ok((await c.call('plus', [1, 1])).ok, 'the client is up before the clock starts');
    const started = Date.now();
    const r = await c.call('sleep', [3000], { timeout: 500 });
    t.notOk(r.ok);
    t.ok(Date.now() - started < 2500, `answered after ${Date.now() - started} ms`);
    t.equal(await eventually(() => sidecar.metric('xsidecar_rpc_local_replies_total', 'reason="timeout"'), 1), 1, 'the sidecar answered the timeout');
  });

  t.test('an oversized frame gets a Bolt error and its connection closes', async (t) => {
    const r = await client('small').call('echo', ['x'.repeat(5000)]);
    t.notOk(r.ok);
    t.match(r.error, /xsidecar frame-too-large/);
    t.equal(await sidecar.metric('xsidecar_rpc_codec_errors_total', 'reason="too-large"'), 1);
  });

  t.test('a dead upstream and a missing route get Bolt errors, never a hang', async (t) => {
    const dead = await client('dead').call('plus', [1, 2]);
    t.notOk(dead.ok);
    t.match(dead.error, /xsidecar connect-failure/);
    const unrouted = await client('hcm-unrouted').call('plus', [1, 2]);
    t.notOk(unrouted.ok);
    t.match(unrouted.error, /xsidecar no-route/);
  });

  t.test('a provider killed under load: in-flight calls get Bolt errors, later calls go to the other provider', async (t) => {
    const c = client('tcp');
    t.ok((await c.call('plus', [1, 2])).ok, 'the client is connected before the load starts');
    const started = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const load = c.batch('whoami', 3000, 20);
    await whenAtLeast(() => sidecar.metric('xsidecar_cluster_upstream_rq_total'), started + 500);
    b.proc.kill('SIGKILL');
    const r = await load;
    t.ok(r.results['"A"']! > 0 && r.results['"B"']! > 0, 'both served before the kill');
    t.ok(r.failed <= 20, `at most the in-flight calls failed (${r.failed}: ${JSON.stringify(r.errors)})`);
    for (const msg of Object.keys(r.errors)) t.match(msg, /xsidecar (upstream-reset|connect-failure)/, 'failures are Bolt errors from the sidecar');
    const after = await c.batch('whoami', 200, 10);
    t.same(after.results, { '"A"': 200 }, 'every later call went to the surviving provider');
  });
});
