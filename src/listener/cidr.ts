import { isIPv4 } from 'node:net';
import type { CidrRange } from '../config/model.js';

/** An address as a 128-bit number; IPv4 maps into ::ffff:0:0/96 so both families compare alike. */
export function ipToBigInt(ip: string): bigint | undefined {
  if (isIPv4(ip)) return (0xffffn << 32n) | BigInt(ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0));
  if (ip.startsWith('::ffff:') && isIPv4(ip.slice(7))) return ipToBigInt(ip.slice(7));
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const words = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (words.length !== 8) return undefined;
  return words.reduce((acc, w) => (acc << 16n) | BigInt(parseInt(w || '0', 16)), 0n);
}

/** Length of the range's prefix when `ip` falls inside it, else -1 (so callers can keep the longest). */
export function cidrMatchLength(ip: bigint, range: CidrRange): number {
  const base = ipToBigInt(range.address);
  if (base === undefined) return -1;
  const bits = isIPv4(range.address) ? range.prefixLen + 96 : range.prefixLen;
  const shift = BigInt(128 - bits);
  return ip >> shift === base >> shift ? bits : -1;
}

export function longestMatch(ip: bigint | undefined, ranges: readonly CidrRange[]): number {
  if (ip === undefined) return -1;
  let best = -1;
  for (const r of ranges) best = Math.max(best, cidrMatchLength(ip, r));
  return best;
}
