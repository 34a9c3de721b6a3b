import { loadLibc } from '../sys/libc.js';

const RLIMIT_NOFILE = 7;

export interface DescriptorLimit {
  readonly soft: number;
  readonly hard: number;
  /** The soft limit before we raised it. */
  readonly was: number;
}

const toNumber = (v: bigint) => (v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v));

/**
 * Raises the soft RLIMIT_NOFILE to the hard limit, as pilot-agent does for Envoy: the soft limit (often
 * 1,024) is a default for programs that use select(), which Node does not. Node raises it too at start-up
 * (node.cc), so `was` usually equals `hard` already; this makes the guarantee ours, and logged, whatever
 * the runtime. Undefined without koffi.
 */
export function raiseDescriptorLimit(): DescriptorLimit | undefined {
  const libc = loadLibc();
  if (!libc) return undefined;
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
