/**
 * Keeps opening short TCP connections (send, half-close, read to the end) against an echo-server until a
 * line arrives on stdin, then prints one JSON result and exits: for "no connection fails while …" tests.
 *   usage: tcp-loop HOST PORT [--gap-ms 20] [--timeout 3000]
 * Prints {"event":"started"} after the first connection succeeded, then
 * {"ok":N,"failed":N,"errors":{"ECONNRESET":N,...},"servedBy":{"srv-a":N,...}}.
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'gap-ms': { type: 'string', default: '20' }, timeout: { type: 'string', default: '3000' } } });
const [host, port] = positionals;
const gapMs = Number(values['gap-ms']);
const timeoutMs = Number(values.timeout);

function once(payload: string): Promise<{ ok: boolean; by?: string; error?: string }> {
  return new Promise((resolve) => {
    let received = '';
    const socket = connect({ host: host!, port: Number(port), allowHalfOpen: true });
    const done = (r: { ok: boolean; by?: string; error?: string }) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, error: 'timeout' }), timeoutMs);
    socket.on('connect', () => socket.end(payload));
    socket.on('data', (d) => (received += d.toString()));
    socket.on('end', () => (received.startsWith(`${payload}\n`) ? done({ ok: true, by: received.split('\n')[1]!.split('|')[0] }) : done({ ok: false, error: 'short reply' })));
    socket.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, error: e.code ?? e.message }));
  });
}

const stats = { ok: 0, failed: 0, errors: {} as Record<string, number>, servedBy: {} as Record<string, number> };
let running = true;
// A line stops the loop; so does EOF, so that a loop whose test was killed does not outlive it.
const input = createInterface({ input: process.stdin });
input.once('line', () => (running = false));
input.once('close', () => (running = false));

for (let i = 0; running; i++) {
  const r = await once(`req-${i}`);
  if (r.ok) {
    stats.ok++;
    stats.servedBy[r.by!] = (stats.servedBy[r.by!] ?? 0) + 1;
    if (stats.ok === 1) process.stdout.write(`${JSON.stringify({ event: 'started' })}\n`);
  } else {
    stats.failed++;
    stats.errors[r.error!] = (stats.errors[r.error!] ?? 0) + 1;
  }
  await new Promise((res) => setTimeout(res, gapMs));
}
process.stdout.write(`${JSON.stringify(stats)}\n`);
process.exit(0);
