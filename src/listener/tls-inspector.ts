/**
 * Envoy's TLS inspector: reads a connection's first bytes and, when they are a TLS ClientHello, reports
 * SNI and ALPN for filter-chain match. Nothing is consumed: the bytes go back onto the socket (unshift)
 * for whoever handles the connection next, a TLS terminator or a relay that passes foreign TLS through.
 */
import type { Socket } from 'node:net';
import type { Listener } from '../config/model.js';

export interface ClientHelloFacts {
  readonly transportProtocol: 'tls' | 'raw_buffer';
  readonly serverName?: string;
  readonly applicationProtocols: readonly string[];
}

export const NEED_MORE = 'need-more' as const;
/** Envoy's default max_client_hello_size. */
const MAX_CLIENT_HELLO = 64 * 1024;
const RAW: ClientHelloFacts = { transportProtocol: 'raw_buffer', applicationProtocols: [] };

const HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;

/**
 * Parses what has arrived so far. A ClientHello may span several records: their handshake payloads are
 * joined. Anything that is not a well-formed ClientHello is raw_buffer, as for Envoy.
 */
export function parseClientHello(buf: Buffer): ClientHelloFacts | typeof NEED_MORE {
  if (buf.length < 1) return NEED_MORE;
  if (buf[0] !== HANDSHAKE) return RAW;
  if (buf.length >= 2 && buf[1] !== 3) return RAW;
  // Join the handshake records' payloads until the ClientHello is whole.
  const parts: Buffer[] = [];
  let have = 0;
  let need = -1;
  let off = 0;
  while (need < 0 || have < need) {
    if (buf.length < off + 5) return buf.length >= MAX_CLIENT_HELLO ? RAW : NEED_MORE;
    if (buf[off] !== HANDSHAKE || buf[off + 1] !== 3) return RAW;
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 2048) return RAW;
    if (buf.length < off + 5 + len) return off + 5 + len > MAX_CLIENT_HELLO ? RAW : NEED_MORE;
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0) {
      const first = Buffer.concat(parts);
      if (first.length < 4) continue;
      if (first[0] !== CLIENT_HELLO) return RAW;
      need = 4 + first.readUIntBE(1, 3);
      if (need > MAX_CLIENT_HELLO) return RAW;
    }
  }
  try {
    return readHello(Buffer.concat(parts).subarray(4, need));
  } catch {
    return RAW;
  }
}

function readHello(h: Buffer): ClientHelloFacts {
  let p = 2 + 32; // client_version, random
  p += 1 + h[p]!; // session_id
  p += 2 + h.readUInt16BE(p); // cipher_suites
  p += 1 + h[p]!; // compression_methods
  if (p > h.length) throw new RangeError('truncated');
  let serverName: string | undefined;
  const alpn: string[] = [];
  if (p + 2 <= h.length) {
    const end = p + 2 + h.readUInt16BE(p);
    p += 2;
    if (end > h.length) throw new RangeError('truncated');
    while (p + 4 <= end) {
      const type = h.readUInt16BE(p);
      const len = h.readUInt16BE(p + 2);
      const body = h.subarray(p + 4, p + 4 + len);
      if (body.length !== len) throw new RangeError('truncated');
      p += 4 + len;
      if (type === EXT_SERVER_NAME && body.length >= 2) {
        let q = 2;
        while (q + 3 <= body.length) {
          const nameType = body[q]!;
          const n = body.readUInt16BE(q + 1);
          if (nameType === 0) serverName = body.subarray(q + 3, q + 3 + n).toString('ascii').toLowerCase();
          q += 3 + n;
        }
      } else if (type === EXT_ALPN && body.length >= 2) {
        let q = 2;
        while (q < body.length) {
          const n = body[q]!;
          alpn.push(body.subarray(q + 1, q + 1 + n).toString('latin1'));
          q += 1 + n;
        }
      }
    }
  }
  return { transportProtocol: 'tls', serverName, applicationProtocols: alpn };
}

/**
 * Waits for enough bytes to decide, then puts them back and calls `done` with the socket paused. A client
 * that sends nothing for `silentMs` (a server-first protocol) or closes is raw_buffer, like Envoy with
 * continue_on_listener_filters_timeout, which Istio sets.
 */
export function inspectTls(socket: Socket, silentMs: number, done: (facts: ClientHelloFacts) => void): void {
  let head: Buffer | undefined;
  let finished = false;
  const finish = (facts: ClientHelloFacts) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.pause();
    if (head) socket.unshift(head);
    done(facts);
  };
  const onData = (chunk: Buffer) => {
    head = head ? Buffer.concat([head, chunk]) : chunk;
    const r = parseClientHello(head);
    if (r !== NEED_MORE) finish(r);
  };
  const onEnd = () => finish(RAW);
  const timer = setTimeout(() => finish(RAW), silentMs);
  socket.on('data', onData);
  socket.once('end', onEnd);
  // Reset before deciding: nobody is left to hand the connection to.
  socket.once('close', () => {
    finished = true;
    clearTimeout(timer);
  });
  socket.resume();
}

const inspected = new WeakMap<Listener, boolean>();

/** Only listeners whose chains ask about transport, ALPN or SNI (or terminate TLS) wait for a ClientHello. */
export function needsTlsInspector(l: Listener): boolean {
  let v = inspected.get(l);
  if (v === undefined) {
    v = [...l.filterChains, ...(l.defaultFilterChain ? [l.defaultFilterChain] : [])].some(
      (c) => c.tls || c.match.transportProtocol !== undefined || c.match.applicationProtocols.length > 0 || c.match.serverNames.length > 0,
    );
    inspected.set(l, v);
  }
  return v;
}
