/**
 * The cluster manager turns each snapshot into live cluster state. A resource whose bytes did not change
 * arrives as the same object, so a push that changes one service must rebuild that service's state only.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { decodeCluster, decodeLoadAssignment } from '../../src/config/cluster.js';
import type { Cluster, ClusterLoadAssignment } from '../../src/config/model.js';
import { newContext } from '../../src/config/reader.js';
import { makeSnapshot } from '../../src/config/snapshot.js';
import { ClusterManager } from '../../src/upstream/cluster-manager.js';

const cluster = (name: string): Cluster =>
  decodeCluster({ name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } }, outlier_detection: { consecutive_5xx: 3, interval: '10s' } }, name, newContext());
const cla = (name: string, ...ports: number[]): ClusterLoadAssignment =>
  decodeLoadAssignment({ cluster_name: name, endpoints: [{ lb_endpoints: ports.map((port) => ({ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: port } } } })) }] }, name, newContext());
const snapshot = (clusters: Cluster[], endpoints: ClusterLoadAssignment[]) =>
  makeSnapshot({ version: 'v', listeners: new Map(), clusters: new Map(clusters.map((c) => [c.name, c])), endpoints: new Map(endpoints.map((e) => [e.clusterName, e])) });

t.test('unchanged clusters keep their state; a changed one is rebuilt and its outlier detector sees the new hosts', async (t) => {
  const cm = new ClusterManager();
  const [a, b] = [cluster('a'), cluster('b')];
  const [ea, eb] = [cla('a', 1, 2), cla('b', 3)];
  cm.update(snapshot([a, b], [ea, eb]));
  const [sa, sb] = [cm.get('a')!, cm.get('b')!];
  t.same(sa.hosts.map((h) => h.port), [1, 2]);

  cm.update(snapshot([a, b], [ea, eb]));
  t.equal(cm.get('a'), sa, 'same cluster, same endpoints: the same state');
  t.equal(cm.get('b'), sb);

  const eb2 = cla('b', 3, 4);
  cm.update(snapshot([a, b], [ea, eb2]));
  t.equal(cm.get('a'), sa, 'the unchanged cluster is untouched');
  const sb2 = cm.get('b')!;
  t.not(sb2, sb, 'new endpoints: a new state');
  t.same(sb2.hosts.map((h) => h.port), [3, 4]);
  t.equal(sb2.hosts[0], sb.hosts[0], 'the host that stayed is the same Host (its pools and counters carry over)');
  t.equal(sb2.outlier, sb.outlier, 'the outlier detector carries over');
  t.same(sb2.outlier!.hostsOf().map((h) => h.port), [3, 4], 'and watches the new hosts');
  t.same(sa.outlier!.hostsOf().map((h) => h.port), [1, 2], 'a kept state\'s detector still watches its hosts');

  const a2 = cluster('a');
  cm.update(snapshot([a2, b], [ea, eb2]));
  t.not(cm.get('a'), sa, 'a changed cluster resource: a new state');
  t.equal(cm.get('a')!.hosts[0], sa.hosts[0]);
  sa.outlier?.stop();
  for (const s of cm.all()) s.outlier?.stop();
});

t.test('hosts that stay are kept, by address and port, in small clusters and large; pools of the rest drain', async (t) => {
  for (const size of [3, 40]) {
    const cm = new ClusterManager();
    const c = cluster(`c${size}`);
    const ports = Array.from({ length: size }, (_, i) => 1000 + i);
    cm.update(snapshot([c], [cla(c.name, ...ports)]));
    const before = cm.get(c.name)!.hosts;
    const closed: number[] = [];
    for (const h of before) h.addPool('bolt', { close: () => closed.push(h.port) });
    // The first host goes, the rest stay in another order, one is new and one is listed twice.
    const next = [...ports.slice(1).reverse(), 999, ports[1]!];
    cm.update(snapshot([c], [cla(c.name, ...next)]));
    const after = cm.get(c.name)!.hosts;
    t.same(after.map((h) => h.port), next, `${size} hosts: in the new order`);
    for (const h of after.slice(0, size - 1)) t.equal(h, before.find((b) => b.port === h.port), `${size} hosts: port ${h.port} is the same Host`);
    t.notOk(before.includes(after[size - 1]!), `${size} hosts: the new one is a new Host`);
    t.notOk(before.includes(after[size]!), `${size} hosts: an endpoint listed twice gets a Host of its own the second time`);
    t.same(closed, [1000], `${size} hosts: only the pools of the host gone are closed`);
    for (const s of cm.all()) s.outlier?.stop();
  }
});

t.test('a kept state does not keep the states it was made beside', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const cm = new ClusterManager();
  const [a, b] = [cluster('a'), cluster('b')];
  const ea = cla('a', 1);
  cm.update(snapshot([a, b], [ea, cla('b', 2)]));
  const replaced = new WeakRef(cm.get('b')!);
  // 'a' is kept through both updates; 'b' changes, so its first state is replaced. If the kept state's
  // outlier detector still looked hosts up in the first update's map, that map (and 'b') would live on.
  cm.update(snapshot([a, b], [ea, cla('b', 3)]));
  cm.update(snapshot([a, b], [ea, cla('b', 4)]));
  await new Promise((r) => setImmediate(r));
  gc();
  t.equal(replaced.deref(), undefined, "b's first state was collected");
  t.same(cm.get('a')!.outlier!.hostsOf().map((h) => h.port), [1]);
  for (const s of cm.all()) s.outlier?.stop();
});

t.test("priority levels: the lowest level with a usable host takes all traffic, in the endpoints' order", async (t) => {
  const cm = new ClusterManager();
  const levels = (...eps: [port: number, priority: number, health?: string][]) =>
    decodeLoadAssignment(
      { cluster_name: 'p', endpoints: eps.map(([port, priority, health]) => ({ priority, lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: port } } }, ...(health ? { health_status: health } : {}) }] })) },
      'p',
      newContext(),
    );
  const usable = (e: ClusterLoadAssignment) => {
    cm.update(snapshot([cluster('p')], [e]));
    return cm.get('p')!.usableHosts.map((h) => h.port);
  };
  t.same(usable(levels([1, 1], [2, 0], [3, 1], [4, 0])), [2, 4], 'level 0, in order');
  t.same(usable(levels([1, 1], [2, 0, 'UNHEALTHY'], [3, 1], [4, 0, 'DRAINING'])), [1, 3], 'level 0 all out: level 1');
  t.same(usable(levels([1, 2], [2, 1, 'UNHEALTHY'], [3, 2])), [1, 3], 'the lowest level that has one, however far');
  t.same(usable(levels([1, 0, 'UNHEALTHY'])), [], 'none usable: none');
  t.equal(cm.get('p')!.pick(), undefined);
});
