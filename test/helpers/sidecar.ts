/** Runs peers and the sidecar as separate processes on loopback, with every port chosen by the kernel. */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { cliPath, repoRoot } from './paths.js';
import { Proc, peer, writeTemp } from './netns.js';

export interface LocalSidecar {
  readonly proc: Proc;
  readonly admin: string;
  readonly prometheus: string;
  readonly health: string;
  metric(name: string, labels?: string): Promise<number>;
}

export function spawnLocal(script: string, args: string[], label = script.split('/').pop()!, env?: Record<string, string>): Proc {
  return new Proc(spawn(process.execPath, [script, ...args], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'], env: env && { ...process.env, ...env } }), label);
}

/** A port free right now on loopback, for a peer that cannot report the one it was given for port 0. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Sum of a metric's samples whose labels include `labels` (e.g. 'cluster="a"'). */
export function readMetric(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !labels.split(',').every((l) => line.includes(l))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/**
 * Resolves once `read()` reaches `n`: a test that acts "during the load" waits for the load to have begun
 * rather than for a fixed time, which a faster machine could outrun.
 */
export async function whenAtLeast(read: () => Promise<number>, n: number, timeoutMs = 20_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (v >= n) return v;
    if (Date.now() > deadline) throw new Error(`still ${v} after ${timeoutMs} ms, waiting for ${n}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `env`: extra environment (a pod's identity); `startTimeoutMs`: how long to wait for it to start. */
export async function startLocalSidecar(name: string, bootstrap: object, extra: string[] = [], opts: { env?: Record<string, string>; startTimeoutMs?: number } = {}): Promise<LocalSidecar> {
  const file = writeTemp(`${name}.json`, { admin: { address: { socket_address: { address: '127.0.0.1', port_value: 0 } } }, ...bootstrap });
  const proc = spawnLocal(cliPath, ['run', '-c', file, '--health-port', '0', '--prometheus-port', '0', ...extra], `sidecar ${name}`, opts.env);
  const started = await proc.waitJson<{ msg?: string; admin: string; prometheus: string; health: string }>((o) => o.msg === 'xsidecar started', opts.startTimeoutMs);
  const prometheus = started.prometheus.replace('0.0.0.0', '127.0.0.1');
  return {
    proc,
    admin: started.admin,
    prometheus,
    health: started.health.replace('0.0.0.0', '127.0.0.1'),
    metric: async (metricName, labels) => readMetric(await (await fetch(`http://${prometheus}/stats/prometheus`)).text(), metricName, labels),
  };
}

export interface BoltServer {
  readonly proc: Proc;
  readonly port: number;
  readonly name: string;
}

export async function startBoltServer(name: string, host = '127.0.0.1', port = 0, spawnFn = spawnLocal): Promise<BoltServer> {
  const proc = spawnFn(peer('bolt-server'), ['--host', host, '--port', String(port), '--name', name], `bolt-server ${name}`);
  const ready = await proc.waitJson<{ ready?: boolean; port: number }>((o) => o.ready === true);
  return { proc, port: ready.port, name };
}

export interface BatchResult {
  total: number;
  succeeded: number;
  failed: number;
  results: Record<string, number>;
  errors: Record<string, number>;
}

/** A sofa-rpc-node RpcClient process; `call` and `batch` send JSON commands and await their answers. */
export class BoltClient {
  private nextId = 1;

  constructor(readonly proc: Proc) {}

  static local(server: string): BoltClient {
    return new BoltClient(spawnLocal(peer('bolt-client'), ['--server', server], 'bolt-client'));
  }

  private async send<T>(cmd: object, timeoutMs = 60_000): Promise<T> {
    const id = this.nextId++;
    this.proc.child.stdin!.write(`${JSON.stringify({ id, ...cmd })}\n`);
    return this.proc.waitJson<T & { id: number }>((o) => o.id === id, timeoutMs);
  }

  call(method: string, args: unknown[] = [], opts: { service?: string; timeout?: number } = {}) {
    return this.send<{ ok: boolean; result?: unknown; error?: string; name?: string }>({ service: opts.service ?? 'com.nodejs.test.TestService:1.0', method, args, timeout: opts.timeout ?? 3000 });
  }

  async batch(method: string, total: number, concurrency: number, opts: { service?: string; args?: unknown[]; timeout?: number } = {}): Promise<BatchResult> {
    const r = await this.send<{ batch: BatchResult }>({ service: opts.service ?? 'com.nodejs.test.TestService:1.0', method, args: opts.args ?? [], batch: total, concurrency, timeout: opts.timeout ?? 3000 });
    return r.batch;
  }

  close(): void {
    this.proc.child.stdin!.end();
  }
}
