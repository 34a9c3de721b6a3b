import { isIPv6 } from 'node:net';
import type { SocketAddress } from '../config/model.js';
import { loadLibc, libcLoadError } from '../sys/libc.js';

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SOL_IP = 0;
const SOL_IPV6 = 41;
const IP_TRANSPARENT = 19;
const IPV6_TRANSPARENT = 75;

function sockaddr(addr: SocketAddress): Buffer {
  const v6 = isIPv6(addr.address);
  const b = Buffer.alloc(v6 ? 28 : 16);
  b.writeUInt16LE(v6 ? AF_INET6 : AF_INET, 0);
  b.writeUInt16BE(addr.port, 2);
  if (!v6) addr.address.split('.').forEach((o, i) => (b[4 + i] = Number(o)));
  else {
    const [head, tail = ''] = addr.address.split('::');
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const words = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    words.forEach((w, i) => b.writeUInt16BE(parseInt(w, 16), 8 + 2 * i));
  }
  return b;
}

/**
 * A listening socket with IP_TRANSPARENT, which TPROXY needs to accept connections addressed to any IP.
 * Node cannot set that option before bind, so the socket is made through libc and handed to
 * net.Server.listen({ fd }). Needs CAP_NET_ADMIN, as Envoy does in Istio's TPROXY mode.
 */
export function openTransparentListener(addr: SocketAddress): number {
  const libc = loadLibc();
  if (!libc) throw new Error(`transparent listeners need koffi: ${libcLoadError()}`);
  const v6 = isIPv6(addr.address);
  const fd = libc.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket() failed, errno ${libc.errno()}`);
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  const steps: [string, () => number][] = [
    ['SO_REUSEADDR', () => libc.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4)],
    ['IP_TRANSPARENT', () => libc.setsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, one, 4)],
    ['bind', () => { const sa = sockaddr(addr); return libc.bind(fd, sa, sa.length); }],
    ['listen', () => libc.listen(fd, 511)],
  ];
  for (const [what, call] of steps) {
    if (call() !== 0) {
      const errno = libc.errno();
      libc.close(fd);
      throw new Error(`${what} failed for transparent listener ${addr.address}:${addr.port}: errno ${errno}${errno === 1 ? ' (needs CAP_NET_ADMIN)' : ''}`);
    }
  }
  return fd;
}
