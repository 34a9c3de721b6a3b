/**
 * The whole path with real peers and real capture: a sofa-rpc-node client in the app namespace dials a
 * ClusterIP; iptables sends it to the app's sidecar, which routes each Bolt request and balances it over
 * two provider pods; each provider's own sidecar captures it inbound and hands it to the provider.
 */
import t from 'tap';
import { passthroughCluster, staticCluster, virtualOutbound } from '../helpers/bootstrap.js';
import { createTopology, iptablesCli, netnsGate, peer, type Proc, runPeer, spawnNode, startSidecar, writeTemp } from '../helpers/netns.js';
import { BoltClient, readMetric, startBoltServer } from '../helpers/sidecar.js';

const gate = netnsGate();

const xproto = (routeConfig: object) => ({
  name: 'xsidecar.filters.network.xprotocol',
  typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'bolt', protocol: 'bolt', route_config: routeConfig },
});
const eds = (name: string, ips: string[]) => staticCluster(name, ips, 12200);

function appBootstrap(p1: string, p2: string) {
  return {
    static_resources: {
      listeners: [
        virtualOutbound(),
        {
          // Istio's per-port outbound listener: reached only by hand-off from virtualOutbound.
          name: '0.0.0.0_12200',
          address: { socket_address: { address: '0.0.0.0', port_value: 12200 } },
          bind_to_port: false,
          filter_chains: [
            xproto({
              name: '12200',
              virtual_hosts: [
                { name: 'user-service', domains: ['user-service.default.svc.cluster.local', '198.18.0.10'], routes: [{ match: { prefix: '/' }, route: { cluster: 'outbound|12200||user-service' } }] },
                { name: 'pinned', domains: ['198.18.0.11'], routes: [{ match: { prefix: '/' }, route: { cluster: 'outbound|12200|v1|user-service' } }] },
                { name: 'other-interface', domains: ['com.nodejs.test.OtherService:1.0'], routes: [{ match: { prefix: '/' }, route: { cluster: 'outbound|12200|v2|user-service' } }] },
              ],
            }),
          ].map((f) => ({ filters: [f] })),
        },
      ],
      clusters: [
        passthroughCluster(),
        eds('outbound|12200||user-service', [p1, p2]),
        eds('outbound|12200|v1|user-service', [p1]),
        eds('outbound|12200|v2|user-service', [p2]),
      ],
    },
  };
}

t.test('bolt through outbound and inbound sidecars in network namespaces', { skip: gate.skip }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  const topo = createTopology(`bm${process.pid % 100000}`, 2);
  const procs: Proc[] = [];
  t.teardown(() => {
    procs.forEach((p) => p.kill('SIGKILL'));
    topo.destroy();
  });
  for (const ip of ['198.18.0.10', '198.18.0.11']) topo.addClusterIp(ip);
  for (const [i, s] of topo.servers.entries()) {
    iptablesCli(s.ns);
    procs.push(await startSidecar(s.ns, [])); // the embedded default: inbound passthrough to the local app
    procs.push((await startBoltServer(`P${i + 1}`, '0.0.0.0', 12200, (script, args) => spawnNode(s.ns, script, args))).proc);
  }
  iptablesCli(topo.app);
  procs.push(await startSidecar(topo.app, ['-c', writeTemp('bolt-mesh.json', appBootstrap(topo.servers[0]!.ip, topo.servers[1]!.ip))]));
  const client = (clusterIp: string) => {
    const c = new BoltClient(spawnNode(topo.app, peer('bolt-client'), ['--server', `${clusterIp}:12200`]));
    procs.push(c.proc);
    return c;
  };

  t.test('requests on one connection to the ClusterIP are balanced across both provider pods', async (t) => {
    const r = await client('198.18.0.10').batch('whoami', 200, 20);
    t.equal(r.succeeded, 200, JSON.stringify(r.errors));
    t.same(r.results, { '"P1"': 100, '"P2"': 100 });
  });

  t.test('the virtual host is chosen by the ClusterIP, then by the interface name', async (t) => {
    const pinned = await client('198.18.0.11').batch('whoami', 20, 5);
    t.same(pinned.results, { '"P1"': 20 }, 'ClusterIP 198.18.0.11 has its own virtual host');
    const other = await client('198.18.0.11').batch('whoami', 20, 5, { service: 'com.nodejs.test.OtherService:1.0' });
    t.same(other.results, { '"other:P1"': 20 }, 'the ClusterIP domain wins over the interface domain');
    const byName = await client('198.18.0.10').call('plus', [20, 22]);
    t.same([byName.ok, byName.result], [true, 42]);
  });

  t.test('each provider received its calls through its own inbound sidecar', async (t) => {
    for (const s of topo.servers) {
      const r = await runPeer<{ body: string }>(s.ns, 'http-get', 'http://127.0.0.1:15090/stats/prometheus');
      t.ok(readMetric(r.body, 'xsidecar_upstream_cx_total', 'cluster="InboundPassthroughClusterIpv4"') >= 1, `${s.ns} inbound passthrough used`);
    }
  });
});
