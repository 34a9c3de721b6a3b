import t from 'tap';
import { defaultBootstrap } from '../../src/config/default-bootstrap.js';
import { startLocalSidecar } from '../helpers/sidecar.js';

t.test('admin and health endpoints', async (t) => {
  const b = JSON.parse(JSON.stringify(defaultBootstrap)) as { static_resources: { listeners: { address: { socket_address: { port_value: number } } }[] } };
  for (const l of b.static_resources.listeners) l.address.socket_address.port_value = 0;
  const { admin: _ignored, ...rest } = b as unknown as Record<string, unknown>;
  const sc = await startLocalSidecar('admin', rest);
  t.teardown(() => sc.proc.kill('SIGKILL'));
  const get = async (url: string, method = 'GET') => {
    const r = await fetch(url, { method });
    return { status: r.status, text: await r.text() };
  };
  const admin = (path: string, method?: string) => get(`http://${sc.admin}${path}`, method);
  const health = () => get(`http://${sc.health}/healthz/ready`);

  t.same(await admin('/ready'), { status: 200, text: 'LIVE\n' });
  t.same(await health(), { status: 200, text: 'LIVE\n' });

  const info = JSON.parse((await admin('/server_info')).text) as { state: string; version: string; node: { id: string } };
  t.equal(info.state, 'LIVE');
  t.match(info.version, /^xsidecar\/\d+\.\d+\.\d+$/);
  t.equal(info.node.id, 'sidecar~127.0.0.1~xsidecar.default~default.svc.cluster.local');

  const dump = JSON.parse((await admin('/config_dump')).text) as { configs: { '@type': string; static_listeners?: { listener: { name: string } }[]; static_clusters?: { cluster: { name: string } }[] }[] };
  const section = (type: string) => dump.configs.find((c) => c['@type'] === `type.googleapis.com/envoy.admin.v3.${type}`);
  t.ok(section('BootstrapConfigDump'));
  t.same(section('ListenersConfigDump')?.static_listeners?.map((l) => l.listener.name), ['virtualOutbound', 'virtualInbound']);
  t.same(section('ClustersConfigDump')?.static_clusters?.map((c) => c.cluster.name), ['PassthroughCluster', 'InboundPassthroughClusterIpv4', 'BlackHoleCluster']);

  t.match((await admin('/listeners')).text, /^virtualOutbound::127\.0\.0\.1:\d+|^virtualOutbound::0\.0\.0\.0:\d+/);
  const clusters = JSON.parse((await admin('/clusters?format=json')).text) as { cluster_statuses: { name: string }[] };
  t.same(clusters.cluster_statuses.map((c) => c.name), ['PassthroughCluster', 'InboundPassthroughClusterIpv4', 'BlackHoleCluster']);
  t.match((await admin('/stats/prometheus')).text, /xsidecar_downstream_cx_total/);

  t.equal((await admin('/healthcheck/fail')).status, 405, 'mutations need POST');
  t.same(await admin('/healthcheck/fail', 'POST'), { status: 200, text: 'OK\n' });
  t.equal((await health()).status, 503, 'failed health check: not ready');
  t.equal((await admin('/ready')).status, 200, '/ready reports the server state, as Envoy does');
  await admin('/healthcheck/ok', 'POST');
  t.equal((await health()).status, 200);
  t.equal((await admin('/nope')).status, 404);

  t.same(await admin('/quitquitquit', 'POST'), { status: 200, text: 'OK\n' });
  t.equal(await sc.proc.exited, 0, 'quitquitquit drains and exits 0');
});
