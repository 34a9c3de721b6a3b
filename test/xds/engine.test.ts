/**
 * The xDS engine without the wire: what gets published when, NACK texts, warming, rejections kept for
 * /config_dump. Resources are real protobuf Anys built from the Istio fixtures.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import t from 'tap';
import type { Cluster, HttpConnectionManagerConfig, Listener } from '../../src/config/model.js';
import { XdsEngine, type NameTable } from '../../src/xds/engine.js';
import { loadXdsProtos } from '../../src/xds/protos.js';
import type { Published } from '../../src/xds/snapshot-builder.js';
import type { ResourceKind } from '../../src/xds/type-urls.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';
import { afterBuild, DSB, encodeAny, engineInto, GEO, type Json, REVIEWS, readFixture, staticCluster } from './harness.js';

const protos = loadXdsProtos();
const silent = pino({ level: 'silent' });
const fx = (f: string) => readFixture(DSB, f);
const tick = afterBuild;
/** One turn of the event loop: the next response of a push comes no sooner (engine.ts, rebuild). */
const turn = () => new Promise((r) => setImmediate(r));

function setup(o: { edsMs?: number; rdsMs?: number; fetchMs?: number; coalesceMs?: number; statics?: { listeners?: Listener[]; clusters?: Cluster[] } } = {}) {
  const published: Published[] = [];
  const tables: NameTable[] = [];
  const engine = new XdsEngine({
    protos,
    statics: { listeners: o.statics?.listeners ?? [], clusters: o.statics?.clusters ?? [] },
    warming: { edsMs: o.edsMs ?? 0, rdsMs: o.rdsMs ?? 0 },
    fetchTimeoutMs: { cluster: o.fetchMs ?? 0, listener: o.fetchMs ?? 0 },
    coalesceMs: o.coalesceMs,
    publish: async (p) => void published.push(p),
    onNameTable: (nt) => tables.push(nt),
    log: silent,
  });
  const send = async (kind: ResourceKind, version: string, resources: Json[], replaceAll = kind === 'cluster' || kind === 'listener') => {
    const nack = engine.handle(kind, { items: resources.map((r) => ({ any: encodeAny(r) })), version, replaceAll });
    await tick();
    return nack;
  };
  return { engine, published, tables, send };
}

const clusters = () => [fx('cluster_BlackHoleCluster.json'), fx('cluster_PassthroughCluster.json'), fx('cluster_outbound_9080_reviews.json')];
const listeners = () => [fx('listener_virtualOutbound.json'), fx('listener_0.0.0.0_9080_http.json'), fx('listener_10.68.42.69_8083_http_clusterip.json'), fx('listener_10.68.54.170_27017_tcp.json')];

const badListener = (name: string) => ({
  '@type': TYPE_URL.listener,
  name,
  address: { socket_address: { address: '10.9.9.9', port_value: 9 } },
  filter_chains: [{ filters: [{ name: 'istio.stats', typed_config: { '@type': 'type.googleapis.com/stats.PluginConfig' } }] }],
});

t.test('nothing is published until the config is complete: clusters with endpoints, listeners with routes', async (t) => {
  const { engine, published, send } = setup();
  t.equal(await send('cluster', 'c1', clusters()), undefined);
  t.same([...engine.wantedNames('endpoint')], [REVIEWS], 'EDS names: the EDS clusters');
  t.equal(await send('endpoint', 'c1', [fx('cla_outbound_9080_reviews.json')], false), undefined);
  t.equal(published.length, 0, 'LDS has not answered yet');
  await send('listener', 'l1', listeners());
  t.same([...engine.wantedNames('route')].sort(), ['9080', GEO], 'RDS names: the listeners\' rds');
  t.same(engine.status().warming.listeners.map((r) => r.name).sort(), ['0.0.0.0_9080', '10.68.42.69_8083'], 'listeners wait for their routes');
  await send('route', 'r1', [fx('route_9080.json')], false);
  t.equal(published.length, 0, 'one route still missing');
  t.notOk(engine.status().ready);
  await send('route', 'r1', [fx(`route_geo.hotel-res.svc.cluster.local_8083.json`)], false);
  t.equal(published.length, 1, 'published once complete');
  const s = published[0]!.snapshot;
  t.same([...s.listeners.keys()].sort(), ['0.0.0.0_9080', '10.68.42.69_8083', '10.68.54.170_27017', 'virtualOutbound']);
  t.same([...s.clusters.keys()].sort(), ['BlackHoleCluster', 'PassthroughCluster', REVIEWS]);
  t.same(s.endpoints.get(REVIEWS)?.endpoints.map((e) => `${e.address}:${e.port}`), ['172.16.18.246:9080']);
  t.same([...s.routes.keys()].sort(), ['9080', GEO]);
  t.same(published[0]!.versions, { cluster: 'c1', endpoint: 'c1', listener: 'l1', route: 'r1' });
  t.ok(engine.status().ready, 'ready once applied');
});

t.test('a listener whose new routes have not arrived keeps serving its old version; other updates go ahead', async (t) => {
  const { engine, published, send } = setup();
  await send('cluster', 'c1', clusters());
  await send('endpoint', 'e1', [fx('cla_outbound_9080_reviews.json')], false);
  await send('listener', 'l1', listeners());
  await send('route', 'r1', [fx('route_9080.json'), fx(`route_geo.hotel-res.svc.cluster.local_8083.json`)], false);
  t.equal(published.length, 1);

  const changed = listeners();
  const hcm = (((changed[1]!.filter_chains as Json[])[0]!.filters as Json[]).find((f) => f.name === 'envoy.filters.network.http_connection_manager')!.typed_config as Json);
  (hcm.rds as Json).route_config_name = '9081';
  await send('listener', 'l2', changed);
  t.same([...engine.wantedNames('route')].sort(), ['9080', '9081', GEO], 'the old version still needs 9080 while the new one warms');
  const rdsOf = (p: Published) => (p.snapshot.listeners.get('0.0.0.0_9080')!.filterChains[0]!.filters.at(-1) as HttpConnectionManagerConfig).rdsName;
  t.equal(rdsOf(published.at(-1)!), '9080', 'old version live');
  t.equal(published.at(-1)!.resources.listener.get('0.0.0.0_9080')!.version, 'l1');
  t.same(engine.status().warming.listeners.map((r) => `${r.name}@${r.version}`), ['0.0.0.0_9080@l2']);

  const cla = fx('cla_outbound_9080_reviews.json');
  (((cla.endpoints as Json[])[0]!.lb_endpoints as Json[])[0]!.endpoint as Json).address = { socket_address: { address: '172.16.18.247', port_value: 9080 } };
  const before = published.length;
  await send('endpoint', 'e2', [cla], false);
  t.equal(published.length, before + 1, 'an endpoint update is not held back by the warming listener');
  t.same(published.at(-1)!.snapshot.endpoints.get(REVIEWS)?.endpoints.map((e) => e.address), ['172.16.18.247']);
  t.equal(rdsOf(published.at(-1)!), '9080');

  const r9081 = fx('route_9080.json');
  r9081.name = '9081';
  await send('route', 'r2', [r9081], false);
  t.equal(rdsOf(published.at(-1)!), '9081', 'the new version goes live with its route');
  t.same(engine.status().warming.listeners, []);
});

t.test('responses handled back to back make one Snapshot, built after them, and the names it needs are synced', async (t) => {
  const published: Published[] = [];
  let synced = 0;
  const engine = engineInto(published, { onWantedNamesChanged: () => synced++ });
  const handle = (kind: ResourceKind, version: string, resources: Json[], replaceAll: boolean) =>
    engine.handle(kind, { items: resources.map((r) => ({ any: encodeAny(r) })), version, replaceAll });
  // As a push's responses are read together: no turn of the event loop between them.
  t.equal(handle('cluster', 'v1', clusters(), true), undefined);
  t.equal(handle('endpoint', 'v1', [fx('cla_outbound_9080_reviews.json')], false), undefined);
  t.equal(handle('listener', 'v1', listeners(), true), undefined);
  t.equal(handle('route', 'v1', [fx('route_9080.json'), fx(`route_geo.hotel-res.svc.cluster.local_8083.json`)], false), undefined);
  t.equal(published.length, 0, 'nothing built while they are handled');
  await tick();
  t.equal(published.length, 1, 'one Snapshot for the four');
  t.same(published[0]!.versions, { cluster: 'v1', endpoint: 'v1', listener: 'v1', route: 'v1' });
  t.ok(engine.status().ready);
  t.equal(synced, 0, 'nothing warming: the names wanted as the responses were handled stand');

  const changed = listeners();
  const hcm = (((changed[1]!.filter_chains as Json[])[0]!.filters as Json[]).find((f) => f.name === 'envoy.filters.network.http_connection_manager')!.typed_config as Json);
  (hcm.rds as Json).route_config_name = '9081';
  handle('listener', 'v2', changed, true);
  await tick();
  t.equal(synced, 1, 'a listener started warming: the names are synced');
  t.same([...engine.wantedNames('route')].sort(), ['9080', '9081', GEO], 'its old version, live, still needs 9080');
  const r9081 = fx('route_9080.json');
  r9081.name = '9081';
  handle('route', 'v2', [r9081], false);
  await tick();
  t.equal(synced, 2, 'it went live: synced again');
  t.same([...engine.wantedNames('route')].sort(), ['9081', GEO], '9080 no longer wanted');
  t.equal(published.length, 3);

  const cla = fx('cla_outbound_9080_reviews.json');
  (((cla.endpoints as Json[])[0]!.lb_endpoints as Json[])[0]!.endpoint as Json).address = { socket_address: { address: '172.16.18.247', port_value: 9080 } };
  handle('endpoint', 'v2', [cla], false);
  engine.stop();
  await tick();
  t.equal(published.length, 3, 'stopped: a build queued before is dropped');
});

t.test('a NACK names the resource and field, changes nothing, and is remembered until fixed', async (t) => {
  const { engine, published, send } = setup({ statics: { clusters: [{ name: 'xds-grpc', type: 'STATIC', connectTimeoutMs: 1000, lbPolicy: 'ROUND_ROBIN', circuitBreakers: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 }, healthChecks: [], raw: staticCluster('xds-grpc', '127.0.0.1', 15010) }] } });
  await send('cluster', 'c1', clusters());
  await send('endpoint', 'e1', [fx('cla_outbound_9080_reviews.json')], false);
  await send('listener', 'l1', [fx('listener_virtualOutbound.json'), fx('listener_10.68.54.170_27017_tcp.json')]);
  t.equal(published.length, 1);

  const nack = await send('listener', 'l2', [fx('listener_virtualOutbound.json'), badListener('bad')]);
  t.equal(nack, 'Listener "bad": filter_chains[0].filters: no terminal network filter that xsidecar implements (tcp_proxy, http_connection_manager, xprotocol)');
  t.equal(published.length, 1, 'nothing published');
  const st = engine.status();
  t.equal(st.versions.listener, 'l1', 'the accepted version stays');
  t.match(st.rejected.listener, [{ name: 'bad', version: 'l2', details: nack, raw: { name: 'bad' } }]);

  const moved = fx('listener_10.68.54.170_27017_tcp.json');
  moved.name = 'second';
  (moved.address as Json).socket_address = { address: '0.0.0.0', port_value: 15001 };
  moved.bind_to_port = true;
  t.equal(await send('listener', 'l3', [fx('listener_virtualOutbound.json'), moved]), 'Listener "second": address: 0.0.0.0:15001 is already used by listener "virtualOutbound"');

  const shadow = clusters();
  shadow.push(staticCluster('xds-grpc', '10.0.0.1', 1) as Json);
  (shadow.at(-1) as Json)['@type'] = TYPE_URL.cluster;
  t.equal(await send('cluster', 'c2', shadow), 'Cluster "xds-grpc": name: a static cluster has this name');

  const two = [badListener('bad1'), badListener('bad2')];
  t.match(await send('listener', 'l4', two), /^Listener "bad1": .*\nListener "bad2": /, 'every bad resource is listed');

  t.equal(await send('listener', 'l5', [fx('listener_virtualOutbound.json')]), undefined);
  t.same(engine.status().rejected.listener, [], 'an accepted state of the world clears the rejections');
  t.equal(published.at(-1)!.snapshot.listeners.size, 1);
});

/** An engine with the reviews cluster, its endpoints and no listeners in force, and how many Snapshots that took. */
async function configured(coalesceMs?: number) {
  const s = setup({ coalesceMs });
  await s.send('cluster', 'c1', clusters());
  await s.send('endpoint', 'e1', [fx('cla_outbound_9080_reviews.json')], false);
  await s.send('listener', 'l1', []);
  return { ...s, before: s.published.length };
}

t.test('unchanged resources keep the version and time they last changed in', async (t) => {
  const { published, send } = await configured();
  const first = published.at(-1)!.resources.cluster.get('BlackHoleCluster')!;
  const changed = clusters();
  changed[2]!.connect_timeout = '3s';
  await send('cluster', 'c2', changed);
  const p = published.at(-1)!;
  t.equal(p.resources.cluster.get('BlackHoleCluster'), first, 'the same object, not decoded again');
  t.equal(p.resources.cluster.get(REVIEWS)!.version, 'c2');
  t.equal(p.versions.cluster, 'c2');
  t.equal((p.snapshot.clusters.get(REVIEWS) as Cluster).connectTimeoutMs, 3000);
});

t.test('an unchanged resource is known by its bytes, looked up under the name they begin with', async (t) => {
  const { engine, published } = await configured();
  const first = published.at(-1)!.resources.cluster.get('BlackHoleCluster')!;
  // The same cluster with its name field moved from the front to the end: equal to a decoder, other bytes.
  const any = encodeAny(clusters()[0]!);
  const nameLength = 2 + any.value[1]!;
  const reordered = { type_url: any.type_url, value: Buffer.concat([any.value.subarray(nameLength), any.value.subarray(0, nameLength)]) };
  const push = async (version: string, black: typeof any) => {
    t.equal(engine.handle('cluster', { items: [black, ...clusters().slice(1).map(encodeAny)].map((a) => ({ any: a })), version, replaceAll: true }), undefined, `${version} accepted`);
    await tick();
    return published.at(-1)!.resources.cluster.get('BlackHoleCluster')!;
  };
  t.equal(await push('c2', encodeAny(clusters()[0]!)), first, 'equal bytes in a buffer of their own: the same object');
  const moved = await push('c3', reordered);
  t.not(moved, first, 'bytes that differ are decoded');
  t.same(moved.config, first.config, 'into the same model');
  t.equal(moved.version, 'c3');
  t.equal(await push('c4', reordered), moved, 'a name not in front: read to learn it, then known by its bytes all the same');
  t.equal(moved.version, 'c3', 'and keeps the version it changed in');
});

t.test('responses handled on turns of the event loop one after another make one Snapshot; a lone one is built', async (t) => {
  // A window longer than any machine's stall here; that the window bounds the wait is checked below, with a short one.
  const { engine, published, before } = await configured(60_000);
  t.ok(before > 0, 'the first config is out');
  // As grpc-js hands over a push: each response on a later turn than the one before.
  const items = (version: string) => clusters().map((c) => ({ any: encodeAny({ ...c, connect_timeout: version === 'c2' ? '2s' : '3s' }) }));
  engine.handle('cluster', { items: items('c2'), version: 'c2', replaceAll: true });
  await turn();
  engine.handle('endpoint', { items: [{ any: encodeAny({ ...fx('cla_outbound_9080_reviews.json'), policy: { overprovisioning_factor: 150 } }) }], version: 'e2', replaceAll: false });
  await turn();
  engine.handle('listener', { items: [], version: 'l2', replaceAll: true });
  await afterBuild();
  t.equal(published.length, before + 1, 'one Snapshot for the three');
  t.match(published.at(-1)!.versions, { cluster: 'c2', endpoint: 'e2', listener: 'l2' });

  engine.handle('cluster', { items: items('c3'), version: 'c3', replaceAll: true });
  await afterBuild();
  t.equal(published.length, before + 2, 'a lone response: built two immediates on');
  t.equal(published.at(-1)!.versions.cluster, 'c3');
});

t.test('responses on every turn do not hold their Snapshot back longer than the window', async (t) => {
  const { engine, published, before } = await configured(30);
  const start = performance.now();
  let e = 2;
  while (published.length === before && performance.now() - start < 5000) {
    engine.handle('endpoint', { items: [{ any: encodeAny(fx('cla_outbound_9080_reviews.json')) }], version: `e${e++}`, replaceAll: false });
    await turn();
  }
  t.equal(published.length, before + 1, 'built while responses kept coming');
  t.ok(performance.now() - start >= 30, 'not before the window had passed');
  t.ok(e > 3, `after several of them (${e - 2})`);
});

/** Waits (up to 5 s) for a timer-driven change, however late a loaded machine runs the timer. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !cond(); i++) await sleep(50);
}

t.test('warming and initial fetch timeouts let the config go live without what never came', async (t) => {
  const a = setup({ edsMs: 1000 });
  await a.send('cluster', 'c1', clusters());
  await a.send('listener', 'l1', []);
  t.equal(a.published.length, 0, 'the EDS cluster is warming');
  await until(() => a.published.length > 0);
  t.equal(a.published.length, 1, 'published when the warming timeout expired');
  t.ok(a.published[0]!.snapshot.clusters.has(REVIEWS), 'the cluster is live, with no endpoints');
  t.notOk(a.published[0]!.snapshot.endpoints.has(REVIEWS));

  const b = setup({ fetchMs: 100 });
  b.engine.subscribed('cluster');
  b.engine.subscribed('listener');
  await until(() => b.published.length > 0);
  t.equal(b.published.length, 1, 'CDS and LDS never answered: live with the static config');
  t.equal(b.published[0]!.snapshot.listeners.size, 0);
});

t.test('a rejected first response still completes the initial fetch, as in Envoy', async (t) => {
  const { published, send } = setup();
  t.match(await send('cluster', 'c1', [{ '@type': TYPE_URL.cluster, name: 'x', cluster_type: { name: 'custom' } }]), /^Cluster "x": cluster_type:/);
  await send('listener', 'l1', [fx('listener_virtualOutbound.json')]);
  t.equal(published.length, 1);
  t.same([...published[0]!.snapshot.clusters.keys()], []);
});

t.test('the NameTable reaches its listener', async (t) => {
  const { tables, send } = setup();
  const { _provenance, ...nt } = readFixture('istio/nds/nametable_headless_from_istio_test.json');
  t.equal(await send('nametable', 'n1', [nt]), undefined);
  t.same(tables[0]!.table['reviews.default.svc.cluster.local'], { ips: ['10.68.111.247'], registry: 'Kubernetes', shortname: 'reviews', namespace: 'default' });
  t.same(tables[0]!.table['headless-svc.testns.svc.cluster.local']!.ips, ['1.2.3.4', '9.6.7.8', '19.6.7.8', '9.16.7.8']);
  const bad = await send('nametable', 'n2', [fx('route_9080.json')]);
  t.match(bad, /^NameTable: resource of type type.googleapis.com\/envoy.config.route.v3.RouteConfiguration in a .*NameTable response/);
  t.equal(tables.length, 1);
});

t.test('the virtualInbound Envoy NACKed for its Lua filter is accepted: HTTP filters we do not run are skipped', async (t) => {
  const { engine, send } = setup();
  const nacked = fx('listener_virtualInbound_NACKED.json');
  t.match(nacked.details, /LuaValidationError/, 'Envoy rejected it for the Lua filter\'s config');
  await send('cluster', 'c1', []);
  t.equal(await send('listener', 'l1', [nacked.failed_configuration as Json]), undefined, 'accepted');
  t.same(engine.status().rejected.listener, []);
});

t.test('EDS names are read ahead only for a response that brings clusters the sidecar does not have', async (t) => {
  const { engine, send } = setup();
  const anys = (json: Json[]) => json.map((c) => ({ any: encodeAny(c) }));
  t.same([...engine.endpointNamesAhead(anys(clusters()))!], [REVIEWS], 'the first response: its EDS cluster');
  await send('cluster', 'c1', clusters());
  t.equal(engine.endpointNamesAhead(anys(clusters().map((c) => ({ ...c, connect_timeout: '7s' })))), undefined, 'the same clusters changed: nothing to ask ahead');
  const RATINGS = 'outbound|9080||ratings.default.svc.cluster.local';
  const ratings = { ...fx('cluster_outbound_9080_reviews.json'), name: RATINGS, eds_cluster_config: { eds_config: { ads: {} }, service_name: RATINGS } };
  t.same([...engine.endpointNamesAhead(anys([...clusters(), ratings]))!].sort(), [RATINGS, REVIEWS], 'a new cluster: its EDS name beside those wanted');
  const rest = encodeAny({ ...ratings, name: undefined });
  const nameLast = { ...rest, value: Buffer.concat([rest.value, Buffer.from([0x0a, RATINGS.length]), Buffer.from(RATINGS)]) }; // the name field after the rest
  t.same([...engine.endpointNamesAhead([...anys(clusters()), { any: nameLast }])!].sort(), [RATINGS, REVIEWS], 'bytes that do not begin with a name are read ahead in full');
  const known = anys(clusters()).map((c, i) => ({ ...c, name: ['BlackHoleCluster', 'PassthroughCluster', REVIEWS][i] }));
  t.equal(engine.endpointNamesAhead(known), undefined, "delta: the server's names, all known");
  t.ok(engine.endpointNamesAhead(known.map((c, i) => (i === 2 ? { ...c, name: 'not-yet-known' } : c))), 'one unknown: read ahead');
});
