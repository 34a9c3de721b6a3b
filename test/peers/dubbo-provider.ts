/**
 * A real apache-dubbo-service@0.0.1 provider for tests, in its own process and without a registry.
 *
 *   node dist/test/peers/dubbo-provider.js [--host 127.0.0.1] [--port 0] [--name NAME] [--heartbeat-ms MS]
 *
 * --port 0 takes any free port. NAME (default $SERVER_NAME, else dubbo-provider-PID) shows in every answer,
 * so a test can tell which provider served a call. --heartbeat-ms sets the package's idle check (60 s
 * otherwise): every MS, a connection with no read or no write for MS gets the provider's heartbeat (flag
 * 0x62, status 0, id 0), and one with nothing read for 3 x MS is closed.
 * Exports, all hessian strings in and out:
 *   com.example.UserService 1.0.0 (default group)
 *     getUser(id) -> "user:<id>@NAME"     whoami() -> "NAME"     sleep(ms) -> "slept:<ms>@NAME" after ms
 *     echoAttachments(...) -> JSON (sorted keys) of the request attachments the provider decoded, including
 *       the ones it adds itself (dubbo, path, version) and the consumer's (application, interface, timeout…)
 *     fail(msg) -> throws msg: a status-20 response with body flag 3 and msg as a plain hessian string
 *   com.example.UserService 2.0.0: getUser(id) -> "user-v2:<id>@NAME", whoami() -> "v2@NAME"
 *   com.example.RoleService 1.0.0: getRole(x) -> "role:<x>@NAME", whoami() -> "role@NAME"
 *   com.example.RoleService 1.0.0 group "admin": getRole(x) -> "admin-role:<x>@NAME", whoami() -> "admin-role@NAME"
 * Every answer carries the response attachment x-served-by=NAME. Anything else gets the package's own
 * status-60 answer ("SERVICE_NOT_FOUND#Service not found with …").
 *
 * stdout, one JSON object a line: {"ready":true,"port":N,"name":NAME} once listening, then
 * {"connection":K,"remote":"ip:port"} for the K-th accepted connection (tests count connections with it),
 * and {"heartbeat":"received"|"sent"|"idle-close","remote":"ip:port"} for each heartbeat (any event
 * frame) it gets, each it sends (its answers and its idle ones) and each connection it closes as idle.
 * Logs go to stderr (debug ones with PEER_DEBUG=1). Exits on SIGTERM/SIGINT or when stdin closes.
 *
 * What had to be worked around in the package (test/fixtures/dubbo/README.md lists its wire quirks):
 * - It listens on a random port from lib/port's randomPort, on every interface. We replace the instance's
 *   `listen` (which its constructor calls on the next tick) with our own server on --host/--port that feeds
 *   each socket to its `handleSocketRequest`, so no port is ever guessed and none can collide.
 * - It needs a registry (ZooKeeper or Nacos); a no-op one stands in.
 * - Its sockets have no `error` listener: a peer's reset would be an uncaught exception. We add one.
 * - A request body it cannot decode rejects a promise nobody awaits (Node 20 would exit): logged instead,
 *   and the frame is left unanswered, as the package does.
 * - It answers any event frame with its own heartbeat (flag 0x62, status 0, id 0) and oneway requests like
 *   two-way ones; it counts arguments by splitting the type descriptor on ';', so callers must send boxed
 *   types (java.lang.String, never I/J/Z).
 */
import { createRequire } from 'node:module';
import { createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { format, parseArgs } from 'node:util';
import type { ApacheDubboService, DubboSerialization, ProviderContext, ProviderService } from './dubbo.js';
import { exitWhenStdinCloses } from './lifeline.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    name: { type: 'string' },
    'heartbeat-ms': { type: 'string' },
  },
});
const name = values.name ?? process.env.SERVER_NAME ?? `dubbo-provider-${process.pid}`;
const port = Number(values.port);
const heartbeatMs = values['heartbeat-ms'] === undefined ? undefined : Number(values['heartbeat-ms']);
for (const [flag, bad] of [['port', !Number.isInteger(port) || port < 0 || port > 65535], ['heartbeat-ms', heartbeatMs !== undefined && !(heartbeatMs >= 1)]] as const) {
  if (bad) {
    process.stderr.write(`dubbo-provider: bad --${flag} ${values[flag]}\n`);
    process.exit(2);
  }
}
const say = (line: object) => process.stdout.write(JSON.stringify(line) + '\n');

const log = (level: string, ...args: unknown[]) => {
  if (level !== 'debug' || process.env.PEER_DEBUG) process.stderr.write(`[${name}] ${level} ${format(...args)}\n`);
};
process.on('unhandledRejection', (err) => log('warn', 'unanswered request: %s', err instanceof Error ? err.message : err));

const require = createRequire(import.meta.url);
const { DubboService } = require('apache-dubbo-service') as ApacheDubboService;
const { HeartBeat } = createRequire(require.resolve('apache-dubbo-service'))('apache-dubbo-serialization') as DubboSerialization;

// The service makes one HeartBeat per socket and asks HeartBeat.isHeartBeat about every frame; both are
// looked up at call time, so wrapping them here reports heartbeats and can shorten the idle check.
const remoteOf = (socket: Socket) => `${socket.remoteAddress}:${socket.remotePort}`;
let reading: Socket | undefined;
const isHeartBeat = HeartBeat.isHeartBeat.bind(HeartBeat);
HeartBeat.isHeartBeat = (frame) => {
  const yes = isHeartBeat(frame);
  if (yes && reading) say({ heartbeat: 'received', remote: remoteOf(reading) });
  return yes;
};
const heartbeatFrom = HeartBeat.from.bind(HeartBeat);
HeartBeat.from = (props) => {
  const remote = remoteOf(props.transport);
  const hb = heartbeatFrom({ ...props, onTimeout: () => (say({ heartbeat: 'idle-close', remote }), props.onTimeout()) });
  const emit = hb.emit.bind(hb);
  hb.emit = () => {
    say({ heartbeat: 'sent', remote });
    emit();
  };
  if (heartbeatMs !== undefined) {
    // The package's own check, with MS instead of its 60 s.
    clearInterval(hb.heartBeatTimer);
    hb.heartBeatTimer = setInterval(() => {
      const now = Date.now();
      if (now - hb.lastReadTimestamp > heartbeatMs * 3) hb.onTimeout();
      else if (now - hb.lastWriteTimestamp > heartbeatMs || now - hb.lastReadTimestamp > heartbeatMs) hb.emit();
    }, heartbeatMs);
  }
  return hb;
};

/**
 * The package calls a method with the call's arguments, then its context; this hands `fn` the arguments
 * (however many came) and the context, and tags the answer with NAME.
 */
const method =
  (fn: (args: unknown[], ctx: ProviderContext) => string | Promise<string>) =>
  async (...args: unknown[]) => {
    const ctx = args.pop() as ProviderContext;
    const value = await fn(args, ctx);
    ctx.attachments = { 'x-served-by': name };
    return value;
  };

const services: Record<string, ProviderService & { group: string; version: string }> = {
  UserService: {
    dubboInterface: 'com.example.UserService',
    group: '',
    version: '1.0.0',
    methods: {
      getUser: method(([id]) => `user:${id}@${name}`),
      whoami: method(() => name),
      sleep: method(async ([ms]) => {
        await sleep(Math.max(0, Number(ms) || 0));
        return `slept:${ms}@${name}`;
      }),
      echoAttachments: method((_, { request: { attachment } }) =>
        JSON.stringify(Object.fromEntries(Object.keys(attachment).sort().map((k) => [k, attachment[k]]))),
      ),
      fail: method(([msg]) => {
        throw new Error(String(msg));
      }),
    },
  },
  UserServiceV2: {
    dubboInterface: 'com.example.UserService',
    group: '',
    version: '2.0.0',
    methods: {
      getUser: method(([id]) => `user-v2:${id}@${name}`),
      whoami: method(() => `v2@${name}`),
    },
  },
  RoleService: {
    dubboInterface: 'com.example.RoleService',
    group: '',
    version: '1.0.0',
    methods: {
      getRole: method(([x]) => `role:${x}@${name}`),
      whoami: method(() => `role@${name}`),
    },
  },
  RoleServiceAdmin: {
    dubboInterface: 'com.example.RoleService',
    group: 'admin',
    version: '1.0.0',
    methods: {
      getRole: method(([x]) => `admin-role:${x}@${name}`),
      whoami: method(() => `admin-role@${name}`),
    },
  },
};

const noRegistry = {
  ready: async () => {},
  registerServices: async () => {},
  getClient: () => null,
  close: () => {},
};

const service = DubboService.from({
  registry: noRegistry,
  services,
  // The service asks for each entry's group and version by its short name (the key in `services`).
  dubboSetting: { getDubboSetting: ({ dubboServiceShortName }) => services[dubboServiceShortName] ?? null },
});

let connections = 0;
const server = createServer((socket) => {
  connections++;
  say({ connection: connections, remote: remoteOf(socket) });
  socket.on('error', (err) => log('debug', 'socket error: %s', err.message));
  // Registered before the package's own reader (next tick), so it names the socket a frame came from.
  socket.on('data', () => (reading = socket));
  service.handleSocketRequest(socket);
});

// Replaces the package's random-port listen before its next-tick call reaches it.
service.listen = () =>
  new Promise<void>((resolve) => {
    server.once('error', (err) => {
      log('error', 'cannot listen on %s:%d: %s', values.host, port, err.message);
      process.exit(1);
    });
    server.listen(port, values.host, () => {
      const address = server.address();
      service.port = typeof address === 'object' && address ? address.port : port;
      resolve(service.registerServices());
    });
  });

void service.ready().then(() => say({ ready: true, port: service.port, name }));

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
exitWhenStdinCloses(stop);
