/**
 * A TCP client for the L4 tests. Sends each part in turn, waiting for its echo; with --pause-after N it
 * prints {"event":"paused"} after part N and waits for a line on stdin before going on. Then it
 * half-closes, reads to the end and prints one JSON result line.
 * usage: tcp-client HOST PORT PART... [--pause-after N] [--timeout MS]
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const [v] = args.splice(i, 2).slice(1);
  return v;
};
const pauseAfter = Number(flag('--pause-after') ?? -1);
const timeoutMs = Number(flag('--timeout') ?? 5000);
const [host, port, ...parts] = args;

const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

let received = '';
const socket = connect({ host: host!, port: Number(port), allowHalfOpen: true });
const timer = setTimeout(() => finish({ ok: false, error: 'timeout', received }), timeoutMs);
function finish(result: object): void {
  clearTimeout(timer);
  out(result);
  socket.destroy();
  process.exit(0);
}
socket.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message, received }));
socket.on('data', (d) => (received += d.toString()));
socket.on('end', () => finish({ ok: true, received }));
socket.on('close', () => finish({ ok: false, error: 'closed without FIN', received }));

async function waitFor(text: string): Promise<void> {
  while (!received.endsWith(text)) await new Promise((r) => setTimeout(r, 5));
}

socket.once('connect', async () => {
  out({ event: 'connected' });
  for (let i = 0; i < parts.length; i++) {
    socket.write(parts[i]!);
    await waitFor(parts[i]!);
    if (i + 1 === pauseAfter) {
      out({ event: 'paused' });
      await stdinLines.next();
    }
  }
  socket.end();
});
