/**
 * `npm run bench:soak`: SOAK_MINUTES (default 10) at a steady rate (SOAK_RATE, default 1000 requests/s over
 * 8 connections) of Bolt requests through the sidecar to two providers, one of which is killed and
 * restarted every minute, with retries on in the route (retry_on: connect-failure,reset). Reports per
 * minute: requests, failed calls (error replies, plus requests unanswered after 5 s or lost with a
 * closed connection), p50/p99, and the sidecar's RSS; writes bench/results/soak.md and soak.svg.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { NEED_MORE } from '../protocols/codec.js';
import { findCodec } from '../protocols/registry.js';
import { repoRoot, sidecarMain, templates } from './fixtures.js';

const MINUTES = Number(process.env.SOAK_MINUTES ?? 10);
const RATE = Number(process.env.SOAK_RATE ?? 1000);
const CONNS = 8;
const LOST_AFTER_MS = 5000;
const dist = resolve(repoRoot, 'dist');
const results = resolve(repoRoot, 'bench/results');
const codec = findCodec('bolt')!;
const template = templates('bolt').request;

function start(cmd: string, args: string[], ready: (o: Record<string, unknown>) => boolean): Promise<{ child: ChildProcess; first: Record<string, unknown> }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((res, rej) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        if (ready(o)) res({ child, first: o });
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (code) => rej(new Error(`${args[0]} exited ${code}`)));
  });
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

interface Minute {
  sent: number;
  ok: number;
  errors: number;
  lost: number;
  latencies: number[];
  rss: number;
}
const newMinute = (): Minute => ({ sent: 0, ok: 0, errors: 0, lost: 0, latencies: [], rss: 0 });

async function main(): Promise<void> {
  // Two providers, one process each, so either can be killed and brought back on its port.
  const providers = await Promise.all([0, 1].map(() => start(process.execPath, [join(dist, 'bench/responder.js'), '0'], (o) => o.ready === true)));
  const ports = providers.map((p) => (p.first.ports as number[])[0]!);
  const cfg = {
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } },
    static_resources: {
      listeners: [
        {
          name: 'soak',
          address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'xsidecar.filters.network.xprotocol',
                  typed_config: {
                    '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy',
                    stat_prefix: 'soak',
                    protocol: 'bolt',
                    route_config: {
                      virtual_hosts: [
                        { name: 'svc', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'providers', retry_policy: { retry_on: 'connect-failure,reset', num_retries: 3 } } }] },
                      ],
                    },
                  },
                },
              ],
            },
          ],
        },
      ],
      clusters: [
        {
          name: 'providers',
          type: 'STATIC',
          connect_timeout: '1s',
          lb_policy: 'ROUND_ROBIN',
          // What istiod sends without a DestinationRule: no practical limit. Envoy's own default of 3
          // concurrent retries would leave most of a killed provider's in-flight requests unretried.
          circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295 }] },
          load_assignment: { cluster_name: 'providers', endpoints: [{ lb_endpoints: ports.map((p) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: p } } } })) }] },
        },
      ],
    },
  };
  const file = join(tmpdir(), `xsidecar-soak-${process.pid}.json`);
  writeFileSync(file, JSON.stringify(cfg));
  const sidecar = await start(process.execPath, [sidecarMain, 'run', '-c', file, '--health-port', '0', '--prometheus-port', '0'], (o) => o.msg === 'xsidecar started');
  const target = (sidecar.first.listeners as { address: string }[])[0]!.address;
  const [host, port] = target.split(':') as [string, string];
  const pid = sidecar.child.pid!;

  const minutes: Minute[] = [];
  let cur = newMinute();
  const rssSamples: { t: number; mb: number }[] = [];
  const sent = new Map<number, { at: number; minute: Minute; conn: Socket }>();
  let nextId = 1;

  const conns: Socket[] = [];
  const openConn = (i: number) => {
    const s = connect(Number(port), host);
    s.setNoDelay(true);
    let rest: Buffer | undefined;
    s.on('data', (chunk: Buffer) => {
      let buf = rest ? Buffer.concat([rest, chunk]) : chunk;
      rest = undefined;
      const now = performance.now();
      while (buf.length > 0) {
        const f = codec.decode(buf, 1 << 24);
        if (f === NEED_MORE) {
          rest = buf;
          break;
        }
        if (f instanceof Error) return void s.destroy();
        buf = buf.subarray(f.raw.length);
        const req = sent.get(f.requestId as number);
        if (!req) continue;
        sent.delete(f.requestId as number);
        if (f.ok) {
          req.minute.ok++;
          req.minute.latencies.push(now - req.at);
        } else req.minute.errors++;
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      // What was in flight on a closed connection is lost; the caller reconnects.
      for (const [id, r] of sent) if (r.conn === s) (sent.delete(id), r.minute.lost++);
      if (!stopping) setTimeout(() => (conns[i] = openConn(i)), 100);
    });
    return s;
  };
  let stopping = false;
  for (let i = 0; i < CONNS; i++) conns.push(openConn(i));
  // The rate starts once every connection is up: a request has nowhere to go before.
  await Promise.all(conns.map((c) => (c.connecting ? new Promise((r) => c.once('connect', r)) : undefined)));

  const t0 = performance.now();
  let sentCount = 0;
  let rr = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    const due = Math.floor(((now - t0) / 1000) * RATE);
    for (; sentCount < due; sentCount++) {
      // A connection being re-established is skipped: its share goes to the others.
      let s = conns[rr++ % CONNS]!;
      for (let k = 0; k < CONNS && (s.connecting || s.destroyed); k++) s = conns[rr++ % CONNS]!;
      if (s.connecting || s.destroyed) {
        cur.sent++;
        cur.lost++;
        continue;
      }
      const frame = Buffer.from(template);
      const id = nextId++ >>> 0;
      codec.setRequestId(frame, id);
      sent.set(id, { at: performance.now(), minute: cur, conn: s });
      cur.sent++;
      s.write(frame);
    }
  }, 1);
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [id, r] of sent) if (now - r.at > LOST_AFTER_MS) (sent.delete(id), r.minute.lost++);
    rssSamples.push({ t: (now - t0) / 1000, mb: rssMb(pid) });
  }, 1000);

  for (let m = 0; m < MINUTES; m++) {
    await new Promise((r) => setTimeout(r, 30_000));
    // Kill one provider (alternating) mid-minute, bring it back on its port a second later.
    const i = m % 2;
    providers[i]!.child.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    providers[i] = await start(process.execPath, [join(dist, 'bench/responder.js'), String(ports[i])], (o) => o.ready === true);
    await new Promise((r) => setTimeout(r, 29_000));
    cur.rss = rssMb(pid);
    minutes.push(cur);
    process.stderr.write(`minute ${m + 1}: ${summary(cur, m + 1)}\n`);
    cur = newMinute();
  }
  clearInterval(tick);
  stopping = true;
  await new Promise((r) => setTimeout(r, LOST_AFTER_MS + 500));
  for (const [, r] of sent) r.minute.lost++;
  clearInterval(sweep);
  // Why the sidecar answered with errors, from its own metrics.
  const prom = String(sidecar.first.prometheus).replace('0.0.0.0', '127.0.0.1');
  const metrics = await (await fetch(`http://${prom}/stats/prometheus`)).text().catch(() => '');
  const reasons = [...metrics.matchAll(/^xsidecar_rpc_local_replies_total\{[^}]*reason="([^"]+)"[^}]*\} (\d+)/gm)].map((m) => `${m[1]} ${m[2]}`);
  const retries = [...metrics.matchAll(/^xsidecar_cluster_upstream_rq_retry_total\{[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
  const flags = [...metrics.matchAll(/^istio_requests_total\{[^}]*response_code="(\d+)"[^}]*response_flags="([^"]+)"[^}]*\} (\d+)/gm)].map((m) => `${m[1]} ${m[2]}: ${m[3]}`);
  for (const c of conns) c.destroy();
  sidecar.child.kill('SIGKILL');
  for (const p of providers) p.child.kill('SIGKILL');

  const q = (xs: number[], p: number) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor(xs.length * p))]! : NaN);
  const rows = minutes.map((m, i) => {
    m.latencies.sort((a, b) => a - b);
    return { minute: i + 1, sent: m.sent, failed: m.errors + m.lost, errors: m.errors, lost: m.lost, p50: q(m.latencies, 0.5), p99: q(m.latencies, 0.99), rss: m.rss };
  });
  const base = rows[0]?.rss ?? 0;
  const last = rows[rows.length - 1]?.rss ?? 0;
  const growth = base > 0 ? ((last - base) / base) * 100 : NaN;
  const failed = rows.reduce((a, r) => a + r.failed, 0);
  const md = [
    `# xsidecar soak (${new Date().toISOString()}, ${MINUTES} min at ${RATE} req/s over ${CONNS} connections, node ${process.version})`,
    '',
    'Bolt through the x-protocol engine to two providers; one provider killed (SIGKILL) and restarted every minute; route retry_on: connect-failure,reset (3 retries); circuit breakers as istiod sends them (max_retries 2^32-1).',
    '',
    '| minute | requests | failed (error replies + lost) | p50 ms | p99 ms | sidecar RSS MB |',
    '|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.minute} | ${r.sent} | ${r.failed} (${r.errors} + ${r.lost}) | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.rss.toFixed(1)} |`),
    '',
    `Sidecar's local error replies by reason: ${reasons.join(', ') || 'none'}; retries: ${retries}. istio_requests_total by code and flags: ${flags.join('; ')}.`,
    '',
    `Failed calls: ${failed} of ${rows.reduce((a, r) => a + r.sent, 0)}. RSS growth after the first minute: ${growth.toFixed(1)} % (${base.toFixed(1)} → ${last.toFixed(1)} MB).`,
    '',
  ].join('\n');
  mkdirSync(results, { recursive: true });
  writeFileSync(join(results, 'soak.md'), md);
  writeFileSync(join(results, 'soak.svg'), chart(rssSamples, rows));
  process.stdout.write(`${md}\nwritten: bench/results/soak.md, bench/results/soak.svg\n`);
  process.exit(0);
}

function summary(m: Minute, n: number): string {
  const l = [...m.latencies].sort((a, b) => a - b);
  return `minute ${n}: sent ${m.sent}, errors ${m.errors}, lost ${m.lost}, p99 ${(l[Math.floor(l.length * 0.99)] ?? NaN).toFixed(2)} ms`;
}

/** RSS over time (line, left axis) and p99 per minute (bars, right axis). */
function chart(rss: { t: number; mb: number }[], rows: { minute: number; p99: number; failed: number }[]): string {
  const W = 720;
  const H = 300;
  const L = 50;
  const R = 50;
  const T = 30;
  const B = 40;
  const tMax = Math.max(60, ...rss.map((s) => s.t));
  const mbMax = Math.max(1, ...rss.map((s) => s.mb)) * 1.1;
  const p99Max = Math.max(1, ...rows.map((r) => (Number.isFinite(r.p99) ? r.p99 : 0))) * 1.1;
  const x = (t: number) => L + (t / tMax) * (W - L - R);
  const yMb = (mb: number) => H - B - (mb / mbMax) * (H - T - B);
  const yP = (p: number) => H - B - (p / p99Max) * (H - T - B);
  const bars = rows
    .map((r) => {
      const x0 = x((r.minute - 1) * 60) + 4;
      const w = x(60) - x(0) - 8;
      const p = Number.isFinite(r.p99) ? r.p99 : 0;
      return `<rect x="${x0.toFixed(1)}" y="${yP(p).toFixed(1)}" width="${w.toFixed(1)}" height="${(H - B - yP(p)).toFixed(1)}" fill="#f0c080"/><text x="${(x0 + w / 2).toFixed(1)}" y="${(yP(p) - 4).toFixed(1)}" font-size="10" text-anchor="middle">${p.toFixed(1)} ms${r.failed ? `, ${r.failed} failed` : ''}</text>`;
    })
    .join('');
  const line = rss.map((s, i) => `${i ? 'L' : 'M'}${x(s.t).toFixed(1)},${yMb(s.mb).toFixed(1)}`).join(' ');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<text x="${L}" y="18" font-size="13">xsidecar soak: RSS (line, MB) and p99 per minute (bars, ms)</text>`,
    bars,
    `<path d="${line}" fill="none" stroke="#2a7ab0" stroke-width="2"/>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/>`,
    `<text x="${L - 4}" y="${yMb(mbMax / 1.1).toFixed(1)}" font-size="10" text-anchor="end">${(mbMax / 1.1).toFixed(0)} MB</text>`,
    `<text x="${L - 4}" y="${H - B}" font-size="10" text-anchor="end">0</text>`,
    `<text x="${W - R + 4}" y="${yP(p99Max / 1.1).toFixed(1)}" font-size="10">${(p99Max / 1.1).toFixed(1)} ms</text>`,
    ...rows.map((r) => `<text x="${x(r.minute * 60).toFixed(1)}" y="${H - B + 14}" font-size="10" text-anchor="middle">${r.minute} min</text>`),
    '</svg>',
    '',
  ].join('\n');
}

await main();
