/**
 * Incremental xDS (DeltaAggregatedResources) when the bootstrap's ads_config says DELTA_GRPC: wildcard and
 * named subscriptions, changes and removals, NACK, and a re-opened stream announcing what it holds.
 */
import t from 'tap';
import {
  AdsServer,
  ECHO,
  echoWorld,
  GEO,
  REVIEWS,
  adsBootstrap,
  brokenListener,
  cla,
  dumpSection,
  type Json,
  SidecarProc,
  tcpRoundTrip,
} from './harness.js';

t.test('ADS delta: the sidecar on DeltaAggregatedResources', async (t) => {
  const procs: { kill(s?: NodeJS.Signals): unknown }[] = [];
  t.teardown(() => procs.forEach((p) => p.kill('SIGKILL')));
  const { echoB, ports, resources } = await echoWorld(procs);
  const server = await AdsServer.start({ resources, version: 'd1', label: 'delta' });
  procs.push(server);
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: server.port, apiType: 'DELTA_GRPC' }));
  procs.push(sidecar);
  t.equal(await sidecar.waitReady(), 200, 'LIVE on a delta stream');

  await t.test('subscriptions: wildcard CDS/LDS/NDS, named EDS/RDS, every response ACKed', async (t) => {
    const reqs = await server.initialRequests();
    t.ok(reqs.every((r) => r.api === 'delta'));
    t.match(reqs[0], { type: 'cluster', kind: 'initial', subscribe: [], node: { id: 'sidecar~10.1.2.3~geo-5c54dcd5bd-z5ghf.hr2~hr2.svc.cluster.local' } });
    const initial = reqs.filter((r) => r.kind === 'initial').map((r) => `${r.type}:${(r.subscribe ?? []).join(',')}`);
    t.same(initial, ['cluster:', `endpoint:${ECHO},${REVIEWS}`, 'listener:', `route:9080,${GEO}`, 'nametable:']);
    const at = (type: string, kind: string) => reqs.findIndex((r) => r.type === type && r.kind === kind);
    t.ok(at('endpoint', 'initial') < at('cluster', 'ack'), 'EDS is asked for before the clusters are decoded and ACKed');
    for (const { response, answer } of await server.answered()) t.match(answer, { kind: 'ack', type: response.type }, `${response.type} ${response.nonce} ACKed`);
    t.match(await tcpRoundTrip('127.0.0.1', ports.echo, 'hi'), { ok: true, received: /^hi\necho-a\|/ });
  });

  await t.test('a change sends only what changed; a removal removes', async (t) => {
    const mark = server.mark;
    await server.command({ cmd: 'update', version: 'd2', resources: [cla(ECHO, [{ address: '127.0.0.1', port: echoB.port }])] });
    const res = await server.proc.waitJson<Json>((o) => o.event === 'response' && o.type === 'endpoint' && o.version === 'd2');
    t.same(res.names, [ECHO], 'only the changed ClusterLoadAssignment is sent');
    await server.waitRequest(mark, (r) => r.type === 'endpoint' && r.kind === 'ack' && r.nonce === res.nonce);
    const dump = await sidecar.waitDump((d) => (dumpSection(d, 'EndpointsConfigDump').dynamic_endpoint_configs as Json[]).some((e) => e.version_info === 'd2'));
    const eps = dumpSection(dump, 'EndpointsConfigDump').dynamic_endpoint_configs as Json[];
    t.same(eps.map((e) => [(e.endpoint_config as Json).cluster_name, e.version_info]).sort(), [[ECHO, 'd2'], [REVIEWS, 'd1']], 'per-resource versions');
    t.match(await tcpRoundTrip('127.0.0.1', ports.echo, 'moved'), { ok: true, received: /^moved\necho-b\|/ });

    await server.command({ cmd: 'remove', version: 'd3', type: 'listener', names: ['10.68.54.170_27017'] });
    const gone = await sidecar.waitDump((d) => !(dumpSection(d, 'ListenersConfigDump').dynamic_listeners as Json[]).some((l) => l.name === '10.68.54.170_27017'));
    t.equal((dumpSection(gone, 'ListenersConfigDump').dynamic_listeners as Json[]).length, 5, 'the other listeners stay');
  });

  await t.test('NACK over delta', async (t) => {
    const mark = server.mark;
    await server.command({ cmd: 'update', version: 'd4', resources: [brokenListener('broken')] });
    const nack = await server.waitRequest(mark, (r) => r.type === 'listener' && r.kind === 'nack');
    t.match(nack.error_detail, { code: 13, message: 'Listener "broken": filter_chains[0].filters: no terminal network filter that xsidecar implements (tcp_proxy, http_connection_manager, xprotocol)' });
    const dump = await sidecar.configDump();
    t.match((dumpSection(dump, 'ListenersConfigDump').dynamic_listeners as Json[]).find((l) => l.name === 'broken'), { error_state: { version_info: 'd4' } });
    await server.command({ cmd: 'remove', version: 'd5', type: 'listener', names: ['broken'] });
  });

  await t.test('a new stream tells the server what the sidecar already has', async (t) => {
    const mark = server.mark;
    await server.command({ cmd: 'kill-streams' });
    const cds = await server.waitRequest(mark, (r) => r.type === 'cluster' && r.kind === 'initial', 35_000);
    const eds = await server.waitRequest(mark, (r) => r.type === 'endpoint' && r.kind === 'initial');
    t.same(Object.keys(cds.initial_resource_versions ?? {}).sort(), ['BlackHoleCluster', 'InboundPassthroughClusterIpv4', 'PassthroughCluster', 'inbound|8083||', ECHO, REVIEWS].sort());
    t.same(eds.subscribe?.slice().sort(), [ECHO, REVIEWS]);
    t.same(eds.initial_resource_versions, { [ECHO]: 'd2', [REVIEWS]: 'd1' });
    const res = await server.proc.waitJson<Json>((o) => o.event === 'response' && o.type === 'endpoint' && Number(o.stream) > 1);
    t.same(res.names, [], 'nothing is resent that the sidecar already holds');
    t.equal((await sidecar.get('/ready')).status, 200);
  });

  sidecar.kill('SIGTERM');
});
