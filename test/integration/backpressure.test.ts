/**
 * Backpressure both ways through the x-protocol engine, with a real sofa-rpc-node provider in its own
 * process: a caller that stops reading stops being read, and a provider that stops reading (SIGSTOP, as a
 * frozen JVM would) stops its callers being read. Either way the sidecar forwards far fewer requests than
 * it was sent, instead of buffering them, and once the slow side catches up every request is answered.
 */
import { createRequire } from 'node:module';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { boltCodec } from '../../protocols/bolt/index.js';
import { CodecError, NEED_MORE } from '../../protocols/codec.js';
import { type LocalSidecar, startBoltServer, startLocalSidecar } from '../helpers/sidecar.js';

// The real client's encoder, so the requests are exactly what sofa-rpc-node would send.
const bolt = createRequire(import.meta.url)('sofa-bolt-node/lib/protocol') as {
  requestEncode(id: number, req: object, options: object): Buffer;
};

const SERVICE = 'com.nodejs.test.TestService:1.0';
const KB16 = 'x'.repeat(16 * 1024);

/** `n` echo requests of a 16 KiB string (ids 1..n), as one buffer: ~16 KiB each way per call. */
function echoRequests(n: number, timeoutMs: number): Buffer {
  const one = bolt.requestEncode(1, { serverSignature: SERVICE, methodName: 'echo', args: [{ $class: 'java.lang.String', $: KB16 }], requestProps: { service: SERVICE }, timeout: timeoutMs }, {
    protocolType: 'bolt',
    codecType: 'hessian2',
    boltVersion: 1,
    crcEnable: false,
  });
  const all = Buffer.alloc(one.length * n);
  for (let i = 0; i < n; i++) {
    one.copy(all, i * one.length);
    boltCodec.setRequestId(all.subarray(i * one.length, (i + 1) * one.length), i + 1);
  }
  return all;
}

/** Reads responses until `n` have arrived; resolves with their ids and how many were not successes. */
function collect(sock: Socket, n: number): { done: Promise<{ ids: Set<number>; failed: number }> } {
  let buf: Buffer = Buffer.alloc(0);
  const ids = new Set<number>();
  let failed = 0;
  const done = new Promise<{ ids: Set<number>; failed: number }>((resolve, reject) => {
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      for (;;) {
        const f = boltCodec.decode(buf, 1 << 24);
        if (f === NEED_MORE) break;
        if (f instanceof CodecError) return reject(f);
        buf = buf.subarray(f.raw.length);
        ids.add(Number(f.requestId));
        if (!f.ok) failed++;
        if (ids.size === n) resolve({ ids, failed });
      }
    });
    sock.on('close', () => reject(new Error(`closed after ${ids.size} of ${n} responses`)));
  });
  return { done };
}

/** Polls the forwarded-request count until it stops moving for a second; returns where it stopped. */
async function plateau(sidecar: LocalSidecar, ceiling: number): Promise<number> {
  let last = -1;
  let still = 0;
  for (let i = 0; i < 100 && still < 4; i++) {
    await sleep(250);
    const v = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    still = v === last ? still + 1 : 0;
    last = v;
    if (v >= ceiling) break;
  }
  return last;
}

const range = (n: number) => new Set(Array.from({ length: n }, (_, i) => i + 1));

t.test('backpressure through the x-protocol engine', async (t) => {
  const server = await startBoltServer('P');
  const sidecar = await startLocalSidecar('backpressure', {
    static_resources: {
      clusters: [{ name: 'p', type: 'STATIC', connect_timeout: '1s', load_assignment: { cluster_name: 'p', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: server.port } } } }] }] } }],
      listeners: [{ name: 'rpc', address: { socket_address: { address: '127.0.0.1', port_value: 0 } }, filter_chains: [{ filters: [{ name: 'xsidecar.filters.network.xprotocol', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: 'rpc', protocol: 'bolt', cluster: 'p' } }] }] }],
    },
  });
  t.teardown(() => {
    server.proc.kill('SIGCONT');
    server.proc.kill('SIGKILL');
    sidecar.proc.kill('SIGKILL');
  });
  const listeners = (await (await fetch(`http://${sidecar.admin}/listeners?format=json`)).json()) as { listener_statuses: { local_address: { socket_address: { address: string } } }[] };
  const [host, port] = listeners.listener_statuses[0]!.local_address.socket_address.address.split(':');
  const open = async () => {
    const sock = connect({ host, port: Number(port) });
    await new Promise((r) => sock.once('connect', r));
    t.teardown(() => sock.destroy());
    return sock;
  };

  t.test('a caller that does not read is not read; once it reads, every request is answered', async (t) => {
    const N = 8000;
    const before = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const sock = await open();
    sock.pause();
    sock.write(echoRequests(N, 60_000));
    const stalled = (await plateau(sidecar, before + N)) - before;
    t.ok(stalled < N / 2, `the sidecar stopped forwarding at ${stalled} of ${N} requests while the caller did not read`);
    const { done } = collect(sock, N);
    sock.resume();
    const { ids, failed } = await done;
    t.same(ids, range(N), 'every request answered once, with its own id');
    t.equal(failed, 0, 'and successfully');
  });

  t.test('a provider that stops reading stops its callers being read; nothing is lost when it resumes', async (t) => {
    const N = 8000;
    const before = await sidecar.metric('xsidecar_cluster_upstream_rq_total');
    const sock = await open();
    const { done } = collect(sock, N);
    server.proc.kill('SIGSTOP');
    sock.write(echoRequests(N, 60_000));
    const stalled = (await plateau(sidecar, before + N)) - before;
    t.ok(stalled < N / 2, `the sidecar stopped forwarding at ${stalled} of ${N} requests while the provider was stopped`);
    t.ok(sock.writableLength > 0, `the caller is pushed back: ${sock.writableLength} bytes wait in its own socket`);
    server.proc.kill('SIGCONT');
    const { ids, failed } = await done;
    t.same(ids, range(N), 'every request answered once, with its own id');
    t.equal(failed, 0, 'and successfully');
  });
});
