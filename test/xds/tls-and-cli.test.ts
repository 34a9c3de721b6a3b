/**
 * How the sidecar finds and reaches istiod: mutual TLS from an UpstreamTlsContext on the xds-grpc cluster
 * (istiod's :15012), `run --xds-address` with the pod environment, and start-up errors for bad input.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Proc, writeTemp } from '../helpers/netns.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { decodeBootstrap } from '../../src/config/bootstrap.js';
import { defaultBootstrap } from '../../src/config/default-bootstrap.js';
import { adsBootstrap as adsBootstrapFor } from '../../src/xds/bootstrap.js';
import { resolveXdsTarget } from '../../src/xds/target.js';
import { AdsServer, adsBootstrap, cla, ECHO, edsCluster, freePort, type Json, SidecarProc, startEcho, staticCluster, tcpListener, tcpRoundTrip } from './harness.js';

const opensslProblem = spawnSync('openssl', ['version']).status === 0 ? undefined : 'openssl is not installed';

function makeCerts(): { dir: string; file: (n: string) => string } {
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-tls-'));
  const file = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=test mesh CA');
  for (const [name, san, usage] of [['istiod', 'DNS:istiod.istio-system.svc', 'serverAuth'], ['workload', 'URI:spiffe://cluster.local/ns/hr2/sa/default', 'clientAuth']] as const) {
    writeFileSync(file(`${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${usage}\n`);
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`);
  }
  return { dir, file };
}

const tlsSocket = (tls: Json) => ({ name: 'envoy.transport_sockets.tls', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', ...tls } });

t.test('mutual TLS to istiod from the xds-grpc cluster\'s UpstreamTlsContext', { skip: opensslProblem ?? false }, async (t) => {
  const procs: { kill(s?: NodeJS.Signals): unknown }[] = [];
  t.teardown(() => procs.forEach((p) => p.kill('SIGKILL')));
  const { file } = makeCerts();
  const echo = await startEcho('echo-tls');
  procs.push(echo.proc);
  const port = await freePort();
  const resources = [edsCluster(ECHO), cla(ECHO, [{ address: '127.0.0.1', port: echo.port }]), tcpListener('echo-listener', '127.0.0.1', port, ECHO)];
  const argsTls = ['--tls-cert', file('istiod.crt'), '--tls-key', file('istiod.key'), '--tls-ca', file('ca.crt')];
  const server = await startTlsServer(resources, argsTls);
  procs.push(server);

  const bootstrap = (tls: Json) => {
    const b = adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: server.port });
    const sr = b.static_resources as { clusters: Json[] };
    sr.clusters[0] = { ...sr.clusters[0], transport_socket: tlsSocket(tls) };
    return b;
  };
  const good = await SidecarProc.start(
    bootstrap({
      sni: 'istiod.istio-system.svc',
      common_tls_context: {
        tls_certificates: [{ certificate_chain: { filename: file('workload.crt') }, private_key: { filename: file('workload.key') } }],
        validation_context: { trusted_ca: { filename: file('ca.crt') } },
      },
    }),
  );
  procs.push(good);
  t.equal(await good.waitReady(), 200, 'LIVE over mTLS, verifying istiod by its SAN through sni');
  t.match(await tcpRoundTrip('127.0.0.1', port, 'secure'), { ok: true, received: /^secure\necho-tls\|/ });
  t.match(good.proc.lines.find((l) => l.includes('xds: connecting')), /"tls":true/);
  good.kill('SIGKILL');

  const noCert = await SidecarProc.start(bootstrap({ sni: 'istiod.istio-system.svc', common_tls_context: { validation_context: { trusted_ca: { filename: file('ca.crt') } } } }));
  procs.push(noCert);
  await noCert.proc.waitJson<{ msg?: string }>((o) => o.msg?.startsWith('xds: stream closed') === true, 20_000);
  t.equal((await noCert.get('/ready')).status, 503, 'istiod refuses a client without a certificate: never ready');
  noCert.kill('SIGKILL');

  // "default" / "ROOTCA" are the workload identity (test/identity/readiness.test.ts); other SDS names are not served.
  const sds = bootstrap({ common_tls_context: { tls_certificate_sds_secret_configs: [{ name: 'my-secret' }] } });
  const r = runCli(['run', '-c', writeTemp('tls-sds.json', sds), '--health-port', '0', '--prometheus-port', '0']);
  t.equal(r.status, 1);
  t.match(r.stderr, /static_resources\.clusters\[0\]\.transport_socket\.typed_config\.common_tls_context: SDS secret "my-secret" is not supported for the xDS connection/);
});

async function startTlsServer(resources: Json[], tlsArgs: string[]): Promise<AdsServer & { kill(): unknown }> {
  // AdsServer.start has no TLS flags; start the peer directly with them.
  const file = writeTemp(`ads-tls-${Date.now()}.json`, { version: 't1', resources });
  const proc = new Proc(spawn(process.execPath, [join(repoRoot, 'dist/test/peers/ads-server.js'), '--resources', file, ...tlsArgs], { stdio: ['pipe', 'pipe', 'pipe'] }), 'ads-server-tls');
  const l = await proc.waitJson<{ event?: string; port?: number }>((o) => o.event === 'listening');
  return { proc, port: l.port!, kill: () => proc.kill('SIGKILL') } as unknown as AdsServer;
}

function runCli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [cliPath, ...args], { cwd: repoRoot, encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
}

t.test('run --xds-address: ADS without dynamic_resources, node identity from the pod environment', async (t) => {
  const procs: { kill(s?: NodeJS.Signals): unknown }[] = [];
  t.teardown(() => procs.forEach((p) => p.kill('SIGKILL')));
  const echo = await startEcho('echo-cli');
  procs.push(echo.proc);
  const port = await freePort();
  const server = await AdsServer.start({ resources: [edsCluster(ECHO), cla(ECHO, [{ address: '127.0.0.1', port: echo.port }]), tcpListener('echo-listener', '127.0.0.1', port, ECHO)], label: 'cli' });
  procs.push(server);
  const plain = writeTemp('plain.json', { admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } } });
  const env = { POD_NAME: 'ratings-v1-abc', POD_NAMESPACE: 'bookinfo', INSTANCE_IP: '10.244.0.9', ISTIO_META_LABELS: '{"app":"ratings"}', ISTIO_META_GENERATOR: 'grpc' };
  const child = spawn(process.execPath, [cliPath, 'run', '-c', plain, '--xds-address', `127.0.0.1:${server.port}`, '--health-port', '0', '--prometheus-port', '0'], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const proc = new Proc(child, 'sidecar-cli');
  procs.push(proc);
  const first = await server.waitRequest(0, (r) => r.type === 'cluster', 20_000);
  t.equal(first.node?.id, 'sidecar~10.244.0.9~ratings-v1-abc.bookinfo~bookinfo.svc.cluster.local');
  t.equal(first.node?.cluster, 'ratings.bookinfo', 'app label . namespace');
  t.match(first.node?.metadata, { LABELS: { app: 'ratings' }, NAMESPACE: 'bookinfo', NAME: 'ratings-v1-abc', INSTANCE_IPS: '10.244.0.9' });
  t.notOk('GENERATOR' in (first.node?.metadata ?? {}), 'ISTIO_META_GENERATOR is dropped');
  await proc.waitJson<{ msg?: string }>((o) => o.msg === 'xds: first complete config applied, LIVE', 20_000);
  t.match(await tcpRoundTrip('127.0.0.1', port, 'cli'), { ok: true, received: /^cli\necho-cli\|/ });
});

t.test('the embedded bootstrap of `run --xds-address` with no -c', async (t) => {
  const b = decodeBootstrap(adsBootstrapFor(defaultBootstrap.node, 'istiod.istio-system.svc:15010'));
  t.same(b.listeners, [], 'no static listeners: istiod sends virtualOutbound and virtualInbound');
  t.match(b.dynamicResources, { adsConfig: { apiType: 'GRPC', targetUri: 'istiod.istio-system.svc:15010' }, ldsConfig: { ads: true, initialFetchTimeoutMs: 0 }, cdsConfig: { ads: true, initialFetchTimeoutMs: 0 } });
  t.same(resolveXdsTarget(b, 'istiod.istio-system.svc:15010'), { target: 'istiod.istio-system.svc:15010', tls: undefined, source: '--xds-address' });
});

t.test('bad xDS settings fail at start-up with the field at fault', async (t) => {
  const bad = adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: 1 });
  (bad.dynamic_resources as { ads_config: Json }).ads_config.grpc_services = [{ envoy_grpc: { cluster_name: 'nope' } }];
  let r = runCli(['run', '-c', writeTemp('bad-ads.json', bad), '--health-port', '0', '--prometheus-port', '0']);
  t.equal(r.status, 1);
  t.match(r.stderr, /^error: dynamic_resources\.ads_config\.grpc_services\[0\]\.envoy_grpc\.cluster_name: no static cluster named "nope"/);

  const eds = adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: 1 });
  (eds.static_resources as { clusters: Json[] }).clusters[0] = { ...staticCluster('xds-grpc', '127.0.0.1', 1), type: 'EDS', load_assignment: undefined };
  r = runCli(['run', '-c', writeTemp('eds-ads.json', eds), '--health-port', '0', '--prometheus-port', '0']);
  t.match(r.stderr, /static_resources\.clusters\[0\]\.type: the xDS cluster must be STATIC, STRICT_DNS or LOGICAL_DNS, got EDS/);

  r = runCli(['run', '--xds-address', 'istiod', '--health-port', '0', '--prometheus-port', '0']);
  t.match(r.stderr, /--xds-address: expected host:port, got "istiod"/);

  const anon = adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: 1, node: { id: 'my-proxy' } });
  r = runCli(['run', '-c', writeTemp('anon.json', anon), '--health-port', '0', '--prometheus-port', '0'], { POD_NAME: 'p1' });
  t.match(r.stderr, /node\.id: istiod needs an id of the form sidecar~IP~POD\.NAMESPACE~NAMESPACE\.svc\.cluster\.local/);
});

t.test('istiod not there at start: not ready, retrying, ready once it comes', async (t) => {
  const procs: { kill(s?: NodeJS.Signals): unknown }[] = [];
  t.teardown(() => procs.forEach((p) => p.kill('SIGKILL')));
  const port = await freePort();
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: port }));
  procs.push(sidecar);
  await sidecar.proc.waitJson<{ msg?: string; retryInMs?: number }>((o) => o.msg?.startsWith('xds: stream closed') === true, 20_000);
  t.equal((await sidecar.get('/ready')).status, 503);
  const server = await AdsServer.start({ resources: [], port, label: 'late' });
  procs.push(server);
  t.equal(await sidecar.waitReady(35_000), 200, 'an empty config from istiod is a complete config');
  const retries = sidecar.proc.lines.filter((l) => l.includes('xds: stream closed')).map((l) => (JSON.parse(l) as { retryInMs: number }).retryInMs);
  t.ok(retries.length >= 1, `retried ${retries.length} time(s): ${retries.join(', ')} ms`);
  t.ok(retries.every((ms) => ms >= 250 && ms <= 30_000), 'within the jittered backoff bounds');
});
