/**
 * `npm run bench:dns`: the DNS proxy answering local names, side by side in one run with Debian's unbound
 * (one thread) serving the same names as local-data, both driven by Debian's dnsperf over UDP:
 *   - throughput: dnsperf with 100 queries outstanding for BENCH_SECONDS;
 *   - latency at a fixed rate (BENCH_DNS_RATE, 10,000 queries/s): p50/p99/p999 from dnsperf -v;
 *   - the server process's CPU time per query (utime + stime from /proc/<pid>/stat over the run).
 * Beside them, the proxy with UDP read on the main thread only (--dns-udp-worker off; the default moves it
 * to a worker thread under load) and bench/dns-floor.ts: a bare Node dgram responder, the floor for any
 * DNS server reading on Node's event loop.
 * Each case runs BENCH_ROUNDS times (default 5), the servers taking turns; the report gives medians.
 * dnsperf and unbound are installed with apt-get when missing and root. Writes bench/results/dns.md.
 * `--main PATH` (repeatable) adds another build's entry point (dist/bundle/main.js; before the bundle, dist/src/cli/main.js) as a server, for A/B runs in one invocation.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { repoRoot, sidecarMain } from './fixtures.js';
import { freePort } from '../test/helpers/sidecar.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const RATE = Number(process.env.BENCH_DNS_RATE ?? 10_000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
const NAMES = 1000;
const CLK_TCK = 100;

function ensure(tool: string, pkg: string): void {
  if (!spawnSync(tool, ['-h'], { stdio: 'ignore' }).error) return;
  if (process.getuid?.() !== 0) throw new Error(`${tool} is not installed (Debian package ${pkg}) and installing it needs root`);
  console.error(`installing ${pkg} (Debian package)…`);
  spawnSync('sh', ['-c', `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${pkg}`], { stdio: 'inherit' });
  if (spawnSync(tool, ['-h'], { stdio: 'ignore' }).error) throw new Error(`${tool} could not be installed`);
}

const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
};

function waitLine(child: ChildProcess, stream: 'stdout' | 'stderr', pred: (l: string) => boolean, what: string): Promise<void> {
  return new Promise((res, rej) => {
    const rl = createInterface({ input: child[stream]! });
    rl.on('line', (l) => pred(l) && res());
    child.once('exit', (code) => rej(new Error(`${what} exited ${code}`)));
  });
}

interface Server {
  name: string;
  pid: number;
  port: number;
  stop(): void;
  /** xsidecar: its log lines about moving UDP reading between threads. */
  moves?: string[];
}

const names = Array.from({ length: NAMES }, (_, i) => ({ name: `com.bench.app${i % 50}.interface${i}`, ip: `10.${(i >> 8) & 255}.${i & 255}.1` }));

async function xsidecar(dir: string, main = sidecarMain, name = 'xsidecar', extra: string[] = []): Promise<Server> {
  const port = await freePort();
  const cfg = {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    static_resources: {
      listeners: [
        {
          name: 'dns',
          address: { socket_address: { protocol: 'UDP', address: '127.0.0.1', port_value: port } },
          listener_filters: [
            {
              name: 'envoy.filters.udp.dns_filter',
              typed_config: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig',
                server_config: { inline_dns_table: { virtual_domains: names.map((n) => ({ name: n.name, endpoint: { address_list: { address: [n.ip] } } })) } },
              },
            },
          ],
        },
      ],
    },
  };
  const file = join(dir, `xsidecar-${port}.json`);
  writeFileSync(file, JSON.stringify(cfg));
  const child = spawn(process.execPath, [main, 'run', '-c', file, '--health-port', '0', '--prometheus-port', '0', ...extra], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, XSIDECAR_LOG_LEVEL: 'info' } });
  await waitLine(child, 'stdout', (l) => l.includes('dns: proxy listening'), 'xsidecar');
  // The default (auto) moves UDP reading to a worker under load: say when, so the report can tell.
  const moves: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    if (l.includes('dns: UDP queries')) moves.push(l);
  });
  return { name, pid: child.pid!, port, stop: () => child.kill('SIGKILL'), moves };
}

/** bench/dns-floor.ts: Node answering with nothing but a dgram socket. */
async function nodeFloor(): Promise<Server> {
  const port = await freePort();
  const child = spawn(process.execPath, [join(repoRoot, 'dist/bench/dns-floor.js'), String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await waitLine(child, 'stdout', (l) => l.includes('dns-floor listening'), 'dns-floor');
  return { name: 'bare Node dgram responder (floor)', pid: child.pid!, port, stop: () => child.kill('SIGKILL') };
}

async function unbound(dir: string): Promise<Server> {
  const port = await freePort();
  const conf = join(dir, 'unbound.conf');
  writeFileSync(
    conf,
    [
      'server:',
      '  interface: 127.0.0.1',
      `  port: ${port}`,
      '  num-threads: 1',
      '  do-daemonize: no',
      '  do-ip6: no',
      '  chroot: ""',
      '  username: ""',
      `  directory: "${dir}"`,
      '  pidfile: ""',
      '  use-syslog: no',
      '  logfile: ""',
      '  verbosity: 1',
      '  access-control: 127.0.0.0/8 allow',
      '  module-config: "iterator"',
      ...names.map((n) => `  local-data: "${n.name}. 30 IN A ${n.ip}"`),
      '',
    ].join('\n'),
  );
  const chk = spawnSync('unbound-checkconf', [conf], { encoding: 'utf8' });
  if (chk.status !== 0) throw new Error(`unbound-checkconf: ${chk.stdout}${chk.stderr}`);
  const child = spawn('unbound', ['-d', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitLine(child, 'stderr', (l) => /start of service/.test(l), 'unbound');
  return { name: 'unbound (1 thread)', pid: child.pid!, port, stop: () => child.kill('SIGKILL') };
}

interface Run {
  qps: number;
  cpuUsPerQuery: number;
  lost: number;
  p50?: number;
  p99?: number;
  p999?: number;
}

function dnsperf(port: number, queryFile: string, extra: string[]): Promise<{ stdout: string }> {
  return new Promise((res) => {
    const child = spawn('dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', queryFile, '-l', String(SECONDS), '-T', '1', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    child.on('exit', () => res({ stdout: Buffer.concat(chunks).toString() }));
  });
}

async function measure(s: Server, queryFile: string, fixedRate: boolean): Promise<Run> {
  const before = cpuTicks(s.pid);
  const { stdout } = await dnsperf(s.port, queryFile, fixedRate ? ['-Q', String(RATE), '-q', '1000', '-v'] : ['-q', '100', '-c', '4']);
  const ticks = cpuTicks(s.pid) - before;
  const completed = Number(/Queries completed:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const lost = Number(/Queries lost:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(stdout)?.[1] ?? 0);
  const run: Run = { qps, lost, cpuUsPerQuery: completed ? ((ticks / CLK_TCK) * 1e6) / completed : NaN };
  if (fixedRate) {
    const lat = stdout
      .split('\n')
      .filter((l) => l.startsWith('> '))
      .map((l) => Number(l.trim().split(/\s+/).pop()))
      .filter((n) => Number.isFinite(n))
      .sort((a, b) => a - b);
    const at = (q: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * q))]! * 1000 : NaN);
    Object.assign(run, { p50: at(0.5), p99: at(0.99), p999: at(0.999) });
  }
  return run;
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};

async function main(): Promise<void> {
  ensure('dnsperf', 'dnsperf');
  ensure('unbound', 'unbound');
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-bench-dns-'));
  const queryFile = join(dir, 'queries.txt');
  writeFileSync(queryFile, names.map((n) => `${n.name} A`).join('\n') + '\n');
  const others = parseArgs({ options: { main: { type: 'string', multiple: true } } }).values.main ?? [];
  const servers = [await xsidecar(dir)];
  for (const m of others) servers.push(await xsidecar(dir, resolve(m), `xsidecar (${m})`));
  servers.push(await xsidecar(dir, undefined, 'xsidecar, UDP on the main thread only (--dns-udp-worker off)', ['--dns-udp-worker', 'off']));
  servers.push(await nodeFloor(), await unbound(dir));
  const stopAll = () => servers.forEach((s) => s.stop());
  process.on('exit', stopAll);
  const runs = new Map<string, { max: Run[]; fixed: Run[] }>(servers.map((s) => [s.name, { max: [], fixed: [] }]));
  try {
    // Warm-up: JIT and caches, not measured.
    for (const s of servers) await dnsperf(s.port, queryFile, ['-Q', '5000']);
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of servers) {
        runs.get(s.name)!.max.push(await measure(s, queryFile, false));
        runs.get(s.name)!.fixed.push(await measure(s, queryFile, true));
        console.error(`round ${round + 1}/${ROUNDS} ${s.name}: ${JSON.stringify(runs.get(s.name)!.max.at(-1))} ${JSON.stringify(runs.get(s.name)!.fixed.at(-1))}`);
      }
    }
  } finally {
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
  const rows = servers.map((s) => {
    const r = runs.get(s.name)!;
    return {
      name: s.name,
      qps: median(r.max.map((x) => x.qps)),
      cpuMax: median(r.max.map((x) => x.cpuUsPerQuery)),
      p50: median(r.fixed.map((x) => x.p50!)),
      p99: median(r.fixed.map((x) => x.p99!)),
      p999: median(r.fixed.map((x) => x.p999!)),
      cpuFixed: median(r.fixed.map((x) => x.cpuUsPerQuery)),
      lost: r.fixed.reduce((n, x) => n + x.lost, 0) + r.max.reduce((n, x) => n + x.lost, 0),
      p99s: r.fixed.map((x) => f(x.p99!, 2)).join(' / '),
    };
  });
  const ratio = rows[0]!.qps / rows.at(-1)!.qps;
  const report = [
    `# DNS proxy benchmark (${new Date().toISOString()}, ${SECONDS} s per run, median of ${ROUNDS} interleaved runs, node ${process.version}, ${NAMES} local names, dnsperf UDP)`,
    '',
    `| server | queries/s (100 outstanding) | CPU µs/query at max | p50 ms at ${RATE}/s | p99 ms at ${RATE}/s | p99.9 ms | each run's p99 | CPU µs/query at ${RATE}/s | lost |`,
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.name} | ${f(r.qps)} | ${f(r.cpuMax, 1)} | ${f(r.p50, 3)} | ${f(r.p99, 3)} | ${f(r.p999, 3)} | ${r.p99s} | ${f(r.cpuFixed, 1)} | ${r.lost} |`),
    '',
    `xsidecar / unbound queries/s: ${ratio.toFixed(2)}× (target ≥ 0.5×); xsidecar p99 at ${RATE}/s: ${f(rows[0]!.p99, 3)} ms (target ≤ 1 ms; a bare Node responder ${f(rows.at(-2)!.p99, 3)} ms, unbound ${f(rows.at(-1)!.p99, 3)} ms in the same run). dnsperf runs on the same machine and competes for its cores.`,
    '',
    ...servers.filter((s) => s.moves).map((s) => `${s.name}: UDP reading moved ${s.moves!.filter((l) => l.includes('worker thread')).length} time(s) to the worker thread and ${s.moves!.filter((l) => l.includes('main thread')).length} time(s) back (src/dns/udp-offload.ts).`),
    '',
  ].join('\n');
  const out = resolve(repoRoot, 'bench/results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'dns.md'), report);
  console.log(report);
}

main().catch((e: Error) => {
  console.error(`bench:dns: ${e.message}`);
  process.exit(1);
});
