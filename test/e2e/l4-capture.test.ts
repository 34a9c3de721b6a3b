/**
 * End to end through real iptables: an app namespace captured by `xsidecar iptables`, the sidecar
 * running there as UID 1337, and servers in a second namespace behind ClusterIPs.
 */
import t from 'tap';
import {
  createTopology,
  iptablesCli,
  netnsGate,
  peer,
  type Proc,
  runPeer,
  spawnNode,
  startSidecar,
  type Topology,
  writeTemp,
} from '../helpers/netns.js';

const gate = netnsGate();

interface ClientResult {
  ok: boolean;
  received: string;
  error?: string;
}

const tcp = (id: string) => ({ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: id, cluster: id } });
const staticCluster = (name: string, ip: string, port: number) => ({
  name,
  type: 'STATIC',
  connect_timeout: '1s',
  load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: ip, port_value: port } } } }] }] },
});

/** Istio's shape: capture listeners plus per-destination listeners that only receive hand-offs. */
function bootstrap(topo: Topology) {
  return {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 15000 } } },
    static_resources: {
      listeners: [
        {
          name: 'virtualOutbound',
          address: { socket_address: { address: '0.0.0.0', port_value: 15001 } },
          use_original_dst: true,
          filter_chains: [{ filter_chain_match: { destination_port: 15001 }, filters: [tcp('BlackHoleCluster')] }, { filters: [tcp('PassthroughCluster')] }],
        },
        {
          name: 'virtualInbound',
          address: { socket_address: { address: '0.0.0.0', port_value: 15006 } },
          listener_filters: [{ name: 'envoy.filters.listener.original_dst' }],
          filter_chains: [{ filters: [tcp('InboundPassthroughClusterIpv4')] }],
        },
        { name: '198.18.0.20_7000', address: { socket_address: { address: '198.18.0.20', port_value: 7000 } }, bind_to_port: false, filter_chains: [{ filters: [tcp('outbound|7000||svc-b')] }] },
        { name: '0.0.0.0_7001', address: { socket_address: { address: '0.0.0.0', port_value: 7001 } }, bind_to_port: false, filter_chains: [{ filters: [tcp('outbound|7001||svc-c')] }] },
        { name: '198.18.0.40_7000', address: { socket_address: { address: '198.18.0.40', port_value: 7000 } }, bind_to_port: false, filter_chains: [{ filters: [tcp('outbound|7000||dead')] }] },
      ],
      clusters: [
        { name: 'PassthroughCluster', type: 'ORIGINAL_DST', connect_timeout: '1s', lb_policy: 'CLUSTER_PROVIDED' },
        { name: 'InboundPassthroughClusterIpv4', type: 'ORIGINAL_DST', connect_timeout: '1s', lb_policy: 'CLUSTER_PROVIDED', upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } } },
        { name: 'BlackHoleCluster', type: 'STATIC' },
        staticCluster('outbound|7000||svc-b', topo.serverIp, 7100),
        staticCluster('outbound|7001||svc-c', topo.serverIp, 7200),
        staticCluster('outbound|7000||dead', topo.serverIp, 7999),
      ],
    },
  };
}

async function metric(ns: string, name: string, labels: string): Promise<number> {
  const r = await runPeer<{ status: number; body: string }>(ns, 'http-get', 'http://127.0.0.1:15090/stats/prometheus');
  const line = r.body.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(' ').pop()) : 0;
}

t.test('transparent L4 sidecar in network namespaces', { skip: gate.skip }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  const topo = createTopology(`l4${process.pid % 100000}`);
  const procs: Proc[] = [];
  t.teardown(() => {
    procs.forEach((p) => p.kill('SIGKILL'));
    topo.destroy();
  });
  for (const ip of ['198.18.0.10', '198.18.0.20', '198.18.0.30', '198.18.0.40']) topo.addClusterIp(ip);
  const serve = async (ns: string, name: string, host: string, port: number) => {
    const p = spawnNode(ns, peer('echo-server'), [name, host, String(port)]);
    procs.push(p);
    await p.waitJson<{ ready?: boolean }>((o) => o.ready === true);
  };
  await serve(topo.server, 'srv-a', '198.18.0.10', 7000);
  await serve(topo.server, 'srv-b', topo.serverIp, 7100);
  await serve(topo.server, 'srv-c', topo.serverIp, 7200);
  await serve(topo.app, 'app', '0.0.0.0', 9090);

  iptablesCli(topo.app); // Istio's injection defaults
  const sidecar = await startSidecar(topo.app, ['-c', writeTemp('l4.json', bootstrap(topo)), '--drain-timeout', '20s']);
  procs.push(sidecar);
  const client = (ns: string, host: string, port: number, ...parts: string[]) => runPeer<ClientResult>(ns, 'tcp-client', host, String(port), ...parts);

  t.test('outbound passthrough reaches the original destination, bytes both ways, half-close relayed', async (t) => {
    const r = await client(topo.app, '198.18.0.10', 7000, 'ping', 'pong');
    t.ok(r.ok, r.error ?? 'completed');
    const [echo, trailer] = r.received.split('\n');
    t.equal(echo, 'pingpong', 'every byte echoed back through the sidecar');
    t.match(trailer, new RegExp(`^srv-a\\|${topo.podIp}:\\d+\\|198\\.18\\.0\\.10:7000$`), 'the server saw the ClusterIP it was dialled on');
    t.equal(await metric(topo.app, 'xsidecar_upstream_cx_total', 'cluster="PassthroughCluster"'), 1, 'the connection went through the sidecar');
  });

  t.test('hand-off to the listener bound to exactly ClusterIP:port', async (t) => {
    const r = await client(topo.app, '198.18.0.20', 7000, 'hello');
    t.ok(r.ok, r.error ?? 'completed');
    t.match(r.received, new RegExp(`^hello\\nsrv-b\\|${topo.podIp}:\\d+\\|${topo.serverIp}:7100$`));
  });

  t.test('hand-off to the 0.0.0.0:port listener when no exact one exists', async (t) => {
    const r = await client(topo.app, '198.18.0.30', 7001, 'wild');
    t.ok(r.ok, r.error ?? 'completed');
    t.match(r.received, /^wild\nsrv-c\|/);
  });

  t.test('inbound capture through 15006 reaches the local app from 127.0.0.6', async (t) => {
    const r = await client(topo.server, topo.podIp, 9090, 'in');
    t.ok(r.ok, r.error ?? 'completed');
    t.match(r.received, new RegExp(`^in\\napp\\|127\\.0\\.0\\.6:\\d+\\|${topo.podIp.replace(/\./g, '\\.')}:9090$`));
  });

  t.test('loop guard closes connections aimed at a capture port and counts them', async (t) => {
    const direct = await client(topo.app, '127.0.0.1', 15001, 'loop');
    t.equal(direct.received, '', 'nothing was forwarded or echoed');
    const redirected = await client(topo.app, '198.18.0.10', 15001, 'loop');
    t.equal(redirected.received, '');
    t.equal(await metric(topo.app, 'xsidecar_loop_guard_total', 'listener="virtualOutbound"'), 2);
  });

  t.test('a dead upstream closes the caller promptly instead of hanging it', async (t) => {
    const r = await client(topo.app, '198.18.0.40', 7000, 'anyone');
    t.equal(r.received, '');
    t.not(r.error, 'timeout');
    t.equal(await metric(topo.app, 'xsidecar_upstream_cx_connect_fail_total', 'cluster="outbound|7000||dead"'), 1);
  });

  t.test('SIGTERM drains: not ready, no new connections, the open one finishes, exit 0', async (t) => {
    const held = spawnNode(topo.app, peer('tcp-client'), ['198.18.0.10', '7000', 'first', 'second', '--pause-after', '1', '--timeout', '10000']);
    procs.push(held);
    await held.waitJson<{ event?: string }>((o) => o.event === 'paused');
    sidecar.kill('SIGTERM');
    await sidecar.waitJson<{ msg?: string }>((o) => o.msg === 'draining');
    const health = await runPeer<{ status: number }>(topo.app, 'http-get', 'http://127.0.0.1:15021/healthz/ready');
    t.equal(health.status, 503, 'readiness fails while draining');
    const refused = await client(topo.app, '198.18.0.10', 7000, 'late');
    t.equal(refused.error, 'ECONNREFUSED', 'new connections are not accepted');
    held.child.stdin!.write('go\n');
    const done = await held.waitJson<ClientResult & { event?: string }>((o) => o.event === undefined);
    t.ok(done.ok, done.error ?? 'completed');
    t.match(done.received, /^firstsecond\nsrv-a\|/, 'the open connection finished normally');
    t.equal(await sidecar.exited, 0, 'exit code 0 after the drain');
  });
});

t.test('TPROXY inbound capture: the original destination is the accepted socket\'s local address', { skip: gate.skip }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  const topo = createTopology(`tp${process.pid % 100000}`);
  const procs: Proc[] = [];
  t.teardown(() => {
    procs.forEach((p) => p.kill('SIGKILL'));
    topo.destroy();
  });
  const app = spawnNode(topo.app, peer('echo-server'), ['app', '0.0.0.0', '9090']);
  procs.push(app);
  await app.waitJson<{ ready?: boolean }>((o) => o.ready === true);
  iptablesCli(topo.app, '-m', 'TPROXY');
  const cfg = {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 15000 } } },
    static_resources: {
      listeners: [
        {
          name: 'virtualInbound',
          address: { socket_address: { address: '0.0.0.0', port_value: 15006 } },
          transparent: true,
          listener_filters: [{ name: 'envoy.filters.listener.original_dst' }],
          filter_chains: [{ filters: [tcp('InboundPassthroughClusterIpv4')] }],
        },
      ],
      clusters: [{ name: 'InboundPassthroughClusterIpv4', type: 'ORIGINAL_DST', connect_timeout: '1s', lb_policy: 'CLUSTER_PROVIDED', upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } } }],
    },
  };
  // IP_TRANSPARENT needs CAP_NET_ADMIN, which Istio grants the proxy in TPROXY mode.
  procs.push(await startSidecar(topo.app, ['-c', writeTemp('tproxy.json', cfg)], { caps: ['net_admin'] }));
  const r = await runPeer<ClientResult>(topo.server, 'tcp-client', topo.podIp, '9090', 'tproxied');
  t.ok(r.ok, r.error ?? 'completed');
  t.match(r.received, new RegExp(`^tproxied\\napp\\|127\\.0\\.0\\.6:\\d+\\|${topo.podIp.replace(/\./g, '\\.')}:9090$`), 'delivered to the app from 127.0.0.6, on the port it was sent to');
  t.equal(await metric(topo.app, 'xsidecar_downstream_cx_total', 'listener="virtualInbound"'), 1, 'through the transparent listener');
});
