import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Tests run compiled from dist/test/helpers, three levels below the repository root.
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const fixturesDir = resolve(repoRoot, 'test/fixtures');
export const cliPath = resolve(repoRoot, 'dist/src/cli/main.js');
export const fixture = (...parts: string[]) => resolve(fixturesDir, ...parts);
