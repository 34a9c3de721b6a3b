import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Compiled to dist/bench: the repository root is two levels up, shared/ beside it.
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const fixture = (...parts: string[]) => resolve(repoRoot, '../shared/fixtures', ...parts);
