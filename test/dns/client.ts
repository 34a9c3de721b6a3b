/** A small DNS client for the tests: raw UDP/TCP exchanges with dns-packet, and dig for the real-tool view. */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { spawnSync } from 'node:child_process';
import dnsPacket from 'dns-packet';

export function udpExchange(port: number, msg: Buffer, timeoutMs = 15_000, host = '127.0.0.1'): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => done(undefined), timeoutMs);
    const done = (b: Buffer | undefined) => {
      clearTimeout(t);
      s.close();
      resolve(b);
    };
    s.on('message', (m) => done(m));
    s.on('error', () => done(undefined));
    s.send(msg, port, host);
  });
}

/** Sends `frames` (already length-prefixed, or raw bytes) and collects replies until `want` arrive or the peer closes. */
export function tcpExchange(port: number, bytes: Buffer, want: number, timeoutMs = 15_000): Promise<{ replies: Buffer[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    let buf = Buffer.alloc(0);
    const replies: Buffer[] = [];
    let closed = false;
    const t = setTimeout(() => done(), timeoutMs);
    const done = () => {
      clearTimeout(t);
      s.destroy();
      resolve({ replies, closed });
    };
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        replies.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (replies.length >= want) done();
    });
    s.on('close', () => {
      closed = true;
      done();
    });
    s.on('error', () => {});
  });
}

export const frame = (b: Buffer) => Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);

export function query(name: string, type: dnsPacket.RecordType = 'A', o: { id?: number; edns?: number } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: o.id ?? 4242,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    additionals: o.edns ? [{ type: 'OPT', name: '.', udpPayloadSize: o.edns, flags: 0, options: [] } as unknown as dnsPacket.Answer] : [],
  });
}

export const decode = (b: Buffer) => dnsPacket.decode(b);
export const addresses = (b: Buffer) => (decode(b).answers ?? []).map((a) => String((a as { data?: unknown }).data));

export interface Dig {
  status: string;
  flags: string[];
  answers: string[];
  raw: string;
}

/** dig +noall +comments +answer against the proxy; answers are the records' data fields. */
export function dig(port: number, name: string, type = 'A', ...opts: string[]): Dig {
  const r = spawnSync('dig', ['@127.0.0.1', '-p', String(port), '+time=10', '+tries=1', '+noall', '+comments', '+answer', ...opts, name, type], { encoding: 'utf8' });
  const raw = r.stdout;
  const status = /status: (\w+)/.exec(raw)?.[1] ?? `no answer: ${raw}${r.stderr}`;
  const flags = (/flags: ([^;]*);/.exec(raw)?.[1] ?? '').trim().split(/\s+/);
  const answers = raw
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith(';'))
    .map((l) => l.split(/\s+/).slice(4).join(' '));
  return { status, flags, answers, raw };
}
