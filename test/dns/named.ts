/**
 * A real BIND9 named for the DNS tests, started on loopback (or in a namespace) in a temporary directory:
 * authoritative for rpc.cluster.local (dynamic, updates only with the test's TSIG key) and for fwd.test
 * (static names the proxy forwards to, with answers bigger than 512 and than 1232 bytes).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proc } from '../helpers/netns.js';

export const NAMED = '/usr/sbin/named';
export const ZONE = 'rpc.cluster.local';
export const KEY_NAME = 'xsidecar-test';

/** Why named cannot run here, or undefined. */
export function namedProblem(): string | undefined {
  const r = spawnSync(NAMED, ['-v'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return `${NAMED} is not installed (Debian package bind9)`;
  if (spawnSync('dig', ['-v'], { stdio: 'ignore' }).error) return 'dig is not installed (Debian package bind9-dnsutils)';
  return undefined;
}

export const keyFileText = (name: string, secret: string) => `key "${name}" {\n\talgorithm hmac-sha256;\n\tsecret "${secret}";\n};\n`;

/** TXT strings of 60 bytes: `count` of them make an answer of about count * 72 bytes. */
const txtRecords = (owner: string, count: number) =>
  Array.from({ length: count }, (_, i) => `${owner} IN TXT "${String(i).padStart(3, '0')}-${'x'.repeat(56)}"`).join('\n');

export interface Named {
  readonly port: number;
  readonly host: string;
  readonly dir: string;
  /** The key file the test's registrar uses (tsig-keygen format). */
  readonly keyFile: string;
  readonly secret: string;
  readonly proc: Proc;
  /** named's log lines so far (stderr with -g). */
  log(): string;
  dig(...args: string[]): string;
  stop(): Promise<void>;
}

export async function startNamed(o: { host?: string; port: number; spawnIn?: (cmd: string, args: string[]) => Proc }): Promise<Named> {
  const host = o.host ?? '127.0.0.1';
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-named-'));
  const secret = randomBytes(32).toString('base64');
  const keyFile = join(dir, 'update.key');
  writeFileSync(keyFile, keyFileText(KEY_NAME, secret));
  writeFileSync(
    join(dir, `${ZONE}.zone`),
    `$TTL 30\n@ IN SOA ns.${ZONE}. admin.${ZONE}. 1 60 60 600 30\n@ IN NS ns.${ZONE}.\nns IN A ${host}\n`,
  );
  writeFileSync(
    join(dir, 'fwd.test.zone'),
    [
      '$TTL 60',
      '@ IN SOA ns.fwd.test. admin.fwd.test. 1 60 60 600 30',
      '@ IN NS ns.fwd.test.',
      `ns IN A ${host}`,
      'www IN A 192.0.2.80',
      'www IN AAAA 2001:db8::80',
      txtRecords('big', 12), // ~900 bytes: over 512, under the 1232 EDNS size
      txtRecords('huge', 40), // ~2900 bytes: over any UDP size we use, so TCP
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'named.conf'),
    `include "${keyFile}";
options {
  directory "${dir}";
  pid-file none;
  listen-on port ${o.port} { ${host}; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  allow-query { any; };
  session-keyfile "${dir}/session.key";
  managed-keys-directory "${dir}";
  notify no;
};
controls { };
zone "${ZONE}" { type primary; file "${dir}/${ZONE}.zone"; allow-update { key "${KEY_NAME}"; }; };
zone "fwd.test" { type primary; file "${dir}/fwd.test.zone"; };
`,
  );
  // named -g logs to stderr; through stdout each line reaches Proc's waiters. The shell is its lifeline:
  // SIGTERM, or the test process going away (stdin closes), stops named, so no daemon outlives its test.
  const script = [
    'exec 3<&0',
    `${NAMED} -g -c ${join(dir, 'named.conf')} -n 1 2>&1 &`,
    'pid=$!',
    "trap 'kill $pid 2>/dev/null; wait $pid; exit 0' TERM INT",
    'cat <&3 >/dev/null &',
    'wait $!',
    'kill $pid 2>/dev/null; wait $pid',
  ].join('\n');
  const args = ['-c', script];
  const proc = o.spawnIn ? o.spawnIn('sh', args) : new Proc(spawn('sh', args, { stdio: ['pipe', 'pipe', 'pipe'] }), 'named');
  await proc.waitFor((l) => /\brunning$/.test(l.trim()), 30_000);
  const dig = (...args: string[]) => {
    const r = spawnSync('dig', [`@${host}`, '-p', String(o.port), '+time=10', '+tries=2', ...args], { encoding: 'utf8' });
    return r.stdout;
  };
  return {
    port: o.port,
    host,
    dir,
    keyFile,
    secret,
    proc,
    log: () => proc.lines.join('\n'),
    dig,
    async stop() {
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await proc.stop('SIGTERM');
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
