/**
 * `npm run bench:mtls`: what mesh mTLS costs, two xsidecars on loopback (an outbound one originating
 * ISTIO_MUTUAL, an inbound one terminating it, both with certificates from a test CA over gRPC) against
 * the same pair in plaintext:
 *  - CPU per new connection: a client opens short connections (one Bolt request each) through an L4 chain,
 *    so every connection is a new TLS handshake between the sidecars; CPU time of each sidecar from /proc;
 *  - added latency: Bolt at a fixed rate (1,000 req/s by default) through both sidecars (per-request
 *    routing, pooled upstream connections), p50/p99 with mTLS vs plaintext.
 * Rounds alternate the two modes and the median is reported. BENCH_SECONDS, BENCH_RATE, BENCH_ROUNDS,
 * BENCH_CONNS (connections per churn run) and ECC_SIGNATURE_ALGORITHM=ECDSA tune it.
 *
 *   node dist/bench/mtls.js                      the benchmark (writes bench/results/mtls.md)
 *   node dist/bench/mtls.js churn HOST:PORT N C  (internal) N short Bolt connections, C at a time
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { NEED_MORE } from '../protocols/codec.js';
import { findCodec } from '../protocols/registry.js';
import { ISTIOD_SAN, makeMeshPki, type MeshPki, TOKEN } from '../test/helpers/mesh-ca.js';
import { inboundChains, istioMutualMatches, meshCluster } from '../test/helpers/mesh-config.js';
import { repoRoot, sidecarMain, templates } from './fixtures.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const RATE = Number(process.env.BENCH_RATE ?? 1000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const CONNS = Number(process.env.BENCH_CONNS ?? 1000);
const dist = resolve(repoRoot, 'dist');
const CLK_TCK = 100;

type Json = Record<string, unknown>;

function start(cmd: string, args: string[], ready: (o: Json) => boolean, env: NodeJS.ProcessEnv = process.env): Promise<{ child: ChildProcess; first: Json }> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'], env });
  return new Promise((res, rej) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        const o = JSON.parse(l) as Json;
        if (ready(o)) res({ child, first: o });
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (code) => rej(new Error(`${cmd} ${args[0]} exited ${code}`)));
  });
}

const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
};

/** N short connections, C at a time: connect, one Bolt request, its response, close. */
async function churn(target: string, n: number, c: number): Promise<void> {
  const [host, port] = target.split(':') as [string, string];
  const codec = findCodec('bolt')!;
  const request = templates('bolt').request;
  let ok = 0;
  let failed = 0;
  let next = 0;
  const one = () =>
    new Promise<void>((done) => {
      const s = connect({ host, port: Number(port) });
      let buf = Buffer.alloc(0);
      const finish = (good: boolean) => {
        good ? ok++ : failed++;
        s.destroy();
        done();
      };
      s.setTimeout(10_000, () => finish(false));
      s.on('connect', () => s.write(request));
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        const f = codec.decode(buf, 1 << 20);
        if (f !== NEED_MORE) finish(!(f instanceof Error) && f.ok);
      });
      s.on('error', () => finish(false));
    });
  const started = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (next++ < n) await one();
  }));
  process.stdout.write(`${JSON.stringify({ ok, failed, ms: performance.now() - started })}\n`);
}

interface Pair {
  client: { pid: number; out: string; l4: string };
  server: { pid: number };
  stop(): void;
}

async function sidecar(name: string, cfg: object, env: NodeJS.ProcessEnv, flags: string[]): Promise<{ child: ChildProcess; listeners: { name: string; address: string }[] }> {
  const file = join(tmpdir(), `xsidecar-bench-mtls-${name}.json`);
  writeFileSync(file, JSON.stringify({ admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } }, ...cfg }));
  const s = await start(process.execPath, [sidecarMain, 'run', '-c', file, '--health-port', '0', '--prometheus-port', '0', ...flags], (o) => o.msg === 'xsidecar started', env);
  const health = String(s.first.health).replace('0.0.0.0', '127.0.0.1');
  for (let i = 0; ; i++) {
    if ((await fetch(`http://${health}/healthz/ready`).then((r) => r.status, () => 0)) === 200) break;
    if (i > 600) throw new Error(`${name} never became ready`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child: s.child, listeners: s.first.listeners as { name: string; address: string }[] };
}

const listener = (name: string, chains: object[]) => ({ name, address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: chains });
const tcpProxy = (cluster: string) => ({ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: cluster, cluster } }] });
const bolt = (cluster: string) => ({
  filters: [
    {
      name: 'xsidecar.filters.network.xprotocol',
      typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'bolt', protocol: 'bolt', route_config: { virtual_hosts: [{ name: 'svc', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }] } },
    },
  ],
});

async function pair(mtls: boolean, pki: MeshPki, caPort: number, responderPort: number): Promise<Pair> {
  const env = (sa: string) => ({ ...process.env, CA_ADDR: `127.0.0.1:${caPort}`, ISTIOD_SAN, POD_NAMESPACE: 'bench', SERVICE_ACCOUNT: sa, ISTIO_META_CLUSTER_ID: 'Kubernetes' });
  const flags = ['--ca-root-cert', pki.file('root-cert.pem'), '--token-file', pki.file('istio-token')];
  const app = { name: 'app', type: 'STATIC', connect_timeout: '5s', load_assignment: { cluster_name: 'app', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: responderPort } } } }] }] } };
  const server = await sidecar(`server-${mtls}`, { static_resources: { listeners: [listener('inbound', inboundChains('app', 'PERMISSIVE'))], clusters: [app] } }, env('server'), flags);
  const inboundPort = Number(server.listeners.find((l) => l.name === 'inbound')!.address.split(':').pop());
  const matches = istioMutualMatches('server.bench.svc.cluster.local', 12200, `spiffe://cluster.local/ns/bench/sa/server`);
  const upstream = (name: string) => meshCluster(name, [{ address: '127.0.0.1', port: inboundPort, istio: mtls }], matches);
  const client = await sidecar(`client-${mtls}`, { static_resources: { listeners: [listener('out', [bolt('up')]), listener('l4', [tcpProxy('up-l4')])], clusters: [upstream('up'), upstream('up-l4')] } }, env('client'), flags);
  const addr = (n: string) => client.listeners.find((l) => l.name === n)!.address;
  return {
    client: { pid: client.child.pid!, out: addr('out'), l4: addr('l4') },
    server: { pid: server.child.pid! },
    stop: () => {
      client.child.kill('SIGKILL');
      server.child.kill('SIGKILL');
    },
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

async function main(): Promise<void> {
  const pki = await makeMeshPki();
  const ca = await start(process.execPath, [join(dist, 'test/peers/test-ca.js'), '--root-cert', pki.file('root-cert.pem'), '--root-key', pki.file('root-key.pem'), '--tls-cert', pki.file('istiod.pem'), '--tls-key', pki.file('istiod-key.pem'), '--token', TOKEN], (o) => o.event === 'listening');
  const responder = await start(process.execPath, [join(dist, 'bench/responder.js'), '0'], (o) => o.ready === true);
  const responderPort = (responder.first.ports as number[])[0]!;
  const results: Record<'plaintext' | 'mtls', { cpuClientUs: number[]; cpuServerUs: number[]; connMs: number[]; p50: number[]; p99: number[]; p999: number[]; errors: number[] }> = {
    plaintext: { cpuClientUs: [], cpuServerUs: [], connMs: [], p50: [], p99: [], p999: [], errors: [] },
    mtls: { cpuClientUs: [], cpuServerUs: [], connMs: [], p50: [], p99: [], p999: [], errors: [] },
  };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of ['plaintext', 'mtls'] as const) {
        const p = await pair(mode === 'mtls', pki, Number(ca.first.port), responderPort);
        try {
          const r = results[mode];
          // Warm-up: JIT, pools, TLS session of the pooled connections.
          await start(process.execPath, [join(dist, 'bench/mtls.js'), 'churn', p.client.l4, '100', '4'], (o) => 'ok' in o);
          await start(process.execPath, [join(dist, 'bench/loadgen.js'), p.client.out, '--conns', '8', '--rate', String(RATE), '--seconds', '1'], (o) => 'requests' in o);
          const c0 = cpuTicks(p.client.pid);
          const s0 = cpuTicks(p.server.pid);
          const ch = (await start(process.execPath, [join(dist, 'bench/mtls.js'), 'churn', p.client.l4, String(CONNS), '8'], (o) => 'ok' in o)).first as { ok: number; failed: number; ms: number };
          r.cpuClientUs.push((((cpuTicks(p.client.pid) - c0) / CLK_TCK) * 1e6) / CONNS);
          r.cpuServerUs.push((((cpuTicks(p.server.pid) - s0) / CLK_TCK) * 1e6) / CONNS);
          r.connMs.push(ch.ms / CONNS);
          const lg = (await start(process.execPath, [join(dist, 'bench/loadgen.js'), p.client.out, '--conns', '8', '--rate', String(RATE), '--seconds', String(SECONDS), '--warmup', '1'], (o) => 'requests' in o)).first as Record<string, number>;
          r.p50.push(lg.p50!);
          r.p99.push(lg.p99!);
          r.p999.push(lg.p999!);
          r.errors.push(lg.errors! + ch.failed);
          console.error(`round ${round + 1} ${mode}: churn cpu client ${r.cpuClientUs.at(-1)!.toFixed(0)} µs/conn, server ${r.cpuServerUs.at(-1)!.toFixed(0)} µs/conn, failed ${ch.failed}; ${RATE} req/s p50 ${lg.p50} ms p99 ${lg.p99} ms, errors ${lg.errors}`);
        } finally {
          p.stop();
        }
      }
    }
  } finally {
    ca.child.kill('SIGKILL');
    responder.child.kill('SIGKILL');
  }
  const m = (mode: 'plaintext' | 'mtls', k: keyof (typeof results)['mtls']) => median(results[mode][k]);
  const f = (v: number, d = 3) => v.toFixed(d);
  const lines = [
    `# mTLS cost (xsidecar → xsidecar, loopback, ${process.env.ECC_SIGNATURE_ALGORITHM === 'ECDSA' ? 'ECDSA P-256' : 'RSA 2048'} workload keys, ${ROUNDS} rounds, medians)`,
    '',
    `| | plaintext | mTLS | added by mTLS |`,
    `|---|---|---|---|`,
    `| CPU per new connection, client sidecar (µs) | ${f(m('plaintext', 'cpuClientUs'), 0)} | ${f(m('mtls', 'cpuClientUs'), 0)} | ${f(m('mtls', 'cpuClientUs') - m('plaintext', 'cpuClientUs'), 0)} |`,
    `| CPU per new connection, server sidecar (µs) | ${f(m('plaintext', 'cpuServerUs'), 0)} | ${f(m('mtls', 'cpuServerUs'), 0)} | ${f(m('mtls', 'cpuServerUs') - m('plaintext', 'cpuServerUs'), 0)} |`,
    `| wall time per connection, 8 at a time (ms) | ${f(m('plaintext', 'connMs'))} | ${f(m('mtls', 'connMs'))} | ${f(m('mtls', 'connMs') - m('plaintext', 'connMs'))} |`,
    `| p50 at ${RATE} req/s through both (ms) | ${f(m('plaintext', 'p50'))} | ${f(m('mtls', 'p50'))} | ${f(m('mtls', 'p50') - m('plaintext', 'p50'))} |`,
    `| p99 at ${RATE} req/s through both (ms) | ${f(m('plaintext', 'p99'))} | ${f(m('mtls', 'p99'))} | ${f(m('mtls', 'p99') - m('plaintext', 'p99'))} |`,
    `| p99.9 at ${RATE} req/s through both (ms) | ${f(m('plaintext', 'p999'))} | ${f(m('mtls', 'p999'))} | ${f(m('mtls', 'p999') - m('plaintext', 'p999'))} |`,
    `| errors (all rounds) | ${results.plaintext.errors.reduce((a, b) => a + b, 0)} | ${results.mtls.errors.reduce((a, b) => a + b, 0)} | |`,
    '',
    `Each round's p99 (ms): plaintext ${results.plaintext.p99.join(', ')}; mTLS ${results.mtls.p99.join(', ')}. Anchor: Istio 1.20 adds 0.298 ms p99 with mTLS. Latency runs last ${SECONDS} s after 1 s of the same load that is not recorded (the fresh load generator's own warm-up).`,
    `CPU per connection counts everything a short connection costs the sidecar (accept, sniff, connect, relay, close); the "added" column is the handshake's share.`,
  ];
  mkdirSync(resolve(repoRoot, 'bench/results'), { recursive: true });
  writeFileSync(resolve(repoRoot, 'bench/results/mtls.md'), `${lines.join('\n')}\n`);
  console.log(lines.join('\n'));
}

const [cmd, ...rest] = process.argv.slice(2);
if (cmd === 'churn') await churn(rest[0]!, Number(rest[1]), Number(rest[2]));
else await main();
