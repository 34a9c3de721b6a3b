/**
 * Imported by main.ts before it imports the CLI, so this runs before any of the CLI is evaluated, and a
 * re-exec with the heap defaults (heap.ts) costs no more than a bare start.
 */
import { applyHeapDefaults } from './heap.js';

const command = process.argv[2];
if (command === 'run' || command === 'proxy') applyHeapDefaults();
