/**
 * A server-first TCP peer (as SMTP, MySQL or Redis Sentinel greet first): sends one banner line as soon as
 * a connection opens, then echoes whatever arrives.
 * usage: banner-server [HOST] [PORT] — prints {"ready":true,"port":N} once listening.
 */
import { createServer } from 'node:net';
import { exitWhenStdinCloses } from './lifeline.js';

const [host = '127.0.0.1', port = '0'] = process.argv.slice(2);

const server = createServer((socket) => {
  socket.on('error', () => undefined);
  socket.write('220 banner-server ready\n');
  socket.on('data', (chunk) => socket.write(chunk));
});
server.listen(Number(port), host, () => {
  const a = server.address();
  process.stdout.write(`${JSON.stringify({ ready: true, port: typeof a === 'object' && a ? a.port : 0 })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
exitWhenStdinCloses();
