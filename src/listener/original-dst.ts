import { isIPv6, type Socket, SocketAddress as NodeSocketAddress } from 'node:net';
import type { SocketAddress } from '../config/model.js';
import { loadLibc } from '../sys/libc.js';

const SOL_IP = 0;
const SOL_IPV6 = 41;
const SO_ORIGINAL_DST = 80; // same number for IP6T_SO_ORIGINAL_DST

export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** Formats the address part of a sockaddr_in / sockaddr_in6 read from the kernel. */
export function parseSockaddr(buf: Buffer): SocketAddress {
  const port = buf.readUInt16BE(2);
  if (buf.readUInt16LE(0) === 2) return { address: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`, port };
  if (buf.subarray(8, 18).every((b) => b === 0) && buf.readUInt16BE(18) === 0xffff) {
    return { address: `${buf[20]}.${buf[21]}.${buf[22]}.${buf[23]}`, port }; // v4-mapped
  }
  const words: string[] = [];
  for (let i = 8; i < 24; i += 2) words.push(buf.readUInt16BE(i).toString(16));
  // Node's SocketAddress gives the canonical compressed text form.
  return { address: new NodeSocketAddress({ address: words.join(':'), family: 'ipv6' }).address, port };
}

/**
 * The destination the client dialled before iptables REDIRECT rewrote it. Undefined when the connection
 * was not NATed (TPROXY, or a direct connection): then the local address is the original destination.
 */
export function redirectedDestination(socket: Socket): SocketAddress | undefined {
  const libc = loadLibc();
  const fd = socketFd(socket);
  if (!libc || fd === undefined) return undefined;
  const v6 = isIPv6(socket.localAddress ?? '') && !socket.localAddress?.startsWith('::ffff:');
  const out = Buffer.alloc(28);
  const len = [out.length];
  if (libc.getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, SO_ORIGINAL_DST, out, len) !== 0) return undefined;
  return parseSockaddr(out);
}

const stripMapped = (a: string) => (a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);

export function localDestination(socket: Socket): SocketAddress {
  return { address: stripMapped(socket.localAddress ?? '0.0.0.0'), port: socket.localPort ?? 0 };
}

export function originalDestination(socket: Socket): SocketAddress {
  return redirectedDestination(socket) ?? localDestination(socket);
}
