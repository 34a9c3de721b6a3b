/**
 * `npm run bench`: one run, one machine, cases side by side — direct, a bare Node relay, xsidecar at L4,
 * xsidecar with the Bolt and the Dubbo codecs (routing and per-request load balancing on) and HAProxy in
 * TCP mode — each measured for
 * throughput, latency at a fixed rate, CPU time of the proxy process per request and peak RSS, plus the
 * sidecar's RSS with 1,000 open downstream connections. Writes bench/results/report.md and chart.svg.
 * BENCH_ROUNDS, BENCH_SECONDS, BENCH_RATE; BENCH_BASE_MAIN (below); BENCH_SCALE=0 skips bench/xds-scale.ts.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot, sidecarMain } from './fixtures.js';
import { runScale } from './xds-scale.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const RATE = Number(process.env.BENCH_RATE ?? 5000);
/** Each case runs this many times, the proxies taking turns, and the median is reported: one 5 s run's p99 on a shared 2-core machine is mostly noise. */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const results = resolve(repoRoot, 'bench/results');
const dist = resolve(repoRoot, 'dist');
const CLK_TCK = 100;

interface Started {
  child: ChildProcess;
  first: Record<string, unknown>;
}

function start(cmd: string, args: string[], ready: (o: Record<string, unknown>) => boolean): Promise<Started> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        if (ready(o)) res({ child, first: o });
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (code) => rej(new Error(`${cmd} exited ${code}`)));
  });
}

const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, all threads
};
const status = (pid: number, key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

async function loadgen(target: string, args: string[]): Promise<Record<string, number>> {
  const r = await start(process.execPath, [join(dist, 'bench/loadgen.js'), target, ...args], (o) => 'requests' in o);
  return r.first as Record<string, number>;
}

interface Proxy {
  name: string;
  pid?: number;
  target: string;
  stop(): void;
  /** What the load generator speaks through it; Bolt unless said. */
  protocol?: string;
  /** A fresh instance of the same proxy, for the open-connections memory measurement. */
  fresh?: () => Promise<Proxy>;
}

/**
 * BENCH_BASE_MAIN: another build's entry (a worktree of an earlier commit, built) run as one more Bolt case
 * beside this one, so a change's CPU per request and p99 are compared in the same invocation.
 */
const BASE_MAIN = process.env.BENCH_BASE_MAIN ? resolve(process.env.BENCH_BASE_MAIN) : undefined;

async function xsidecar(name: string, filter: object, clusters: object[], extra: string[] = [], main = sidecarMain): Promise<Proxy> {
  const cfg = {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    static_resources: { listeners: [{ name: 'bench', address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [filter] }] }], clusters },
  };
  const file = join(tmpdir(), `xsidecar-bench-${name}.json`);
  writeFileSync(file, JSON.stringify(cfg));
  const s = await start(process.execPath, [main, 'run', '-c', file, '--health-port', '0', '--prometheus-port', '0', ...extra], (o) => o.msg === 'xsidecar started');
  const listeners = s.first.listeners as { name: string; address: string }[];
  return { name, pid: s.child.pid, target: listeners[0]!.address, stop: () => s.child.kill('SIGKILL') };
}

async function xsidecarCase(label: string, name: string, filter: object, clusters: object[], protocol?: string, extra?: string[], main?: string): Promise<Proxy> {
  const make = async () => ({ ...(await xsidecar(name, filter, clusters, extra, main)), name: label, protocol });
  return { ...(await make()), fresh: make };
}

const staticCluster = (name: string, ports: number[]) => ({
  name,
  type: 'STATIC',
  connect_timeout: '1s',
  lb_policy: 'ROUND_ROBIN',
  load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: ports.map((p) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: p } } } })) }] },
});

function haproxyAvailable(): string | undefined {
  if (spawnSync('haproxy', ['-v']).status === 0) return undefined;
  if (process.getuid?.() === 0) {
    console.error('installing haproxy (Debian package) for the native baseline…');
    spawnSync('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy'], { stdio: 'inherit' });
    if (spawnSync('haproxy', ['-v']).status === 0) return undefined;
  }
  return 'haproxy is not installed and could not be installed (needs root and the Debian registry): HAProxy case skipped';
}

async function haproxy(backend: number): Promise<Proxy> {
  const port = 20000 + (process.pid % 20000);
  const cfg = join(tmpdir(), `xsidecar-bench-haproxy.cfg`);
  // One thread, like the Node sidecar's one event loop: CPU per request compares like with like.
  writeFileSync(cfg, `global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\nfrontend f\n  bind 127.0.0.1:${port}\n  default_backend b\nbackend b\n  server s1 127.0.0.1:${backend}\n`);
  const child = spawn('haproxy', ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'inherit'] });
  await new Promise((r) => setTimeout(r, 500));
  if (child.exitCode !== null) throw new Error(`haproxy exited ${child.exitCode}`);
  return { name: 'HAProxy TCP', pid: child.pid, target: `127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

interface Row {
  case: string;
  load: string;
  rps: number;
  p50?: number;
  p99?: number;
  p999?: number;
  cpuUsPerReq?: number;
  peakRssMb?: number;
}

async function measure(p: Proxy, load: string, loadArgs: string[], warm: boolean): Promise<Row> {
  const args = [...loadArgs, '--protocol', p.protocol ?? 'bolt'];
  if (warm) await loadgen(p.target, [...args.filter((a, i) => args[i - 1] !== '--seconds' && a !== '--seconds'), '--seconds', '1']); // warm up the JIT and pools
  const before = p.pid ? cpuTicks(p.pid) : 0;
  const r = await loadgen(p.target, args);
  const after = p.pid ? cpuTicks(p.pid) : 0;
  return {
    case: p.name,
    load,
    rps: r.rps!,
    p50: r.p50,
    p99: r.p99,
    p999: r.p999,
    cpuUsPerReq: p.pid ? Number(((((after - before) / CLK_TCK) * 1e6) / r.requests!).toFixed(2)) : undefined,
    peakRssMb: p.pid ? Number(status(p.pid, 'VmHWM').toFixed(1)) : undefined,
  };
}

function chart(rows: Row[]): string {
  const bars = rows.filter((r) => r.cpuUsPerReq !== undefined && r.load !== `${RATE} rps, 8 conns`);
  const max = Math.max(...bars.map((r) => r.cpuUsPerReq!), 1);
  const h = 28;
  const body = bars
    .map((r, i) => {
      const w = (r.cpuUsPerReq! / max) * 420;
      const y = 40 + i * h;
      return `<text x="10" y="${y + 16}" font-size="12">${r.case} — ${r.load}</text><rect x="300" y="${y + 4}" width="${w.toFixed(1)}" height="18" fill="${r.case.startsWith('HAProxy') ? '#888' : '#2a7ab0'}"/><text x="${(306 + w).toFixed(1)}" y="${y + 18}" font-size="12">${r.cpuUsPerReq} µs</text>`;
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="820" height="${60 + bars.length * h}" font-family="sans-serif">\n<text x="10" y="22" font-size="15">Proxy CPU time per request (lower is better)</text>\n${body}\n</svg>\n`;
}

const median = (xs: (number | undefined)[]): number | undefined => {
  const v = xs.filter((x): x is number => x !== undefined).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : undefined;
};

/** One row from several runs of the same case: the median of each figure, the highest peak RSS. */
function medianRow(runs: Row[]): Row & { p99s: number[] } {
  const m = (k: 'rps' | 'p50' | 'p99' | 'p999' | 'cpuUsPerReq') => median(runs.map((r) => r[k]));
  const rss = runs.map((r) => r.peakRssMb).filter((x): x is number => x !== undefined);
  return { case: runs[0]!.case, load: runs[0]!.load, rps: m('rps')!, p50: m('p50'), p99: m('p99'), p999: m('p999'), cpuUsPerReq: m('cpuUsPerReq'), peakRssMb: rss.length ? Math.max(...rss) : undefined, p99s: runs.map((r) => r.p99!).sort((a, b) => a - b) };
}

/** Istio metrics' cost: the Bolt case's CPU per request with metrics on vs off, per load. */
function metricsCost(rows: Row[]): string {
  const parts = rows
    .filter((r) => r.case === 'xsidecar Bolt')
    .map((on) => {
      const off = rows.find((r) => r.case === 'xsidecar Bolt, metrics off' && r.load === on.load);
      if (on.cpuUsPerReq === undefined || off?.cpuUsPerReq === undefined) return undefined;
      return `${on.load}: ${on.cpuUsPerReq} vs ${off.cpuUsPerReq} µs (${(((on.cpuUsPerReq - off.cpuUsPerReq) / off.cpuUsPerReq) * 100).toFixed(1)} %)`;
    })
    .filter(Boolean);
  return `Istio metrics' CPU per request (Bolt, on vs off): ${parts.length ? parts.join('; ') : '—'}`;
}

const fmt = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : String(v));

async function main(): Promise<void> {
  const responder = await start(process.execPath, [join(dist, 'bench/responder.js'), '0', '0'], (o) => o.ready === true);
  const [r1, r2] = responder.first.ports as number[];
  const skipHaproxy = haproxyAvailable();
  if (skipHaproxy) console.error(skipHaproxy);
  const boltFilter = {
    name: 'xsidecar.filters.network.xprotocol',
    typed_config: {
      '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy',
      stat_prefix: 'bolt',
      protocol: 'bolt',
      route_config: { virtual_hosts: [{ name: 'svc', domains: ['*'], routes: [{ match: { prefix: '/', headers: [{ name: 'service', string_match: { prefix: 'com.nodejs.test.' } }] }, route: { cluster: 'two' } }] }] },
    },
  };
  const proxies: (() => Promise<Proxy>)[] = [
    async () => ({ name: 'direct', target: `127.0.0.1:${r1}`, stop: () => undefined }),
    async () => {
      const relay = await start(process.execPath, [join(dist, 'bench/node-relay.js'), String(r1)], (o) => o.ready === true);
      return { name: 'Node relay', pid: relay.child.pid, target: `127.0.0.1:${relay.first.port as number}`, stop: () => relay.child.kill('SIGKILL') };
    },
    () => xsidecarCase('xsidecar L4', 'l4', { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'l4', cluster: 'one' } }, [staticCluster('one', [r1!])]),
    () => xsidecarCase('xsidecar Bolt', 'bolt', boltFilter, [staticCluster('two', [r1!, r2!])]),
    ...(BASE_MAIN ? [() => xsidecarCase('xsidecar Bolt, base build', 'bolt-base', boltFilter, [staticCluster('two', [r1!, r2!])], undefined, undefined, BASE_MAIN)] : []),
    // The same Bolt case without Istio's per-request metrics: what they cost in CPU per request.
    () => xsidecarCase('xsidecar Bolt, metrics off', 'bolt-nometrics', boltFilter, [staticCluster('two', [r1!, r2!])], undefined, ['--no-istio-metrics']),
    // The same work as the Bolt case: routed on the interface (read from the hessian body), balanced per request.
    () =>
      xsidecarCase(
        'xsidecar Dubbo',
        'dubbo',
        {
          name: 'xsidecar.filters.network.xprotocol',
          typed_config: {
            '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy',
            stat_prefix: 'dubbo',
            protocol: 'dubbo',
            route_config: { virtual_hosts: [{ name: 'svc', domains: ['*'], routes: [{ match: { prefix: '/', headers: [{ name: 'service', string_match: { prefix: 'com.example.' } }] }, route: { cluster: 'two' } }] }] },
          },
        },
        [staticCluster('two', [r1!, r2!])],
        'dubbo',
      ),
    ...(skipHaproxy ? [] : [() => haproxy(r1!)]),
  ];
  const loads: [string, string[]][] = [
    ['64 conns × 1 in flight', ['--conns', '64', '--inflight', '1', '--seconds', String(SECONDS)]],
    ['8 conns × 16 in flight', ['--conns', '8', '--inflight', '16', '--seconds', String(SECONDS)]],
    [`${RATE} rps, 8 conns`, ['--conns', '8', '--rate', String(RATE), '--seconds', String(SECONDS)]],
  ];
  // Every proxy stays up while the runs take turns, so a noisy minute on the machine hits them all alike.
  const running: Proxy[] = [];
  for (const make of proxies) running.push(await make());
  const byCase = new Map<Proxy, (Row & { p99s: number[] })[]>(running.map((p) => [p, []]));
  for (const [name, args] of loads) {
    const runs = new Map<Proxy, Row[]>(running.map((p) => [p, []]));
    for (let round = 0; round < ROUNDS; round++) for (const p of running) runs.get(p)!.push(await measure(p, name, args, round === 0));
    for (const p of running) {
      const row = medianRow(runs.get(p)!);
      byCase.get(p)!.push(row);
      console.error(`${row.case.padEnd(15)} ${row.load.padEnd(24)} ${String(row.rps).padStart(7)} rps  p99 ${fmt(row.p99)} ms (runs: ${row.p99s.join(', ')})  cpu ${fmt(row.cpuUsPerReq)} µs/req`);
    }
  }
  const rows = running.flatMap((p) => byCase.get(p)!);
  const idle: string[] = [];
  for (const p of running) {
    const afterLoad = p.pid ? status(p.pid, 'VmRSS') : 0;
    p.stop();
    if (p.fresh) {
      // Memory per open connection, measured on a process that has not been through the load runs.
      const f = await p.fresh();
      const baseline = status(f.pid!, 'VmRSS');
      const held = await start(process.execPath, [join(dist, 'bench/loadgen.js'), f.target, '--conns', '1000', '--hold', '3', '--protocol', p.protocol ?? 'bolt'], (o) => 'held' in o);
      idle.push(`| ${p.name} | ${baseline.toFixed(1)} MB | ${status(f.pid!, 'VmRSS').toFixed(1)} MB | ${afterLoad.toFixed(1)} MB |`);
      held.child.kill();
      f.stop();
    }
  }
  responder.child.kill();
  const atRate = rows.filter((r) => r.load.includes('rps'));
  // The relay is the floor a Node proxy cannot go under: what the sidecar adds over it is its own cost.
  const addedP99 = (floor: string) => {
    const base = atRate.find((r) => r.case === floor)?.p99;
    const cases = atRate.filter((r) => r.case !== 'direct' && r.case !== floor);
    return `Added p99 at ${RATE} rps vs ${floor} (medians): ${cases.map((r) => `${r.case} ${base !== undefined && r.p99 !== undefined ? (r.p99 - base).toFixed(3) : '—'} ms`).join(', ')}`;
  };
  const table = [
    `# xsidecar benchmark (${new Date().toISOString()}, ${SECONDS} s per run, median of ${ROUNDS} interleaved runs, node ${process.version})`,
    '',
    '| case | load | requests/s | p50 ms | p99 ms | p999 ms | proxy CPU µs/request | proxy peak RSS MB |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.case} | ${r.load} | ${r.rps} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.p999)} | ${fmt(r.cpuUsPerReq)} | ${fmt(r.peakRssMb)} |`),
    '',
    addedP99('direct'),
    addedP99('Node relay'),
    metricsCost(rows),
    `p99 of each run at ${RATE} rps: ${atRate.map((r) => `${r.case} ${(r as Row & { p99s: number[] }).p99s.join(' / ')}`).join('; ')}`,
    '',
    '| case | RSS at start | RSS with 1,000 open downstream connections (fresh process) | RSS after the load runs |',
    '|---|---:|---:|---:|',
    ...idle,
    ...(skipHaproxy ? ['', skipHaproxy] : []),
    '',
  ].join('\n');
  mkdirSync(results, { recursive: true });
  writeFileSync(join(results, 'report.md'), table);
  writeFileSync(join(results, 'chart.svg'), chart(rows));
  process.stdout.write(`${table}\nwritten: bench/results/report.md, bench/results/chart.svg\n`);
  if (process.env.BENCH_SCALE !== '0') {
    // The memory and control-plane rows: idle RSS, a 1,000-service mesh over SotW and delta, Sidecar
    // scoping, on this node and Node 24 side by side (bench/xds-scale.ts; BENCH_SCALE=0 skips it).
    const scale = await runScale();
    writeFileSync(join(results, 'xds-scale.md'), scale.table);
    writeFileSync(join(results, 'xds-scale-rss.svg'), scale.chart);
    process.stdout.write(`\n${scale.table}\nwritten: bench/results/xds-scale.md, bench/results/xds-scale-rss.svg\n`);
  }
}

await main();
