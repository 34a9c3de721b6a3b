import { loadLibc } from '../sys/libc.js';
import { readProcSelf } from '../sys/proc.js';

const RLIMIT_NOFILE = 7;

export interface DescriptorLimit {
  readonly soft: number;
  readonly hard: number;
  /** The soft limit before we raised it. */
  readonly was: number;
}

const toNumber = (v: bigint) => (v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v));

/**
 * The RLIMIT_NOFILE pair as /proc/self/limits shows it ("Max open files  1024  4096  files"), read
 * without koffi: Node raises the soft limit itself at start-up, so usually there is nothing to raise and
 * the FFI (0.9 MiB of RSS, kernel pages of koffi.node included) need not load for it. Undefined off Linux or
 * when the line is not there.
 */
export function readDescriptorLimit(text = readProcSelf('limits')): { soft: bigint; hard: bigint } | undefined {
  const m = text === undefined ? null : /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
  if (!m) return undefined;
  const value = (s: string) => (s === 'unlimited' ? BigInt(Number.MAX_SAFE_INTEGER) : BigInt(s));
  return { soft: value(m[1]!), hard: value(m[2]!) };
}

/**
 * Raises the soft RLIMIT_NOFILE to the hard limit, as pilot-agent does for Envoy: the soft limit (often
 * 1,024) is a default for programs that use select(), which Node does not. Node raises it too at start-up
 * (node.cc), so `was` usually equals `hard` already; this makes the guarantee ours, and logged, whatever
 * the runtime. Undefined when the limit can be neither read from /proc nor asked of libc (no koffi).
 */
export function raiseDescriptorLimit(read = readDescriptorLimit): DescriptorLimit | undefined {
  const seen = read();
  const asSeen = seen && { soft: toNumber(seen.soft), hard: toNumber(seen.hard), was: toNumber(seen.soft) };
  if (seen && seen.soft >= seen.hard) return asSeen;
  const libc = loadLibc();
  if (!libc) return asSeen;
  const rlim = Buffer.alloc(16);
  if (libc.getrlimit(RLIMIT_NOFILE, rlim) !== 0) return undefined;
  const was = rlim.readBigUInt64LE(0);
  const hard = rlim.readBigUInt64LE(8);
  if (was < hard) {
    rlim.writeBigUInt64LE(hard, 0);
    if (libc.setrlimit(RLIMIT_NOFILE, rlim) !== 0) return { soft: toNumber(was), hard: toNumber(hard), was: toNumber(was) };
  }
  return { soft: toNumber(hard > was ? hard : was), hard: toNumber(hard), was: toNumber(was) };
}
