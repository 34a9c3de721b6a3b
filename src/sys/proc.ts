/** Small kernel files (/proc, cgroup) read whole, or undefined where they are not there (not Linux, a sandbox, no such controller). */
import { readFileSync } from 'node:fs';

export function readTextFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
}

/** A file of /proc/self. */
export const readProcSelf = (name: string): string | undefined => readTextFile(`/proc/self/${name}`);
