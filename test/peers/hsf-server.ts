/**
 * A small HSF provider for integration tests, written from the HSF 2.x layout in protocols/hsf/README.md
 * without using the codec (no public HSF peer exists, and a peer sharing the codec's code would prove
 * nothing about it).
 *
 *   node dist/test/peers/hsf-server.js [--host 127.0.0.1] [--port 0] [--name NAME]
 *
 * Answers every request with a status-0 response whose body is a hessian2 string
 * `NAME|service|method|target_group-or-empty`, after `ms` milliseconds when the method is `sleep` and
 * the properties carry `ms` (default 2000). Answers heartbeats (type 0 → type 1, same id). Prints
 * {"ready":true,"port":N} on stdout once listening and exits when stdin closes.
 */
import { createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { exitWhenStdinCloses } from './lifeline.js';

const { values } = parseArgs({
  options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '0' }, name: { type: 'string' } },
});
const name = values.name ?? `hsf-server-${process.pid}`;
let requests = 0;
let heartbeats = 0;

/** A short or medium hessian2 string (names and groups are short). */
function hstr(s: string): Buffer {
  const n = s.length;
  return Buffer.concat([Buffer.from(n < 32 ? [n] : [0x30 + (n >> 8), n & 0xff]), Buffer.from(s, 'utf8')]);
}

/** String entries of a flat hessian2 map of short strings; anything else stops the scan. */
function props(b: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  if (b[0] !== 0x48) return out;
  let p = 1;
  const str = (): string | undefined => {
    const n = b[p];
    if (n === undefined || n > 0x1f) return undefined;
    const s = b.toString('utf8', p + 1, p + 1 + n);
    p += 1 + Buffer.byteLength(s);
    return s;
  };
  while (p < b.length && b[p] !== 0x5a) {
    const k = str();
    const v = str();
    if (k === undefined || v === undefined) break;
    out.set(k, v);
  }
  return out;
}

function response(req: Buffer, body: Buffer): Buffer {
  const out = Buffer.alloc(20 + body.length);
  out[0] = 0x0e;
  out[1] = req[1]!;
  out[2] = 1; // response
  out[3] = 0; // status ok
  req.copy(out, 4, 3, 15); // serialization, extension bytes, request id
  out.writeUInt32BE(body.length, 16);
  body.copy(out, 20);
  return out;
}

/** One request frame, or how many bytes are needed; undefined when the bytes are not HSF. */
function frameLength(b: Buffer): number | undefined {
  if (b[0] === 0x0c) return 18;
  if (b[0] !== 0x0e || b[2] !== 0) return undefined;
  if (b.length < 31) return Infinity;
  const n = b.readUInt32BE(27);
  const head = 35 + 8 * n;
  if (b.length < head) return Infinity;
  let total = head + b.readUInt32BE(19) + b.readUInt32BE(23);
  for (let i = 0; i <= 2 * n; i++) total += b.readUInt32BE(31 + 4 * i);
  return total;
}

function handle(socket: Socket, frame: Buffer): void {
  if (frame[0] === 0x0c) {
    heartbeats++;
    if (frame[1] === 0) {
      const reply = Buffer.from(frame);
      reply[1] = 1;
      socket.write(reply);
    }
    return;
  }
  requests++;
  const n = frame.readUInt32BE(27);
  const head = 35 + 8 * n;
  const sl = frame.readUInt32BE(19);
  const ml = frame.readUInt32BE(23);
  const service = frame.toString('utf8', head, head + sl);
  const method = frame.toString('utf8', head + sl, head + sl + ml);
  const p = props(frame.subarray(frame.length - frame.readUInt32BE(31 + 8 * n)));
  const reply = response(frame, hstr(`${name}|${service}|${method}|${p.get('target_group') ?? ''}`));
  if (method === 'sleep') setTimeout(() => socket.destroyed || socket.write(reply), Number(p.get('ms') ?? 2000));
  else socket.write(reply);
}

const server = createServer((socket) => {
  let buf = Buffer.alloc(0);
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length > 0) {
      const len = frameLength(buf);
      if (len === undefined) {
        process.stderr.write(`[${name}] not HSF: ${buf.subarray(0, 16).toString('hex')}\n`);
        socket.destroy();
        return;
      }
      if (buf.length < len) return;
      handle(socket, buf.subarray(0, len));
      buf = buf.subarray(len);
    }
  });
});

server.listen(Number(values.port), values.host, () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(JSON.stringify({ ready: true, port, name }) + '\n');
});

// A line on stdin asks for the counters, so tests can tell what reached the provider: {"stats":LINE,...}.
createInterface({ input: process.stdin }).on('line', (line) => process.stdout.write(JSON.stringify({ stats: line.trim(), requests, heartbeats }) + '\n'));
const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
exitWhenStdinCloses(stop);
