import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { netnsGate, sh as hostSh } from './helpers/netns.js';
import { fixture, repoRoot } from './helpers/paths.js';
import { defaultCaptureConfig, loadDnsServers, parseCaptureArgs, type CaptureConfig } from '../src/capture/config.js';
import { buildRules } from '../src/capture/rules.js';
import { applyRules, cleanRules, dryRun, spawnRunner, type Runner } from '../src/capture/apply.js';
import { iptablesCommand } from '../src/capture/command.js';

const golden = (name: string) => readFileSync(fixture('istio', 'iptables', name), 'utf8');
/** istio-iptables goldens interleave the stubbed iptables-save calls with the restore input. */
const restoreLines = (text: string) => text.split('\n').filter((l) => l !== '' && !/^ip6?tables-save$/.test(l));
const lines = (text: string) => text.split('\n').filter((l) => l !== '');

// What the istio CNI plugin passes for a default pod: it merges the status port into the
// inbound exclusions (15020,15021,15090) and also excludes it outbound (-o 15020).
const CNI_ARGS = ['-p', '15001', '-z', '15006', '-u', '1337', '-g', '1337', '-m', 'REDIRECT', '-i', '*', '-b', '*', '-d', '15020,15021,15090', '-o', '15020'];

t.test('goldens: istio CNI plugin', async (t) => {
  t.test('basic (REDIRECT)', async (t) => {
    const plan = buildRules(parseCaptureArgs(CNI_ARGS));
    t.same(lines(plan.iptables), lines(golden('cni-plugin-basic.txt.golden')));
    t.equal(plan.ip6tables, undefined);
    t.same(plan.ipRoutes, []);
  });

  t.test('TPROXY', async (t) => {
    const plan = buildRules(parseCaptureArgs([...CNI_ARGS, '-m', 'TPROXY']));
    t.same(lines(plan.iptables), lines(golden('cni-plugin-tproxy.txt.golden')));
    t.same(plan.ipRoutes, [
      ['ip', '-f', 'inet', 'rule', 'add', 'fwmark', '1337', 'lookup', '133'],
      ['ip', '-f', 'inet', 'route', 'add', 'local', 'default', 'dev', 'lo', 'table', '133'],
    ]);
  });

  t.test('DNS capture', async (t) => {
    const plan = buildRules(parseCaptureArgs([...CNI_ARGS, '--redirect-dns', '--capture-all-dns']));
    t.same(lines(plan.iptables), lines(golden('cni-plugin-dns.txt.golden')));
  });

  t.test('injection defaults differ from the CNI golden only where the CNI flags do', async (t) => {
    // Injected istio-init gets -d 15090,15021,15020 and no -o; the CNI plugin sorts the
    // exclusions differently and adds -o 15020, so the golden needs that adjustment.
    const want = lines(golden('cni-plugin-basic.txt.golden')).filter((l) => !/^-A ISTIO_OUTPUT -p (tcp|udp) --dport 15020 -j RETURN$/.test(l));
    const excl = want.findIndex((l) => l.includes('ISTIO_INBOUND -p tcp --dport 15020'));
    want.splice(excl, 3, ...want.slice(excl, excl + 3).reverse());
    t.same(lines(buildRules(parseCaptureArgs([])).iptables), want);
    t.same(parseCaptureArgs([]), parseCaptureArgs(['-p', '15001', '-z', '15006', '-u', '1337', '-g', '1337', '-m', 'REDIRECT', '-i', '*', '-b', '*', '-d', '15090,15021,15020']));
  });
});

t.test('goldens: istio-iptables', async (t) => {
  // Istio's capture tests start from empty -b/-i/-d and inject DNS servers instead of reading resolv.conf.
  const base = ['-b', '', '-i', '', '-d', ''];
  const render = (cfg: CaptureConfig) => {
    const plan = buildRules(cfg);
    return lines(plan.iptables + (plan.ip6tables ?? ''));
  };

  t.test('empty', async (t) => {
    t.same(render(parseCaptureArgs(base)), restoreLines(golden('istio-iptables-empty.golden')));
  });
  t.test('tproxy + dns + ipv6 + excluded NIC', async (t) => {
    const cfg = parseCaptureArgs([...base, '-m', 'TPROXY', '-b', '*', '-x', '1.1.0.0/16', '-i', '9.9.0.0/16', '--redirect-dns', '-c', 'not-istio-nic', '--ipv6']);
    t.same(render({ ...cfg, dnsServersV4: ['127.0.0.53'] }), restoreLines(golden('istio-iptables-tproxy.golden')));
  });
  t.test('dns uid/gid lists', async (t) => {
    const cfg = parseCaptureArgs([...base, '-u', '3,4', '-g', '1,2', '--redirect-dns', '--ipv6']);
    t.same(render({ ...cfg, dnsServersV4: ['127.0.0.53'], dnsServersV6: ['::127.0.0.53'] }), restoreLines(golden('istio-iptables-dns-uid-gid.golden')));
  });
});

t.test('argument parsing', async (t) => {
  t.test('defaults and syntax forms', async (t) => {
    const d = defaultCaptureConfig();
    t.equal(d.proxyPort, 15001);
    t.same(d.inboundPortsExclude, [15090, 15021, 15020]);
    const cfg = parseCaptureArgs(['--envoy-port=15002', '-z=15007', '-u', '1000,1001', '--redirect-dns=false', '-n', '-t', '7', '-r', '200', '-k', 'eth1']);
    t.equal(cfg.proxyPort, 15002);
    t.equal(cfg.inboundCapturePort, 15007);
    t.same(cfg.proxyUid, [1000, 1001]);
    t.same(cfg.proxyGid, [1000, 1001], 'gid defaults to the uids');
    t.equal(cfg.redirectDns, false);
    t.equal(cfg.dryRun, true);
    t.equal(cfg.tproxyMark, 7);
    t.equal(cfg.tproxyRouteTable, 200);
    t.same(cfg.rerouteVirtualInterfaces, ['eth1']);
    t.same(parseCaptureArgs(['-b', '']).inboundPorts, []);
    t.same(parseCaptureArgs(['-d', '6000,7000,']).inboundPortsExclude, [6000, 7000]);
    t.equal(parseCaptureArgs(['--cleanup-only']).clean, true);
    t.equal(parseCaptureArgs(['-p15002']).proxyPort, 15002, 'pflag-style glued short value');
  });

  const bad: [string[], RegExp][] = [
    [['-p', '70000'], /--envoy-port \(-p\): invalid port "70000"/],
    [['-z', 'abc'], /--inbound-capture-port \(-z\): invalid port "abc"/],
    [['-d', '15090,x'], /--istio-local-exclude-ports \(-d\): invalid port "x"/],
    [['-p'], /--envoy-port \(-p\) needs a value/],
    [['-i', '10.0.0.0/33'], /--istio-service-cidr \(-i\): invalid CIDR "10.0.0.0\/33"/],
    [['-x', '10.0.0.1'], /--istio-service-exclude-cidr \(-x\): invalid CIDR "10.0.0.1"/],
    [['-x', '*'], /'\*' is not allowed/],
    [['-m', 'NAT'], /unknown interception mode "NAT" \(expected REDIRECT or TPROXY\)/],
    [['--bogus'], /unknown flag --bogus/],
    [['-Z', '1'], /unknown flag -Z/],
    [['extra'], /unexpected argument "extra"/],
    [['-u', 'root'], /--proxy-uid \(-u\): invalid id "root"/],
    [['--redirect-dns=maybe'], /invalid boolean "maybe"/],
    [['-c', 'a/b'], /invalid interface name "a\/b"/],
    [['--dry-run', '--clean'], /cannot be combined/],
  ];
  for (const [argv, re] of bad) {
    t.throws(() => parseCaptureArgs(argv), re, argv.join(' '));
  }
});

t.test('resolv.conf servers feed DNS capture', async (t) => {
  const cfg = loadDnsServers(parseCaptureArgs(['--redirect-dns']), '# x\nnameserver 10.96.0.10\nnameserver fd00::10\nsearch svc\n');
  t.same(cfg.dnsServersV4, ['10.96.0.10']);
  t.same(cfg.dnsServersV6, ['fd00::10']);
  t.match(buildRules(cfg).iptables, '-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053');
  t.notMatch(buildRules(parseCaptureArgs(['--redirect-dns'])).iptables, 'ISTIO_OUTPUT_DNS', 'no servers: DNS capture off, as in istio');
});

t.test('dry run and command', async (t) => {
  const text = dryRun(parseCaptureArgs([...CNI_ARGS, '-m', 'TPROXY']));
  t.ok(text.startsWith(golden('cni-plugin-tproxy.txt.golden')), 'restore input comes first, pipeable into iptables-restore');
  t.match(text, '# ip -f inet rule add fwmark 1337 lookup 133\n');

  let out = '';
  let err = '';
  const io = { out: (s: string) => { out += s; }, err: (s: string) => { err += s; } };
  t.equal(await iptablesCommand([...CNI_ARGS, '--dry-run'], io), 0);
  t.equal(out, golden('cni-plugin-basic.txt.golden'));
  t.equal(await iptablesCommand(['-m', 'bogus'], io), 2);
  t.match(err, /unknown interception mode "bogus"/);
  out = '';
  t.equal(await iptablesCommand(['--help'], io), 0);
  t.match(out, /--istio-inbound-interception-mode VALUE/);
});

t.test('apply errors are explicit', async (t) => {
  const cfg = parseCaptureArgs([]);
  const missing: Runner = () => ({ status: null, stdout: '', stderr: '', error: Object.assign(new Error('spawn ENOENT'), { code: 'ENOENT' }) });
  t.throws(() => applyRules(cfg, { run: missing }), /iptables-restore not found in PATH/);
  const failing: Runner = () => ({ status: 2, stdout: '', stderr: "iptables-restore: line 3 failed: Couldn't load target" });
  t.throws(() => applyRules(cfg, { run: failing }), /iptables-restore --noflush --wait failed \(exit 2\): iptables-restore: line 3 failed/);

  const calls: string[] = [];
  const recorder: Runner = (cmd, args) => {
    calls.push([cmd, ...args].join(' '));
    return { status: args.includes('del') ? 2 : 0, stdout: '', stderr: '' };
  };
  t.same(applyRules(parseCaptureArgs(['-m', 'TPROXY']), { run: recorder }).tables, ['mangle', 'nat']);
  t.ok(calls.includes('iptables-restore --noflush --wait'));
  t.ok(calls.includes('ip -f inet route add local default dev lo table 133'));
});

const ns = `xs-cap-${process.pid}`;
const gate = netnsGate();

t.test('apply and clean inside a network namespace', { skip: gate.skip }, async (t) => {
  if (gate.problem) return t.fail(`XSIDECAR_REQUIRE_NETNS=1 but ${gate.problem}`);
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  hostSh('ip', 'netns', 'add', ns);
  t.teardown(() => { spawnSync('ip', ['netns', 'del', ns]); });
  const inNs: Runner = (cmd, args, input) => spawnRunner('ip', ['netns', 'exec', ns, cmd, ...args], input);
  const sh = (...argv: string[]) => {
    const r = inNs(argv[0], argv.slice(1));
    if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  sh('ip', 'link', 'set', 'lo', 'up'); // as in a pod; IPv6 local routes need it

  t.test('REDIRECT via applyRules/cleanRules', async (t) => {
    const cfg = parseCaptureArgs([]);
    applyRules(cfg, { run: inNs });
    const nat = sh('iptables-save', '-t', 'nat');
    for (const chain of ['ISTIO_INBOUND', 'ISTIO_REDIRECT', 'ISTIO_IN_REDIRECT', 'ISTIO_OUTPUT']) t.match(nat, `:${chain} - `);
    t.match(nat, '-A OUTPUT -j ISTIO_OUTPUT');
    t.match(nat, '-A PREROUTING -p tcp -j ISTIO_INBOUND');
    const expectedRules = lines(buildRules(cfg).iptables).filter((l) => l.startsWith('-A')).length;
    t.equal(lines(nat).filter((l) => l.startsWith('-A')).length, expectedRules, 'every rule was installed');

    t.throws(() => applyRules(cfg, { run: inNs }), /already installed; use --clean first or --reconcile/);
    t.doesNotThrow(() => applyRules({ ...cfg, reconcile: true }, { run: inNs }));

    const res = cleanRules(cfg, { run: inNs });
    t.same(res.removedChains.sort(), ['nat/ISTIO_INBOUND', 'nat/ISTIO_IN_REDIRECT', 'nat/ISTIO_OUTPUT', 'nat/ISTIO_REDIRECT']);
    t.notMatch(sh('iptables-save', '-t', 'nat'), 'ISTIO');
    t.same(cleanRules(cfg, { run: inNs }).removedChains, [], 'cleaning again tolerates absence');
  });

  t.test('TPROXY + DNS + IPv6 through the command in a child process', async (t) => {
    const command = resolve(repoRoot, 'dist/src/capture/command.js');
    const runCommand = (argv: string[]) => spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e',
      `import { iptablesCommand } from ${JSON.stringify(command)}; process.exitCode = await iptablesCommand(${JSON.stringify(argv)});`],
    { encoding: 'utf8' });

    const applied = runCommand(['-m', 'TPROXY', '--redirect-dns', '--capture-all-dns', '--ipv6']);
    t.equal(applied.status, 0, applied.stderr);
    const summary = JSON.parse(applied.stdout);
    t.match(summary, { action: 'apply', mode: 'TPROXY', tables: ['mangle', 'nat', 'raw'], ip6tables: true });
    t.match(sh('iptables-save', '-t', 'mangle'), ':ISTIO_TPROXY - ');
    t.match(sh('iptables-save', '-t', 'raw'), '-A OUTPUT -j ISTIO_OUTPUT_DNS');
    t.match(sh('ip6tables-save', '-t', 'nat'), ':ISTIO_OUTPUT - ');
    t.match(sh('ip', '-f', 'inet', 'rule'), 'fwmark 0x539 lookup 133');
    t.match(sh('ip', '-f', 'inet', 'route', 'show', 'table', '133'), 'local default dev lo');

    // Clean without repeating -m TPROXY: leftovers of the other mode must still go.
    const cleaned = runCommand(['--clean', '--ipv6']);
    t.equal(cleaned.status, 0, cleaned.stderr);
    t.match(JSON.parse(cleaned.stdout), { action: 'clean' });
    for (const [save, table] of [['iptables-save', 'nat'], ['iptables-save', 'mangle'], ['iptables-save', 'raw'], ['ip6tables-save', 'nat'], ['ip6tables-save', 'mangle'], ['ip6tables-save', 'raw']]) {
      const text = sh(save, '-t', table);
      t.notMatch(text, 'ISTIO', `${save} -t ${table} has no Istio chains`);
      t.notMatch(text, /^-A /m, `${save} -t ${table} has no leftover rules`);
    }
    t.notMatch(sh('ip', '-f', 'inet', 'rule'), 'lookup 133');
    t.equal(sh('ip', '-f', 'inet', 'route', 'show', 'table', '133').trim(), '');
  });
});
