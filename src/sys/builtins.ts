/**
 * Node built-ins that cost memory just to load, loaded with require so that the sidecar pays only for what
 * its config uses. Measured with a bare `node` 24.22 (RSS after loading, semi-spaces at 2 MiB as the
 * sidecar then ran; Node 20 in brackets):
 *
 * - node:http, always needed (admin, status): `import` instead of `require` builds the module's namespace
 *   from every export, and three of them (WebSocket, CloseEvent, MessageEvent) are lazy getters that load
 *   Node's bundled undici (fetch, WebSocket, EventSource), none of which the sidecar uses: 45.1 → 58.6 MiB
 *   with V8's default young generation. Node 20 has no such getters.
 * - node:tls (and node:https, which loads it), only for TLS listeners, TLS upstreams, Istio's mTLS and
 *   HTTPS app probes: 48.9 → 54.2 MiB (44.0 → 44.8) for loading it. With ADS or the Istio CA client,
 *   grpc-js loads it anyway as it loads: what this saves is a sidecar configured from a file.
 * - node:crypto, only for DNS updates (TSIG) and what ADS or the CA client load: bare `node` with an HTTP
 *   server 47.6 → 49.8 MiB (43.5 → 44.1) for loading it.
 *
 * Types still come from `import type`, which costs nothing at run time.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export const http = require('node:http') as typeof import('node:http');

/** A built-in, loaded on its first use. */
function onFirstUse<M>(id: string): () => M {
  let loaded: M | undefined;
  return () => (loaded ??= require(id) as M);
}

export const tls = onFirstUse<typeof import('node:tls')>('node:tls');
export const https = onFirstUse<typeof import('node:https')>('node:https');
export const crypto = onFirstUse<typeof import('node:crypto')>('node:crypto');
