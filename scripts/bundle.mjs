// Bundles the compiled sidecar (dist/src, from tsc) into dist/bundle: what `xsidecar`, the image and the
// benches run. Loading ~200 ES modules one by one costs every pod about 8 MiB of RSS at idle (the module
// loader's records, and V8 compiling Node's own loader hot while it runs); a few files cost little. Code
// loaded with `await import()` stays in chunks of its own, loaded as before only when the config asks.
// Whitespace and syntax are minified, identifiers are not: stack traces keep their function names, and the
// source V8 keeps in its heap for lazy compilation is a third smaller (idle RSS 0.5 MiB less on Node 20 and
// 24; the same at ready).
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist/bundle');

// pino's transports cannot run from the bundle (they locate their worker with __dirname); the sidecar's
// logger (src/observe/log.ts) uses none.
// Loaded only when the config uses them (ADS, the CA client, a YAML file), or native: they stay in
// node_modules and resolve there as before. Everything else loaded at start (pino, prom-client's files,
// dns-packet) is bundled.
const external = ['koffi', '@grpc/grpc-js', '@grpc/grpc-js-xds', '@grpc/proto-loader', 'protobufjs', 'protobufjs/*', '@peculiar/x509', 'reflect-metadata', 'yaml'];

rmSync(outdir, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  // The DNS worker is an entry of its own: udp-offload starts it as `./udp-worker.js` beside itself.
  entryPoints: { main: 'dist/src/cli/main.js', 'udp-worker': 'dist/src/dns/udp-worker.js' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  chunkNames: 'chunk-[hash]',
  external,
  // Bundled CommonJS (pino, prom-client) calls require() for Node's built-ins; an ES module has none.
  banner: { js: "import { createRequire as __xsidecarCreateRequire } from 'node:module'; const require = __xsidecarCreateRequire(import.meta.url);" },
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
});
