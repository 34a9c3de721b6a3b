/**
 * A CDS response's EDS names are asked for first and the rest of the response is handled a few
 * milliseconds later (ads-stream.ts step). A stream that ends in between must not leave that response
 * half-applied: the rest is dropped, nothing is ACKed on the dead stream, and the new stream asks again as
 * if it had never arrived, then gets the config and the sidecar becomes ready. Both xDS flavours share the
 * hold; each runs against the test ADS server in its own process, over real gRPC.
 */
import t, { type Test } from 'tap';
import { AdsServer, adsBootstrap, type AdsRequest, cla, edsCluster, freePort, jsonLines, SidecarProc, tcpListener } from './harness.js';

const SVC = 'outbound|7000||held.default.svc.cluster.local';
const DROPPED = 'xds: the stream ended before a response was handled';

/**
 * One sidecar whose first CDS response leaves the server together with the stream's end. Whether the end
 * reaches the sidecar inside its few-millisecond wait is up to the scheduler (on a loaded machine the
 * wait can expire first, and the response is then applied as usual): the caller tries again until it does.
 */
async function endWithResponse(t: Test, api: 'GRPC' | 'DELTA_GRPC', attempt: number) {
  const port = await freePort();
  const server = await AdsServer.start({ resources: [edsCluster(SVC), cla(SVC, [{ address: '127.0.0.1', port: 9 }]), tcpListener('held', '127.0.0.1', port, SVC)], label: `hold-${api}-${attempt}` });
  t.teardown(() => server.kill());
  await server.command({ cmd: 'hold', types: ['cluster'] });
  // The DNS proxy off: its fixed port may be held by another test running alongside, which logs an error.
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: server.port, apiType: api }), { args: ['--dns-port', '0'] });
  t.teardown(() => sidecar.kill('SIGKILL'));
  const first = await server.waitRequest(0, (r) => r.type === 'cluster' && r.kind === 'initial');
  const mark = server.mark;
  await server.command({ cmd: 'release', types: ['cluster'], end: true });
  const again: AdsRequest = await server.waitRequest(mark, (r) => r.type === 'cluster' && r.kind === 'initial' && r.stream !== first.stream);
  const ready = await sidecar.waitReady(15_000);
  const logs = jsonLines<{ level?: number; msg?: string }>(sidecar.proc);
  return { server, sidecar, first, again, ready, logs, dropped: logs.some((l) => l.msg?.startsWith(DROPPED)) };
}

for (const api of ['GRPC', 'DELTA_GRPC'] as const) {
  t.test(`${api}: the stream ends while a CDS response's rest waits`, async (t) => {
    for (let attempt = 1; attempt <= 5; attempt++) {
      const r = await endWithResponse(t, api, attempt);
      t.equal(r.ready, 200, `attempt ${attempt}: the sidecar becomes ready either way`);
      t.same(r.logs.filter((l) => (l.level ?? 0) >= 50), [], 'no error logged');
      if (!r.dropped) continue;
      const onFirst = r.server.requests().filter((q) => q.stream === r.first.stream);
      t.notOk(onFirst.some((q) => q.type === 'cluster' && (q.kind === 'ack' || q.kind === 'nack')), 'the response was neither ACKed nor NACKed on the dead stream');
      if (api === 'GRPC') t.notOk(r.again.version, 'the new stream asks for CDS with no version: the dropped response was never accepted');
      else t.same(r.again.initial_resource_versions ?? {}, {}, 'the new stream claims no cluster: the dropped response was never accepted');
      t.match(JSON.stringify(await r.sidecar.configDump()), SVC, 'the new stream brought the cluster: it is in config_dump');
      return;
    }
    t.fail('in 5 attempts the stream\'s end never reached the sidecar inside its wait');
  });
}
