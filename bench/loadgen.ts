/**
 * The load generator, a process of its own: real request frames (the captured sofa-rpc-node request, or
 * with --protocol dubbo the captured apache-dubbo-consumer one) over C connections.
 *  closed loop:  loadgen HOST:PORT --conns C --inflight D --seconds S           (throughput)
 *  open loop:    loadgen HOST:PORT --conns C --rate R --seconds S               (latency at a fixed rate)
 *  idle conns:   loadgen HOST:PORT --conns C --hold S                           (one request each, then hold)
 * Latency runs from the write of a request to its response; the open loop keeps sending on schedule
 * whatever the answers do, so a stall still shows up as many slow requests. `--warmup W` sends for W
 * seconds first and records nothing of them: a fresh loadgen's own JIT warm-up is not the proxy's latency.
 * Prints one JSON line: {requests, errors, seconds, rps, p50, p99, p999} (latencies in ms).
 */
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { NEED_MORE } from '../protocols/codec.js';
import { findCodec } from '../protocols/registry.js';
import { templates } from './fixtures.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { conns: { type: 'string', default: '8' }, inflight: { type: 'string', default: '1' }, rate: { type: 'string' }, seconds: { type: 'string', default: '5' }, warmup: { type: 'string', default: '0' }, hold: { type: 'string' }, protocol: { type: 'string', default: 'bolt' } },
});
const [host, port] = positionals[0]!.split(':') as [string, string];
const conns = Number(values.conns);
const inflight = Number(values.inflight);
const rate = values.rate ? Number(values.rate) : undefined;
const seconds = Number(values.seconds);
const codec = findCodec(values.protocol!)!;
const template = templates(codec.name).request;

const latencies: number[] = [];
let errors = 0;
let nextId = 1;
let stopAt = Infinity;
/** Answers to requests sent before this are not recorded (--warmup). */
let recordFrom = 0;

class Conn {
  readonly sent = new Map<number, number>();
  private rest: Buffer | undefined;
  constructor(readonly socket: Socket, private readonly onAnswer: (c: Conn) => void) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      let buf = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
      this.rest = undefined;
      const now = performance.now();
      while (buf.length > 0) {
        const f = codec.decode(buf, 1 << 24);
        if (f === NEED_MORE) {
          this.rest = buf;
          break;
        }
        if (f instanceof Error) throw f;
        buf = buf.subarray(f.raw.length);
        const due = this.sent.get(f.requestId as number);
        if (due === undefined) continue;
        this.sent.delete(f.requestId as number);
        if (!f.ok) errors++;
        else if (due > 0 && due >= recordFrom) latencies.push(now - due);
        this.onAnswer(this);
      }
    });
  }
  send(due: number): void {
    const frame = Buffer.from(template);
    const id = nextId++ >>> 0;
    codec.setRequestId(frame, id);
    this.sent.set(id, due);
    this.socket.write(frame);
  }
}

const open = (onAnswer: (c: Conn) => void) =>
  new Promise<Conn>((resolve, reject) => {
    const s = connect(Number(port), host, () => resolve(new Conn(s, onAnswer)));
    s.once('error', reject);
  });

function report(elapsed: number): void {
  latencies.sort((a, b) => a - b);
  const q = (p: number) => Number((latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? NaN).toFixed(3));
  const requests = latencies.length + errors;
  process.stdout.write(`${JSON.stringify({ requests, errors, seconds: Number(elapsed.toFixed(3)), rps: Math.round(requests / elapsed), p50: q(0.5), p99: q(0.99), p999: q(0.999) })}\n`);
}

if (values.hold) {
  // Many idle connections for the memory measurement: each makes one call so the proxy knows its protocol.
  const all: Conn[] = [];
  let answered = 0;
  for (let i = 0; i < conns; i++) all.push(await open(() => answered++));
  for (const c of all) c.send(0);
  while (answered < conns) await new Promise((r) => setTimeout(r, 10));
  process.stdout.write(`${JSON.stringify({ held: conns })}\n`);
  await new Promise((r) => setTimeout(r, Number(values.hold) * 1000));
  process.exit(0);
}

const start = performance.now();
recordFrom = start + Number(values.warmup) * 1000;
stopAt = recordFrom + seconds * 1000;
let outstanding = 0;
const all = await Promise.all(
  Array.from({ length: conns }, () =>
    open((c) => {
      outstanding--;
      if (rate === undefined && performance.now() < stopAt) {
        outstanding++;
        c.send(performance.now());
      }
    }),
  ),
);

if (rate === undefined) {
  for (const c of all) for (let i = 0; i < inflight; i++) (outstanding++, c.send(performance.now()));
} else {
  // Open loop: send what is due every millisecond, round robin over the connections.
  let sentCount = 0;
  let rr = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    if (now >= stopAt) return clearInterval(tick);
    const due = Math.floor(((now - start) / 1000) * rate);
    for (; sentCount < due; sentCount++) {
      outstanding++;
      all[rr++ % all.length]!.send(performance.now());
    }
  }, 1);
}
while (performance.now() < stopAt || (outstanding > 0 && performance.now() < stopAt + 5000)) await new Promise((r) => setTimeout(r, 20));
report((Math.min(performance.now(), stopAt) - recordFrom) / 1000);
process.exit(0);
