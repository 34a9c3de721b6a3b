#!/usr/bin/env node
/**
 * The entry point. The heap defaults come first (preflight.ts may re-exec this process with them), and the
 * command line is imported only after: ES modules evaluate every static import before their own body, so
 * imported statically the CLI (in the bundle, some 600 KB of code: pino, the metrics, the codecs, the
 * server) would be evaluated before the re-exec, and again after it.
 */
import './preflight.js';

await import('./cli.js');
