import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { decodeBootstrap } from '../../src/config/bootstrap.js';
import { decodeCluster, decodeLoadAssignment } from '../../src/config/cluster.js';
import { defaultBootstrap } from '../../src/config/default-bootstrap.js';
import { decodeListener } from '../../src/config/listener.js';
import type { TcpProxyConfig } from '../../src/config/model.js';
import { ConfigError, newContext, parseDurationMs } from '../../src/config/reader.js';
import { fromSource, sameSource } from '../../src/config/source.js';
import { writeTemp } from '../helpers/netns.js';
import { cliPath, fixture } from '../helpers/paths.js';

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
const istio = (name: string) => JSON.parse(readFileSync(fixture('istio', 'istio-1.18-sidecar-deathstarbench', name), 'utf8')) as unknown;

function rejects(t: Test, mutate: (b: any) => void, path: string, detail: RegExp) {
  const b = clone(defaultBootstrap) as any;
  mutate(b);
  const err = t.throws(() => decodeBootstrap(b)) as ConfigError;
  t.type(err, ConfigError);
  t.equal(err.path, path);
  t.match(err.detail, detail);
}

t.test('the embedded default decodes into Istio\'s capture skeleton', async (t) => {
  const b = decodeBootstrap(clone(defaultBootstrap));
  t.same(b.listeners.map((l) => [l.name, l.address.port, l.useOriginalDst, l.originalDstFilter]), [
    ['virtualOutbound', 15001, true, false],
    ['virtualInbound', 15006, false, true],
  ]);
  t.same(b.clusters.map((c) => [c.name, c.type]), [['PassthroughCluster', 'ORIGINAL_DST'], ['InboundPassthroughClusterIpv4', 'ORIGINAL_DST'], ['BlackHoleCluster', 'STATIC']]);
  t.equal(b.clusters[1]!.upstreamBindAddress, '127.0.0.6');
  t.same(b.admin, { address: '127.0.0.1', port: 15000 });
});

t.test('invalid bootstraps are rejected with the field path', async (t) => {
  rejects(t, (b) => (b.static_resources.listeners[1].address.socket_address.port_value = 70000), 'static_resources.listeners[1].address.socket_address.port_value', /expected 0\.\.65535, got 70000/);
  rejects(t, (b) => (b.static_resources.listeners[0].address.socket_address.address = 'not-an-ip'), 'static_resources.listeners[0].address.socket_address.address', /expected an IP address/);
  rejects(t, (b) => delete b.static_resources.listeners[0].name, 'static_resources.listeners[0].name', /is required/);
  rejects(t, (b) => (b.static_resources.clusters[0].type = 'FANCY'), 'static_resources.clusters[0].type', /expected one of STATIC/);
  rejects(t, (b) => (b.static_resources.clusters[2].connect_timeout = 'soon'), 'static_resources.clusters[2].connect_timeout', /expected a duration/);
  rejects(t, (b) => (b.static_resources.listeners[0].filter_chains[1].filters[0].typed_config.cluster = 'nope'), 'static_resources.listeners[0].filter_chains[1].filters[0].typed_config.cluster', /unknown cluster "nope"/);
  rejects(t, (b) => b.static_resources.clusters.push(clone(b.static_resources.clusters[0])), 'static_resources.clusters[3].name', /duplicate cluster name/);
  rejects(t, (b) => (b.static_resources.listeners[1].address.socket_address.port_value = 15001), 'static_resources.listeners[1].address', /already used/);
  rejects(t, (b) => (b.static_resources.listeners[0].filter_chains = 'x'), 'static_resources.listeners[0].filter_chains', /expected a list/);
  rejects(t, (b) => (b.static_resources.listeners[0].filter_chains[0].filters = [{ name: 'envoy.filters.network.redis_proxy' }]), 'static_resources.listeners[0].filter_chains[0].filters', /no terminal network filter/);
  rejects(t, (b) => (b.static_resources.listeners[0].filter_chains[1].filters[0] = { name: 'x', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', protocol: 'bolts', cluster: 'BlackHoleCluster' } }), 'static_resources.listeners[0].filter_chains[1].filters[0].typed_config.protocol', /unknown protocol "bolts" \(known: bolt, dubbo, hsf\)/);
  rejects(t, (b) => (b.dynamic_resources = { ads_config: { api_type: 'REST', grpc_services: [] } }), 'dynamic_resources.ads_config.api_type', /expected GRPC or DELTA_GRPC/);
});

t.test('unknown fields and filters are warnings, not errors', async (t) => {
  const b = clone(defaultBootstrap) as any;
  b.static_resources.listeners[0].shiny_new_field = 1;
  b.static_resources.listeners[0].filter_chains[1].filters.unshift({ name: 'istio.stats', typed_config: { '@type': 'type.googleapis.com/stats.PluginConfig' } });
  const ctx = newContext();
  const decoded = decodeBootstrap(b, ctx);
  t.equal(decoded.listeners[0]!.filterChains[1]!.filters.length, 1, 'the unknown filter is skipped');
  t.same(ctx.warnings.sort(), [
    'static_resources.listeners[0].filter_chains[1].filters[0]: filter istio.stats (stats.PluginConfig) is not implemented, skipped',
    'static_resources.listeners[0].shiny_new_field: unknown field, ignored',
  ]);
});

t.test('proto3 JSON forms: durations, wrappers, camelCase, int64 strings', async (t) => {
  t.equal(parseDurationMs('0s'), 0);
  t.equal(parseDurationMs('1.5s'), 1500);
  t.equal(parseDurationMs({ seconds: '2', nanos: 5e8 }), 2500);
  t.equal(parseDurationMs('5m'), undefined);
  const l = decodeListener({ name: 'x', address: { socketAddress: { address: '1.2.3.4', portValue: 80 } }, bindToPort: { value: false }, filterChains: [{ filterChainMatch: { destinationPort: { value: 80 } }, filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', cluster: 'c', idleTimeout: { seconds: '3' } } }] }] }, 'l', newContext());
  t.equal(l.bindToPort, false);
  t.equal(l.filterChains[0]!.match.destinationPort, 80);
  t.equal((l.filterChains[0]!.filters[0] as TcpProxyConfig).idleTimeoutMs, 3000);
});

t.test('real istiod resources decode', async (t) => {
  const ctx = newContext();
  const vo = decodeListener(istio('listener_virtualOutbound.json'), 'virtualOutbound', ctx);
  t.equal(vo.useOriginalDst, true);
  t.same(vo.filterChains.map((c) => [c.name, c.match.destinationPort, (c.filters[0] as TcpProxyConfig).cluster]), [
    ['virtualOutbound-blackhole', 15001, 'BlackHoleCluster'],
    ['virtualOutbound-catchall-tcp', undefined, 'PassthroughCluster'],
  ]);
  const tcpL = decodeListener(istio('listener_10.68.54.170_27017_tcp.json'), 'tcp', ctx);
  t.same([tcpL.address, tcpL.bindToPort], [{ address: '10.68.54.170', port: 27017 }, false]);
  t.equal((tcpL.filterChains[0]!.filters.at(-1) as TcpProxyConfig).cluster, 'outbound|27017||mongodb-user.hr2.svc.cluster.local');
  const pass = decodeCluster(istio('cluster_PassthroughCluster.json'), 'c', ctx);
  t.same([pass.type, pass.connectTimeoutMs, pass.lbPolicy], ['ORIGINAL_DST', 10_000, 'ROUND_ROBIN']);
  t.equal(decodeCluster(istio('cluster_InboundPassthroughClusterIpv4.json'), 'c', ctx).upstreamBindAddress, '127.0.0.6');
  const eds = decodeCluster(istio('cluster_outbound_9080_reviews.json'), 'c', ctx);
  t.same([eds.type, eds.lbPolicy, eds.edsServiceName], ['EDS', 'LEAST_REQUEST', 'outbound|9080||reviews.default.svc.cluster.local']);
  const cla = decodeLoadAssignment(istio('cla_outbound_8080_alertmanager-main_3eps.json'), 'cla', ctx);
  t.equal(cla.endpoints.length, 3);
  t.ok(cla.endpoints.every((e) => e.port === 8080 || e.port > 0));
});

t.test('what telemetry needs of a resource is in its model, not read from its raw form', async (t) => {
  const ctx = newContext();
  const eds = decodeCluster(istio('cluster_outbound_9080_reviews.json'), 'c', ctx);
  t.same(eds.istioServices, [{ host: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default' }], 'istio.services metadata');
  const md = (services: unknown) => ({ name: 'c', type: 'STATIC', metadata: { filter_metadata: { istio: { services } } } });
  t.same(decodeCluster(md([{ name: 'no-host' }, { host: 'a.b.svc' }]), 'c', ctx).istioServices, [{ host: 'a.b.svc' }], 'entries without a host are skipped');
  t.equal(decodeCluster(md('garbage'), 'c', ctx).istioServices, undefined);
  t.equal(decodeCluster({ name: 'c', type: 'STATIC' }, 'c', ctx).istioServices, undefined);
  t.equal(decodeListener(istio('listener_virtualOutbound.json'), 'l', ctx).trafficDirection, 'OUTBOUND');
  const inbound = { ...(istio('listener_virtualOutbound.json') as Record<string, unknown>), traffic_direction: 1 };
  t.equal(decodeListener(inbound, 'l', ctx).trafficDirection, 'INBOUND', 'as protobuf numbers it');
  t.equal(decodeListener({ ...inbound, traffic_direction: 'UNSPECIFIED' }, 'l', ctx).trafficDirection, undefined);
  t.equal(decodeListener({ ...inbound, traffic_direction: 'sideways' }, 'l', ctx).trafficDirection, undefined, 'a value telemetry does not know fails nothing');
});

t.test('camelCase fields are read and not reported as unknown, digits included', async (t) => {
  const ctx = newContext();
  const c = decodeCluster({ name: 'c', type: 'STATIC', connectTimeout: '2s', outlierDetection: { consecutive5xx: 3, enforcingConsecutive5xx: 100, interval: '5s', bogusField: 1 } }, 'c', ctx);
  t.equal(c.connectTimeoutMs, 2000);
  t.equal(c.outlierDetection?.consecutive5xx, 3);
  t.same(ctx.warnings, ['c.outlier_detection.bogusField: unknown field, ignored'], 'only the unknown one');
});

t.test('two listeners are the same config by their bytes when both came from xDS, else by their JSON', async (t) => {
  const l = () => decodeListener(istio('listener_virtualOutbound.json'), 'l', newContext());
  t.ok(sameSource(l(), l()), 'static: equal JSON');
  t.notOk(sameSource(l(), { ...l(), raw: { name: 'other' } }));
  const a = fromSource(l(), { view: Buffer.from('bytes-1') }, () => ({ from: 'bytes' }));
  const b = fromSource(l(), { view: Buffer.from('bytes-1') }, () => ({ from: 'bytes' }));
  const c = fromSource(l(), { view: Buffer.from('bytes-2') }, () => ({ from: 'bytes' }));
  t.equal(a.name, l().name, 'the fields are all there');
  t.ok(sameSource(a, b), 'equal bytes (in buffers of their own)');
  t.notOk(sameSource(a, c), 'different bytes');
  t.same(a.raw, { from: 'bytes' }, 'raw is made when read');
  t.notOk(Object.hasOwn(a, 'raw'), "the model's own raw is not copied in");
});

t.test('xsidecar check: exit 0 with a summary, exit 1 with the field path', async (t) => {
  const good = spawnSync(process.execPath, [cliPath, 'check', '-c', writeTemp('good.yaml', JSON.stringify(defaultBootstrap))], { encoding: 'utf8' });
  t.equal(good.status, 0, good.stderr);
  t.match(good.stdout, /ok: .*2 listener\(s\) \[virtualOutbound@0\.0\.0\.0:15001, virtualInbound@0\.0\.0\.0:15006\], 3 cluster\(s\)/);
  const broken = clone(defaultBootstrap) as any;
  broken.static_resources.listeners[1].address.socket_address.port_value = 99999;
  const bad = spawnSync(process.execPath, [cliPath, 'check', '-c', writeTemp('bad.json', broken)], { encoding: 'utf8' });
  t.equal(bad.status, 1);
  t.equal(bad.stderr.trim(), 'error: static_resources.listeners[1].address.socket_address.port_value: expected 0..65535, got 99999');
  const yaml = spawnSync(process.execPath, [cliPath, 'check', '-c', writeTemp('bad.yaml', 'static_resources: [unclosed')], { encoding: 'utf8' });
  t.equal(yaml.status, 1);
  t.match(yaml.stderr, /not valid YAML or JSON/);
});

t.test('xsidecar run refuses a broken bootstrap before anything listens', async (t) => {
  const broken = clone(defaultBootstrap) as any;
  broken.static_resources.clusters[0].connect_timeout = 'later';
  const r = spawnSync(process.execPath, [cliPath, 'run', '-c', writeTemp('bad-run.json', broken)], { encoding: 'utf8', timeout: 10_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /static_resources\.clusters\[0\]\.connect_timeout: expected a duration/);
  t.notMatch(r.stdout, /xsidecar started/);
});
