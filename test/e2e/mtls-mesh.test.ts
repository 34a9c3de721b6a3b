/**
 * Mesh mTLS between sidecars, as Istio sets it up, in network namespaces with real capture and real Bolt
 * and Dubbo peers: the consumer's sidecar originates ISTIO_MUTUAL to endpoints labelled `tlsMode: istio`, each
 * provider's sidecar terminates it on virtualInbound's TLS chains (s1 PERMISSIVE, s2 STRICT). Every
 * sidecar gets its certificate from a test CA over gRPC; certificates live 20 s, so they rotate every ~10 s
 * while the tests run, and a load test checks that no call fails across rotations.
 */
import t from 'tap';
import { passthroughCluster, tcpProxy, virtualOutbound } from '../helpers/bootstrap.js';
import { identityEnv, makeMeshPki, TestCa } from '../helpers/mesh-ca.js';
import { inboundChains, istioMutualMatches, meshCluster } from '../helpers/mesh-config.js';
import { cliPath } from '../helpers/paths.js';
import { createTopology, inNs, iptablesCli, netnsGate, peer, type Proc, runPeer, spawnNode, writeTemp } from '../helpers/netns.js';
import { issueLeaf, makeRoot, spiffe, writeFiles } from '../helpers/pki.js';
import { DubboClient, startDubboProvider } from '../helpers/dubbo.js';
import { BoltClient, readMetric, startBoltServer } from '../helpers/sidecar.js';

const gate = netnsGate();
t.setTimeout(600_000);
const CA_PORT = 15012;
const CERT_TTL_S = 20;
const DUBBO_PORT = 20880;

const originalDst = { name: 'envoy.filters.listener.original_dst', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst' } };
const tlsInspector = { name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' } };

/** A provider pod's sidecar: Istio's virtualInbound with the mTLS chains of `mode`. */
function providerBootstrap(mode: 'PERMISSIVE' | 'STRICT') {
  return {
    static_resources: {
      listeners: [
        {
          name: 'virtualInbound',
          address: { socket_address: { address: '0.0.0.0', port_value: 15006 } },
          listener_filters: [originalDst, tlsInspector],
          filter_chains: [{ name: 'virtualInbound-blackhole', filter_chain_match: { destination_port: 15006 }, filters: [tcpProxy('BlackHoleCluster')] }, ...inboundChains('InboundPassthroughClusterIpv4', mode)],
        },
      ],
      clusters: [
        { name: 'InboundPassthroughClusterIpv4', type: 'ORIGINAL_DST', connect_timeout: '10s', lb_policy: 'CLUSTER_PROVIDED', upstream_bind_config: { source_address: { address: '127.0.0.6', port_value: 0 } } },
        { name: 'BlackHoleCluster', type: 'STATIC', connect_timeout: '10s' },
      ],
    },
  };
}

const xprotocol = (protocol: string, port: number, virtualHosts: unknown[]) => ({
  name: `0.0.0.0_${port}`,
  address: { socket_address: { address: '0.0.0.0', port_value: port } },
  bind_to_port: false,
  filter_chains: [
    {
      filters: [
        {
          name: 'xsidecar.filters.network.xprotocol',
          typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: protocol, protocol, route_config: { name: String(port), virtual_hosts: virtualHosts } },
        },
      ],
    },
  ],
});

/** The consumer's sidecar: per-ClusterIP virtual hosts, each to an Istio-shaped cluster. */
function consumerBootstrap(p1: string, p2: string) {
  const host = (n: string) => `${n}.default.svc.cluster.local`;
  const mutual = (name: string, sa: string) => istioMutualMatches(host(name), 12200, spiffe('default', sa));
  const ep = (address: string, istio: boolean, port = 12200) => ({ address, port, istio });
  const vhost = (ip: string, cluster: string) => ({ name: ip, domains: [ip], routes: [{ match: { prefix: '/' }, route: { cluster } }] });
  return {
    static_resources: {
      listeners: [
        virtualOutbound(),
        xprotocol('bolt', 12200, [
          vhost('198.18.0.10', 'outbound|12200||p1'),
          vhost('198.18.0.11', 'outbound|12200||p2'),
          vhost('198.18.0.12', 'outbound|12200||p2-no-label'),
          vhost('198.18.0.13', 'outbound|12200||p1-no-label'),
          vhost('198.18.0.14', 'outbound|12200||p1-wrong-san'),
          vhost('198.18.0.15', 'outbound|12200||both'),
        ]),
        xprotocol('dubbo', DUBBO_PORT, [vhost('198.18.0.16', `outbound|${DUBBO_PORT}||users-dubbo`)]),
        // L4 to an echo server behind s1: every client connection is a new mTLS connection upstream.
        { name: '0.0.0.0_7000', address: { socket_address: { address: '0.0.0.0', port_value: 7000 } }, bind_to_port: false, filter_chains: [{ filters: [tcpProxy('outbound|7000||echo')] }] },
      ],
      clusters: [
        passthroughCluster(),
        meshCluster('outbound|12200||p1', [ep(p1, true)], mutual('p1', 'p1')),
        meshCluster('outbound|12200||p2', [ep(p2, true)], mutual('p2', 'p2')),
        meshCluster('outbound|12200||p2-no-label', [ep(p2, false)], mutual('p2', 'p2')),
        meshCluster('outbound|12200||p1-no-label', [ep(p1, false)], mutual('p1', 'p1')),
        meshCluster('outbound|12200||p1-wrong-san', [ep(p1, true)], mutual('p1', 'somebody-else')),
        meshCluster('outbound|12200||both', [ep(p1, true), ep(p2, true)], istioMutualMatches(host('users'), 12200, [spiffe('default', 'p1'), spiffe('default', 'p2')])),
        meshCluster(`outbound|${DUBBO_PORT}||users-dubbo`, [ep(p1, true, DUBBO_PORT), ep(p2, true, DUBBO_PORT)], istioMutualMatches(host('users-dubbo'), DUBBO_PORT, [spiffe('default', 'p1'), spiffe('default', 'p2')])),
        meshCluster('outbound|7000||echo', [ep(p1, true, 7000)], istioMutualMatches(host('echo'), 7000, spiffe('default', 'p1'))),
      ],
    },
  };
}

/** Runs `fn` with extra environment variables set (spawned children copy process.env). */
async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** The sidecar as UID 1337, waited for generously: the shared machine may be very busy. */
async function startSidecar(ns: string, args: string[]): Promise<Proc> {
  const p = spawnNode(ns, cliPath, ['run', ...args], { uid: 1337 });
  await p.waitJson<{ msg?: string }>((o) => o.msg === 'xsidecar started', 120_000);
  return p;
}

const metricsOf = async (ns: string) => (await runPeer<{ body: string }>(ns, 'http-get', 'http://127.0.0.1:15090/stats/prometheus')).body;

async function ready(ns: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await runPeer<{ status?: number }>(ns, 'http-get', 'http://127.0.0.1:15021/healthz/ready');
    if (r.status === 200) return;
    if (Date.now() > deadline) throw new Error(`${ns} not ready: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

t.test('mesh mTLS between sidecars in network namespaces, with real Bolt peers', { skip: gate.skip }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  const topo = createTopology(`mt${process.pid % 100000}`, 2);
  const procs: Proc[] = [];
  t.teardown(() => {
    procs.forEach((p) => p.kill('SIGKILL'));
    topo.destroy();
  });
  const pki = await makeMeshPki();
  const flags = ['--ca-root-cert', pki.file('root-cert.pem'), '--token-file', pki.file('istio-token')];
  // The CA lives in the app namespace; its port is left out of inbound capture there.
  const ca = await TestCa.start(pki, { host: '0.0.0.0', port: CA_PORT, maxTtl: CERT_TTL_S, spawnFn: (s, a) => spawnNode(topo.app, s, a) });
  procs.push(ca.proc);

  const [s1, s2] = topo.servers as [(typeof topo.servers)[0], (typeof topo.servers)[0]];
  for (const [i, s] of [s1, s2].entries()) {
    iptablesCli(s.ns);
    const mode = i === 0 ? 'PERMISSIVE' : 'STRICT';
    const env = identityEnv(`198.19.${i + 1}.1:${CA_PORT}`, 'default', `p${i + 1}`);
    procs.push(await withEnv(env, () => startSidecar(s.ns, ['-c', writeTemp(`mtls-p${i + 1}.json`, providerBootstrap(mode)), ...flags])));
    procs.push((await startBoltServer(`P${i + 1}`, '0.0.0.0', 12200, (script, args) => spawnNode(s.ns, script, args))).proc);
    procs.push((await startDubboProvider(`P${i + 1}`, { host: '0.0.0.0', port: DUBBO_PORT, spawnFn: (script, args) => spawnNode(s.ns, script, args) })).proc);
  }
  const echo = spawnNode(s1.ns, peer('echo-server'), ['echo-p1', '0.0.0.0', '7000']);
  procs.push(echo);
  await echo.waitJson((o) => o.ready === true, 120_000);
  iptablesCli(topo.app, '-d', `15090,15021,15020,${CA_PORT}`);
  procs.push(await withEnv(identityEnv(`127.0.0.1:${CA_PORT}`, 'default', 'consumer'), () => startSidecar(topo.app, ['-c', writeTemp('mtls-consumer.json', consumerBootstrap(s1.ip, s2.ip)), ...flags])));
  for (const ns of [topo.app, s1.ns, s2.ns]) await ready(ns);

  const client = (clusterIp: string) => {
    const c = new BoltClient(spawnNode(topo.app, peer('bolt-client'), ['--server', `${clusterIp}:12200`]));
    procs.push(c.proc);
    return c;
  };

  t.test('mTLS to a PERMISSIVE and a STRICT provider; RPC routing works inside TLS', async (t) => {
    const before = readMetric(await metricsOf(s2.ns), 'xsidecar_downstream_mtls_accepted_total');
    const p1 = await client('198.18.0.10').batch('whoami', 50, 5);
    t.same([p1.succeeded, p1.results], [50, { '"P1"': 50 }], JSON.stringify(p1.errors));
    const p2 = await client('198.18.0.11').batch('whoami', 50, 5);
    t.same([p2.succeeded, p2.results], [50, { '"P2"': 50 }], JSON.stringify(p2.errors));
    t.ok(readMetric(await metricsOf(s2.ns), 'xsidecar_downstream_mtls_accepted_total') > before, 'the STRICT provider terminated mTLS');
    const both = await client('198.18.0.15').batch('whoami', 100, 10);
    t.same([both.succeeded, both.results], [100, { '"P1"': 50, '"P2"': 50 }], 'per-request balancing over mTLS connections');
  });

  t.test('Dubbo inside mTLS: an apache-dubbo-consumer balanced over a PERMISSIVE and a STRICT provider', async (t) => {
    const c = DubboClient.local('apache', '198.18.0.16', DUBBO_PORT, (script, args) => spawnNode(topo.app, script, args));
    procs.push(c.proc);
    const r = await c.run({ method: 'getUser', args: ['7'], calls: 100, concurrency: 10 });
    t.equal(r.ok, 100, JSON.stringify(r.errors));
    t.same(r.results, { 'user:7@P1': 50, 'user:7@P2': 50 });
    const v2 = await c.run({ version: '2.0.0', method: 'getUser', args: ['8'], calls: 10, concurrency: 2 });
    t.equal(v2.ok, 10, JSON.stringify(v2.errors));
    t.same(Object.keys(v2.results).filter((k) => !k.startsWith('user-v2:8@')), [], "the frame's version reached the providers through TLS");
  });

  t.test('PERMISSIVE accepts plaintext from an endpoint without the tlsMode label; STRICT refuses it', async (t) => {
    const plain = await client('198.18.0.13').batch('whoami', 10, 2);
    t.same([plain.succeeded, plain.results], [10, { '"P1"': 10 }]);
    const refused = await client('198.18.0.12').call('whoami', [], { timeout: 5000 });
    t.equal(refused.ok, false, 'no answer from the STRICT provider over plaintext');
    t.ok(readMetric(await metricsOf(s2.ns), 'xsidecar_downstream_cx_no_filter_chain_total', 'listener="virtualInbound"') >= 1, 'STRICT: plaintext matched no chain');
  });

  t.test("the principals and the security policy are in Istio's metrics, from the certificates", async (t) => {
    const consumer = spiffe('default', 'consumer');
    const outbound = await metricsOf(topo.app);
    t.ok(readMetric(outbound, 'istio_requests_total', `source_principal="${consumer}",destination_principal="${spiffe('default', 'p2')}",connection_security_policy="unknown"`) >= 50, 'outbound: our SPIFFE id and the STRICT provider\'s');
    t.ok(readMetric(outbound, 'istio_requests_total', `destination_service_name="users-dubbo",source_principal="${consumer}",destination_principal="${spiffe('default', 'p1')}",rpc_protocol="dubbo"`) >= 50, 'Dubbo over mTLS, same labels');
    t.equal(readMetric(outbound, 'istio_requests_total', `destination_service="p1-no-label",source_principal="${consumer}"`), 0, 'plaintext upstream: no principals');
    t.ok(readMetric(outbound, 'istio_requests_total', 'destination_service="p1-no-label",source_principal="unknown",destination_principal="unknown"') >= 10, 'plaintext upstream: unknown on both ends');
    // The providers' inbound chains are L4 (tcp_proxy): the TCP metrics carry the caller's identity.
    const inbound = await metricsOf(s2.ns);
    t.ok(readMetric(inbound, 'istio_tcp_connections_opened_total', `reporter="destination",source_workload="unknown",source_workload_namespace="unknown",source_principal="${consumer}"`) >= 1, 'inbound: the caller\'s SPIFFE id');
    t.ok(readMetric(inbound, 'istio_tcp_connections_opened_total', `destination_principal="${spiffe('default', 'p2')}"`) >= 1, 'inbound: our own SPIFFE id');
    t.ok(readMetric(inbound, 'istio_tcp_connections_opened_total', 'connection_security_policy="mutual_tls"') >= 1, 'inbound mTLS: mutual_tls');
    t.equal(readMetric(inbound, 'istio_tcp_connections_opened_total', 'connection_security_policy="none"'), 0, 'STRICT: nothing in plaintext');
    const permissive = await metricsOf(s1.ns);
    t.ok(readMetric(permissive, 'istio_tcp_connections_opened_total', 'connection_security_policy="none",source_principal="unknown",destination_principal="unknown"') >= 1, 'PERMISSIVE plaintext: none, no principals');
    t.ok(readMetric(permissive, 'istio_tcp_connections_opened_total', `connection_security_policy="mutual_tls",source_principal="${consumer}",destination_principal="${spiffe('default', 'p1')}"`) >= 1, 'PERMISSIVE mTLS beside it');
  });

  t.test('a provider whose SAN is not in match_subject_alt_names is refused on the outbound side', async (t) => {
    const r = await client('198.18.0.14').call('whoami', [], { timeout: 5000 });
    t.equal(r.ok, false);
    t.ok(readMetric(await metricsOf(topo.app), 'xsidecar_upstream_cx_connect_fail_total', 'cluster="outbound|12200||p1-wrong-san"') >= 1);
  });

  t.test('a client with a certificate from another root, or another trust domain, is refused inbound', async (t) => {
    const other = await makeRoot('other-mesh');
    const foreignRoot = await issueLeaf(other, { uris: [spiffe('default', 'consumer')] });
    const foreignDomain = await issueLeaf(pki.root, { uris: [spiffe('default', 'consumer', 'elsewhere.local')] });
    const f = writeFiles({ 'a.pem': foreignRoot.certPem, 'a.key': foreignRoot.keyPem, 'b.pem': foreignDomain.certPem, 'b.key': foreignDomain.keyPem });
    const before = readMetric(await metricsOf(s1.ns), 'xsidecar_downstream_mtls_refused_total');
    for (const c of ['a', 'b']) {
      // As UID 1337 the client bypasses the app's own capture and dials the provider pod directly.
      const out = (() => {
        try {
          return inNs(topo.app, 'sh', '-c', `echo hi | timeout 10 setpriv --reuid=1337 --regid=1337 --clear-groups --inh-caps=+dac_read_search --ambient-caps=+dac_read_search openssl s_client -connect ${s1.ip}:12200 -cert ${f(`${c}.pem`)} -key ${f(`${c}.key`)} -alpn istio-peer-exchange,istio 2>&1; true`);
        } catch (e) {
          return (e as Error).message;
        }
      })();
      t.notMatch(out, /Verify return code: 0/, `${c}: no accepted session`);
    }
    t.ok(readMetric(await metricsOf(s1.ns), 'xsidecar_downstream_mtls_refused_total') >= before + 2, 'both refused by the provider\'s sidecar');
  });

  t.test('certificates rotate under load with no failed call', async (t) => {
    const issued = async (ns: string) => readMetric(await metricsOf(ns), 'xsidecar_identity_cert_issued_total');
    const start = { app: await issued(topo.app), s1: await issued(s1.ns) };
    // New mTLS connections all along (L4: one upstream connection each) plus RPC over pooled ones.
    const loop = spawnNode(topo.app, peer('tcp-loop'), ['198.18.0.20', '7000', '--gap-ms', '10']);
    procs.push(loop);
    await loop.waitJson((o) => o.event === 'started', 120_000);
    const bolt = client('198.18.0.15');
    let calls = 0;
    let failed = 0;
    const errors: Record<string, number>[] = [];
    const deadline = Date.now() + 150_000;
    while (Date.now() < deadline) {
      const b = await bolt.batch('whoami', 200, 8, { timeout: 5000 });
      calls += b.total;
      failed += b.failed;
      if (b.failed) errors.push(b.errors);
      if ((await issued(topo.app)) >= start.app + 2 && (await issued(s1.ns)) >= start.s1 + 2) break;
    }
    loop.child.stdin!.write('stop\n');
    const l = await loop.waitJson<{ ok: number; failed: number; errors: Record<string, number> }>((o) => o.ok !== undefined);
    t.ok((await issued(topo.app)) >= start.app + 2 && (await issued(s1.ns)) >= start.s1 + 2, 'both sides rotated at least twice during the load');
    t.equal(failed, 0, `RPC calls failed: ${JSON.stringify(errors)}`);
    t.ok(calls >= 200);
    t.equal(l.failed, 0, `new mTLS connections failed: ${JSON.stringify(l.errors)}`);
    t.ok(l.ok > 50, `${l.ok} connections, each a new TLS connection upstream`);
  });
});
