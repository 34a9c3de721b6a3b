import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured JSON lines on stdout; level from XSIDECAR_LOG_LEVEL or the CLI. */
export const log: Logger = pino({
  name: 'xsidecar',
  level: process.env.XSIDECAR_LOG_LEVEL ?? 'info',
  base: { pid: process.pid },
});
