// The image, built from the repository's Dockerfile with buildah on a locally made base (base images
// cannot be pulled here: image/local-base.sh bootstraps Debian from its packages and adds Node 24), then
// run with podman: koffi loads, `check` accepts a good bootstrap and rejects a bad one, the init step
// with NET_ADMIN/NET_RAW installs the capture rules in a network namespace the test creates, and `run`
// on a read-only root as 1337 answers /healthz/ready and drains on SIGTERM.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { inNs, peer, sh } from '../helpers/netns.js';
import { repoRoot } from '../helpers/paths.js';

const STORAGE = ['--storage-driver', 'vfs', '--root', '/var/tmp/xsidecar-images/storage', '--runroot', '/run/xsidecar-images'];
// Daemonless podman here: runc with cgroupfs, and limits no higher than the sandbox grants.
const PODMAN = [...STORAGE, '--runtime', 'runc', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file'];
const RUN = ['run', '--rm', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=4096:4096'];
const BASE = 'localhost/xsidecar-node-base:24';
/** Tagged by the content it is built from: the suite's second run (on Node 24) reuses the first one's image. */
function imageTag(): string {
  const h = createHash('sha256');
  const walk = (p: string): void => {
    const st = statSync(p);
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(p, n));
    else h.update(p).update(readFileSync(p));
  };
  for (const p of ['Dockerfile', '.dockerignore', 'package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'image', 'src', 'protocols', 'proto']) walk(join(repoRoot, p));
  return `localhost/xsidecar:test-${h.digest('hex').slice(0, 16)}`;
}
const IMAGE = imageTag();

const has = (cmd: string, args = ['--version']) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
function problem(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const c of ['buildah', 'podman', 'debootstrap', 'runc', 'ip']) if (!has(c, c === 'ip' ? ['-V'] : ['--version'])) return `${c} is not installed`;
  return undefined;
}
const why = problem();
const required = process.env.XSIDECAR_REQUIRE_IMAGE === '1';
const skip = why && !required ? `image test skipped: ${why}` : false;

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}
const exec = (cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 120_000): Result => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: timeoutMs, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
};
const podman = (...args: string[]) => exec('podman', [...PODMAN, ...args]);

/** A long step in the background, so tap's heartbeat and other tests keep going. */
function long(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

// Building the base and the image takes minutes on a busy 2-core machine: this file's own time budget.
const BUDGET_MS = 50 * 60_000;
t.setTimeout(BUDGET_MS);

t.test('the image', { skip, timeout: BUDGET_MS }, async (t) => {
  t.notOk(why, why ?? 'buildah, podman and debootstrap present');
  if (why) return;
  const env = { ...process.env, BUILDAH_FLAGS: STORAGE.join(' '), NODE_IMAGE: BASE };

  if (exec('buildah', [...STORAGE, 'inspect', '--type', 'image', BASE]).status !== 0) {
    const started = Date.now();
    const r = await long('bash', ['image/local-base.sh', BASE], env);
    t.equal(r.status, 0, `local base built in ${Math.round((Date.now() - started) / 1000)} s`, { stderr: r.stderr.slice(-3000) });
    if (r.status !== 0) return;
  } else t.comment(`reusing ${BASE}`);

  // vfs keeps a full copy per layer: images built from older sources go before a new one is built.
  const old = exec('buildah', [...STORAGE, 'images', '--format', '{{.Name}}:{{.Tag}}']).stdout.split('\n').filter((n) => n.startsWith('localhost/xsidecar:test-') && n !== IMAGE);
  if (old.length > 0) exec('buildah', [...STORAGE, 'rmi', '-f', ...old]);
  exec('buildah', [...STORAGE, 'rmi', '--prune']);
  if (exec('buildah', [...STORAGE, 'inspect', '--type', 'image', IMAGE]).status !== 0) {
    const started = Date.now();
    const built = await long('bash', ['image/build.sh', IMAGE], env);
    t.equal(built.status, 0, `image built in ${Math.round((Date.now() - started) / 1000)} s`, { output: (built.stdout + built.stderr).slice(-4000) });
    if (built.status !== 0) return;
  } else t.comment(`reusing ${IMAGE} (built from the same sources)`);

  await t.test('compressed size (gzip layers, as a registry stores them)', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'xs-oci-'));
    try {
      const r = podman('push', '-q', IMAGE, `oci:${dir}:latest`);
      t.equal(r.status, 0, 'pushed to an OCI layout', { stderr: r.stderr });
      const blobs = join(dir, 'blobs', 'sha256');
      const bytes = readdirSync(blobs).reduce((n, f) => n + statSync(join(blobs, f)).size, 0);
      t.comment(`image compressed size: ${(bytes / 1e6).toFixed(1)} MB`);
      t.ok(bytes < 80e6, `compressed ${(bytes / 1e6).toFixed(1)} MB, well under a Node + Envoy image`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  await t.test('runs as 1337, Node 24, koffi loads its native module', async (t) => {
    const r = podman(...RUN, '--network', 'none', '--read-only', '--entrypoint', '/usr/local/bin/node', IMAGE, '-e',
      "const k=require('/app/node_modules/koffi');const getuid=k.load('libc.so.6').func('unsigned int getuid()');console.log(JSON.stringify({node:process.versions.node,uid:getuid(),koffi:k.version}))");
    t.equal(r.status, 0, 'node ran', { stderr: r.stderr });
    const o = JSON.parse(r.stdout.trim()) as { node: string; uid: number; koffi: string };
    t.ok(Number(o.node.split('.')[0]) >= 24, `Node ${o.node}`);
    t.equal(o.uid, 1337, 'getuid() through koffi: 1337');
    const ls = podman(...RUN, '--network', 'none', '--entrypoint', '/usr/local/bin/node', IMAGE, '-e', "console.log(require('fs').readdirSync('/app/node_modules/koffi/build/koffi').join())");
    t.equal(ls.stdout.trim(), 'linux_x64', "koffi's other platforms pruned");
  });

  await t.test('check: a good bootstrap and a bad one', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'xs-img-cfg-'));
    chmodSync(dir, 0o755); // the container reads it as 1337
    const cluster = { name: 'backend', type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: 'backend', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 8080 } } } }] }] } };
    const listener = (port: number) => ({
      name: 'to-backend',
      address: { socket_address: { address: '127.0.0.1', port_value: port } },
      filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'b', cluster: 'backend' } }] }],
    });
    writeFileSync(join(dir, 'good.json'), JSON.stringify({ static_resources: { listeners: [listener(9000)], clusters: [cluster] } }));
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ static_resources: { listeners: [listener(70000)], clusters: [cluster] } }));
    const check = (f: string) => podman(...RUN, '--network', 'none', '--read-only', '-v', `${dir}:/cfg:ro`, IMAGE, 'check', '-c', `/cfg/${f}`);
    const good = check('good.json');
    t.equal(good.status, 0, 'good: exit 0', { stderr: good.stderr });
    t.match(good.stdout, /ok: \/cfg\/good\.json: 1 listener\(s\) \[to-backend@127\.0\.0\.1:9000\], 1 cluster\(s\) \[backend\]/);
    const bad = check('bad.json');
    t.equal(bad.status, 1, 'bad: exit 1');
    t.match(bad.stderr, /static_resources\.listeners\[0\]\.address\.socket_address\.port_value: expected 0\.\.65535/);
    rmSync(dir, { recursive: true, force: true });
  });

  const ns = `xs-img-${process.pid}`;
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  sh('ip', 'netns', 'add', ns);
  inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
  t.teardown(() => void spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }));
  const inPod = ['--network', `ns:/run/netns/${ns}`];

  await t.test('the init step (istio-iptables as the template runs it) installs the capture rules', async (t) => {
    const args = ['istio-iptables', '-p', '15001', '-z', '15006', '-u', '1337', '-m', 'REDIRECT', '-i', '*', '-x', '', '-b', '*', '-d', '15090,15021,15020', '--log_output_level=default:info'];
    const denied = podman(...RUN, ...inPod, '--cap-drop', 'ALL', IMAGE, ...args);
    t.not(denied.status, 0, 'as 1337 without capabilities: refused', { stderr: denied.stderr });
    const r = podman(...RUN, ...inPod, '--user', '0:0', '--cap-drop', 'ALL', '--cap-add', 'NET_ADMIN,NET_RAW', IMAGE, ...args);
    t.equal(r.status, 0, 'root with NET_ADMIN and NET_RAW, as the template runs istio-init', { stderr: r.stderr });
    t.match(r.stderr, /ignoring --log_output_level=default:info/);
    const saved = podman(...RUN, ...inPod, '--user', '0:0', '--cap-drop', 'ALL', '--cap-add', 'NET_ADMIN,NET_RAW', '--entrypoint', '/usr/sbin/iptables-save', IMAGE, '-t', 'nat');
    t.equal(saved.status, 0, 'iptables-save in the image', { stderr: saved.stderr });
    t.match(saved.stdout, /-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001/);
    t.match(saved.stdout, /-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006/);
    t.match(saved.stdout, /-A ISTIO_OUTPUT .*--uid-owner 1337 -j RETURN/);
    t.match(saved.stdout, /-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN/);
  });

  await t.test('run: read-only root as 1337, /healthz/ready, pilot-agent request, drain on SIGTERM', async (t) => {
    const name = `xs-img-run-${process.pid}`;
    podman('rm', '-f', name);
    const started = podman('run', '-d', '--name', name, '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=4096:4096', ...inPod, '--read-only', '--cap-drop', 'ALL', IMAGE, 'run', '--drain-timeout', '2s');
    t.equal(started.status, 0, 'started', { stderr: started.stderr });
    t.teardown(() => void podman('rm', '-f', name));
    let ready: { status?: number; body?: string; error?: string } = {};
    for (let i = 0; i < 120 && ready.status !== 200; i++) {
      ready = JSON.parse(inNs(ns, process.execPath, peer('http-get'), 'http://127.0.0.1:15021/healthz/ready').trim()) as typeof ready;
      if (ready.status !== 200) await new Promise((r) => setTimeout(r, 500));
    }
    t.same(ready, { status: 200, body: 'LIVE\n' }, '/healthz/ready from the pod network');
    const viaAgent = podman('exec', name, 'pilot-agent', 'request', '--debug-port=15000', 'GET', 'ready');
    t.equal(viaAgent.status, 0, 'pilot-agent request inside the container', { stderr: viaAgent.stderr });
    t.equal(viaAgent.stdout, 'LIVE\n');
    const stopped = podman('kill', '--signal', 'TERM', name);
    t.equal(stopped.status, 0, 'SIGTERM sent');
    const waited = podman('wait', name);
    t.equal(waited.stdout.trim(), '0', 'exited 0 after draining');
    const logs = podman('logs', name).stdout;
    t.match(logs, /"msg":"draining"/);
    t.match(logs, /"msg":"drained, exiting"/);
  });
});
