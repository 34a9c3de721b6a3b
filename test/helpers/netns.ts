/**
 * Network-namespace test hosts: an "app" pod namespace (where the sidecar and the capture rules live)
 * and a "server" namespace joined by a veth pair. ClusterIPs (198.18.0.0/15) sit on the server's lo and
 * are routed over the veth, so from the app they are remote addresses that only capture can divert.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { cliPath, repoRoot } from './paths.js';

export const netnsRequired = process.env.XSIDECAR_REQUIRE_NETNS === '1';

const works = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return !r.error && r.status === 0;
};

/** Why namespace tests cannot run on this machine, or undefined when they can. */
export function netnsProblem(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  if (!works('ip', ['-V'])) return 'ip (iproute2) is not installed';
  if (!works('iptables', ['--version'])) return 'iptables is not installed';
  if (!works('setpriv', ['--version'])) return 'setpriv (util-linux) is not installed';
  return undefined;
}

/** tap options: skip with the reason, unless XSIDECAR_REQUIRE_NETNS=1 makes a missing prerequisite fatal. */
export function netnsGate(): { skip: string | false; problem: string | undefined } {
  const problem = netnsProblem();
  return { skip: problem && !netnsRequired ? `network namespace tests skipped: ${problem}` : false, problem };
}

export function sh(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

export const inNs = (ns: string, cmd: string, ...args: string[]) => sh('ip', 'netns', 'exec', ns, cmd, ...args);

/** A running child with its stdout split into lines (JSON lines parsed when they parse). */
export class Proc {
  readonly lines: string[] = [];
  private waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess, readonly label: string) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => !(w.pred(line) && (w.resolve(line), true)));
    });
    child.stderr?.on('data', (d) => this.lines.push(`stderr: ${d}`));
    this.exited = new Promise((r) => child.once('exit', (code) => r(code)));
  }

  /** The first line (already seen or still to come) that satisfies `pred`. */
  waitFor(pred: (line: string) => boolean, timeoutMs = 30_000): Promise<string> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.label}: timed out waiting; output so far:\n${this.lines.join('\n')}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      this.exited.then((code) => reject(new Error(`${this.label} exited (${code}) first; output:\n${this.lines.join('\n')}`)));
    });
  }

  waitJson<T = Record<string, unknown>>(pred: (o: T) => boolean, timeoutMs?: number): Promise<T> {
    return this.waitFor((l) => {
      try {
        return pred(JSON.parse(l) as T);
      } catch {
        return false;
      }
    }, timeoutMs).then((l) => JSON.parse(l) as T);
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.child.exitCode === null) this.child.kill(signal);
  }

  /** `kill`, then its exit: after it, nothing this process writes (a file in a directory to remove) is still being written. */
  stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    this.kill(signal);
    return this.exited;
  }
}

export interface SpawnOptions {
  /** Run as this uid/gid (the sidecar runs as 1337, as Istio's does). */
  readonly uid?: number;
  /** Ambient capabilities to keep after dropping root, e.g. ['net_admin'] for TPROXY. */
  readonly caps?: string[];
}

/** Starts `node <script> ...args` inside a namespace. */
export function spawnNode(ns: string, script: string, args: string[], opts: SpawnOptions = {}): Proc {
  const cmd = ['ip', 'netns', 'exec', ns];
  if (opts.uid !== undefined) {
    // dac_read_search: the checkout may sit in a directory only root can enter (CI clones into mktemp -d).
    const caps = ['dac_read_search', ...(opts.caps ?? [])].map((c) => `+${c}`).join(',');
    cmd.push('setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', `--inh-caps=${caps}`, `--ambient-caps=${caps}`);
  }
  cmd.push(process.execPath, script, ...args);
  // tap's NODE_OPTIONS hooks write under .tap/ at exit, which a process that dropped root may not do.
  const env = opts.uid === undefined ? process.env : { ...process.env, NODE_OPTIONS: undefined };
  const child = spawn(cmd[0]!, cmd.slice(1), { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'], env });
  return new Proc(child, `${ns}: ${script.split('/').pop()}`);
}

export const peer = (name: string) => join(repoRoot, 'dist/test/peers', `${name}.js`);

/** Runs a peer to completion and returns its last JSON line. */
export async function runPeer<T = Record<string, unknown>>(ns: string, name: string, ...args: string[]): Promise<T> {
  const p = spawnNode(ns, peer(name), args);
  await p.exited;
  const last = [...p.lines].reverse().find((l) => l.startsWith('{'));
  if (!last) throw new Error(`${name} printed no result: ${p.lines.join('\n')}`);
  return JSON.parse(last) as T;
}

export function writeTemp(name: string, content: unknown): string {
  const file = join(tmpdir(), `xsidecar-${process.pid}-${name}`);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

export interface Host {
  readonly ns: string;
  /** The address on its veth toward the app namespace. */
  readonly ip: string;
}

export interface Topology {
  readonly app: string;
  /** The first server namespace (which owns the ClusterIPs) and its address. */
  readonly server: string;
  readonly serverIp: string;
  readonly servers: readonly Host[];
  /** The app's address toward the first server: its "pod IP". */
  readonly podIp: string;
  /** Adds a ClusterIP on the first server namespace's lo, reachable from the app over the veth. */
  addClusterIp(ip: string): void;
  destroy(): void;
}

/**
 * Builds an app namespace joined by one veth pair to each of `count` server namespaces (198.19.N.1 on the
 * app side, 198.19.N.2 on server N's side). `id` keeps parallel test files apart.
 */
export function createTopology(id: string, count = 1): Topology {
  const app = `xs-${id}-app`;
  const names = Array.from({ length: count }, (_, i) => `xs-${id}-s${i + 1}`);
  const destroy = () => {
    for (const ns of [app, ...names]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  };
  destroy();
  sh('ip', 'netns', 'add', app);
  inNs(app, 'ip', 'link', 'set', 'lo', 'up');
  const servers = names.map((ns, i) => {
    sh('ip', 'netns', 'add', ns);
    const va = `xa${i + 1}${id}`.slice(0, 15);
    const vs = `xs${i + 1}${id}`.slice(0, 15);
    sh('ip', 'link', 'add', va, 'netns', app, 'type', 'veth', 'peer', 'name', vs, 'netns', ns);
    const ip = `198.19.${i + 1}.2`;
    inNs(app, 'ip', 'addr', 'add', `198.19.${i + 1}.1/24`, 'dev', va);
    inNs(ns, 'ip', 'addr', 'add', `${ip}/24`, 'dev', vs);
    inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
    for (const [n, dev] of [[app, va], [ns, vs]] as const) inNs(n, 'ip', 'link', 'set', dev, 'up');
    return { ns, ip };
  });
  inNs(app, 'ip', 'route', 'add', '198.18.0.0/15', 'via', servers[0]!.ip);
  return {
    app,
    server: servers[0]!.ns,
    serverIp: servers[0]!.ip,
    servers,
    podIp: '198.19.1.1',
    addClusterIp: (ip) => {
      inNs(servers[0]!.ns, 'ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo');
    },
    destroy,
  };
}

/** Starts the sidecar as UID 1337 inside `ns` and waits for its start-up line. */
export async function startSidecar(ns: string, args: string[], opts: SpawnOptions = {}): Promise<Proc> {
  const p = spawnNode(ns, cliPath, ['run', ...args], { uid: 1337, ...opts });
  await p.waitJson<{ msg?: string }>((o) => o.msg === 'xsidecar started');
  return p;
}

export const iptablesCli = (ns: string, ...args: string[]) => inNs(ns, process.execPath, cliPath, 'iptables', ...args);
