/**
 * The sidecar loads only what its config uses (sys/builtins.ts, sys/libc.ts): in a fresh process, its whole
 * server and the libc calls load neither Node's bundled undici (pulled in by an ESM import of node:http on
 * Node 24) nor node:tls and node:https (pulled in by koffi's entry point, or by our own imports); TLS
 * loads on first use, and works then: an HTTPS app probe against `openssl s_server`, a foreign peer. The
 * shipped bundle, started on a static config, loads no node:crypto either (only DNS updates' TSIG needs it),
 * and compacts its heap a moment after start; nor koffi until its first proxied connection.
 */
import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { RESTORE_ENV, startupTiering } from '../../src/sys/tiering.js';
import { freePort } from '../helpers/sidecar.js';
import { Proc } from '../helpers/netns.js';
import { cliPath, repoRoot } from '../helpers/paths.js';

const HEAVY = ['internal/deps/undici/undici', 'tls', 'https'];
const opensslProblem = spawnSync('openssl', ['version']).status === 0 ? undefined : 'openssl is not installed';

/** Whether something accepts on 127.0.0.1:`port` within 10 s (openssl s_server takes its time to start). */
async function listening(port: number): Promise<boolean> {
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
    const up = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1', () => res(true)).on('error', () => res(false));
      s.once('connect', () => s.destroy());
    });
    if (up) return true;
  }
  return false;
}

/** Runs `body` in a fresh Node (this one) as an ES module with `loaded()` (the heavy built-ins loaded so far) and `dist`. */
function fresh(body: string): { status: number | null; out: string } {
  const script = `
    const loaded = () => ${JSON.stringify(HEAVY)}.filter((m) => process.moduleLoadList.includes('NativeModule ' + m));
    const dist = ${JSON.stringify(join(repoRoot, 'dist/src'))};
    ${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

t.test('the server, the agent commands and the libc calls load no undici, no tls, no https', async (t) => {
  const r = fresh(`
    await import(dist + '/server/sidecar.js');
    await import(dist + '/agent/commands.js');
    const { loadLibc } = await import(dist + '/sys/libc.js');
    const libc = loadLibc();
    const rlim = Buffer.alloc(16);
    console.log(JSON.stringify({ loaded: loaded(), libc: !!libc, getrlimit: libc?.getrlimit(7, rlim), soft: Number(rlim.readBigUInt64LE(0)) }));`);
  t.equal(r.status, 0, r.out);
  const o = JSON.parse(r.out.trim().split('\n').pop()!) as { loaded: string[]; libc: boolean; getrlimit: number; soft: number };
  t.same(o.loaded, [], 'none of the heavy built-ins is loaded');
  t.ok(o.libc, 'koffi loads from its native module');
  t.equal(o.getrlimit, 0, 'and a libc call through it works');
  t.ok(o.soft > 0, `RLIMIT_NOFILE soft limit read: ${o.soft}`);
});

t.test('TLS loads on first use: an HTTPS app probe against openssl s_server', { skip: opensslProblem ?? false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-lazy-'));
  const key = join(dir, 'key.pem'), cert = join(dir, 'cert.pem');
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=app'], { encoding: 'utf8' });
  t.equal(made.status, 0, made.stderr);
  const port = await freePort();
  const server = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert, '-key', key, '-www', '-quiet'], { stdio: 'ignore' });
  t.teardown(() => server.kill('SIGKILL'));
  t.ok(await listening(port), 'openssl s_server listens');
  const r = fresh(`
    const { runAppProbe } = await import(dist + '/agent/app-probe.js');
    const before = loaded();
    const result = await runAppProbe({ httpGet: { port: ${port}, path: '/', scheme: 'HTTPS' }, timeoutSeconds: 5 }, '127.0.0.1');
    console.log(JSON.stringify({ before, after: loaded(), result }));`);
  t.equal(r.status, 0, r.out);
  const o = JSON.parse(r.out.trim().split('\n').pop()!) as { before: string[]; after: string[]; result: { status: number; body: string } };
  t.same(o.before, [], 'not loaded before the probe');
  t.equal(o.result.status, 200, `the probe reached the app over TLS: ${o.result.body}`);
  t.ok(o.after.includes('tls') && o.after.includes('https'), 'loaded by it');
});

t.test('the shipped bundle on a static config: no crypto, tls, https or undici; a compaction after start', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-lazy-'));
  let proc: Proc | undefined;
  // One teardown, in this order: the sidecar writes into the directory every 50 ms until it has exited.
  t.teardown(async () => {
    await proc?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const out = join(dir, 'loaded.json');
  // Preloaded into the sidecar (and kept across its re-exec with the heap defaults): what it has loaded, every 50 ms.
  const preload = join(dir, 'report.cjs');
  const heavy = [...HEAVY, 'crypto'];
  // Written aside and renamed, so the test never reads a half-written file.
  // Also: the V8 flags set at run time, and the start-up environment the re-exec (cli/heap.ts) gave.
  const report = `JSON.stringify({ loaded: ${JSON.stringify(heavy)}.filter((m) => process.moduleLoadList.includes('NativeModule ' + m)), flags, mmap: process.env.MALLOC_MMAP_THRESHOLD_ ?? null, restore: process.env.${RESTORE_ENV} ?? null, execArgv: process.execArgv })`;
  writeFileSync(preload, `const fs = require('fs'); const v8 = require('v8'); const flags = []; const set = v8.setFlagsFromString; v8.setFlagsFromString = function (f) { flags.push(f); return set.apply(this, arguments); };
    setInterval(() => { fs.writeFileSync(${JSON.stringify(out + '.new')}, ${report}); fs.renameSync(${JSON.stringify(out + '.new')}, ${JSON.stringify(out)}); }, 50).unref();`);
  const config = join(dir, 'static.json');
  writeFileSync(config, JSON.stringify({
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    static_resources: { listeners: [{ name: 'l4', address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'l4', cluster: 'c' } }] }] }], clusters: [{ name: 'c', type: 'STATIC', load_assignment: { cluster_name: 'c', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 9 } } } }] }] } }] },
  }));
  // Through `env -u`: tap puts its own hooks into every node it sees spawned, and they load node:crypto.
  const argv = ['-u', 'NODE_OPTIONS', process.execPath, '-r', preload, cliPath, 'run', '-c', config, '--health-port', '0', '--prometheus-port', '0', '--dns-port', '0'];
  proc = new Proc(spawn('env', argv, { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, XSIDECAR_LOG_LEVEL: 'info' } }), 'bundle');
  const started = await proc.waitJson<{ msg?: string; listeners: { address: string }[] }>((o) => o.msg === 'xsidecar started');
  const compacted = await proc.waitJson<{ msg?: string; pauseMs: number; rssBefore: number; rssAfter: number }>((o) => o.msg === 'memory: compacted after a config change', 5_000);
  t.ok(compacted, `compacted after a static start (before, it never did): ${JSON.stringify(compacted)}`);
  await new Promise((r) => setTimeout(r, 200));
  const seen = JSON.parse(readFileSync(out, 'utf8')) as { loaded: string[]; flags: string[]; mmap: string | null; restore: string | null; execArgv: string[] };
  t.same(seen.loaded, [], 'none of the heavy built-ins is loaded');
  const raised = startupTiering([]).flags;
  t.equal(seen.mmap, '262144', 're-executed with glibc\'s mmap threshold in the environment');
  t.ok(raised.every((f) => seen.execArgv.includes(f)), `and Maglev's threshold raised for the start-up: ${seen.execArgv.join(' ')}`);
  if (raised.length > 0) t.ok(seen.flags.includes('--invocation-count-for-maglev=400') && seen.restore === null, `put back once started: ${seen.flags.join(' ')}`);
  else t.same(seen.flags.filter((f) => f.includes('maglev')), [], 'a V8 without Maglev (Node 20): nothing raised, nothing put back');
  // koffi (sys/libc.ts) neither: the descriptor limit comes from /proc, the allocator is tuned before the
  // first proxied connection, and a trim check (every 5 s) finds nothing to trim on an idle sidecar.
  const koffi = () => readFileSync(`/proc/${proc!.child.pid}/maps`, 'latin1').includes('koffi');
  await new Promise((r) => setTimeout(r, 5_500));
  t.notOk(koffi(), 'koffi is not loaded while the sidecar is idle, past a trim check');
  const [host, port] = started.listeners[0]!.address.split(':');
  await new Promise<void>((resolve) => connect(Number(port), host, () => resolve()).on('error', () => resolve()));
  if (seen.mmap) {
    await new Promise((r) => setTimeout(r, 500));
    t.notOk(koffi(), 'nor after a proxied connection: glibc took the mmap threshold from the environment');
  } else {
    for (const deadline = Date.now() + 5_000; !koffi() && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
    t.ok(koffi(), 'the first proxied connection loads it, to fix the allocator\'s mmap threshold');
  }
});
