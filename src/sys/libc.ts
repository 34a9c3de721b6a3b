/**
 * The few libc calls Node does not expose (sockets, descriptor limits, glibc's allocator), through koffi's
 * FFI. Loaded lazily so that a machine without koffi's prebuilt binary still runs everything that does
 * not need them.
 */
import { createRequire } from 'node:module';
import { constants } from 'node:os';

const require = createRequire(import.meta.url);

export interface Libc {
  getsockopt(fd: number, level: number, name: number, out: Buffer, len: number[]): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, len: number): number;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  getsockname(fd: number, out: Buffer, len: number[]): number;
  /** Flags such as MSG_DONTWAIT; `addr` is a struct sockaddr as the kernel wrote it for the receiver. */
  sendto(fd: number, buf: Uint8Array, len: number, flags: number, addr: Uint8Array, addrLen: number): number;
  /** The message vectors are raw addresses (koffi.address of memory from koffi.alloc, plus an offset). */
  recvmmsg(fd: number, msgvec: number, vlen: number, flags: number, timeout: null): number;
  sendmmsg(fd: number, msgvec: number, vlen: number, flags: number): number;
  /** `rlim` is a struct rlimit: two 64-bit words, soft then hard. */
  getrlimit(resource: number, rlim: Buffer): number;
  setrlimit(resource: number, rlim: Buffer): number;
  /** glibc: gives free heap memory back to the OS; 1 if some was released. Absent from other libcs. */
  mallocTrim?: (pad: number) => number;
  /** glibc: sets an allocator parameter (M_MMAP_THRESHOLD…); 1 on success. Absent from other libcs. */
  mallopt?: (param: number, value: number) => number;
  /** Replaces the process image; `argv` and `envp` end with null. Returns only on failure (-1, errno set). */
  execve?: (path: string, argv: (string | null)[], envp: (string | null)[]) => number;
  errno(): number;
  /** Memory outside V8's heap at a fixed address, for calls that take pointers to pointers. */
  allocNative(size: number): NativeMemory;
}

export interface NativeMemory {
  readonly address: number;
  readonly bytes: ArrayBuffer;
  free(): void;
}

/**
 * koffi's native module, required directly where its prebuilt path is this platform's. koffi's entry point
 * is the same API (plus deprecated aliases we do not use), but it also loads its binary downloader and with
 * it node:https and node:tls, which on Node 24 cost 5 MiB of RSS for code that never runs here
 * (sys/builtins.ts). Other platforms (musl, 32-bit ARM…) go through the entry point, which knows them.
 */
function requireKoffi() {
  try {
    return require(`koffi/build/koffi/${process.platform}_${process.arch}/koffi.node`);
  } catch {
    return require('koffi');
  }
}

let libc: Libc | null | undefined;
let loadError: string | undefined;

export function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const koffi = requireKoffi();
    const lib = koffi.load('libc.so.6');
    // The allocator calls are glibc's own: missing ones must not cost the socket calls.
    const optional = (decl: string) => {
      try {
        return lib.func(decl);
      } catch {
        return undefined;
      }
    };
    libc = {
      getsockopt: lib.func('int getsockopt(int, int, int, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)'),
      setsockopt: lib.func('int setsockopt(int, int, int, const uint8_t *optval, uint32_t optlen)'),
      socket: lib.func('int socket(int, int, int)'),
      bind: lib.func('int bind(int, const uint8_t *addr, uint32_t addrlen)'),
      listen: lib.func('int listen(int, int)'),
      close: lib.func('int close(int)'),
      fcntl: lib.func('int fcntl(int, int, int)'),
      getsockname: lib.func('int getsockname(int, _Out_ uint8_t *addr, _Inout_ uint32_t *len)'),
      sendto: lib.func('intptr_t sendto(int, const uint8_t *buf, size_t len, int flags, const uint8_t *addr, uint32_t addrlen)'),
      recvmmsg: lib.func('int recvmmsg(int, uintptr_t msgvec, unsigned int vlen, int flags, void *timeout)'),
      sendmmsg: lib.func('int sendmmsg(int, uintptr_t msgvec, unsigned int vlen, int flags)'),
      getrlimit: lib.func('int getrlimit(int, _Out_ uint8_t *rlim)'),
      setrlimit: lib.func('int setrlimit(int, const uint8_t *rlim)'),
      mallocTrim: optional('int malloc_trim(size_t)'),
      mallopt: optional('int mallopt(int, int)'),
      execve: optional('int execve(const char *path, const char **argv, const char **envp)'),
      errno: () => koffi.errno() as number,
      allocNative(size: number): NativeMemory {
        const ptr = koffi.alloc('uint8_t', size);
        return { address: Number(koffi.address(ptr)), bytes: koffi.view(ptr, size) as ArrayBuffer, free: () => koffi.free(ptr) };
      },
    };
  } catch (e) {
    loadError = (e as Error).message;
    libc = null;
  }
  return libc;
}

export const libcLoadError = () => loadError;

/** EADDRINUSE for 98: an errno as its name, for error messages. */
export const errnoName = (n: number): string => Object.entries(constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;
