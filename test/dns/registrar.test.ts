/**
 * The registrar against a real BIND named authoritative for rpc.cluster.local, which accepts updates
 * only signed with the test's TSIG key: records appear, a wrong key is refused (and both sides log it),
 * withdrawal keeps the names other pods still own, and the sidecar process registers when ready and
 * withdraws on SIGTERM.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { pino } from 'pino';
import { Registrar } from '../../src/dns/registrar.js';
import { loadKeyFile, parseKeyFile, type TsigKey } from '../../src/dns/tsig.js';
import { rr, sendUpdate, txtRdata } from '../../src/dns/update.js';
import { TYPE } from '../../src/dns/wire.js';
import { writeTemp } from '../helpers/netns.js';
import { startLocalSidecar } from '../helpers/sidecar.js';
import { freePort } from '../xds/harness.js';
import { dig } from './client.js';
import { keyFileText, KEY_NAME, type Named, namedProblem, startNamed, ZONE } from './named.js';

const problem = namedProblem();
const required = process.env.XSIDECAR_REQUIRE_NETNS === '1';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

const short = (named: Named, name: string, type = 'A') => named.dig('+short', name, type).trim().split('\n').filter((l) => l !== '').sort();

async function until<T>(f: () => T, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

t.test('registrar against BIND', { skip: problem && !required ? problem : false }, async (t) => {
  if (problem) return t.fail(problem);
  const named = await startNamed({ port: await freePort() });
  t.teardown(() => named.stop());
  const key: TsigKey = loadKeyFile(named.keyFile);
  const server = { host: '127.0.0.1', port: named.port };
  const ifaces = ['com.alipay.userservice.interface1', 'com.alipay.userservice.interface-2'];
  const fq = (i: string) => `${i}.${ZONE}`;
  const registrar = (owner: string, k = key, ips = ['198.18.0.10']) => {
    const c = capture();
    const published: string[][] = [];
    const r = new Registrar({
      server, zone: ZONE, key: k, interfaces: ifaces, serviceIps: () => ips, owner, ttlSeconds: 30, intervalMs: 60_000, timeoutMs: 3000, log: c.log,
      onPublished: (names) => published.push(names.map((n) => n.name)),
    });
    return { r, ...c, published };
  };

  t.test('the key file is read as tsig-keygen writes it', async (t) => {
    t.equal(key.name, KEY_NAME);
    t.equal(key.algorithm, 'hmac-sha256');
    t.equal(key.secret.length, 32);
    t.throws(() => parseKeyFile('key "k" { algorithm hmac-md5; secret "AAAA"; };', 'f'), /hmac-md5 is not supported/);
    t.throws(() => parseKeyFile('nothing here', 'f.key'), /f.key: no key statement/);
  });

  const a = registrar('pod-a');
  const b = registrar('pod-b');

  t.test('records appear, with this pod as an owner', async (t) => {
    a.r.start();
    const got = await until(() => short(named, fq(ifaces[0]!)), (v) => v.length > 0);
    t.same(got, ['198.18.0.10']);
    t.same(short(named, fq(ifaces[1]!)), ['198.18.0.10'], 'every interface, dashes kept');
    t.same(short(named, fq(ifaces[0]!), 'TXT'), ['"xsidecar-owner=pod-a"']);
    // The server applies the update before the registrar has read its answer: wait for that, not for dig.
    t.ok(await until(() => a.lines.some((l) => l.msg === 'dns registrar: interfaces registered'), (v) => v), 'logged');
    t.same(a.published.at(-1), ifaces.map((i) => fq(i).toLowerCase()), 'handed to the local proxy');
    b.r.start();
    const owners = await until(() => short(named, fq(ifaces[0]!), 'TXT'), (v) => v.length === 2);
    t.same(owners, ['"xsidecar-owner=pod-a"', '"xsidecar-owner=pod-b"'], 'a second pod of the app adds its ownership');
    t.same(short(named, fq(ifaces[0]!)), ['198.18.0.10'], 'one address record for both');
  });

  t.test('a wrong key is refused and logged on both sides', async (t) => {
    const wrongSecret = { ...key, secret: randomBytes(32) };
    const r1 = await sendUpdate(server, ZONE, wrongSecret, [], [rr.add(fq('com.evil.x'), TYPE.A, 30, Buffer.from([6, 6, 6, 6]))], 3000);
    t.equal(r1.result, 'BADSIG', 'right key name, wrong secret: BADSIG');
    t.equal(r1.rcode, 9, 'NOTAUTH');
    const unknown = parseKeyFile(keyFileText('no-such-key', randomBytes(32).toString('base64')), 'k');
    const r2 = await sendUpdate(server, ZONE, unknown, [], [rr.add(fq('com.evil.x'), TYPE.A, 30, Buffer.from([6, 6, 6, 6]))], 3000);
    t.equal(r2.result, 'BADKEY', 'unknown key: BADKEY');
    t.same(short(named, fq('com.evil.x')), [], 'nothing was written');
    t.match(named.log(), /tsig verify failure \(BADSIG\)/, 'named logged the bad signature');
    const bad = registrar('pod-bad', wrongSecret);
    bad.r.start();
    const err = await until(() => bad.lines.find((l) => l.msg === 'dns registrar: update register failed: BADSIG'), (v) => v !== undefined);
    bad.r.stop();
    t.ok(err, 'the registrar logs the failure with its reason');
    t.match(err, { result: 'BADSIG', zone: ZONE, key: KEY_NAME });
    t.same(short(named, fq(ifaces[0]!), 'TXT').length, 2, 'the real owners are untouched');
  });

  t.test('REFUSED, NOTAUTH, timeouts and unreachable servers are results, never throws', async (t) => {
    const update = [rr.deleteRR(fq('x'), TYPE.TXT, txtRdata('y'))];
    t.equal((await sendUpdate(server, 'fwd.test', key, [], update, 3000)).result, 'REFUSED', 'a zone that takes no updates');
    t.equal((await sendUpdate(server, 'not-served.example', key, [], update, 3000)).result, 'NOTAUTH', 'a zone the server does not serve');
    const closed = await freePort(); // nothing listens on TCP: refused
    t.equal((await sendUpdate({ host: '127.0.0.1', port: closed }, ZONE, key, [], update, 2000)).result, 'error');
    const mute = createServer(() => {}); // accepts and never answers
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    t.teardown(() => mute.close());
    const started = Date.now();
    t.equal((await sendUpdate({ host: '127.0.0.1', port: (mute.address() as { port: number }).port }, ZONE, key, [], update, 1000)).result, 'timeout');
    t.ok(Date.now() - started < 10_000, 'bounded by the timeout');
  });

  t.test('withdrawal leaves names another pod still owns', async (t) => {
    await a.r.withdraw();
    t.same(short(named, fq(ifaces[0]!), 'TXT'), ['"xsidecar-owner=pod-b"'], "pod-a's ownership is gone");
    t.same(short(named, fq(ifaces[0]!)), ['198.18.0.10'], 'pod-b still serves it: the address stays');
    const w = a.lines.find((l) => l.msg === 'dns registrar: withdrawn');
    t.match(w, { removed: [], keptForOtherPods: ifaces.map((i) => fq(i).toLowerCase()) });
    await b.r.withdraw();
    t.same(short(named, fq(ifaces[0]!)), [], 'the last pod out removes the name');
    t.same(short(named, fq(ifaces[1]!), 'TXT'), []);
    t.equal(named.dig(fq(ifaces[0]!), 'A').includes('NXDOMAIN'), true, 'NXDOMAIN');
  });

  t.test('the sidecar registers when ready and withdraws on SIGTERM', async (t) => {
    const dnsPort = await freePort();
    const env = { XSIDECAR_INTERFACES: 'com.alipay.userservice.interface1,com.alipay.userservice.interface2', XSIDECAR_SERVICE_IP: '198.18.0.20', POD_NAME: 'sidecar-pod' };
    Object.assign(process.env, env); // startLocalSidecar passes the test's environment on
    t.teardown(() => {
      for (const k of Object.keys(env)) delete process.env[k];
    });
    const sc = await startLocalSidecar('dns-registrar', {}, [
      '--dns-port', String(dnsPort), '--dns-upstream', `127.0.0.1:${named.port}`,
      '--dns-update-server', `127.0.0.1:${named.port}`, '--dns-update-zone', ZONE, '--dns-update-key', named.keyFile, '--dns-update-ttl', '20s',
      '--drain-timeout', '1s',
    ]);
    t.teardown(() => sc.proc.kill('SIGKILL'));
    const got = await until(() => short(named, fq('com.alipay.userservice.interface2')), (v) => v.length > 0);
    t.same(got, ['198.18.0.20']);
    t.match(named.dig(fq('com.alipay.userservice.interface1'), 'A'), /\s20\s+IN\s+A\s+198\.18\.0\.20/, '--dns-update-ttl applies');
    t.same(short(named, fq('com.alipay.userservice.interface1'), 'TXT'), ['"xsidecar-owner=sidecar-pod"'], 'owner from POD_NAME');
    await until(() => dig(dnsPort, fq('com.alipay.userservice.interface1')).answers, (v) => v.length > 0, 5000);
    t.same(dig(dnsPort, fq('com.alipay.userservice.interface1')).answers, ['198.18.0.20'], "the sidecar's own proxy answers its records");
    t.ok((await sc.metric('xsidecar_dns_registrar_updates_total', 'op="register",result="NOERROR"')) >= 1, 'metric');
    sc.proc.kill('SIGTERM');
    t.equal(await sc.proc.exited, 0, 'drained and exited 0');
    t.same(short(named, fq('com.alipay.userservice.interface1')), [], 'withdrawn on drain');
    t.ok(sc.proc.lines.some((l) => l.includes('dns registrar: withdrawn')));
  });
});

t.test('key files: comments are dropped only outside quoted strings', async (t) => {
  // "//" occurs in random base64 secrets (about one key in a hundred): inside quotes it is no comment.
  const slashes = parseKeyFile('# made by hand\nkey "k" { // the key\n algorithm hmac-sha256; /* sha */ secret "ab//cd+/wxyz"; };', 'f');
  t.equal(slashes.secret.toString('base64'), 'ab//cd+/wxyz');
  t.equal(slashes.name, 'k');
  t.throws(() => parseKeyFile('key "k" { algorithm hmac-sha256; secret "a!b"; };', 'f'), /no base64 secret/);
  t.throws(() => parseKeyFile('// key "k" { algorithm hmac-sha256; secret "AAAA"; };', 'f'), /no key statement/, 'a commented-out key is no key');
});

t.test('registrar flags: clear errors', async (t) => {
  const { dnsFlagsFrom } = await import('../../src/dns/flags.js');
  const keyFile = writeTemp('flags.key', keyFileText('k', randomBytes(32).toString('base64')));
  const base = { 'dns-update-server': '127.0.0.1:53', 'dns-update-zone': ZONE, 'dns-update-key': keyFile };
  t.throws(() => dnsFlagsFrom({ 'dns-update-zone': ZONE }, {}), /--dns-update-server .* is required/);
  t.throws(() => dnsFlagsFrom(base, {}), /--dns-interfaces \(XSIDECAR_INTERFACES\) is required/);
  t.throws(() => dnsFlagsFrom(base, { XSIDECAR_INTERFACES: 'a.b' }), /needs the app's ClusterIP/);
  t.throws(() => dnsFlagsFrom(base, { XSIDECAR_INTERFACES: 'a.b', XSIDECAR_SERVICE_IP: 'nope' }), /"nope" is not an IP address/);
  t.throws(() => dnsFlagsFrom({ ...base, 'dns-update-key': '/nonexistent.key' }, { XSIDECAR_INTERFACES: 'a.b', XSIDECAR_SERVICE_IP: '10.0.0.1' }), /nonexistent.key: cannot read/);
  t.throws(() => dnsFlagsFrom({ 'dns-port': '99999' }, {}), /--dns-port: expected 0..65535/);
  t.throws(() => dnsFlagsFrom({ 'dns-upstream': '1.2.3.4:x' }, {}), /--dns-upstream: expected HOST\[:PORT\]/);
  t.throws(() => dnsFlagsFrom({ 'dns-upstream': 'resolver.example:53' }, {}), /--dns-upstream: expected an IP address/);
  t.same(dnsFlagsFrom({ 'dns-upstream': '10.0.0.1, [fd00::1]:5353' }, {}).upstreams, ['10.0.0.1', '[fd00::1]:5353']);
  const ok = dnsFlagsFrom({ ...base, 'dns-update-interval': '10s' }, { XSIDECAR_INTERFACES: 'com.a.b, com.c.d', XSIDECAR_SERVICE_IP: '10.0.0.1,fd00::1' });
  t.same(ok.registrar?.interfaces, ['com.a.b', 'com.c.d']);
  t.same(ok.registrar?.serviceIps, ['10.0.0.1', 'fd00::1']);
  t.equal(ok.registrar?.intervalMs, 10_000);
  t.equal(ok.registrar?.ttlSeconds, 30, 'TTL default 30 s');
});
