/**
 * xDS end to end through real capture: the app namespace has Istio's iptables rules and the sidecar (UID
 * 1337) whose whole config comes from a test istiod in the server namespace — virtualOutbound, a ClusterIP
 * tcp_proxy listener and its EDS endpoints. istiod is killed and restarted while the app keeps opening
 * connections to the ClusterIP, and an endpoint is removed under an open connection.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { createTopology, iptablesCli, netnsGate, peer, type Proc, runPeer, spawnNode, startSidecar, writeTemp } from '../helpers/netns.js';
import { AdsServer, adsBootstrap, cla, DSB, ECHO, edsCluster, type Json, readFixture, startEcho, tcpListener } from './harness.js';

const gate = netnsGate();
const CLUSTER_IP = '198.18.0.50';

interface LoopResult {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  servedBy: Record<string, number>;
}

t.test('xDS under capture: istiod restarts and endpoint changes lose no connection', { skip: gate.skip }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  const topo = createTopology(`xd${process.pid % 100000}`);
  const procs: { kill(s?: NodeJS.Signals): unknown }[] = [];
  t.teardown(() => {
    procs.forEach((p) => p.kill('SIGKILL'));
    topo.destroy();
  });
  topo.addClusterIp(CLUSTER_IP);
  const srvA = await startEcho('srv-a', { ns: topo.server, host: topo.serverIp, port: 7100 });
  const srvB = await startEcho('srv-b', { ns: topo.server, host: topo.serverIp, port: 7200 });
  procs.push(srvA.proc, srvB.proc);

  const resources: Json[] = [
    readFixture(DSB, 'cluster_PassthroughCluster.json'),
    readFixture(DSB, 'cluster_BlackHoleCluster.json'),
    readFixture(DSB, 'cluster_InboundPassthroughClusterIpv4.json'),
    edsCluster(ECHO),
    cla(ECHO, [{ address: topo.serverIp, port: 7100 }]),
    readFixture(DSB, 'listener_virtualOutbound.json'),
    readFixture('istio/istio-repo-authz-configdump/listener_virtualInbound.json'),
    tcpListener(`${CLUSTER_IP}_7000`, CLUSTER_IP, 7000, ECHO, false),
  ];
  const startIstiod = (version: string) => AdsServer.start({ resources, version, ns: topo.server, host: topo.serverIp, port: 15010, label: `netns-${version}` });
  let istiod = await startIstiod('v1');
  procs.push(istiod);

  iptablesCli(topo.app);
  const bootstrap = adsBootstrap({ xdsAddress: topo.serverIp, xdsPort: 15010, node: { id: `sidecar~${topo.podIp}~app-0.default~default.svc.cluster.local`, metadata: { ISTIO_VERSION: '1.18.2' } } });
  const sidecar = await startSidecar(topo.app, ['-c', writeTemp('xds-netns.json', bootstrap), '--drain-timeout', '3s']);
  procs.push(sidecar);
  const ready = async () => (await runPeer<{ status?: number }>(topo.app, 'http-get', 'http://127.0.0.1:15021/healthz/ready')).status;
  for (let i = 0; i < 100 && (await ready()) !== 200; i++) await sleep(100);
  t.equal(await ready(), 200, 'LIVE once istiod\'s config is in');

  const client = (...parts: string[]) => runPeer<{ ok: boolean; received: string; error?: string }>(topo.app, 'tcp-client', CLUSTER_IP, '7000', ...parts);

  await t.test('the ClusterIP listener from LDS takes captured connections to its EDS endpoint', async (t) => {
    const r = await client('ping');
    t.ok(r.ok, r.error ?? 'ok');
    t.match(r.received, new RegExp(`^ping\\nsrv-a\\|${topo.podIp.replace(/\./g, '\\.')}:\\d+\\|${topo.serverIp.replace(/\./g, '\\.')}:7100$`));
  });

  await t.test('istiod killed while the app keeps connecting: zero failures; re-subscription after restart', async (t) => {
    const loop = spawnNode(topo.app, peer('tcp-loop'), [CLUSTER_IP, '7000']);
    procs.push(loop);
    await loop.waitJson<{ event?: string }>((o) => o.event === 'started');
    await sleep(300);
    await istiod.kill('SIGKILL');
    await sleep(2000);
    t.equal(await ready(), 200, 'still ready without istiod');
    istiod = await startIstiod('v2');
    procs.push(istiod);
    const cds = await istiod.waitRequest(0, (r) => r.type === 'cluster', 35_000);
    await istiod.waitRequest(0, (r) => r.type === 'listener' && r.kind === 'ack' && r.version === 'v2', 10_000);
    await sleep(300);
    loop.child.stdin!.write('stop\n');
    const result = await loop.waitJson<LoopResult & { event?: string }>((o) => o.event === undefined && typeof o.ok === 'number');
    t.equal(result.failed, 0, `no failed connection: ${JSON.stringify(result)}`);
    t.ok(result.ok >= 30, `${result.ok} connections through the sidecar`);
    t.same(Object.keys(result.servedBy), ['srv-a']);
    t.match(cds, { kind: 'initial', version: 'v1', nonce: '' }, 'the new istiod is told the version the sidecar holds');
    t.same(istiod.requests().filter((r) => r.kind === 'initial').slice(0, 3).map((r) => [r.type, r.version, r.names]), [
      ['cluster', 'v1', []],
      ['endpoint', 'v1', [ECHO]],
      ['listener', 'v1', []],
    ]);
  });

  await t.test('an endpoint removed under an open connection: it finishes; new connections go to the new endpoint', async (t) => {
    const held: Proc = spawnNode(topo.app, peer('tcp-client'), [CLUSTER_IP, '7000', 'first', 'second', '--pause-after', '1', '--timeout', '15000']);
    procs.push(held);
    await held.waitJson<{ event?: string }>((o) => o.event === 'paused');
    const mark = istiod.mark;
    await istiod.command({ cmd: 'update', version: 'v3', resources: [cla(ECHO, [{ address: topo.serverIp, port: 7200 }])] });
    await istiod.waitRequest(mark, (r) => r.type === 'endpoint' && r.kind === 'ack' && r.version === 'v3');
    let fresh = await client('new');
    for (let i = 0; i < 20 && !/^new\nsrv-b/.test(fresh.received); i++) fresh = (await sleep(100), await client('new'));
    t.match(fresh.received, /^new\nsrv-b\|/, 'new connections use the new endpoint');
    held.child.stdin!.write('go\n');
    const done = await held.waitJson<{ ok?: boolean; received?: string; event?: string }>((o) => o.event === undefined);
    t.ok(done.ok, 'the open connection was not cut');
    t.match(done.received, /^firstsecond\nsrv-a\|/);
  });

  sidecar.kill('SIGTERM');
  t.equal(await sidecar.exited, 0, 'drains and exits 0');
});
