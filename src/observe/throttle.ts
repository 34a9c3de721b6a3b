import type { Logger } from 'pino';
import { log as defaultLog } from './log.js';

type Level = 'warn' | 'info' | 'error' | 'debug';

interface Window {
  until: number;
  suppressed: number;
  last: object;
  msg: string;
  level: Level;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Rate-limits one kind of log line: the first of a window is logged, the rest are counted, and when the
 * window ends with some suppressed a summary line says how many (with the last one's fields), so a flood
 * of 20,000 bad frames costs a handful of lines instead of 20,000 and nothing goes unmentioned.
 *
 * Keys name the kind of event ("bad frame from downstream"), never its caller: a key per source address
 * would let an attacker with many addresses flood the log again.
 */
export class LogThrottle {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly intervalMs = 10_000,
    private readonly logger: () => Logger = () => defaultLog,
  ) {}

  log(level: Level, key: string, fields: object, msg: string): void {
    const now = Date.now();
    const w = this.windows.get(key);
    if (w && now < w.until) {
      w.suppressed++;
      w.last = fields;
      w.msg = msg;
      w.timer ??= setTimeout(() => this.summarise(key), w.until - now).unref();
      return;
    }
    this.windows.set(key, { until: now + this.intervalMs, suppressed: 0, last: fields, msg, level, timer: undefined });
    this.logger()[level](fields, msg);
  }

  warn(key: string, fields: object, msg: string): void {
    this.log('warn', key, fields, msg);
  }

  private summarise(key: string): void {
    const w = this.windows.get(key);
    if (!w) return;
    this.windows.delete(key);
    if (w.suppressed > 0) this.logger()[w.level]({ ...w.last, suppressed: w.suppressed, windowMs: this.intervalMs }, `${w.msg} (and ${w.suppressed} more like it, not logged)`);
  }

  /** Logs the pending summaries now (tests, shutdown). */
  flush(): void {
    for (const [key, w] of [...this.windows]) {
      clearTimeout(w.timer);
      this.summarise(key);
    }
  }
}

/** The process's throttle for repeated warnings: at most one line per kind per 10 s, plus a count. */
export const throttled = new LogThrottle();
