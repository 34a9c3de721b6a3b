import type { ObjReader } from './reader.js';

const FILE_LOGGERS = new Set(['envoy.access_loggers.file', 'envoy.file_access_log']);
const FILE_TYPE = 'envoy.extensions.access_loggers.file.v3.FileAccessLog';

/**
 * A filter's Envoy `access_log` list, as the path of its first file logger (`envoy.access_loggers.file`,
 * FileAccessLog `path`): `/dev/stdout` becomes `-`. Formats, filters and other loggers are not
 * implemented (the line is always xsidecar's JSON with Istio's default fields); they are warnings.
 */
export function decodeAccessLog(r: ObjReader): string | undefined {
  let path: string | undefined;
  for (const log of r.objList('access_log')) {
    const name = log.str('name', '');
    const typed = log.obj('typed_config');
    const type = typed?.str('@type')?.split('/').pop();
    const p = typed?.str('path');
    if ((FILE_LOGGERS.has(name) || type === FILE_TYPE) && p) {
      path ??= p === '/dev/stdout' ? '-' : p;
      if (typed?.has('log_format') || log.has('filter')) r.ctx.warnings.push(`${log.path}: log_format and filter are not implemented; lines are JSON with Istio's default fields`);
    } else {
      r.ctx.warnings.push(`${log.path}: access logger ${name || type || '(unnamed)'} is not implemented, skipped`);
    }
    typed?.ignore('@type', 'path', 'log_format', 'format', 'json_format', 'typed_json_format');
    log.ignore('filter');
  }
  return path;
}
