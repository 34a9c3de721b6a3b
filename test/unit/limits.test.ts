/**
 * The pieces behind the limits on callers that can be checked without sockets: the log throttle (real
 * timers), the bootstrap's overload_manager and runtime keys, the connection ceiling derived from the
 * descriptor limit, the frame buffer letting go of memory, and static routes naming unknown clusters.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import t from 'tap';
import { decodeBootstrap, parseConfigText } from '../../src/config/bootstrap.js';
import { ConfigError } from '../../src/config/reader.js';
import { connectionCeiling } from '../../src/listener/overload.js';
import { raiseDescriptorLimit, readDescriptorLimit } from '../../src/listener/rlimit.js';
import { LogThrottle } from '../../src/observe/throttle.js';
import { FrameBuffer } from '../../src/proxy/xprotocol/frame-buffer.js';

t.test('a repeated warning is logged once per window, then summarised with the count', async (t) => {
  const lines: { fields: Record<string, unknown>; msg: string }[] = [];
  const logger = { warn: (fields: Record<string, unknown>, msg: string) => lines.push({ fields, msg }) } as unknown as Logger;
  const throttle = new LogThrottle(200, () => logger);
  for (let i = 0; i < 1000; i++) throttle.warn('bad frame', { i }, 'bad frame from downstream');
  throttle.warn('other', {}, 'another kind');
  t.equal(lines.length, 2, 'one line per kind during the window');
  await sleep(400);
  t.equal(lines.length, 3, 'then one summary');
  t.equal(lines[2]!.fields.suppressed, 999);
  t.equal(lines[2]!.fields.i, 999, 'with the last one\'s fields');
  t.match(lines[2]!.msg, /and 999 more like it/);
  throttle.warn('bad frame', { i: 1000 }, 'bad frame from downstream');
  t.equal(lines.length, 4, 'a new window logs again');
  throttle.flush();
  t.equal(lines.length, 4, 'nothing was suppressed in it, so no summary');
});

const runtime = (layer: object) => ({ layered_runtime: { layers: [{ name: 'static', static_layer: layer }] } });

t.test('overload_manager and runtime keys are read; bad values fail with their paths', async (t) => {
  const plain = decodeBootstrap({});
  t.same(plain.protection, { shedIdleAt: 0.9, stopAcceptingAt: 0.95, sniffTimeoutMs: 15_000, frameTimeoutMs: 30_000 }, 'defaults');
  const b = decodeBootstrap({
    ...runtime({ overload: { global_downstream_max_connections: 5000 }, 'xsidecar.sniff_timeout_ms': 2000, 'xsidecar.frame_timeout_ms': '3000', 'xsidecar.buffer_budget_bytes': 1 << 26, 'xsidecar.max_early_dials': 7, 're2.max_program_size.error_level': 1024 }),
    overload_manager: {
      refresh_interval: '0.25s',
      resource_monitors: [{ name: 'envoy.resource_monitors.fixed_heap', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig', max_heap_size_bytes: 1 << 30 } }],
      actions: [
        { name: 'envoy.overload_actions.shrink_heap', triggers: [{ name: 'envoy.resource_monitors.fixed_heap', threshold: { value: 0.8 } }] },
        { name: 'envoy.overload_actions.stop_accepting_connections', triggers: [{ name: 'envoy.resource_monitors.fixed_heap', threshold: { value: 0.97 } }] },
      ],
    },
  });
  t.same(b.protection, { shedIdleAt: 0.8, stopAcceptingAt: 0.97, sniffTimeoutMs: 2000, frameTimeoutMs: 3000, bufferBudgetBytes: 1 << 26, maxEarlyDials: 7, maxDownstreamConnections: 5000, maxHeapBytes: 1 << 30 });
  const err = t.throws(() => decodeBootstrap(runtime({ 'xsidecar.frame_timeout_ms': 'soon' }))) as ConfigError;
  t.equal(err.path, 'layered_runtime.layers[0].static_layer["xsidecar.frame_timeout_ms"]');
  const bad = t.throws(() => decodeBootstrap({ overload_manager: { actions: [{ name: 'envoy.overload_actions.stop_accepting_connections', triggers: [{ name: 'envoy.resource_monitors.fixed_heap', threshold: { value: 3 } }] }] } })) as ConfigError;
  t.equal(bad.path, 'overload_manager.actions[0].triggers[0].threshold.value');
});

t.test('the connection ceiling leaves descriptors for everything else and two per connection', async (t) => {
  t.equal(connectionCeiling(20_000), (20_000 - 1024) / 2);
  t.equal(connectionCeiling(1024), Math.floor((1024 - 102) / 2));
  t.equal(connectionCeiling(100), 18);
  const fds = raiseDescriptorLimit();
  if (!fds) return void t.pass('koffi not available: the raise is not checked');
  t.equal(fds.soft, fds.hard, 'the soft limit is raised to the hard one');
});

t.test('the descriptor limit is read from /proc/self/limits; libc is asked only when the soft one is below the hard one', async (t) => {
  const limits = (soft: string, hard: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax processes             95524                95524                processes\nMax open files            ${soft}                ${hard}                files\n`;
  t.same(readDescriptorLimit(limits('1024', '4096')), { soft: 1024n, hard: 4096n });
  t.same(readDescriptorLimit(limits('unlimited', 'unlimited')), { soft: BigInt(Number.MAX_SAFE_INTEGER), hard: BigInt(Number.MAX_SAFE_INTEGER) });
  t.equal(readDescriptorLimit('Max processes 1 1 processes\n'), undefined, 'no such line');
  t.same(raiseDescriptorLimit(() => ({ soft: 300n, hard: 300n })), { soft: 300, hard: 300, was: 300 }, 'nothing to raise: taken as read');
  const real = readDescriptorLimit();
  t.ok(real && real.soft > 0n && real.hard >= real.soft, `this process: ${real?.soft}/${real?.hard}`);
  // Claiming a soft limit below the real one sends it to libc, which reads (and keeps) the real pair.
  const asked = raiseDescriptorLimit(() => ({ soft: 1n, hard: real!.hard }));
  if (!asked) return void t.pass('koffi not available: the libc path is not checked');
  t.same([asked.soft, asked.hard], [Number(real!.hard), Number(real!.hard)], 'libc read the real limits');
});

t.test('the frame buffer lets go of a partial frame once it is consumed or cleared', async (t) => {
  const fb = new FrameBuffer();
  fb.append(Buffer.alloc(100));
  fb.append(Buffer.alloc(100_000));
  t.equal(fb.pending, 100_100);
  t.ok(fb.retained >= 100_100, 'the allocation is counted, not only the bytes');
  fb.consume(100_100);
  t.equal(fb.retained, 0, 'consumed: nothing kept');
  fb.append(Buffer.alloc(10));
  fb.clear();
  t.same([fb.pending, fb.retained], [0, 0]);
});

const ep = { endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 1 } } } };
const cluster = (name: string) => ({ name, type: 'STATIC', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [ep] }] } });
const withFilter = (typed: object, extra: object = {}) => ({
  ...extra,
  static_resources: {
    clusters: [cluster('a')],
    listeners: [{ name: 'l', address: { socket_address: { address: '127.0.0.1', port_value: 1 } }, filter_chains: [{ filters: [{ name: 'f', typed_config: typed }] }] }],
  },
});
const hcm = (rc: object) => ({ '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', stat_prefix: 'h', ...rc });
const xp = (rc: object) => ({ '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', ...rc });
const routes = (clusterName: string) => ({ virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'a' } }, { match: { prefix: '/' }, route: { cluster: clusterName } }] }] });

t.test('a static route or filter naming an unknown cluster is an error with its path; xDS-fed ones are not', async (t) => {
  const at = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config';
  const fails = (b: object, path: string) => {
    const err = t.throws(() => decodeBootstrap(b)) as ConfigError;
    t.equal(err.path, path);
    t.match(err.detail, /unknown cluster "nope"/);
  };
  fails(withFilter(hcm({ route_config: routes('nope') })), `${at}.route_config.virtual_hosts[0].routes[1].route.cluster`);
  fails(withFilter(xp({ route_config: routes('nope') })), `${at}.route_config.virtual_hosts[0].routes[1].route.cluster`);
  fails(withFilter(xp({ cluster: 'nope' })), `${at}.cluster`);
  t.doesNotThrow(() => decodeBootstrap(withFilter(hcm({ route_config: routes('a') }))), 'known clusters pass');
  t.doesNotThrow(() => decodeBootstrap(withFilter(hcm({ rds: { route_config_name: 'r', config_source: { ads: {} } } }))), 'an RDS route is not checked');
  const cds = { dynamic_resources: { cds_config: { ads: {} }, ads_config: { api_type: 'GRPC', grpc_services: [{ envoy_grpc: { cluster_name: 'a' } }] } } };
  t.doesNotThrow(() => decodeBootstrap(withFilter(hcm({ route_config: routes('nope') }), cds)), 'clusters from CDS may come later');
});

t.test('config text: empty, not an object, binary', async (t) => {
  const err = (text: string) => (t.throws(() => parseConfigText(text, 'f.yaml')) as ConfigError).message;
  t.equal(err(''), 'f.yaml: empty file');
  t.equal(err('\n# only a comment\n'), 'f.yaml: empty file');
  t.equal(err('- 1\n'), 'f.yaml: expected a bootstrap object, got a list');
  t.equal(err('42'), 'f.yaml: expected a bootstrap object, got a number');
  t.match(err('\u0000\u0001binary\uFFFD'), /^f\.yaml: not a text file/);
  t.match(err('a: [1, 2\n'), /^f\.yaml: not valid YAML or JSON: [\x20-\x7e]*$/);
});
