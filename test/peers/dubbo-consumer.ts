/**
 * A real Dubbo consumer for tests, in its own process: every call of a run goes over ONE TCP connection.
 *
 *   node dist/test/peers/dubbo-consumer.js --client apache|dubbo2js --host 127.0.0.1 --port N
 *     [--service com.example.UserService] [--version 1.0.0] [--group G] [--method getUser] [--args '["42"]']
 *     [--attachments '{"x-tenant":"acme"}'] [--calls 1] [--concurrency 1] [--timeout 3000]
 *     [--duration-ms D] [--stdin]
 *
 * --client apache:   apache-dubbo-consumer@4.0.0 DubboDirectlyInvoker (one multiplexed connection; group
 *                    and attachments are its own; timeouts in ms).
 * --client dubbo2js: dubbo2.js@2.3.9 DirectlyDubbo (one connection; its timeout is in SECONDS, so --timeout
 *                    is divided by 1000). Its direct mode has no attachments option: --attachments are put
 *                    on each call's context by wrapping its exported Context.create, and its real encoder
 *                    writes them (the same map its registry mode sends).
 * --args is a JSON array; strings go as java.lang.String, integers as java.lang.Integer, booleans as
 * java.lang.Boolean: boxed types only (the npm provider miscounts primitive descriptors such as I).
 *
 * Modes (each prints JSON lines on stdout):
 * - default: --calls N calls, at most --concurrency C in flight, then ONE result line, then exit 0.
 * - --duration-ms D: C workers call back to back for D ms (a load for "kill a provider under load"); while
 *   running, a {"progress":true,"ok":n,"failed":n} line every 200 ms; then the result line; exit 0.
 * - --stdin: one JSON command per stdin line, all on the same connection, each answered by a result line
 *   with its "id" (commands run concurrently): {"id":1,"calls":100,"concurrency":10,"method":"whoami"} or
 *   {"id":2,"durationMs":3000,...}; any flag above can be given per command by its camelCase name
 *   (service, version, group, method, args, attachments, calls, concurrency, timeout, durationMs); a
 *   durationMs command reports {"id":…,"progress":true,…} lines too. A bad command is answered with
 *   {"id":…,"ok":0,"failed":0,"error":"…"}. Exits when stdin ends and every command has answered.
 * Result line: {"ok":n,"failed":n,"results":{VALUE:count},"errors":{MESSAGE:count},"errorTypes":{CLASS:count},
 *   "elapsedMs":n,"firstFailure":i|null,"lastFailure":i|null,"okAfterLastFailure":n}
 *   VALUE is the returned string itself (other values as JSON); MESSAGE is the error's message with control
 *   characters removed; CLASS is the error's constructor (DubboServiceError, DubboInvokeTimeout, …).
 *   firstFailure/lastFailure are completion indexes (0-based, in order of completion), so a test can check
 *   that failures came in one burst and everything after it succeeded.
 * When stdin is a pipe (as tests spawn it), the process also exits when that pipe closes.
 *
 * How each client surfaces a response whose status is not 20 (checked in test/protocols/dubbo-peers.test.ts
 * with hand-built frames):
 * - apache: rejects that call at once with DubboServiceError, message = the body's first hessian2 value
 *   (a string: its text; null: "null"). An EMPTY body makes the decode throw inside its socket handler: an
 *   uncaught exception that kills the consumer process. A response whose flag byte is not exactly 0x02
 *   (e.g. 0x42) is rejected with DubboDecodeError "only support hessian serialization": it compares the
 *   whole flag byte with the serialization id. Status 20 with body flag 3/0 (exception) gives
 *   DubboServiceError with the thrown string. Timeout: DubboInvokeTimeout
 *   "invoke <interface>#<method>?group=<g>&version=<v>".
 * - dubbo2js: rejects that call at once with DubboDecodeError whose message is the RAW body as UTF-8: the
 *   text behind hessian's length prefix (a control byte below 32 chars; "0".."3" and a length byte below
 *   1024; "S" and two bytes beyond) and followed by whatever else the body holds (the npm provider's extra
 *   map shows as "Hdubbo2.0.2Z"), so match with includes(). Timeout: Error "remote invoke timeout".
 * Heartbeats: neither client answers a heartbeat request (flag 0xe2); both ignore any event frame (a
 * heartbeat reply with id 0 and status 0 or 20 is dropped silently). dubbo2.js drops the rest of a TCP read
 * after an event frame until more bytes arrive, so a heartbeat and a response in ONE read stall that
 * response (until the next read, or its timeout). Idle, apache sends a heartbeat (0xe2, id 0) after 60 s
 * and closes after 180 s without a read; dubbo2.js sends one every 180 s.
 * A lost connection fails nothing at once in either client: calls in flight, and calls made before the
 * reconnect (every 3 s, 20 tries), end as their own timeouts; a refused connect is timeouts too.
 * On the wire: apache sends attachments application=dubbo-js and timeout=<ms> (hessian int) besides
 * path/interface/version[/group]; dubbo2.js sends application=dubbo2.js and no timeout. Request ids count
 * from 1 in each process.
 */
import { fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import type { ApacheDubboConsumer, CallResult, Dubbo2js, Java, JavaValue, ServiceProxy } from './dubbo.js';
import { exitWhenStdinCloses } from './lifeline.js';

const { values } = parseArgs({
  options: {
    client: { type: 'string', default: 'apache' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    service: { type: 'string', default: 'com.example.UserService' },
    version: { type: 'string', default: '1.0.0' },
    group: { type: 'string', default: '' },
    method: { type: 'string', default: 'getUser' },
    args: { type: 'string', default: '[]' },
    attachments: { type: 'string', default: '{}' },
    calls: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '1' },
    timeout: { type: 'string', default: '3000' },
    'duration-ms': { type: 'string' },
    stdin: { type: 'boolean', default: false },
  },
});

function fail(message: string): never {
  process.stderr.write(`dubbo-consumer: ${message}\n`);
  process.exit(2);
}
const invalid = (message: string): never => {
  throw new Error(message);
};
const json = (flag: string, text: string) => {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return invalid(`${flag} is not JSON: ${text}`);
  }
};
const count = (flag: string, text: string, min: number) => {
  const n = Number(text);
  return Number.isInteger(n) && n >= min ? n : invalid(`${flag} must be an integer >= ${min}: ${text}`);
};

const port = Number(values.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port must be a port number: ${values.port}`);
const address = `${values.host}:${port}`;
if (values.client !== 'apache' && values.client !== 'dubbo2js') fail(`--client must be apache or dubbo2js: ${values.client}`);

interface Command {
  id?: unknown;
  service: string;
  version: string;
  group: string;
  method: string;
  args: unknown[];
  attachments: Record<string, unknown>;
  calls: number;
  concurrency: number;
  timeout: number;
  durationMs?: number;
}

const require = createRequire(import.meta.url);
let java: Java;
/** Makes one call with its own timeout (both clients read theirs from the connection's props at call time). */
let invoke: (cmd: Command, args: JavaValue[]) => CallResult;

if (values.client === 'apache') {
  const lib = require('apache-dubbo-consumer') as ApacheDubboConsumer;
  java = lib.java;
  const invoker = lib.DubboDirectlyInvoker.from({ dubboHost: address, dubboVersion: '2.0.2', dubboInvokeTimeout: 3000 });
  const proxies = new Map<string, ServiceProxy>();
  invoke = (cmd, args) => {
    const key = JSON.stringify([cmd.service, cmd.version, cmd.group, cmd.method, cmd.attachments]);
    let proxy = proxies.get(key);
    if (!proxy) {
      proxy = invoker.proxyService({
        dubboInterface: cmd.service,
        version: cmd.version,
        group: cmd.group,
        attachments: cmd.attachments,
        methods: { [cmd.method]: (...a: JavaValue[]) => a },
      });
      proxies.set(key, proxy);
    }
    invoker.props.dubboInvokeTimeout = cmd.timeout;
    return proxy[cmd.method]!(...args);
  };
} else {
  // Its encoder JSON-stringifies every request for a debug log unless NODE_ENV is production.
  process.env.NODE_ENV ??= 'production';
  const lib = require('dubbo2.js') as Dubbo2js;
  java = lib.java;
  const dubbo = lib.DirectlyDubbo.from({ dubboAddress: address, dubboVersion: '2.0.2', dubboInvokeTimeout: 3 });
  // The proxy creates each call's context synchronously inside the call: these are that call's attachments.
  let nextAttachments: Record<string, unknown> = {};
  const create = lib.Context.create.bind(lib.Context);
  lib.Context.create = () => {
    const ctx = create();
    ctx.attachments = nextAttachments;
    return ctx;
  };
  const proxies = new Map<string, ServiceProxy>();
  invoke = (cmd, args) => {
    const key = JSON.stringify([cmd.service, cmd.version, cmd.group, cmd.method]);
    let proxy = proxies.get(key);
    if (!proxy) {
      proxy = dubbo.proxyService({
        dubboInterface: cmd.service,
        version: cmd.version,
        group: cmd.group || undefined,
        methods: { [cmd.method]: (...a: JavaValue[]) => a },
      });
      proxies.set(key, proxy);
    }
    dubbo._props.dubboInvokeTimeout = cmd.timeout / 1000;
    nextAttachments = cmd.attachments;
    return proxy[cmd.method]!(...args);
  };
}

function box(value: unknown): JavaValue {
  if (typeof value === 'string' || value === null) return java.String(value);
  if (typeof value === 'boolean') return java.Boolean(value);
  if (typeof value === 'number' && Number.isInteger(value)) return java.Integer(value);
  throw new Error(`unsupported argument ${JSON.stringify(value)}: strings, integers and booleans only`);
}

// C0 controls (e.g. hessian length bytes that dubbo2.js leaves in) would make the keys unreadable.
const clean = (message: string) => message.replace(/[\x00-\x1f\x7f]/g, '').trim();

async function run(cmd: Command, onProgress?: (ok: number, failed: number) => void) {
  const args = cmd.args.map(box);
  const results: Record<string, number> = {};
  const errors: Record<string, number> = {};
  const errorTypes: Record<string, number> = {};
  let ok = 0;
  let failed = 0;
  let firstFailure: number | null = null;
  let lastFailure: number | null = null;
  let started = 0;
  const start = Date.now();
  const deadline = cmd.durationMs === undefined ? Infinity : start + cmd.durationMs;
  const more = () => (cmd.durationMs === undefined ? started < cmd.calls : Date.now() < deadline);
  const progress = onProgress && setInterval(() => onProgress(ok, failed), 200);
  const worker = async () => {
    while (more()) {
      started++;
      let outcome: Awaited<CallResult>;
      try {
        outcome = await invoke(cmd, args);
      } catch (err) {
        outcome = { res: null, err: err as Error & { constructor: { name: string } } };
      }
      const index = ok + failed;
      if (outcome.err) {
        const key = clean(outcome.err.message ?? String(outcome.err));
        errors[key] = (errors[key] ?? 0) + 1;
        const type = outcome.err.constructor?.name ?? 'Error';
        errorTypes[type] = (errorTypes[type] ?? 0) + 1;
        failed++;
        firstFailure ??= index;
        lastFailure = index;
      } else {
        const key = typeof outcome.res === 'string' ? outcome.res : JSON.stringify(outcome.res ?? null);
        results[key] = (results[key] ?? 0) + 1;
        ok++;
      }
    }
  };
  const workers = cmd.durationMs === undefined ? Math.min(cmd.concurrency, cmd.calls) : cmd.concurrency;
  await Promise.all(Array.from({ length: workers }, worker));
  if (progress) clearInterval(progress);
  const okAfterLastFailure = lastFailure === null ? ok : ok + failed - 1 - lastFailure;
  return { ok, failed, results, errors, errorTypes, elapsedMs: Date.now() - start, firstFailure, lastFailure, okAfterLastFailure };
}

const print = (line: object) => new Promise<void>((resolve) => process.stdout.write(JSON.stringify(line) + '\n', () => resolve()));

/** Flags, overridden by a --stdin command's fields. */
function command(over: Record<string, unknown> = {}): Command {
  const pick = <T>(key: string, flag: T) => (over[key] === undefined ? flag : (over[key] as T));
  const args = pick('args', json('args', values.args));
  const attachments = pick('attachments', json('attachments', values.attachments));
  if (!Array.isArray(args)) invalid('args must be a JSON array');
  if (!attachments || typeof attachments !== 'object' || Array.isArray(attachments)) invalid('attachments must be a JSON object');
  (args as unknown[]).forEach(box);
  const duration = pick<string | number | undefined>('durationMs', values['duration-ms']);
  return {
    id: over.id,
    service: String(pick('service', values.service)),
    version: String(pick('version', values.version)),
    group: String(pick('group', values.group)),
    method: String(pick('method', values.method)),
    args: args as unknown[],
    attachments: attachments as Record<string, unknown>,
    calls: count('calls', String(pick('calls', values.calls)), 0),
    concurrency: count('concurrency', String(pick('concurrency', values.concurrency)), 1),
    timeout: count('timeout', String(pick('timeout', values.timeout)), 1),
    durationMs: duration === undefined ? undefined : count('duration-ms', String(duration), 0),
  };
}

const stdinIsPipe = (() => {
  try {
    const st = fstatSync(0);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false;
  }
})();

if (values.stdin) {
  const pending = new Set<Promise<void>>();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (!line.trim()) return;
    const p = (async () => {
      let over: Record<string, unknown> | undefined;
      try {
        over = JSON.parse(line) as Record<string, unknown>;
      } catch {
        // Reported below.
      }
      if (!over || typeof over !== 'object' || Array.isArray(over)) return print({ ok: 0, failed: 0, error: `bad command: ${line}` });
      const id = over.id;
      try {
        const cmd = command(over);
        const onProgress = cmd.durationMs === undefined ? undefined : (ok: number, failed: number) => void print({ id, progress: true, ok, failed });
        await print({ id, ...(await run(cmd, onProgress)) });
      } catch (err) {
        await print({ id, ok: 0, failed: 0, error: err instanceof Error ? err.message : String(err) });
      }
    })();
    pending.add(p);
    void p.finally(() => pending.delete(p));
  });
  lines.on('close', async () => {
    await Promise.allSettled([...pending]);
    process.exit(0);
  });
} else {
  if (stdinIsPipe) exitWhenStdinCloses();
  let cmd: Command;
  try {
    cmd = command();
  } catch (err) {
    fail((err as Error).message);
  }
  const onProgress = cmd.durationMs === undefined ? undefined : (ok: number, failed: number) => void print({ progress: true, ok, failed });
  await print(await run(cmd, onProgress));
  process.exit(0);
}
