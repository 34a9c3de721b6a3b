import { connect, type Socket } from 'node:net';
import { originateTls, type UpstreamTransport } from './tls-origination.js';

export interface ConnectOptions {
  readonly address: string;
  readonly port: number;
  readonly timeoutMs: number;
  /** upstream_bind_config: Istio's inbound passthrough connects from 127.0.0.6. */
  readonly localAddress?: string;
  /** TLS to originate (Istio's ISTIO_MUTUAL via transport_socket_matches); undefined: plaintext. */
  readonly transport?: UpstreamTransport;
}

/**
 * Opens an upstream connection; `done` is called exactly once, with the socket or with an error (a
 * connect timeout included). The socket allows half-close so a FIN can be relayed one way.
 */
export function connectUpstream(opts: ConnectOptions, done: (err: Error | null, socket: Socket) => void): Socket {
  const raw = connect({ host: opts.address, port: opts.port, localAddress: opts.localAddress, allowHalfOpen: true, noDelay: true });
  let socket: Socket = raw;
  let setupError: Error | undefined;
  const transport = opts.transport;
  if (transport && 'unsupported' in transport) setupError = new Error(`cannot originate this cluster's TLS: ${transport.unsupported}`);
  else if (transport) {
    try {
      // The handshake runs once TCP connects; "connected" for the caller means the handshake is done
      // and the peer's certificate and SAN were accepted, and the connect timeout covers both.
      socket = originateTls(raw, transport.tls, `${opts.address}:${opts.port}`);
    } catch (e) {
      setupError = e as Error;
    }
  }
  let settled = false;
  const settle = (err: Error | null) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    socket.off('error', onError);
    socket.off('close', onClose);
    if (err) socket.destroy();
    done(err, socket);
  };
  const onError = (err: Error) => settle(err);
  const onClose = () => settle(new Error('closed while connecting'));
  if (setupError) {
    const err = setupError;
    process.nextTick(() => settle(err));
    raw.on('error', () => undefined);
  }
  const timer = setTimeout(() => settle(new Error(`connect timeout after ${opts.timeoutMs} ms to ${opts.address}:${opts.port}`)), opts.timeoutMs);
  if (socket === raw) socket.once('connect', () => settle(null));
  else socket.once('secureConnect', () => settle(null));
  socket.on('error', onError);
  socket.once('close', onClose);
  return socket;
}
