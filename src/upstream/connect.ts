import { connect, type Socket } from 'node:net';

export interface ConnectOptions {
  readonly address: string;
  readonly port: number;
  readonly timeoutMs: number;
  /** upstream_bind_config: Istio's inbound passthrough connects from 127.0.0.6. */
  readonly localAddress?: string;
}

/**
 * Opens an upstream connection; `done` is called exactly once, with the socket or with an error (a
 * connect timeout included). The socket allows half-close so a FIN can be relayed one way.
 */
export function connectUpstream(opts: ConnectOptions, done: (err: Error | null, socket: Socket) => void): Socket {
  const socket = connect({ host: opts.address, port: opts.port, localAddress: opts.localAddress, allowHalfOpen: true, noDelay: true });
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
  const timer = setTimeout(() => settle(new Error(`connect timeout after ${opts.timeoutMs} ms to ${opts.address}:${opts.port}`)), opts.timeoutMs);
  socket.once('connect', () => settle(null));
  socket.on('error', onError);
  socket.once('close', onClose);
  return socket;
}
