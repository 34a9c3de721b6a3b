/**
 * Bolt traffic from a real sofa-rpc-node client, routed by RouteConfigurations that a real ADS server
 * pushes: first by the destination (the ClusterIP domain), then by the interface name, then re-routed by
 * a push in the middle of a load, which must lose no call.
 */
import t from 'tap';
import { BoltClient, type BoltServer, startBoltServer, whenAtLeast } from '../helpers/sidecar.js';
import { AdsServer, adsBootstrap, cla, edsCluster, freePort, type Json, SidecarProc } from './harness.js';

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

/** Istio's per-port HTTP listener; Bolt bytes on it are sniffed and routed through its RDS routes. */
const httpListener = (port: number): Json => ({
  '@type': 'type.googleapis.com/envoy.config.listener.v3.Listener',
  name: `127.0.0.1_${port}`,
  address: { socket_address: { address: '127.0.0.1', port_value: port } },
  filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: { '@type': HCM, stat_prefix: 'bolt', rds: { route_config_name: 'bolt-routes', config_source: { ads: {}, resource_api_version: 'V3' } } } }] }],
  traffic_direction: 'OUTBOUND',
});

const routes = (vhosts: { domains: string[]; cluster: string }[]): Json => ({
  '@type': 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  name: 'bolt-routes',
  virtual_hosts: vhosts.map((v, i) => ({ name: `vh-${i}`, domains: v.domains, routes: [{ match: { prefix: '/' }, route: { cluster: v.cluster, timeout: '0s' } }] })),
  validate_clusters: false,
});

t.test('x-protocol routing from pushed RouteConfigurations', async (t) => {
  const a: BoltServer = await startBoltServer('A');
  const b: BoltServer = await startBoltServer('B');
  const port = await freePort();
  const ep = (s: BoltServer) => ({ address: '127.0.0.1', port: s.port });
  const clusters = [edsCluster('outbound|12200|v1|user'), edsCluster('outbound|12200|v2|user'), cla('outbound|12200|v1|user', [ep(a)]), cla('outbound|12200|v2|user', [ep(b)])];
  const ads = await AdsServer.start({ label: 'bolt', resources: [...clusters, httpListener(port), routes([{ domains: ['127.0.0.1', `127.0.0.1:${port}`], cluster: 'outbound|12200|v1|user' }])] });
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: ads.port }));
  const client = BoltClient.local(`127.0.0.1:${port}`);
  t.teardown(() => {
    client.proc.kill('SIGKILL');
    sidecar.kill();
    void ads.kill();
    a.proc.kill('SIGKILL');
    b.proc.kill('SIGKILL');
  });
  // Ready, not merely "the route's name is in the dump": a warming listener names it before its port is bound.
  t.equal(await sidecar.waitReady(), 200);

  t.test('the virtual host is found by the destination address (the ClusterIP domain)', async (t) => {
    const r = await client.batch('whoami', 50, 5);
    t.same(r.results, { '"A"': 50 }, JSON.stringify(r.errors));
  });

  t.test('a push that names the interface instead routes by the frame\'s service name', async (t) => {
    await ads.command({ cmd: 'update', version: 'r2', resources: [routes([{ domains: ['com.nodejs.test.TestService:1.0'], cluster: 'outbound|12200|v2|user' }])] });
    await sidecar.waitDump((d) => JSON.stringify(d).includes('com.nodejs.test.TestService:1.0'));
    const r = await client.batch('whoami', 50, 5);
    t.same(r.results, { '"B"': 50 }, 'open connection, new routes: requests follow the push');
  });

  t.test('re-routed by a push under load with zero failed calls', async (t) => {
    const started = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const load = client.batch('whoami', 4000, 16);
    await whenAtLeast(() => sidecar.metric('xsidecar_cluster_upstream_rq_total'), started + 500);
    await ads.command({ cmd: 'update', version: 'r3', resources: [routes([{ domains: ['com.nodejs.test.TestService:1.0'], cluster: 'outbound|12200|v1|user' }])] });
    const r = await load;
    t.equal(r.failed, 0, JSON.stringify(r.errors));
    t.ok((r.results['"B"'] ?? 0) > 0 && (r.results['"A"'] ?? 0) > 0, `served by B before the push and A after it: ${JSON.stringify(r.results)}`);
    const after = await client.batch('whoami', 50, 5);
    t.same(after.results, { '"A"': 50 });
  });

  t.test('istiod goes away under load: the last good config keeps serving', async (t) => {
    const started = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const load = client.batch('whoami', 3000, 16);
    await whenAtLeast(() => sidecar.metric('xsidecar_cluster_upstream_rq_total'), started + 500);
    await ads.command({ cmd: 'stop' });
    const r = await load;
    t.equal(r.failed, 0, JSON.stringify(r.errors));
    t.same(r.results, { '"A"': 3000 });
    await ads.command({ cmd: 'start' });
  });
});
