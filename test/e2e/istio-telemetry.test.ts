/**
 * Istio's standard metrics as Kiali reads them, end to end: a real Prometheus scrapes an outbound sidecar
 * (app pod, reporter=source) and an inbound sidecar (provider pod, reporter=destination) every second
 * while a real sofa-rpc-node client calls through them with capture in network namespaces, some calls
 * failing (no route, a dead upstream) and a plain TCP client going through at L4. The test runs Kiali's
 * graph queries over Prometheus's HTTP API and checks edges, rates, error codes, exact counts and the
 * label set; the app sidecar's access log (`--access-log -`) gets one line per request and connection.
 */
import t from 'tap';
import { passthroughCluster, tcpProxy } from '../helpers/bootstrap.js';
import { REQUEST_LABELS, TCP_LABELS } from '../../src/observe/istio/labels.js';
import { createTopology, iptablesCli, netnsGate, peer, type Proc, runPeer, spawnNode, startSidecar, writeTemp } from '../helpers/netns.js';
import { Prometheus, prometheusProblem, rowValue } from '../helpers/prometheus.js';
import { BoltClient, startBoltServer } from '../helpers/sidecar.js';

// Five rounds of traffic across scrapes, then Prometheus queries: longer than the default file timeout.
t.setTimeout(300_000);
const gate = netnsGate();
const promProblem = prometheusProblem();

const labels = (app: string, version: string) => ({
  app,
  version,
  'service.istio.io/canonical-name': app,
  'service.istio.io/canonical-revision': version,
});

const xproto = (typed: object) => ({
  name: 'xsidecar.filters.network.xprotocol',
  typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'bolt', protocol: 'bolt', ...typed },
});
/** A static cluster whose endpoints carry Istio's EDS metadata. */
const cluster = (name: string, eps: { ip: string; port: number; workload?: string }[], extra: object = {}) => ({
  name,
  type: 'STATIC',
  connect_timeout: '1s',
  lb_policy: 'ROUND_ROBIN',
  ...extra,
  load_assignment: {
    cluster_name: name,
    endpoints: [
      {
        lb_endpoints: eps.map((e) => ({
          endpoint: { address: { socket_address: { address: e.ip, port_value: e.port } } },
          ...(e.workload ? { metadata: { filter_metadata: { istio: { workload: e.workload } } } } : {}),
        })),
      },
    ],
  },
});

const USER = 'outbound|12200||user-service.default.svc.cluster.local';
const DEAD = 'outbound|12200||dead.default.svc.cluster.local';
const ECHO = 'outbound|7000||echo.default.svc.cluster.local';

function appBootstrap(providerIp: string, deadIp: string) {
  return {
    node: {
      id: 'sidecar~198.19.1.1~frontend-7d9f.default~default.svc.cluster.local',
      metadata: { WORKLOAD_NAME: 'frontend', NAMESPACE: 'default', CLUSTER_ID: 'Kubernetes', LABELS: labels('frontend', 'v1') },
    },
    static_resources: {
      listeners: [
        { name: 'virtualOutbound', address: { socket_address: { address: '0.0.0.0', port_value: 15001 } }, use_original_dst: true, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [tcpProxy('PassthroughCluster')] }] },
        {
          name: '0.0.0.0_12200',
          address: { socket_address: { address: '0.0.0.0', port_value: 12200 } },
          bind_to_port: false,
          traffic_direction: 'OUTBOUND',
          filter_chains: [
            {
              filters: [
                xproto({
                  route_config: {
                    name: '12200',
                    virtual_hosts: [
                      { name: 'user-service', domains: ['198.18.0.10'], routes: [{ match: { prefix: '/' }, route: { cluster: USER } }] },
                      { name: 'dead', domains: ['198.18.0.11'], routes: [{ match: { prefix: '/' }, route: { cluster: DEAD } }] },
                    ],
                  },
                }),
              ],
            },
          ],
        },
        { name: '0.0.0.0_7000', address: { socket_address: { address: '0.0.0.0', port_value: 7000 } }, bind_to_port: false, traffic_direction: 'OUTBOUND', filter_chains: [{ filters: [tcpProxy(ECHO)] }] },
      ],
      clusters: [
        passthroughCluster(),
        cluster(USER, [{ ip: providerIp, port: 12200, workload: 'user-service-v1;default;user-service;v1;Kubernetes' }]),
        cluster(DEAD, [{ ip: deadIp, port: 12200, workload: 'dead-v1;default;dead;v1;Kubernetes' }]),
        cluster(ECHO, [{ ip: providerIp, port: 7000, workload: 'echo-v1;default;echo;v1;Kubernetes' }]),
      ],
    },
  };
}

/** The provider pod's sidecar: Istio's virtualInbound, Bolt on 12200 to the local app, the rest passed through. */
function providerBootstrap() {
  const inboundCluster = 'inbound|12200||';
  return {
    node: { id: 'sidecar~198.19.1.2~user-service-v1-5c4f.default~default.svc.cluster.local' },
    static_resources: {
      listeners: [
        {
          name: 'virtualInbound',
          address: { socket_address: { address: '0.0.0.0', port_value: 15006 } },
          traffic_direction: 'INBOUND',
          listener_filters: [{ name: 'envoy.filters.listener.original_dst', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst' } }],
          filter_chains: [
            { name: '0.0.0.0_12200', filter_chain_match: { destination_port: 12200 }, filters: [xproto({ cluster: inboundCluster })] },
            { name: 'virtualInbound-catchall-tcp', filters: [tcpProxy('InboundPassthroughClusterIpv4')] },
          ],
        },
      ],
      clusters: [
        cluster(inboundCluster, [{ ip: '127.0.0.1', port: 12200 }], {
          metadata: { filter_metadata: { istio: { services: [{ host: 'user-service.default.svc.cluster.local', name: 'user-service', namespace: 'default' }] } } },
          upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } },
        }),
        { name: 'InboundPassthroughClusterIpv4', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } } },
      ],
    },
  };
}

/** Runs `start` with extra environment variables visible to the processes it spawns synchronously. */
async function withEnv<T>(env: Record<string, string>, start: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  const p = start();
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  return p;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KIALI_REQUESTS = (reporter: string) =>
  `sum(rate(istio_requests_total{reporter="${reporter}"}[1m])) by (source_workload, destination_service_name, request_protocol, response_code, grpc_response_status, response_flags)`;
const KIALI_TCP = 'sum(rate(istio_tcp_sent_bytes_total{reporter="source"}[1m])) by (source_workload, destination_service_name, request_protocol, response_flags)';

t.test('Kiali graph queries over a real Prometheus scraping outbound and inbound sidecars', { timeout: 300_000, skip: gate.skip || (promProblem && !process.env.CI ? promProblem : false) }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  if (promProblem) return t.fail(promProblem);
  const topo = createTopology(`it${process.pid % 100000}`, 2);
  const procs: Proc[] = [];
  let prom: Prometheus | undefined;
  t.teardown(async () => {
    await prom?.stop();
    procs.forEach((p) => p.kill('SIGKILL'));
    topo.destroy();
  });
  const provider = topo.servers[0]!;
  const dead = topo.servers[1]!; // nothing listens there: every connect is refused
  iptablesCli(provider.ns);
  procs.push(
    await withEnv(
      // The provider's identity comes from the environment, as pilot-agent passes it.
      { ISTIO_META_WORKLOAD_NAME: 'user-service-v1', ISTIO_META_NAMESPACE: 'default', ISTIO_META_CLUSTER_ID: 'Kubernetes', ISTIO_METAJSON_LABELS: JSON.stringify(labels('user-service', 'v1')) },
      () => startSidecar(provider.ns, ['-c', writeTemp('telemetry-provider.json', providerBootstrap())]),
    ),
  );
  procs.push((await startBoltServer('P1', '0.0.0.0', 12200, (script, args) => spawnNode(provider.ns, script, args))).proc);
  const echo = spawnNode(provider.ns, peer('echo-server'), ['echo', '0.0.0.0', '7000']);
  procs.push(echo);
  await echo.waitJson<{ ready?: boolean }>((o) => o.ready === true);

  iptablesCli(topo.app);
  const app = await startSidecar(topo.app, ['-c', writeTemp('telemetry-app.json', appBootstrap(provider.ip, dead.ip)), '--access-log', '-']);
  procs.push(app);
  prom = await Prometheus.start(topo.app, ['127.0.0.1:15090', `${provider.ip}:15090`]);

  const client = (ip: string) => {
    const c = new BoltClient(spawnNode(topo.app, peer('bolt-client'), ['--server', `${ip}:12200`]));
    procs.push(c.proc);
    return c;
  };
  const good = client('198.18.0.10');
  const deadClient = client('198.18.0.11');
  const lost = client('198.18.0.12'); // captured, but no virtual host: no route

  // Traffic spread over several scrapes: a rate needs the counter to move between samples.
  const ROUNDS = 5;
  const OK_PER_ROUND = 40;
  let ok = 0;
  let failedDead = 0;
  let failedLost = 0;
  let tcpReceived = 0;
  const parts = ['hello', 'telemetry'];
  for (let round = 0; round < ROUNDS; round++) {
    const r = await good.batch('whoami', OK_PER_ROUND, 8);
    ok += r.succeeded;
    for (let i = 0; i < 2; i++) {
      if (!(await deadClient.call('whoami', [], { timeout: 5000 })).ok) failedDead++;
      if (!(await lost.call('whoami', [], { timeout: 5000 })).ok) failedLost++;
    }
    const tcp = await runPeer<{ ok?: boolean }>(topo.app, 'tcp-client', `198.18.0.20`, '7000', ...parts);
    t.ok(tcp.ok, `tcp round ${round}: ${JSON.stringify(tcp)}`);
    tcpReceived += parts.join('').length;
    await sleep(1200);
  }
  t.equal(ok, ROUNDS * OK_PER_ROUND, 'every call to the live provider succeeded');
  t.equal(failedDead, ROUNDS * 2, 'calls to the dead upstream failed');
  t.equal(failedLost, ROUNDS * 2, 'calls with no route failed');

  t.test('counts equal the calls made (sum over the raw counters)', async (t) => {
    const q = 'sum(istio_requests_total{reporter="source"}) by (destination_service_name, response_code, grpc_response_status, response_flags, rpc_protocol)';
    const rows = await prom!.until(q, (r) => rowValue(r, { destination_service_name: 'user-service', response_code: '200' }) === ok && rowValue(r, { response_code: '404' }) === failedLost && rowValue(r, { destination_service_name: 'dead' }) === failedDead);
    t.equal(rowValue(rows, { destination_service_name: 'user-service', response_code: '200', grpc_response_status: '0', response_flags: '-', rpc_protocol: 'bolt' }), ok);
    t.equal(rowValue(rows, { destination_service_name: 'unknown', response_code: '404', grpc_response_status: '12', response_flags: 'NR' }), failedLost, 'no route: 404, UNIMPLEMENTED, NR');
    const deadRow = rows.find((r) => r.metric.destination_service_name === 'dead')!;
    t.equal(deadRow.metric.response_code, '503');
    t.equal(deadRow.metric.grpc_response_status, '14', 'UNAVAILABLE');
    t.match(deadRow.metric.response_flags, /U[FH]/, 'connect failure (UF) or, once ejected, no healthy upstream (UH)');
    t.equal(rows.length, 3, JSON.stringify(rows.map((r) => r.metric)));

    const inbound = await prom!.until('sum(istio_requests_total{reporter="destination"}) by (source_workload, destination_workload, destination_service, destination_canonical_service, response_code, connection_security_policy)', (r) => rowValue(r, { destination_workload: 'user-service-v1' }) === ok);
    t.same(inbound.map((r) => r.metric), [
      { source_workload: 'unknown', destination_workload: 'user-service-v1', destination_service: 'user-service.default.svc.cluster.local', destination_canonical_service: 'user-service', response_code: '200', connection_security_policy: 'none' },
    ], 'the provider reports every call it received, with its identity from ISTIO_META_*');

    const methods = await prom!.query('sum(xsidecar_rpc_requests_total) by (rpc_protocol, rpc_service, rpc_method, cluster, status)');
    t.equal(rowValue(methods, { rpc_protocol: 'bolt', rpc_service: 'com.nodejs.test.TestService:1.0', rpc_method: 'whoami', cluster: USER, status: '0' }), ok, 'method-level counter');
  });

  t.test("Kiali's request graph query finds the edges with rates and error codes", async (t) => {
    const rows = await prom!.until(KIALI_REQUESTS('source'), (r) => r.length >= 3 && r.every((x) => Number(x.value[1]) > 0));
    const edge = (svc: string) => rows.find((r) => r.metric.destination_service_name === svc)!;
    t.same(edge('user-service').metric, { source_workload: 'frontend', destination_service_name: 'user-service', request_protocol: 'grpc', response_code: '200', grpc_response_status: '0', response_flags: '-' });
    t.ok(Number(edge('user-service').value[1]) > 0, 'a rate on the healthy edge');
    t.same(edge('unknown').metric, { source_workload: 'frontend', destination_service_name: 'unknown', request_protocol: 'grpc', response_code: '404', grpc_response_status: '12', response_flags: 'NR' });
    t.equal(edge('dead').metric.response_code, '503');
    t.ok(Number(edge('dead').value[1]) > 0, 'a rate on the failing edge');
    const p99 = await prom!.query('histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="source",response_code="200"}[1m])) by (le))');
    t.ok(Number(p99[0]?.value[1]) > 0, `Kiali's response-time query has a value: ${JSON.stringify(p99)}`);
    const dest = await prom!.until(KIALI_REQUESTS('destination'), (r) => r.length === 1 && Number(r[0]!.value[1]) > 0);
    t.same(dest[0]!.metric, { source_workload: 'unknown', destination_service_name: 'user-service', request_protocol: 'grpc', response_code: '200', grpc_response_status: '0', response_flags: '-' });
  });

  t.test("Kiali's TCP graph query finds the L4 edge; bytes equal what the client sent", async (t) => {
    const rows = await prom!.until(KIALI_TCP, (r) => (rowValue(r, { destination_service_name: 'echo' }) ?? 0) > 0);
    t.same(rows.find((r) => r.metric.destination_service_name === 'echo')!.metric, { source_workload: 'frontend', destination_service_name: 'echo', request_protocol: 'tcp', response_flags: '-' });
    const received = await prom!.until('sum(istio_tcp_received_bytes_total{reporter="source",destination_service_name="echo"})', (r) => Number(r[0]?.value[1]) === tcpReceived);
    t.equal(Number(received[0]!.value[1]), tcpReceived);
    const opened = await prom!.until('sum(istio_tcp_connections_opened_total{reporter="source",destination_service_name="echo"})', (r) => Number(r[0]?.value[1]) === ROUNDS);
    t.equal(Number(opened[0]!.value[1]), ROUNDS, 'one connection per client run');
  });

  t.test("the label sets are exactly Istio's (plus rpc_protocol on requests)", async (t) => {
    const scrapeLabels = new Set(['__name__', 'job', 'instance', 'le']);
    const expected: Record<string, readonly string[]> = {
      istio_requests_total: REQUEST_LABELS,
      istio_request_duration_milliseconds_bucket: REQUEST_LABELS,
      istio_request_bytes_bucket: REQUEST_LABELS,
      istio_response_bytes_bucket: REQUEST_LABELS,
      istio_tcp_sent_bytes_total: TCP_LABELS,
      istio_tcp_received_bytes_total: TCP_LABELS,
      istio_tcp_connections_opened_total: TCP_LABELS,
      istio_tcp_connections_closed_total: TCP_LABELS,
    };
    const rows = await prom!.query(`{__name__=~"${Object.keys(expected).join('|')}"}`);
    for (const name of Object.keys(expected)) t.ok(rows.some((r) => r.metric.__name__ === name), `${name} has series`);
    const wrong = rows.filter((r) => JSON.stringify(Object.keys(r.metric).filter((k) => !scrapeLabels.has(k)).sort()) !== JSON.stringify([...expected[r.metric.__name__!]!].sort()));
    t.same(wrong.map((r) => r.metric), [], `every one of ${rows.length} series has exactly the expected labels`);
  });

  t.test('the access log has one JSON line per request and per L4 connection', async (t) => {
    const entries = () =>
      app.lines.flatMap((l) => {
        try {
          const o = JSON.parse(l) as Record<string, unknown>;
          return 'response_flags' in o && 'upstream_cluster' in o ? [o] : [];
        } catch {
          return [];
        }
      });
    const deadline = Date.now() + 10_000;
    while (entries().filter((e) => e.protocol === 'bolt').length < ok + failedDead + failedLost && Date.now() < deadline) await sleep(100);
    const rpc = entries().filter((e) => e.protocol === 'bolt');
    t.equal(rpc.length, ok + failedDead + failedLost);
    const first = rpc.find((e) => e.upstream_cluster === USER)!;
    t.match(first, { rpc_service: 'com.nodejs.test.TestService:1.0', rpc_method: 'whoami', response_code: 200, response_flags: '-', upstream_host: `${provider.ip}:12200`, downstream_local_address: '198.18.0.10:12200', reporter: 'source' });
    t.match(first.downstream_remote_address, /^198\.19\.1\.1:\d+$/);
    t.ok(typeof first.duration === 'number' && (first.bytes_received as number) > 0 && (first.bytes_sent as number) > 0);
    t.ok(!Number.isNaN(Date.parse(first.start_time as string)));
    t.equal(rpc.filter((e) => e.response_flags === 'NR' && e.response_code === 404 && e.upstream_cluster === null).length, failedLost);
    const tcp = entries().filter((e) => e.protocol === 'tcp' && e.upstream_cluster === ECHO);
    t.equal(tcp.length, ROUNDS);
    t.equal(tcp[0]!.bytes_received, parts.join('').length);
  });
});
