/**
 * `npm run bench:hostile`: the shapes of issue 13's table against one sidecar (a Bolt listener that sniffs,
 * a Bolt listener that allows large frames) while a good client calls through it and admin is polled:
 * slow callers (silent, one byte, a partial header, slowloris), partial 15 MiB Bolt bodies, callers that
 * never read, a flood of bad frames, and thousands of silent connections. Prints a markdown table, with
 * the sidecar's RSS at baseline, at its peak and a while after the burst.
 *
 * Scaled by env so it fits a small machine: HOSTILE_SLOW (connections per slow shape, 25),
 * HOSTILE_PARTIAL (40) and HOSTILE_BODY_MIB (15), HOSTILE_NONREADING (10), HOSTILE_BAD (20000),
 * HOSTILE_SILENT (10000), HOSTILE_SETTLE_S (60); timers HOSTILE_SNIFF_MS (5000), HOSTILE_FRAME_MS (3000),
 * HOSTILE_IDLE_MS (4000); HOSTILE_BUDGET_MIB (64).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { boltCodec } from '../protocols/bolt/index.js';
import { CodecError, NEED_MORE } from '../protocols/codec.js';
import { sidecarMain, templates } from './fixtures.js';

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const SLOW = env('HOSTILE_SLOW', 25);
const PARTIAL = env('HOSTILE_PARTIAL', 40);
const BODY_MIB = env('HOSTILE_BODY_MIB', 15);
const NONREADING = env('HOSTILE_NONREADING', 10);
const BAD = env('HOSTILE_BAD', 20_000);
const SILENT = env('HOSTILE_SILENT', 10_000);
const SETTLE_S = env('HOSTILE_SETTLE_S', 60);
// Long enough that a client of this very process, busy queueing megabytes, is not taken for a silent one.
const SNIFF_MS = env('HOSTILE_SNIFF_MS', 5000);
const FRAME_MS = env('HOSTILE_FRAME_MS', 3000);
const IDLE_MS = env('HOSTILE_IDLE_MS', 4000);
const BUDGET = env('HOSTILE_BUDGET_MIB', 64) * 1024 * 1024;
const MIB = 1024 * 1024;
/** The build this bench belongs to (run another build's bench/hostile.js to measure that build). */
const dist = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { request } = templates('bolt');

interface Started {
  child: ChildProcess;
  first: Record<string, unknown>;
  lines: string[];
}

function start(cmd: string, args: string[], ready: (o: Record<string, unknown>) => boolean): Promise<Started> {
  // stdin stays open: the test peers exit when it closes.
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  return new Promise((res, rej) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      lines.push(l);
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        if (ready(o)) res({ child, first: o, lines });
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (code) => rej(new Error(`${cmd} exited ${code}`)));
  });
}

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** A Bolt v1 request declaring `extra` more body bytes than it carries, and all of them but the last. */
function partialRequest(extra: number): Buffer {
  const declared = Buffer.from(request);
  declared.writeInt32BE(declared.readInt32BE(18) + extra, 18);
  return Buffer.concat([declared, Buffer.alloc(extra - 1)]);
}

// sofa-rpc-node's own encoder, so the echo requests are exactly what a real client sends.
const bolt = createRequire(import.meta.url)('sofa-bolt-node/lib/protocol') as { requestEncode(id: number, req: object, options: object): Buffer };
const SERVICE = 'com.nodejs.test.TestService:1.0';

/** `n` echo calls of a 16 KiB string, ids 1..n: the provider answers each with as much. */
function echoRequests(n: number): Buffer {
  const one = bolt.requestEncode(1, { serverSignature: SERVICE, methodName: 'echo', args: [{ $class: 'java.lang.String', $: 'x'.repeat(16 * 1024) }], requestProps: { service: SERVICE }, timeout: 60_000 }, { protocolType: 'bolt', codecType: 'hessian2', boltVersion: 1, crcEnable: false });
  const all = Buffer.alloc(one.length * n);
  for (let i = 0; i < n; i++) {
    one.copy(all, i * one.length);
    boltCodec.setRequestId(all.subarray(i * one.length, (i + 1) * one.length), i + 1);
  }
  return all;
}

/** Looks like Bolt to the sniffer, then declares a negative class length: malformed. */
function badFrame(): Buffer {
  const b = Buffer.from(request);
  b.writeInt16BE(-1, 14);
  return b;
}

function opened(host: string, port: number): Promise<{ sock: Socket; closedAt: Promise<number> }> {
  const sock = connect({ host, port });
  sock.on('error', () => undefined);
  const started = Date.now();
  const closedAt = new Promise<number>((r) => sock.once('close', () => r(Date.now() - started)));
  return new Promise((r, rej) => {
    sock.once('connect', () => r({ sock, closedAt }));
    sock.once('error', rej);
  });
}

/** One connection, one request at a time, for as long as `running()`: counts answers and failures. */
class GoodClient {
  ok = 0;
  failed = 0;
  private sock: Socket | undefined;
  private stopped = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  async run(): Promise<void> {
    let id = 1;
    while (!this.stopped) {
      try {
        if (!this.sock || this.sock.destroyed) this.sock = (await opened(this.host, this.port)).sock;
        const r = await this.call(this.sock, id++);
        if (r) this.ok++;
        else this.failed++;
      } catch {
        this.failed++;
        this.sock?.destroy();
        this.sock = undefined;
        await sleep(50);
      }
      await sleep(5);
    }
    this.sock?.destroy();
  }

  private call(sock: Socket, id: number): Promise<boolean> {
    const req = Buffer.from(request);
    boltCodec.setRequestId(req, id);
    return new Promise((res, rej) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => done(new Error('timeout')), 5000);
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const f = boltCodec.decode(buf, 1 << 24);
        if (f === NEED_MORE) return;
        done(undefined, !(f instanceof CodecError) && f.ok && Number(f.requestId) === id);
      };
      const onClose = () => done(new Error('closed'));
      const done = (err?: Error, ok = false) => {
        clearTimeout(timer);
        sock.off('data', onData);
        sock.off('close', onClose);
        if (err) rej(err);
        else res(ok);
      };
      sock.on('data', onData);
      sock.once('close', onClose);
      sock.write(req);
    });
  }

  stop(): void {
    this.stopped = true;
  }
}

async function main(): Promise<void> {
  const responder = await start(process.execPath, [join(dist, 'bench/responder.js'), '0'], (o) => o.ready === true);
  const rPort = (responder.first.ports as number[])[0]!;
  const provider = await start(process.execPath, [join(dist, 'test/peers/bolt-server.js'), '--name', 'P'], (o) => o.ready === true);
  const echoCluster = { name: 'echo', type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: 'echo', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: provider.first.port } } } }] }] } };
  const cluster = { name: 'r', type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: 'r', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: rPort } } } }] }] } };
  const xp = (extra: object) => ({ name: 'x', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'x', cluster: 'r', ...extra } });
  const listener = (name: string, filter: object, extra: object = {}) => ({ name, address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [filter] }], ...extra });
  const cfg = {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    layered_runtime: { layers: [{ name: 'static', static_layer: { 'xsidecar.sniff_timeout_ms': SNIFF_MS, 'xsidecar.frame_timeout_ms': FRAME_MS, 'xsidecar.buffer_budget_bytes': BUDGET } }] },
    static_resources: {
      clusters: [cluster, echoCluster],
      listeners: [
        listener('rpc', xp({ idle_timeout: `${IDLE_MS / 1000}s` })),
        listener('echo', xp({ cluster: 'echo', idle_timeout: `${IDLE_MS / 1000}s` })),
        // The issue's 15 MiB bodies need a listener that allows them: then only the budget holds them back.
        listener('big', xp({ protocol: 'bolt', max_frame_bytes: 32 * MIB, frame_timeout: '0s' }), { per_connection_buffer_limit_bytes: 32 * MIB }),
      ],
    },
  };
  const file = join(tmpdir(), 'xsidecar-bench-hostile.json');
  writeFileSync(file, JSON.stringify(cfg));
  const sc = await start(process.execPath, [sidecarMain, 'run', '-c', file, '--health-port', '0', '--prometheus-port', '0'], (o) => o.msg === 'xsidecar started');
  const pid = sc.child.pid!;
  const admin = sc.first.admin as string;
  const prom = (sc.first.prometheus as string).replace('0.0.0.0', '127.0.0.1');
  const addr = (name: string) => {
    const a = (sc.first.listeners as { name: string; address: string }[]).find((l) => l.name === name)!.address.split(':');
    return { host: a[0]!, port: Number(a[1]) };
  };
  const metric = async (name: string, labels = '') => {
    const text = await (await fetch(`http://${prom}/stats/prometheus`)).text();
    let sum = 0;
    for (const line of text.split('\n')) if (line.startsWith(name) && (line[name.length] === '{' || line[name.length] === ' ') && labels.split(',').every((l) => line.includes(l))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    return sum;
  };
  const rpc = addr('rpc');
  // The good client and the admin poller run in a process of their own, so the attack's own work (this
  // process writes hundreds of MiB) cannot be mistaken for the sidecar's.
  const goodProc = await start(process.execPath, [process.argv[1]!, '--good', `${rpc.host}:${rpc.port}`, admin], (o) => 'ok' in o);
  const good = { ok: 0, failed: 0 };
  let adminOk = 0;
  let adminFailed = 0;
  createInterface({ input: goodProc.child.stdout! }).on('line', (l) => {
    try {
      const o = JSON.parse(l) as { ok: number; failed: number; adminOk: number; adminFailed: number };
      [good.ok, good.failed, adminOk, adminFailed] = [o.ok, o.failed, o.adminOk, o.adminFailed];
    } catch {
      /* not a count */
    }
  });
  let peakRss = 0;
  let peakFds = 0;
  let sampling = true;
  await sleep(2000);
  const baseline = rssMiB(pid);
  const sampler = (async () => {
    while (sampling) {
      peakRss = Math.max(peakRss, rssMiB(pid));
      peakFds = Math.max(peakFds, fds(pid));
      await sleep(100);
    }
  })();
  const rows: string[][] = [];
  const phase = async (name: string, body: () => Promise<string>) => {
    const [ok0, failed0] = [good.ok, good.failed];
    const [aOk0, aFail0] = [adminOk, adminFailed];
    const peak0 = peakRss;
    peakRss = 0;
    const t0 = Date.now();
    const seen = await body();
    rows.push([name, seen, `${good.ok - ok0} / ${good.failed - failed0}`, `${adminOk - aOk0} / ${adminFailed - aFail0}`, `${peakRss.toFixed(0)}`, `${((Date.now() - t0) / 1000).toFixed(1)}`]);
    peakRss = Math.max(peakRss, peak0);
    process.stderr.write(`${rows.at(-1)!.join(' | ')}\n`);
    if (process.env.HOSTILE_DEBUG) {
      process.stderr.write(`  closed by reason: ${(await (await fetch(`http://${prom}/stats/prometheus`)).text()).split('\n').filter((l) => l.startsWith('xsidecar_downstream_cx_closed_total')).join('; ')}\n`);
    }
  };
  const closedWithin = async (conns: { closedAt: Promise<number> }[], limitMs: number) => {
    const times = await Promise.all(conns.map((c) => Promise.race([c.closedAt, sleep(limitMs).then(() => Infinity)])));
    const closed = times.filter((x) => x < Infinity);
    return `${closed.length} of ${conns.length} closed, the last after ${Math.max(0, ...closed)} ms`;
  };

  await phase(`${SLOW} silent, ${SLOW} one-byte (sniff ${SNIFF_MS} ms)`, async () => {
    const silent = await Promise.all(Array.from({ length: SLOW }, () => opened(rpc.host, rpc.port)));
    const one = await Promise.all(Array.from({ length: SLOW }, () => opened(rpc.host, rpc.port)));
    for (const c of one) c.sock.write(Buffer.from([1]));
    return closedWithin([...silent, ...one], SNIFF_MS + 10_000);
  });
  await phase(`${SLOW} 10-header-byte, ${SLOW} slowloris 1 byte/s (frame ${FRAME_MS} ms)`, async () => {
    const header = await Promise.all(Array.from({ length: SLOW }, () => opened(rpc.host, rpc.port)));
    for (const c of header) c.sock.write(request.subarray(0, 10));
    const loris = await Promise.all(Array.from({ length: SLOW }, () => opened(rpc.host, rpc.port)));
    let i = 0;
    const drip = setInterval(() => {
      for (const c of loris) if (!c.sock.destroyed) c.sock.write(request.subarray(i, i + 1));
      i++;
    }, 1000);
    const r = await closedWithin([...header, ...loris], SNIFF_MS + FRAME_MS + 10_000);
    clearInterval(drip);
    return r;
  });
  await phase(`${PARTIAL} × ${BODY_MIB} MiB partial Bolt bodies, default listener (1 MiB limit)`, async () => {
    const payload = partialRequest(BODY_MIB * MIB);
    const conns = await Promise.all(Array.from({ length: PARTIAL }, () => opened(rpc.host, rpc.port).then((c) => (c.sock.write(payload), c))));
    const closed = await closedWithin(conns, 15_000);
    return `${await metric('xsidecar_rpc_codec_errors_total', 'reason="too-large"')} refused with a Bolt too-large error at the header; ${closed}`;
  });
  await phase(`${PARTIAL} × ${BODY_MIB} MiB partial Bolt bodies, listener allowing 32 MiB (budget ${BUDGET / MIB} MiB)`, async () => {
    const big = addr('big');
    const payload = partialRequest(BODY_MIB * MIB);
    const conns = await Promise.all(Array.from({ length: PARTIAL }, () => opened(big.host, big.port).then((c) => (c.sock.write(payload), c))));
    let peakHeld = 0;
    for (let i = 0; i < 30; i++) {
      peakHeld = Math.max(peakHeld, await metric('xsidecar_overload_buffered_bytes'));
      await sleep(200);
    }
    const closed = await metric('xsidecar_downstream_cx_closed_total', 'reason="buffer_budget"');
    for (const c of conns) c.sock.destroy();
    return `${closed} closed by the budget; held at most ${(peakHeld / MIB).toFixed(1)} MiB at a sweep`;
  });
  await phase(`${NONREADING} clients sending 16 KiB echo calls, never reading`, async () => {
    const at = addr('echo');
    const conns = await Promise.all(Array.from({ length: NONREADING }, () => opened(at.host, at.port)));
    const N = 2000;
    const calls = echoRequests(N);
    for (const c of conns) {
      c.sock.pause();
      c.sock.write(calls);
    }
    let held = 0;
    for (let i = 0; i < 15; i++) {
      await sleep(200);
      held = Math.max(held, await metric('xsidecar_overload_buffered_bytes'));
    }
    const forwarded = await metric('xsidecar_cluster_upstream_rq_total', 'cluster="echo"');
    // A paused socket does not notice its peer closing, so the sidecar's count says when they went.
    const deadline = Date.now() + IDLE_MS + 60_000; // the provider answers what is in flight first
    let idled = 0;
    while (Date.now() < deadline && (idled = await metric('xsidecar_downstream_cx_closed_total', 'listener="echo",reason="idle_timeout"')) < NONREADING) await sleep(200);
    for (const c of conns) c.sock.destroy();
    if (process.env.HOSTILE_DEBUG) console.error(await (await fetch(`http://${prom}/stats/prometheus`)).text().then((t) => t.split('\n').filter((l) => (l.includes('closed_total') || l.includes('eventloop_lag_max') || l.includes('lag_p99')) && !l.startsWith('#')).join('\n')));
    return `forwarded ${forwarded} of ${N * NONREADING} calls, then stopped reading them; at most ${(held / MIB).toFixed(1)} MiB held; ${idled} of ${NONREADING} closed by the idle timeout (${IDLE_MS} ms)`;
  });
  await phase(`${BAD} bad frames, one per connection`, async () => {
    const linesBefore = sc.lines.length;
    const bad = badFrame();
    let next = 0;
    const worker = async () => {
      while (next < BAD) {
        next++;
        try {
          const c = await opened(rpc.host, rpc.port);
          c.sock.end(bad);
          await Promise.race([c.closedAt, sleep(5000)]);
          c.sock.destroy();
        } catch {
          /* refused: counted by the sidecar */
        }
      }
    };
    await Promise.all(Array.from({ length: 100 }, worker));
    await sleep(11_000); // the throttle's summary lines come at the end of their window
    const warned = sc.lines.slice(linesBefore).filter((l) => l.includes('bad frame')).length;
    return `${await metric('xsidecar_rpc_codec_errors_total', 'direction="downstream"')} counted; ${warned} log lines`;
  });
  await phase(`${SILENT} silent connections`, async () => {
    const conns: { sock: Socket; closedAt: Promise<number> }[] = [];
    for (let i = 0; i < SILENT; i += 200) {
      const batch = await Promise.allSettled(Array.from({ length: Math.min(200, SILENT - i) }, () => opened(rpc.host, rpc.port)));
      for (const b of batch) if (b.status === 'fulfilled') conns.push(b.value);
    }
    await sleep(1000);
    const fresh = new GoodClient(rpc.host, rpc.port);
    const freshRun = fresh.run();
    await sleep(3000);
    fresh.stop();
    await freshRun;
    const [evicted, refused, timedOut] = [await metric('xsidecar_downstream_cx_closed_total', 'reason="evicted"'), await metric('xsidecar_overload_refused_total'), await metric('xsidecar_downstream_cx_closed_total', 'reason="sniff_timeout"')];
    const fdsNow = peakFds;
    const closed = await closedWithin(conns, SNIFF_MS + 15_000);
    return `${conns.length} opened; ${closed}; evicted ${evicted}, refused ${refused}, sniff timeouts ${timedOut} (all phases); peak fds ${fdsNow}; a new caller meanwhile: ${fresh.ok} ok / ${fresh.failed} failed`;
  });
  sampling = false;
  await sampler;
  goodProc.child.kill('SIGKILL');
  const peak = peakRss;
  await sleep(SETTLE_S * 1000);
  const after = rssMiB(pid);
  const heap = ((await metric('xsidecar_process_nodejs_heap_size_used_bytes')) / MIB).toFixed(1);
  const external = ((await metric('xsidecar_process_nodejs_external_memory_bytes')) / MIB).toFixed(1);
  const left = await metric('xsidecar_overload_downstream_cx_active');
  sc.child.kill('SIGKILL');
  responder.child.kill('SIGKILL');
  provider.child.kill('SIGKILL');
  const out = [
    `# xsidecar under hostile callers (${new Date().toISOString()}, node ${process.version})`,
    '',
    `Timers: sniff ${SNIFF_MS} ms, frame ${FRAME_MS} ms, idle ${IDLE_MS} ms; buffer budget ${BUDGET / MIB} MiB; per-connection limit 1 MiB ("big": 32 MiB).`,
    '',
    '| probe | seen | good client ok / failed | admin /ready ok / failed | peak RSS MiB | s |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    `RSS: baseline ${baseline.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB, ${SETTLE_S} s after the burst ${after.toFixed(0)} MiB (V8 heap used ${heap} MiB, external ${external} MiB; ${left} downstream connections still counted).`,
  ].join('\n');
  console.log(out);
  process.exit(0);
}

/** `--good HOST:PORT ADMIN`: calls and polls /ready until killed, printing the counts every 200 ms. */
async function goodMode(target: string, admin: string): Promise<void> {
  const [host, port] = target.split(':');
  const good = new GoodClient(host!, Number(port));
  void good.run();
  let adminOk = 0;
  let adminFailed = 0;
  setInterval(() => console.log(JSON.stringify({ ok: good.ok, failed: good.failed, adminOk, adminFailed })), 200);
  for (;;) {
    try {
      const r = await fetch(`http://${admin}/ready`, { signal: AbortSignal.timeout(2000) });
      if (r.ok) adminOk++;
      else adminFailed++;
    } catch {
      adminFailed++;
    }
    await sleep(200);
  }
}

if (process.argv[2] === '--good') await goodMode(process.argv[3]!, process.argv[4]!);
else await main();
