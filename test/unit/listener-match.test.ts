import t from 'tap';
import { decodeListener } from '../../src/config/listener.js';
import { newContext } from '../../src/config/reader.js';
import { matchFilterChain } from '../../src/listener/chain-match.js';
import { ListenerIndex } from '../../src/listener/handoff.js';
import { parseSockaddr } from '../../src/listener/original-dst.js';

const tcp = (cluster: string) => ({ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', cluster } });
const listener = (name: string, address: string, port: number, chains: object[], extra: object = {}) =>
  decodeListener({ name, address: { socket_address: { address, port_value: port } }, filter_chains: chains, ...extra }, name, newContext());
const chain = (name: string, match?: object) => ({ name, ...(match ? { filter_chain_match: match } : {}), filters: [tcp(name)] });
const facts = (dst: string, dport: number, src = '10.0.0.9', sport = 40000) => ({ destination: { address: dst, port: dport }, source: { address: src, port: sport }, transportProtocol: 'raw_buffer' });

t.test('hand-off: exact ip:port, then 0.0.0.0:port, then the receiving listener', async (t) => {
  const outbound = listener('virtualOutbound', '0.0.0.0', 15001, [chain('pass')], { use_original_dst: true });
  const exact = listener('198.18.0.1_80', '198.18.0.1', 80, [chain('exact')], { bind_to_port: false });
  const wild = listener('0.0.0.0_80', '0.0.0.0', 80, [chain('wild')], { bind_to_port: false });
  const idx = new ListenerIndex([outbound, exact, wild]);
  t.equal(idx.handOff(outbound, { address: '198.18.0.1', port: 80 }), exact);
  t.equal(idx.handOff(outbound, { address: '198.18.0.2', port: 80 }), wild);
  t.equal(idx.handOff(outbound, { address: '198.18.0.1', port: 81 }), outbound);
});

t.test('filter chain match follows Envoy\'s order and specificity', async (t) => {
  const l = listener('l', '0.0.0.0', 15006, [
    chain('port80', { destination_port: 80 }),
    chain('port80-narrow', { destination_port: 80, prefix_ranges: [{ address_prefix: '198.18.1.0', prefix_len: 24 }] }),
    chain('port80-narrower', { destination_port: 80, prefix_ranges: [{ address_prefix: '198.18.1.128', prefix_len: 25 }] }),
    chain('tls-only', { destination_port: 443, transport_protocol: 'tls' }),
    chain('raw443', { destination_port: 443, transport_protocol: 'raw_buffer' }),
    chain('sni', { destination_port: 8443, server_names: ['a.example'] }),
    chain('from-src', { source_prefix_ranges: [{ address_prefix: '10.1.0.0', prefix_len: 16 }] }),
    chain('src-port', { source_ports: [5555] }),
    chain('any'),
  ], { default_filter_chain: chain('default') });
  const name = (f: ReturnType<typeof facts>) => matchFilterChain(l, f)?.name;
  t.equal(name(facts('198.18.2.1', 80)), 'port80', 'port match without a prefix');
  t.equal(name(facts('198.18.1.1', 80)), 'port80-narrow', 'a prefix beats no prefix');
  t.equal(name(facts('198.18.1.200', 80)), 'port80-narrower', 'the longest prefix wins');
  t.equal(name(facts('1.1.1.1', 443)), 'raw443', 'plaintext matches raw_buffer, not tls');
  t.equal(name(facts('1.1.1.1', 8443)), 'default', 'no backtracking: port 8443 belongs to an SNI chain, which cannot match without SNI');
  t.equal(name(facts('1.1.1.1', 9999, '10.1.2.3')), 'from-src', 'source prefix');
  t.equal(name(facts('1.1.1.1', 9999, '10.0.0.9', 5555)), 'src-port', 'a listed source port beats any port');
  t.equal(name(facts('1.1.1.1', 9999)), 'any');
  const onlyPort = listener('p', '0.0.0.0', 1, [chain('p80', { destination_port: 80 })], { default_filter_chain: chain('default') });
  t.equal(matchFilterChain(onlyPort, facts('1.1.1.1', 81))?.name, 'default', 'nothing matched: default_filter_chain');
  const noDefault = listener('n', '0.0.0.0', 1, [chain('p80', { destination_port: 80 })]);
  t.equal(matchFilterChain(noDefault, facts('1.1.1.1', 81)), undefined);
});

t.test('sockaddr parsing for SO_ORIGINAL_DST', async (t) => {
  const v4 = Buffer.alloc(16);
  v4.writeUInt16LE(2, 0);
  v4.writeUInt16BE(9080, 2);
  Buffer.from([198, 18, 0, 7]).copy(v4, 4);
  t.same(parseSockaddr(v4), { address: '198.18.0.7', port: 9080 });
  const v6 = Buffer.alloc(28);
  v6.writeUInt16LE(10, 0);
  v6.writeUInt16BE(443, 2);
  v6.writeUInt16BE(0xfd00, 8);
  v6.writeUInt16BE(5, 22);
  t.same(parseSockaddr(v6), { address: 'fd00::5', port: 443 });
  const mapped = Buffer.alloc(28);
  mapped.writeUInt16LE(10, 0);
  mapped.writeUInt16BE(80, 2);
  mapped.writeUInt16BE(0xffff, 18);
  Buffer.from([198, 18, 0, 9]).copy(mapped, 20);
  t.same(parseSockaddr(mapped), { address: '198.18.0.9', port: 80 });
});
