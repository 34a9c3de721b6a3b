/**
 * A real sofa-rpc-node RpcServer for integration tests, in its own process and without a registry.
 *
 *   node dist/test/peers/bolt-server.js [--host 127.0.0.1] [--port 0] [--name NAME]
 *
 * Serves com.nodejs.test.OtherService:1.0 (whoami → "other:NAME") and com.nodejs.test.TestService:1.0 with plus(a, b), echo(x), whoami() (the name, from --name or
 * $SERVER_NAME), sleep(ms) and fail(message) (throws, so the server answers with its own error status).
 * Prints {"ready":true,"port":N} on stdout once listening; logs go to stderr.
 */
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { format, parseArgs } from 'node:util';
import sofa from 'sofa-rpc-node';
import { exitWhenStdinCloses } from './lifeline.js';

const { values } = parseArgs({
  options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '0' }, name: { type: 'string' } },
});
const name = values.name ?? process.env.SERVER_NAME ?? `bolt-server-${process.pid}`;

const log = (level: string) => (...args: unknown[]) => {
  if ((level !== 'debug' && level !== 'info') || process.env.PEER_DEBUG) {
    process.stderr.write(`[${name}] ${level} ${format(...args)}\n`);
  }
};
const logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };

const rpc = new sofa.server.RpcServer({ logger });
// Without a listener sdk-base prints every failed call (e.g. an unknown service) as an uncaught error.
rpc.on('error', (err) => logger.warn('%s', err.message));
rpc.addService(
  { interfaceName: 'com.nodejs.test.TestService', version: '1.0' },
  {
    async plus(a: number, b: number) {
      return a + b;
    },
    async echo(x: unknown) {
      return x;
    },
    async whoami() {
      return name;
    },
    async whereami() {
      return name;
    },
    async sleep(ms: number) {
      await sleep(ms);
      return ms;
    },
    async fail(message: string) {
      throw new Error(message);
    },
  },
);

// A second interface, so tests can route by interface name.
rpc.addService(
  { interfaceName: 'com.nodejs.test.OtherService', version: '1.0' },
  {
    async whoami() {
      return `other:${name}`;
    },
  },
);

// RpcServer.start() listens on every interface; tests want a chosen host, so we own the listening socket.
const server = createServer((socket) => rpc._handleSocket(socket));
server.listen(Number(values.port), values.host, () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(JSON.stringify({ ready: true, port, name }) + '\n');
});

const stop = () => {
  server.close();
  void rpc.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
exitWhenStdinCloses(stop);
