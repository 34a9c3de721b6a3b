import t from 'tap';
import { ConfigError } from '../../src/config/reader.js';
import { buildNodeIdentity } from '../../src/xds/node-identity.js';
import { fromProto3Json, toProto3Json } from '../../src/xds/proto-json.js';
import { loadXdsProtos } from '../../src/xds/protos.js';
import { DSB, type Json, readFixture } from './harness.js';

const real = readFixture(DSB, 'node_bootstrap.json');

t.test('the node Istio 1.18 wrote for Envoy goes to istiod as it was', async (t) => {
  const { node, warnings } = buildNodeIdentity({ rawNode: real, env: {}, version: '0.1.0' });
  t.equal(node.id, 'sidecar~172.16.188.31~geo-5c54dcd5bd-z5ghf.hr2~hr2.svc.cluster.local');
  t.equal(node.cluster, 'geo.hr2');
  const m = node.metadata as Json;
  for (const k of ['CLUSTER_ID', 'NAMESPACE', 'LABELS', 'INTERCEPTION_MODE', 'INSTANCE_IPS', 'ISTIO_VERSION', 'MESH_ID', 'SERVICE_ACCOUNT', 'NAME', 'WORKLOAD_NAME', 'POD_PORTS']) {
    t.same(m[k], (real.metadata as Json)[k], k);
  }
  t.notOk('GENERATOR' in m);
  t.same(warnings, []);
  t.equal(node.user_agent_name, 'xsidecar');
  t.equal(node.user_agent_version, '0.1.0');
});

t.test('the pod environment builds the id and metadata as pilot-agent does', async (t) => {
  const { node } = buildNodeIdentity({
    rawNode: { metadata: { ISTIO_VERSION: '1.18.2' } },
    env: {
      POD_NAME: 'ratings-v1-7d8f.abc',
      POD_NAMESPACE: 'bookinfo',
      INSTANCE_IP: '10.244.1.7',
      SERVICE_ACCOUNT: 'bookinfo-ratings',
      ISTIO_META_LABELS: '{"app":"ratings","service.istio.io/canonical-name":"ratings","version":"v1"}',
      ISTIO_META_WORKLOAD_NAME: 'ratings-v1',
      ISTIO_META_POD_PORTS: '[{"containerPort":9080,"protocol":"TCP"}]',
      ISTIO_META_ENVOY_PROMETHEUS_PORT: '15090',
      ISTIO_METAJSON_ANNOTATIONS: '{"sidecar.istio.io/status":"{}"}',
      ISTIO_META_MESH_ID: 'mesh1',
      PATH: '/usr/bin',
    },
    version: '0.1.0',
  });
  t.equal(node.id, 'sidecar~10.244.1.7~ratings-v1-7d8f.abc.bookinfo~bookinfo.svc.cluster.local', 'a pod name with a dot splits at the last one');
  t.equal(node.cluster, 'ratings.bookinfo', 'canonical name . namespace');
  t.same(node.metadata, {
    ISTIO_VERSION: '1.18.2',
    LABELS: { app: 'ratings', 'service.istio.io/canonical-name': 'ratings', version: 'v1' },
    WORKLOAD_NAME: 'ratings-v1',
    POD_PORTS: '[{"containerPort":9080,"protocol":"TCP"}]',
    ENVOY_PROMETHEUS_PORT: 15090,
    ANNOTATIONS: { 'sidecar.istio.io/status': '{}' },
    MESH_ID: 'mesh1',
    NAME: 'ratings-v1-7d8f.abc',
    NAMESPACE: 'bookinfo',
    SERVICE_ACCOUNT: 'bookinfo-ratings',
    INSTANCE_IPS: '10.244.1.7',
    CLUSTER_ID: 'Kubernetes',
    INTERCEPTION_MODE: 'REDIRECT',
  });
});

t.test('environment overrides the bootstrap; the id keeps its DNS domain', async (t) => {
  const { node } = buildNodeIdentity({
    rawNode: { id: 'sidecar~1.1.1.1~old.ns0~ns0.svc.corp.example', cluster: 'explicit', metadata: { NAMESPACE: 'ns0', LABELS: { app: 'x' } } },
    env: { POD_NAME: 'new', POD_NAMESPACE: 'ns1', INSTANCE_IP: '2.2.2.2', ISTIO_META_LABELS: 'app=y,version="v2"', ISTIO_META_INTERCEPTION_MODE: 'TPROXY' },
    version: 'v',
  });
  t.equal(node.id, 'sidecar~2.2.2.2~new.ns1~ns1.svc.corp.example');
  t.equal(node.cluster, 'explicit', 'a cluster set in the bootstrap stays');
  t.same((node.metadata as Json).LABELS, { app: 'y', version: 'v2' }, 'labels in k=v form');
  t.equal((node.metadata as Json).INTERCEPTION_MODE, 'TPROXY');
  t.equal((node.metadata as Json).NAMESPACE, 'ns1');
});

t.test('GENERATOR is never sent', async (t) => {
  const a = buildNodeIdentity({ rawNode: { ...real, metadata: { ...(real.metadata as Json), GENERATOR: 'grpc' } }, env: {}, version: 'v' });
  t.notOk('GENERATOR' in a.node.metadata);
  t.match(a.warnings, [/GENERATOR: removed/]);
  const b = buildNodeIdentity({ rawNode: real, env: { ISTIO_META_GENERATOR: 'api' }, version: 'v' });
  t.notOk('GENERATOR' in b.node.metadata);
});

t.test('an identity istiod cannot parse is a start-up error naming what is missing', async (t) => {
  t.throws(() => buildNodeIdentity({ rawNode: { id: 'my-proxy' }, env: { POD_NAME: 'p' }, version: 'v' }), {
    name: 'ConfigError',
    path: 'node.id',
    message: /sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local; got "my-proxy" and no INSTANCE_IP, POD_NAMESPACE in the environment/,
  });
  t.throws(() => buildNodeIdentity({ rawNode: real, env: { ISTIO_METAJSON_LABELS: '{app:' }, version: 'v' }), new ConfigError('ISTIO_METAJSON_LABELS', 'not valid JSON: ' + jsonError('{app:')));
  t.throws(() => buildNodeIdentity({ rawNode: real, env: { ISTIO_META_LABELS: 'novalue' }, version: 'v' }), { path: 'ISTIO_META_LABELS', message: /expected JSON or key=value pairs, got "novalue"/ });
  t.throws(() => buildNodeIdentity({ rawNode: { ...real, metadata: 'x' }, env: {}, version: 'v' }), { path: 'node.metadata', message: /expected an object/ });
});

t.test('the identity encodes as an envoy.config.core.v3.Node and decodes back unchanged', async (t) => {
  const protos = loadXdsProtos();
  const { node } = buildNodeIdentity({ rawNode: real, env: {}, version: '0.1.0' });
  const msg = fromProto3Json(protos.Node, node);
  const back = toProto3Json(protos.Node, protos.Node.decode(protos.Node.encode(msg).finish()));
  t.same(back.metadata, node.metadata, 'metadata Struct round trip (maps, lists, numbers)');
  t.equal(back.id, node.id);
  t.same(back.client_features, ['envoy.lb.does_not_support_overprovisioning']);
});

function jsonError(text: string): string {
  try {
    JSON.parse(text);
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}
