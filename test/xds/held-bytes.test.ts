/**
 * Accepted resources keep their bytes where they arrived, a view into their response (held-bytes.ts): a
 * response mostly replaced since, or a small one, is packed, so what the views keep stays under twice
 * what they cover, and /config_dump still shows what came.
 */
import t from 'tap';
import type { Cluster } from '../../src/config/model.js';
import type { AnyMessage } from '../../src/xds/any.js';
import { HeldBytes, heldStats, repack, SMALL_BUFFER } from '../../src/xds/held-bytes.js';
import { loadXdsProtos } from '../../src/xds/protos.js';
import type { Resource } from '../../src/xds/resources.js';
import type { Published } from '../../src/xds/snapshot-builder.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';
import { afterBuild, DSB, encodeAny, engineInto, type Json, readFixture } from './harness.js';

/** `count` views of `size` bytes each into one buffer, each view's bytes its index. */
function viewsInto(buffer: Buffer, count: number, size: number): HeldBytes[] {
  return Array.from({ length: count }, (_, i) => new HeldBytes(buffer.fill(i % 256, i * size, (i + 1) * size).subarray(i * size, (i + 1) * size)));
}
const content = (held: readonly HeldBytes[]) => held.map((h) => Buffer.from(h.view));

t.test('a buffer its views mostly fill is left alone; one mostly dead is packed, the bytes unchanged', async (t) => {
  const response = Buffer.allocUnsafeSlow(256 * 1024);
  const held = viewsInto(response, 100, 2048);
  t.equal(repack(held), 0, 'all of it held: nothing moves');
  t.ok(held.every((h) => h.view.buffer === response.buffer));

  const left = held.filter((_, i) => i % 3 === 0); // 34 of 100 still held
  const before = content(left);
  t.equal(repack(left), 34 * 2048, 'a third held: those bytes are copied out');
  t.strictSame(content(left), before, 'the same bytes');
  t.ok(left.every((h) => h.view.buffer !== response.buffer), 'the response is no longer held');
  t.strictSame(heldStats(left), { buffers: 1, bufferBytes: 34 * 2048, liveBytes: 34 * 2048 });
  t.equal(repack(left), 0, 'packed already: nothing moves again');
});

t.test("small buffers (delta's one-resource responses, Node's shared pool) are gathered into one", async (t) => {
  const small = Array.from({ length: 5 }, () => viewsInto(Buffer.allocUnsafeSlow(1024), 1, 1024)[0]!.view).map((v) => new HeldBytes(v));
  const before = content(small);
  t.equal(repack(small), 5 * 1024);
  t.strictSame(content(small), before);
  t.equal(heldStats(small).buffers, 1);
  t.equal(repack(small), 0, 'a lone small buffer they fill is left as it is');
  const pooled = new HeldBytes(Buffer.from('a resource in the pool'));
  t.ok(pooled.view.buffer.byteLength > pooled.view.byteLength, "a view into Node's pool");
  t.equal(repack([pooled]), pooled.view.byteLength, 'mostly other bytes: copied out');
  t.equal(pooled.view.toString(), 'a resource in the pool');
});

const protos = loadXdsProtos();
const reviews = readFixture(DSB, 'cluster_outbound_9080_reviews.json');
const SERVICES = 300;
const clusterName = (i: number) => `outbound|9080||svc-${i}.default.svc.cluster.local`;
/** Cluster i of the mesh, its connect timeout `timeout` seconds. */
const cluster = (i: number, timeout: number): Json => ({ '@type': TYPE_URL.cluster, ...reviews, name: clusterName(i), eds_cluster_config: { ...(reviews.eds_cluster_config as Json), service_name: clusterName(i) }, connect_timeout: `${timeout}s` });

/** A response as the client reads it: one buffer, each resource's bytes a view into it. */
function response(typeUrl: string, version: string, resources: Json[]): { any: AnyMessage }[] {
  const type = protos.DiscoveryResponse;
  const any = resources.map((c) => encodeAny(c));
  const bytes = type.encode(type.fromObject({ version_info: version, type_url: typeUrl, nonce: version, resources: any })).finish();
  return (type.decode(Buffer.from(bytes)) as unknown as { resources: AnyMessage[] }).resources.map((a) => ({ any: a }));
}
const cla = readFixture(DSB, 'cla_outbound_9080_reviews.json');
const endpointsOf = (count: number) => Array.from({ length: count }, (_, i) => ({ '@type': TYPE_URL.endpoint, ...cla, cluster_name: clusterName(i) }));
const statsOf = (resources: ReadonlyMap<string, Resource>) => heldStats([...resources.values()].map((r) => r.bytes));

t.test('through the engine: pushes that change some clusters, all, or one at a time keep under twice the bytes they use', async (t) => {
  const published: Published[] = [];
  const engine = engineInto(published);
  engine.handle('listener', { items: [], version: 'l1', replaceAll: true });
  const timeouts = Array.from({ length: SERVICES }, () => 1);
  const clusters = () => new Map<string, Resource>([...published.at(-1)!.resources.cluster]);
  const push = async (version: string, change: (i: number) => boolean) => {
    for (let i = 0; i < SERVICES; i++) if (change(i)) timeouts[i] = (timeouts[i]! % 9) + 1;
    const items = response(TYPE_URL.cluster, version, timeouts.map((s, i) => cluster(i, s)));
    t.equal(engine.handle('cluster', { items, version, replaceAll: true }), undefined, `${version} accepted`);
    if (version === 'v1') engine.handle('endpoint', { items: response(TYPE_URL.endpoint, version, endpointsOf(SERVICES)), version, replaceAll: false });
    await afterBuild();
    const held = clusters();
    return { held, stats: statsOf(held), responseBytes: items[0]!.any.value.buffer.byteLength };
  };
  const bounded = (s: ReturnType<typeof heldStats>, what: string) =>
    t.ok(s.bufferBytes <= 2 * s.liveBytes + SMALL_BUFFER, `${what}: ${s.buffers} buffers, ${s.bufferBytes} bytes for ${s.liveBytes} in use`);

  const first = await push('v1', () => false);
  t.equal(first.stats.buffers, 1, 'the first response, whole: its own buffer');
  t.ok(first.responseBytes > SMALL_BUFFER);

  const two = await push('v2', (i) => i === 7 || i === 200);
  t.equal(two.stats.buffers, 2, "the first response, and the two changed clusters packed out of the second's");
  bounded(two.stats, 'two changed');

  const all = await push('v3', () => true);
  t.equal(all.stats.buffers, 1, 'all changed: only the last response is held');

  const most = await push('v4', (i) => i % 4 !== 0);
  bounded(most.stats, 'three quarters changed');
  t.equal(most.stats.buffers, 2, 'the last response, and the quarter left of the one before, packed');

  let worst = most.stats;
  for (let n = 0; n < 40; n++) {
    const one = await push(`w${n}`, (i) => i === (n * 37) % SERVICES);
    bounded(one.stats, `one cluster changed (${n})`);
    if (one.stats.bufferBytes > worst.bufferBytes) worst = one.stats;
  }
  t.ok(worst.buffers <= 3, `one cluster at a time for 40 pushes: at most ${worst.buffers} buffers held`);

  // What /config_dump shows is what came, packed or not.
  const final = clusters();
  for (const i of [0, 7, 37, 200, SERVICES - 1]) {
    const r = final.get(clusterName(i))!;
    t.equal((r.raw as Json).connect_timeout, `${timeouts[i]}s`, `${clusterName(i)}: its raw as it came`);
    t.equal((r.config as Cluster).connectTimeoutMs, timeouts[i]! * 1000);
  }
});

t.test('endpoints a CDS response leaves unused are dropped, and their response packed then, not at the next EDS response', async (t) => {
  const published: Published[] = [];
  const engine = engineInto(published);
  engine.handle('listener', { items: [], version: 'l1', replaceAll: true });
  const clustersUpTo = (n: number) => Array.from({ length: n }, (_, i) => cluster(i, 1));
  engine.handle('cluster', { items: response(TYPE_URL.cluster, 'c1', clustersUpTo(SERVICES)), version: 'c1', replaceAll: true });
  engine.handle('endpoint', { items: response(TYPE_URL.endpoint, 'e1', endpointsOf(SERVICES)), version: 'e1', replaceAll: false });
  await afterBuild();
  t.equal(statsOf(published.at(-1)!.resources.endpoint).buffers, 1, 'the endpoints: one response');

  engine.handle('cluster', { items: response(TYPE_URL.cluster, 'c2', clustersUpTo(SERVICES / 10)), version: 'c2', replaceAll: true });
  await afterBuild();
  const endpoints = published.at(-1)!.resources.endpoint;
  t.equal(endpoints.size, SERVICES / 10, 'nine tenths of the endpoints are no longer wanted');
  const s = statsOf(endpoints);
  t.ok(s.bufferBytes <= 2 * s.liveBytes + SMALL_BUFFER, `the endpoints' buffers: ${s.bufferBytes} bytes for ${s.liveBytes} in use`);
  const r = endpoints.get(clusterName(7))!;
  t.equal((r.raw as Json).cluster_name, clusterName(7), 'and what /config_dump shows of them is what came');
});

t.test("a warming cluster's old version, still in force, is packed out of its response like the rest", async (t) => {
  const published: Published[] = [];
  const engine = engineInto(published);
  engine.handle('listener', { items: [], version: 'l1', replaceAll: true });
  const all = (timeout: number) => Array.from({ length: SERVICES }, (_, i) => cluster(i, timeout));
  const first = response(TYPE_URL.cluster, 'c1', all(1));
  engine.handle('cluster', { items: first, version: 'c1', replaceAll: true });
  engine.handle('endpoint', { items: response(TYPE_URL.endpoint, 'e1', endpointsOf(SERVICES)), version: 'e1', replaceAll: false });
  await afterBuild();
  const firstBuffer = first[0]!.any.value.buffer;
  // Cluster 7 moves to an EDS name nobody has sent endpoints for: it warms, its old version serves.
  const moved = (timeout: number) => all(timeout).map((c, i) => (i === 7 ? { ...c, eds_cluster_config: { eds_config: { ads: {} }, service_name: 'not-sent-yet' } } : c));
  for (const [version, timeout] of [['c2', 1], ['c3', 2]] as const) {
    engine.handle('cluster', { items: response(TYPE_URL.cluster, version, moved(timeout)), version, replaceAll: true });
    await afterBuild();
  }
  t.same(engine.status().warming.clusters.map((r) => r.name), [clusterName(7)], 'cluster 7 is warming');
  const serving = published.at(-1)!.resources.cluster.get(clusterName(7))!;
  t.equal((serving.raw as Json).connect_timeout, '1s', 'its first version serves');
  t.not(serving.bytes!.view.buffer, firstBuffer, 'and no longer holds the first response, all else in it replaced');
});
