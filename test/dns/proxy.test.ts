/**
 * The DNS proxy in a real sidecar process, configured by a bootstrap UDP listener with Envoy's DNS filter,
 * forwarding to a real BIND named: local answers, forwarding over UDP and TCP, answers over 512 bytes with
 * and without EDNS, malformed packets, dead and silent upstreams.
 */
import t from 'tap';
import { createSocket } from 'node:dgram';
import { loadLibc } from '../../src/sys/libc.js';
import { type LocalSidecar, startLocalSidecar } from '../helpers/sidecar.js';
import { freePort } from '../xds/harness.js';
import { addresses, decode, dig, frame, query, tcpExchange, udpExchange } from './client.js';
import { type Named, namedProblem, startNamed } from './named.js';

const problem = namedProblem();
const required = process.env.XSIDECAR_REQUIRE_NETNS === '1';

const dnsListener = (port: number, upstreamPort: number, domains: object[]) => ({
  name: 'dns',
  address: { socket_address: { protocol: 'UDP', address: '127.0.0.1', port_value: port } },
  listener_filters: [
    {
      name: 'envoy.filters.udp.dns_filter',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig',
        stat_prefix: 'dns',
        server_config: { inline_dns_table: { virtual_domains: domains } },
        client_config: {
          resolution_timeout: '5s', // generous: the machine may be busy
          typed_dns_resolver_config: {
            name: 'envoy.network.dns_resolver.cares',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig',
              resolvers: [{ socket_address: { address: '127.0.0.1', port_value: upstreamPort } }],
            },
          },
        },
      },
    },
  ],
});
const domain = (name: string, ...ips: string[]) => ({ name, endpoint: { address_list: { address: ips } } });
const many = Array.from({ length: 60 }, (_, i) => `10.1.0.${i + 1}`);

// Every case twice: UDP read on the main thread, and by the worker thread (src/dns/udp-offload.ts) that
// the default moves it to under load.
for (const reader of ['main', 'worker'] as const) t.test(`DNS proxy with a bootstrap table, forwarding to BIND (UDP read on the ${reader} thread)`, { skip: problem && !required ? problem : reader === 'worker' && !loadLibc() ? 'the UDP worker needs koffi' : false }, async (t) => {
  if (problem) return t.fail(problem);
  const named: Named = await startNamed({ port: await freePort() });
  t.teardown(() => named.stop());
  const port = await freePort();
  const sc: LocalSidecar = await startLocalSidecar(`dns-proxy-${reader}`, {
    static_resources: {
      listeners: [
        dnsListener(port, named.port, [
          domain('com.alipay.userservice.interface1', '198.18.0.10'),
          domain('com.alipay.demo.interface-2', '198.18.0.11', '2001:db8::11'),
          domain('many.example', ...many),
        ]),
      ],
    },
  }, ['--dns-udp-worker', reader === 'worker' ? 'on' : 'off']);
  t.teardown(() => sc.proc.kill('SIGKILL'));
  t.ok(sc.proc.lines.some((l) => l.includes('dns: proxy listening') && l.includes(`127.0.0.1:${port}`)), 'listens where the bootstrap listener says');
  t.equal(sc.proc.lines.some((l) => l.includes('dns: UDP queries moved to a worker thread')), reader === 'worker', `UDP read on the ${reader} thread`);

  t.test('bootstrap names are answered locally and authoritatively', async (t) => {
    const a = dig(port, 'com.alipay.userservice.interface1');
    t.equal(a.status, 'NOERROR');
    t.ok(a.flags.includes('aa'), 'authoritative');
    t.same(a.answers, ['198.18.0.10']);
    t.same(dig(port, 'COM.Alipay.UserService.INTERFACE1.').answers, ['198.18.0.10'], 'case-insensitive, trailing dot');
    t.same(dig(port, 'com.alipay.demo.interface-2', 'AAAA').answers, ['2001:db8::11'], 'dashes kept, AAAA');
    const none = dig(port, 'com.alipay.userservice.interface1', 'AAAA');
    t.same([none.status, none.answers], ['NOERROR', []], 'known name, no AAAA: NOERROR and no answer, not NXDOMAIN');
    t.same(dig(port, 'com.alipay.userservice.interface1', 'TXT').status, 'NOERROR');
    t.same(dig(port, 'com.alipay.userservice.interface1', 'A', '+tcp').answers, ['198.18.0.10'], 'over TCP');
  });

  t.test('a local answer too big for 512 bytes is cut with TC without EDNS, whole with it', async (t) => {
    const cut = decode((await udpExchange(port, query('many.example')))!);
    t.ok((cut.flags! & 0x200) !== 0, 'TC set');
    t.ok(cut.answers!.length > 0 && cut.answers!.length < 60, `some answers fit (${cut.answers!.length})`);
    const whole = decode((await udpExchange(port, query('many.example', 'A', { edns: 4096 })))!);
    t.equal(whole.answers!.length, 60);
    t.equal(whole.flags! & 0x200, 0);
    t.equal(dig(port, 'many.example', 'A', '+noedns').answers.length, 60, 'dig retries over TCP and gets them all');
  });

  t.test('other names are forwarded to BIND over UDP and TCP', async (t) => {
    t.same(dig(port, 'www.fwd.test', 'A', '+notcp').answers, ['192.0.2.80']);
    t.same(dig(port, 'www.fwd.test', 'AAAA', '+tcp').answers, ['2001:db8::80']);
    const nx = dig(port, 'nothing.fwd.test');
    t.equal(nx.status, 'NXDOMAIN', "upstream's NXDOMAIN passes through");
    t.equal(dig(port, 'www.fwd.test', 'A', '+tcp', '+keepopen').answers[0], '192.0.2.80');
  });

  t.test('forwarded answers over 512 bytes: intact with EDNS, TC without, TCP retry upstream', async (t) => {
    const edns = dig(port, 'big.fwd.test', 'TXT', '+ignore'); // dig sends EDNS 1232 by default
    t.equal(edns.answers.length, 12, 'whole answer with EDNS');
    t.notOk(edns.flags.includes('tc'));
    const plain = dig(port, 'big.fwd.test', 'TXT', '+noedns', '+ignore');
    t.ok(plain.flags.includes('tc'), 'TC without EDNS');
    t.equal(plain.answers.length, 0);
    t.equal(dig(port, 'big.fwd.test', 'TXT', '+noedns').answers.length, 12, 'dig retries over TCP and gets it all');
    // 2,900 bytes: BIND truncates its UDP answer at 1232, the proxy asks again over TCP and the client's 4096 fits it.
    const huge = dig(port, 'huge.fwd.test', 'TXT', '+bufsize=4096', '+ignore');
    t.equal(huge.answers.length, 40, 'upstream TC retried over TCP, delivered whole');
    t.notOk(huge.flags.includes('tc'));
    const small = dig(port, 'huge.fwd.test', 'TXT', '+ignore');
    t.ok(small.flags.includes('tc'), 'bigger than the client EDNS size: TC');
    t.equal(dig(port, 'huge.fwd.test', 'TXT', '+tcp').answers.length, 40);
  });

  t.test('malformed packets: FORMERR or dropped, never a crash', async (t) => {
    t.equal(await udpExchange(port, Buffer.from([1, 2, 3]), 1000), undefined, 'no header: dropped');
    const head = Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x05, 0x61]);
    const fe = await udpExchange(port, head);
    t.ok(fe, 'header with a cut question gets an answer');
    t.equal(fe!.readUInt16BE(0), 0x1234, 'same id');
    t.equal(fe!.readUInt16BE(2) & 0xf, 1, 'FORMERR');
    const noQuestion = Buffer.from([0, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    t.equal((await udpExchange(port, noQuestion))!.readUInt16BE(2) & 0xf, 1, 'no question: FORMERR');
    const pointer = Buffer.concat([Buffer.from([0, 8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
    t.equal((await udpExchange(port, pointer))!.readUInt16BE(2) & 0xf, 1, 'compression loop in the question: FORMERR');
    const response = Buffer.from(query('www.fwd.test'));
    response[2]! |= 0x80;
    t.equal(await udpExchange(port, response, 1000), undefined, 'a response sent to us is dropped');
    const sprayer = createSocket('udp4');
    for (let i = 0; i < 200; i++) {
      const junk = Buffer.alloc(12 + (i % 40));
      for (let j = 0; j < junk.length; j++) junk[j] = (i * 31 + j * 7) & 0xff;
      junk[2] = junk[2]! & 0x7f; // queries, not responses
      await new Promise((r) => sprayer.send(junk, port, '127.0.0.1', r));
    }
    sprayer.close();
    const tcpJunk = await tcpExchange(port, Buffer.concat([frame(head), frame(query('com.alipay.userservice.interface1'))]), 2);
    t.equal(tcpJunk.replies.length, 2, 'TCP: FORMERR for the bad frame, then the good one answered');
    t.equal(tcpJunk.replies[0]!.readUInt16BE(2) & 0xf, 1);
    t.same(addresses(tcpJunk.replies[1]!), ['198.18.0.10']);
    const tiny = await tcpExchange(port, Buffer.from([0, 3, 1, 2, 3]), 1);
    t.ok(tiny.closed && tiny.replies.length === 0, 'TCP frame shorter than a header: connection closed');
    t.same(dig(port, 'com.alipay.userservice.interface1').answers, ['198.18.0.10'], 'still answering');
    t.ok((await sc.metric('xsidecar_dns_queries_total', 'outcome="malformed"')) >= 3, 'malformed counted');
  });

  t.test('metrics count local and forwarded queries by type, with latency', async (t) => {
    t.ok((await sc.metric('xsidecar_dns_queries_total', 'outcome="local",type="A",transport="udp"')) >= 3);
    t.ok((await sc.metric('xsidecar_dns_queries_total', 'outcome="forwarded",type="TXT"')) >= 3);
    t.ok((await sc.metric('xsidecar_dns_queries_total', 'outcome="forwarded",type="AAAA",transport="tcp"')) >= 1);
    t.ok((await sc.metric('xsidecar_dns_request_duration_seconds_count', 'outcome="local"')) >= 3);
    const answered = await sc.metric('xsidecar_dns_udp_worker_queries_total', 'action="answered"');
    if (reader === 'main') t.equal(answered, 0, 'no worker');
    else t.ok(answered >= 5, `the worker answered the table's names itself (${answered})`);
  });
});

t.test('dead and silent upstreams: SERVFAIL, local names unaffected', { skip: problem && !required ? problem : false }, async (t) => {
  if (problem) return t.fail(problem);
  const dead = await freePort(); // nothing listens: ICMP port unreachable, refused at once
  const silent = createSocket('udp4'); // reads and never answers: the timeout
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => silent.close());
  const port = await freePort();
  const sc = await startLocalSidecar('dns-dead', { static_resources: { listeners: [dnsListener(0, dead, [domain('local.example', '10.0.0.1')])] } }, [
    '--dns-port', String(port), '--dns-upstream', `127.0.0.1:${dead},127.0.0.1:${silent.address().port}`,
  ]);
  t.teardown(() => sc.proc.kill('SIGKILL'));
  // A SERVFAIL at all means the proxy answered before dig gave up (10 s; the silent upstream costs 2 s).
  const r = dig(port, 'www.fwd.test', 'A', '+time=10');
  t.equal(r.status, 'SERVFAIL', 'every upstream failed: SERVFAIL, in time');
  t.equal(dig(port, 'www.fwd.test', 'A', '+tcp', '+time=10').status, 'SERVFAIL', 'over TCP too');
  t.same(dig(port, 'local.example').answers, ['10.0.0.1'], '--dns-port overrides the listener port; local names still answered');
  t.ok((await sc.metric('xsidecar_dns_upstream_failures_total', 'reason="refused"')) >= 1, 'refused counted');
  t.ok((await sc.metric('xsidecar_dns_upstream_failures_total', 'reason="timeout"')) >= 1, 'timeout counted');
  t.ok((await sc.metric('xsidecar_dns_queries_total', 'outcome="failed"')) >= 2);
  t.ok(sc.proc.lines.some((l) => l.includes('dns: upstream failed')), 'logged');
});

t.test('auto: UDP reading moves to the worker under load and back when quiet, losing no query', { skip: loadLibc() ? false : 'the UDP worker needs koffi' }, async (t) => {
  // An upstream that answers 300 ms late, so forwarded queries are in flight while reading moves.
  const upstream = createSocket('udp4');
  upstream.on('message', (m, r) => {
    m[2] = m[2]! | 0x80; // QR: an empty NOERROR answer
    setTimeout(() => upstream.send(m, r.port, r.address), 300);
  });
  await new Promise<void>((r) => upstream.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => upstream.close());
  const port = await freePort();
  const sc = await startLocalSidecar('dns-auto', { static_resources: { listeners: [dnsListener(port, upstream.address().port, [domain('local.example', '10.0.0.1')])] } }, [
    '--dns-udp-worker', 'auto', '--dns-udp-worker-rate', '100', '--dns-udp-worker-idle', '2s',
  ]);
  t.teardown(() => sc.proc.kill('SIGKILL'));
  t.notOk(sc.proc.lines.some((l) => l.includes('moved to a worker thread')), 'starts on the main thread');
  const client = createSocket('udp4');
  t.teardown(() => client.close());
  const local = new Set<number>();
  const forwarded = new Set<number>();
  client.on('message', (m) => {
    const id = m.readUInt16BE(0);
    if (id < 10_000 && addresses(m)[0] === '10.0.0.1') local.add(id);
    if (id >= 10_000 && (m.readUInt16BE(2) & 0x800f) === 0x8000) forwarded.add(id);
  });
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
  // 400 local and 100 forwarded queries/s for 5 s: above the threshold long enough to move, and still
  // coming (and waiting on the upstream) during the move.
  const total = 2000;
  for (let id = 0; id < total; id += 4) {
    for (let k = 0; k < 4; k++) client.send(query('local.example', 'A', { id: id + k }), port, '127.0.0.1');
    client.send(query('www.fwd.test', 'A', { id: 10_000 + id / 4 }), port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 10));
  }
  t.ok(sc.proc.lines.some((l) => l.includes('dns: UDP queries moved to a worker thread')), 'moved to the worker while the queries came');
  for (let i = 0; i < 50 && (local.size < total || forwarded.size < total / 4); i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(local.size, total, 'every local query answered, before, during and after the move');
  t.equal(forwarded.size, total / 4, 'every forwarded query answered, including those in flight during the move');
  await sc.proc.waitJson((o: { msg?: string }) => o.msg === 'dns: UDP queries back on the main thread', 15_000);
  t.same(dig(port, 'local.example').answers, ['10.0.0.1'], 'answering on the main thread again');
  t.equal(await sc.metric('xsidecar_dns_queries_total', 'outcome="local",type="A",transport="udp"'), total + 1, 'every answer counted once, by whichever thread gave it');
  t.equal(await sc.metric('xsidecar_dns_request_duration_seconds_count', 'outcome="local"'), total + 1, 'and timed once');
  const byWorker = await sc.metric('xsidecar_dns_udp_worker_queries_total', 'action="answered"');
  t.ok(byWorker > 0 && byWorker < total, `the worker answered some (${byWorker}), the main thread the rest`);
  t.equal(await sc.metric('xsidecar_dns_queries_total', 'outcome="forwarded",transport="udp"'), total / 4, 'every forwarded query counted once');
  t.ok((await sc.metric('xsidecar_dns_udp_worker_queries_total', 'action="handed"')) > 0, 'the worker handed the names it does not hold to the main thread');
});
