/**
 * DNS universal addressing end to end: in the app namespace, capture rules with --redirect-dns send the
 * pod's DNS (to the resolv.conf nameserver, a BIND named in the server namespace) to the sidecar's DNS
 * proxy, which answers RPC interface names with the app's ClusterIP from its bootstrap table. A
 * sofa-rpc-node client and an apache-dubbo consumer dial interface names, glibc resolves them through
 * the captured DNS, the connections are captured to the sidecar, and requests for two interfaces behind
 * one ClusterIP go to different clusters by interface name; each provider's own sidecar delivers them.
 */
import t from 'tap';
import { passthroughCluster, staticCluster, virtualOutbound } from '../helpers/bootstrap.js';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createTopology, inNs, iptablesCli, netnsGate, peer, Proc, runPeer, spawnNode, startSidecar, writeTemp } from '../helpers/netns.js';
import { BoltClient, readMetric, startBoltServer } from '../helpers/sidecar.js';
import { namedProblem, startNamed } from '../dns/named.js';
import { DubboClient, startDubboProvider } from '../helpers/dubbo.js';

const gate = netnsGate();
const named = namedProblem();

const CLUSTER_IP = '198.18.0.10';
const NAMESERVER = '198.18.0.53';
const INTERFACES = ['com.alipay.userservice.interface1', 'com.nodejs.test.TestService', 'com.nodejs.test.OtherService', 'com.example.UserService', 'com.example.RoleService'];
const DUBBO = 20880;

const cluster = (name: string, ip: string, port = 12200) => staticCluster(name, [ip], port);

function appBootstrap(p1: string, p2: string) {
  return {
    static_resources: {
      listeners: [
        virtualOutbound(),
        {
          name: `${CLUSTER_IP}_12200`,
          address: { socket_address: { address: CLUSTER_IP, port_value: 12200 } },
          bind_to_port: false,
          filter_chains: [
            {
              filters: [
                {
                  name: 'xsidecar.filters.network.xprotocol',
                  typed_config: {
                    '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy',
                    stat_prefix: 'userservice',
                    protocol: 'bolt',
                    route_config: {
                      name: 'userservice',
                      virtual_hosts: [
                        {
                          // One app, one ClusterIP, several interfaces: each interface has its own cluster.
                          name: 'userservice',
                          domains: [CLUSTER_IP],
                          routes: [
                            { match: { prefix: '/com.nodejs.test.OtherService' }, route: { cluster: 'outbound|12200|other|userservice' } },
                            { match: { prefix: '/' }, route: { cluster: 'outbound|12200|test|userservice' } },
                          ],
                        },
                      ],
                    },
                  },
                },
              ],
            },
          ],
        },
        {
          // The same app's Dubbo port: an HTTP-typed port as Istio writes it, Dubbo sniffed on it.
          name: `${CLUSTER_IP}_${DUBBO}`,
          address: { socket_address: { address: CLUSTER_IP, port_value: DUBBO } },
          bind_to_port: false,
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
                    stat_prefix: 'dubbo',
                    route_config: {
                      name: String(DUBBO),
                      virtual_hosts: [
                        {
                          name: 'userservice-dubbo',
                          domains: [CLUSTER_IP],
                          routes: [
                            { match: { prefix: '/com.example.RoleService' }, route: { cluster: `outbound|${DUBBO}|role|userservice` } },
                            { match: { prefix: '/' }, route: { cluster: `outbound|${DUBBO}|user|userservice` } },
                          ],
                        },
                      ],
                    },
                  },
                },
              ],
            },
          ],
        },
        {
          // Envoy's DNS filter shape: this is the DNS proxy's config (127.0.0.1:15053, the interface table).
          name: 'dns',
          address: { socket_address: { protocol: 'UDP', address: '127.0.0.1', port_value: 15053 } },
          listener_filters: [
            {
              name: 'envoy.filters.udp.dns_filter',
              typed_config: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig',
                stat_prefix: 'dns',
                server_config: { inline_dns_table: { virtual_domains: INTERFACES.map((name) => ({ name, endpoint: { address_list: { address: [CLUSTER_IP] } } })) } },
              },
            },
          ],
        },
      ],
      clusters: [
        passthroughCluster(),
        cluster('outbound|12200|test|userservice', p1),
        cluster('outbound|12200|other|userservice', p2),
        cluster(`outbound|${DUBBO}|role|userservice`, p1, DUBBO),
        cluster(`outbound|${DUBBO}|user|userservice`, p2, DUBBO),
      ],
    },
  };
}

t.test('Bolt and Dubbo clients call interface names resolved through captured DNS', { skip: gate.skip || (named && !gate.problem && process.env.XSIDECAR_REQUIRE_NETNS !== '1' ? named : false) }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  if (named) return t.fail(named);
  const topo = createTopology(`dn${process.pid % 100000}`, 2);
  const netnsEtc = `/etc/netns/${topo.app}`;
  const procs: { kill(s?: NodeJS.Signals): void }[] = [];
  let bind: Awaited<ReturnType<typeof startNamed>> | undefined;
  t.teardown(async () => {
    procs.forEach((p) => p.kill('SIGKILL'));
    await bind?.stop();
    topo.destroy();
    rmSync(netnsEtc, { recursive: true, force: true });
  });
  // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: the pod's resolver config.
  mkdirSync(netnsEtc, { recursive: true });
  writeFileSync(`${netnsEtc}/resolv.conf`, `nameserver ${NAMESERVER}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`);

  for (const ip of [CLUSTER_IP, NAMESERVER]) topo.addClusterIp(ip);
  bind = await startNamed({ host: NAMESERVER, port: 53, spawnIn: (cmd, args) => new Proc(spawn('ip', ['netns', 'exec', topo.server, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }), 'named') });
  for (const [i, s] of topo.servers.entries()) {
    iptablesCli(s.ns);
    procs.push(await startSidecar(s.ns, []));
    procs.push((await startBoltServer(`P${i + 1}`, '0.0.0.0', 12200, (script, args) => spawnNode(s.ns, script, args))).proc);
    procs.push((await startDubboProvider(`P${i + 1}`, { host: '0.0.0.0', port: DUBBO, spawnFn: (script, args) => spawnNode(s.ns, script, args) })).proc);
  }
  const rules = iptablesCli(topo.app, '--redirect-dns', '--dry-run');
  t.match(rules, `-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d ${NAMESERVER}/32 -j REDIRECT --to-port 15053`, 'DNS capture toward the resolv.conf nameserver');
  iptablesCli(topo.app, '--redirect-dns');
  const sidecar = await startSidecar(topo.app, ['-c', writeTemp('dns-bolt.json', appBootstrap(topo.servers[0]!.ip, topo.servers[1]!.ip))]);
  procs.push(sidecar);
  t.ok(sidecar.lines.some((l) => l.includes('dns: proxy listening') && l.includes(NAMESERVER)), 'the proxy forwards to the resolv.conf nameserver');

  t.test('the pod resolves interface names through the captured DNS', async (t) => {
    const dig = (...args: string[]) => inNs(topo.app, 'dig', '+time=10', '+tries=2', '+short', ...args).trim();
    t.equal(dig('com.alipay.userservice.interface1'), CLUSTER_IP, 'dig to the nameserver, answered by the sidecar');
    t.equal(dig('+tcp', 'com.nodejs.test.OtherService'), CLUSTER_IP, 'over TCP too');
    t.equal(dig('www.fwd.test'), '192.0.2.80', 'other names reach the real nameserver');
    const getent = spawnSync('ip', ['netns', 'exec', topo.app, 'getent', 'ahostsv4', 'com.alipay.userservice.interface1'], { encoding: 'utf8' });
    t.match(getent.stdout, new RegExp(`^${CLUSTER_IP.replace(/\./g, '\\.')}\\s`), "glibc's resolver (search domains, ndots:5) gets the ClusterIP");
    const stats = await runPeer<{ body: string }>(topo.app, 'http-get', 'http://127.0.0.1:15090/stats/prometheus');
    t.ok(readMetric(stats.body, 'xsidecar_dns_queries_total', 'outcome="local"') >= 3, 'answered locally');
    t.ok(readMetric(stats.body, 'xsidecar_dns_queries_total', 'outcome="forwarded"') >= 1, 'forwarded');
  });

  t.test('sofa-rpc-node and Dubbo clients dial interface names; each interface reaches its own cluster', async (t) => {
    const client = new BoltClient(spawnNode(topo.app, peer('bolt-client'), ['--server', 'com.alipay.userservice.interface1:12200']));
    procs.push(client.proc);
    const test = await client.batch('whoami', 20, 4);
    t.same(test.results, { '"P1"': 20 }, JSON.stringify(test.errors));
    const other = await client.batch('whoami', 20, 4, { service: 'com.nodejs.test.OtherService:1.0' });
    t.same(other.results, { '"other:P2"': 20 }, 'same ClusterIP, another interface: the other cluster');
    const plus = await client.call('plus', [40, 2]);
    t.same([plus.ok, plus.result], [true, 42]);
    client.close();
    const byName = new BoltClient(spawnNode(topo.app, peer('bolt-client'), ['--server', 'com.nodejs.test.OtherService:12200']));
    procs.push(byName.proc);
    const r = await byName.call('whoami', [], { service: 'com.nodejs.test.OtherService:1.0' });
    t.same([r.ok, r.result], [true, 'other:P2'], 'a client that dials the interface it calls');
    byName.close();
    const dubbo = DubboClient.local('apache', 'com.example.UserService', DUBBO, (script, args) => spawnNode(topo.app, script, args));
    procs.push(dubbo.proc);
    const users = await dubbo.run({ method: 'getUser', args: ['7'], calls: 10, concurrency: 2 });
    t.same(users.results, { 'user:7@P2': 10 }, `a Dubbo consumer dials com.example.UserService: ${JSON.stringify(users.errors)}`);
    const roles = await dubbo.run({ service: 'com.example.RoleService', method: 'getRole', args: ['r'], calls: 10, concurrency: 2 });
    t.same(roles.results, { 'role:r@P1': 10 }, `the same ClusterIP, RoleService: the other cluster: ${JSON.stringify(roles.errors)}`);
    for (const s of topo.servers) {
      const m = await runPeer<{ body: string }>(s.ns, 'http-get', 'http://127.0.0.1:15090/stats/prometheus');
      t.ok(readMetric(m.body, 'xsidecar_upstream_cx_total', 'cluster="InboundPassthroughClusterIpv4"') >= 1, `${s.ns}: delivered by its inbound sidecar`);
    }
  });
});
