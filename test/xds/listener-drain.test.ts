/** A listener changed or removed by LDS drains the connections that started on its old config. */
import { connect } from 'node:net';
import t from 'tap';
import { AdsServer, adsBootstrap, cla, edsCluster, freePort, type Json, SidecarProc, startEcho, tcpListener, tcpRoundTrip } from './harness.js';

/** A connection that stays open: resolves with how it ended and after how long. */
function holdOpen(port: number): Promise<{ ready: Promise<void>; closed: Promise<number> }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const started = Date.now();
    let echoed!: () => void;
    const ready = new Promise<void>((r) => (echoed = r));
    s.on('connect', () => s.write('hold'));
    s.on('data', () => echoed());
    s.on('error', () => undefined);
    const closed = new Promise<number>((r) => s.on('close', () => r(Date.now() - started)));
    resolve({ ready, closed });
  });
}

t.test('LDS changes drain the old listener\'s connections', async (t) => {
  const echo = await startEcho('e1');
  const [p1, p2] = [await freePort(), await freePort()];
  const base: Json[] = [edsCluster('echo'), cla('echo', [{ address: '127.0.0.1', port: echo.port }])];
  const ads = await AdsServer.start({ label: 'drain', resources: [...base, tcpListener('l1', '127.0.0.1', p1, 'echo'), tcpListener('l2', '127.0.0.1', p2, 'echo')] });
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: ads.port }));
  t.teardown(() => {
    sidecar.kill();
    void ads.kill();
    echo.proc.kill('SIGKILL');
  });
  await sidecar.waitDump((d) => JSON.stringify(d).includes('"l2"'));

  const onChanged = await holdOpen(p1);
  const onRemoved = await holdOpen(p2);
  await Promise.all([onChanged.ready, onRemoved.ready]);
  const changed = tcpListener('l1', '127.0.0.1', p1, 'echo');
  ((changed.filter_chains as Json[])[0]!.filters as Json[])[1]!.typed_config = { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'renamed', cluster: 'echo' };
  await ads.command({ cmd: 'set', version: 'v2', resources: [changed], types: ['listener'] });
  const [changedAfter, removedAfter] = await Promise.all([onChanged.closed, onRemoved.closed]);
  t.ok(changedAfter >= 1000 && changedAfter < 6000, `the changed listener's connection closed after the 1 s drain (${changedAfter} ms)`);
  t.ok(removedAfter >= 1000 && removedAfter < 6000, `the removed listener's connection closed after the drain (${removedAfter} ms)`);
  const fresh = await tcpRoundTrip('127.0.0.1', p1, 'new');
  t.ok(fresh.ok, 'a new connection uses the new config');
});
