/**
 * Imported first by main.ts: ESM evaluates a module's imports in order, so this runs before the rest of
 * the CLI is evaluated, and a re-exec with the heap defaults (heap.ts) costs no more than a bare start.
 */
import { applyHeapDefaults } from './heap.js';

const command = process.argv[2];
if (command === 'run' || command === 'proxy') applyHeapDefaults();
