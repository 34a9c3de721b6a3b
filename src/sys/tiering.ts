/**
 * Start-up code is not worth optimizing. While the sidecar's modules load, Node 24's V8 (13.6) compiles
 * some of Node's own functions with Maglev, its mid-tier optimizing compiler: those that run hot while
 * modules resolve (`normalizeString`, `isPosixPathSeparator`, `requireBuiltin`), and never again after.
 * Compiling them touches 2–2.5 MiB of the `node` binary's code pages, which then stay resident in every
 * idle pod (idle RSS, embedded default, Node 24.22: 56.3 → 53.8 MiB without them).
 *
 * `--no-maglev` would save the same, but it costs the data path (1–12 % more CPU per request, measured).
 * So the re-exec with the heap defaults (cli/heap.ts) raises Maglev's invocation threshold 25-fold, and
 * `endStartupTiering()`, called once the sidecar has started, puts V8's own back: from then on functions
 * tier up as V8 would have them, the first xDS push's decoding included. Only on a V8 whose default is
 * known (400 from V8 11 to 13); Node 20's V8 (11.3) has Maglev off, so there is nothing to do there.
 */
import { setFlagsFromString } from 'node:v8';

/** Set on the re-exec to the threshold to put back; read (and removed) once the sidecar has started. */
export const RESTORE_ENV = 'XSIDECAR_MAGLEV_THRESHOLD';
const FLAG = '--invocation-count-for-maglev';
const V8_DEFAULT = 400;
const AT_START = V8_DEFAULT * 25;

/** Whether `flag` is among `args`, bare or with a value; V8 reads `--a_b` and `--a-b` alike. */
export const hasFlag = (args: readonly string[], flag: string) => args.map((a) => a.replace(/_/g, '-')).some((a) => a === flag || a.startsWith(`${flag}=`));

/** Whether this V8 has Maglev on by default with the threshold we know (V8 12 and 13: Node 22 and 24). */
function knownMaglevDefault(v8 = process.versions.v8): boolean {
  const major = Number(v8.split('.')[0]);
  return major >= 12 && major <= 13;
}

/** The flag (and the environment) for a start-up with a high Maglev threshold; none if Maglev is set already. */
export function startupTiering(given: readonly string[], v8?: string): { flags: string[]; env: Record<string, string> } {
  if (!knownMaglevDefault(v8) || ['--maglev', '--no-maglev', FLAG].some((f) => hasFlag(given, f))) return { flags: [], env: {} };
  return { flags: [`${FLAG}=${AT_START}`], env: { [RESTORE_ENV]: String(V8_DEFAULT) } };
}

/** Puts V8's Maglev threshold back, if the start-up raised it; once. */
export function endStartupTiering(env: NodeJS.ProcessEnv = process.env): boolean {
  const restore = env[RESTORE_ENV];
  if (restore === undefined) return false;
  delete env[RESTORE_ENV];
  if (!/^\d+$/.test(restore)) return false;
  setFlagsFromString(`${FLAG}=${restore}`);
  return true;
}
