/** The DNS pieces that need no daemon: the bootstrap shape, the table's names, the wire reader, resolv.conf. */
import t from 'tap';
import dnsPacket from 'dns-packet';
import { spawn, spawnSync } from 'node:child_process';
import { decodeBootstrap } from '../../src/config/bootstrap.js';
import { decodeListener } from '../../src/config/listener.js';
import { ConfigError, newContext } from '../../src/config/reader.js';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { dnsFlagsFrom } from '../../src/dns/flags.js';
import { Forwarder } from '../../src/dns/forward.js';
import { parseHostPort, parseResolvConf } from '../../src/dns/resolv.js';
import { dnsMetrics } from '../../src/dns/metrics.js';
import { DnsProxy } from '../../src/dns/server.js';
import { loadLibc } from '../../src/sys/libc.js';
import type { Logger } from '../../src/observe/log.js';
import { altHosts, ipToBuffer, ipToString, LocalTable } from '../../src/dns/table.js';
import { buildUpdate, rr } from '../../src/dns/update.js';
import { keyName, localAnswer, nameKey, parseQuery, TYPE, walkRecords } from '../../src/dns/wire.js';
import { writeTemp } from '../helpers/netns.js';
import { addresses } from './client.js';
import { cliPath } from '../helpers/paths.js';

const dnsListener = (typed: object, extra: object = {}) => ({
  name: 'dns',
  address: { socket_address: { protocol: 'UDP', address: '127.0.0.1', port_value: 15053 } },
  listener_filters: [{ name: 'envoy.filters.udp.dns_filter', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig', stat_prefix: 'dns', ...typed } }],
  ...extra,
});
const table = (...domains: object[]) => ({ server_config: { inline_dns_table: { virtual_domains: domains } } });
const boot = (...listeners: object[]) => ({ static_resources: { listeners } });

t.test('a UDP listener with the DNS filter is the DNS proxy config, not a listener', async (t) => {
  const ctx = newContext();
  const b = decodeBootstrap(
    boot(
      dnsListener({
        ...table(
          { name: 'Com.Alipay.UserService.Interface1.', endpoint: { address_list: { address: ['198.18.0.10', 'fd00::10'] } }, answer_ttl: '5s' },
          { name: 'by-cluster.example', endpoint: { cluster_name: 'x' } },
        ),
        client_config: { resolution_timeout: '3s', dns_resolution_config: { resolvers: [{ socket_address: { address: '10.96.0.10', port_value: 53 } }] } },
      }),
    ),
    ctx,
  );
  t.same(b.listeners, [], 'not bound by the listener manager');
  t.same(b.dns?.address, { address: '127.0.0.1', port: 15053 });
  t.same(b.dns?.names, [{ name: 'com.alipay.userservice.interface1', addresses: ['198.18.0.10', 'fd00::10'], ttlSeconds: 5 }]);
  t.same(b.dns?.upstreams, [{ address: '10.96.0.10', port: 53 }]);
  t.equal(b.dns?.resolutionTimeoutMs, 3000);
  t.match(ctx.warnings.join('\n'), /only address_list endpoints are implemented; "by-cluster.example" skipped/);
});

t.test('bad DNS listeners are rejected with the field path', async (t) => {
  const bad: [object, string, RegExp][] = [
    [boot({ ...dnsListener({}), listener_filters: [] }), 'static_resources.listeners[0].listener_filters', /needs envoy.filters.udp.dns_filter/],
    [boot(dnsListener(table({ name: 'a.b', endpoint: { address_list: { address: ['nope'] } } }))), 'static_resources.listeners[0].listener_filters[0].typed_config.server_config.inline_dns_table.virtual_domains[0].endpoint.address_list.address[0]', /expected an IP address/],
    [boot(dnsListener(table({ name: 'a..b', endpoint: { address_list: { address: ['1.2.3.4'] } } }))), 'static_resources.listeners[0].listener_filters[0].typed_config.server_config.inline_dns_table.virtual_domains[0].name', /not a valid DNS name/],
    [boot(dnsListener(table({ name: 'a.b', endpoint: { address_list: { address: [] } } }))), 'static_resources.listeners[0].listener_filters[0].typed_config.server_config.inline_dns_table.virtual_domains[0].endpoint.address_list.address', /at least one address/],
    [boot(dnsListener({}), { ...dnsListener({}), name: 'dns2' }), 'static_resources.listeners[1]', /a second DNS listener/],
  ];
  for (const [b, path, detail] of bad) {
    const err = t.throws(() => decodeBootstrap(b)) as ConfigError;
    t.type(err, ConfigError);
    t.equal(err.path, path);
    t.match(err.detail, detail);
  }
  const err = t.throws(() => decodeListener(dnsListener({}), 'lds', newContext())) as ConfigError;
  t.match(err.message, /UDP listeners are supported only in the bootstrap/, 'a UDP listener over LDS is rejected (NACK)');
});

t.test('xsidecar check reports the DNS proxy', async (t) => {
  const file = writeTemp('dns-check.json', boot(dnsListener(table({ name: 'a.b', endpoint: { address_list: { address: ['1.2.3.4'] } } }))));
  const r = spawnSync(process.execPath, [cliPath, 'check', '-c', file], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /0 listener\(s\).*DNS proxy 127\.0\.0\.1:15053 \(1 name\(s\)\)/);
});

t.test('the names Istio\'s agent answers for a NameTable entry', async (t) => {
  const svc = { ips: ['10.0.0.1'], registry: 'Kubernetes', shortname: 'reviews', namespace: 'default' };
  t.same(altHosts('reviews.default.svc.cluster.local', svc, 'default'), ['reviews.default.svc.cluster.local', 'reviews.default', 'reviews.default.svc', 'reviews']);
  t.same(altHosts('reviews.default.svc.cluster.local', svc, 'other'), ['reviews.default.svc.cluster.local', 'reviews.default', 'reviews.default.svc']);
  t.same(altHosts('com.alipay.a', { ips: ['1.1.1.1'], registry: 'External' }, 'default'), ['com.alipay.a'], 'ServiceEntry hosts only as they are');
  const lt = new LocalTable({ namespace: 'default', search: ['default.svc.cluster.local', 'svc.cluster.local'], ttl: 30 });
  lt.setNameTable({ table: { 'reviews.default.svc.cluster.local': svc, 'x.example': { ips: ['fd00::1', '10.9.9.9'] } } });
  lt.setStatic([{ name: 'x.example', addresses: ['10.1.1.1'] }]);
  t.same(lt.addressesOf('reviews'), ['10.0.0.1']);
  t.same(lt.addressesOf('reviews.default.svc.cluster.local.default.svc.cluster.local'), ['10.0.0.1'], 'first search domain stripped');
  t.same(lt.addressesOf('reviews.svc.cluster.local'), [], 'only the first');
  t.same(lt.addressesOf('X.EXAMPLE.'), ['10.1.1.1'], 'the bootstrap table wins over the NameTable');
  t.equal(ipToString(ipToBuffer('fd00::1')!), 'fd00::1');
  t.equal(ipToString(ipToBuffer('::ffff:10.1.2.3')!), '::ffff:a01:203');
  t.equal(ipToBuffer('2001:db8:0:0:1:0:0:1')!.toString('hex'), '20010db8000000000001000000000001');
});

t.test('the query reader', async (t) => {
  const q = dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'AAAA', name: 'A.b-C.d', class: 'IN' }] });
  const p = parseQuery(q);
  t.ok(p.ok);
  if (!p.ok) return;
  t.match(p.query, { id: 7, qtype: TYPE.AAAA, qclass: 1, ednsSize: undefined });
  t.equal(keyName(p.query.key!), 'a.b-c.d', 'lower-cased');
  t.equal(p.query.key, nameKey('A.B-c.D'));
  const out = dnsPacket.decode(localAnswer(q, p.query, [ipToBuffer('fd00::7')!], 30, 512));
  t.match(out, { id: 7, type: 'response', rcode: 'NOERROR', questions: [{ name: 'A.b-C.d', type: 'AAAA' }], answers: [{ name: 'A.b-C.d', type: 'AAAA', ttl: 30, data: 'fd00::7' }] });
  t.equal(out.flag_aa, true);
  t.equal(out.flag_rd, true, 'RD echoed');
  t.same(parseQuery(Buffer.alloc(5)), { ok: false, reason: 'short' });
  const withDot = Buffer.from(q);
  withDot[13] = 0x2e;
  const d = parseQuery(withDot);
  t.equal(d.ok && d.query.key, undefined, 'a dot inside a label never matches a local name');
});

t.test('UPDATE messages as RFC 2136 spells them', async (t) => {
  const msg = buildUpdate(9, 'rpc.cluster.local', [rr.rrsetAbsent('a.rpc.cluster.local', TYPE.TXT)], [rr.deleteRRset('a.rpc.cluster.local', TYPE.A), rr.add('a.rpc.cluster.local', TYPE.A, 30, Buffer.from([10, 0, 0, 1]))]);
  t.equal((msg.readUInt16BE(2) >> 11) & 0xf, 5, 'opcode UPDATE');
  const recs = walkRecords(msg);
  t.same(recs.map((r) => [r.name, r.type, r.cls, r.ttl, r.rdlen]), [
    ['a.rpc.cluster.local', TYPE.TXT, 254, 0, 0],
    ['a.rpc.cluster.local', TYPE.A, 255, 0, 0],
    ['a.rpc.cluster.local', TYPE.A, 1, 30, 4],
  ]);
});

t.test('resolv.conf and host:port', async (t) => {
  const r = parseResolvConf('# c\nnameserver 10.96.0.10\nnameserver fd00::a # x\nnameserver bogus\nsearch ns1.svc.cluster.local svc.cluster.local.\noptions ndots:5\n');
  t.same(r.nameservers, [{ host: '10.96.0.10', port: 53 }, { host: 'fd00::a', port: 53 }]);
  t.same(r.search, ['ns1.svc.cluster.local', 'svc.cluster.local']);
  t.same(parseHostPort('[fd00::1]:5353', 53, 'x'), { host: 'fd00::1', port: 5353 });
  t.same(parseHostPort('fd00::1', 53, 'x'), { host: 'fd00::1', port: 53 });
  t.same(parseHostPort('dns.example:54', 53, 'x'), { host: 'dns.example', port: 54 });
  t.throws(() => parseHostPort('a:0', 53, '--dns-upstream'), /--dns-upstream: expected HOST\[:PORT\], got "a:0"/);
});

t.test('--dns-udp-worker and its thresholds', async (t) => {
  t.same(dnsFlagsFrom({}, {}).udpWorker, { mode: 'auto', upRate: 2000, idleMs: 30_000 }, 'auto by default');
  t.same(dnsFlagsFrom({ 'dns-udp-worker': 'on', 'dns-udp-worker-rate': '500' }, { XSIDECAR_DNS_UDP_WORKER_IDLE: '1m' }).udpWorker, { mode: 'on', upRate: 500, idleMs: 60_000 });
  t.same(dnsFlagsFrom({}, { XSIDECAR_DNS_UDP_WORKER: 'off' }).udpWorker?.mode, 'off');
  t.throws(() => dnsFlagsFrom({ 'dns-udp-worker': 'yes' }, {}), /--dns-udp-worker \(XSIDECAR_DNS_UDP_WORKER\): expected auto, on or off, got "yes"/);
  t.throws(() => dnsFlagsFrom({ 'dns-udp-worker-rate': '0' }, {}), /--dns-udp-worker-rate .*positive integer/);
  t.throws(() => dnsFlagsFrom({ 'dns-udp-worker-idle': 'soon' }, {}), /--dns-udp-worker-idle .*expected a duration/);
});

t.test('the UDP worker on IPv6: answers from the table, a table change, the rest by the main thread, a clean close', { skip: loadLibc() ? false : 'the UDP worker needs koffi' }, async (t) => {
  const lines: string[] = [];
  const log = { info: (_o: object, m: string) => lines.push(m), warn: (_o: object, m: string) => lines.push(m), error: (_o: object, m: string) => lines.push(m) } as unknown as Logger;
  const table = new LocalTable({ search: [], ttl: 30 });
  table.setStatic([{ name: 'v6.example', addresses: ['2001:db8::1', '10.0.0.6'] }]);
  const proxy = new DnsProxy({ address: '::1', port: 0, table, forwarder: new Forwarder({ upstreams: [], timeoutMs: 100, log }), log, udpWorker: { mode: 'on' } });
  const bound = await proxy.start();
  t.teardown(() => proxy.close());
  t.equal(proxy.udpReader, 'worker', lines.join('; '));
  const client = createSocket('udp6');
  t.teardown(() => client.close());
  await new Promise<void>((r) => client.bind(0, '::1', () => r()));
  const ask = (q: Buffer) =>
    new Promise<Buffer>((resolve) => {
      client.once('message', resolve);
      client.send(q, bound.port, '::1');
    });
  const q = (name: string, type: 'A' | 'AAAA', id: number) => dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
  t.same(addresses(await ask(q('v6.example', 'AAAA', 1))), ['2001:db8::1'], 'answered by the worker to an IPv6 sender');
  table.setStatic([{ name: 'v6.example', addresses: ['10.0.0.7'] }, { name: 'new.example', addresses: ['10.0.0.8'] }]);
  t.same(addresses(await ask(q('new.example', 'A', 2))), ['10.0.0.8'], 'a changed table applies to the next query');
  t.same(addresses(await ask(q('v6.example', 'A', 3))), ['10.0.0.7']);
  const other = await ask(q('elsewhere.example', 'A', 4));
  t.equal(other.readUInt16BE(2) & 0xf, 2, 'a name not in the table goes to the main thread (no upstream here: SERVFAIL), answered on the same socket');
  t.equal(other.readUInt16BE(0), 4);
  await proxy.close();
  t.equal(proxy.udpReader, undefined, 'closed');
  const again = new DnsProxy({ address: '::1', port: bound.port, table, forwarder: new Forwarder({ upstreams: [], timeoutMs: 100, log }), log, udpWorker: { mode: 'on' } });
  await again.start();
  await again.close();
  t.pass('the port is free again once closed (the worker gave the descriptor back)');
});

t.test('the UDP worker bounds what waits for a stalled main thread: the excess gets SERVFAIL at once', { skip: loadLibc() ? false : 'the UDP worker needs koffi' }, async (t) => {
  const log = { info: () => {}, warn: () => {}, error: () => {} } as unknown as Logger;
  const table = new LocalTable({ search: [], ttl: 30 });
  const proxy = new DnsProxy({ address: '127.0.0.1', port: 0, table, forwarder: new Forwarder({ upstreams: [], timeoutMs: 100, log }), log, udpWorker: { mode: 'on' } });
  const bound = await proxy.start();
  t.teardown(() => proxy.close());
  const before = await workerCount('overload');
  // A separate process floods names we do not hold while this (the main) thread is blocked, and counts
  // the answers; it leaves a file once it has sent everything.
  const total = 4000;
  const sent = writeTemp('dns-flood-sent', '') + '.done';
  const flood = `
    const s = require('dgram').createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
    const packet = require('dns-packet');
    let replies = 0, servfail = 0;
    s.on('message', (m) => { replies++; if ((m.readUInt16BE(2) & 0xf) === 2) servfail++; if (replies === ${total}) done(); });
    const done = () => { console.log(JSON.stringify({ replies, servfail })); process.exit(0); };
    setTimeout(done, 15000);
    // In bursts, reading the answers in between: they come back at once.
    const burst = (from) => {
      for (let i = from; i < Math.min(${total}, from + 50); i++) s.send(packet.encode({ type: 'query', id: i, questions: [{ type: 'A', name: 'n' + i + '.flood.example' }] }), ${bound.port}, '127.0.0.1');
      if (from + 50 < ${total}) setImmediate(burst, from + 50);
      else setTimeout(() => require('fs').writeFileSync(${JSON.stringify(sent)}, ''), 200);
    };
    s.bind(0, '127.0.0.1', () => burst(0));`;
  const child = spawn(process.execPath, ['-e', flood], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
  const out = new Promise<string>((r) => {
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d));
    child.on('exit', () => r(text));
  });
  const until = Date.now() + 20_000;
  while (!existsSync(sent) && Date.now() < until); // blocks the main thread, as a long xDS push would
  const { replies, servfail } = JSON.parse(await out) as { replies: number; servfail: number };
  t.equal(replies, total, 'every query answered');
  t.equal(servfail, total, 'all SERVFAIL (no upstream here; the excess by the worker itself)');
  await new Promise((r) => setTimeout(r, 1500)); // the worker reports each second
  const refused = (await workerCount('overload')) - before;
  t.ok(refused >= total - 1024 - 64 && refused < total, `the worker refused what the main thread could not take (${refused} of ${total}; at most 1,024 wait)`);
});

async function workerCount(action: string): Promise<number> {
  const m = await dnsMetrics.worker.get();
  return m.values.find((v) => v.labels.action === action)?.value ?? 0;
}
