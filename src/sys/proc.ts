/** A file of /proc/self read whole, or undefined where there is no /proc (not Linux, a sandbox). */
import { readFileSync } from 'node:fs';

export function readProcSelf(name: string): string | undefined {
  try {
    return readFileSync(`/proc/self/${name}`, 'latin1');
  } catch {
    return undefined;
  }
}
