/**
 * Starting this process again as a new image (same PID, same standard descriptors, nothing left behind):
 * how the CLI gets V8 flags that only count at start (cli/heap.ts). Node ≥ 22.15 has `process.execve`;
 * older Node (20) makes the same call to libc through koffi.
 */
import { errnoName, type Libc, loadLibc } from './libc.js';

export type ReplaceProcess = (file: string, args: string[], env: NodeJS.ProcessEnv) => never;

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/** The way to replace this process's image, or undefined where there is none (no execve, no koffi). */
export function processReplacer(): ReplaceProcess | undefined {
  const native = (process as { execve?: ReplaceProcess }).execve;
  return typeof native === 'function' ? native.bind(process) : libcReplacer(loadLibc());
}

/** libc's execve through koffi; unlike process.execve, a failure throws (with errno's name) instead of aborting. */
export function libcReplacer(libc: Libc | null): ReplaceProcess | undefined {
  const execve = libc?.execve;
  if (!libc || !execve) return undefined;
  return (file, args, env) => {
    // 0–2 are close-on-exec here (Node's start marks them so): without clearing it the new image starts
    // with /dev/null for its stdout and stderr (measured; process.execve clears the flag the same way).
    const before = [0, 1, 2].map((fd) => libc.fcntl(fd, F_GETFD, 0));
    before.forEach((flags, fd) => flags > 0 && (flags & FD_CLOEXEC) !== 0 && libc.fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC));
    const envp = Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
    execve(file, [...args, null], [...envp, null]);
    const errno = libc.errno();
    before.forEach((flags, fd) => flags > 0 && libc.fcntl(fd, F_SETFD, flags));
    throw new Error(`execve ${file}: ${errnoName(errno)}`);
  };
}
