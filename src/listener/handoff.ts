import type { Listener, SocketAddress } from '../config/model.js';

const key = (address: string, port: number) => `${address}|${port}`;

/** Finds the listener that owns an original destination, as Envoy's use_original_dst hand-off does. */
export class ListenerIndex {
  private readonly exact = new Map<string, Listener>();
  private readonly wildcard = new Map<number, Listener>();

  constructor(listeners: Iterable<Listener>) {
    for (const l of listeners) {
      const { address, port } = l.address;
      if (address === '0.0.0.0' || address === '::') {
        if (!this.wildcard.has(port)) this.wildcard.set(port, l);
      } else this.exact.set(key(address, port), l);
    }
  }

  /** The exact ip:port listener, else 0.0.0.0:port, else the listener that accepted the connection. */
  handOff(receiving: Listener, dst: SocketAddress): Listener {
    return this.exact.get(key(dst.address, dst.port)) ?? this.wildcard.get(dst.port) ?? receiving;
  }
}
