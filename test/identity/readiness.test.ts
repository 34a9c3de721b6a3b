/**
 * Readiness and the xDS connection with the workload identity: a config that needs the certificate is
 * not ready until the CA answers; one that does not is ready without it, even with CA_ADDR set (Istio's
 * injector always sets it); ADS over mTLS to istiod's secure port uses the CA client's certificate, the
 * mesh root and the token, and waits for the certificate before it connects.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { identityEnv, identityFlags, ISTIOD_SAN, makeMeshPki, startMeshSidecar, TestCa, TOKEN, whenReady } from '../helpers/mesh-ca.js';
import { inboundChains, listenerFilters } from '../helpers/mesh-config.js';
import { Proc, writeTemp } from '../helpers/netns.js';
import { repoRoot } from '../helpers/paths.js';
import { freePort } from '../helpers/sidecar.js';

type Json = Record<string, unknown>;


const status = async (health: string) => (await fetch(`http://${health}/healthz/ready`)).status;
const app = (port: number) => ({ name: 'app', type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: 'app', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }] } });
const listener = (chains: Json[]) => ({ name: 'inbound', address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, listener_filters: listenerFilters, filter_chains: chains });
const plainChain = [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'app', cluster: 'app' } }] }];

t.test('readiness follows the certificate only when the config needs one', async (t) => {
  const pki = await makeMeshPki();
  const caPort = await freePort();
  const env = identityEnv(`127.0.0.1:${caPort}`, 'default', 'p1');
  const procs: { kill(): void }[] = [];
  t.teardown(() => procs.forEach((p) => p.kill()));

  const needs = await startMeshSidecar('ready-needs', { static_resources: { listeners: [listener(inboundChains('app', 'STRICT'))], clusters: [app(9)] } }, env, identityFlags(pki));
  procs.push({ kill: () => needs.proc.kill('SIGKILL') });
  const none = await startMeshSidecar('ready-none', { static_resources: { listeners: [listener(plainChain)], clusters: [app(9)] } }, env, identityFlags(pki));
  procs.push({ kill: () => none.proc.kill('SIGKILL') });

  t.equal(await status(none.health), 200, 'no TLS in the config: ready with the CA down, CA_ADDR set or not');
  await none.proc.waitJson<{ msg?: string }>((o) => o.msg === 'identity: certificate request failed');
  t.equal(await status(none.health), 200, 'still ready while the CA client keeps failing');
  await needs.proc.waitJson<{ msg?: string }>((o) => o.msg === 'identity: certificate request failed');
  t.equal(await status(needs.health), 503, 'a TLS inbound chain needs the certificate: not ready while the CA is down');
  t.ok((await needs.metric('xsidecar_identity_csr_failures_total')) >= 1, 'failures counted');

  const ca = await TestCa.start(pki, { port: caPort });
  procs.push({ kill: () => ca.stop() });
  await whenReady(needs.health);
  t.pass('ready once the CA came back');
  t.ok((await needs.metric('xsidecar_identity_cert_expiry_timestamp_seconds')) > Date.now() / 1000, 'expiry exported');
  t.ok((await needs.metric('xsidecar_identity_cert_rotation_timestamp_seconds')) > Date.now() / 1000, 'next rotation exported');
});

t.test('ADS over mTLS to istiod with the workload identity, token and ClusterID', async (t) => {
  const pki = await makeMeshPki();
  const ca = await TestCa.start(pki);
  const procs: { kill(): void }[] = [{ kill: () => ca.stop() }];
  t.teardown(() => procs.forEach((p) => p.kill()));
  const appPort = await freePort();
  const resources = [
    { '@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster', ...app(9) },
    { '@type': 'type.googleapis.com/envoy.config.listener.v3.Listener', name: 'from-istiod', address: { socket_address: { address: '127.0.0.1', port_value: appPort } }, filter_chains: plainChain },
  ];
  // istiod's secure port: its certificate from the mesh root, client certificates required from it too.
  const file = writeTemp(`ads-mtls-${Date.now()}.json`, { version: 'v1', resources });
  const ads = new Proc(
    spawn(process.execPath, [join(repoRoot, 'dist/test/peers/ads-server.js'), '--resources', file, '--tls-cert', pki.file('istiod.pem'), '--tls-key', pki.file('istiod-key.pem'), '--tls-ca', pki.file('root-cert.pem')], { stdio: ['pipe', 'pipe', 'pipe'] }),
    'ads-server-mtls',
  );
  procs.push({ kill: () => ads.kill('SIGKILL') });
  const adsPort = (await ads.waitJson<{ event?: string; port?: number }>((o) => o.event === 'listening')).port!;
  // The xds-grpc cluster as Istio's bootstrap would name the workload secrets: SDS "default" and "ROOTCA".
  const sds = (name: string) => ({ name, sds_config: { api_config_source: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'sds-grpc' } }] } } });
  const bootstrap = {
    node: { id: 'sidecar~127.0.0.1~p1.default~default.svc.cluster.local', cluster: 'p1.default' },
    dynamic_resources: { lds_config: { ads: {} }, cds_config: { ads: {} }, ads_config: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'xds-grpc' } }] } },
    static_resources: {
      clusters: [
        {
          name: 'xds-grpc',
          type: 'STATIC',
          connect_timeout: '1s',
          load_assignment: { cluster_name: 'xds-grpc', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: adsPort } } } }] }] },
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
              sni: ISTIOD_SAN,
              common_tls_context: { tls_certificate_sds_secret_configs: [sds('default')], combined_validation_context: { default_validation_context: {}, validation_context_sds_secret_config: sds('ROOTCA') } },
            },
          },
        },
      ],
    },
  };
  const sidecar = await startMeshSidecar('xds-mtls', bootstrap, identityEnv(`127.0.0.1:${ca.port}`, 'default', 'p1'), identityFlags(pki));
  procs.push({ kill: () => sidecar.proc.kill('SIGKILL') });
  await whenReady(sidecar.health);
  const stream = await ads.waitJson<{ event?: string; authorization?: string; clusterId?: string }>((o) => o.event === 'stream');
  t.equal(stream.authorization, `Bearer ${TOKEN}`, 'the token on the ADS stream');
  t.equal(stream.clusterId, 'Kubernetes', 'ClusterID on the ADS stream');
  const certLine = sidecar.proc.lines.findIndex((l) => l.includes('identity: workload certificate issued'));
  const connectLine = sidecar.proc.lines.findIndex((l) => l.includes('xds: connecting'));
  t.ok(certLine >= 0 && connectLine > certLine, 'ADS connects only once the certificate is in');
  t.ok(ca.issued().length >= 1);
});
