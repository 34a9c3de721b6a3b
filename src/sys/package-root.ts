/**
 * Files shipped beside the code (package.json, proto/), found from the package's root: the code runs from
 * dist/src/<room>/ as tsc writes it and from dist/bundle/ as the bundler writes it, at different depths.
 */
import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/**
 * stat, not access (existsSync): the sidecar runs as UID 1337 with CAP_DAC_READ_SEARCH to read a checkout
 * root owns, and access() checks the real UID without capabilities.
 */
function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function findRoot(from: string): string {
  for (let dir = from; ; ) {
    if (isFile(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json in ${from} or above it`);
    dir = up;
  }
}

/** A path inside the package: `packagePath('proto')`. */
export function packagePath(...parts: string[]): string {
  root ??= findRoot(dirname(fileURLToPath(import.meta.url)));
  return join(root, ...parts);
}
