/**
 * Dubbo traffic from a real apache-dubbo-consumer, routed by Istio-shaped RouteConfigurations that a real
 * ADS server pushes (what a VirtualService with `headers` matches, a weighted split and a timeout becomes):
 * the virtual host by the destination first, then header matches on the frame's interface, method, version,
 * group and attachments; a push re-routes the open connection.
 */
import t from 'tap';
import { DubboClient, type DubboProvider, startDubboProvider } from '../helpers/dubbo.js';
import { AdsServer, adsBootstrap, cla, edsCluster, freePort, type Json, SidecarProc } from './harness.js';

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const V1 = 'outbound|20880|v1|user-app.default.svc.cluster.local';
const V2 = 'outbound|20880|v2|user-app.default.svc.cluster.local';

const httpListener = (port: number): Json => ({
  '@type': 'type.googleapis.com/envoy.config.listener.v3.Listener',
  name: `127.0.0.1_${port}`,
  address: { socket_address: { address: '127.0.0.1', port_value: port } },
  filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: { '@type': HCM, stat_prefix: 'dubbo', rds: { route_config_name: 'dubbo-routes', config_source: { ads: {}, resource_api_version: 'V3' } } } }] }],
  traffic_direction: 'OUTBOUND',
});

/** As istiod renders a VirtualService: exact header matches, then a default route with a weighted split. */
const routes = (port: number, weights: [number, number]): Json => ({
  '@type': 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  name: 'dubbo-routes',
  virtual_hosts: [
    {
      name: `user-app.default.svc.cluster.local:${port}`,
      domains: ['user-app.default.svc.cluster.local', `127.0.0.1:${port}`, '127.0.0.1'],
      routes: [
        { name: 'admin-group', match: { prefix: '/', headers: [{ name: 'group', string_match: { exact: 'admin' } }] }, route: { cluster: V2, timeout: '0s' } },
        { name: 'role-by-method', match: { prefix: '/', headers: [{ name: 'interface', string_match: { exact: 'com.example.RoleService' } }, { name: 'method', string_match: { prefix: 'get' } }] }, route: { cluster: V1, timeout: '0s' } },
        { name: 'v2', match: { prefix: '/', headers: [{ name: 'version', string_match: { exact: '2.0.0' } }] }, route: { cluster: V2, timeout: '0s' } },
        { name: 'tenant', match: { prefix: '/', headers: [{ name: 'x-tenant', string_match: { exact: 'acme' } }] }, route: { cluster: V2, timeout: '0s' } },
        { name: 'slow', match: { path: '/com.example.UserService/sleep' }, route: { cluster: V1, timeout: '0.4s' } },
        {
          name: 'default',
          match: { prefix: '/' },
          route: { weighted_clusters: { clusters: [{ name: V1, weight: weights[0] }, { name: V2, weight: weights[1] }] }, timeout: '0s', retry_policy: { retry_on: 'connect-failure,refused-stream', num_retries: 2 } },
        },
      ],
    },
  ],
  validate_clusters: false,
});

t.test('dubbo routed by pushed Istio-shaped RouteConfigurations', async (t) => {
  const a: DubboProvider = await startDubboProvider('A');
  const b: DubboProvider = await startDubboProvider('B');
  const port = await freePort();
  const ep = (s: DubboProvider) => ({ address: '127.0.0.1', port: s.port });
  const clusters = [edsCluster(V1), edsCluster(V2), cla(V1, [ep(a)]), cla(V2, [ep(b)])];
  const ads = await AdsServer.start({ label: 'dubbo', resources: [...clusters, httpListener(port), routes(port, [100, 0])] });
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: ads.port }));
  const client = DubboClient.local('apache', '127.0.0.1', port);
  t.teardown(() => {
    client.proc.kill('SIGKILL');
    sidecar.kill();
    void ads.kill();
    a.proc.kill('SIGKILL');
    b.proc.kill('SIGKILL');
  });
  t.equal(await sidecar.waitReady(), 200);

  t.test('header matches on group, interface and method, version and a custom attachment', async (t) => {
    const admin = await client.run({ service: 'com.example.RoleService', group: 'admin', method: 'getRole', args: ['x'], calls: 10 });
    t.same(admin.results, { 'admin-role:x@B': 10 }, JSON.stringify(admin.errors));
    const role = await client.run({ service: 'com.example.RoleService', method: 'getRole', args: ['x'], calls: 10 });
    t.same(role.results, { 'role:x@A': 10 });
    const v2 = await client.run({ version: '2.0.0', method: 'getUser', args: ['x'], calls: 10 });
    t.same(v2.results, { 'user-v2:x@B': 10 });
    const tenant = await client.run({ method: 'getUser', args: ['x'], attachments: { 'x-tenant': 'acme' }, calls: 10 });
    t.same(tenant.results, { 'user:x@B': 10 });
    const rest = await client.run({ method: 'getUser', args: ['x'], calls: 10 });
    t.same(rest.results, { 'user:x@A': 10 }, 'the default route: all weight on v1');
  });

  t.test('the route timeout (a path match on /service/method) answers with a Dubbo timeout', async (t) => {
    const r = await client.run({ method: 'sleep', args: [2000], timeout: 10_000 });
    t.match(Object.keys(r.errors)[0], /xsidecar timeout/);
    t.ok(r.elapsedMs < 1800, `after ${r.elapsedMs} ms`);
  });

  t.test('a VirtualService fault and a DestinationRule circuit breaker, pushed as istiod renders them', async (t) => {
    const faulty = routes(port, [50, 50]);
    const vh = (faulty.virtual_hosts as Json[])[0]!;
    // istiod: VirtualService http[].fault.abort {httpStatus: 503, percentage: {value: 100}} on a match.
    (vh.routes as Json[]).unshift({
      name: 'fault',
      match: { prefix: '/', headers: [{ name: 'method', string_match: { exact: 'whoami' } }] },
      route: { cluster: V1, timeout: '0s' },
      typed_per_filter_config: { 'envoy.filters.http.fault': { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault', abort: { http_status: 503, percentage: { numerator: 1000000, denominator: 'MILLION' } } } },
    });
    // istiod: DestinationRule trafficPolicy.connectionPool.http.http2MaxRequests: 1 and outlierDetection.
    const limited = { ...edsCluster(V2), circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 1, max_retries: 4294967295, track_remaining: true }] }, outlier_detection: { consecutive_5xx: 5, interval: '10s', base_ejection_time: '30s', max_ejection_percent: 100, enforcing_consecutive_5xx: 100, enforcing_success_rate: 0 } };
    await ads.command({ cmd: 'update', version: 'r-dr', resources: [limited, faulty] });
    await sidecar.waitDump((d) => JSON.stringify(d).includes('envoy.filters.http.fault') && JSON.stringify(d).includes('"max_requests":1'));
    const aborted = await client.run({ method: 'whoami', calls: 3 });
    t.equal(aborted.failed, 3);
    t.match(Object.keys(aborted.errors)[0], /fault filter abort \(http 503\)/);
    const burst = await client.run({ method: 'sleep', args: [300], attachments: { 'x-tenant': 'acme' }, calls: 6, concurrency: 6 });
    t.equal(burst.ok, 1, `max_requests 1 on v2: ${JSON.stringify(burst.results)}`);
    t.match(Object.keys(burst.errors)[0], /xsidecar overflow/);
    t.equal(await sidecar.metric('xsidecar_xds_updates_total', 'type="route",result="accepted"'), 2, 'the first routes and this push, each counted as accepted');
    t.equal(await sidecar.metric('xsidecar_xds_updates_total', 'result="rejected"'), 0);
    await ads.command({ cmd: 'update', version: 'r-plain', resources: [edsCluster(V2), routes(port, [100, 0])] });
    await sidecar.waitDump((d) => !JSON.stringify(d).includes('envoy.filters.http.fault'));
  });

  t.test('a push that shifts the weights re-routes the open connection', async (t) => {
    await ads.command({ cmd: 'update', version: 'r2', resources: [routes(port, [50, 50])] });
    await sidecar.waitDump((d) => JSON.stringify(d).includes('"weight":50'));
    const r = await client.run({ method: 'whoami', calls: 2000, concurrency: 40 });
    t.equal(r.ok, 2000, JSON.stringify(r.errors));
    const shareA = (r.results.A ?? 0) / 2000;
    t.ok(shareA > 0.45 && shareA < 0.55, `share of A is ${shareA}`);
  });
});
