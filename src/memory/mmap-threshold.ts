/**
 * glibc's mmap threshold for the sidecar, shared by the re-exec (cli/heap.ts, which must load nothing
 * else) and memory/compact.ts. Above Node's 64 KiB socket reads and the 128 KiB blocks of ordinary
 * traffic (glibc's initial threshold), so only the rare large blocks pay a mapping each.
 */
export const MMAP_THRESHOLD_BYTES = 256 * 1024;

/**
 * glibc reads this at start-up: set, it fixes the threshold (and turns its dynamic adjustment off) as
 * `mallopt(M_MMAP_THRESHOLD)` does, without koffi. The re-exec sets it unless it is set already.
 */
export const MMAP_THRESHOLD_ENV = 'MALLOC_MMAP_THRESHOLD_';
