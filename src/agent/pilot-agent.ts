/**
 * The `pilot-agent` commands Istio's templates exec inside the istio-proxy container:
 * `request [--debug-port=15000] METHOD PATH [BODY]` (native sidecars' preStop: `--debug-port=15020 POST drain`)
 * and `wait` (holdApplicationUntilProxyStarts' postStart: poll /healthz/ready until it answers 200).
 */
import { parseArgs } from 'node:util';
import { http } from '../sys/builtins.js';

/** pilot-agent allows only the proxy's own local ports. */
const ALLOWED_PORTS = [15000, 15004, 15020, 15021];

export interface Io {
  out(text: string): void;
  err(text: string): void;
}
const stdio: Io = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };

function call(method: string, port: number, path: string, body: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, timeout: timeoutMs, headers: body ? { 'content-length': Buffer.byteLength(body) } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

export async function requestCommand(argv: string[], io: Io = stdio): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { 'debug-port': { type: 'string', default: '15000' } } });
  const port = Number(values['debug-port']);
  if (!ALLOWED_PORTS.includes(port)) {
    io.err(`pilot-agent request: debug port ${values['debug-port']} is not in allowed list [${ALLOWED_PORTS.join(' ')}]\n`);
    return 1;
  }
  const [method, rawPath, body = ''] = positionals;
  if (!method || rawPath === undefined) {
    io.err('usage: pilot-agent request [--debug-port=15000] <method> <path> [<body>]\n');
    return 1;
  }
  const path = rawPath.startsWith('/') ? rawPath : `/${rawPath}`;
  try {
    const r = await call(method.toUpperCase(), port, path, body, 60_000);
    io.out(r.body);
    if (r.status < 200 || r.status >= 300) {
      io.err(`pilot-agent request: ${method.toUpperCase()} ${path} on ${port}: HTTP ${r.status}\n`);
      return 1;
    }
    return 0;
  } catch (e) {
    io.err(`pilot-agent request: ${method.toUpperCase()} ${path} on ${port}: ${(e as Error).message}\n`);
    return 1;
  }
}

export async function waitCommand(argv: string[], io: Io = stdio): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string', default: 'http://localhost:15021/healthz/ready' },
      timeoutSeconds: { type: 'string', default: '60' },
      requestTimeoutMillis: { type: 'string', default: '500' },
      periodMillis: { type: 'string', default: '500' },
    },
  });
  const url = new URL(values.url!);
  const deadline = Date.now() + Number(values.timeoutSeconds) * 1000;
  let last = '';
  while (Date.now() < deadline) {
    try {
      // localhost is 127.0.0.1 here: a scratch image may have no /etc/hosts outside Kubernetes.
      const r = await call('GET', Number(url.port || 80), url.pathname + url.search, '', Number(values.requestTimeoutMillis));
      if (r.status === 200) {
        io.out('xsidecar is ready\n');
        return 0;
      }
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, Number(values.periodMillis)));
  }
  io.err(`timeout waiting for the proxy to become ready. Last error: ${last}\n`);
  return 1;
}
