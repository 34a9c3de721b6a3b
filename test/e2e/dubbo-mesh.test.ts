/**
 * Dubbo along the whole path with real peers and real capture: an apache-dubbo-consumer in the app
 * namespace dials a ClusterIP; iptables sends it to the app's sidecar, which routes each Dubbo request (by
 * the ClusterIP's virtual host, then by interface, version and group) and balances it over two provider
 * pods; each provider's own sidecar captures it inbound and hands it to the apache-dubbo-service provider.
 */
import t from 'tap';
import { passthroughCluster, staticCluster, virtualOutbound } from '../helpers/bootstrap.js';
import { DubboClient, startDubboProvider } from '../helpers/dubbo.js';
import { createTopology, iptablesCli, netnsGate, type Proc, runPeer, spawnNode, startSidecar, writeTemp } from '../helpers/netns.js';
import { readMetric } from '../helpers/sidecar.js';

const gate = netnsGate();
const PORT = 20880;

const eds = (name: string, ips: string[]) => staticCluster(name, ips, PORT);
const header = (name: string, exact: string) => ({ name, string_match: { exact } });

function appBootstrap(p1: string, p2: string) {
  const route = (cluster: string, ...headers: object[]) => ({ match: { prefix: '/', headers }, route: { cluster } });
  return {
    static_resources: {
      listeners: [
        virtualOutbound(),
        {
          // Istio's per-port outbound listener (an HTTP-typed port here): Dubbo is sniffed on it.
          name: `0.0.0.0_${PORT}`,
          address: { socket_address: { address: '0.0.0.0', port_value: PORT } },
          bind_to_port: false,
          filter_chains: [{
            filters: [{
              name: 'envoy.filters.network.http_connection_manager',
              typed_config: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                stat_prefix: 'dubbo',
                route_config: {
                  name: String(PORT),
                  virtual_hosts: [
                    { name: 'user-app', domains: ['user-app.default.svc.cluster.local', '198.18.0.20'], routes: [route('outbound|20880|v2|user-app', header('version', '2.0.0')), route('outbound|20880||user-app')] },
                    { name: 'pinned', domains: ['198.18.0.21'], routes: [route('outbound|20880|v1|user-app', header('group', 'admin')), route('outbound|20880|v2|user-app')] },
                  ],
                },
              },
            }],
          }],
        },
      ],
      clusters: [
        passthroughCluster(),
        eds('outbound|20880||user-app', [p1, p2]),
        eds('outbound|20880|v1|user-app', [p1]),
        eds('outbound|20880|v2|user-app', [p2]),
      ],
    },
  };
}

t.test('dubbo through outbound and inbound sidecars in network namespaces', { skip: gate.skip }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  const topo = createTopology(`dm${process.pid % 100000}`, 2);
  const procs: Proc[] = [];
  t.teardown(() => {
    procs.forEach((p) => p.kill('SIGKILL'));
    topo.destroy();
  });
  for (const ip of ['198.18.0.20', '198.18.0.21']) topo.addClusterIp(ip);
  for (const [i, s] of topo.servers.entries()) {
    iptablesCli(s.ns);
    procs.push(await startSidecar(s.ns, [])); // the embedded default: inbound passthrough to the local app
    const inNs = (script: string, args: string[]) => spawnNode(s.ns, script, args);
    procs.push((await startDubboProvider(`P${i + 1}`, { host: '0.0.0.0', port: PORT, spawnFn: inNs })).proc);
  }
  iptablesCli(topo.app);
  procs.push(await startSidecar(topo.app, ['-c', writeTemp('dubbo-mesh.json', appBootstrap(topo.servers[0]!.ip, topo.servers[1]!.ip))]));
  const client = (clusterIp: string) => {
    const c = DubboClient.local('apache', clusterIp, PORT, (script, args) => spawnNode(topo.app, script, args));
    procs.push(c.proc);
    return c;
  };

  t.test('calls on one connection to the ClusterIP are balanced across both provider pods', async (t) => {
    const r = await client('198.18.0.20').run({ method: 'getUser', args: ['1'], calls: 200, concurrency: 20 });
    t.equal(r.ok, 200, JSON.stringify(r.errors));
    t.same(r.results, { 'user:1@P1': 100, 'user:1@P2': 100 });
  });

  t.test('the virtual host is chosen by the ClusterIP, then routes match version and group', async (t) => {
    const c = client('198.18.0.20');
    const v2 = await c.run({ version: '2.0.0', method: 'getUser', args: ['2'], calls: 20, concurrency: 5 });
    t.same(v2.results, { 'user-v2:2@P2': 20 }, JSON.stringify(v2.errors));
    const pinned = client('198.18.0.21');
    const admin = await pinned.run({ service: 'com.example.RoleService', group: 'admin', method: 'getRole', args: ['g'], calls: 20, concurrency: 5 });
    t.same(admin.results, { 'admin-role:g@P1': 20 }, `group admin on ClusterIP .21 goes to v1: ${JSON.stringify(admin.errors)}`);
    const rest = await pinned.run({ method: 'getUser', args: ['3'], calls: 20, concurrency: 5 });
    t.same(rest.results, { 'user:3@P2': 20 }, 'everything else on .21 goes to v2');
  });

  t.test('each provider received its calls through its own inbound sidecar', async (t) => {
    for (const s of topo.servers) {
      const r = await runPeer<{ body: string }>(s.ns, 'http-get', 'http://127.0.0.1:15090/stats/prometheus');
      t.ok(readMetric(r.body, 'xsidecar_upstream_cx_total', 'cluster="InboundPassthroughClusterIpv4"') >= 1, `${s.ns} inbound passthrough used`);
    }
  });
});
