/**
 * The TLS inspector on real ClientHellos (from Node's TLS client and from openssl), fed whole, byte by
 * byte and split across records; and filter-chain match on Istio's pushed virtualInbound with the facts
 * it yields.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { newContext } from '../../src/config/reader.js';
import { decodeListener } from '../../src/config/listener.js';
import { matchFilterChain } from '../../src/listener/chain-match.js';
import { NEED_MORE, parseClientHello } from '../../src/listener/tls-inspector.js';
import { selectAlpn } from '../../src/listener/tls-terminator.js';
import { alpnToOffer, sanAccepted } from '../../src/upstream/tls-origination.js';
import { fixture } from '../helpers/paths.js';

/** The first bytes a client sends to a server that never answers. */
function firstBytes(client: (port: number) => { kill(): void }): Promise<Buffer> {
  return new Promise((resolve) => {
    const srv = createServer((s: Socket) => {
      let got = Buffer.alloc(0);
      s.on('data', (d) => {
        got = Buffer.concat([got, d]);
        if (parseClientHello(got) !== NEED_MORE || got.length > 4096) {
          c.kill();
          s.destroy();
          srv.close();
          resolve(got);
        }
      });
      s.on('error', () => undefined);
    });
    let c: { kill(): void };
    srv.listen(0, '127.0.0.1', () => (c = client((srv.address() as { port: number }).port)));
  });
}

const nodeHello = (servername: string | undefined, alpn: string[]) =>
  firstBytes((port) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername, ALPNProtocols: alpn, rejectUnauthorized: false });
    s.on('error', () => undefined);
    return { kill: () => s.destroy() };
  });

t.test('parses SNI and ALPN from Node\'s ClientHello, fed whole or byte by byte', async (t) => {
  const hello = await nodeHello('outbound_.9080_._.reviews.default.svc.cluster.local', ['istio-peer-exchange', 'istio']);
  const expected = { transportProtocol: 'tls', serverName: 'outbound_.9080_._.reviews.default.svc.cluster.local', applicationProtocols: ['istio-peer-exchange', 'istio'] };
  t.same(parseClientHello(hello), expected);
  const early = [...Array(hello.length - 1).keys()].map((i) => parseClientHello(hello.subarray(0, i + 1)));
  t.ok(early.every((r) => r === NEED_MORE), 'every prefix of it: need more');
  t.same(parseClientHello(await nodeHello(undefined, [])), { transportProtocol: 'tls', serverName: undefined, applicationProtocols: [] }, 'no SNI, no ALPN');
});

t.test('a ClientHello split across two TLS records is joined', async (t) => {
  const hello = await nodeHello('split.example', ['h2']);
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const rec = (b: Buffer) => Buffer.concat([Buffer.from([22, 3, 1, b.length >> 8, b.length & 255]), b]);
  const split = Buffer.concat([rec(body.subarray(0, 30)), rec(body.subarray(30))]);
  t.same(parseClientHello(split), { transportProtocol: 'tls', serverName: 'split.example', applicationProtocols: ['h2'] });
});

t.test('openssl s_client\'s ClientHello', { skip: spawnSync('openssl', ['version']).status === 0 ? false : 'openssl is not installed' }, async (t) => {
  const hello = await firstBytes((port) => {
    const c = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'foreign.example', '-alpn', 'h2,http/1.1'], { stdio: ['pipe', 'ignore', 'ignore'] });
    return { kill: () => c.kill('SIGKILL') };
  });
  t.same(parseClientHello(hello), { transportProtocol: 'tls', serverName: 'foreign.example', applicationProtocols: ['h2', 'http/1.1'] });
});

t.test('anything else is raw_buffer, at once or once it cannot be a ClientHello', async (t) => {
  t.equal(parseClientHello(Buffer.alloc(0)), NEED_MORE);
  t.same(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n')), { transportProtocol: 'raw_buffer', applicationProtocols: [] });
  t.same(parseClientHello(Buffer.from([0xda, 0xbb, 0xc2, 0])), { transportProtocol: 'raw_buffer', applicationProtocols: [] }, 'a Dubbo frame');
  t.same(parseClientHello(Buffer.from([22, 7])), { transportProtocol: 'raw_buffer', applicationProtocols: [] }, 'not TLS 3.x');
  t.same(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0])), { transportProtocol: 'raw_buffer', applicationProtocols: [] }, 'a handshake that is not a ClientHello');
  const broken = Buffer.from([22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0xff, 0xff]);
  t.same(parseClientHello(broken), { transportProtocol: 'raw_buffer', applicationProtocols: [] }, 'a truncated body inside a whole record');
});

t.test('Istio\'s virtualInbound chains matched with the inspector\'s facts', async (t) => {
  const raw = JSON.parse(readFileSync(fixture('istio', 'istio-repo-authz-configdump', 'listener_virtualInbound.json'), 'utf8'));
  const l = decodeListener(raw, 'virtualInbound', newContext());
  const tlsChains = l.filterChains.filter((c) => c.tls);
  t.equal(tlsChains.length, 3, 'every DownstreamTlsContext is decoded');
  t.match(tlsChains[0]!.tls, { requireClientCertificate: true, certificateSecret: 'default', validationSecret: 'ROOTCA', minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3', matchSans: [{ kind: 'prefix', value: 'spiffe://cluster.local/' }] });
  const at = (facts: object) => matchFilterChain(l, { destination: { address: '10.0.0.5', port: 9080 }, source: { address: '10.0.0.9', port: 40000 }, transportProtocol: 'raw_buffer', ...facts });
  const mtls = at({ transportProtocol: 'tls', applicationProtocols: ['istio'] });
  t.equal(mtls?.name, 'virtualInbound');
  t.ok(mtls?.tls, 'an Istio client (ALPN istio) gets the terminating chain');
  t.equal(at({ transportProtocol: 'tls', applicationProtocols: ['istio-http/1.1', 'istio'] })?.name, 'virtualInbound-catchall-http', 'Istio HTTP ALPN picks the HTTP chain');
  const foreign = at({ transportProtocol: 'tls', applicationProtocols: ['h2'], serverName: 'foreign.example' });
  t.equal(foreign?.name, 'virtualInbound');
  t.notOk(foreign?.tls, 'TLS that is not the mesh\'s: the chain without a transport socket passes it through');
  const plain = at({});
  t.equal(plain?.name, 'virtualInbound');
  t.notOk(plain?.tls);
  t.same(plain?.match.transportProtocol, 'raw_buffer');
  t.equal(at({ destination: { address: '10.0.0.5', port: 80 }, transportProtocol: 'tls', applicationProtocols: ['istio'] })?.name, '0.0.0.0_80', 'port chains first');
});

t.test('ALPN: never istio-peer-exchange, as client or server; SAN matching', async (t) => {
  t.same(alpnToOffer({ alpn: ['istio-peer-exchange', 'istio'] } as never), ['istio']);
  t.equal(selectAlpn(['istio-peer-exchange', 'h2', 'http/1.1'], ['istio-peer-exchange', 'istio']), undefined, 'nothing selected: the Envoy client skips the exchange');
  t.equal(selectAlpn(['istio-peer-exchange', 'istio'], ['istio-peer-exchange', 'istio']), 'istio');
  const exact = { kind: 'exact' as const, value: 'spiffe://cluster.local/ns/default/sa/p1', ignoreCase: false };
  const prefix = { kind: 'prefix' as const, value: 'spiffe://cluster.local/', ignoreCase: false };
  t.ok(sanAccepted([exact], ['spiffe://cluster.local/ns/default/sa/p1']));
  t.notOk(sanAccepted([exact], ['spiffe://cluster.local/ns/default/sa/p2']));
  t.ok(sanAccepted([prefix], ['spiffe://cluster.local/ns/x/sa/y']));
  t.notOk(sanAccepted([prefix], ['spiffe://evil.local/ns/x/sa/y']));
  t.ok(sanAccepted([], []), 'no matchers: any peer the roots accept');
});
