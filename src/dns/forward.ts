/**
 * Forwarding to the upstream resolvers: the query's bytes go out unchanged (its id, its EDNS size), over
 * the transport the client used, one fresh socket per query (a random source port, and nothing to demux).
 * A truncated UDP answer is asked again over TCP; each upstream is tried in turn within its timeout.
 */
import { createSocket } from 'node:dgram';
import { isIP, connect } from 'node:net';
import { dnsMetrics } from './metrics.js';
import type { Upstream } from './resolv.js';
import { isTruncated } from './wire.js';

export type Transport = 'udp' | 'tcp';

class AttemptError extends Error {
  constructor(readonly reason: string, detail: string) {
    super(detail);
  }
}

const idOf = (b: Buffer) => b.readUInt16BE(0);
/** A plausible answer to `query`: a whole header, QR set, the same id. */
const answers = (query: Buffer, reply: Buffer) => reply.length >= 12 && (reply[2]! & 0x80) !== 0 && idOf(reply) === idOf(query);

function udpAttempt(up: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = createSocket({ type: isIP(up.host) === 6 ? 'udp6' : 'udp4', recvBufferSize: 1 << 16 });
    const finish = (err: Error | undefined, reply?: Buffer) => {
      clearTimeout(timer);
      sock.removeAllListeners('message');
      sock.on('error', () => {});
      try {
        sock.close();
      } catch {
        // already closed
      }
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new AttemptError('timeout', `no answer within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e: NodeJS.ErrnoException) => finish(new AttemptError(e.code === 'ECONNREFUSED' ? 'refused' : 'error', e.message)));
    // Anything that is not an answer to this query (stray or spoofed) is ignored; the timer still runs.
    sock.on('message', (msg) => answers(query, msg) && finish(undefined, msg));
    sock.connect(up.port, up.host, () => sock.send(query));
  });
}

/** One query over a fresh TCP connection (also the registrar's transport for UPDATE). */
export function tcpExchange(up: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: up.host, port: up.port });
    const chunks: Buffer[] = [];
    let got = 0;
    const finish = (err: Error | undefined, reply?: Buffer) => {
      clearTimeout(timer);
      sock.removeAllListeners('data');
      sock.on('error', () => {});
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new AttemptError('timeout', `no TCP answer within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e: NodeJS.ErrnoException) => finish(new AttemptError(e.code === 'ECONNREFUSED' ? 'refused' : 'error', e.message)));
    sock.on('close', () => finish(new AttemptError('closed', 'upstream closed the TCP connection before answering')));
    sock.on('connect', () => {
      const len = Buffer.allocUnsafe(2);
      len.writeUInt16BE(query.length);
      sock.end(Buffer.concat([len, query]));
    });
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got < 2) return;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const want = all.readUInt16BE(0);
      if (got < 2 + want) return;
      const reply = all.subarray(2, 2 + want);
      if (answers(query, reply)) finish(undefined, reply);
      else finish(new AttemptError('bad-reply', 'the TCP answer does not match the query'));
    });
  });
}

export interface ForwarderOptions {
  readonly upstreams: readonly Upstream[];
  /** Per upstream and transport. */
  readonly timeoutMs: number;
  readonly log?: { warn(o: object, msg: string): void };
}

export class Forwarder {
  constructor(private readonly opts: ForwarderOptions) {}

  get upstreams(): readonly Upstream[] {
    return this.opts.upstreams;
  }

  /** The upstream's answer, or undefined when every upstream failed (the caller answers SERVFAIL). */
  async forward(query: Buffer, transport: Transport): Promise<Buffer | undefined> {
    for (const up of this.opts.upstreams) {
      const label = `${up.host}:${up.port}`;
      try {
        if (transport === 'tcp') return await tcpExchange(up, query, this.opts.timeoutMs);
        const reply = await udpAttempt(up, query, this.opts.timeoutMs);
        if (!isTruncated(reply)) return reply;
        try {
          return await tcpExchange(up, query, this.opts.timeoutMs);
        } catch (e) {
          // The truncated answer is still an answer: the client can retry over TCP itself.
          dnsMetrics.upstreamFailures.inc({ upstream: label, reason: `tcp-retry-${(e as AttemptError).reason ?? 'error'}` });
          return reply;
        }
      } catch (e) {
        const reason = (e as AttemptError).reason ?? 'error';
        dnsMetrics.upstreamFailures.inc({ upstream: label, reason });
        this.opts.log?.warn({ upstream: label, transport, reason, err: (e as Error).message }, 'dns: upstream failed');
      }
    }
    return undefined;
  }
}
