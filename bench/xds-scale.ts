/**
 * xDS at mesh scale: an Istio-shaped config of 1,000 services (2,000 clusters: each service's default
 * cluster and a v1 subset; 10,000 endpoints; a per-port HTTP listener whose RouteConfiguration lists the
 * HTTP half of the services by FQDN, short names and ClusterIP; one ClusterIP tcp_proxy listener per TCP
 * service), served by the test ADS server to a real sidecar process, both in their own processes.
 *
 * Measures: time from the sidecar's first xDS response to the first complete config applied (the
 * sidecar logs it), RSS and heap then, and both again after 100 successive full pushes in which every
 * resource changed (the worst case: nothing can be reused) — each push paced by the sidecar's ACKs.
 *
 *   node dist/bench/xds-scale.js [--services 1000] [--pushes 100]
 * Prints a Markdown table and writes it to bench/results/xds-scale-<time>.md.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { fixture, repoRoot } from './fixtures.js';

const { values } = parseArgs({ options: { services: { type: 'string', default: '1000' }, pushes: { type: 'string', default: '100' } } });
const SERVICES = Number(values.services);
const PUSHES = Number(values.pushes);
const ENDPOINTS_PER_CLUSTER = 5;

type Json = Record<string, unknown>;
const dsb = (f: string) => JSON.parse(readFileSync(fixture('istio/istio-1.18-sidecar-deathstarbench', f), 'utf8')) as Json;
const clone = <T>(v: T): T => structuredClone(v);

// Real istiod resources as templates, so sizes and shapes (metadata, TLS matches, filters) are Istio's.
const T = {
  cluster: dsb('cluster_outbound_9080_reviews.json'),
  cla: dsb('cla_outbound_9080_reviews.json'),
  tcpListener: dsb('listener_10.68.54.170_27017_tcp.json'),
  httpListener: dsb('listener_0.0.0.0_9080_http.json'),
  route: dsb('route_9080.json'),
};

const ip = (i: number, base: number) => `10.${base}.${Math.floor(i / 250)}.${(i % 250) + 1}`;

/** Every resource of the mesh; `round` changes something in each one, so a push re-sends all of it changed. */
function generate(round: number, ports: { outbound: number; inbound: number }): Json[] {
  const out: Json[] = [];
  for (const f of ['cluster_PassthroughCluster.json', 'cluster_BlackHoleCluster.json', 'cluster_InboundPassthroughClusterIpv4.json']) out.push(dsb(f));
  const vhosts: Json[] = [];
  for (let s = 0; s < SERVICES; s++) {
    const http = s % 2 === 0;
    const port = http ? 8080 : 9000;
    const fqdn = `svc-${s}.ns-${s % 20}.svc.cluster.local`;
    const clusterIp = ip(s, 96);
    for (const subset of ['', 'v1']) {
      const name = `outbound|${port}|${subset}|${fqdn}`;
      const c = clone(T.cluster);
      c.name = name;
      (c.eds_cluster_config as Json).service_name = name;
      c.connect_timeout = `${10 + (round % 2)}s`;
      (((c.metadata as Json).filter_metadata as Json).istio as Json).services = [{ host: fqdn, name: `svc-${s}`, namespace: `ns-${s % 20}` }];
      out.push(c);
      const cla = clone(T.cla);
      cla.cluster_name = name;
      const lbTemplate = ((cla.endpoints as Json[])[0]!.lb_endpoints as Json[])[0]!;
      (cla.endpoints as Json[])[0]!.lb_endpoints = Array.from({ length: ENDPOINTS_PER_CLUSTER }, (_, e) => {
        const lb = clone(lbTemplate);
        ((lb.endpoint as Json).address as Json).socket_address = { address: ip(s * ENDPOINTS_PER_CLUSTER + e, 244), port_value: port };
        lb.load_balancing_weight = 1 + (round % 2);
        return lb;
      });
      out.push(cla);
    }
    const def = `outbound|${port}||${fqdn}`;
    if (http) {
      const vh = clone((T.route.virtual_hosts as Json[])[0]!);
      vh.name = `${fqdn}:${port}`;
      vh.domains = [fqdn, `svc-${s}`, `svc-${s}.ns-${s % 20}`, `svc-${s}.ns-${s % 20}.svc`, clusterIp];
      const r = (vh.routes as Json[])[0]!;
      (r.route as Json).cluster = def;
      (r.route as Json).timeout = `${round % 2}s`;
      vhosts.push(vh);
    } else {
      const l = clone(T.tcpListener);
      l.name = `${clusterIp}_${port}`;
      l.address = { socket_address: { address: clusterIp, port_value: port } };
      const tp = ((l.filter_chains as Json[])[0]!.filters as Json[])[1]!.typed_config as Json;
      tp.cluster = def;
      tp.stat_prefix = `${def}#${round % 2}`;
      out.push(l);
    }
  }
  const allowAny = (T.route.virtual_hosts as Json[]).find((v) => (v.domains as string[]).includes('*'));
  out.push({ ...clone(T.route), name: '8080', virtual_hosts: [...vhosts, ...(allowAny ? [clone(allowAny)] : [])] });
  const http = clone(T.httpListener);
  http.name = '0.0.0.0_8080';
  http.address = { socket_address: { address: '0.0.0.0', port_value: 8080 } };
  const hcm = (((http.filter_chains as Json[])[0]!.filters as Json[]).find((f) => String(f.name).includes('http_connection_manager'))!.typed_config as Json);
  (hcm.rds as Json).route_config_name = '8080';
  hcm.stat_prefix = `outbound_0.0.0.0_8080#${round % 2}`;
  out.push(http);
  const vo = dsb('listener_virtualOutbound.json');
  (vo.address as Json).socket_address = { address: '127.0.0.1', port_value: ports.outbound };
  out.push(vo);
  const vi = JSON.parse(readFileSync(fixture('istio/istio-repo-authz-configdump/listener_virtualInbound.json'), 'utf8')) as Json;
  (vi.address as Json).socket_address = { address: '127.0.0.1', port_value: ports.inbound };
  out.push(vi);
  return out;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

interface Proc {
  lines: Json[];
  child: ReturnType<typeof spawn>;
  wait(pred: (o: Json) => boolean, from?: number, timeoutMs?: number): Promise<Json>;
}

function start(args: string[], label: string): Proc {
  const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, XSIDECAR_LOG_LEVEL: 'info' } });
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

async function main(): Promise<void> {
  const ports = { outbound: await freePort(), inbound: await freePort() };
  const dir = join(tmpdir(), `xsidecar-xds-scale-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const files = [0, 1].map((round) => {
    const f = join(dir, `round-${round}.json`);
    writeFileSync(f, JSON.stringify({ version: 'r0', resources: generate(round, ports) }));
    return f;
  });
  const resources = JSON.parse(readFileSync(files[0]!, 'utf8')) as { resources: Json[] };
  const count = (type: string) => resources.resources.filter((r) => String(r['@type']).endsWith(type)).length;
  const clusters = count('.Cluster');
  const endpoints = resources.resources.filter((r) => String(r['@type']).endsWith('ClusterLoadAssignment')).reduce((n, c) => n + ((c.endpoints as Json[])[0]!.lb_endpoints as Json[]).length, 0);

  const server = start([join(repoRoot, 'dist/test/peers/ads-server.js'), '--resources', files[0]!, '--port', '0'], 'ads-server');
  const listening = await server.wait((o) => o.event === 'listening');
  const bootstrap = {
    node: { id: 'sidecar~10.1.0.1~bench-0.default~default.svc.cluster.local', cluster: 'bench.default', metadata: { ISTIO_VERSION: '1.18.2' } },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    dynamic_resources: {
      lds_config: { ads: {}, initial_fetch_timeout: '0s' },
      cds_config: { ads: {}, initial_fetch_timeout: '0s' },
      ads_config: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'xds-grpc' } }] },
    },
    static_resources: {
      clusters: [{ name: 'xds-grpc', type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: 'xds-grpc', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: listening.port } } } }] }] } }],
    },
  };
  const bootFile = join(dir, 'bootstrap.json');
  writeFileSync(bootFile, JSON.stringify(bootstrap));
  // A heap snapshot starts with a full GC: SIGUSR2 gives the live heap without changing the sidecar's code.
  // It also inflates RSS, so it is taken only at the end of a sidecar's life.
  const diag = join(dir, 'diag');
  mkdirSync(diag, { recursive: true });
  const startSidecar = async () => {
    const proc = start([`--heapsnapshot-signal=SIGUSR2`, `--diagnostic-dir=${diag}`, join(repoRoot, 'dist/src/cli/main.js'), 'run', '-c', bootFile, '--health-port', '0', '--prometheus-port', '0'], 'sidecar');
    const started = await proc.wait((o) => o.msg === 'xsidecar started');
    const ready = await proc.wait((o) => o.msg === 'xds: first complete config applied' && o.component === 'xds');
    return { proc, admin: String(started.admin), readyMs: Number(ready.sinceFirstResponseMs) };
  };
  const liveHeap = async (sc: { proc: Proc; admin: string }): Promise<number> => {
    sc.proc.child.kill('SIGUSR2');
    let size = -1;
    for (;;) {
      await sleep(500);
      const f = readdirSync(diag).find((n) => n.endsWith('.heapsnapshot'));
      if (!f) continue;
      const now = statSync(join(diag, f)).size;
      if (now === size && now > 0) break;
      size = now;
    }
    const heap = mib((await serverInfo(sc.admin)).memory.heap_used);
    for (const f of readdirSync(diag)) rmSync(join(diag, f));
    return heap;
  };
  const sc = await startSidecar();
  const { proc: sidecar, admin } = sc;
  await sleep(1000);
  const rssReady = rssMiB(sidecar.child.pid!);
  const heapReady = mib((await serverInfo(admin)).memory.heap_used);
  const pushBytes = server.lines.filter((o) => o.event === 'response' && o.stream === 1).reduce((n, o) => n + Number(o.bytes ?? 0), 0);

  const ackTimes: number[] = [];
  const clientTimes: number[] = [];
  const rssAt = new Map<number, number>();
  const types = ['cluster', 'endpoint', 'listener', 'route'];
  for (let i = 1; i <= PUSHES; i++) {
    const version = `r${i}`;
    const from = server.lines.length;
    const t0 = performance.now();
    server.child.stdin!.write(`${JSON.stringify({ cmd: 'set', file: files[i % 2], version })}\n`);
    const acked = new Set<string>();
    await server.wait((o) => {
      if (o.event === 'request' && o.version === version && (o.kind === 'ack' || o.kind === 'nack')) {
        if (o.kind === 'nack') throw new Error(`push ${i} NACKed: ${JSON.stringify(o.error_detail)}`);
        acked.add(String(o.type));
      }
      return types.every((t) => acked.has(t));
    }, from);
    ackTimes.push(performance.now() - t0);
    const firstResponse = server.lines.slice(from).find((o) => o.event === 'response' && o.version === version);
    const lastAck = server.lines.slice(from).filter((o) => o.event === 'request' && o.version === version && o.kind === 'ack').at(-1);
    if (firstResponse && lastAck) clientTimes.push(Number(lastAck.at) - Number(firstResponse.at));
    if (i === 10 || i === PUSHES / 2) rssAt.set(i, rssMiB(sidecar.child.pid!));
  }
  await sleep(3000);
  const rssAfter = rssMiB(sidecar.child.pid!);
  const heapAfter = mib((await serverInfo(admin)).memory.heap_used);
  const info = (await (await fetch(`http://${admin}/config_dump`)).json()) as { configs: Json[] };
  const finalVersion = info.configs.find((c) => String(c['@type']).endsWith('ClustersConfigDump'))!.version_info;
  const liveAfter = await liveHeap(sc);
  sidecar.child.kill('SIGKILL');
  await new Promise((r) => sidecar.child.once('exit', r));
  // The baseline: a fresh sidecar given the same amount of config (the last push's), never pushed since.
  const fresh = await startSidecar();
  await sleep(1000);
  const liveFresh = await liveHeap(fresh);
  fresh.proc.child.kill('SIGKILL');
  server.child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });

  const fmt = (n: number, d = 1) => n.toFixed(d);
  const rows = [
    ['services / clusters / endpoints', `${SERVICES} / ${clusters} / ${endpoints}`],
    ['listeners / virtual hosts', `${count('.Listener')} / ${SERVICES / 2 + 1}`],
    ['size of the initial push (resource bytes)', `${fmt(mib(pushBytes))} MiB`],
    ['first xDS response → first complete config applied', `${sc.readyMs} ms (a second sidecar: ${fresh.readyMs} ms)`],
    ['RSS at ready (1 s after)', `${fmt(rssReady)} MiB`],
    ['V8 heap used at ready', `${fmt(heapReady)} MiB`],
    [`${PUSHES} full pushes, every resource changed: first response → fourth ACK (sidecar's work), median`, `${fmt(median(clientTimes), 0)} ms`],
    ['the same, from the push command (includes the test server re-encoding everything), median', `${fmt(median(ackTimes), 0)} ms`],
    ['RSS after the pushes (3 s after the last)', `${fmt(rssAfter)} MiB`],
    ['RSS growth, ready → end', `${fmt(rssAfter - rssReady)} MiB`],
    ...[...rssAt].map(([n, v]) => [`RSS after push ${n}`, `${fmt(v)} MiB`]),
    ...(rssAt.has(10) ? [['RSS growth, push 10 → end (steady state)', `${fmt(rssAfter - rssAt.get(10)!)} MiB`]] : []),
    ['V8 heap used after the pushes', `${fmt(heapAfter)} MiB (growth ${fmt(heapAfter - heapReady)} MiB, garbage included)`],
    ['live heap after a full GC: fresh sidecar with the same config → after the pushes', `${fmt(liveFresh)} → ${fmt(liveAfter)} MiB (growth ${fmt(liveAfter - liveFresh)} MiB)`],
    ['config in force at the end', String(finalVersion)],
  ];
  const table = [
    `## xDS scale — ${new Date().toISOString()}`,
    '',
    `\`node dist/bench/xds-scale.js --services ${SERVICES} --pushes ${PUSHES}\` · Node ${process.version}`,
    '',
    '| measure | value |',
    '|---|---|',
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
    '',
  ].join('\n');
  process.stdout.write(`${table}\n`);
  const resultsDir = join(repoRoot, 'bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const out = join(resultsDir, `xds-scale-${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
  writeFileSync(out, table);
  process.stdout.write(`written to ${out}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`xds-scale: ${e.stack}\n`);
  process.exit(1);
});
