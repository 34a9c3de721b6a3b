/**
 * A TLS stack nobody here wrote as the foreign peer: `openssl s_client` against the inbound side and
 * `openssl s_server` behind the outbound side. What they see (SNI, ALPN, the certificate chain and its
 * SPIFFE SAN) is what an Envoy sidecar in the mesh would see; what they are refused is what Envoy refuses.
 */
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { connect } from 'node:net';
import t from 'tap';
import { identityEnv, identityFlags, listenerPort, makeMeshPki, startMeshSidecar, TestCa, whenReady } from '../helpers/mesh-ca.js';
import { inboundChains, istioMutualMatches, listenerFilters, meshCluster } from '../helpers/mesh-config.js';
import { peer } from '../helpers/netns.js';
import { issueLeaf, makeRoot, spiffe, writeFiles } from '../helpers/pki.js';
import { freePort, type LocalSidecar, spawnLocal } from '../helpers/sidecar.js';

const opensslProblem = spawnSync('openssl', ['version']).status === 0 ? undefined : 'openssl is not installed';

interface Run {
  out: () => string;
  write: (s: string) => void;
  until: (re: RegExp, timeoutMs?: number) => Promise<boolean>;
  exited: Promise<number | null>;
  kill: () => void;
}

function openssl(args: string[]): Run {
  const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.stdin.on('error', () => undefined); // it may have given up already (a refused handshake)
  return {
    out: () => out,
    write: (s) => void (child.exitCode === null && child.stdin.write(s)),
    exited,
    kill: () => child.exitCode === null && child.kill('SIGKILL'),
    until: async (re, timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      let done = false;
      void exited.then(() => (done = true));
      while (!re.test(out)) {
        if (done || Date.now() > deadline) return re.test(out);
        await new Promise((r) => setTimeout(r, 25));
      }
      return true;
    },
  };
}

/** The bytes of an extension in s_server -tlsextdebug output (its hex dump). */
function extensionBytes(out: string, name: string): Buffer {
  const lines = out.split('\n');
  const i = lines.findIndex((l) => l.startsWith(`TLS client extension "${name}"`));
  if (i < 0) return Buffer.alloc(0);
  const hex: string[] = [];
  for (const l of lines.slice(i + 1)) {
    const m = /^[0-9a-f]{4} - (.{48})/.exec(l);
    if (!m) break;
    hex.push(...m[1]!.replace(/-/g, ' ').trim().split(/\s+/));
  }
  return Buffer.from(hex.join(''), 'hex');
}

const pemsIn = (text: string) => text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];

/** Plain TCP: sends `line`, returns what came back before the connection closed or 3 s passed. */
function plainExchange(port: number, line: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = connect({ host: '127.0.0.1', port }, () => s.write(line));
    s.on('data', (d) => {
      got += d;
      if (got.includes(line)) s.destroy();
    });
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    setTimeout(() => s.destroy(), 3000);
  });
}

const tcp = (name: string, address: string, port: number) => ({ name, type: 'STATIC', connect_timeout: '5s', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address, port_value: port } } } }] }] } });
const listener = (name: string, chains: object[]) => ({ name, address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, listener_filters: listenerFilters, filter_chains: chains });
const tcpProxyTo = (cluster: string) => [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: cluster, cluster } }] }];

t.test('mesh mTLS seen by openssl', { skip: opensslProblem ?? false }, async (t) => {
  const pki = await makeMeshPki();
  const ca = await TestCa.start(pki);
  const other = await makeRoot('other-mesh');
  const meshClient = await issueLeaf(pki.root, { uris: [spiffe('default', 'productpage')] });
  const otherRootClient = await issueLeaf(other, { uris: [spiffe('default', 'productpage')] });
  const otherDomainClient = await issueLeaf(pki.root, { uris: [spiffe('default', 'productpage', 'evil.local')] });
  const reviews = await issueLeaf(pki.root, { uris: [spiffe('default', 'bookinfo-reviews')] });
  const foreign = await issueLeaf(other, { dns: ['foreign.example'], subject: 'CN=foreign.example' });
  const f = writeFiles({
    'root.pem': pki.root.certPem,
    'client.pem': meshClient.certPem + pki.root.certPem, 'client.key': meshClient.keyPem,
    'other-root-client.pem': otherRootClient.certPem, 'other-root-client.key': otherRootClient.keyPem,
    'other-domain-client.pem': otherDomainClient.certPem, 'other-domain-client.key': otherDomainClient.keyPem,
    'reviews.pem': reviews.certPem + pki.root.certPem, 'reviews.key': reviews.keyPem,
    'foreign.pem': foreign.certPem, 'foreign.key': foreign.keyPem, 'other-root.pem': other.certPem,
  });
  const procs: { kill(): void }[] = [{ kill: () => ca.stop() }];
  t.teardown(() => procs.forEach((p) => p.kill()));

  const echo = spawnLocal(peer('echo-server'), ['app', '127.0.0.1', '0'], 'echo');
  procs.push({ kill: () => echo.kill('SIGKILL') });
  const echoPort = (await echo.waitJson<{ port: number }>((o) => o.port !== undefined)).port;

  // The foreign TLS app behind the inbound side: it must see the client's own handshake.
  const foreignPort = await freePort();
  const foreignApp = openssl(['s_server', '-accept', String(foreignPort), '-cert', f('foreign.pem'), '-key', f('foreign.key'), '-tlsextdebug', '-naccept', '1']);
  procs.push(foreignApp);
  await foreignApp.until(/ACCEPT/);

  const env = identityEnv(`127.0.0.1:${ca.port}`, 'default', 'p1');
  const inbound: LocalSidecar = await startMeshSidecar(
    'mtls-inbound',
    {
      static_resources: {
        listeners: [listener('in-permissive', inboundChains('app', 'PERMISSIVE')), listener('in-strict', inboundChains('app', 'STRICT')), listener('in-foreign', inboundChains('tlsapp', 'PERMISSIVE'))],
        clusters: [tcp('app', '127.0.0.1', echoPort), tcp('tlsapp', '127.0.0.1', foreignPort)],
      },
    },
    env,
    identityFlags(pki),
  );
  procs.push({ kill: () => inbound.proc.kill('SIGKILL') });
  await whenReady(inbound.health);
  const permissive = await listenerPort(inbound.admin, 'in-permissive');
  const strict = await listenerPort(inbound.admin, 'in-strict');

  const sClient = (port: number, cert: string | undefined, extra: string[] = []) =>
    openssl(['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', f('root.pem'), '-showcerts', '-ign_eof', ...(cert ? ['-cert', f(`${cert}.pem`), '-key', f(`${cert}.key`)] : []), ...extra]);
  const istioAlpn = ['-alpn', 'istio-peer-exchange,istio', '-servername', 'outbound_.9080_._.p1.default.svc.cluster.local'];

  t.test('inbound: an Envoy-like client (istio-peer-exchange,istio) gets mTLS and the workload chain, and no metadata exchange', async (t) => {
    const c = sClient(permissive, 'client', istioAlpn);
    procs.push(c);
    t.ok(await c.until(/Verify return code/), c.out());
    c.write('ping-mtls\n');
    t.ok(await c.until(/ping-mtls/), 'the app received the bytes and echoed them through the tunnel');
    c.kill();
    const out = c.out();
    // The pushed DownstreamTlsContext lists istio-peer-exchange, h2, http/1.1: Envoy would pick
    // istio-peer-exchange and expect the exchange preamble; we never select it, so no ALPN at all.
    t.match(out, /No ALPN negotiated/, 'istio-peer-exchange not selected');
    t.match(out, /Verify return code: 0 \(ok\)/, 'the chain verifies against the mesh root');
    const chain = pemsIn(out).map((p) => new X509Certificate(p));
    t.equal(chain.length, 2, 'leaf and root, as Envoy sends the SDS "default" chain');
    t.equal(chain[0]!.subjectAltName, `URI:${spiffe('default', 'p1')}`);
    t.equal(chain[0]!.subject ?? '', '', 'an empty subject, as istiod issues');
    t.equal(chain[1]!.fingerprint256, new X509Certificate(pki.root.certPem).fingerprint256);
  });

  t.test('inbound: a client resuming its TLS session (as Envoy does on reconnect) is served', async (t) => {
    const sess = `${f('root.pem')}.session`;
    const first = sClient(permissive, 'client', [...istioAlpn, '-sess_out', sess]);
    procs.push(first);
    await first.until(/Verify return code/);
    first.write('first\n');
    t.ok(await first.until(/first/));
    first.kill();
    const again = sClient(permissive, 'client', [...istioAlpn, '-sess_in', sess]);
    procs.push(again);
    await again.until(/Verify return code/);
    again.write('resumed\n');
    t.ok(await again.until(/resumed\n/), again.out());
    again.kill();
    t.match(again.out(), /Reused, TLSv1\.3/, 'the session was resumed');
  });

  t.test('inbound: refused without a client certificate, with one from another root, or from another trust domain', async (t) => {
    const before = await inbound.metric('xsidecar_downstream_mtls_refused_total');
    for (const cert of [undefined, 'other-root-client', 'other-domain-client']) {
      const c = sClient(permissive, cert, istioAlpn);
      procs.push(c);
      await c.until(/Verify return code/);
      c.write(`leak-${cert}\n`);
      const leaked = await c.until(new RegExp(`leak-${cert}`), 2000);
      c.kill();
      t.notOk(leaked, `${cert ?? 'no certificate'}: nothing reached the app`);
    }
    t.ok((await inbound.metric('xsidecar_downstream_mtls_refused_total')) >= before + 3, 'each counted as refused');
  });

  t.test('PERMISSIVE takes plaintext on the same port; STRICT refuses it but takes mTLS', async (t) => {
    t.equal(await plainExchange(permissive, 'plain-hello\n'), 'plain-hello\n');
    t.equal(await plainExchange(strict, 'plain-hello\n'), '', 'STRICT: closed, nothing echoed');
    const c = sClient(strict, 'client', istioAlpn);
    procs.push(c);
    await c.until(/Verify return code/);
    c.write('strict-mtls\n');
    t.ok(await c.until(/strict-mtls/), 'STRICT: mTLS goes through');
    c.kill();
  });

  t.test('inbound: TLS that is not the mesh\'s passes through untouched', async (t) => {
    const c = openssl(['s_client', '-connect', `127.0.0.1:${await listenerPort(inbound.admin, 'in-foreign')}`, '-CAfile', f('other-root.pem'), '-servername', 'foreign.example', '-alpn', 'h2', '-ign_eof']);
    procs.push(c);
    t.ok(await c.until(/Verify return code/));
    c.kill();
    t.match(c.out(), /Verify return code: 0 \(ok\)/, 'the client verified the app\'s own certificate');
    t.match(c.out(), /subject=CN ?= ?foreign\.example/);
    t.ok(await foreignApp.until(/server name/));
    t.equal(extensionBytes(foreignApp.out(), 'server name').subarray(5).toString(), 'foreign.example', 'the app saw the client\'s SNI');
  });

  t.test('outbound: what an Envoy-like server (openssl s_server) sees from ISTIO_MUTUAL origination', async (t) => {
    const goodPort = await freePort();
    const server = (naccept: number) =>
      openssl(['s_server', '-accept', String(goodPort), '-cert', f('reviews.pem'), '-key', f('reviews.key'), '-CAfile', f('root.pem'), '-Verify', '2', '-alpn', 'istio', '-tlsextdebug', '-naccept', String(naccept)]);
    const good = server(2); // the wrong-SAN attempt below takes the first accept
    procs.push(good);
    await good.until(/ACCEPT/);
    const host = 'reviews.default.svc.cluster.local';
    const outbound = await startMeshSidecar(
      'mtls-outbound',
      {
        static_resources: {
          listeners: [listener('out', tcpProxyTo('outbound|9080||reviews')), listener('out-wrong-san', tcpProxyTo('wrong-san'))],
          clusters: [
            meshCluster('outbound|9080||reviews', [{ address: '127.0.0.1', port: goodPort, istio: true }], istioMutualMatches(host, 9080, spiffe('default', 'bookinfo-reviews'))),
            meshCluster('wrong-san', [{ address: '127.0.0.1', port: goodPort, istio: true }], istioMutualMatches(host, 9080, spiffe('default', 'someone-else'))),
          ],
        },
      },
      identityEnv(`127.0.0.1:${ca.port}`, 'default', 'productpage'),
      identityFlags(pki),
    );
    procs.push({ kill: () => outbound.proc.kill('SIGKILL') });
    await whenReady(outbound.health);

    const wrong = await plainExchange(await listenerPort(outbound.admin, 'out-wrong-san'), 'must-not-arrive\n');
    t.equal(wrong, '', 'a peer whose SAN is not in match_subject_alt_names is refused by the client side');
    t.ok((await outbound.metric('xsidecar_upstream_cx_connect_fail_total', 'cluster="wrong-san"')) >= 1);

    const got = plainExchange(await listenerPort(outbound.admin, 'out'), 'hello-reviews\n');
    t.ok(await good.until(/hello-reviews/), good.out());
    good.write('reply-from-reviews\n');
    void got;
    const out = good.out();
    t.equal(extensionBytes(out, 'server name').subarray(5).toString(), `outbound_.9080_._.${host}`, 'SNI from the config');
    t.match(out, /ALPN protocols advertised by the client: istio\n/, 'only istio offered, never istio-peer-exchange');
    t.match(out, /CIPHER is TLS_/, 'TLS 1.3 negotiated (the config allows 1.2–1.3)');
    const clientCert = new X509Certificate(pemsIn(out.slice(out.indexOf('Client certificate')))[0]!);
    t.equal(clientCert.subjectAltName, `URI:${spiffe('default', 'productpage')}`, 'the workload certificate from the CA client');
    t.ok(clientCert.verify(new X509Certificate(pki.root.certPem).publicKey));
    t.notMatch(out, /verify error/);
  });
});

