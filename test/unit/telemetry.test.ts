/** Istio label derivation, response flags, histogram buckets and method folding, against prom-client's real output. */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { decodeLoadAssignment } from '../../src/config/cluster.js';
import { newContext } from '../../src/config/reader.js';
import { flagsString, LOCAL_REPLIES, localCode, ResponseFlag } from '../../src/observe/istio/flags.js';
import { Buckets, ENVOY_BUCKETS } from '../../src/observe/istio/histogram.js';
import { destinationService, endpointWorkload, listenerDirection, localWorkload, REQUEST_LABELS, UNKNOWN_WORKLOAD } from '../../src/observe/istio/labels.js';
import { MethodTable, resetRpcMethods } from '../../src/observe/istio/rpc-methods.js';
import { configureTelemetry, edgeOf, recordRequest, reporterFor, telemetry, TcpConn } from '../../src/observe/istio/telemetry.js';
import { registry } from '../../src/observe/metrics.js';
import { Host } from '../../src/upstream/host.js';
import type { Frame } from '../../protocols/codec.js';
import { findCodec } from '../../protocols/registry.js';
import type { DownstreamContext } from '../../src/proxy/context.js';
import { ConnReport } from '../../src/proxy/xprotocol/report.js';
import { fixture } from '../helpers/paths.js';

const deathstar = (f: string) => JSON.parse(readFileSync(fixture('istio', 'istio-1.18-sidecar-deathstarbench', f), 'utf8')) as Record<string, unknown>;

t.test('the local workload from real Istio node metadata', async (t) => {
  const node = deathstar('node_bootstrap.json') as { metadata: Record<string, unknown> };
  t.same(localWorkload(node.metadata), {
    workload: 'geo',
    namespace: 'hr2',
    principal: 'unknown',
    app: 'unknown',
    version: 'unknown',
    canonicalService: 'geo',
    canonicalRevision: 'latest',
    cluster: 'Kubernetes',
  });
  const w = localWorkload({ WORKLOAD_NAME: 'reviews-v2', NAMESPACE: 'default', LABELS: { app: 'reviews', version: 'v2' } });
  t.equal(w.canonicalService, 'reviews', 'canonical service falls back to the app label');
  t.equal(w.canonicalRevision, 'v2', 'canonical revision falls back to the version label');
  t.same(localWorkload(undefined), UNKNOWN_WORKLOAD, 'no metadata: unknown everywhere, as Istio');
});

t.test('the peer workload from real EDS endpoint metadata, carried onto the Host', async (t) => {
  const cla = decodeLoadAssignment(deathstar('cla_outbound_9080_reviews.json'), 'cla', newContext());
  t.equal(cla.endpoints[0]!.workload, 'reviews-v1;default;reviews;v1;Kubernetes');
  const host = new Host(cla.endpoints[0]!.address, cla.endpoints[0]!.port, cla.endpoints[0]);
  t.equal(host.workload, 'reviews-v1;default;reviews;v1;Kubernetes');
  t.same(endpointWorkload(host.workload), { ...UNKNOWN_WORKLOAD, workload: 'reviews-v1', namespace: 'default', canonicalService: 'reviews', canonicalRevision: 'v1', cluster: 'Kubernetes' });
  t.same(endpointWorkload('garbage'), UNKNOWN_WORKLOAD, 'a malformed value is unknown, not a crash');
  t.same(endpointWorkload(undefined), UNKNOWN_WORKLOAD);
});

t.test('the destination service from the cluster', async (t) => {
  t.same(destinationService('outbound|9080|v1|reviews.default.svc.cluster.local', undefined, undefined), { service: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default' });
  t.same(destinationService('outbound|9080||reviews.default.svc.cluster.local', [{ host: 'ratings.prod.svc.cluster.local', name: 'ratings', namespace: 'prod' }], undefined), { service: 'ratings.prod.svc.cluster.local', name: 'ratings', namespace: 'prod' }, 'istio.services metadata wins');
  const local = localWorkload({ WORKLOAD_NAME: 'user-v1', NAMESPACE: 'shop', LABELS: { app: 'user' } });
  t.same(destinationService('inbound|12200||', undefined, local), { service: 'user', name: 'user', namespace: 'shop' }, 'inbound: the local workload');
  t.same(destinationService('PassthroughCluster', undefined, local), { service: 'PassthroughCluster', name: 'PassthroughCluster', namespace: 'unknown' });
  t.same(destinationService(undefined, undefined, local), { service: 'unknown', name: 'unknown', namespace: 'unknown' }, 'no route: unknown');
});

t.test('the reporter from the listener', async (t) => {
  t.equal(listenerDirection({ name: 'virtualInbound', address: { port: 15006 } }), 'inbound');
  t.equal(listenerDirection({ name: 'x', address: { port: 15006 } }), 'inbound', 'the inbound capture port');
  t.equal(listenerDirection({ name: 'x', trafficDirection: 'INBOUND' }), 'inbound');
  t.equal(listenerDirection({ name: 'virtualOutbound', address: { port: 15001 }, trafficDirection: 'OUTBOUND' }), 'outbound');
  t.equal(listenerDirection({ name: '0.0.0.0_12200', address: { port: 12200 } }), 'outbound');
});

t.test('response flags and local replies', async (t) => {
  t.equal(flagsString(0), '-');
  t.equal(flagsString(ResponseFlag.UF | ResponseFlag.URX), 'UF,URX', "Envoy's comma-joined form");
  t.same(LOCAL_REPLIES['no-route'], { code: 404, flag: ResponseFlag.NR, grpc: 12 });
  t.same(LOCAL_REPLIES.timeout, { code: 504, flag: ResponseFlag.UT, grpc: 4 });
  t.same(LOCAL_REPLIES.overflow, { code: 503, flag: ResponseFlag.UO, grpc: 8 });
  t.equal(localCode('overflow', ResponseFlag.RL), 429, 'rate limited: 429');
  t.equal(localCode('connect-failure', 0), 503);
});

t.test('histogram buckets are Envoy defaults, upper bounds inclusive', async (t) => {
  t.equal(ENVOY_BUCKETS.length, 19);
  const h = new Buckets();
  for (const v of [0.2, 0.5, 0.6, 3_600_000, 4_000_000]) h.observe(v);
  t.equal(h.counts[0], 2, '0.2 and 0.5 are le 0.5');
  t.equal(h.counts[1], 1);
  t.equal(h.counts[18], 1, '3.6e6 is le 3.6e6');
  t.equal(h.counts[19], 1, '+Inf');
  t.equal(h.count, 5);
});

const scrape = async () => registry.metrics();

t.test('requests aggregate per edge and outcome and scrape with exactly Istio\'s labels plus rpc_protocol', async (t) => {
  configureTelemetry({ nodeMetadata: { WORKLOAD_NAME: 'frontend', NAMESPACE: 'shop', CLUSTER_ID: 'c1', LABELS: { app: 'frontend', version: 'v1' } } });
  const r = reporterFor({ name: '0.0.0.0_12200', address: { port: 12200 } }, 'bolt');
  const host = new Host('10.0.0.1', 12200, { address: '10.0.0.1', port: 12200, weight: 1, health: 'HEALTHY', priority: 0, workload: 'user-v1;shop;user;v1;c1' });
  const cluster = { name: 'outbound|12200||user.shop.svc.cluster.local' };
  const e = edgeOf(r, cluster, host);
  t.equal(edgeOf(r, cluster, host), e, 'cached on the host');
  for (let i = 0; i < 3; i++) recordRequest(e, 200, 0, 0, 2, 100, 50);
  recordRequest(edgeOf(r, cluster, undefined), 503, 14, ResponseFlag.UH, 0.1, 100, 40);
  const text = await scrape();
  const lines = text.split('\n').filter((l) => l.startsWith('istio_requests_total{'));
  t.equal(lines.length, 2);
  const ok = lines.find((l) => l.includes('response_code="200"'))!;
  t.ok(ok.endsWith(' 3'), ok);
  const names = [...ok.matchAll(/(\w+)="/g)].map((m) => m[1]);
  t.same(names, [...REQUEST_LABELS], 'the label set, in Istio\'s order');
  for (const kv of ['reporter="source"', 'source_workload="frontend"', 'source_app="frontend"', 'source_canonical_service="frontend"', 'source_canonical_revision="v1"', 'source_cluster="c1"', 'destination_workload="user-v1"', 'destination_canonical_service="user"', 'destination_service="user.shop.svc.cluster.local"', 'destination_service_name="user"', 'destination_service_namespace="shop"', 'request_protocol="grpc"', 'grpc_response_status="0"', 'response_flags="-"', 'connection_security_policy="unknown"', 'rpc_protocol="bolt"']) {
    t.ok(ok.includes(kv), kv);
  }
  const uh = lines.find((l) => l.includes('response_code="503"'))!;
  t.ok(uh.includes('response_flags="UH"') && uh.includes('grpc_response_status="14"') && uh.includes('destination_workload="unknown"'), uh);
  t.match(text, /istio_request_duration_milliseconds_bucket\{[^}]*response_code="200"[^}]*le="5"\} 3/);
  t.match(text, /istio_request_duration_milliseconds_bucket\{[^}]*response_code="200"[^}]*le="1"\} 0/);
  t.match(text, /istio_response_bytes_sum\{[^}]*response_code="200"[^}]*\} 150/);

  const inbound = reporterFor({ name: 'virtualInbound', address: { port: 15006 } }, 'bolt');
  recordRequest(edgeOf(inbound, { name: 'inbound|12200||' }, new Host('127.0.0.1', 12200)), 200, 0, 0, 1, 10, 10);
  const inLine = (await scrape()).split('\n').find((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="destination"'))!;
  t.ok(inLine.includes('source_workload="unknown"') && inLine.includes('destination_workload="frontend"') && inLine.includes('connection_security_policy="none"'), inLine);
});

t.test('L4 connections: opened, closed with flags, bytes', async (t) => {
  configureTelemetry({ nodeMetadata: { WORKLOAD_NAME: 'frontend', NAMESPACE: 'shop' } });
  const r = reporterFor({ name: 'virtualOutbound', address: { port: 15001 } }, 'tcp');
  const c = new TcpConn(edgeOf(r, { name: 'PassthroughCluster' }, undefined));
  c.down = { bytesWritten: 7 } as never;
  c.up = { bytesWritten: 5 } as never;
  c.close(ResponseFlag.UF);
  const text = await scrape();
  t.match(text, /istio_tcp_connections_opened_total\{[^}]*destination_service_name="PassthroughCluster"[^}]*request_protocol="tcp",response_flags="-"[^}]*\} 1/);
  t.match(text, /istio_tcp_connections_closed_total\{[^}]*response_flags="UF"[^}]*\} 1/);
  t.match(text, /istio_tcp_sent_bytes_total\{[^}]*\} 7/);
  t.match(text, /istio_tcp_received_bytes_total\{[^}]*\} 5/);
  t.notMatch(text, /istio_tcp_[a-z_]+\{[^}]*(response_code|rpc_protocol)=/, 'TCP metrics carry no response code');
});

t.test('metrics off: nothing scraped', async (t) => {
  configureTelemetry({ enabled: false });
  const r = reporterFor({ name: 'x' }, 'bolt');
  recordRequest(edgeOf(r, { name: 'c' }, undefined), 200, 0, 0, 1, 1, 1);
  t.notMatch(await scrape(), /^istio_requests_total\{/m);
  configureTelemetry({});
});

t.test('method stats fold into "other" past the bound', async (t) => {
  resetRpcMethods();
  telemetry.maxRpcMethods = 3;
  const table = new MethodTable('dubbo', 'outbound|20880||svc');
  for (let i = 0; i < 10; i++) table.record('com.example.Svc', `m${i}`, 0, 1);
  table.record('com.example.Svc', 'm0', 4, 1);
  const text = await scrape();
  const lines = text.split('\n').filter((l) => l.startsWith('xsidecar_rpc_requests_total{'));
  t.same(lines.map((l) => /rpc_method="([^"]+)"/.exec(l)![1]).sort(), ['m0', 'm0', 'm1', 'm2', 'other']);
  t.ok(lines.some((l) => l.includes('rpc_method="other"') && l.endsWith(' 7')), 'the seven later methods fold into one series');
  t.ok(lines.some((l) => l.includes('rpc_method="m0"') && l.includes('status="4"') && l.endsWith(' 1')), 'status is the gRPC status');
  t.match(text, /xsidecar_rpc_request_duration_milliseconds_count\{rpc_protocol="dubbo",rpc_service="other",rpc_method="other",cluster="outbound\|20880\|\|svc",status="0"\} 7/);
  telemetry.maxRpcMethods = 500;
  resetRpcMethods();
});

t.test('the engine\'s report: flags the resilience code passes, local replies, a caller gone', async (t) => {
  configureTelemetry({ nodeMetadata: { WORKLOAD_NAME: 'flags' } });
  const codec = findCodec('bolt')!;
  const frame = codec.decode(readFileSync(fixture('bolt', 'request-plus.bin')), 1 << 24) as Frame;
  const ctx = { listener: { name: 'flags-test', address: { address: '0.0.0.0', port: 1 } }, socket: undefined, destination: { address: '10.1.1.1', port: 1 }, source: { address: '10.1.1.2', port: 2 } } as unknown as DownstreamContext;
  const report = new ConnReport(ctx, codec);
  report.request(frame, performance.now(), undefined, undefined, undefined, undefined, 'overflow', ResponseFlag.RL, 10, false);
  report.request(frame, performance.now(), undefined, undefined, undefined, undefined, 'no-healthy-upstream', ResponseFlag.FI | ResponseFlag.DI, 10, false);
  report.request(frame, performance.now(), undefined, undefined, undefined, undefined, 'connect-failure', ResponseFlag.URX, 10, false);
  report.request(frame, performance.now(), undefined, undefined, undefined, undefined, 'timeout', 0, 0, true);
  const lines = (await scrape()).split('\n').filter((l) => l.startsWith('istio_requests_total{') && l.includes('source_workload="flags"'));
  const outcome = (l: string) => ['response_code', 'grpc_response_status', 'response_flags'].map((k) => new RegExp(`${k}="([^"]*)"`).exec(l)![1]).join(' ');
  t.same(lines.map(outcome).sort(), ['0 4 UT,DC', '429 8 RL', '503 14 UF,URX', '503 14 FI,DI'].sort());
});
