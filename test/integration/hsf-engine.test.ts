/**
 * HSF through the x-protocol engine. No public HSF peer exists, so the providers are our own small HSF
 * servers (test/peers/hsf-server.ts, written from the layout) in their own processes, and the caller is a
 * raw socket sending frames built from the layout: routing by service, interface, method, version, group
 * and a custom property, per-request balancing, local heartbeats, native errors.
 */
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { CodecError, NEED_MORE, type Frame } from '../../protocols/codec.js';
import { hsfCodec } from '../../protocols/hsf/index.js';
import { type HsfRequest, hmap, hsfHeartbeat, hsfRequest } from '../helpers/hsf.js';
import { peer } from '../helpers/netns.js';
import { type LocalSidecar, spawnLocal, startLocalSidecar } from '../helpers/sidecar.js';

const ep = (port: number) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } });
const cluster = (name: string, ports: number[]) => ({ name, type: 'STATIC', connect_timeout: '1s', lb_policy: 'ROUND_ROBIN', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: ports.map(ep) }] } });
const xproto = (extra: object) => ({ name: 'xsidecar.filters.network.xprotocol', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'rpc', ...extra } });
const listener = (name: string, filter: object) => ({ name, address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [filter] }] });
const header = (name: string, exact: string) => ({ name, string_match: { exact } });
const toB = (h: object) => ({ match: { prefix: '/', headers: [h] }, route: { cluster: 'b' } });

async function startHsfServer(name: string) {
  const proc = spawnLocal(peer('hsf-server'), ['--name', name], `hsf-server ${name}`);
  const ready = await proc.waitJson<{ ready?: boolean; port: number }>((o) => o.ready === true);
  let asked = 0;
  /** What reached this provider so far. */
  const stats = async () => {
    const tag = String(++asked);
    proc.child.stdin!.write(`${tag}\n`);
    return proc.waitJson<{ stats?: string; requests: number; heartbeats: number }>((o) => o.stats === tag);
  };
  return { proc, port: ready.port, name, stats };
}

function bootstrap(a: number, b: number) {
  return {
    static_resources: {
      clusters: [cluster('a', [a]), cluster('b', [b]), cluster('both', [a, b]), cluster('dead', [1])],
      listeners: [
        listener('rpc', xproto({
          route_config: {
            name: 'rpc',
            virtual_hosts: [
              // Found by the service name as sent: `interface:version`.
              { name: 'other', domains: ['com.acme.Other:1.0'], routes: [{ match: { prefix: '/' }, route: { cluster: 'b' } }] },
              // Found by the interface part when no domain is the whole service name.
              {
                name: 'greeter',
                domains: ['com.acme.Greeter'],
                routes: [
                  toB(header('method', 'toB')),
                  toB(header('version', '2.0')),
                  toB(header('group', 'blue')),
                  toB(header('zone', 'gz')),
                  { match: { prefix: '/' }, route: { cluster: 'a', timeout: '10s' } },
                ],
              },
            ],
          },
        })),
        listener('small', xproto({ cluster: 'a', max_frame_bytes: 256 })),
        listener('dead', xproto({ cluster: 'dead' })),
        listener('tcp', { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', stat_prefix: 'tcp', cluster: 'both' } }),
      ],
    },
  };
}

/** A raw HSF caller on one connection: requests are matched to responses by id. */
class Caller {
  private buf = Buffer.alloc(0);
  private waiting = new Map<string, (f: Frame) => void>();
  private nextId = 2n ** 40n; // over 32 bits: the sidecar must restore the whole u64
  readonly closed: Promise<void>;
  readonly socket: Socket;

  constructor(address: string) {
    const [host, port] = address.split(':');
    this.socket = connect(Number(port), host);
    this.socket.on('error', () => {});
    this.socket.on('data', (d) => this.onData(d));
    this.closed = new Promise((r) => this.socket.once('close', () => r()));
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      const r = hsfCodec.decode(this.buf, 1 << 20);
      if (r === NEED_MORE || r instanceof CodecError) return;
      this.buf = this.buf.subarray(r.raw.length);
      const key = `${r.heartbeat}:${r.requestId}`;
      this.waiting.get(key)?.(r);
      this.waiting.delete(key);
    }
  }

  /** Sends `frame` (whose id is patched) and resolves with the frame that answers it. */
  send(frame: Buffer, heartbeat = false): Promise<Frame> {
    const id = this.nextId++;
    hsfCodec.setRequestId(frame, id);
    const answer = new Promise<Frame>((resolve, reject) => {
      this.waiting.set(`${heartbeat}:${id <= 0xffffffffn ? Number(id) : id}`, resolve);
      this.closed.then(() => reject(new Error(`connection closed before the answer to ${id}`)));
    });
    this.socket.write(frame);
    return answer;
  }

  call(r: HsfRequest) {
    return this.send(hsfRequest(r));
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The hessian2 string body of a response. */
function text(f: Frame): string {
  const b = f.raw.subarray(20);
  const t = b[0]!;
  if (t < 0x20) return b.toString('utf8', 1);
  if (t >= 0x30 && t <= 0x33) return b.toString('utf8', 2);
  return b.toString('utf8', 3);
}

t.test('hsf through the x-protocol engine', async (t) => {
  const a = await startHsfServer('A');
  const b = await startHsfServer('B');
  const sidecar: LocalSidecar = await startLocalSidecar('hsf-engine', bootstrap(a.port, b.port));
  const listeners = (await (await fetch(`http://${sidecar.admin}/listeners?format=json`)).json()) as { listener_statuses: { name: string; local_address: { socket_address: { address: string } } }[] };
  const addr = (name: string) => listeners.listener_statuses.find((l) => l.name === name)!.local_address.socket_address.address;
  const callers: Caller[] = [];
  const caller = (name: string) => {
    const c = new Caller(addr(name));
    callers.push(c);
    return c;
  };
  t.teardown(() => {
    callers.forEach((c) => c.close());
    [a.proc, b.proc, sidecar.proc].forEach((p) => p.kill('SIGKILL'));
  });

  t.test('sniffed on a tcp_proxy chain and balanced per request on one connection', async (t) => {
    const c = caller('tcp');
    const replies = await Promise.all(Array.from({ length: 40 }, () => c.call({ service: 'com.acme.Greeter:1.0', props: hmap({}) })));
    const by: Record<string, number> = {};
    for (const r of replies) {
      t.same([r.kind, r.status, r.heartbeat], ['response', 0, false]);
      const server = text(r).split('|')[0]!;
      by[server] = (by[server] ?? 0) + 1;
    }
    t.same(by, { A: 20, B: 20 }, 'round robin per request over both providers');
    t.ok(typeof replies[0]!.requestId === 'bigint' && replies[0]!.requestId >= 2n ** 40n, 'the caller\'s 64-bit id came back');
    t.equal(await sidecar.metric('xsidecar_downstream_cx_total', 'listener="tcp"'), 1, 'one downstream connection');
  });

  t.test('routing by service, interface, method, version, group and a property', async (t) => {
    const c = caller('rpc');
    const cases: [string, HsfRequest, string][] = [
      ['interface, default route', { service: 'com.acme.Greeter:1.0', props: hmap({ target_group: 'red' }) }, 'A'],
      ['method', { service: 'com.acme.Greeter:1.0', method: 'toB', props: hmap({}) }, 'B'],
      ['version', { service: 'com.acme.Greeter:2.0', props: hmap({}) }, 'B'],
      ['group from target_group', { service: 'com.acme.Greeter:1.0', props: hmap({ target_group: 'blue' }) }, 'B'],
      ['a custom property', { service: 'com.acme.Greeter:1.0', props: hmap({ zone: 'gz' }) }, 'B'],
      ['the whole service name', { service: 'com.acme.Other:1.0', props: hmap({}) }, 'B'],
    ];
    for (const [what, req, want] of cases) {
      const r = await c.call(req);
      const [server, service, method, group] = text(r).split('|');
      t.equal(server, want, what);
      t.same([r.status, service, method, group], [0, req.service, req.method ?? 'greet', req.props!.includes('blue') ? 'blue' : req.props!.includes('red') ? 'red' : ''], `${what}: the frame reached the provider intact`);
    }
    const busy = await Promise.all(Array.from({ length: 50 }, (_, i) => c.call({ service: 'com.acme.Greeter:1.0', props: hmap({ target_group: i % 2 ? 'blue' : 'red' }) })));
    t.ok(busy.every((r, i) => text(r).startsWith(i % 2 ? 'B|' : 'A|')), '50 concurrent calls, each routed on its own group');
  });

  t.test('heartbeats are answered locally', async (t) => {
    const before = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const c = caller('rpc');
    const pong = await c.send(hsfHeartbeat(0n), true);
    t.same([pong.kind, pong.heartbeat, pong.raw.length], ['response', true, 18]);
    t.ok(typeof pong.requestId === 'bigint' && pong.requestId >= 2n ** 40n, 'same id');
    t.equal(await sidecar.metric('xsidecar_cluster_upstream_rq_total'), before, 'nothing was forwarded upstream');
    t.ok((await sidecar.metric('xsidecar_rpc_heartbeats_answered_total', 'protocol="hsf"')) >= 1, 'counted');
    const r = await c.call({ service: 'com.acme.Greeter:1.0', props: hmap({}) });
    t.equal(r.status, 0, 'the connection still serves requests');
  });

  t.test('no route, dead upstream, timeout and an oversized frame get native errors', async (t) => {
    const noRoute = await caller('rpc').call({ service: 'com.acme.Nobody:1.0' });
    t.same([noRoute.kind, noRoute.status, noRoute.ok], ['response', 60, false], 'no route: status 60');
    t.match(text(noRoute), /^xsidecar no-route: /);

    const dead = await caller('dead').call({ service: 'com.acme.Greeter:1.0' });
    t.same([dead.status, dead.ok], [82, false], 'connect failure: status 82');
    t.match(text(dead), /^xsidecar connect-failure: /);

    const started = Date.now();
    const slow = await caller('rpc').call({ service: 'com.acme.Greeter:1.0', method: 'sleep', timeout: 300, props: hmap({ ms: '60000' }) });
    t.same([slow.status, slow.ok], [31, false], 'the frame\'s own 300 ms deadline, not the route\'s 10 s');
    t.match(text(slow), /^xsidecar timeout: /);
    t.ok(Date.now() - started < 8000, `answered after ${Date.now() - started} ms, well before the route's 10 s`);

    const small = caller('small');
    const big = await small.call({ service: 'com.acme.Greeter:1.0', args: [Buffer.alloc(300, 0x4e)] });
    t.same([big.status, big.ok], [41, false], 'frame too large: status 41');
    await small.closed;
    t.pass('then the connection closes');
  });

  t.test('what reached the providers', async (t) => {
    // Every request that reached a provider was counted there; the errors above never left the sidecar.
    const [sa, sb] = [await a.stats(), await b.stats()];
    t.equal(sa.requests + sb.requests, 40 + 6 + 50 + 1 + 1, 'the forwarded requests, and nothing the sidecar answered itself');
  });

  // The upstream socket is half-open (allowHalfOpen) and the pool listens for 'close' only: a provider that
  // dies with a request in flight sends FIN, and the request waits for its deadline (here 5 s) instead.
  t.test('a provider killed with a request in flight: a native error at once, not at the deadline', async (t) => {
    const c = caller('rpc');
    const before = (await b.stats()).requests;
    const pending = c.call({ service: 'com.acme.Greeter:1.0', method: 'sleep', timeout: 5000, props: hmap({ target_group: 'blue', ms: '60000' }) });
    for (let i = 0; i < 400 && (await b.stats()).requests === before; i++) await new Promise((r) => setTimeout(r, 25));
    b.proc.kill('SIGKILL');
    const r = await pending;
    t.not(r.status, 31, 'not a timeout');
    t.equal(r.ok, false);
    t.ok(r.status === 80 || r.status === 82, `status ${r.status}`);
    t.match(text(r), /^xsidecar (upstream-reset|connect-failure): /);
  });
});
