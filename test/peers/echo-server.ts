/**
 * A plain TCP peer for the L4 tests: echoes every chunk as it arrives, and when the client half-closes,
 * answers with one line naming itself and both ends of the connection it saw, then closes.
 * usage: echo-server NAME HOST PORT — prints {"ready":true,"port":N} once listening.
 */
import { createServer } from 'node:net';
import { exitWhenStdinCloses } from './lifeline.js';

const [name = 'echo', host = '0.0.0.0', port = '0'] = process.argv.slice(2);

const server = createServer({ allowHalfOpen: true }, (socket) => {
  socket.on('data', (chunk) => socket.write(chunk));
  socket.on('end', () => socket.end(`\n${name}|${socket.remoteAddress}:${socket.remotePort}|${socket.localAddress}:${socket.localPort}`));
  socket.on('error', () => undefined);
});
server.listen(Number(port), host, () => {
  const a = server.address();
  process.stdout.write(`${JSON.stringify({ ready: true, port: typeof a === 'object' && a ? a.port : 0 })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
exitWhenStdinCloses();
