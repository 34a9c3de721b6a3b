/**
 * The sidecar and a test ADS server, each in its own process, over a real gRPC stream (state of the
 * world): the Istio fixture set applied and shown in /config_dump, readiness, ACK/NACK as istiod sees
 * them, a rejected push leaving the old config serving, istiod killed and restarted under load, and an
 * endpoint removal draining. Runs in the test's own network namespace: the capture listeners of the
 * fixtures are moved to free ports (the rest of each resource is as istiod sent it).
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { peer, Proc } from '../helpers/netns.js';
import {
  AdsServer,
  ECHO,
  echoWorld,
  GEO,
  REVIEWS,
  adsBootstrap,
  brokenListener,
  cla,
  connectionLoop,
  dumpSection,
  edsCluster,
  type Json,
  SidecarProc,
  tcpListener,
  tcpRoundTrip,
} from './harness.js';

const V1 = '2025-02-17T14:49:37Z/296';

t.test('ADS state of the world: a sidecar configured by a test istiod', async (t) => {
  const procs: { kill(s?: NodeJS.Signals): unknown }[] = [];
  t.teardown(() => procs.forEach((p) => p.kill('SIGKILL')));
  const { echoB, ports, resources } = await echoWorld(procs);
  let server = await AdsServer.start({ resources, version: V1 });
  procs.push(server);
  await server.command({ cmd: 'hold', types: ['route'] }); // routes come late: readiness must wait for them
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: server.port }));
  procs.push(sidecar);

  await t.test('not ready while listeners wait for their routes; ready once they arrive', async (t) => {
    await server.waitRequest(0, (r) => r.type === 'route' && r.kind === 'initial');
    await sleep(200);
    const ready = await sidecar.get('/ready');
    t.equal(ready.status, 503, '/ready is 503 before the first complete config');
    t.equal(ready.body.trim(), 'PRE_INITIALIZING');
    const dump = await sidecar.configDump();
    const warming = (dumpSection(dump, 'ListenersConfigDump').dynamic_listeners as Json[]).filter((l) => l.warming_state).map((l) => l.name);
    t.same(warming.sort(), ['0.0.0.0_9080', '10.68.42.69_8083'], 'the HTTP listeners are warming in config_dump');
    await server.command({ cmd: 'release', types: ['route'] });
    await sidecar.waitReady(15_000);
    t.same(await sidecar.get('/ready'), { status: 200, body: 'LIVE\n' });
  });

  await t.test('the request sequence istiod sees: order, node, ACKs', async (t) => {
    const reqs = await server.initialRequests();
    const first = reqs[0]!;
    t.equal(first.type, 'cluster', 'CDS first');
    t.same(first.names, [], 'wildcard');
    t.equal(first.node?.id, 'sidecar~10.1.2.3~geo-5c54dcd5bd-z5ghf.hr2~hr2.svc.cluster.local');
    t.match(first.node?.metadata, { NAMESPACE: 'hr2', NAME: 'geo-5c54dcd5bd-z5ghf', INSTANCE_IPS: '10.1.2.3', CLUSTER_ID: 'Kubernetes', INTERCEPTION_MODE: 'REDIRECT', ISTIO_VERSION: '1.18.2' });
    t.notOk('GENERATOR' in (first.node?.metadata ?? {}));
    t.notOk(reqs.slice(1).some((r) => r.node), 'the node goes on the first request only');
    const initial = reqs.filter((r) => r.kind === 'initial').map((r) => `${r.type}:${(r.names ?? []).join(',')}`);
    t.same(initial, ['cluster:', `endpoint:${ECHO},${REVIEWS}`, 'listener:', `route:9080,${GEO}`, 'nametable:'], 'CDS, EDS for the EDS clusters, LDS, RDS for the listeners\' routes, NDS');
    t.notOk(reqs.some((r) => (r.type === 'endpoint' || r.type === 'route') && (r.names ?? []).length === 0), 'never an EDS/RDS request with no names');
    const at = (type: string, kind: string) => reqs.findIndex((r) => r.type === type && r.kind === kind);
    t.ok(at('endpoint', 'initial') < at('cluster', 'ack'), 'EDS is asked for before the clusters are decoded and ACKed (istiod prepares it meanwhile)');
    t.ok(at('cluster', 'ack') < at('listener', 'initial'), 'LDS after the CDS ACK');
    const answered = await server.answered();
    t.ok(answered.length >= 5, `${answered.length} responses`);
    for (const { response, answer } of answered) {
      t.match(answer, { kind: 'ack', version: response.version, type: response.type }, `${response.type} response ${response.nonce} ACKed with its version`);
    }
  });

  await t.test('the whole Istio set is in /config_dump, Envoy-shaped, with versions', async (t) => {
    const dump = await sidecar.configDump();
    t.same(dump.configs.map((c) => String(c['@type']).split('.').pop()), ['BootstrapConfigDump', 'ClustersConfigDump', 'EndpointsConfigDump', 'ListenersConfigDump', 'RoutesConfigDump']);
    const clusters = dumpSection(dump, 'ClustersConfigDump');
    t.equal(clusters.version_info, V1);
    t.same((clusters.static_clusters as Json[]).map((c) => (c.cluster as Json).name), ['xds-grpc']);
    const active = clusters.dynamic_active_clusters as Json[];
    t.same(active.map((c) => (c.cluster as Json).name).sort(), ['BlackHoleCluster', 'InboundPassthroughClusterIpv4', 'PassthroughCluster', 'inbound|8083||', ECHO, REVIEWS].sort());
    const reviews = active.find((c) => (c.cluster as Json).name === REVIEWS)!;
    t.match(reviews, { version_info: V1, cluster: { '@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster', type: 'EDS', lb_policy: 'LEAST_REQUEST', connect_timeout: '10s' }, last_updated: /^\d{4}-\d\d-\d\dT/ });
    t.same(((reviews.cluster as Json).metadata as Json), { filter_metadata: { istio: { services: [{ host: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default' }] } } });
    const tlsMatch = ((reviews.cluster as Json).transport_socket_matches as Json[])[0]!;
    t.match(tlsMatch, { name: 'tlsMode-istio', transport_socket: { typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', sni: 'outbound_.9080_._.reviews.default.svc.cluster.local', common_tls_context: { alpn_protocols: ['istio-peer-exchange', 'istio'] } } } }, 'typed configs the client never decodes are printed expanded');
    t.same(((reviews.cluster as Json).filters as Json[])[0]!.typed_config, { '@type': 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange' }, 'Istio\'s own types stay opaque');
    const listeners = dumpSection(dump, 'ListenersConfigDump');
    t.equal(listeners.version_info, V1);
    const dyn = listeners.dynamic_listeners as Json[];
    t.same(dyn.map((l) => l.name).sort(), ['0.0.0.0_9080', '10.68.42.69_8083', '10.68.54.170_27017', 'echo-listener', 'virtualInbound', 'virtualOutbound']);
    for (const l of dyn) t.match(l, { active_state: { version_info: V1, listener: { '@type': 'type.googleapis.com/envoy.config.listener.v3.Listener', name: l.name } } }, `${l.name} active`);
    const clusterIp = dyn.find((l) => l.name === '10.68.54.170_27017')!;
    t.equal(((clusterIp.active_state as Json).listener as Json).bind_to_port, false);
    const routes = dumpSection(dump, 'RoutesConfigDump').dynamic_route_configs as Json[];
    t.same(routes.map((r) => (r.route_config as Json).name).sort(), ['9080', GEO]);
    const r9080 = routes.find((r) => (r.route_config as Json).name === '9080')!.route_config as Json;
    t.ok((r9080.virtual_hosts as Json[]).some((vh) => (vh.domains as string[]).includes('10.68.49.224')), 'ClusterIP among the domains');
    const eps = dumpSection(dump, 'EndpointsConfigDump').dynamic_endpoint_configs as Json[];
    t.same(eps.map((e) => (e.endpoint_config as Json).cluster_name).sort(), [ECHO, REVIEWS], 'only subscribed endpoints (alertmanager was never asked for)');
    const listenersText = (await sidecar.get('/listeners')).body;
    t.match(listenersText, new RegExp(`virtualOutbound::0\\.0\\.0\\.0:${ports.outbound}`), 'virtualOutbound bound');
    t.match(listenersText, new RegExp(`echo-listener::127\\.0\\.0\\.1:${ports.echo}`));
    const info = JSON.parse((await sidecar.get('/server_info')).body) as Json;
    t.match(info, { state: 'LIVE', xds: { api: 'GRPC', connected: true, ready: true }, node: { id: 'sidecar~10.1.2.3~geo-5c54dcd5bd-z5ghf.hr2~hr2.svc.cluster.local' } });
  });

  await t.test('traffic flows through an xDS listener to an EDS endpoint', async (t) => {
    const r = await tcpRoundTrip('127.0.0.1', ports.echo, 'hello');
    t.ok(r.ok, r.error ?? 'ok');
    t.match(r.received, /^hello\necho-a\|127\.0\.0\.1:/);
  });

  await t.test('a NACKed push leaves the old config serving and shows in config_dump', async (t) => {
    const mark = server.mark;
    // One push that would move echo-listener to another cluster, and adds a listener that cannot work.
    await server.command({ cmd: 'update', version: 'bad-1', resources: [tcpListener('echo-listener', '127.0.0.1', ports.echo, 'outbound|1||nowhere'), brokenListener('broken-listener')] });
    const nack = await server.waitRequest(mark, (r) => r.type === 'listener' && r.kind !== 'initial');
    t.equal(nack.kind, 'nack');
    t.equal(nack.version, V1, 'a NACK carries the last accepted version');
    t.equal(nack.error_detail?.code, 13);
    t.equal(nack.error_detail?.message, 'Listener "broken-listener": filter_chains[0].filters: no terminal network filter that xsidecar implements (tcp_proxy, http_connection_manager, xprotocol)');
    const r = await tcpRoundTrip('127.0.0.1', ports.echo, 'still');
    t.match(r.received, /^still\necho-a\|/, 'traffic still goes where the accepted config says');
    const listeners = dumpSection(await sidecar.configDump(), 'ListenersConfigDump');
    t.equal(listeners.version_info, V1);
    const dyn = listeners.dynamic_listeners as Json[];
    t.match(dyn.find((l) => l.name === 'broken-listener'), { error_state: { version_info: 'bad-1', details: nack.error_detail!.message, failed_configuration: { name: 'broken-listener' }, last_update_attempt: /T/ } });
    t.notOk(dyn.find((l) => l.name === 'broken-listener')!.active_state);
    t.match(dyn.find((l) => l.name === 'echo-listener'), { active_state: { version_info: V1 } });

    const mark2 = server.mark;
    const badCluster = { ...edsCluster(ECHO), cluster_type: { name: 'envoy.clusters.aggregate' } };
    await server.command({ cmd: 'update', version: 'bad-2', resources: [badCluster] });
    const cnack = await server.waitRequest(mark2, (r) => r.type === 'cluster' && r.kind === 'nack');
    t.equal(cnack.error_detail?.message, `Cluster "${ECHO}": cluster_type: custom cluster types are not supported`);
    const clusters = dumpSection(await sidecar.configDump(), 'ClustersConfigDump');
    t.match((clusters.dynamic_active_clusters as Json[]).find((c) => (c.cluster as Json | undefined)?.name === ECHO), { version_info: V1, error_state: { version_info: 'bad-2', details: cnack.error_detail!.message }, client_status: 'NACKED' });

    // A rejected cluster's EDS name is read ahead of the decode and asked for; once the cluster is NACKed it is
    // dropped again, and the EDS names are what they were.
    const before = server.requests().filter((r) => r.type === 'endpoint').pop()!.names ?? [];
    const mark4 = server.mark;
    const REJECTED = 'outbound|7001||rejected.default.svc.cluster.local';
    await server.command({ cmd: 'update', version: 'bad-3', resources: [{ ...edsCluster(REJECTED), upstream_bind_config: {} }] });
    const rnack = await server.waitRequest(mark4, (r) => r.type === 'cluster' && r.kind === 'nack');
    t.match(rnack.error_detail?.message, `Cluster "${REJECTED}": upstream_bind_config.source_address`);
    const ahead = await server.waitRequest(mark4, (r) => r.type === 'endpoint' && (r.names ?? []).includes(REJECTED));
    t.same([...(ahead.names ?? [])].sort(), [...before, REJECTED].sort(), 'the rejected cluster\'s EDS name was asked for ahead, with the names already wanted');
    const laterEds = () => {
      const eds = server.requests(mark4).filter((r) => r.type === 'endpoint');
      return eds.slice(eds.findIndex((r) => (r.names ?? []).includes(REJECTED)) + 1);
    };
    for (const deadline = Date.now() + 10_000; laterEds().length === 0 && Date.now() < deadline; ) await sleep(20);
    const dropped = laterEds()[0] ?? { names: ['(no EDS request after the one read ahead)'] };
    t.same([...(dropped.names ?? [])].sort(), [...before].sort(), 'after the NACK the EDS names are what they were');

    const mark3 = server.mark;
    await server.command({ cmd: 'set', version: 'v2', resources: resources.filter((x) => x['@type'] !== 'type.googleapis.com/istio.networking.nds.v1.NameTable') });
    await server.waitRequest(mark3, (r) => r.type === 'listener' && r.kind === 'ack' && r.version === 'v2');
    await server.waitRequest(mark3, (r) => r.type === 'cluster' && r.kind === 'ack' && r.version === 'v2');
    const fixed = await sidecar.waitDump((d) => dumpSection(d, 'ListenersConfigDump').version_info === 'v2');
    t.notOk((dumpSection(fixed, 'ListenersConfigDump').dynamic_listeners as Json[]).some((l) => l.error_state), 'a good push clears the rejections');
    t.notOk((dumpSection(fixed, 'ClustersConfigDump').dynamic_active_clusters as Json[]).some((c) => c.error_state));
  });

  await t.test('istiod killed and restarted under load: no failed connection, re-subscription with what the sidecar has', async (t) => {
    const loop = connectionLoop('127.0.0.1', ports.echo);
    await sleep(300);
    t.equal(await server.kill('SIGKILL'), null, 'istiod is gone');
    await sleep(1500);
    t.equal((await sidecar.get('/ready')).status, 200, 'still ready: the last good config serves');
    server = await AdsServer.start({ resources, version: 'v3', port: server.port, label: 'restarted' });
    procs.push(server);
    const cds = await server.waitRequest(0, (r) => r.type === 'cluster', 35_000);
    await server.waitRequest(0, (r) => r.type === 'route' && r.kind === 'ack' && r.version === 'v3', 10_000);
    const stats = await loop.stop();
    t.equal(stats.failed, 0, `no failed connection (${stats.ok} ok; errors: ${stats.errors.slice(0, 5).join(', ')})`);
    t.ok(stats.ok > 20, `connections kept flowing (${stats.ok})`);
    t.match(cds, { kind: 'initial', version: 'v2', nonce: '', node: { id: 'sidecar~10.1.2.3~geo-5c54dcd5bd-z5ghf.hr2~hr2.svc.cluster.local' } }, 'CDS again, with the version it holds');
    const again = server.requests().filter((r) => r.kind === 'initial');
    t.same(again.slice(0, 4).map((r) => [r.type, r.version, (r.names ?? []).join(',')]), [
      ['cluster', 'v2', ''],
      ['endpoint', 'v2', `${ECHO},${REVIEWS}`],
      ['listener', 'v2', ''],
      ['route', 'v2', `9080,${GEO}`],
    ], 'every type re-subscribed on the new stream, in order, with its names and accepted version');
    await sidecar.waitDump((d) => dumpSection(d, 'ClustersConfigDump').version_info === 'v3');
  });

  await t.test('an endpoint removed by EDS drains: the open connection finishes, new ones go to the new endpoint', async (t) => {
    const client = await startHeldClient(ports.echo);
    procs.push(client);
    const mark = server.mark;
    await server.command({ cmd: 'update', version: 'v4', resources: [cla(ECHO, [{ address: '127.0.0.1', port: echoB.port }])] });
    await server.waitRequest(mark, (r) => r.type === 'endpoint' && r.kind === 'ack' && r.version === 'v4');
    await sidecar.waitDump((d) => {
      const e = (dumpSection(d, 'EndpointsConfigDump').dynamic_endpoint_configs as Json[]).find((x) => (x.endpoint_config as Json).cluster_name === ECHO);
      return e?.version_info === 'v4';
    });
    const fresh = await tcpRoundTrip('127.0.0.1', ports.echo, 'new');
    t.match(fresh.received, /^new\necho-b\|/, 'a new connection uses the new endpoint');
    client.child.stdin!.write('go\n');
    const done = await client.waitJson<{ ok?: boolean; received?: string; event?: string }>((o) => o.event === undefined);
    t.ok(done.ok, 'the connection opened before the push finished normally');
    t.match(done.received, /^firstsecond\necho-a\|/, 'on the endpoint it started with');
  });

  sidecar.kill('SIGTERM');
});

/** A tcp-client peer that sends one part, then waits for "go" on stdin before the second. */
async function startHeldClient(port: number): Promise<Proc> {
  const p = new Proc(spawn(process.execPath, [peer('tcp-client'), '127.0.0.1', String(port), 'first', 'second', '--pause-after', '1', '--timeout', '15000'], { stdio: ['pipe', 'pipe', 'pipe'] }), 'held-client');
  await p.waitJson<{ event?: string }>((o) => o.event === 'paused');
  return p;
}
