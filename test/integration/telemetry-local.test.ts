/**
 * Telemetry without namespaces: a sidecar on loopback between a real sofa-rpc-node client and server.
 * Envoy's `access_log` on the filters (x-protocol and tcp_proxy) writes one JSON line per request and per
 * L4 connection to a file; the istio_* series carry this pod's node metadata and the endpoint's workload;
 * `--no-istio-metrics` turns them off; a bad access-log path is a clear start-up error.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cliPath } from '../helpers/paths.js';
import { peer, writeTemp } from '../helpers/netns.js';
import { BoltClient, spawnLocal, startBoltServer, startLocalSidecar } from '../helpers/sidecar.js';

const FILE_LOG = (path: string) => [{ name: 'envoy.access_loggers.file', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog', path } }];

function bootstrap(boltPort: number, echoPort: number, logPath: string) {
  return {
    node: { id: 'sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local', metadata: { WORKLOAD_NAME: 'web', NAMESPACE: 'shop', CLUSTER_ID: 'c1', LABELS: { app: 'web', version: 'v3' } } },
    static_resources: {
      listeners: [
        {
          name: 'bolt',
          address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'xsidecar.filters.network.xprotocol',
                  typed_config: {
                    '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy',
                    stat_prefix: 'bolt',
                    protocol: 'bolt',
                    cluster: 'outbound|12200||user.shop.svc.cluster.local',
                    access_log: FILE_LOG(logPath),
                  },
                },
              ],
            },
          ],
        },
        {
          name: 'echo',
          address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.tcp_proxy',
                  typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'echo', cluster: 'echo', access_log: FILE_LOG(logPath) },
                },
              ],
            },
          ],
        },
      ],
      clusters: [
        {
          name: 'outbound|12200||user.shop.svc.cluster.local',
          type: 'STATIC',
          load_assignment: { endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: boltPort } } }, metadata: { filter_metadata: { istio: { workload: 'user-v2;shop;user;v2;c1' } } } }] }] },
        },
        { name: 'echo', type: 'STATIC', load_assignment: { endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: echoPort } } } }] }] } },
      ],
    },
  };
}

t.test('access_log on the filters, Istio labels from node and endpoint metadata, metrics off', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-alog-'));
  const logPath = join(dir, 'access.log');
  const server = await startBoltServer('S');
  const echo = spawnLocal(peer('echo-server'), ['echo', '127.0.0.1', '0']);
  const echoPort = (await echo.waitJson<{ ready?: boolean; port: number }>((o) => o.ready === true)).port;
  const sidecar = await startLocalSidecar('telemetry-local', bootstrap(server.port, echoPort, logPath));
  const quiet = await startLocalSidecar('telemetry-off', bootstrap(server.port, echoPort, join(dir, 'off.log')), ['--no-istio-metrics']);
  t.teardown(() => [server.proc, echo, sidecar.proc, quiet.proc].forEach((p) => p.kill('SIGKILL')));
  const listeners = await (await fetch(`http://${sidecar.admin}/listeners?format=json`)).json() as { listener_statuses: { name: string; local_address: { socket_address: { address: string } } }[] };
  const addr = (name: string) => listeners.listener_statuses.find((l) => l.name === name)!.local_address.socket_address.address;

  const client = BoltClient.local(addr('bolt'));
  t.teardown(() => client.close());
  const r = await client.batch('whoami', 12, 3);
  t.equal(r.succeeded, 12);
  const tcp = spawnLocal(peer('tcp-client'), [...addr('echo').split(':'), 'abc', 'defg']);
  t.equal(await tcp.exited, 0);
  t.match(JSON.parse(tcp.lines.find((l) => l.includes('"ok"'))!), { ok: true });

  const lines = async (want: number) => {
    for (let i = 0; i < 100; i++) {
      const got = readFileSync(logPath, 'utf8').split('\n').filter(Boolean);
      if (got.length >= want) return got.map((l) => JSON.parse(l) as Record<string, unknown>);
      await new Promise((res) => setTimeout(res, 100));
    }
    return readFileSync(logPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  const entries = await lines(13);
  const rpc = entries.filter((e) => e.protocol === 'bolt');
  t.equal(rpc.length, 12, 'one line per request');
  t.match(rpc[0], { rpc_service: 'com.nodejs.test.TestService:1.0', rpc_method: 'whoami', response_code: 200, grpc_status: 0, response_flags: '-', upstream_cluster: 'outbound|12200||user.shop.svc.cluster.local', upstream_host: `127.0.0.1:${server.port}`, listener: 'bolt' });
  const l4 = entries.filter((e) => e.protocol === 'tcp');
  t.equal(l4.length, 1, 'one line per L4 connection');
  t.match(l4[0], { upstream_cluster: 'echo', bytes_received: 7, response_flags: '-' });

  const text = await (await fetch(`http://${sidecar.prometheus}/stats/prometheus`)).text();
  const line = text.split('\n').find((l) => l.startsWith('istio_requests_total{'))!;
  for (const kv of ['reporter="source"', 'source_workload="web"', 'source_workload_namespace="shop"', 'source_app="web"', 'source_version="v3"', 'source_canonical_service="web"', 'source_canonical_revision="v3"', 'source_cluster="c1"', 'destination_workload="user-v2"', 'destination_canonical_revision="v2"', 'destination_service_name="user"', 'rpc_protocol="bolt"']) {
    t.ok(line.includes(kv), kv);
  }
  t.ok(line.endsWith(' 12'), line);
  t.match(text, /^xsidecar_rpc_requests_total\{rpc_protocol="bolt",rpc_service="com.nodejs.test.TestService:1.0",rpc_method="whoami",cluster="outbound\|12200\|\|user.shop.svc.cluster.local",status="0"\} 12$/m);
  t.match(text, /^xsidecar_cluster_upstream_rq_total\{protocol="bolt",cluster="outbound\|12200\|\|user.shop.svc.cluster.local"\} 12$/m, 'the renamed per-cluster counter');

  const quietListeners = await (await fetch(`http://${quiet.admin}/listeners?format=json`)).json() as typeof listeners;
  const quietClient = BoltClient.local(quietListeners.listener_statuses.find((l) => l.name === 'bolt')!.local_address.socket_address.address);
  t.teardown(() => quietClient.close());
  t.equal((await quietClient.batch('whoami', 5, 1)).succeeded, 5);
  const off = await (await fetch(`http://${quiet.prometheus}/stats/prometheus`)).text();
  t.notMatch(off, /^istio_requests_total\{/m, '--no-istio-metrics: no istio series');
  t.notMatch(off, /^xsidecar_rpc_requests_total\{/m);
  t.match(off, /^xsidecar_cluster_upstream_rq_total\{[^}]*\} 5$/m, 'the cluster counters stay');
});

t.test('--access-log to a path that cannot be opened is a start-up error, not a crash later', async (t) => {
  const cfg = writeTemp('alog-bad.json', { admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } }, static_resources: {} });
  const p = spawnLocal(cliPath, ['run', '-c', cfg, '--access-log', '/nonexistent-dir/x/access.log', '--health-port', '0', '--prometheus-port', '0']);
  const code = await p.exited;
  t.not(code, 0);
  t.match(p.lines.join('\n'), /access log \/nonexistent-dir\/x\/access.log: ENOENT/);
});
