/**
 * The mesh's trust material for tests and a running test CA: a root (`O=cluster.local`), istiod's serving
 * certificate (DNS `istiod.istio-system.svc`), a token file, and the test CA process on loopback (or in
 * a namespace, through `spawnFn`).
 */
import { writeFileSync } from 'node:fs';
import { peer, Proc } from './netns.js';
import { type Issuer, issueLeaf, makeRoot, writeFiles } from './pki.js';
import { type LocalSidecar, spawnLocal, startLocalSidecar } from './sidecar.js';

export const ISTIOD_SAN = 'istiod.istio-system.svc';
export const TOKEN = 'test-token-of-the-pod';
export const CLUSTER_ID = 'Kubernetes';

export interface MeshPki {
  readonly root: Issuer;
  /** Paths: root-cert.pem, root-key.pem, istiod.pem, istiod-key.pem, istio-token. */
  readonly file: (name: string) => string;
  setToken(token: string): void;
}

export async function makeMeshPki(): Promise<MeshPki> {
  const root = await makeRoot('cluster.local');
  const istiod = await issueLeaf(root, { dns: [ISTIOD_SAN], subject: 'O=istiod' });
  const file = writeFiles({
    'root-cert.pem': root.certPem,
    'root-key.pem': root.keyPem,
    'istiod.pem': istiod.certPem + root.certPem,
    'istiod-key.pem': istiod.keyPem,
    'istio-token': TOKEN,
  });
  return { root, file, setToken: (t) => writeFileSync(file('istio-token'), t) };
}

export class TestCa {
  private constructor(
    readonly proc: Proc,
    readonly port: number,
  ) {}

  static async start(pki: MeshPki, opts: { host?: string; port?: number; maxTtl?: number; spawnFn?: (script: string, args: string[]) => Proc } = {}): Promise<TestCa> {
    const args = [
      '--root-cert', pki.file('root-cert.pem'), '--root-key', pki.file('root-key.pem'),
      '--tls-cert', pki.file('istiod.pem'), '--tls-key', pki.file('istiod-key.pem'),
      '--token', TOKEN, '--cluster-id', CLUSTER_ID,
      '--host', opts.host ?? '127.0.0.1', '--port', String(opts.port ?? 0), '--max-ttl', String(opts.maxTtl ?? 86400),
    ];
    const proc = (opts.spawnFn ?? ((s, a) => spawnLocal(s, a, 'test-ca')))(peer('test-ca'), args);
    const l = await proc.waitJson<{ event: string; port: number }>((o) => o.event === 'listening', 120_000);
    return new TestCa(proc, l.port);
  }

  /** Sends a command and waits for its "done". */
  async command(cmd: { cmd: string } & Record<string, unknown>): Promise<void> {
    const done = () => this.proc.lines.filter((l) => l.includes('"event":"done"') && l.includes(`"cmd":"${cmd.cmd}"`)).length;
    const before = done();
    this.proc.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
    const deadline = Date.now() + 30_000;
    while (done() <= before) {
      if (Date.now() > deadline) throw new Error(`test CA: no answer to ${JSON.stringify(cmd)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  issued(): { spiffe: string; ttl: number; algorithm: string; metadata?: unknown }[] {
    return this.proc.lines.filter((l) => l.includes('"event":"issued"')).map((l) => JSON.parse(l));
  }

  refused(): string[] {
    return this.proc.lines.filter((l) => l.includes('"event":"refused"')).map((l) => JSON.parse(l).reason as string);
  }

  stop(): void {
    this.proc.kill('SIGKILL');
  }
}

/** The environment a sidecar gets from Istio's injector (plus where our test files are). */
export function identityEnv(caAddress: string, ns: string, sa: string, extra: Record<string, string> = {}): Record<string, string> {
  return { CA_ADDR: caAddress, ISTIOD_SAN, POD_NAMESPACE: ns, SERVICE_ACCOUNT: sa, ISTIO_META_CLUSTER_ID: CLUSTER_ID, TRUST_DOMAIN: 'cluster.local', ...extra };
}

export const identityFlags = (pki: MeshPki) => ['--ca-root-cert', pki.file('root-cert.pem'), '--token-file', pki.file('istio-token')];

/** A sidecar on loopback (every port from the kernel) with the pod's identity environment. */
export const startMeshSidecar = (name: string, bootstrap: object, env: Record<string, string>, extra: string[] = []): Promise<LocalSidecar> =>
  startLocalSidecar(name, bootstrap, extra, { env, startTimeoutMs: 120_000 });

/** Polls /healthz/ready until it answers `status`. */
export async function whenReady(health: string, status = 200, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await fetch(`http://${health}/healthz/ready`).then((x) => x.status, () => 0);
    if (r === status) return;
    if (Date.now() > deadline) throw new Error(`/healthz/ready still ${r}, waiting for ${status}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** The port a sidecar's listener is bound to, from the admin API (`/listeners`: NAME::HOST:PORT). */
export async function listenerPort(admin: string, name: string): Promise<number> {
  const text = await (await fetch(`http://${admin}/listeners`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}::`));
  const port = Number(line?.split(':').pop());
  if (!port) throw new Error(`no listener ${name} in ${text}`);
  return port;
}
