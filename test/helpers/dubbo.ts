/** The Dubbo peers (test/peers/dubbo-*.ts) as tests drive them: a provider process and a consumer process. */
import { type Proc, peer } from './netns.js';
import { spawnLocal } from './sidecar.js';

export type DubboClientKind = 'apache' | 'dubbo2js';

export interface DubboOutcome {
  ok: number;
  failed: number;
  results: Record<string, number>;
  errors: Record<string, number>;
  errorTypes: Record<string, number>;
  elapsedMs: number;
  firstFailure: number | null;
  lastFailure: number | null;
  okAfterLastFailure: number;
}

export interface DubboProvider {
  readonly proc: Proc;
  readonly port: number;
  readonly name: string;
  /** Heartbeat events the provider reported: received, sent, idle-close. */
  heartbeats(kind: 'received' | 'sent' | 'idle-close'): number;
  connections(): number;
}

export async function startDubboProvider(name: string, opts: { host?: string; port?: number; heartbeatMs?: number; spawnFn?: typeof spawnLocal } = {}): Promise<DubboProvider> {
  const args = ['--host', opts.host ?? '127.0.0.1', '--port', String(opts.port ?? 0), '--name', name];
  if (opts.heartbeatMs) args.push('--heartbeat-ms', String(opts.heartbeatMs));
  const proc = (opts.spawnFn ?? spawnLocal)(peer('dubbo-provider'), args, `dubbo-provider ${name}`);
  const ready = await proc.waitJson<{ ready?: boolean; port: number }>((o) => o.ready === true);
  const count = (prefix: string) => proc.lines.filter((l) => l.startsWith(prefix)).length;
  return {
    proc,
    port: ready.port,
    name,
    heartbeats: (kind) => count(`{"heartbeat":"${kind}"`),
    connections: () => count('{"connection"'),
  };
}

export interface DubboCall {
  service?: string;
  version?: string;
  group?: string;
  method?: string;
  args?: unknown[];
  attachments?: Record<string, string>;
  calls?: number;
  concurrency?: number;
  timeout?: number;
  durationMs?: number;
}

/** A consumer process holding ONE connection; each command runs over it and answers with its outcome. */
export class DubboClient {
  private nextId = 1;

  constructor(readonly proc: Proc) {}

  static local(kind: DubboClientKind, host: string, port: number, spawnFn = spawnLocal): DubboClient {
    return new DubboClient(spawnFn(peer('dubbo-consumer'), ['--client', kind, '--host', host, '--port', String(port), '--stdin'], `dubbo-consumer ${kind}`));
  }

  run(call: DubboCall, timeoutMs = 90_000): Promise<DubboOutcome> {
    const id = this.nextId++;
    this.proc.child.stdin!.write(`${JSON.stringify({ id, method: 'getUser', args: ['42'], timeout: 3000, ...call })}\n`);
    return this.proc.waitJson<DubboOutcome & { id: number }>((o) => o.id === id && typeof o.ok === 'number' && !('progress' in o), timeoutMs);
  }

  /** Completed calls so far of a running durationMs command (its progress lines). */
  progress(): number {
    for (let i = this.proc.lines.length - 1; i >= 0; i--) {
      const l = this.proc.lines[i]!;
      if (!l.includes('"progress":true')) continue;
      const o = JSON.parse(l) as { ok: number; failed: number };
      return o.ok + o.failed;
    }
    return 0;
  }
}
