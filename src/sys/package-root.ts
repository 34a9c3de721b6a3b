/**
 * Files shipped beside the code (package.json, proto/), found from the package's root: the code runs from
 * dist/src/<room>/ as tsc writes it and from dist/bundle/ as the bundler writes it, at different depths.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

function findRoot(from: string): string {
  for (let dir = from; ; ) {
    if (existsSync(join(dir, 'package.json'))) return dir;
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
