// The Istio contract pieces in src/agent/, on their own: PROXY_CONFIG, the bootstrap built from the pod's
// environment (decoded by the same config code as a file), the istio-iptables and proxy-sidecar command lines.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parseAppProbers } from '../../src/agent/app-probe.js';
import { istioBootstrap, parseDownwardLabels, xdsSecurity } from '../../src/agent/istio-bootstrap.js';
import { stripAgentFlags } from '../../src/agent/istio-iptables.js';
import { parseProxyArgs } from '../../src/agent/proxy-command.js';
import { parseProxyConfig, withProxyMetadata } from '../../src/agent/proxy-config.js';
import { decodeBootstrap } from '../../src/config/bootstrap.js';
import { newContext } from '../../src/config/reader.js';
import { resolveXdsTarget } from '../../src/xds/target.js';
import { buildNodeIdentity } from '../../src/xds/node-identity.js';

// What the stock template writes into PROXY_CONFIG for the mesh defaults (protoToJSON of ProxyConfig).
const MESH_DEFAULT = '{"binaryPath":"/usr/local/bin/envoy","concurrency":2,"configPath":"./etc/istio/proxy","controlPlaneAuthPolicy":"MUTUAL_TLS","discoveryAddress":"istiod.istio-system.svc:15012","drainDuration":"45s","proxyAdminPort":15000,"serviceCluster":"istio-proxy","statNameLength":189,"statusPort":15020,"terminationDrainDuration":"5s","tracing":{"zipkin":{"address":"zipkin.istio-system:9411"}}}\n';
const POD = { POD_NAME: 'provider-5d8f-abcde', POD_NAMESPACE: 'shop', INSTANCE_IP: '10.1.2.3', SERVICE_ACCOUNT: 'provider' };

t.test('PROXY_CONFIG: the mesh default, Istio defaults when absent, and clear errors', async (t) => {
  const pc = parseProxyConfig(MESH_DEFAULT);
  t.equal(pc.discoveryAddress, 'istiod.istio-system.svc:15012');
  t.equal(pc.drainMs, 45_000);
  t.equal(pc.terminationDrainMs, 5_000);
  t.equal(pc.statusPort, 15020);
  t.equal(pc.adminPort, 15000);
  t.equal(pc.controlPlaneAuthPolicy, 'MUTUAL_TLS');
  t.same(pc.ignored, ['binaryPath', 'concurrency', 'configPath', 'serviceCluster', 'statNameLength', 'tracing']);
  t.same(pc.unknown, []);

  const none = parseProxyConfig(undefined);
  t.equal(none.discoveryAddress, 'istiod.istio-system.svc:15012');
  t.equal(none.terminationDrainMs, 5000);
  t.same(parseProxyConfig('{"discovery_address":"istiod:15010","proxy_metadata":{"A":"1"},"bogusField":1}').discoveryAddress, 'istiod:15010', 'snake_case accepted');
  t.same(parseProxyConfig('{"bogusField":1}').unknown, ['bogusField']);

  t.throws(() => parseProxyConfig('{"discoveryAddress":'), /PROXY_CONFIG: not valid JSON/);
  t.throws(() => parseProxyConfig('[]'), /PROXY_CONFIG: expected a JSON object/);
  t.throws(() => parseProxyConfig('{"drainDuration":"soon"}'), /PROXY_CONFIG\.drainDuration: expected a duration/);
  t.throws(() => parseProxyConfig('{"statusPort":70000}'), /PROXY_CONFIG\.statusPort: expected a port/);
  t.throws(() => parseProxyConfig('{"discoveryAddress":"istiod"}'), /PROXY_CONFIG\.discoveryAddress: expected host:port/);
  t.throws(() => parseProxyConfig('{"proxyMetadata":{"A":1}}'), /PROXY_CONFIG\.proxyMetadata\.A: expected a string/);

  const env = withProxyMetadata({ A: 'pod', B: 'pod' }, parseProxyConfig('{"proxyMetadata":{"B":"mesh","ISTIO_META_DNS_CAPTURE":"true"}}'));
  t.same(env, { A: 'pod', B: 'mesh', ISTIO_META_DNS_CAPTURE: 'true' }, 'proxyMetadata becomes the agent environment, winning over the pod');
});

t.test('bootstrap from the environment: plaintext :15010, decoded like a file, node as istiod expects', async (t) => {
  const pc = parseProxyConfig('{"discoveryAddress":"istiod.istio-system.svc:15010","proxyAdminPort":15000}');
  const env = { ...POD, ISTIO_META_CLUSTER_ID: 'Kubernetes', ISTIO_META_WORKLOAD_NAME: 'provider', ISTIO_META_APP_CONTAINERS: 'app', ISTIO_META_POD_PORTS: '[{"containerPort":12200}]' };
  const raw = istioBootstrap({ env, proxyConfig: pc, domain: 'shop.svc.cluster.local', exists: () => false });
  const ctx = newContext();
  const b = decodeBootstrap(raw, ctx);
  t.same(ctx.warnings, [], 'no warnings');
  t.equal(b.dynamicResources?.adsConfig?.clusterName, 'xds-grpc');
  const target = resolveXdsTarget(b);
  t.equal(target.target, 'dns:istiod.istio-system.svc:15010');
  t.equal(target.tls, undefined, 'plaintext');
  const { node } = buildNodeIdentity({ rawNode: (raw as { node: unknown }).node, env, version: '0.1.0' });
  t.equal(node.id, 'sidecar~10.1.2.3~provider-5d8f-abcde.shop~shop.svc.cluster.local');
  t.equal(node.metadata.CLUSTER_ID, 'Kubernetes');
  t.equal(node.metadata.WORKLOAD_NAME, 'provider');
  t.equal(node.metadata.NAMESPACE, 'shop');
  t.same((node.metadata.PROXY_CONFIG as { discoveryAddress: string }).discoveryAddress, 'istiod.istio-system.svc:15010', 'PROXY_CONFIG forwarded to istiod');

  t.throws(() => istioBootstrap({ env: { POD_NAME: 'x' }, proxyConfig: pc }), /POD_NAMESPACE, INSTANCE_IP not set/);
});

t.test('bootstrap from the environment: :15012 is mTLS with the workload identity (SDS default/ROOTCA), or pinned files', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xs-agent-'));
  const root = join(dir, 'root-cert.pem');
  writeFileSync(root, 'not read here');
  const pc = parseProxyConfig(MESH_DEFAULT);
  t.same(xdsSecurity({ env: POD, proxyConfig: pc, exists: () => false }), { tls: true, workloadIdentity: true, serverName: 'istiod.istio-system.svc' });
  const raw = istioBootstrap({ env: POD, proxyConfig: pc, exists: () => false });
  const target = resolveXdsTarget(decodeBootstrap(raw, newContext()));
  t.equal(target.target, 'dns:istiod.istio-system.svc:15012');
  t.same(target.tls, { workloadIdentity: true, serverName: 'istiod.istio-system.svc' }, "the xDS client takes the identity's certificate, as Envoy under pilot-agent");

  const files = new Set([root, '/etc/certs/cert-chain.pem', '/etc/certs/key.pem']);
  const sec = xdsSecurity({ env: { ...POD, XSIDECAR_XDS_ROOT_CERT: root, ISTIOD_SAN: 'istiod.example' }, proxyConfig: pc, exists: (f) => files.has(f) });
  t.same(sec, { tls: true, caFile: root, certFile: '/etc/certs/cert-chain.pem', keyFile: '/etc/certs/key.pem', serverName: 'istiod.example' });
  const pinned = istioBootstrap({ env: { ...POD, XSIDECAR_XDS_ROOT_CERT: root }, proxyConfig: pc, exists: (f) => f === root });
  t.same(resolveXdsTarget(decodeBootstrap(pinned, newContext())).tls, { caFile: root, certFile: undefined, keyFile: undefined, serverName: 'istiod.istio-system.svc' }, 'files when pinned');
  t.throws(() => istioBootstrap({ env: { ...POD, XSIDECAR_XDS_ROOT_CERT: '/nope.pem' }, proxyConfig: pc, exists: () => false }), /XSIDECAR_XDS_ROOT_CERT: \/nope\.pem does not exist/);
  const plain = parseProxyConfig('{"discoveryAddress":"istiod:15010","controlPlaneAuthPolicy":"MUTUAL_TLS"}');
  t.equal(xdsSecurity({ env: POD, proxyConfig: plain, exists: () => false }).tls, false, ':15010 is plaintext whatever the policy');
  const policy = parseProxyConfig('{"discoveryAddress":"istiod:443","controlPlaneAuthPolicy":"MUTUAL_TLS"}');
  t.equal(xdsSecurity({ env: POD, proxyConfig: policy, exists: () => false }).tls, true, 'another port follows controlPlaneAuthPolicy');
});

t.test('downward API labels and app probers', async (t) => {
  t.same(parseDownwardLabels('app="provider"\nversion="v1"\nsecurity.istio.io/tlsMode="istio"\n'), { app: 'provider', version: 'v1', 'security.istio.io/tlsMode': 'istio' });
  const p = parseAppProbers('{"/app-health/app/readyz":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP"},"timeoutSeconds":1},"/app-health/app/livez":{"tcpSocket":{"port":"8080"}}}');
  t.same([...p.keys()], ['/app-health/app/readyz', '/app-health/app/livez']);
  t.equal(p.get('/app-health/app/livez')!.tcpSocket!.port, 8080);
  t.throws(() => parseAppProbers('{'), /ISTIO_KUBE_APP_PROBERS: not valid JSON/);
  t.throws(() => parseAppProbers('{"/x":{"exec":{}}}'), /expected httpGet, tcpSocket or grpc/);
  t.throws(() => parseAppProbers('{"/x":{"httpGet":{"port":"http"}}}'), /httpGet\.port: expected a port number/);
});

t.test('command lines as the template writes them', async (t) => {
  const init = stripAgentFlags(['-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', '15090,15021,15020', '--log_output_level=default:info', '--log_as_json']);
  t.same(init.args, ['-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', '15090,15021,15020']);
  t.same(init.ignored, ['--log_output_level=default:info', '--log_as_json']);
  t.equal(init.skipApply, false);
  t.equal(stripAgentFlags(['--run-validation', '--skip-rule-apply']).skipApply, true);

  const args = parseProxyArgs(['sidecar', '--domain', 'shop.svc.cluster.local', '--proxyLogLevel=warning', '--proxyComponentLogLevel=misc:error', '--log_output_level=default:info', '--log_as_json']);
  t.same(args, { domain: 'shop.svc.cluster.local', logLevel: 'warn', ignored: ['--proxyComponentLogLevel=misc:error', '--log_output_level=default:info', '--log_as_json'] });
  t.equal(parseProxyArgs(['sidecar', '--proxyLogLevel=misc:error,debug']).logLevel, 'debug');
  t.throws(() => parseProxyArgs(['router']), /only "proxy sidecar" is supported/);
  t.throws(() => parseProxyArgs(['sidecar', '--frobnicate=1']), /--frobnicate: unknown flag/);
  t.throws(() => parseProxyArgs(['sidecar', '--proxyLogLevel=loud']), /--proxyLogLevel: expected one of/);
  t.throws(() => parseProxyArgs(['sidecar', '--domain']), /--domain: expects a value/);
});
