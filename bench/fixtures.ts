import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Compiled to dist/bench: the repository root is two levels up, shared/ beside it.
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The sidecar as it ships: the bundle scripts/bundle.mjs makes of dist/src (what `xsidecar` and the image run). */
export const sidecarMain = resolve(repoRoot, 'dist/bundle/main.js');
export const fixture = (...parts: string[]) => resolve(repoRoot, 'test/fixtures', ...parts);

/** The captured request and response the load generator and the responder send, per protocol. */
export function templates(protocol: string): { request: Buffer; response: Buffer } {
  const [request, response] = protocol === 'dubbo' ? ['request-attachments', 'response-ok-value-attachments'] : ['request-plus', 'response-plus'];
  return { request: readFileSync(fixture(protocol, `${request}.bin`)), response: readFileSync(fixture(protocol, `${response}.bin`)) };
}
