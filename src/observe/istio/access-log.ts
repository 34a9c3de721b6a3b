import { closeSync, openSync, write } from 'node:fs';
import { log } from '../log.js';

/**
 * An access log of JSON lines, buffered and written off the event loop (fs.write runs on libuv's
 * threadpool), one write in flight at a time. It never blocks the data path: past `maxBufferedBytes` of
 * unwritten lines, new lines are dropped and counted. On a pipe or terminal (`-`: stdout, shared with
 * the process log) every write is at most PIPE_BUF bytes of whole lines, so lines never interleave.
 */
export class AccessLog {
  private chunks: string[] = [];
  private bytes = 0;
  private writing = false;
  private timer: NodeJS.Timeout | undefined;
  dropped = 0;
  written = 0;
  private readonly fd: number;
  private readonly ownFd: boolean;
  private readonly maxWrite: number;

  constructor(
    readonly path: string,
    private readonly maxBufferedBytes = 8 * 1024 * 1024,
  ) {
    if (path === '-') {
      this.fd = 1;
      this.ownFd = false;
      this.maxWrite = 4096;
    } else {
      this.fd = openSync(path, 'a');
      this.ownFd = true;
      this.maxWrite = 256 * 1024;
    }
  }

  /** Queues one entry; written within ~100 ms. */
  add(entry: object): void {
    const line = `${JSON.stringify(entry)}\n`;
    if (this.bytes + line.length > this.maxBufferedBytes) {
      this.dropped++;
      return;
    }
    this.chunks.push(line);
    this.bytes += line.length;
    if (!this.writing && !this.timer) this.timer = setTimeout(() => this.flush(), 100).unref();
  }

  private flush(): void {
    this.timer = undefined;
    if (this.writing || this.chunks.length === 0) return;
    let n = 0;
    let size = 0;
    while (n < this.chunks.length && (n === 0 || size + this.chunks[n]!.length <= this.maxWrite)) size += this.chunks[n++]!.length;
    const data = Buffer.from(this.chunks.splice(0, n).join(''));
    this.bytes -= size;
    this.writing = true;
    this.writeAll(data, n);
  }

  private writeAll(data: Buffer, lines: number): void {
    write(this.fd, data, 0, data.length, null, (err, w) => {
      if (err) {
        this.writing = false;
        this.dropped += lines;
        log.warn({ err: err.message, path: this.path }, 'access log: write failed');
        return;
      }
      if (w < data.length) return this.writeAll(data.subarray(w), lines);
      this.written += lines;
      this.writing = false;
      if (this.chunks.length > 0) this.flush();
    });
  }

  /** Writes what is queued (synchronously enough for an exiting process: awaits the writes). */
  async close(): Promise<void> {
    for (let i = 0; i < 200 && (this.writing || this.chunks.length > 0); i++) {
      if (!this.writing) this.flush();
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.ownFd) closeSync(this.fd);
  }
}
