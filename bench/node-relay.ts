/**
 * The least a Node.js proxy can do: every read on one socket written to the other, nothing else. In the
 * bench it separates what the event loop and the extra process cost on this machine from what xsidecar's
 * own code adds. usage: node-relay UPSTREAM_PORT — prints {"ready":true,"port":N}.
 */
import { connect, createServer } from 'node:net';

const upstreamPort = Number(process.argv[2]);
const server = createServer({ noDelay: true }, (down) => {
  const up = connect({ port: upstreamPort, host: '127.0.0.1', noDelay: true });
  down.pipe(up);
  up.pipe(down);
  down.on('error', () => up.destroy());
  up.on('error', () => down.destroy());
});
server.listen(0, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`${JSON.stringify({ ready: true, port: typeof a === 'object' && a ? a.port : 0 })}\n`);
});
