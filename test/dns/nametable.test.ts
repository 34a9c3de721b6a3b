/**
 * Names from Istio's NameTable, pushed over NDS by the test istiod to a real sidecar process: the short
 * forms Istio's agent answers, a pushed update with interface names, and answers that go on after istiod
 * is gone. Other names go to a real named.
 */
import t from 'tap';
import { loadLibc } from '../../src/sys/libc.js';
import { writeTemp } from '../helpers/netns.js';
import { AdsServer, adsBootstrap, freePort, istioFixtureSet, readFixture, SidecarProc, waitJsonAfter } from '../xds/harness.js';
import { dig } from './client.js';
import { namedProblem, startNamed, ZONE } from './named.js';

const problem = namedProblem();
const required = process.env.XSIDECAR_REQUIRE_NETNS === '1';

// Twice: UDP read on the main thread, and by the worker thread, which gets each pushed table by message.
for (const reader of ['main', 'worker'] as const) t.test(`NameTable names from the test istiod (UDP read on the ${reader} thread)`, { skip: problem && !required ? problem : reader === 'worker' && !loadLibc() ? 'the UDP worker needs koffi' : false }, async (t) => {
  if (problem) return t.fail(problem);
  const named = await startNamed({ port: await freePort() });
  t.teardown(() => named.stop());
  const server = await AdsServer.start({ resources: istioFixtureSet({ outbound: await freePort(), inbound: await freePort() }), label: 'dns-nds' });
  t.teardown(() => server.kill());
  const port = await freePort();
  const resolvConf = writeTemp('dns-resolv.conf', 'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5\n');
  const sc = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: server.port }), {
    args: [
      '--dns-port', String(port), '--dns-upstream', `127.0.0.1:${named.port}`,
      // The registrar finds the app's ClusterIP by service name in the NameTable.
      '--dns-update-server', `127.0.0.1:${named.port}`, '--dns-update-zone', ZONE, '--dns-update-key', named.keyFile,
      '--dns-interfaces', 'com.istio.reviews.api', '--dns-service-name', 'reviews',
      '--dns-udp-worker', reader === 'worker' ? 'on' : 'off',
    ],
    env: { POD_NAMESPACE: 'default', XSIDECAR_RESOLV_CONF: resolvConf },
  });
  t.teardown(() => sc.kill());
  await waitJsonAfter(sc.proc, 0, (o: { msg?: string }) => o.msg === 'xds: name table received');

  t.test('Kubernetes services: the FQDN and the short forms', async (t) => {
    for (const name of ['reviews.default.svc.cluster.local', 'reviews.default', 'reviews.default.svc', 'reviews']) {
      const r = dig(port, name);
      t.same([r.status, r.answers], ['NOERROR', ['10.68.111.247']], name);
    }
    t.same(dig(port, 'reviews.default.default.svc.cluster.local').answers, ['10.68.111.247'], 'the first search domain appended by the stub resolver');
    t.same(dig(port, 'headless-svc.testns.svc.cluster.local').answers.sort(), ['1.2.3.4', '19.6.7.8', '9.16.7.8', '9.6.7.8'], 'headless: every pod');
    t.same(dig(port, 'headless-svc.testns').answers.length, 4);
    t.same(dig(port, 'pod1.headless-svc.testns.svc.cluster.local').answers, ['1.2.3.4'], 'a headless pod by name');
    t.equal(dig(port, 'headless-svc').status, 'REFUSED', 'bare names of other namespaces are not ours: forwarded (named, not recursive, refuses names outside its zones)');
    t.same(dig(port, 'reviews', 'AAAA').answers, [], 'no AAAA: NOERROR, empty');
  });

  t.test('the registrar publishes the ClusterIP it found in the NameTable', async (t) => {
    await waitJsonAfter(sc.proc, 0, (o: { msg?: string }) => o.msg === 'dns registrar: interfaces registered');
    t.equal(named.dig('+short', `com.istio.reviews.api.${ZONE}`, 'A').trim(), '10.68.111.247');
  });

  t.test('a pushed NameTable with interface names replaces the old one', async (t) => {
    const { _provenance, ...nt } = readFixture('istio/nds/nametable_headless_from_istio_test.json');
    const table = {
      ...(nt.table as object),
      'com.alipay.userservice.interface1': { ips: ['198.18.0.10'], registry: 'External' },
      'com.alipay.userservice.interface2': { ips: ['198.18.0.10'], registry: 'External' },
    };
    const from = sc.proc.lines.length;
    await server.command({ cmd: 'update', version: 'v2', resources: [{ ...nt, table }] });
    await waitJsonAfter(sc.proc, from, (o: { msg?: string }) => o.msg === 'xds: name table received');
    const settled = () => new Promise((r) => setTimeout(r, 1500)); // the worker reports what it did each second
    if (reader === 'worker') await settled();
    const handed = await sc.metric('xsidecar_dns_udp_worker_queries_total', 'action="handed"');
    t.same(dig(port, 'com.alipay.userservice.interface1').answers, ['198.18.0.10']);
    t.same(dig(port, 'com.alipay.userservice.interface2.default.svc.cluster.local').answers, ['198.18.0.10'], 'as the stub resolver tries it first with ndots:5');
    if (reader === 'worker') {
      // A worker still holding the old table would hand the new names to the main thread (which answers them right).
      await settled();
      t.equal(await sc.metric('xsidecar_dns_udp_worker_queries_total', 'action="handed"'), handed, 'the worker answered the new names itself: it has the pushed table');
      t.ok((await sc.metric('xsidecar_dns_udp_worker_queries_total', 'action="answered"')) >= 2);
    }
  });

  t.test('istiod gone: the last NameTable keeps answering', async (t) => {
    await server.kill();
    const from = sc.proc.lines.length;
    await waitJsonAfter(sc.proc, from, () => true, 5000).catch(() => undefined); // let the stream notice
    for (let i = 0; i < 5; i++) {
      t.same(dig(port, 'com.alipay.userservice.interface1').answers, ['198.18.0.10']);
      t.same(dig(port, 'reviews').answers, ['10.68.111.247']);
    }
    t.equal(dig(port, 'www.fwd.test').answers[0], '192.0.2.80', 'forwarding unaffected');
  });
});
