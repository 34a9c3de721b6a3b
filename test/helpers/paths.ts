import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Tests run compiled from dist/test/helpers, three levels below the repository root.
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const fixturesDir = resolve(repoRoot, 'test/fixtures');
// The sidecar as it ships (scripts/bundle.mjs): every test that starts the CLI runs the bundle, which
// `npm test` (npm run build) makes after tsc; tsc alone leaves it as it was.
export const cliPath = resolve(repoRoot, 'dist/bundle/main.js');
export const fixture = (...parts: string[]) => resolve(fixturesDir, ...parts);
