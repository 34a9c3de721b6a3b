// The istio-proxy container exactly as Istio's stock template renders it (native-sidecar mode, our image),
// started in a pod network namespace: the init container's command installs the capture rules, then the
// proxy's command line and environment — resolved as the kubelet resolves fieldRefs and $(VAR) — run as
// UID 1337 against a test istiod on :15010 in another namespace. It must become ready with the node istiod
// expects, answer the agent's 15020 paths (readiness, metrics, a rewritten app probe), and drain on the
// template's preStop hook (`pilot-agent request --debug-port=15020 POST drain`), then exit 0 on SIGTERM.
import { spawn } from 'node:child_process';
import t from 'tap';
import { containerNamed, defaultProxyConfig, expandArgs, inject, renderProblem, resolveEnv } from '../helpers/inject.js';
import { validateManifest } from '../helpers/k8s-schema.js';
import { createTopology, inNs, netnsGate, peer, Proc, spawnNode } from '../helpers/netns.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { AdsServer, istioFixtureSet } from '../xds/harness.js';

type Json = Record<string, unknown>;
const gate = netnsGate();
const renderWhy = renderProblem();
const skip = gate.skip || (renderWhy && process.env.XSIDECAR_REQUIRE_RENDER !== '1' ? `template rendering skipped: ${renderWhy}` : false);

const httpGet = (ns: string, url: string) => JSON.parse(inNs(ns, process.execPath, peer('http-get'), url).trim()) as { status?: number; body?: string; error?: string };

// A pod's worth of processes on a shared 2-core machine: more than tap's default 180 s when it is busy.
t.setTimeout(400_000);

t.test('the rendered istio-proxy container runs, becomes ready, serves 15020, drains on preStop', { skip, timeout: 390_000 }, async (t) => {
  t.notOk(gate.problem, gate.problem ?? 'network namespaces available');
  t.notOk(renderWhy, renderWhy ?? 'renderer available');
  const topo = createTopology('inj');
  t.teardown(() => topo.destroy());
  // Real istiod output, less its ISTIO_MUTUAL transport sockets: a mesh with mTLS off, so readiness does not
  // wait for a workload certificate from a CA this test does not run (the CA client still tries, in the background).
  const resources = istioFixtureSet().map(({ transport_socket_matches: _tsm, ...r }) => {
    const chains = r.filter_chains as Json[] | undefined;
    return chains ? { ...r, filter_chains: chains.filter((c) => !c.transport_socket) } : r;
  });
  const istiod = await AdsServer.start({ resources, ns: topo.server, host: topo.serverIp, port: 15010, label: 'injected' });
  t.teardown(() => void istiod.kill());

  // The app: an HTTP server whose readiness probe the injector rewrote to the agent.
  const appProc = new Proc(
    spawn('ip', ['netns', 'exec', topo.app, process.execPath, '-e', "require('http').createServer((q,s)=>{s.statusCode=q.url==='/ready'?200:404;s.end('app')}).listen(8080,()=>console.log('listening'))"], { stdio: ['ignore', 'pipe', 'pipe'] }),
    'app',
  );
  t.teardown(() => appProc.kill('SIGKILL'));
  await appProc.waitFor((l) => l === 'listening');

  const pod: Json = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'provider-5d8f9c7b6-x2x7q', namespace: 'shop', labels: { app: 'provider', version: 'v1' }, annotations: { 'sidecar.istio.io/proxyImage': 'registry.example.com/mesh/xsidecar:0.1.0' } },
    spec: { serviceAccountName: 'provider', containers: [{ name: 'app', image: 'registry.example.com/shop/provider:1.0', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }] },
  };
  // The mesh's ProxyConfig with istiod at the test's address (plaintext :15010, as a mesh without mTLS to istiod).
  const injected = inject(pod, { nativeSidecars: true, proxyConfig: defaultProxyConfig({ discoveryAddress: `${topo.serverIp}:15010` }) });
  await validateManifest(injected);

  // istio-init, as the kubelet runs it: root with NET_ADMIN/NET_RAW in the pod's network namespace.
  const init = containerNamed(injected, 'istio-init', 'initContainers')!;
  const initOut = inNs(topo.app, process.execPath, cliPath, ...(init.args as string[]));
  t.match(initOut, /"action":"apply"/, 'init container applied the rules');
  t.match(inNs(topo.app, 'iptables-save', '-t', 'nat'), /-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001/);

  const proxy = containerNamed(injected, 'istio-proxy', 'initContainers')!;
  const env = resolveEnv(injected, proxy, { podIp: topo.podIp, hostIp: topo.serverIp, nodeName: 'node-1' });
  // Added by the injector's probe rewrite (Go code, not the template): the app's own probe, kept for the agent.
  env.ISTIO_KUBE_APP_PROBERS = JSON.stringify({ '/app-health/app/readyz': { httpGet: { path: '/ready', port: 8080 }, timeoutSeconds: 3 } });
  const args = expandArgs(proxy.args as string[], env);
  t.same(args.slice(0, 4), ['proxy', 'sidecar', '--domain', 'shop.svc.cluster.local'], '$(POD_NAMESPACE) expanded');
  const sc = proxy.securityContext as Json;
  const uid = String(sc.runAsUser);
  const caps = '+dac_read_search'; // only to read a checkout under a root-only directory (CI's mktemp -d)
  const child = spawn('ip', ['netns', 'exec', topo.app, 'setpriv', `--reuid=${uid}`, `--regid=${String(sc.runAsGroup)}`, '--clear-groups', `--inh-caps=${caps}`, `--ambient-caps=${caps}`, process.execPath, cliPath, ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const sidecar = new Proc(child, 'istio-proxy');
  t.teardown(() => sidecar.kill('SIGKILL'));
  // --proxyLogLevel=warning (the template's default) keeps info lines quiet: the warning is the first line.
  const warned = await sidecar.waitFor((l) => l.includes('ignoring flags xsidecar does not use'), 60_000);
  t.match(warned, /--log_output_level=default:info/, 'log flags ignored with a warning');

  // Ready: the startup/readiness probe's path, polled as the kubelet would.
  let probe = httpGet(topo.app, 'http://127.0.0.1:15021/healthz/ready');
  const deadline = Date.now() + 90_000;
  while (probe.status !== 200 && child.exitCode === null && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    probe = httpGet(topo.app, 'http://127.0.0.1:15021/healthz/ready');
  }
  t.same(probe, { status: 200, body: 'LIVE\n' }, 'GET :15021/healthz/ready is 200 LIVE', { sidecar: sidecar.lines.filter((l) => !l.includes('identity: certificate')).slice(-15), istiod: istiod.proc.lines.slice(-10) });
  if (probe.status !== 200) return;
  // The same through the template's own tool (holdApplicationUntilProxyStarts' `pilot-agent wait` polls it too).
  const viaAgent = spawnNode(topo.app, cliPath, ['pilot-agent', 'request', '--debug-port=15021', 'GET', 'healthz/ready']);
  t.equal(await viaAgent.exited, 0, 'pilot-agent request --debug-port=15021 GET healthz/ready');
  t.same(viaAgent.lines, ['LIVE']);
  const wait = spawnNode(topo.app, cliPath, ['pilot-agent', 'wait', '--timeoutSeconds', '30']);
  t.equal(await wait.exited, 0, 'pilot-agent wait');

  const first = istiod.requests().find((r) => r.node)!;
  t.equal(first.node!.id, 'sidecar~198.19.1.1~provider-5d8f9c7b6-x2x7q.shop~shop.svc.cluster.local', 'node id from the downward API');
  const md = first.node!.metadata;
  t.equal(md.CLUSTER_ID, 'Kubernetes');
  t.equal(md.WORKLOAD_NAME, 'provider');
  t.equal(md.OWNER, 'kubernetes://apis/apps/v1/namespaces/shop/deployments/provider');
  t.equal(md.APP_CONTAINERS, 'app');
  t.equal(md.NODE_NAME, 'node-1');
  t.equal(md.SERVICE_ACCOUNT, 'provider');
  t.equal(md.MESH_ID, 'cluster.local');
  t.equal(md.INTERCEPTION_MODE, 'REDIRECT');
  t.match(String(md.POD_PORTS), /"containerPort":8080/);
  t.equal((md.PROXY_CONFIG as Json).discoveryAddress, `${topo.serverIp}:15010`, 'PROXY_CONFIG forwarded');

  t.same(httpGet(topo.app, 'http://127.0.0.1:15020/healthz/ready'), { status: 200, body: 'LIVE\n' }, ':15020/healthz/ready');
  t.same(httpGet(topo.app, `http://${topo.podIp}:15020/app-health/app/readyz`), { status: 200, body: '' }, 'the rewritten app probe reaches the app');
  t.equal(httpGet(topo.app, `http://${topo.podIp}:15020/app-health/other/readyz`).status, 400, 'an unknown prober is a 400');
  t.match(httpGet(topo.app, 'http://127.0.0.1:15020/stats/prometheus').body, /# TYPE /);
  t.equal(httpGet(topo.app, `http://${topo.podIp}:15020/drain`).status, 403, '/drain only from localhost');

  // native sidecar preStop: the exact command from the template, under the name the image ships.
  const preStop = ((proxy.lifecycle as Json).preStop as Json).exec as { command: string[] };
  t.equal(preStop.command[0], 'pilot-agent');
  const hook = spawnNode(topo.app, cliPath, preStop.command);
  t.equal(await hook.exited, 0, `${preStop.command.join(' ')} exits 0`);
  t.same(hook.lines, ['OK']);
  let drained = httpGet(topo.app, 'http://127.0.0.1:15020/healthz/ready');
  for (let i = 0; i < 20 && drained.status !== 503; i++) {
    await new Promise((r) => setTimeout(r, 250));
    drained = httpGet(topo.app, 'http://127.0.0.1:15020/healthz/ready');
  }
  t.same(drained, { status: 503, body: 'DRAINING\n' }, 'draining after preStop');
  t.equal(child.exitCode, null, 'still running until SIGTERM');
  sidecar.kill('SIGTERM');
  t.equal(await sidecar.exited, 0, 'exits 0 on SIGTERM');
});
