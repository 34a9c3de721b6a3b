/**
 * A real sofa-rpc-node RpcClient for integration tests, in its own process, connected straight to the
 * given servers (consumer `serverHost`, no registry).
 *
 *   node dist/test/peers/bolt-client.js --server 127.0.0.1:12200[,host:port...] [--bolt2 [--crc]]
 *
 * Reads one JSON command per stdin line and answers each on stdout as it completes (ids correlate):
 *   {"id":1,"service":"com.nodejs.test.TestService:1.0","method":"plus","args":[1,2],"timeout":3000}
 *     -> {"id":1,"ok":true,"result":3} | {"id":1,"ok":false,"error":"...","name":"RpcResponseTimeoutError"}
 *   {"id":2,"batch":100,"concurrency":10,"service":...,"method":"whoami","args":[]}
 *     -> {"id":2,"ok":true,"batch":{"total":100,"succeeded":100,"failed":0,"ms":42,
 *         "results":{"\"s1\"":51,"\"s2\"":49},"errors":{}}}   (results keyed by JSON value, errors by message)
 * --bolt2 makes every request Bolt v2 (proto 0x02, ver1 2), --crc adds the CRC32 trailer. Exits when stdin
 * ends and every call has finished.
 */
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { format, parseArgs } from 'node:util';
import sofa from 'sofa-rpc-node';

const { values } = parseArgs({
  options: {
    server: { type: 'string', default: process.env.BOLT_SERVER },
    bolt2: { type: 'boolean', default: false },
    crc: { type: 'boolean', default: false },
  },
});
if (!values.server) throw new Error('bolt-client: --server host:port is required');
const serverHost = values.server;

const log = (level: string) => (...args: unknown[]) => {
  if ((level !== 'debug' && level !== 'info') || process.env.PEER_DEBUG) {
    process.stderr.write(`[bolt-client] ${level} ${format(...args)}\n`);
  }
};
const logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };

interface BoltEncoder {
  protocolType: string;
  boltVersion: number;
  crcEnable: boolean;
}
interface BoltProtocol {
  encoder(options: object): BoltEncoder;
}

// sofa-rpc-node's connections always encode Bolt v1; v2 needs its own sofa-bolt-node with the encoder flipped.
function bolt2Protocol(crc: boolean): BoltProtocol {
  const base = createRequire(createRequire(import.meta.url).resolve('sofa-rpc-node'))('sofa-bolt-node') as BoltProtocol;
  return {
    ...base,
    encoder(options) {
      const encoder = base.encoder(options);
      encoder.protocolType = 'bolt2';
      encoder.boltVersion = 2;
      encoder.crcEnable = crc;
      return encoder;
    },
  };
}

const client = new sofa.client.RpcClient({ logger, protocol: values.bolt2 ? bolt2Protocol(values.crc) : undefined });
client.on('error', (err) => logger.warn('client error: %s', err.message));

interface Command {
  id?: unknown;
  service: string;
  method: string;
  args?: unknown[];
  timeout?: number;
  batch?: number;
  concurrency?: number;
}

function call(cmd: Command): Promise<unknown> {
  // The SOFA unique name is interface:version[:uniqueId]; the consumer joins interfaceName and version back.
  const colon = cmd.service.indexOf(':');
  const consumer = client.createConsumer({
    interfaceName: colon < 0 ? cmd.service : cmd.service.slice(0, colon),
    version: colon < 0 ? undefined : cmd.service.slice(colon + 1),
    serverHost,
  });
  return consumer.ready().then(() => consumer.invoke(cmd.method, cmd.args ?? [], { responseTimeout: cmd.timeout ?? 3000 }));
}

const errorOf = (err: unknown) =>
  err instanceof Error ? { error: err.message, name: err.name } : { error: String(err), name: 'Error' };

async function batch(cmd: Command) {
  const total = cmd.batch ?? 0;
  const results: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let next = 0;
  let succeeded = 0;
  const start = Date.now();
  const worker = async () => {
    while (next < total) {
      next++;
      try {
        const key = JSON.stringify((await call(cmd)) ?? null);
        results[key] = (results[key] ?? 0) + 1;
        succeeded++;
      } catch (err) {
        const key = errorOf(err).error;
        errors[key] = (errors[key] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(cmd.concurrency ?? 1, total)) }, worker));
  return { total, succeeded, failed: total - succeeded, ms: Date.now() - start, results, errors };
}

async function run(line: string): Promise<object> {
  let cmd: Command;
  try {
    cmd = JSON.parse(line) as Command;
  } catch {
    return { ok: false, error: `bad command: ${line}`, name: 'SyntaxError' };
  }
  try {
    if (cmd.batch !== undefined) return { id: cmd.id, ok: true, batch: await batch(cmd) };
    return { id: cmd.id, ok: true, result: (await call(cmd)) ?? null };
  } catch (err) {
    return { id: cmd.id, ok: false, ...errorOf(err) };
  }
}

const pending = new Set<Promise<void>>();
const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (!line.trim()) return;
  const p = run(line).then((out) => void process.stdout.write(JSON.stringify(out) + '\n'));
  pending.add(p);
  void p.finally(() => pending.delete(p));
});
lines.on('close', async () => {
  await Promise.allSettled([...pending]);
  await client.close();
  process.exit(0);
});
